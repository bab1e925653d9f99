//! What a tutorial run is asked to do ([`TutorialConfig`]), its stages ([`Stage`]), the tutorial's
//! settings and published accuracies, and the `--quick` preset.

use std::path::PathBuf;

use features::extract::Precision;
use features::manifest::HubOptions;
use features::preprocess::{Preprocess, Resize};
use features::runtime::{Device, Engine};
use head::recipe::Recipe;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The stages of the tutorial, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Stage 1: the small convnet trained from scratch on augmented images.
    Scratch,
    /// Stage 2a: bottleneck features of every image (the frozen backbone's).
    Extract,
    /// Stage 2b: the dense classifier trained on the features.
    TrainHead,
    /// Stage 3: block5 fine-tuned together with the head.
    Finetune,
}

/// Accuracies the tutorial published and the ones this project aims for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reference {
    pub tutorial: f64,
    pub target: f64,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 4] = [
        Stage::Scratch,
        Stage::Extract,
        Stage::TrainHead,
        Stage::Finetune,
    ];

    /// The stage's command name (`scratch`, `extract`, `train-head`, `finetune`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Scratch => "scratch",
            Stage::Extract => "extract",
            Stage::TrainHead => "train-head",
            Stage::Finetune => "finetune",
        }
    }

    /// The tutorial's numbering: 1, 2a, 2b, 3.
    pub fn number(self) -> &'static str {
        match self {
            Stage::Scratch => "1",
            Stage::Extract => "2a",
            Stage::TrainHead => "2b",
            Stage::Finetune => "3",
        }
    }

    /// One line saying what the stage does.
    pub fn title(self) -> &'static str {
        match self {
            Stage::Scratch => "small convnet trained from scratch",
            Stage::Extract => "bottleneck features of the frozen backbone",
            Stage::TrainHead => "head on the bottleneck features",
            Stage::Finetune => "top block fine-tuned with the head",
        }
    }

    /// The folder of the stage's outputs inside the run.
    pub fn dir(self) -> &'static str {
        match self {
            Stage::Scratch => "scratch",
            Stage::Extract => "features",
            Stage::TrainHead => "head",
            Stage::Finetune => "finetune",
        }
    }

    /// The tutorial's published validation accuracy and our target (none for extraction).
    pub fn reference(self) -> Option<Reference> {
        let (tutorial, target) = match self {
            Stage::Scratch => (0.80, 0.82),
            Stage::Extract => return None,
            Stage::TrainHead => (0.90, 0.970),
            Stage::Finetune => (0.94, 0.980),
        };
        Some(Reference { tutorial, target })
    }

    /// Parses a comma-separated list (`scratch,extract,train-head,finetune`, also `head`, `all`).
    pub fn parse_list(s: &str) -> Result<Vec<Stage>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let stages: &[Stage] = match part {
                "all" => &Stage::ALL,
                "scratch" | "1" => &[Stage::Scratch],
                "extract" | "2a" => &[Stage::Extract],
                "train-head" | "head" | "2b" => &[Stage::TrainHead],
                "finetune" | "3" => &[Stage::Finetune],
                other => {
                    return Err(Error::Invalid(format!(
                        "unknown stage '{other}': use scratch, extract, train-head, finetune (comma-separated) or all"
                    )))
                }
            };
            out.extend_from_slice(stages);
        }
        if out.is_empty() {
            return Err(Error::Invalid("--stages lists no stage".into()));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Fine-tuning learning rate of `bottleneck fit`: on `intel_scenes_dev` (100 photos per class) 1e-5
/// over-fits block5 within 3 epochs and ends below the stage-2 head, 3e-6 ends above it
/// (BENCHMARKS.md, "Stage 3 on your own photos").
pub const OWN_PHOTOS_FINETUNE_LR: f64 = 3e-6;

/// Folds of the temperature cross-fit of `bottleneck fit`'s fine-tuning: fine-tuning on 100
/// photos per class over-fits its probabilities (`intel_scenes_dev` at 224 px: ECE 0.042 without);
/// the cross-fit's temperature is fitted on every training photo once (BENCHMARKS.md).
pub const OWN_PHOTOS_CALIBRATION_FOLDS: usize = 2;

/// The backbones `fit` measures and chooses among when no `--model` is given (BENCHMARKS.md,
/// "Choosing the backbone"): by cross-validated log loss Lite2 wins Dogs vs Cats and the two side by
/// side win the scenes (Lite0 alone beat Lite2 there); MobileNetV2 won on neither and is left out to
/// save its extraction.
pub const DEFAULT_CANDIDATES: &[&str] = &[
    "efficientnet-lite0",
    "efficientnet-lite2",
    "efficientnet-lite0+lite2",
];

/// Input side of stages 2 and 3 when neither `--size` nor the backbone's manifest gives one.
pub const DEFAULT_SIZE: u32 = 224;

impl TutorialConfig {
    /// The input side and resize rule of stages 2 and 3 for a backbone with `manifest`: what was
    /// asked for, else the manifest's, else [`DEFAULT_SIZE`] squashed with `nearest`.
    pub fn input(&self, manifest: Option<&features::manifest::Manifest>) -> (u32, Resize) {
        (
            self.size
                .or(manifest.and_then(|m| m.size))
                .unwrap_or(DEFAULT_SIZE),
            self.resize
                .or(manifest.and_then(|m| m.resize))
                .unwrap_or(Resize::Nearest),
        )
    }
}

/// Everything `bottleneck tutorial` needs.
#[derive(Debug, Clone)]
pub struct TutorialConfig {
    /// Data folder `DIR/{train,validation}/<class>/*`.
    pub data: PathBuf,
    /// Model name or `.onnx` path of the backbone.
    pub model: String,
    /// Preprocessing; default: the model manifest's.
    pub preprocess: Option<Preprocess>,
    /// Run folder.
    pub run: PathBuf,
    /// Stages to run (the others are only reported when their outputs exist).
    pub stages: Vec<Stage>,
    /// Use only the first N images of each class of each split (linked into `RUN/tutorial-data`).
    pub limit: Option<usize>,
    /// Side of the square input of stages 2 and 3 (the tutorial: 150); `None`: the backbone
    /// manifest's native size, else [`DEFAULT_SIZE`] (VGG16's 224).
    pub size: Option<u32>,
    /// How photos become the input of stages 2 and 3; `None`: the backbone manifest's rule (e.g.
    /// `bilinear-crop`), else `nearest` (the tutorial's Keras `load_img`).
    pub resize: Option<Resize>,
    /// Side of stage 1's input (the tutorial's convnet: 150).
    pub scratch_size: u32,
    /// Backbone precision of extraction.
    pub precision: Precision,
    /// Precision of the frozen part of fine-tuning (and of its `model.onnx`); `None`: see
    /// [`TutorialConfig::finetune_precision_for`].
    pub finetune_precision: Option<Precision>,
    /// Precision of the training products of stage 1 and of fine-tuning's block (`auto`: bf16
    /// products with FP32 sums on CPUs with AVX512-BF16).
    pub train_precision: train::kernels::TrainPrecision,
    /// Where every stage runs (`accel::engine::select`: on `cuda`, Candle on the GPU for
    /// extraction, stage 1 and fine-tuning; the head always trains on the CPU).
    pub device: Device,
    /// The engine knob (`auto`: the default for `device`; see `accel::engine`).
    pub engine: Engine,
    /// ONNX Runtime intra-op threads (default: all cores).
    pub threads: Option<usize>,
    pub scratch_epochs: usize,
    pub head_epochs: usize,
    pub finetune_epochs: usize,
    /// Fine-tuning's settings (learning rate, cached augmented draws, calibration folds, …); its
    /// frozen part's precision is [`TutorialConfig::finetune_precision`], its products'
    /// `train_precision` above.
    pub finetune: finetune::Options,
    /// Stage 1 with [`scratch::ScratchConfig::recipe`] (else the tutorial's own settings).
    pub scratch_recipe: bool,
    /// Input tensor of the block to fine-tune; default: the model manifest's.
    pub split_at: Option<String>,
    /// Backbones to choose among by cross-validated log loss on the training photos (`fit`
    /// without `--model`: [`DEFAULT_CANDIDATES`]); the winner replaces `model`. Fewer than two:
    /// `model` is used as it is.
    pub candidates: Vec<String>,
    /// Replace outputs of RUN that were made from other inputs or settings.
    pub force: bool,
    /// Audit the training photos after the head (`audit_step`; needs the probe's out-of-fold
    /// predictions, so the 2016 head is not audited).
    pub audit: bool,
    /// A file of photo paths to leave out (`fit --exclude`), passed to every extraction (the
    /// candidates' too); fine-tuning drops the photos the feature files record as left out.
    pub exclude: Option<PathBuf>,
    pub hub: HubOptions,
    /// Stage 2b's head: the tutorial's dense network, or the calibrated probe (`bottleneck fit`).
    pub head_recipe: Recipe,
}

impl TutorialConfig {
    /// bottleneck's recipe, measured to beat the tutorial on its data (BENCHMARKS.md): stage 1 is
    /// [`scratch::ScratchConfig::recipe`] at 150 px; stages 2–3 run at VGG16's 224 px with FP32
    /// features and the tutorial's head (50 epochs); fine-tuning keeps the tutorial's SGD with
    /// momentum 0.9 and batch 16 but with lr 1e-5 (1e-4 suits the tutorial's 0–1 inputs, not caffe
    /// preprocessing), 10 epochs over 5 cached augmented draws, on an int8 frozen part.
    /// [`TutorialConfig::keras2016`] has the tutorial's own settings.
    pub fn new(
        data: impl Into<PathBuf>,
        model: impl Into<String>,
        run: impl Into<PathBuf>,
    ) -> Self {
        TutorialConfig {
            data: data.into(),
            model: model.into(),
            preprocess: None,
            run: run.into(),
            stages: Stage::ALL.to_vec(),
            limit: None,
            size: None,
            resize: None,
            scratch_size: 150,
            precision: Precision::Fp32,
            finetune_precision: None,
            train_precision: train::kernels::TrainPrecision::Auto,
            device: Device::Cpu,
            engine: Engine::Auto,
            threads: None,
            scratch_epochs: scratch::RECIPE_EPOCHS,
            head_epochs: 50,
            finetune_epochs: 10,
            finetune: finetune::Options {
                sgd: train::optim::SgdConfig {
                    learning_rate: 1e-5,
                    ..train::optim::SgdConfig::default()
                },
                aug_cache: 5,
                ..finetune::Options::default()
            },
            scratch_recipe: true,
            split_at: None,
            candidates: Vec::new(),
            force: false,
            audit: true,
            exclude: None,
            hub: HubOptions::from_env(),
            head_recipe: Recipe::Keras2016,
        }
    }

    /// `bottleneck fit`: your own photos through extract → train-head → finetune, with the
    /// calibrated linear probe as the head (no stage-1 baseline) and fine-tuning at lr
    /// [`OWN_PHOTOS_FINETUNE_LR`]; otherwise [`TutorialConfig::new`].
    pub fn own_photos(mut self) -> Self {
        self.stages = vec![Stage::Extract, Stage::TrainHead, Stage::Finetune];
        self.head_recipe = Recipe::Probe;
        self.finetune.sgd.learning_rate = OWN_PHOTOS_FINETUNE_LR;
        self.finetune.calibrate = OWN_PHOTOS_CALIBRATION_FOLDS;
        self
    }

    /// Runs the stages on `device`; fine-tuning's frozen part in `finetune_precision` when given
    /// (else [`TutorialConfig::finetune_precision_for`] decides).
    pub fn set_device(&mut self, device: Device, finetune_precision: Option<Precision>) {
        self.device = device;
        if finetune_precision.is_some() {
            self.finetune_precision = finetune_precision;
        }
    }

    /// The precision of fine-tuning's frozen part for a backbone with `manifest`: the one asked
    /// for, else int8 on the CPU where the manifest says int8 pays there (`frozen_int8`: VGG16,
    /// 3-4× faster at the same accuracy) or where there is no manifest (a VGG-style file split at
    /// `block4_pool`, as before manifests), else FP32 (a GPU, the depthwise backbones).
    pub fn finetune_precision_for(
        &self,
        manifest: Option<&features::manifest::Manifest>,
    ) -> Precision {
        match self.finetune_precision {
            Some(p) => p,
            None if self.device == Device::Cpu && manifest.is_none_or(|m| m.frozen_int8) => {
                Precision::Int8
            }
            None => Precision::Fp32,
        }
    }

    /// The 2016 tutorial's settings: 150-px images everywhere, 50 epochs per stage, stage 1 with
    /// the tutorial's augmentation and a constant learning rate, fine-tuning with SGD lr 1e-4 on an
    /// FP32 frozen part (10 cached augmented draws).
    pub fn keras2016(mut self) -> Self {
        self.size = Some(150);
        self.scratch_size = 150;
        self.finetune_precision = Some(Precision::Fp32);
        self.scratch_epochs = 50;
        self.head_epochs = 50;
        self.finetune_epochs = 50;
        let tutorial = finetune::Options::default();
        self.finetune.sgd.learning_rate = tutorial.sgd.learning_rate;
        self.finetune.aug_cache = tutorial.aug_cache;
        self.scratch_recipe = false;
        self
    }

    /// The stage-1 settings of this configuration.
    pub fn scratch_config(&self, data: &std::path::Path) -> scratch::ScratchConfig {
        let mut s = if self.scratch_recipe {
            scratch::ScratchConfig::recipe(data, &self.run)
        } else {
            scratch::ScratchConfig::new(data, &self.run)
        };
        s.size = self.scratch_size;
        s.epochs = self.scratch_epochs;
        s.train_precision = self.train_precision;
        s.device = self.device;
        s.engine = self.engine;
        s
    }

    /// The `--quick` preset: 16 images per class and split, 2 scratch epochs, 5 head epochs,
    /// 2 fine-tuning epochs, one cached augmented draw per image.
    pub fn quick(mut self) -> Self {
        self.limit = Some(16);
        self.scratch_epochs = 2;
        self.head_epochs = 5;
        self.finetune_epochs = 2;
        self.finetune.aug_cache = 1;
        self
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        for (flag, n) in [
            ("--scratch-epochs", self.scratch_epochs),
            ("--head-epochs", self.head_epochs),
            ("--finetune-epochs", self.finetune_epochs),
        ] {
            if n == 0 {
                return Err(Error::Invalid(format!("{flag} must be at least 1")));
            }
        }
        if self.limit == Some(0) {
            return Err(Error::Invalid("--limit must be at least 1".into()));
        }
        if !(self.finetune.sgd.learning_rate > 0.0 && self.finetune.sgd.learning_rate.is_finite()) {
            return Err(Error::Invalid(format!(
                "--finetune-lr {} must be a positive number",
                self.finetune.sgd.learning_rate
            )));
        }
        if self.stages.is_empty() {
            return Err(Error::Invalid("no stage to run".into()));
        }
        if self.candidates.len() > 1 && self.limit.is_some() {
            return Err(Error::Invalid(
                "--limit cannot be combined with choosing among backbones: pass --model".into(),
            ));
        }
        Ok(())
    }

    /// True when `stage` is among the stages to run.
    pub fn runs(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }
}
