//! Everything checked and loaded before training: the stage-2 head, the model it was trained on,
//! the split tensor, the frozen cut and the trainable block, the data (same classes as the head)
//! decoded once, and the [`Settings`] that a resumed run must match.

use std::path::Path;

use features::dataset::{self, Dataset, Split};
use features::manifest::ResolvedModel;
use features::onnx::CutModel;
use features::preprocess::{Preprocess, Resize};
use head::HeadMeta;
use train::kernels::TrainPrecision;

use crate::block::Block;
use crate::checkpoint;
use crate::classifier::Classifier;
use crate::config::{FinetuneConfig, FinetunePaths, FrozenPrecision, Options, Settings};
use crate::error::{Error, Result};
use crate::graph;
use crate::images::{self, ImageSet, InputSpec};
use crate::int8::{self, Int8Frozen};
use crate::pipeline::Event;
use crate::splits;

/// The inputs of a run, checked against each other.
pub struct Setup {
    pub head_meta: HeadMeta,
    pub model: ResolvedModel,
    /// The frozen part in FP32: the model cut at the split tensor.
    pub cut: CutModel,
    /// With `--precision int8`: the frozen part quantized (training runs this one).
    pub int8: Option<Int8Frozen>,
    pub spec: InputSpec,
    pub resize: Resize,
    pub size: u32,
    pub data: Dataset,
    pub train: ImageSet,
    pub val: ImageSet,
    /// Where the validation photos come from (`split validation`, or the head's hold-out).
    pub validation: String,
    pub settings: Settings,
    /// The engine computing the frozen outputs when not ONNX Runtime
    /// ([`features::engine::Backend::engine`]); part of the caches' keys.
    pub frozen_engine: Option<String>,
}

/// What the engine choice decided for a run.
#[derive(Debug, Clone)]
pub struct Engine {
    /// `--train-precision` resolved where training runs.
    pub train_precision: TrainPrecision,
    /// [`features::engine::Backend::engine`] of the frozen part's backend.
    pub frozen: Option<String>,
}

/// Loads the stage-2 head (the one place that reads `RUN/head/head.safetensors`).
pub fn load_head(path: &Path) -> Result<(Classifier, HeadMeta)> {
    let (model, meta) = head::load(path)?;
    Ok((Classifier::from_head(&model)?, meta))
}

pub(crate) fn find_split<'a>(data: &'a Dataset, name: &str, flag: &str) -> Result<&'a Split> {
    data.split(name).ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no '{name}' split (found: {}); pass {flag} with one of them",
            data.root.display(),
            data.splits
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The head, model, block and split tensor, checked against each other.
pub(crate) fn model_and_head(
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
) -> Result<(Classifier, HeadMeta, ResolvedModel, String)> {
    if !paths.input_head.is_file() {
        return Err(Error::NoHead {
            path: paths.input_head.clone(),
            run: cfg.run.clone(),
        });
    }
    let (classifier, head_meta) = load_head(&paths.input_head)?;
    let model_name = cfg
        .model
        .clone()
        .unwrap_or_else(|| head_meta.features.model.clone());
    let mut model = features::manifest::resolve(&model_name, &cfg.hub)?;
    model.name = model_name;
    if model.sha256 != head_meta.features.model_sha256 {
        return Err(Error::Mismatch(format!(
            "the head in {} was trained on features of model '{}' (sha256 {}…) but --model '{}' is {} \
             (sha256 {}…): pass the same --model, or re-run `bottleneck extract` and `bottleneck train-head` with this one",
            paths.input_head.display(),
            head_meta.features.model,
            head_meta.features.model_sha256.get(..12).unwrap_or(&head_meta.features.model_sha256),
            model.name,
            model.path.display(),
            &model.sha256[..12]
        )));
    }
    if let Some(s) = cfg.size.filter(|&s| s != head_meta.features.image_size) {
        return Err(Error::Mismatch(format!(
            "--size {s} differs from the {}-pixel images the head was trained on; drop --size, or extract \
             features and train the head at {s} pixels first",
            head_meta.features.image_size
        )));
    }
    let split_at = match (&cfg.split_at, model.manifest.as_ref().and_then(|m| m.trainable_from.clone())) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s,
        (None, None) if model.manifest.as_ref().is_some_and(|m| !m.parts.is_empty()) => {
            return Err(Error::Invalid(format!(
                "'{}' is a combination of backbones ({}): it has no block to fine-tune; fine-tune one of them \
                 (`bottleneck fit --model NAME --data … --run NEW_RUN`, then `bottleneck finetune`)",
                model.name,
                model.manifest.as_ref().map(|m| m.parts.join(", ")).unwrap_or_default()
            )))
        }
        (None, None) => {
            return Err(Error::Invalid(format!(
                "{} has no manifest naming its trainable block: pass --split-at TENSOR (the input of the block to \
                 train, e.g. block4_pool)",
                model.path.display()
            )))
        }
    };
    Ok((classifier, head_meta, model, split_at))
}

