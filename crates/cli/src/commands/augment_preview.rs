//! `bottleneck augment-preview` (write random variants of one photo and a contact sheet) and the
//! augmentation flags shared with the training commands ([`AugmentFlags`]).

use std::path::PathBuf;

use features::augment::preview::{write_preview, PreviewFormat, PreviewOptions};
use features::augment::{
    parse_brightness, AugmentOverrides, AugmentParams, FillMode, ZoomRange, PRESETS,
};

use crate::args::Global;

/// Seed used when `--seed` is not given, so previews and runs are reproducible by default.
pub const DEFAULT_AUGMENT_SEED: u64 = runfs::DEFAULT_SEED;

/// Keras `ImageDataGenerator` augmentation flags. A preset (`--augment`) gives the base values and
/// every other flag overrides one of them. Commands that flatten this struct must not define
/// their own `--seed`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AugmentFlags {
    /// Base settings: tutorial (shear 0.2, zoom 0.2, horizontal flip), preview (rotation 40, shifts 0.2,
    /// shear 0.2, zoom 0.2, horizontal flip) or none. Default: tutorial for training, preview for augment-preview.
    #[arg(long, value_name = "PRESET", value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    pub augment: Option<String>,
    /// Rotation range in degrees: θ drawn from U(-R, R); positive turns clockwise.
    #[arg(long, value_name = "DEG", allow_negative_numbers = true)]
    pub rotation: Option<f32>,
    /// Horizontal shift range as a fraction of the width, in [0, 1).
    #[arg(long, value_name = "FRAC", allow_negative_numbers = true)]
    pub width_shift: Option<f32>,
    /// Vertical shift range as a fraction of the height, in [0, 1).
    #[arg(long, value_name = "FRAC", allow_negative_numbers = true)]
    pub height_shift: Option<f32>,
    /// Shear range in DEGREES (Keras 2). The 2016 tutorial's 0.2 was radians under Keras 1 (≈11.5°).
    #[arg(long, value_name = "DEG", allow_negative_numbers = true)]
    pub shear: Option<f32>,
    /// Zoom: Z for factors in [1-Z, 1+Z] (Z in [0, 1)), or LO,HI. Below 1 zooms in.
    #[arg(long, value_name = "Z|LO,HI")]
    pub zoom: Option<ZoomRange>,
    /// Mirror left-right half of the time (`--horizontal-flip=false` turns a preset's flip off).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub horizontal_flip: Option<bool>,
    /// Mirror top-bottom half of the time.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub vertical_flip: Option<bool>,
    /// How pixels from outside the image are filled.
    #[arg(long, value_name = "MODE")]
    pub fill: Option<FillMode>,
    /// Fill value for --fill constant (0-255).
    #[arg(long, value_name = "V", allow_negative_numbers = true)]
    pub cval: Option<f32>,
    /// Brightness factor range LO,HI (e.g. 0.8,1.2); off by default.
    #[arg(long, value_name = "LO,HI", value_parser = parse_brightness)]
    pub brightness: Option<(f32, f32)>,
    /// Channel shift range (0-255 scale): one intensity per image added to all channels.
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    pub channel_shift: Option<f32>,
    /// Seed of the augmentation random numbers [default: 1337].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl AugmentFlags {
    /// The overrides these flags give.
    pub fn overrides(&self) -> AugmentOverrides {
        AugmentOverrides {
            preset: self.augment.clone(),
            rotation: self.rotation,
            width_shift: self.width_shift,
            height_shift: self.height_shift,
            shear: self.shear,
            zoom: self.zoom,
            horizontal_flip: self.horizontal_flip,
            vertical_flip: self.vertical_flip,
            fill: self.fill,
            cval: self.cval,
            brightness: self.brightness,
            channel_shift: self.channel_shift,
        }
    }

    /// The parameters these flags describe, on top of the `tutorial` preset unless `--augment` names another.
    pub fn to_params(&self) -> anyhow::Result<AugmentParams> {
        Ok(self.overrides().apply("tutorial")?)
    }

    /// `--seed`, or [`DEFAULT_AUGMENT_SEED`].
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(DEFAULT_AUGMENT_SEED)
    }
}

