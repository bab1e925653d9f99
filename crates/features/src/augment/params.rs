//! Augmentation parameters (the Keras `ImageDataGenerator` arguments): presets, parsing, validation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

crate::choices! {
    /// How pixels that read outside the input image are filled.
    #[derive(Default)]
    pub enum FillMode("fill mode") {
        /// Repeat the edge pixel: `aaaa|abcd|dddd` (Keras default).
        #[default]
        Nearest = "nearest",
        /// Fill with the constant `cval`.
        Constant = "constant",
        /// Mirror, repeating the edge pixel: `dcba|abcd|dcba`.
        Reflect = "reflect",
        /// Tile the image: `abcd|abcd|abcd`.
        Wrap = "wrap",
    }
}

/// Fill modes as listed in error messages and help.
pub const FILL_MODE_CHOICES: &str =
    "nearest (repeat the edge pixel; Keras default), constant (fill with cval), \
     reflect (mirror: dcba|abcd|dcba), wrap (tile: abcd|abcd|abcd)";

/// Keras `zoom_range`: a float `z` meaning U(1 − z, 1 + z), or an explicit `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoomRange {
    /// `z`: row and column factors drawn independently from U(1 − z, 1 + z); 0 = no zoom.
    Amount(f32),
    /// Factors drawn independently from U(lo, hi). Below 1 zooms in, above 1 zooms out.
    Range(f32, f32),
}

impl Default for ZoomRange {
    fn default() -> Self {
        ZoomRange::Amount(0.0)
    }
}

impl ZoomRange {
    /// The (lo, hi) interval the zoom factors are drawn from.
    pub fn bounds(self) -> (f32, f32) {
        match self {
            ZoomRange::Amount(z) => (1.0 - z, 1.0 + z),
            ZoomRange::Range(lo, hi) => (lo, hi),
        }
    }

    /// True when every drawn factor is exactly 1.
    pub fn is_identity(self) -> bool {
        self.bounds() == (1.0, 1.0)
    }
}

impl fmt::Display for ZoomRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoomRange::Amount(z) => write!(f, "{z}"),
            ZoomRange::Range(lo, hi) => write!(f, "{lo},{hi}"),
        }
    }
}

impl FromStr for ZoomRange {
    type Err = Error;
    /// `"0.2"` (→ U(0.8, 1.2)) or `"0.8,1.2"`. Checked by [`AugmentParams::validate`].
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Augment(format!(
                "zoom '{s}' is not a number: give one amount in [0, 1) such as 0.2 (zoom factors from 0.8 to 1.2) \
                 or a pair LO,HI with 0 < LO <= HI such as 0.8,1.2"
            ))
        };
        match s.split_once(',') {
            Some((lo, hi)) => Ok(ZoomRange::Range(
                lo.trim().parse().map_err(|_| bad())?,
                hi.trim().parse().map_err(|_| bad())?,
            )),
            None => Ok(ZoomRange::Amount(s.trim().parse().map_err(|_| bad())?)),
        }
    }
}

/// The arguments of Keras' `ImageDataGenerator` that this crate implements (see the module doc
/// for the exact meaning of each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentParams {
    /// Rotation θ ~ U(−r, r), degrees.
    pub rotation_range: f32,
    /// Horizontal shift ~ U(−w, w) · width; a fraction of the width in [0, 1).
    pub width_shift_range: f32,
    /// Vertical shift ~ U(−h, h) · height; a fraction of the height in [0, 1).
    pub height_shift_range: f32,
    /// Shear angle ~ U(−s, s), **degrees** (Keras 2).
    pub shear_range: f32,
    /// Zoom factors for rows and columns, drawn independently.
    pub zoom_range: ZoomRange,
    /// Mirror left–right with probability 0.5.
    pub horizontal_flip: bool,
    /// Mirror top–bottom with probability 0.5.
    pub vertical_flip: bool,
    /// How points outside the input are filled.
    pub fill_mode: FillMode,
    /// Fill value for [`FillMode::Constant`] (0–255 scale).
    pub cval: f32,
    /// Brightness factor ~ U(lo, hi), multiplied in and clipped to 0–255; `None` = off.
    pub brightness_range: Option<(f32, f32)>,
    /// One intensity ~ U(−c, c) per image added to all channels, clipped to the image's min/max.
    pub channel_shift_range: f32,
    /// Multiplies every value at the very end (Keras `rescale`); `None` = off.
    pub rescale: Option<f32>,
}

/// Preset names accepted by [`AugmentParams::named`].
pub const PRESETS: &[&str] = &["tutorial", "preview", "none"];

/// Presets as listed in error messages and help.
pub const PRESET_CHOICES: &str = "tutorial (shear 0.2, zoom 0.2, horizontal flip: the 2016 tutorial's training \
     generator), preview (rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip: its preview demo), \
     none (no augmentation)";

impl Default for AugmentParams {
    fn default() -> Self {
        Self::none()
    }
}

