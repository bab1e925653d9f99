//! Turning a decoded RGB photo into the network's input: resizing (Keras `load_img` nearest by default;
//! squashed to the square input, or the shorter side scaled and the centre cropped as torchvision and
//! timm evaluate) and per-channel normalisation (caffe, torch, lite or unit) written straight into an
//! NCHW or NHWC batch slot.

use fast_image_resize as fr;
use image::RgbImage;

use crate::onnx::Layout;
use crate::{Error, Result};

crate::choices! {
    /// Per-channel normalisation expected by the backbone's weights.
    pub enum Preprocess("preprocessing") {
        /// Keras/Caffe VGG: RGB→BGR, 0–255, minus the ImageNet mean [103.939, 116.779, 123.68] (B, G, R).
        Caffe = "caffe",
        /// PyTorch/ONNX zoo: RGB/255, minus mean [0.485, 0.456, 0.406], divided by std [0.229, 0.224, 0.225].
        Torch = "torch",
        /// The 2016 tutorial: RGB/255 (costs accuracy with ImageNet weights; kept for comparison).
        Unit = "unit",
        /// TensorFlow EfficientNet-Lite / MobileNet: RGB, (x − 127) / 128.
        Lite = "lite",
    }
}

/// Choices listed in error messages.
pub const PREPROCESS_CHOICES: &str = "caffe (BGR, 0-255 minus ImageNet mean; Keras VGG16), torch (RGB/255, ImageNet mean/std; ONNX zoo, torchvision), lite (RGB, (x-127)/128; EfficientNet-Lite), unit (RGB/255; the 2016 tutorial)";

const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];
const TORCH_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const TORCH_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preprocess {
    /// Maps one 8-bit RGB pixel to the three network input channels, in network channel order.
    #[inline]
    pub fn pixel(self, rgb: [f32; 3]) -> [f32; 3] {
        match self {
            Preprocess::Caffe => [
                rgb[2] - CAFFE_MEAN_BGR[0],
                rgb[1] - CAFFE_MEAN_BGR[1],
                rgb[0] - CAFFE_MEAN_BGR[2],
            ],
            Preprocess::Torch => [
                (rgb[0] / 255.0 - TORCH_MEAN[0]) / TORCH_STD[0],
                (rgb[1] / 255.0 - TORCH_MEAN[1]) / TORCH_STD[1],
                (rgb[2] / 255.0 - TORCH_MEAN[2]) / TORCH_STD[2],
            ],
            Preprocess::Unit => [rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0],
            Preprocess::Lite => [
                (rgb[0] - LITE_MEAN) / LITE_STD,
                (rgb[1] - LITE_MEAN) / LITE_STD,
                (rgb[2] - LITE_MEAN) / LITE_STD,
            ],
        }
    }
}

const LITE_MEAN: f32 = 127.0;
const LITE_STD: f32 = 128.0;

crate::choices! {
    /// How a photo becomes the square input: a filter that squashes the whole photo to size × size
    /// (`Nearest` reproduces Keras `load_img(target_size=…)`: PIL NEAREST, sampling at pixel
    /// centres), or `…-crop`: the shorter side scaled to size · 256/224 with that filter, then the
    /// centre size × size cut out (torchvision's and timm's evaluation convention).
    pub enum Resize("resize rule") {
        Nearest = "nearest",
        Bilinear = "bilinear",
        Bicubic = "bicubic",
        Lanczos = "lanczos",
        /// Shorter side to size · 256/224 (bilinear), centre crop.
        BilinearCrop = "bilinear-crop",
        /// Shorter side to size · 256/224 (bicubic), centre crop.
        BicubicCrop = "bicubic-crop",
    }
}

impl Resize {
    /// The filter that scales the pixels.
    pub fn filter(self) -> Resize {
        match self {
            Resize::BilinearCrop => Resize::Bilinear,
            Resize::BicubicCrop => Resize::Bicubic,
            other => other,
        }
    }

    /// True when the centre is cropped after scaling the shorter side (false: squashed).
    pub fn crops(self) -> bool {
        self.filter() != self
    }
}

/// Resizes `img` to the `size` × `size` input by `rule` (see [`Resize`]). The crop follows
/// torchvision's `Resize(round(size·256/224))` + `CenterCrop(size)`: the longer side scaled by the
/// same factor (truncated), the offset `(scaled − size) / 2` rounded half to even.
pub fn frame(img: &RgbImage, size: u32, rule: Resize) -> Result<RgbImage> {
    if !rule.crops() {
        return resize(img, size, size, rule);
    }
    let short = (f64::from(size) * 256.0 / 224.0).round() as u32;
    let (w, h) = (img.width(), img.height());
    let (sw, sh) = if w <= h {
        (
            short,
            (u64::from(short) * u64::from(h) / u64::from(w).max(1)) as u32,
        )
    } else {
        (
            (u64::from(short) * u64::from(w) / u64::from(h).max(1)) as u32,
            short,
        )
    };
    let scaled = resize(img, sw.max(size), sh.max(size), rule.filter())?;
    let offset = |len: u32| {
        let d = len - size;
        let half = d / 2;
        // Python's round(d / 2): halves go to the even neighbour.
        if d % 2 == 1 && half % 2 == 1 {
            half + 1
        } else {
            half
        }
    };
    let (x0, y0) = (offset(scaled.width()), offset(scaled.height()));
    Ok(image::imageops::crop_imm(&scaled, x0, y0, size, size).to_image())
}

