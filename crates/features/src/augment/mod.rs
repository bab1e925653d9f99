//! Random image augmentation with the semantics of Keras 2 `ImageDataGenerator.random_transform`
//! (rotation, shifts, shear, zoom, flips, fill modes, channel shift, brightness, rescale), applied
//! to HWC `f32` images holding 0–255 values, plus the `augment-preview` contact sheet.
//!
//! # Geometry: what a sampled transform means
//!
//! Like Keras (keras-preprocessing 1.1.2, `apply_affine_transform` + `scipy.ndimage.affine_transform`
//! with `order=1`), one 3×3 matrix is built per image and maps each **output** pixel
//! `(row, col)` to the **input** position it reads (no inversion is needed: the matrix already is
//! the "inverse map"):
//!
//! ```text
//! [in_row, in_col, 1]ᵀ = C · R(θ) · T(tx, ty) · S(s) · Z(zx, zy) · C⁻¹ · [row, col, 1]ᵀ
//!   R = [[cos θ, −sin θ, 0], [sin θ, cos θ, 0], [0, 0, 1]]     θ = rotation, degrees
//!   T = [[1, 0, tx], [0, 1, ty], [0, 0, 1]]                     tx = rows (height shift · H), ty = cols (width shift · W)
//!   S = [[1, −sin s, 0], [0, cos s, 0], [0, 0, 1]]              s = shear, degrees
//!   Z = [[zx, 0, 0], [0, zy, 0], [0, 0, 1]]                     zx scales rows, zy scales columns
//!   C = translation by the image centre ((H − 1)/2, (W − 1)/2)
//! ```
//!
//! and the image is resampled once with bilinear interpolation. Consequences, all as in Keras:
//! * a **positive width shift** `ty` makes output column `c` show input column `c + ty`: the content
//!   moves **left** by `ty` pixels; a positive height shift moves it **up**;
//! * a **positive rotation** turns the content **clockwise** as displayed (rows grow downwards);
//! * a **zoom below 1 magnifies** (zooms in) and a zoom above 1 shrinks the content (zooms out);
//!   `zoom_range = 0.2` draws the row and column factors independently from U(0.8, 1.2);
//! * `shear_range` is in **degrees** (Keras 2). The 2016 tutorial was written for Keras 1, which read
//!   `shear_range=0.2` as radians (≈11.5°); under Keras 2 — and here — the same `0.2` is 0.2°, an
//!   almost invisible shear. Pass `--shear 11.5` to get the 2016 look;
//! * flips come after the affine transform (Keras order); they are folded into the matrix, which
//!   gives the identical result without a second pass.
//!
//! Pixels that read outside the input follow the fill mode: `nearest` (repeat the edge pixel,
//! `aaaa|abcd|dddd`), `constant` (`cval`; like scipy's `constant`, no blending with `cval` inside the
//! image), `reflect` (half-sample mirror, `dcba|abcd|dcba`) and `wrap` (tiling, `abcd|abcd|abcd`).
//!
//! Deliberate differences from particular Keras releases, each a bug fix:
//! * the centre is the true pixel centre `(n − 1)/2` (as in later keras-preprocessing / tf.keras);
//!   keras-preprocessing ≤ 1.1.2 used `n/2 + 0.5`, which displaced every rotated or zoomed image by
//!   up to about one pixel;
//! * later releases (keras-preprocessing master, tf.keras 2.x `keras.preprocessing.image`) swap the
//!   matrix axes, which multiplies the height-shift fraction by the height but applies it
//!   horizontally (and mirrors the rotation direction); here the height shift always moves rows and
//!   the width shift columns;
//! * `wrap` tiles the image with period `n` as Keras documents (scipy's `grid-wrap`); Keras hands
//!   `'wrap'` to scipy, whose `wrap` (since scipy 1.6) repeats with period `n − 1` instead;
//! * brightness is `clip(x · b, 0, 255)` (Keras with `scale=False`) without PIL's 8-bit rounding, and
//!   without keras-preprocessing 1.1's contrast stretch to the full 0–255 range before it.
//!
//! Per-image photometric steps, in Keras order after the geometry: channel shift (one intensity
//! drawn from U(−c, c) added to every channel, then clipped to the transformed image's min/max),
//! brightness, and finally `rescale` (what `ImageDataGenerator.standardize` does).
//!
//! Sampling is seeded: [`Augmenter::new`] takes a seed, and [`Augmenter::augment_with`] takes any
//! `rand::Rng` so parallel workers can each own one ([`worker_rng`]).

mod image;
mod params;
pub mod preview;
mod transform;
mod warp;

pub use image::ImageF32;
pub use params::{
    parse_brightness, AugmentOverrides, AugmentParams, FillMode, ZoomRange, FILL_MODE_CHOICES,
    PRESETS, PRESET_CHOICES,
};
pub use transform::{Affine, Transform};
pub use warp::warp_affine;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Result;

/// The RNG type the augmenter owns; also a good per-worker RNG (see [`worker_rng`]).
pub type AugmentRng = ChaCha8Rng;

/// An independent, reproducible RNG for worker `worker` of a run seeded with `seed`
/// (same seed and worker → same stream, different workers → non-overlapping streams).
pub fn worker_rng(seed: u64, worker: u64) -> AugmentRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(worker);
    rng
}

/// Draws random transforms from validated [`AugmentParams`] and applies them.
#[derive(Debug, Clone)]
pub struct Augmenter {
    params: AugmentParams,
    rng: AugmentRng,
}

