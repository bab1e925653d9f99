//! Known-answer tests of the augmentation engine on synthetic images (flips, shifts, 90° turns,
//! zoom, fill modes, photometric steps), parameter validation, seeded sampling, and the preview writer.

use std::path::PathBuf;

use features::augment::preview::{write_preview, PreviewFormat, PreviewOptions};
use features::augment::{
    warp_affine, worker_rng, Affine, AugmentParams, Augmenter, FillMode, ImageF32, Transform,
    ZoomRange,
};

/// Every pixel distinct and non-linear, so any misplaced read shows.
fn pattern(w: u32, h: u32) -> ImageF32 {
    ImageF32::from_fn(w, h, |x, y| {
        let v = ((x * 37 + y * 101 + x * y * 7) % 251) as f32;
        [v, (v * 3.0) % 256.0, 255.0 - v]
    })
}

/// A linear ramp: bilinear interpolation reproduces it exactly at any inside position.
fn ramp(w: u32, h: u32) -> ImageF32 {
    ImageF32::from_fn(w, h, |x, y| {
        [ramp_value(y as f64, x as f64) as f32, x as f32, y as f32]
    })
}

fn ramp_value(row: f64, col: f64) -> f64 {
    3.0 * row + 2.0 * col + 5.0
}

fn apply(params: &AugmentParams, img: &ImageF32, t: &Transform) -> ImageF32 {
    Augmenter::new(params.clone(), 0)
        .expect("valid params")
        .apply(img, t)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn horizontal_and_vertical_flips_are_exact() {
    let img = pattern(13, 7);
    let t = Transform {
        flip_horizontal: true,
        ..Transform::identity()
    };
    let out = apply(&AugmentParams::none(), &img, &t);
    for y in 0..7 {
        for x in 0..13 {
            assert_eq!(out.pixel(x, y), img.pixel(12 - x, y), "hflip at ({x},{y})");
        }
    }
    let t = Transform {
        flip_vertical: true,
        ..Transform::identity()
    };
    let out = apply(&AugmentParams::none(), &img, &t);
    for y in 0..7 {
        for x in 0..13 {
            assert_eq!(out.pixel(x, y), img.pixel(x, 6 - y), "vflip at ({x},{y})");
        }
    }
}

#[test]
fn random_horizontal_flip_happens_half_the_time_and_is_exact() {
    let img = pattern(10, 6);
    let mut flipped = ImageF32::new(10, 6);
    warp_affine(
        &img,
        &Transform {
            flip_horizontal: true,
            ..Transform::identity()
        }
        .affine(10, 6),
        FillMode::Nearest,
        0.0,
        &mut flipped,
    );
    let params = AugmentParams {
        horizontal_flip: true,
        ..AugmentParams::none()
    };
    let aug = Augmenter::new(params, 3).unwrap();
    let mut rng = worker_rng(3, 0);
    let mut n_flipped = 0;
    for _ in 0..1000 {
        let out = aug.augment_with(&img, &mut rng);
        if out == flipped {
            n_flipped += 1;
        } else {
            assert_eq!(
                out, img,
                "a horizontal-flip-only augmenter produced something else"
            );
        }
    }
    assert!(
        (420..580).contains(&n_flipped),
        "flipped {n_flipped} of 1000"
    );
}

#[test]
fn width_shift_of_a_tenth_moves_content_left_by_a_tenth_of_the_width() {
    let (w, h) = (100u32, 40u32);
    let img = pattern(w, h);
    // Keras: output column c reads input column c + ty, ty = 0.1 · W = 10.
    let t = Transform {
        shift_cols: 0.1 * w as f32,
        ..Transform::identity()
    };
    let out = apply(&AugmentParams::none(), &img, &t);
    for y in 0..h {
        for x in 0..w - 10 {
            assert_eq!(out.pixel(x, y), img.pixel(x + 10, y), "at ({x},{y})");
        }
        // Beyond the right edge: nearest fill repeats the last input column.
        for x in w - 10..w {
            assert_eq!(out.pixel(x, y), img.pixel(w - 1, y));
        }
    }
    // Height shift: content moves up by 0.1 · H = 4 rows.
    let t = Transform {
        shift_rows: 0.1 * h as f32,
        ..Transform::identity()
    };
    let out = apply(&AugmentParams::none(), &img, &t);
    for y in 0..h - 4 {
        for x in 0..w {
            assert_eq!(out.pixel(x, y), img.pixel(x, y + 4));
        }
    }
}

#[test]
fn a_random_width_shift_moves_a_marker_by_the_sampled_amount() {
    let (w, h) = (120u32, 50u32);
    let marker = (60u32, 25u32);
    let img = ImageF32::from_fn(w, h, |x, y| {
        if (x, y) == marker {
            [255.0; 3]
        } else {
            [0.0; 3]
        }
    });
    let params = AugmentParams {
        width_shift_range: 0.1,
        fill_mode: FillMode::Constant,
        ..AugmentParams::none()
    };
    let aug = Augmenter::new(params, 11).unwrap();
    let mut rng = worker_rng(11, 0);
    for _ in 0..50 {
        let mut out = ImageF32::new(0, 0);
        let t = aug.augment_into(&img, &mut rng, &mut out);
        assert!(
            t.shift_cols.abs() <= 12.0,
            "shift {} beyond 10% of 120 px",
            t.shift_cols
        );
        assert_eq!(t.shift_rows, 0.0);
        // Bilinear interpolation keeps the marker's mass and centroid.
        let (mut mass, mut cx, mut cy) = (0.0f64, 0.0f64, 0.0f64);
        for y in 0..h {
            for x in 0..w {
                let v = out.pixel(x, y)[0] as f64;
                mass += v;
                cx += v * x as f64;
                cy += v * y as f64;
            }
        }
        assert!((mass - 255.0).abs() < 1e-3, "mass {mass}");
        let expected = marker.0 as f64 - t.shift_cols as f64;
        assert!(
            (cx / mass - expected).abs() < 1e-4,
            "centroid {} expected {expected}",
            cx / mass
        );
        assert!((cy / mass - marker.1 as f64).abs() < 1e-6);
    }
}

#[test]
fn rotation_by_90_degrees_is_the_exact_clockwise_turn() {
    for n in [31u32, 32] {
        let img = pattern(n, n);
        let t = Transform {
            theta: 90.0,
            ..Transform::identity()
        };
        let out = apply(&AugmentParams::none(), &img, &t);
        for y in 0..n {
            for x in 0..n {
                // Clockwise: new(row, col) = old(n − 1 − col, row).
                let want = img.pixel(y, n - 1 - x);
                let got = out.pixel(x, y);
                let d = max_abs_diff(&got, &want);
                assert!(d < 1e-3, "n={n} ({x},{y}): {got:?} vs {want:?}");
            }
        }
        // −90° is the counter-clockwise turn.
        let t = Transform {
            theta: -90.0,
            ..Transform::identity()
        };
        let out = apply(&AugmentParams::none(), &img, &t);
        for y in 1..n - 1 {
            for x in 1..n - 1 {
                assert!(max_abs_diff(&out.pixel(x, y), &img.pixel(n - 1 - y, x)) < 1e-3);
            }
        }
    }
}

#[test]
fn zoom_of_one_half_magnifies_twice_about_the_centre() {
    let (w, h) = (41u32, 30u32);
    let img = ramp(w, h);
    let t = Transform {
        zoom_rows: 0.5,
        zoom_cols: 0.5,
        ..Transform::identity()
    };
    let out = apply(&AugmentParams::none(), &img, &t);
    let (or, oc) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    for y in 0..h {
        for x in 0..w {
            let (r, c) = (or + 0.5 * (y as f64 - or), oc + 0.5 * (x as f64 - oc));
            let got = out.pixel(x, y);
            assert!((got[0] as f64 - ramp_value(r, c)).abs() < 1e-3, "({x},{y})");
            assert!((got[1] as f64 - c).abs() < 1e-4 && (got[2] as f64 - r).abs() < 1e-4);
        }
    }
    // The centre column of an odd width stays put; a point 10 px right of it shows what was 5 px right.
    assert_eq!(out.pixel(20, 10)[1], 20.0);
    assert_eq!(out.pixel(30, 10)[1], 25.0);

    // Zoom 2 shrinks: output pixel at distance d from the centre reads distance 2d.
    let t = Transform {
        zoom_rows: 2.0,
        zoom_cols: 2.0,
        ..Transform::identity()
    };
    let out = Augmenter::new(
        AugmentParams {
            fill_mode: FillMode::Constant,
            cval: -1.0,
            ..AugmentParams::none()
        },
        0,
    )
    .unwrap()
    .apply(&img, &t);
    for y in 0..h {
        for x in 0..w {
            let (r, c) = (or + 2.0 * (y as f64 - or), oc + 2.0 * (x as f64 - oc));
            let inside = (0.0..=h as f64 - 1.0).contains(&r) && (0.0..=w as f64 - 1.0).contains(&c);
            let want = if inside { ramp_value(r, c) } else { -1.0 };
            assert!((out.pixel(x, y)[0] as f64 - want).abs() < 1e-3, "({x},{y})");
        }
    }
}

#[test]
fn each_fill_mode_fills_the_border_as_documented() {
    let (w, h) = (8u32, 5u32);
    let img = pattern(w, h);
    // Which input column an out-of-range column reads (None = cval).
    type Source = fn(i64) -> Option<u32>;
    let cases: [(FillMode, Source); 4] = [
        (FillMode::Nearest, |x| Some(x.clamp(0, 7) as u32)),
        (FillMode::Constant, |x| {
            if (0..8).contains(&x) {
                Some(x as u32)
            } else {
                None
            }
        }),
        // Half-sample mirror: …c b a | a b c … : −1 → 0, −3 → 2, 8 → 7, 10 → 5.
        (FillMode::Reflect, |x| {
            Some(if x < 0 {
                -x - 1
            } else if x > 7 {
                15 - x
            } else {
                x
            } as u32)
        }),
        (FillMode::Wrap, |x| Some(x.rem_euclid(8) as u32)),
    ];
    for (mode, source) in cases {
        let params = AugmentParams {
            fill_mode: mode,
            cval: 17.0,
            ..AugmentParams::none()
        };
        for shift in [3i64, -3] {
            let t = Transform {
                shift_cols: shift as f32,
                ..Transform::identity()
            };
            let out = apply(&params, &img, &t);
            for y in 0..h {
                for x in 0..w {
                    let want = match source(x as i64 + shift) {
                        Some(sx) => img.pixel(sx, y),
                        None => [17.0; 3],
                    };
                    assert_eq!(out.pixel(x, y), want, "{mode} shift {shift} at ({x},{y})");
                }
            }
        }
    }
}

#[test]
fn combined_transform_matches_the_keras_matrix() {
    // Independent re-derivation of Keras' apply_affine_transform on a non-square ramp image.
    let (w, h) = (47u32, 33u32);
    let img = ramp(w, h);
    let t = Transform {
        theta: 17.0,
        shift_rows: 2.5,
        shift_cols: -3.25,
        shear: 9.0,
        zoom_rows: 0.9,
        zoom_cols: 1.15,
        ..Transform::identity()
    };
    let out = apply(
        &AugmentParams {
            fill_mode: FillMode::Constant,
            cval: -7.0,
            ..AugmentParams::none()
        },
        &img,
        &t,
    );
    let th = 17f64.to_radians();
    let sh = 9f64.to_radians();
    let (or, oc) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let mut inside_count = 0;
    for y in 0..h {
        for x in 0..w {
            // Z, then S, then T, then R on centred (row, col).
            let (r, c) = (0.9 * (y as f64 - or), 1.15 * (x as f64 - oc));
            let (r, c) = (r - sh.sin() * c, sh.cos() * c);
            let (r, c) = (r + 2.5, c - 3.25);
            let (r, c) = (
                th.cos() * r - th.sin() * c + or,
                th.sin() * r + th.cos() * c + oc,
            );
            let inside = (0.0..=h as f64 - 1.0).contains(&r) && (0.0..=w as f64 - 1.0).contains(&c);
            let want = if inside { ramp_value(r, c) } else { -7.0 };
            inside_count += inside as usize;
            assert!(
                (out.pixel(x, y)[0] as f64 - want).abs() < 2e-3,
                "({x},{y}): {:?} vs {want}",
                out.pixel(x, y)
            );
        }
    }
    assert!(inside_count > (w * h) as usize / 2);
}

#[test]
fn identity_when_all_ranges_are_zero() {
    let img = pattern(23, 17);
    let params = AugmentParams::none();
    assert!(params.is_identity());
    let aug = Augmenter::new(params, 5).unwrap();
    assert!(aug.is_identity());
    let mut rng = worker_rng(5, 0);
    for _ in 0..20 {
        let mut out = ImageF32::new(0, 0);
        let t = aug.augment_into(&img, &mut rng, &mut out);
        assert_eq!(t, Transform::identity());
        assert_eq!(out, img);
    }
    // Explicit zero ranges and a (1, 1) zoom pair are the identity too.
    let params = AugmentParams {
        zoom_range: ZoomRange::Range(1.0, 1.0),
        ..AugmentParams::none()
    };
    assert!(params.is_identity());
    assert_eq!(
        Augmenter::new(params, 1)
            .unwrap()
            .augment_with(&img, &mut rng),
        img
    );
    assert!(!AugmentParams::tutorial().is_identity());
}

#[test]
fn channel_shift_brightness_and_rescale_follow_keras() {
    let img = ImageF32::from_fn(6, 4, |x, y| {
        [50.0 + x as f32 * 30.0, 60.0 + y as f32 * 40.0, 120.0]
    });
    let (lo, hi) = (50.0f32, 200.0f32); // the image's min and max over all channels
    let t = Transform {
        channel_shift: Some(100.0),
        ..Transform::identity()
    };
    let out = apply(&AugmentParams::none(), &img, &t);
    for (o, i) in out.data.iter().zip(&img.data) {
        assert_eq!(*o, (i + 100.0).clamp(lo, hi));
    }
    let t = Transform {
        brightness: Some(1.5),
        ..Transform::identity()
    };
    let out = apply(&AugmentParams::none(), &img, &t);
    for (o, i) in out.data.iter().zip(&img.data) {
        assert_eq!(*o, (i * 1.5).clamp(0.0, 255.0));
    }
    let params = AugmentParams {
        rescale: Some(1.0 / 255.0),
        ..AugmentParams::none()
    };
    let out = apply(
        &params,
        &img,
        &Transform {
            brightness: Some(2.0),
            ..Transform::identity()
        },
    );
    for (o, i) in out.data.iter().zip(&img.data) {
        assert!((o - (i * 2.0).clamp(0.0, 255.0) / 255.0).abs() < 1e-6);
    }
}

#[test]
fn validation_rejects_bad_ranges_with_the_valid_range_in_the_message() {
    let err = |p: AugmentParams| p.validate().expect_err("should be rejected").to_string();
    let m = err(AugmentParams {
        rotation_range: -5.0,
        ..AugmentParams::none()
    });
    assert!(
        m.contains("--rotation") && m.contains("[0, 360)") && m.contains("-5"),
        "{m}"
    );
    let m = err(AugmentParams {
        width_shift_range: -0.1,
        ..AugmentParams::none()
    });
    assert!(m.contains("--width-shift") && m.contains("[0, 1)"), "{m}");
    let m = err(AugmentParams {
        height_shift_range: 1.5,
        ..AugmentParams::none()
    });
    assert!(m.contains("--height-shift"), "{m}");
    let m = err(AugmentParams {
        shear_range: f32::NAN,
        ..AugmentParams::none()
    });
    assert!(m.contains("--shear") && m.contains("degrees"), "{m}");
    let m = err(AugmentParams {
        channel_shift_range: -1.0,
        ..AugmentParams::none()
    });
    assert!(m.contains("--channel-shift"), "{m}");
    let m = err(AugmentParams {
        zoom_range: ZoomRange::Amount(1.0),
        ..AugmentParams::none()
    });
    assert!(m.contains("--zoom") && m.contains("[0, 1)"), "{m}");
    let m = err(AugmentParams {
        zoom_range: ZoomRange::Range(1.2, 0.8),
        ..AugmentParams::none()
    });
    assert!(m.contains("0 < LO <= HI"), "{m}");
    let m = err(AugmentParams {
        brightness_range: Some((1.2, 0.8)),
        ..AugmentParams::none()
    });
    assert!(
        m.contains("--brightness") && m.contains("0 < LO <= HI"),
        "{m}"
    );
    let m = err(AugmentParams {
        brightness_range: Some((0.0, 1.0)),
        ..AugmentParams::none()
    });
    assert!(m.contains("--brightness"), "{m}");
    assert!(Augmenter::new(
        AugmentParams {
            rotation_range: -1.0,
            ..AugmentParams::none()
        },
        0
    )
    .is_err());

    let m = "bogus".parse::<FillMode>().unwrap_err().to_string();
    for name in ["nearest", "constant", "reflect", "wrap"] {
        assert!(m.contains(name), "{m}");
        assert_eq!(name.parse::<FillMode>().unwrap().name(), name);
    }
    let m = "fancy".parse::<AugmentParams>().unwrap_err().to_string();
    assert!(
        m.contains("tutorial") && m.contains("preview") && m.contains("none"),
        "{m}"
    );
    assert!("0.8,x".parse::<ZoomRange>().is_err());
    assert_eq!(
        "0.8, 1.2".parse::<ZoomRange>().unwrap(),
        ZoomRange::Range(0.8, 1.2)
    );
    assert_eq!("0.2".parse::<ZoomRange>().unwrap().bounds(), (0.8, 1.2));

    for p in [
        AugmentParams::none(),
        AugmentParams::tutorial(),
        AugmentParams::preview(),
    ] {
        p.validate().unwrap();
    }
}

#[test]
fn presets_match_the_tutorial() {
    let t: AugmentParams = "tutorial".parse().unwrap();
    assert_eq!(
        (t.shear_range, t.zoom_range.bounds(), t.horizontal_flip),
        (0.2, (0.8, 1.2), true)
    );
    assert_eq!(
        (t.rotation_range, t.width_shift_range, t.rescale),
        (0.0, 0.0, None)
    );
    let p = AugmentParams::named("preview").unwrap();
    assert_eq!(
        (
            p.rotation_range,
            p.width_shift_range,
            p.height_shift_range,
            p.shear_range
        ),
        (40.0, 0.2, 0.2, 0.2)
    );
    assert_eq!(
        (p.zoom_range.bounds(), p.horizontal_flip, p.vertical_flip),
        ((0.8, 1.2), true, false)
    );
    assert_eq!(p.fill_mode, FillMode::Nearest);
    assert!(AugmentParams::named("none").unwrap().is_identity());
}

#[test]
fn sampled_parameters_cover_their_ranges() {
    let params = AugmentParams {
        brightness_range: Some((0.5, 1.5)),
        channel_shift_range: 30.0,
        vertical_flip: true,
        ..AugmentParams::preview()
    };
    let aug = Augmenter::new(params, 1234).unwrap();
    let mut rng = worker_rng(1234, 0);
    let (w, h) = (200u32, 100u32);
    let draws: Vec<Transform> = (0..20_000)
        .map(|_| aug.sample_transform(&mut rng, w, h))
        .collect();
    let check = |name: &str, vals: Vec<f32>, lo: f32, hi: f32| {
        let min = vals.iter().cloned().fold(f32::INFINITY, f32::min);
        let max = vals.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / vals.len() as f64;
        let span = (hi - lo) as f64;
        assert!(
            min >= lo && max <= hi,
            "{name}: [{min}, {max}] outside [{lo}, {hi}]"
        );
        assert!(
            min < lo + 0.01 * (hi - lo) && max > hi - 0.01 * (hi - lo),
            "{name}: [{min}, {max}] misses the ends"
        );
        assert!(
            (mean - (lo + hi) as f64 / 2.0).abs() < 0.02 * span,
            "{name}: mean {mean}"
        );
        // Uniform: a quarter of the draws in each quarter of the range.
        let q =
            vals.iter().filter(|&&v| v < lo + (hi - lo) / 4.0).count() as f64 / vals.len() as f64;
        assert!((q - 0.25).abs() < 0.02, "{name}: first quarter holds {q}");
    };
    check(
        "theta",
        draws.iter().map(|t| t.theta).collect(),
        -40.0,
        40.0,
    );
    check(
        "shift_cols",
        draws.iter().map(|t| t.shift_cols).collect(),
        -40.0,
        40.0,
    );
    check(
        "shift_rows",
        draws.iter().map(|t| t.shift_rows).collect(),
        -20.0,
        20.0,
    );
    check("shear", draws.iter().map(|t| t.shear).collect(), -0.2, 0.2);
    check(
        "zoom_rows",
        draws.iter().map(|t| t.zoom_rows).collect(),
        0.8,
        1.2,
    );
    check(
        "zoom_cols",
        draws.iter().map(|t| t.zoom_cols).collect(),
        0.8,
        1.2,
    );
    check(
        "brightness",
        draws.iter().map(|t| t.brightness.unwrap()).collect(),
        0.5,
        1.5,
    );
    check(
        "channel_shift",
        draws.iter().map(|t| t.channel_shift.unwrap()).collect(),
        -30.0,
        30.0,
    );
    // Row and column zoom are drawn independently.
    let n = draws.len() as f64;
    let (mr, mc) = (
        draws.iter().map(|t| t.zoom_rows as f64).sum::<f64>() / n,
        draws.iter().map(|t| t.zoom_cols as f64).sum::<f64>() / n,
    );
    let cov = draws
        .iter()
        .map(|t| (t.zoom_rows as f64 - mr) * (t.zoom_cols as f64 - mc))
        .sum::<f64>()
        / n;
    let var = 0.4f64 * 0.4 / 12.0;
    assert!((cov / var).abs() < 0.05, "zoom correlation {}", cov / var);
    for (name, frac) in [
        (
            "hflip",
            draws.iter().filter(|t| t.flip_horizontal).count() as f64 / n,
        ),
        (
            "vflip",
            draws.iter().filter(|t| t.flip_vertical).count() as f64 / n,
        ),
    ] {
        assert!((frac - 0.5).abs() < 0.02, "{name} fraction {frac}");
    }
}

#[test]
fn same_seed_same_images_different_seed_different_images() {
    let img = pattern(40, 30);
    let run = |seed: u64| {
        let mut aug = Augmenter::new(AugmentParams::preview(), seed).unwrap();
        (0..5).map(|_| aug.augment(&img)).collect::<Vec<_>>()
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
    assert_ne!(a[0], a[1], "consecutive draws should differ");

    let aug = Augmenter::new(AugmentParams::preview(), 0).unwrap();
    let draw = |worker: u64| {
        let mut rng = worker_rng(9, worker);
        (0..5)
            .map(|_| aug.sample_transform(&mut rng, 40, 30))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(0), draw(0));
    assert_ne!(draw(0), draw(1));
}

#[test]
fn warp_reuses_the_output_buffer_and_handles_tiny_images() {
    let img = pattern(1, 1);
    let mut out = pattern(9, 9);
    warp_affine(
        &img,
        &Transform {
            theta: 33.0,
            zoom_rows: 1.7,
            ..Transform::identity()
        }
        .affine(1, 1),
        FillMode::Reflect,
        0.0,
        &mut out,
    );
    assert_eq!((out.width, out.height), (1, 1));
    assert_eq!(out.data, img.data);
    let mut out = ImageF32::new(0, 0);
    warp_affine(
        &pattern(5, 3),
        &Affine::identity(),
        FillMode::Wrap,
        0.0,
        &mut out,
    );
    assert_eq!(out, pattern(5, 3));
}

// ---------- preview writer ----------

#[test]
fn preview_writes_variants_at_original_size_and_a_grid_without_touching_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("synthetic.png");
    pattern(64, 48).to_rgb8().save(&src).unwrap();
    let out_dir = dir.path().join("preview");
    std::fs::create_dir_all(&out_dir).unwrap();
    let keep = out_dir.join("keep.txt");
    std::fs::write(&keep, "mine").unwrap();

    let opts = PreviewOptions {
        count: 5,
        out_dir: out_dir.clone(),
        prefix: "cat".into(),
        format: PreviewFormat::Png,
        seed: 7,
        thumb_size: 40,
    };
    let report = write_preview(&src, &AugmentParams::preview(), &opts).unwrap();
    assert_eq!(report.files.len(), 5);
    assert_eq!(report.transforms.len(), 5);
    for (i, f) in report.files.iter().enumerate() {
        assert_eq!(f, &out_dir.join(format!("cat_{i}.png")));
        let img = image::open(f).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
    }
    let grid = image::open(&report.grid).unwrap();
    assert_eq!(report.grid, out_dir.join("cat_grid.png"));
    // 6 tiles → 3 columns × 2 rows of 40 px cells plus padding.
    assert!(
        grid.width() > 3 * 40 && grid.height() > 2 * 40 && grid.width() < 4 * 40,
        "{:?}",
        (grid.width(), grid.height())
    );
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "mine");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Same seed → same transforms; JPEG gets the .jpeg extension.
    let again = write_preview(&src, &AugmentParams::preview(), &opts).unwrap();
    assert_eq!(again.transforms, report.transforms);
    let jpeg = PreviewOptions {
        format: PreviewFormat::Jpeg,
        count: 1,
        ..opts.clone()
    };
    let r = write_preview(&src, &AugmentParams::preview(), &jpeg).unwrap();
    assert_eq!(r.files[0], out_dir.join("cat_0.jpeg"));
    assert_eq!(image::open(&r.files[0]).unwrap().width(), 64);
}