impl AugmentParams {
    /// No augmentation at all (every transform is the identity).
    pub fn none() -> Self {
        AugmentParams {
            rotation_range: 0.0,
            width_shift_range: 0.0,
            height_shift_range: 0.0,
            shear_range: 0.0,
            zoom_range: ZoomRange::Amount(0.0),
            horizontal_flip: false,
            vertical_flip: false,
            fill_mode: FillMode::Nearest,
            cval: 0.0,
            brightness_range: None,
            channel_shift_range: 0.0,
            rescale: None,
        }
    }

    /// The 2016 tutorial's training generator (`shear_range=0.2, zoom_range=0.2,
    /// horizontal_flip=True`). Its `rescale=1./255` is left out: our preprocessing does the scaling.
    /// The shear is 0.2 **degrees** (Keras 2 reading; see the module doc).
    pub fn tutorial() -> Self {
        AugmentParams {
            shear_range: 0.2,
            zoom_range: ZoomRange::Amount(0.2),
            horizontal_flip: true,
            ..Self::none()
        }
    }

    /// The tutorial's preview demo (`rotation_range=40, width_shift_range=0.2,
    /// height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
    /// fill_mode='nearest'`), without `rescale` so the images stay 0–255.
    pub fn preview() -> Self {
        AugmentParams {
            rotation_range: 40.0,
            width_shift_range: 0.2,
            height_shift_range: 0.2,
            shear_range: 0.2,
            zoom_range: ZoomRange::Amount(0.2),
            horizontal_flip: true,
            fill_mode: FillMode::Nearest,
            ..Self::none()
        }
    }

    /// Looks up a preset by name (`tutorial`, `preview`, `none`).
    pub fn named(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "tutorial" => Ok(Self::tutorial()),
            "preview" => Ok(Self::preview()),
            "none" | "off" => Ok(Self::none()),
            _ => Err(Error::Augment(format!(
                "unknown augmentation preset '{name}': use {PRESET_CHOICES}"
            ))),
        }
    }

    /// True when every transform drawn from these parameters leaves images unchanged.
    pub fn is_identity(&self) -> bool {
        self.rotation_range == 0.0
            && self.width_shift_range == 0.0
            && self.height_shift_range == 0.0
            && self.shear_range == 0.0
            && self.zoom_range.is_identity()
            && !self.horizontal_flip
            && !self.vertical_flip
            && self
                .brightness_range
                .is_none_or(|(lo, hi)| lo == 1.0 && hi == 1.0)
            && self.channel_shift_range == 0.0
            && self.rescale.is_none_or(|r| r == 1.0)
    }

    /// Checks every range; the message names the parameter, its flag, the value and the valid range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Augment(msg));
        let non_negative = |name: &str, flag: &str, v: f32, max: f32, unit: &str| -> Result<()> {
            if !v.is_finite() || v < 0.0 || v >= max {
                return bad(format!(
                    "{name} ({flag}) must be {unit} in [0, {max}), got {v}"
                ));
            }
            Ok(())
        };
        non_negative(
            "rotation_range",
            "--rotation",
            self.rotation_range,
            360.0,
            "degrees",
        )?;
        non_negative(
            "width_shift_range",
            "--width-shift",
            self.width_shift_range,
            1.0,
            "a fraction of the width",
        )?;
        non_negative(
            "height_shift_range",
            "--height-shift",
            self.height_shift_range,
            1.0,
            "a fraction of the height",
        )?;
        non_negative("shear_range", "--shear", self.shear_range, 90.0, "degrees")?;
        non_negative(
            "channel_shift_range",
            "--channel-shift",
            self.channel_shift_range,
            256.0,
            "an intensity",
        )?;
        match self.zoom_range {
            ZoomRange::Amount(z) => {
                if !z.is_finite() || !(0.0..1.0).contains(&z) {
                    return bad(format!(
                        "zoom_range (--zoom) must be in [0, 1) as a single number (factors 1-z to 1+z), got {z}; \
                         for other factors give a pair LO,HI such as 0.5,1.5"
                    ));
                }
            }
            ZoomRange::Range(lo, hi) => {
                if !lo.is_finite() || !hi.is_finite() || lo <= 0.0 || lo > hi {
                    return bad(format!(
                        "zoom_range (--zoom) pair must satisfy 0 < LO <= HI, got {lo},{hi} \
                         (below 1 zooms in, above 1 zooms out)"
                    ));
                }
            }
        }
        if let Some((lo, hi)) = self.brightness_range {
            if !lo.is_finite() || !hi.is_finite() || lo <= 0.0 || lo > hi {
                return bad(format!(
                    "brightness_range (--brightness) must satisfy 0 < LO <= HI, got {lo},{hi} \
                     (1 keeps the brightness, e.g. 0.8,1.2)"
                ));
            }
        }
        if !self.cval.is_finite() {
            return bad(format!(
                "cval (--cval) must be a finite number on the 0-255 scale, got {}",
                self.cval
            ));
        }
        if let Some(r) = self.rescale {
            if !r.is_finite() || r == 0.0 {
                return bad(format!(
                    "rescale must be a finite non-zero factor such as 0.00392 (1/255), got {r}; leave it unset to keep values"
                ));
            }
        }
        Ok(())
    }

    /// One-line human summary of the non-default settings, e.g. `rotation 40°, zoom 0.2, hflip`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.rotation_range > 0.0 {
            parts.push(format!("rotation ±{}°", self.rotation_range));
        }
        if self.width_shift_range > 0.0 {
            parts.push(format!("width shift ±{}", self.width_shift_range));
        }
        if self.height_shift_range > 0.0 {
            parts.push(format!("height shift ±{}", self.height_shift_range));
        }
        if self.shear_range > 0.0 {
            parts.push(format!("shear ±{}°", self.shear_range));
        }
        if !self.zoom_range.is_identity() {
            let (lo, hi) = self.zoom_range.bounds();
            parts.push(format!("zoom {lo}–{hi}"));
        }
        if self.horizontal_flip {
            parts.push("horizontal flip".into());
        }
        if self.vertical_flip {
            parts.push("vertical flip".into());
        }
        if let Some((lo, hi)) = self.brightness_range {
            parts.push(format!("brightness {lo}–{hi}"));
        }
        if self.channel_shift_range > 0.0 {
            parts.push(format!("channel shift ±{}", self.channel_shift_range));
        }
        if let Some(r) = self.rescale {
            parts.push(format!("rescale {r}"));
        }
        if parts.is_empty() {
            return "none".into();
        }
        let geometric = self.rotation_range > 0.0
            || self.width_shift_range > 0.0
            || self.height_shift_range > 0.0
            || self.shear_range > 0.0
            || !self.zoom_range.is_identity();
        if geometric {
            parts.push(match self.fill_mode {
                FillMode::Constant => format!("fill constant {}", self.cval),
                m => format!("fill {m}"),
            });
        }
        parts.join(", ")
    }
}