/// Source index of each output pixel for PIL's NEAREST resize (`ImagingScaleAffine`): start at half a step
/// and add the step in double precision, truncating each position. The accumulated rounding matters: the
/// closed form `floor((x + 0.5) · in/out)` picks a different pixel in about 1 image in 1.3.
pub fn pil_nearest_index(n_in: usize, n_out: usize) -> Vec<usize> {
    let step = n_in as f64 / n_out as f64;
    let mut pos = 0.0 + step * 0.5;
    let mut out = Vec::with_capacity(n_out);
    for _ in 0..n_out {
        out.push((pos as usize).min(n_in.saturating_sub(1)));
        pos += step;
    }
    out
}

/// Resizes to `width`×`height` (squashing) with `filter`'s filter ([`Resize::filter`]; the crop is
/// [`frame`]'s). Nearest picks pixels exactly like PIL (Keras `load_img`, see [`pil_nearest_index`]);
/// the others use PIL-style convolution (antialiased when shrinking).
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Resize) -> Result<RgbImage> {
    if img.width() == width && img.height() == height {
        return Ok(img.clone());
    }
    if filter.filter() == Resize::Nearest {
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let xs = pil_nearest_index(iw, width as usize);
        let ys = pil_nearest_index(ih, height as usize);
        let src = img.as_raw();
        let mut out = Vec::with_capacity(width as usize * height as usize * 3);
        for &y in &ys {
            let row = y * iw * 3;
            for &x in &xs {
                let p = row + x * 3;
                out.extend_from_slice(&src[p..p + 3]);
            }
        }
        return RgbImage::from_raw(width, height, out)
            .ok_or_else(|| Error::Invalid("resize produced a buffer of the wrong size".into()));
    }
    let alg = fr::ResizeAlg::Convolution(match filter.filter() {
        Resize::Bilinear => fr::FilterType::Bilinear,
        Resize::Bicubic => fr::FilterType::CatmullRom,
        _ => fr::FilterType::Lanczos3,
    });
    // Borrowed, not copied: the source of a photo is its largest buffer.
    let src =
        fr::images::ImageRef::new(img.width(), img.height(), img.as_raw(), fr::PixelType::U8x3)
            .map_err(|e| Error::Invalid(format!("resize: {e}")))?;
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x3);
    fr::Resizer::new()
        .resize(&src, &mut dst, &fr::ResizeOptions::new().resize_alg(alg))
        .map_err(|e| Error::Invalid(format!("resize: {e}")))?;
    RgbImage::from_raw(width, height, dst.into_vec())
        .ok_or_else(|| Error::Invalid("resize produced a buffer of the wrong size".into()))
}

/// Writes a (resized) image into one batch slot of `3·h·w` floats in the network's layout.
pub fn write_input(img: &RgbImage, pre: Preprocess, layout: Layout, out: &mut [f32]) -> Result<()> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    if out.len() != 3 * plane {
        return Err(Error::Invalid(format!(
            "input slot holds {} values, image needs {}",
            out.len(),
            3 * plane
        )));
    }
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        let v = pre.pixel([px[0] as f32, px[1] as f32, px[2] as f32]);
        match layout {
            Layout::Nchw => {
                out[i] = v[0];
                out[plane + i] = v[1];
                out[2 * plane + i] = v[2];
            }
            Layout::Nhwc => out[3 * i..3 * i + 3].copy_from_slice(&v),
        }
    }
    Ok(())
}

/// Same as [`write_input`] for an HWC float image with values 0–255 (augmented images).
pub fn write_input_f32(
    rgb_hwc: &[f32],
    pre: Preprocess,
    layout: Layout,
    out: &mut [f32],
) -> Result<()> {
    if out.len() != rgb_hwc.len() || !rgb_hwc.len().is_multiple_of(3) {
        return Err(Error::Invalid(format!(
            "input slot holds {} values, image has {}",
            out.len(),
            rgb_hwc.len()
        )));
    }
    let plane = rgb_hwc.len() / 3;
    for (i, px) in rgb_hwc.chunks_exact(3).enumerate() {
        let v = pre.pixel([px[0], px[1], px[2]]);
        match layout {
            Layout::Nchw => {
                out[i] = v[0];
                out[plane + i] = v[1];
                out[2 * plane + i] = v[2];
            }
            Layout::Nhwc => out[3 * i..3 * i + 3].copy_from_slice(&v),
        }
    }
    Ok(())
}