/// Write COUNT randomly augmented copies of IMAGE (original size) and a contact sheet.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  bottleneck augment-preview data/train/cats/cat.1.jpg --count 20 --out preview/ --prefix cat"
)]
pub struct AugmentPreviewArgs {
    /// The photo to augment.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Number of augmented copies.
    #[arg(long, default_value_t = 20)]
    pub count: usize,
    /// Output folder (created if missing; other files in it are left alone).
    #[arg(long, default_value = "preview")]
    pub out: PathBuf,
    /// File name prefix: <prefix>_<i>.<ext> and <prefix>_grid.png [default: the image's file stem].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Format of the copies (the contact sheet is always PNG).
    #[arg(long, default_value = "jpeg")]
    pub format: PreviewFormat,
    /// Longest side of each contact-sheet thumbnail, pixels.
    #[arg(long, default_value_t = 160, value_parser = clap::value_parser!(u32).range(16..=1024))]
    pub thumb: u32,
    #[command(flatten)]
    pub augment: AugmentFlags,
}

pub fn run(args: &AugmentPreviewArgs, global: &Global) -> anyhow::Result<()> {
    let params = args.augment.overrides().apply("preview")?;
    let prefix = match &args.prefix {
        Some(p) => p.clone(),
        None => args
            .image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "augmented".into()),
    };
    let opts = PreviewOptions {
        count: args.count,
        out_dir: args.out.clone(),
        prefix,
        format: args.format,
        seed: args.augment.seed(),
        thumb_size: args.thumb,
    };
    if global.verbose && !global.quiet {
        eprintln!("augmentation: {} (seed {})", params.summary(), opts.seed);
    }
    let report = write_preview(&args.image, &params, &opts)?;
    if global.verbose && !global.quiet {
        for note in &report.notes {
            eprintln!("{}: {note}", report.input.display());
        }
    }
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !global.quiet {
        let first = report
            .files
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let last = report
            .files
            .last()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        println!(
            "wrote {} augmented copies of {} ({}×{}) to {}: {first} … {last}",
            report.files.len(),
            report.input.display(),
            report.width,
            report.height,
            opts.out_dir.display()
        );
        println!("contact sheet: {}", report.grid.display());
        println!("augmentation: {} (seed {})", params.summary(), opts.seed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        flags: AugmentFlags,
    }

    fn parse(args: &[&str]) -> anyhow::Result<AugmentParams> {
        let h = Harness::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        h.flags.to_params()
    }

    #[test]
    fn flags_override_the_preset() {
        let p = parse(&[]).unwrap();
        assert_eq!(p, AugmentParams::tutorial());
        let p = parse(&[
            "--augment",
            "preview",
            "--rotation",
            "10",
            "--horizontal-flip=false",
            "--zoom",
            "0.5,1.5",
        ])
        .unwrap();
        assert_eq!(p.rotation_range, 10.0);
        assert!(!p.horizontal_flip);
        assert_eq!(p.zoom_range.bounds(), (0.5, 1.5));
        assert_eq!(p.width_shift_range, 0.2);
        let p = parse(&[
            "--augment",
            "none",
            "--vertical-flip",
            "--fill",
            "reflect",
            "--brightness",
            "0.8,1.2",
        ])
        .unwrap();
        assert!(p.vertical_flip && !p.horizontal_flip);
        assert_eq!(p.fill_mode, FillMode::Reflect);
        assert_eq!(p.brightness_range, Some((0.8, 1.2)));
    }

    #[test]
    fn bad_flags_are_rejected_with_the_valid_range() {
        let m = parse(&["--zoom", "1.5"]).unwrap_err().to_string();
        assert!(m.contains("[0, 1)"), "{m}");
        let m = parse(&["--brightness", "1.2,0.8"]).unwrap_err().to_string();
        assert!(m.contains("0 < LO <= HI"), "{m}");
        let m = format!("{:#}", parse(&["--brightness", "bright"]).unwrap_err());
        assert!(m.contains("--brightness"), "{m}");
        assert!(parse(&["--augment", "fancy"]).is_err());
        assert!(parse(&["--fill", "mirror"]).is_err());
        let m = parse(&["--rotation", "-3"]).unwrap_err().to_string();
        assert!(m.contains("--rotation"), "{m}");
    }
}
