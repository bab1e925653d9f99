//! Preprocessing: exact input values for known pixels, PIL-identical nearest resizing, layouts.

use features::onnx::Layout;
use features::preprocess::{self, pil_nearest_index, Preprocess, Resize};
use image::{Rgb, RgbImage};

fn two_by_two() -> RgbImage {
    let mut img = RgbImage::new(2, 2);
    img.put_pixel(0, 0, Rgb([255, 0, 0]));
    img.put_pixel(1, 0, Rgb([0, 255, 0]));
    img.put_pixel(0, 1, Rgb([0, 0, 255]));
    img.put_pixel(1, 1, Rgb([10, 20, 30]));
    img
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-4
}

#[test]
fn caffe_is_bgr_minus_imagenet_mean_nchw() {
    let mut out = vec![0.0; 12];
    preprocess::write_input(&two_by_two(), Preprocess::Caffe, Layout::Nchw, &mut out).unwrap();
    // Channel 0 is blue: pixels (B) 0, 0, 255, 30 minus 103.939.
    let b = [
        0.0 - 103.939,
        0.0 - 103.939,
        255.0 - 103.939,
        30.0 - 103.939,
    ];
    let g = [
        0.0 - 116.779,
        255.0 - 116.779,
        0.0 - 116.779,
        20.0 - 116.779,
    ];
    let r = [255.0 - 123.68, 0.0 - 123.68, 0.0 - 123.68, 10.0 - 123.68];
    for i in 0..4 {
        assert!(close(out[i], b[i]), "B[{i}] = {}", out[i]);
        assert!(close(out[4 + i], g[i]), "G[{i}] = {}", out[4 + i]);
        assert!(close(out[8 + i], r[i]), "R[{i}] = {}", out[8 + i]);
    }
}

#[test]
fn torch_and_unit_values_and_nhwc_layout() {
    let mut out = vec![0.0; 12];
    preprocess::write_input(&two_by_two(), Preprocess::Torch, Layout::Nhwc, &mut out).unwrap();
    // Pixel (1,1) = (10,20,30) is the 4th pixel: values at 9..12, RGB order.
    let want = [
        (10.0 / 255.0 - 0.485) / 0.229,
        (20.0 / 255.0 - 0.456) / 0.224,
        (30.0 / 255.0 - 0.406) / 0.225,
    ];
    for c in 0..3 {
        assert!(close(out[9 + c], want[c]), "torch c{c} = {}", out[9 + c]);
    }
    preprocess::write_input(&two_by_two(), Preprocess::Unit, Layout::Nchw, &mut out).unwrap();
    assert!(close(out[0], 1.0) && close(out[4 + 1], 1.0) && close(out[8 + 2], 1.0));
    assert!(close(out[3], 10.0 / 255.0) && close(out[8 + 3], 30.0 / 255.0));
}

#[test]
fn wrong_slot_size_is_an_error() {
    let mut out = vec![0.0; 11];
    assert!(
        preprocess::write_input(&two_by_two(), Preprocess::Caffe, Layout::Nchw, &mut out).is_err()
    );
}

#[test]
fn nearest_index_matches_pillow() {
    // Pillow 11 `Image.resize((m, 1), NEAREST)` on an index image, recorded with the project's .venv.
    let cases: [(usize, usize, [usize; 12], [usize; 5]); 3] = [
        (
            280,
            150,
            [0, 2, 4, 6, 8, 10, 12, 14, 15, 17, 19, 21],
            [271, 273, 275, 277, 279],
        ),
        (
            499,
            150,
            [1, 4, 8, 11, 14, 18, 21, 24, 28, 31, 34, 38],
            [484, 487, 490, 494, 497],
        ),
        (
            375,
            150,
            [1, 3, 6, 8, 11, 13, 16, 18, 21, 23, 26, 28],
            [363, 366, 368, 371, 373],
        ),
    ];
    for (n, m, head, tail) in cases {
        let idx = pil_nearest_index(n, m);
        assert_eq!(idx.len(), m);
        assert_eq!(&idx[..12], &head, "{n}->{m} head");
        assert_eq!(&idx[m - 5..], &tail, "{n}->{m} tail");
    }
    assert_eq!(pil_nearest_index(7, 3), vec![1, 3, 5]);
}

