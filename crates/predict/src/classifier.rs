//! Choosing and loading a run's classifier as one ONNX graph (image batch → `probabilities`): the
//! fine-tuned `RUN/finetune/model.onnx` when it exists, else the backbone cut at the head's input
//! tensor with the stage-2 head `RUN/head/head.safetensors` appended. Also says which and why.

use std::path::{Path, PathBuf};

use features::infer::InputSpec;
use features::manifest::{self, HubOptions, ResolvedModel};
use features::onnx::Layout;
use features::preprocess::{Preprocess, Resize};
use head::onnx::{export_head_onnx, with_metadata, ExportInfo, OUTPUT};
use head::HeadMeta;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::metadata;

features::choices! {
    /// Which training stage a classifier comes from.
    pub enum Stage("stage") {
        /// Stage 2: the frozen backbone with the dense head trained on its features.
        Head = "head",
        /// Stage 3: the fine-tuned top block with its head (`RUN/finetune/model.onnx`).
        Finetune = "finetune",
    }
}

/// How to find a run's classifier.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Force a stage; `None` takes the best one the run has.
    pub stage: Option<Stage>,
    /// The backbone file or manifest name, when the one recorded in the head file moved.
    pub model: Option<String>,
    pub hub: HubOptions,
}

/// The files of a run that predictions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub head: PathBuf,
    pub finetune_model: PathBuf,
    pub finetune_head: PathBuf,
}

impl RunPaths {
    pub fn new(run: &Path) -> Self {
        RunPaths {
            head: run.join("head/head.safetensors"),
            finetune_model: run.join("finetune/model.onnx"),
            finetune_head: run.join("finetune/head.safetensors"),
        }
    }
}

/// A run's classifier, ready for ONNX Runtime.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub stage: Stage,
    /// The file the classifier's weights come from (`model.onnx` or `head.safetensors`).
    pub source: PathBuf,
    /// Why a better stage was not used (e.g. fine-tuning not finished), if it was not.
    pub note: Option<String>,
    /// One ONNX graph: image batch → `probabilities` `[N, classes]`, metadata included.
    pub onnx: Vec<u8>,
    pub classes: Vec<String>,
    /// Name of the image input.
    pub input: String,
    pub spec: InputSpec,
    /// The head's metadata (provenance of the backbone and training numbers).
    pub meta: HeadMeta,
}

/// What a classifier is, for summaries and JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierInfo {
    pub stage: Stage,
    pub source: PathBuf,
    pub note: Option<String>,
    pub classes: Vec<String>,
    pub backbone: String,
    pub backbone_sha256: String,
    pub features: String,
    pub precision: String,
    pub preprocess: Preprocess,
    pub resize: Resize,
    pub image_size: u32,
    pub layout: Layout,
    /// Validation accuracy recorded when the stage was trained.
    pub trained_val_accuracy: f64,
}

impl Classifier {
    /// A short description for summaries.
    pub fn info(&self) -> ClassifierInfo {
        ClassifierInfo {
            stage: self.stage,
            source: self.source.clone(),
            note: self.note.clone(),
            classes: self.classes.clone(),
            backbone: shown(&self.meta.features.model),
            backbone_sha256: self.meta.features.model_sha256.clone(),
            features: self.meta.features.output_tensor.clone(),
            precision: self.meta.features.precision.clone(),
            preprocess: self.spec.preprocess,
            resize: self.spec.resize,
            image_size: self.spec.size,
            layout: self.spec.layout,
            trained_val_accuracy: self.meta.val_accuracy,
        }
    }

    /// One line saying which stage runs and why.
    pub fn describe(&self) -> String {
        let what = match self.stage {
            Stage::Finetune => format!("fine-tuned model {}", self.source.display()),
            Stage::Head => format!(
                "backbone {} → {} + stage-2 head {}",
                shown(&self.meta.features.model),
                self.meta.features.output_tensor,
                self.source.display()
            ),
        };
        let mut s = format!(
            "using stage {} ({what}; val accuracy when trained {:.3}), {} classes, {}×{} {} {}",
            self.stage.name(),
            self.meta.val_accuracy,
            self.classes.len(),
            self.spec.size,
            self.spec.size,
            self.spec.resize.name(),
            self.spec.preprocess.name()
        );
        if let Some(n) = &self.note {
            s.push_str(&format!(" [{n}]"));
        }
        s
    }
}