/// Decodes the photos of `split` at `size` px, reporting progress and the photos skipped.
fn load_images(
    split: &Split,
    size: u32,
    resize: Resize,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<ImageSet> {
    on_event(Event::PhaseStart {
        name: format!("read {}", split.name),
        total: split.items.len(),
    });
    let set = images::load_split(split, size, resize, &mut |done| {
        on_event(Event::Progress { done })
    })?;
    on_event(Event::PhaseEnd);
    for s in &set.skipped {
        on_event(Event::Skipped {
            split: &split.name,
            file: &s.file,
            reason: &s.reason,
        });
    }
    Ok(set)
}

/// The data folder's photos less those the run's feature files record as left out
/// (`extract --exclude`), so that fine-tuning trains and validates on the photos stage 2 did.
pub(crate) fn scan_data(
    cfg: &FinetuneConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Dataset> {
    let mut data = dataset::scan(&cfg.data)?;
    let removed = features::exclude::apply_recorded(&cfg.run, &mut data)?;
    let n: usize = removed.iter().map(|(_, r)| r.len()).sum();
    if n > 0 {
        on_event(Event::Info(format!(
            "leaving out the {n} photo{} the feature files record as excluded (extract --exclude)",
            if n == 1 { "" } else { "s" }
        )));
    }
    Ok(data)
}

/// How the head's features were computed from a photo: preprocessing, resize rule, side.
fn input_rule(head_meta: &HeadMeta) -> Result<(Preprocess, Resize, u32)> {
    let f = &head_meta.features;
    Ok((f.preprocess.parse()?, f.resize.parse()?, f.image_size))
}

/// The data folder must have the head's classes.
fn check_classes(cfg: &FinetuneConfig, data: &Dataset, head_meta: &HeadMeta) -> Result<()> {
    if data.classes != head_meta.classes {
        return Err(Error::Mismatch(format!(
            "{} has classes {:?} but the head was trained on {:?}; point --data at the data the head was trained on",
            cfg.data.display(),
            data.classes,
            head_meta.classes
        )));
    }
    Ok(())
}

/// The photos of either split that could not be decoded (left out of the run).
fn skipped_files(train: &ImageSet, val: &ImageSet) -> Vec<String> {
    train
        .skipped
        .iter()
        .chain(&val.skipped)
        .map(|s| s.file.clone())
        .collect()
}

/// A resumed run must have the checkpoint's settings.
fn check_resumed_settings(paths: &FinetunePaths, settings: &Settings) -> Result<()> {
    let (stored, _) = checkpoint::read_settings(&paths.stage.checkpoint)?;
    let diff = stored.differences(settings);
    if !diff.is_empty() {
        return Err(Error::Mismatch(format!(
            "{} was made with other settings ({}); pass the same flags as the first run, or --force to start over",
            paths.stage.checkpoint.display(),
            diff.join("; ")
        )));
    }
    Ok(())
}

/// Checks every input and decodes the images; returns them with the block and the head to train.
pub fn prepare(
    cfg: &FinetuneConfig,
    paths: &FinetunePaths,
    engine: &Engine,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Setup, Block, Classifier)> {
    let (classifier, head_meta, model, split_at) = model_and_head(cfg, paths)?;
    int8::check_resume(cfg, paths)?;
    let cut = features::onnx::cut_at(&model.bytes, &split_at)
        .map_err(|e| Error::Invalid(format!("--split-at {split_at}: {e}")))?;
    let block = graph::block_from_onnx(&model.bytes, &split_at, &head_meta.features.output_tensor)?;
    let (preprocess, resize, size) = input_rule(&head_meta)?;
    let data = scan_data(cfg, on_event)?;
    check_classes(cfg, &data, &head_meta)?;
    let chosen = splits::choose(&data, cfg, &head_meta)?;
    let train = load_images(&chosen.train, size, resize, on_event)?;
    let val = load_images(&chosen.val, size, resize, on_event)?;
    let int8 = match cfg.options.precision {
        FrozenPrecision::Fp32 => None,
        FrozenPrecision::Int8 => {
            on_event(Event::Info(format!(
                "quantizing the frozen part (up to {split_at}) to int8, or reusing it from {}",
                int8::models_dir(&cfg.run).display()
            )));
            Some(int8::quantize_frozen(
                &model,
                &cut,
                preprocess,
                resize,
                size,
                &chosen.source,
                cfg,
            )?)
        }
    };

    let settings = Settings {
        model: model.name.clone(),
        model_sha256: model.sha256.clone(),
        split_at,
        output_tensor: head_meta.features.output_tensor.clone(),
        image_size: size,
        preprocess: preprocess.name().into(),
        resize: resize.name().into(),
        classes: data.classes.clone(),
        train_digest: train.digest.clone(),
        val_digest: val.digest.clone(),
        skipped: skipped_files(&train, &val),
        head_sha256: runfs::sha256_file(&paths.input_head)?,
        augment: cfg.augment.clone(),
        seed: cfg.seed,
        options: Options {
            train_precision: engine.train_precision,
            ..cfg.options.clone()
        },
        int8_key: int8.as_ref().map(|q| q.info.key.clone()),
    };
    if cfg.resume {
        check_resumed_settings(paths, &settings)?;
    }
    let setup = Setup {
        head_meta,
        spec: InputSpec {
            preprocess,
            layout: cut.input_layout,
        },
        model,
        cut,
        int8,
        resize,
        size,
        data,
        train,
        val,
        validation: chosen.validation,
        settings,
        frozen_engine: engine.frozen.clone(),
    };
    Ok((setup, block, classifier))
}