#[test]
fn nearest_resize_picks_source_pixels() {
    let img = RgbImage::from_fn(7, 7, |x, y| Rgb([x as u8 * 10, y as u8 * 10, 0]));
    let small = preprocess::resize(&img, 3, 3, Resize::Nearest).unwrap();
    assert_eq!(small.dimensions(), (3, 3));
    assert_eq!(small.get_pixel(0, 0), &Rgb([10, 10, 0]));
    assert_eq!(small.get_pixel(2, 1), &Rgb([50, 30, 0]));
}

#[test]
fn smooth_filters_keep_flat_images_flat() {
    let img = RgbImage::from_pixel(40, 30, Rgb([100, 150, 200]));
    for f in [Resize::Bilinear, Resize::Bicubic, Resize::Lanczos] {
        let r = preprocess::resize(&img, 16, 16, f).unwrap();
        assert!(r.pixels().all(|p| p == &Rgb([100, 150, 200])), "{f:?}");
    }
}

#[test]
fn names_parse_and_bad_names_list_choices() {
    assert_eq!("caffe".parse::<Preprocess>().unwrap(), Preprocess::Caffe);
    let e = "bgr".parse::<Preprocess>().unwrap_err().to_string();
    assert!(
        e.contains("caffe") && e.contains("torch") && e.contains("unit"),
        "{e}"
    );
    assert!("box"
        .parse::<Resize>()
        .unwrap_err()
        .to_string()
        .contains("nearest"));
}

/// Pixel values of torchvision's `Resize(round(S·256/224))` + `CenterCrop(S)` (PIL bilinear, Pillow 11,
/// recorded with the project's .venv) on an image whose channels are `x`, `2y`, `x + 3y` (mod 256):
/// (width, height, S) → the crop's top-left, centre and bottom-right pixels.
#[test]
fn crop_rules_match_torchvision_resize_and_center_crop() {
    use features::preprocess::{frame, Resize};
    type Pixels = [[u8; 3]; 3];
    let cases: [((u32, u32, u32), Pixels); 3] = [
        (
            (200, 100, 35),
            [[56, 12, 73], [98, 96, 243], [141, 182, 157]],
        ),
        ((100, 200, 50), [[7, 113, 177], [51, 201, 96], [93, 29, 8]]),
        ((90, 90, 35), [[5, 10, 20], [43, 87, 173], [82, 163, 71]]),
    ];
    for ((w, h, s), want) in cases {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x % 256) as u8,
                (2 * y % 256) as u8,
                ((x + 3 * y) % 256) as u8,
            ])
        });
        let out = frame(&img, s, Resize::BilinearCrop).unwrap();
        assert_eq!((out.width(), out.height()), (s, s));
        let got = [
            out.get_pixel(0, 0).0,
            out.get_pixel(s / 2, s / 2).0,
            out.get_pixel(s - 1, s - 1).0,
        ];
        for (g, e) in got.iter().zip(&want) {
            for c in 0..3 {
                assert!(
                    (g[c] as i32 - e[c] as i32).abs() <= 2,
                    "{w}×{h} → {s}: got {got:?}, Pillow {want:?}"
                );
            }
        }
        // Squashing keeps the whole picture instead.
        let squashed = frame(&img, s, Resize::Bilinear).unwrap();
        assert_eq!((squashed.width(), squashed.height()), (s, s));
    }
    assert!(Resize::BicubicCrop.crops() && !Resize::Nearest.crops());
    assert_eq!(
        "bilinear-crop".parse::<Resize>().unwrap(),
        Resize::BilinearCrop
    );
}

#[test]
fn lite_is_rgb_minus_127_over_128() {
    let px = features::preprocess::Preprocess::Lite.pixel([255.0, 127.0, 0.0]);
    assert_eq!(px, [1.0, 0.0, -127.0 / 128.0]);
}