impl Augmenter {
    /// Validates `params` and seeds the augmenter's own RNG with `seed`.
    pub fn new(params: AugmentParams, seed: u64) -> Result<Self> {
        params.validate()?;
        Ok(Augmenter {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// The parameters this augmenter samples from.
    pub fn params(&self) -> &AugmentParams {
        &self.params
    }

    /// True when every transform this augmenter can draw leaves images unchanged.
    pub fn is_identity(&self) -> bool {
        self.params.is_identity()
    }

    /// Draws the parameters of one random transform for a `width`×`height` image
    /// (Keras `get_random_transform`). Ranges that are 0 draw nothing.
    pub fn sample_transform<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        width: u32,
        height: u32,
    ) -> Transform {
        sample(&self.params, rng, width, height)
    }

    /// Applies a given transform (Keras `apply_transform`, then `rescale`), writing into `out`
    /// (resized to the input's shape; reuse it across images to avoid allocating).
    pub fn apply_into(&self, image: &ImageF32, t: &Transform, out: &mut ImageF32) {
        let affine = t.affine(image.width, image.height);
        warp_affine(image, &affine, self.params.fill_mode, self.params.cval, out);
        photometric(out, t.channel_shift, t.brightness, self.params.rescale);
    }

    /// [`Augmenter::apply_into`] returning a new image.
    pub fn apply(&self, image: &ImageF32, t: &Transform) -> ImageF32 {
        let mut out = ImageF32::new(0, 0);
        self.apply_into(image, t, &mut out);
        out
    }

    /// Draws a transform from `rng` and applies it into `out` (Keras `random_transform`); returns
    /// the transform drawn.
    pub fn augment_into<R: Rng + ?Sized>(
        &self,
        image: &ImageF32,
        rng: &mut R,
        out: &mut ImageF32,
    ) -> Transform {
        let t = self.sample_transform(rng, image.width, image.height);
        self.apply_into(image, &t, out);
        t
    }

    /// Draws a transform from `rng` and returns the augmented image.
    pub fn augment_with<R: Rng + ?Sized>(&self, image: &ImageF32, rng: &mut R) -> ImageF32 {
        let mut out = ImageF32::new(0, 0);
        self.augment_into(image, rng, &mut out);
        out
    }

    /// Draws a transform from the augmenter's own seeded RNG and returns the augmented image.
    pub fn augment(&mut self, image: &ImageF32) -> ImageF32 {
        let t = sample(&self.params, &mut self.rng, image.width, image.height);
        self.apply(image, &t)
    }

    /// The augmenter's own RNG (seeded in [`Augmenter::new`]).
    pub fn rng(&mut self) -> &mut AugmentRng {
        &mut self.rng
    }
}

/// Keras `get_random_transform` over validated parameters.
fn sample<R: Rng + ?Sized>(p: &AugmentParams, rng: &mut R, width: u32, height: u32) -> Transform {
    let mut uniform = |lo: f32, hi: f32| -> f32 {
        let u: f64 = rng.random();
        (lo as f64 + (hi as f64 - lo as f64) * u) as f32
    };
    let theta = if p.rotation_range > 0.0 {
        uniform(-p.rotation_range, p.rotation_range)
    } else {
        0.0
    };
    let shift_rows = if p.height_shift_range > 0.0 {
        uniform(-p.height_shift_range, p.height_shift_range) * height as f32
    } else {
        0.0
    };
    let shift_cols = if p.width_shift_range > 0.0 {
        uniform(-p.width_shift_range, p.width_shift_range) * width as f32
    } else {
        0.0
    };
    let shear = if p.shear_range > 0.0 {
        uniform(-p.shear_range, p.shear_range)
    } else {
        0.0
    };
    let (lo, hi) = p.zoom_range.bounds();
    let (zoom_rows, zoom_cols) = if lo == 1.0 && hi == 1.0 {
        (1.0, 1.0)
    } else {
        (uniform(lo, hi), uniform(lo, hi))
    };
    let flip_horizontal = p.horizontal_flip && uniform(0.0, 1.0) < 0.5;
    let flip_vertical = p.vertical_flip && uniform(0.0, 1.0) < 0.5;
    let channel_shift = if p.channel_shift_range > 0.0 {
        Some(uniform(-p.channel_shift_range, p.channel_shift_range))
    } else {
        None
    };
    let brightness = p.brightness_range.map(|(lo, hi)| uniform(lo, hi));
    Transform {
        theta,
        shift_rows,
        shift_cols,
        shear,
        zoom_rows,
        zoom_cols,
        flip_horizontal,
        flip_vertical,
        channel_shift,
        brightness,
    }
}

/// Channel shift (clipped to the image's min/max), brightness (clipped to 0–255), rescale; one pass.
fn photometric(
    img: &mut ImageF32,
    channel_shift: Option<f32>,
    brightness: Option<f32>,
    rescale: Option<f32>,
) {
    if channel_shift.is_none() && brightness.is_none() && rescale.is_none() {
        return;
    }
    let (lo, hi) = match channel_shift {
        Some(_) => img
            .data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            }),
        None => (f32::NEG_INFINITY, f32::INFINITY),
    };
    let shift = channel_shift.unwrap_or(0.0);
    let gain = brightness.unwrap_or(1.0);
    let scale = rescale.unwrap_or(1.0);
    for v in &mut img.data {
        let mut x = *v;
        if channel_shift.is_some() {
            x = (x + shift).clamp(lo, hi);
        }
        if brightness.is_some() {
            x = (x * gain).clamp(0.0, 255.0);
        }
        *v = x * scale;
    }
}