/// A recorded backbone for summaries and reports: an absolute path (how features record it, so
/// later stages find it from any folder) relative to the current folder, e.g.
/// `../shared/models/vgg16.onnx`, so reports do not carry a machine's absolute paths; a manifest
/// name or a relative path as it is.
fn shown(model: &str) -> String {
    let p = Path::new(model);
    let Some(cwd) = std::env::current_dir().ok().filter(|_| p.is_absolute()) else {
        return model.to_string();
    };
    let (a, b): (Vec<_>, Vec<_>) = (p.components().collect(), cwd.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common <= 1 {
        return model.to_string(); // only the root in common: the absolute path says it best
    }
    let mut rel = PathBuf::new();
    rel.extend(std::iter::repeat_n("..", b.len() - common));
    rel.extend(&a[common..]);
    rel.to_string_lossy().into_owned()
}

fn no_head(run: &Path, paths: &RunPaths) -> Error {
    let what = if run.is_dir() {
        format!(
            "{} has no trained classifier ({} is missing)",
            run.display(),
            paths.head.display()
        )
    } else {
        format!("run folder {} does not exist", run.display())
    };
    Error::NoClassifier(format!(
        "{what}: run `bottleneck extract --data DIR --run {r}` and `bottleneck train-head --run {r}` first \
         (then optionally `bottleneck finetune --run {r} --data DIR`)",
        r = run.display()
    ))
}

/// Loads the classifier of `run`: the fine-tuned model when there is one (or `opts.stage` says so),
/// else the backbone + stage-2 head built into one graph.
pub fn load(run: &Path, opts: &LoadOptions) -> Result<Classifier> {
    runfs::links::refuse_linked_folders(run)?;
    let paths = RunPaths::new(run);
    let finetuned = paths.finetune_model.is_file();
    match opts.stage {
        Some(Stage::Finetune) if !finetuned => Err(Error::NoClassifier(format!(
            "{} is missing: run `bottleneck finetune --run {} --data DIR` first, or drop --stage finetune",
            paths.finetune_model.display(),
            run.display()
        ))),
        Some(Stage::Finetune) => load_finetune(run, &paths),
        None if finetuned => load_finetune(run, &paths),
        Some(Stage::Head) | None => {
            if !paths.head.is_file() {
                return Err(no_head(run, &paths));
            }
            let mut c = load_head(run, &paths, opts)?;
            c.note = match opts.stage {
                Some(_) => finetuned.then(|| "--stage head: the fine-tuned model is not used".into()),
                None if paths.finetune_model.parent().is_some_and(Path::is_dir) => Some(format!(
                    "{} not found (fine-tuning not finished?): using the stage-2 head",
                    paths.finetune_model.display()
                )),
                None => None,
            };
            Ok(c)
        }
    }
}

fn spec_of(meta: &HeadMeta, layout: Layout, path: &Path) -> Result<InputSpec> {
    let bad = |what: &str, e: features::names::UnknownName| {
        Error::Mismatch(format!("{}: {what}: {e}", path.display()))
    };
    Ok(InputSpec {
        size: meta.features.image_size,
        resize: meta.features.resize.parse().map_err(|e| bad("resize", e))?,
        preprocess: meta
            .features
            .preprocess
            .parse()
            .map_err(|e| bad("preprocess", e))?,
        layout,
    })
}

fn finish(
    stage: Stage,
    source: PathBuf,
    onnx: Vec<u8>,
    meta: HeadMeta,
    note: Option<String>,
) -> Result<Classifier> {
    let input = features::onnx::image_input(&onnx)?;
    let spec = spec_of(&meta, input.layout, &source)?;
    let mut c = Classifier {
        stage,
        source,
        note,
        onnx: Vec::new(),
        classes: meta.classes.clone(),
        input: input.name,
        spec,
        meta,
    };
    c.onnx = with_metadata(&onnx, &metadata::entries(&c))?;
    Ok(c)
}

fn load_finetune(run: &Path, paths: &RunPaths) -> Result<Classifier> {
    let bytes =
        std::fs::read(&paths.finetune_model).map_err(|e| Error::io(&paths.finetune_model, e))?;
    // The fine-tuned head's metadata carries the backbone's provenance and the resize filter.
    let meta_path = if paths.finetune_head.is_file() {
        &paths.finetune_head
    } else if paths.head.is_file() {
        &paths.head
    } else {
        return Err(Error::NoClassifier(format!(
            "{} has no head file ({} or {}) describing its preprocessing: re-run `bottleneck finetune --run {}`",
            paths.finetune_model.display(),
            paths.finetune_head.display(),
            paths.head.display(),
            run.display()
        )));
    };
    let meta = head::read_meta(meta_path)?;
    if let Some(recorded) = &meta.classifier_sha256 {
        let sha256 = runfs::digest::sha256_hex(&bytes);
        if &sha256 != recorded {
            return Err(Error::Mismatch(format!(
                "{} is not the model fine-tuning wrote (sha256 {sha256}; {} records {recorded}): \
                 re-run `bottleneck finetune --run {} --force`, or use --stage head",
                paths.finetune_model.display(),
                meta_path.display(),
                run.display()
            )));
        }
    }
    let props = head::onnx::metadata(&bytes)?;
    if let Some((_, classes)) = props.iter().find(|(k, _)| k == "classes") {
        let listed: Vec<String> = serde_json::from_str(classes).map_err(|e| {
            Error::Mismatch(format!(
                "{}: metadata 'classes' is not a JSON list ({e})",
                paths.finetune_model.display()
            ))
        })?;
        if listed != meta.classes {
            return Err(Error::Mismatch(format!(
                "{} lists classes {listed:?} but {} says {:?}: the files come from different runs; re-run `bottleneck finetune --run {}`",
                paths.finetune_model.display(),
                meta_path.display(),
                meta.classes,
                run.display()
            )));
        }
    }
    finish(
        Stage::Finetune,
        paths.finetune_model.clone(),
        bytes,
        meta,
        None,
    )
}

/// The backbone the head was trained on: `--model`, the recorded name, or a built-in manifest with
/// the recorded sha256; it must have that sha256.
fn backbone(meta: &HeadMeta, head_path: &Path, opts: &LoadOptions) -> Result<ResolvedModel> {
    let name = opts
        .model
        .clone()
        .unwrap_or_else(|| meta.features.model.clone());
    let resolved = match manifest::resolve(&name, &opts.hub) {
        Ok(r) => r,
        Err(e) if opts.model.is_none() => {
            let by_sha = manifest::builtin()?
                .into_iter()
                .find(|m| !m.sha256.is_empty() && m.sha256 == meta.features.model_sha256);
            match by_sha {
                Some(m) => manifest::resolve(&m.name, &opts.hub)?,
                None => {
                    return Err(Error::Mismatch(format!(
                        "the backbone the head {} was trained on cannot be loaded ({e}): pass --model /path/to/{} (sha256 {})",
                        head_path.display(),
                        Path::new(&meta.features.model).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into()),
                        meta.features.model_sha256
                    )))
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    if resolved.sha256 != meta.features.model_sha256 {
        return Err(Error::Mismatch(format!(
            "{} has sha256 {} but the head {} was trained on features of {} (sha256 {}): pass --model with that file",
            resolved.path.display(),
            resolved.sha256,
            head_path.display(),
            meta.features.model,
            meta.features.model_sha256
        )));
    }
    Ok(resolved)
}

fn load_head(run: &Path, paths: &RunPaths, opts: &LoadOptions) -> Result<Classifier> {
    let (model, meta) = head::load(&paths.head)?;
    let resolved = backbone(&meta, &paths.head, opts)?;
    let original = match meta.features.precision.as_str() {
        "int8" => {
            let cached = features::quantize::cache_path(
                &run.join("models"),
                &meta.features.model_sha256,
                &meta.features.output_tensor,
            );
            std::fs::read(&cached).map_err(|_| {
                Error::Mismatch(format!(
                    "the head was trained on int8 features but the int8 backbone {} is missing: re-run \
                     `bottleneck extract --precision int8 --run {}` with the same data",
                    cached.display(),
                    run.display()
                ))
            })?
        }
        _ => resolved.bytes,
    };
    let info = ExportInfo {
        classes: meta.classes.clone(),
        preprocess: meta.features.preprocess.clone(),
        image_size: meta.features.image_size,
    };
    let onnx = export_head_onnx(&original, &model, &meta.features.output_tensor, &info)?;
    finish(Stage::Head, paths.head.clone(), onnx, meta, None)
}

/// Name of the classifier's output.
pub const OUTPUT_NAME: &str = OUTPUT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_backbone_is_shown_relative_to_the_current_folder() {
        let cwd = std::env::current_dir().unwrap();
        let beside = cwd.parent().unwrap().join("shared/models/vgg16.onnx");
        assert_eq!(
            shown(&beside.to_string_lossy()),
            "../shared/models/vgg16.onnx"
        );
        assert_eq!(shown(&cwd.join("m.onnx").to_string_lossy()), "m.onnx");
        assert_eq!(shown("vgg16_keras_notop"), "vgg16_keras_notop");
        assert_eq!(shown("models/x.onnx"), "models/x.onnx");
    }
}
