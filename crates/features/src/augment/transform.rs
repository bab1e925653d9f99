//! One drawn transform (Keras' `transform_parameters` dict) and the affine matrix it stands for.

use serde::{Deserialize, Serialize};

/// The parameters of one augmentation, as drawn by `Augmenter::sample_transform` (Keras
/// `get_random_transform`). Geometry is in pixels and degrees; see the module doc for directions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    /// Rotation, degrees; positive turns the content clockwise as displayed.
    pub theta: f32,
    /// Keras `tx`: shift along rows, pixels; positive moves the content up.
    pub shift_rows: f32,
    /// Keras `ty`: shift along columns, pixels; positive moves the content left.
    pub shift_cols: f32,
    /// Shear angle, degrees.
    pub shear: f32,
    /// Keras `zx`: zoom factor along rows (below 1 magnifies).
    pub zoom_rows: f32,
    /// Keras `zy`: zoom factor along columns (below 1 magnifies).
    pub zoom_cols: f32,
    /// Mirror left–right after the affine transform.
    pub flip_horizontal: bool,
    /// Mirror top–bottom after the affine transform.
    pub flip_vertical: bool,
    /// Intensity added to every channel, clipped to the image's min/max.
    pub channel_shift: Option<f32>,
    /// Brightness factor.
    pub brightness: Option<f32>,
}

impl Default for Transform {
    fn default() -> Self {
        Self::identity()
    }
}

impl Transform {
    /// The transform that changes nothing.
    pub fn identity() -> Self {
        Transform {
            theta: 0.0,
            shift_rows: 0.0,
            shift_cols: 0.0,
            shear: 0.0,
            zoom_rows: 1.0,
            zoom_cols: 1.0,
            flip_horizontal: false,
            flip_vertical: false,
            channel_shift: None,
            brightness: None,
        }
    }

    /// The output→input pixel map of the geometric part (affine, then flips) for a
    /// `width`×`height` image, built exactly as Keras' `apply_affine_transform` (about the
    /// centre `((height − 1)/2, (width − 1)/2)`).
    pub fn affine(&self, width: u32, height: u32) -> Affine {
        let theta = (self.theta as f64).to_radians();
        let (s, c) = theta.sin_cos();
        let rotation = [[c, -s, 0.0], [s, c, 0.0]];
        let shift = [
            [1.0, 0.0, self.shift_rows as f64],
            [0.0, 1.0, self.shift_cols as f64],
        ];
        let shear = (self.shear as f64).to_radians();
        let shear = [[1.0, -shear.sin(), 0.0], [0.0, shear.cos(), 0.0]];
        let zoom = [
            [self.zoom_rows as f64, 0.0, 0.0],
            [0.0, self.zoom_cols as f64, 0.0],
        ];
        let m = mul(mul(mul(rotation, shift), shear), zoom);
        let (or, oc) = ((height as f64 - 1.0) / 2.0, (width as f64 - 1.0) / 2.0);
        let centred = mul(
            mul([[1.0, 0.0, or], [0.0, 1.0, oc]], m),
            [[1.0, 0.0, -or], [0.0, 1.0, -oc]],
        );
        // Flipping the output afterwards = reading output pixel (r, W−1−c) / (H−1−r) instead.
        let flip_c = if self.flip_horizontal {
            [-1.0, width as f64 - 1.0]
        } else {
            [1.0, 0.0]
        };
        let flip_r = if self.flip_vertical {
            [-1.0, height as f64 - 1.0]
        } else {
            [1.0, 0.0]
        };
        let flip = [[flip_r[0], 0.0, flip_r[1]], [0.0, flip_c[0], flip_c[1]]];
        Affine {
            m: mul(centred, flip),
        }
    }
}

/// An output→input pixel map: output pixel `(row, col)` reads input position
/// `(m[0][0]·row + m[0][1]·col + m[0][2], m[1][0]·row + m[1][1]·col + m[1][2])`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    pub m: [[f64; 3]; 2],
}

impl Affine {
    /// Every output pixel reads the same input pixel.
    pub fn identity() -> Self {
        Affine {
            m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        }
    }

    /// The input `(row, col)` read by output pixel `(row, col)`.
    pub fn map(&self, row: f64, col: f64) -> (f64, f64) {
        let m = &self.m;
        (
            m[0][0] * row + m[0][1] * col + m[0][2],
            m[1][0] * row + m[1][1] * col + m[1][2],
        )
    }

    /// True when the map is exactly the identity.
    pub fn is_identity(&self) -> bool {
        *self == Self::identity()
    }
}

/// Product of two affine maps given as the top two rows of 3×3 matrices (`a · b`).
fn mul(a: [[f64; 3]; 2], b: [[f64; 3]; 2]) -> [[f64; 3]; 2] {
    let mut out = [[0.0; 3]; 2];
    for i in 0..2 {
        for j in 0..3 {
            out[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + if j == 2 { a[i][2] } else { 0.0 };
        }
    }
    out
}