impl FromStr for AugmentParams {
    type Err = Error;
    /// A preset name, see [`AugmentParams::named`].
    fn from_str(s: &str) -> Result<Self> {
        Self::named(s)
    }
}

/// Changes to a preset, one per Keras `ImageDataGenerator` argument (what the command-line flags
/// give): [`AugmentOverrides::apply`] starts from the named preset and sets every given value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AugmentOverrides {
    /// The preset to start from (`tutorial`, `preview` or `none`); `None`: the caller's default.
    pub preset: Option<String>,
    pub rotation: Option<f32>,
    pub width_shift: Option<f32>,
    pub height_shift: Option<f32>,
    pub shear: Option<f32>,
    pub zoom: Option<ZoomRange>,
    pub horizontal_flip: Option<bool>,
    pub vertical_flip: Option<bool>,
    pub fill: Option<FillMode>,
    pub cval: Option<f32>,
    pub brightness: Option<(f32, f32)>,
    pub channel_shift: Option<f32>,
}

impl AugmentOverrides {
    /// True when no value (nor a preset) is given.
    pub fn is_empty(&self) -> bool {
        *self == AugmentOverrides::default()
    }

    /// The preset (`self.preset`, else `default_preset`) with every given value set; validated.
    pub fn apply(&self, default_preset: &str) -> Result<AugmentParams> {
        let mut p = AugmentParams::named(self.preset.as_deref().unwrap_or(default_preset))?;
        let set = |slot: &mut f32, v: Option<f32>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut p.rotation_range, self.rotation);
        set(&mut p.width_shift_range, self.width_shift);
        set(&mut p.height_shift_range, self.height_shift);
        set(&mut p.shear_range, self.shear);
        set(&mut p.cval, self.cval);
        set(&mut p.channel_shift_range, self.channel_shift);
        p.zoom_range = self.zoom.unwrap_or(p.zoom_range);
        p.horizontal_flip = self.horizontal_flip.unwrap_or(p.horizontal_flip);
        p.vertical_flip = self.vertical_flip.unwrap_or(p.vertical_flip);
        p.fill_mode = self.fill.unwrap_or(p.fill_mode);
        if self.brightness.is_some() {
            p.brightness_range = self.brightness;
        }
        p.validate()?;
        Ok(p)
    }
}

/// A brightness range `LO,HI` (e.g. `0.8,1.2`).
pub fn parse_brightness(s: &str) -> Result<(f32, f32)> {
    let bad = || {
        Error::Augment(format!(
            "--brightness '{s}': give LO,HI with 0 < LO <= HI, e.g. 0.8,1.2"
        ))
    };
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let lo: f32 = lo.trim().parse().map_err(|_| bad())?;
    let hi: f32 = hi.trim().parse().map_err(|_| bad())?;
    Ok((lo, hi))
}