#[test]
fn preview_errors_name_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not_an_image.jpg");
    std::fs::write(&bad, b"hello, I am text").unwrap();
    let opts = PreviewOptions {
        count: 2,
        out_dir: dir.path().join("out"),
        prefix: "x".into(),
        format: PreviewFormat::Jpeg,
        seed: 0,
        thumb_size: 32,
    };
    let m = write_preview(&bad, &AugmentParams::preview(), &opts)
        .unwrap_err()
        .to_string();
    assert!(m.contains("not_an_image.jpg"), "{m}");
    let missing = dir.path().join("missing.jpg");
    let m = write_preview(&missing, &AugmentParams::preview(), &opts)
        .unwrap_err()
        .to_string();
    assert!(m.contains("missing.jpg"), "{m}");
    let m = write_preview(
        &bad,
        &AugmentParams::preview(),
        &PreviewOptions {
            prefix: "a/b".into(),
            ..opts.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(m.contains("--prefix"), "{m}");
    let m = write_preview(
        &bad,
        &AugmentParams::preview(),
        &PreviewOptions { count: 0, ..opts },
    )
    .unwrap_err()
    .to_string();
    assert!(m.contains("--count"), "{m}");
}

#[test]
fn preview_of_a_real_photo() {
    let photo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/dogs_vs_cats/train/cats/cat.1.jpg");
    if !photo.exists() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{} is missing: the real-data tests need /work/shared/data (see README)",
                photo.display()
            );
        }
        eprintln!("skipping: {} not found", photo.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = PreviewOptions {
        count: 3,
        out_dir: dir.path().to_path_buf(),
        prefix: "cat".into(),
        format: PreviewFormat::Jpeg,
        seed: 1,
        thumb_size: 64,
    };
    let report = write_preview(&photo, &AugmentParams::preview(), &opts).unwrap();
    let original = image::open(&photo).unwrap();
    for f in &report.files {
        let img = image::open(f).unwrap();
        assert_eq!((img.width(), img.height()), (report.width, report.height));
    }
    assert_eq!(
        (original.width(), original.height()),
        (report.width, report.height)
    );
}
