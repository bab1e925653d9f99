//! Stage 2a: images → bottleneck features. Decodes and preprocesses batches on worker threads while the
//! frozen network (ONNX Runtime, or the [`Backend`] a caller hands [`extract_with`], e.g. Candle on a GPU)
//! runs the previous batch, streams rows into the feature cache, and skips the work when the cache is up to
//! date.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::dataset::{self, Dataset, Split};
use crate::engine::{Backend, FeatureNet, NetRequest, Ort};
use crate::exclude::{self, ExcludeList, Removed};
use crate::infer::{self, BatchOut, InputSpec};
use crate::manifest::{self, HubOptions, ResolvedModel};
use crate::onnx::{self, CutModel, Layout};
use crate::preprocess::{self, Preprocess, Resize, PREPROCESS_CHOICES};
use crate::provenance::Provenance;
use crate::runtime::{Device, Engine, SessionOptions};
use crate::shard::{self, Shard, ShardRecord};
use crate::store::{self, FeatureMeta, FeatureWriter, Skipped};
use crate::{Error, Result};

/// Everything `bottleneck extract` needs.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub data: PathBuf,
    pub model: String,
    pub run: PathBuf,
    /// Overrides the manifest's preprocessing; required for a model without manifest.
    pub preprocess: Option<Preprocess>,
    /// Side of the square network input (the tutorial: 150).
    pub size: u32,
    pub batch: usize,
    pub device: Device,
    /// Which engine runs the backbone (read by `accel::stages::extract`, which picks the
    /// [`Backend`]; [`extract`] itself always uses ONNX Runtime).
    pub engine: Engine,
    pub threads: Option<usize>,
    pub resize: Resize,
    /// Turn a skipped image into an error.
    pub strict: bool,
    pub hub: HubOptions,
    /// Backbone precision: `fp32`, or `int8` (quantized on first use with calibration photos from the
    /// training split, cached in `RUN/models/`).
    pub precision: Precision,
    /// Extract only this shard of every split into `RUN/features/<split>.shard-I-of-N.safetensors`
    /// (one task of a job array; `bottleneck merge` joins them).
    pub shard: Option<Shard>,
    /// A file of photo paths to leave out (`--exclude`: one per line relative to the data
    /// folder, or `audit.csv` with its `path` column); recorded in the feature files.
    pub exclude: Option<PathBuf>,
}

crate::choices! {
    /// Numeric precision of the backbone.
    pub enum Precision("precision") {
        Fp32 = "fp32",
        Int8 = "int8",
    }
}

impl ExtractConfig {
    /// The defaults of the command line for `data`, `model`, `run`: the input side and resize
    /// rule of the model's manifest ([`manifest::find`]), else 150 px squashed with `nearest` (the
    /// tutorial's Keras `load_img`).
    pub fn new(
        data: impl Into<PathBuf>,
        model: impl Into<String>,
        run: impl Into<PathBuf>,
    ) -> Self {
        let model = model.into();
        let hub = HubOptions::from_env();
        let m = manifest::find(&model, &hub);
        ExtractConfig {
            data: data.into(),
            model,
            run: run.into(),
            preprocess: None,
            size: m.as_ref().and_then(|m| m.size).unwrap_or(150),
            batch: 16,
            device: Device::Cpu,
            engine: Engine::Auto,
            threads: None,
            resize: m.as_ref().and_then(|m| m.resize).unwrap_or(Resize::Nearest),
            strict: false,
            hub,
            precision: Precision::Fp32,
            shard: None,
            exclude: None,
        }
    }

    /// These settings resolving models with `hub` (e.g. a user's `--manifest`), with the input
    /// side and resize rule of the manifest `hub` finds for the model.
    pub fn with_hub(self, hub: HubOptions) -> Self {
        // Without a user's manifest, `new` already looked the built-in one up (and hashed the file).
        if hub.manifest.is_none() {
            return ExtractConfig { hub, ..self };
        }
        let m = manifest::find(&self.model, &hub);
        ExtractConfig {
            size: m.as_ref().and_then(|m| m.size).unwrap_or(self.size),
            resize: m.as_ref().and_then(|m| m.resize).unwrap_or(self.resize),
            hub,
            ..self
        }
    }
}

/// Progress reports while extracting.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// Where the work runs when it is not what was asked for (`--device auto` on the CPU), or
    /// which engine runs it: shown to the user.
    Note(&'a str),
    /// The model is loaded and the session built.
    Ready {
        device: &'a str,
        model: &'a str,
        preprocess: Preprocess,
        output: &'a str,
    },
    /// A split starts: `total` images to run.
    SplitStart { split: &'a str, total: usize },
    /// `done` of `total` images of the split are processed.
    Progress {
        split: &'a str,
        done: usize,
        total: usize,
    },
    /// The split's feature file is already up to date.
    UpToDate { split: &'a str, rows: usize },
    /// An image was skipped.
    Skipped {
        split: &'a str,
        file: &'a str,
        reason: &'a str,
    },
    /// The split is written.
    SplitDone {
        split: &'a str,
        rows: usize,
        seconds: f64,
    },
}

/// What happened to one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitSummary {
    pub split: String,
    pub path: PathBuf,
    pub rows: usize,
    /// Images per class, in class order.
    pub class_counts: Vec<usize>,
    pub shape: Vec<usize>,
    pub skipped: Vec<Skipped>,
    /// Photos left out by `--exclude` (relative to the data folder, sorted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// True when nothing was recomputed.
    pub up_to_date: bool,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Largest `--size`: VGG16 at 1024 px needs ≈ 0.5 GB of activations per image in its first block.
pub const MAX_SIZE: u32 = 1024;

/// What `extract` did.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractSummary {
    pub model: String,
    pub model_sha256: String,
    pub output_tensor: String,
    pub device: String,
    pub preprocess: Preprocess,
    pub resize: Resize,
    pub image_size: u32,
    pub precision: Precision,
    pub classes: Vec<String>,
    pub splits: Vec<SplitSummary>,
    /// Feature files of splits the data folder no longer has, moved to `RUN/features/stale/`
    /// (paths after the move) so that no later stage trains or validates on them.
    pub stale: Vec<PathBuf>,
    /// Photos of a non-training split that are byte-identical to a training photo (validation
    /// numbers over-state what the model does on new photos while these remain).
    pub duplicates: Vec<Duplicate>,
    /// The `--exclude` list, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<ExcludeInfo>,
}

/// The `--exclude` list an extraction applied.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExcludeInfo {
    pub list: PathBuf,
    /// [`ExcludeList::sha256`] of its paths.
    pub sha256: String,
    /// Distinct paths listed.
    pub paths: usize,
}

/// A photo found in two splits (same bytes).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Duplicate {
    pub file: String,
    pub same_as: String,
}

/// Photos of other splits whose bytes equal a photo of `train` (or of `all`: none).
fn find_duplicates(contents: &[(String, Contents)]) -> Vec<Duplicate> {
    let train: BTreeMap<&[u8; 32], &str> = contents
        .iter()
        .filter(|(name, _)| name == "train")
        .flat_map(|(_, items)| items.iter().map(|(rel, _, c)| (c, rel.as_str())))
        .collect();
    contents
        .iter()
        .filter(|(name, _)| name != "train")
        .flat_map(|(_, items)| items.iter())
        .filter_map(|(rel, _, c)| {
            train.get(c).map(|t| Duplicate {
                file: rel.clone(),
                same_as: t.to_string(),
            })
        })
        .collect()
}

/// Moves `RUN/features/<split>.safetensors` of every split `data` does not have into
/// `RUN/features/stale/` (replacing an older copy there) and returns the new paths.
fn set_aside_stale_splits(run: &Path, data: &dataset::Dataset) -> Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    for name in store::list_splits(run)? {
        if data.splits.iter().any(|s| s.name == name) {
            continue;
        }
        let from = store::feature_path(run, &name);
        let dir = store::features_dir(run).join("stale");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let to = dir.join(format!("{name}.safetensors"));
        std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        moved.push(to);
    }
    Ok(moved)
}

/// A loaded, cut and ready backbone.
pub struct Backbone {
    pub model: ResolvedModel,
    pub cut: CutModel,
    pub preprocess: Preprocess,
}

impl Backbone {
    /// The provenance of features this backbone computes with `cfg`'s size, filter and precision
    /// on `engine` ([`Backend::engine`]: `None` for ONNX Runtime).
    pub fn provenance(&self, cfg: &ExtractConfig, engine: Option<&str>) -> Provenance {
        Provenance {
            model: self.model.name.clone(),
            model_sha256: self.model.sha256.clone(),
            output_tensor: self.cut.output.clone(),
            preprocess: self.preprocess.name().to_string(),
            image_size: cfg.size,
            resize: cfg.resize.name().to_string(),
            precision: cfg.precision.name().into(),
            engine: engine.map(str::to_string),
        }
    }
}

/// Resolves the model, checks the preprocessing choice and cuts the graph at the feature tensor.
pub fn load_backbone(
    model: &str,
    preprocess: Option<Preprocess>,
    hub: &HubOptions,
) -> Result<Backbone> {
    let resolved = manifest::resolve(model, hub)?;
    let preprocess = match (preprocess, resolved.manifest.as_ref()) {
        (Some(p), _) => p,
        (None, Some(m)) => m.preprocess,
        (None, None) => {
            return Err(Error::Invalid(format!(
                "{} has no manifest (sha256 {}), so its preprocessing is unknown: pass --preprocess with one of {PREPROCESS_CHOICES}",
                resolved.path.display(),
                &resolved.sha256[..12]
            )))
        }
    };
    let tensor = resolved
        .manifest
        .as_ref()
        .map(|m| m.features.as_str())
        .unwrap_or("auto");
    let cut = if tensor == "auto" {
        onnx::cut_conv_base(&resolved.bytes)
    } else {
        onnx::cut_at(&resolved.bytes, tensor)
    }
    .map_err(|e| Error::Model {
        path: resolved.path.clone(),
        reason: e.to_string(),
    })?;
    if cut.input_channels != 3 {
        return Err(Error::Model {
            path: resolved.path.clone(),
            reason: format!(
                "its image input takes {} channel{}, but photos are fed as RGB (3 channels): use a model \
                 with a 3-channel image input",
                cut.input_channels,
                if cut.input_channels == 1 { "" } else { "s" }
            ),
        });
    }
    Ok(Backbone {
        model: resolved,
        cut,
        preprocess,
    })
}

/// Digest of every input of a split's features: model, preprocessing, size, engine, classes, and
/// each file's bytes.
pub fn cache_key(
    backbone: &Backbone,
    cfg: &ExtractConfig,
    engine: Option<&str>,
    classes: &[String],
    split: &Split,
    precision_tag: &str,
    excluded: &[String],
) -> Result<String> {
    let items = with_contents(split)?;
    Ok(key_of(
        &backbone.provenance(cfg, engine),
        precision_tag,
        classes,
        &items,
        excluded,
    ))
}

/// Every photo of `split` as (path, label, SHA-256 of its bytes).
pub fn with_contents(split: &Split) -> Result<Vec<(String, usize, [u8; 32])>> {
    split
        .items
        .iter()
        .map(|item| {
            let sha = crate::image_io::photo_sha256(&item.path)?;
            Ok((item.rel.clone(), item.label, sha))
        })
        .collect()
}

/// The cache key from its parts (what [`cache_key`] hashes, also recomputed by `merge`). The
/// photos left out (`excluded`) join the key only when there are some, so that keys of runs
/// without `--exclude` are what they always were.
pub fn key_of(
    p: &Provenance,
    precision_tag: &str,
    classes: &[String],
    items: &[(String, usize, [u8; 32])],
    excluded: &[String],
) -> String {
    let mut h = runfs::Digest::new();
    h.field("format", &store::FORMAT_VERSION.to_le_bytes())
        .field("model", p.model_sha256.as_bytes())
        .field("output", p.output_tensor.as_bytes())
        .field("preprocess", p.preprocess.as_bytes())
        .field("resize", p.resize.as_bytes())
        .field("size", &p.image_size.to_le_bytes())
        .field("precision", precision_tag.as_bytes());
    // ONNX Runtime's features keep the keys they always had; another engine's get their own.
    if let Some(engine) = &p.engine {
        h.field("engine", engine.as_bytes());
    }
    h.field("classes", classes.join("\n").as_bytes());
    for (rel, label, content) in items {
        h.field("file", rel.as_bytes())
            .field("label", &(*label as u64).to_le_bytes())
            .field("content", content);
    }
    for rel in excluded {
        h.field("excluded", rel.as_bytes());
    }
    h.hex()
}

/// Where one split's features go, under which key, and (for a shard) what the shard records.
struct Target {
    path: PathBuf,
    key: String,
    shard: Option<ShardRecord>,
}

/// A split's photos with the SHA-256 of their bytes.
type Contents = Vec<(String, usize, [u8; 32])>;

/// The target of `split` (the whole split, or `cfg.shard`'s part of it, returned with it), and
/// the photos it covers with their content digests.
fn target(
    backbone: &Backbone,
    cfg: &ExtractConfig,
    engine: Option<&str>,
    classes: &[String],
    split: &Split,
    precision_tag: &str,
    excluded: &[String],
) -> Result<(Target, Option<Split>, Contents)> {
    let Some(sh) = cfg.shard else {
        let items = with_contents(split)?;
        let key = key_of(
            &backbone.provenance(cfg, engine),
            precision_tag,
            classes,
            &items,
            excluded,
        );
        let path = store::feature_path(&cfg.run, &split.name);
        let target = Target {
            path,
            key,
            shard: None,
        };
        return Ok((target, None, items));
    };
    let (part, pos) = sh.part(split);
    let items = with_contents(&part)?;
    let listing = shard::listing_digest(split);
    let base = key_of(
        &backbone.provenance(cfg, engine),
        precision_tag,
        classes,
        &items,
        excluded,
    );
    let key = runfs::digest::of_strings(&[
        ("part", &base),
        ("shard", &sh.stem(&split.name)),
        ("listing", &listing),
    ]);
    let record = ShardRecord {
        index: sh.index,
        count: sh.count,
        total: split.items.len(),
        listing,
        precision_tag: precision_tag.to_string(),
        items: pos
            .into_iter()
            .zip(&items)
            .map(|(p, (rel, label, c))| (p, rel.clone(), *label, hex::encode(c)))
            .collect(),
    };
    let path = store::feature_path(&cfg.run, &sh.stem(&split.name));
    Ok((
        Target {
            path,
            key,
            shard: Some(record),
        },
        Some(part),
        items,
    ))
}

/// Runs the whole extraction with ONNX Runtime on `cfg.device`: every split of `cfg.data`, reusing
/// up-to-date feature files. (`accel::stages::extract` chooses the engine from `cfg.device` and
/// `cfg.engine` and calls [`extract_with`].)
pub fn extract(cfg: &ExtractConfig, on_event: &mut dyn FnMut(Event)) -> Result<ExtractSummary> {
    if cfg.engine == Engine::Candle {
        return Err(Error::Invalid(
            "the Candle engine is chosen by accel::stages::extract, not features::extract".into(),
        ));
    }
    let ort = Ort {
        opts: SessionOptions {
            device: cfg.device,
            threads: cfg.threads,
        },
    };
    extract_with(cfg, &ort, on_event)
}

/// [`extract`] with the frozen network opened by `backend`.
// Over 80 lines: the extraction's steps share the lock, the opened network and the per-split
// writers.
pub fn extract_with(
    cfg: &ExtractConfig,
    backend: &dyn Backend,
    on_event: &mut dyn FnMut(Event),
) -> Result<ExtractSummary> {
    check_settings(cfg)?;
    let mut data = dataset::scan(&cfg.data)?;
    for dir in &data.ignored {
        on_event(Event::Note(&dataset::ignored_note(dir)));
    }
    let (removed, exclude) = apply_exclude(cfg, &mut data, on_event)?;
    let _lock = lock(cfg)?;
    let backbone = load_backbone(&cfg.model, cfg.preprocess, &cfg.hub)?;
    let (model_bytes, precision_tag) = network_bytes(cfg, &backbone)?;
    let engine = backend.engine();
    let engine = engine.as_deref();
    let request = NetRequest {
        model: &backbone.model.bytes,
        output: &backbone.cut.output,
        onnx: model_bytes.as_deref().unwrap_or(&backbone.cut.bytes),
        onnx_layout: backbone.cut.input_layout,
        int8: model_bytes.is_some(),
        threads: cfg.threads,
    };
    let mut runner: Option<Box<dyn FeatureNet>> = None;
    let mut device = String::from("none (all splits up to date)");
    let mut splits = Vec::new();
    let mut contents = Vec::new();
    for split in &data.splits {
        let excluded = exclude::removed_from(&removed, &split.name);
        let (target, part, items) = target(
            &backbone,
            cfg,
            engine,
            &data.classes,
            split,
            &precision_tag,
            excluded,
        )?;
        contents.push((split.name.clone(), items));
        let split = part.as_ref().unwrap_or(split);
        if let Some(done) = up_to_date(&target, &data, split) {
            on_event(Event::UpToDate {
                split: &split.name,
                rows: done.rows,
            });
            splits.push(done);
            continue;
        }
        let r = match runner.as_mut() {
            Some(r) => r,
            None => {
                let r = backend.open(&request)?;
                device = r.device();
                on_event(ready(&device, &backbone));
                runner.insert(r)
            }
        };
        let job = SplitJob {
            backbone: &backbone,
            engine,
            data: &data,
            split,
            excluded,
            target,
        };
        let summary = extract_split(r.as_mut(), &job, cfg, on_event)?;
        splits.push(summary);
    }
    // Shards run side by side: only a whole extraction tidies the folder.
    let stale = match cfg.shard {
        None => set_aside_stale_splits(&cfg.run, &data)?,
        Some(_) => Vec::new(),
    };
    Ok(ExtractSummary {
        stale,
        exclude,
        duplicates: find_duplicates(&contents),
        model: backbone.model.name.clone(),
        model_sha256: backbone.model.sha256.clone(),
        output_tensor: backbone.cut.output.clone(),
        device,
        preprocess: backbone.preprocess,
        resize: cfg.resize,
        image_size: cfg.size,
        precision: cfg.precision,
        classes: data.classes.clone(),
        splits,
    })
}

/// Says which photos of a batch could not be read, or with `--strict` stops at the first.
fn report_skipped(
    cfg: &ExtractConfig,
    data: &Dataset,
    split: &str,
    skipped: &[Skipped],
    on_event: &mut dyn FnMut(Event),
) -> Result<()> {
    for sk in skipped {
        if cfg.strict {
            return Err(Error::Image {
                path: data.root.join(&sk.file),
                reason: format!(
                    "{} (--strict: remove the file or drop --strict to skip it)",
                    sk.reason
                ),
            });
        }
        on_event(Event::Skipped {
            split,
            file: &sk.file,
            reason: &sk.reason,
        });
    }
    Ok(())
}

/// Appends a batch's rows to the split's feature file, created at `path` with the first batch.
fn write_rows(writer: &mut Option<FeatureWriter>, path: &Path, out: &BatchOut) -> Result<()> {
    if out.items.is_empty() {
        return Ok(());
    }
    let w = match writer.as_mut() {
        Some(w) => w,
        None => writer.insert(FeatureWriter::create(path, out.row_shape)?),
    };
    let row = w.row_len();
    for (k, item) in out.items.iter().enumerate() {
        w.push(
            &out.rows[k * row..(k + 1) * row],
            item.label as i64,
            &item.rel,
        )?;
    }
    Ok(())
}

/// What the network opened for the first split to extract announces.
fn ready<'a>(device: &'a str, backbone: &'a Backbone) -> Event<'a> {
    Event::Ready {
        device,
        model: &backbone.model.name,
        preprocess: backbone.preprocess,
        output: &backbone.cut.output,
    }
}

/// The header of a split's feature file: where its rows came from and how they were made.
fn split_meta(job: &SplitJob<'_>, cfg: &ExtractConfig, skipped: Vec<Skipped>) -> FeatureMeta {
    FeatureMeta {
        format_version: store::FORMAT_VERSION,
        split: job.split.name.clone(),
        classes: job.data.classes.clone(),
        provenance: job.backbone.provenance(cfg, job.engine),
        files: Vec::new(),
        skipped,
        excluded: job.excluded.to_vec(),
        cache_key: job.target.key.clone(),
        shard: job.target.shard.clone(),
    }
}

/// Batch and image size within what extraction can do.
fn check_settings(cfg: &ExtractConfig) -> Result<()> {
    if cfg.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    if cfg.size < 32 {
        return Err(Error::Invalid(format!(
            "--size {} is too small: VGG16 needs at least 32 pixels",
            cfg.size
        )));
    }
    if cfg.size > MAX_SIZE {
        return Err(Error::Invalid(format!(
            "--size {} is too large: at most {MAX_SIZE} px (VGG16's first block alone holds \
             {:.1} GB of activations per image at that size; ImageNet weights are trained at 224)",
            cfg.size,
            (cfg.size as f64).powi(2) * 64.0 * 4.0 * 2.0 / 1e9
        )));
    }
    Ok(())
}

/// The run's writer lock, or a shard's own lock beside the other shards.
fn lock(cfg: &ExtractConfig) -> Result<runfs::RunLock> {
    Ok(match cfg.shard {
        None => runfs::RunLock::acquire(&cfg.run, "extract")?,
        Some(sh) => runfs::RunLock::acquire_shard(
            &cfg.run,
            "extract",
            &format!("extract-shard-{}-of-{}", sh.index, sh.count),
        )?,
    })
}

/// The network to run when it is not the backbone's FP32 cut (`None`), and the precision tag of the
/// cache key: the int8 model (quantized once, cached under RUN/models) replaces the FP32 bytes, and
/// its key joins the features' cache key so that a re-quantized model re-extracts.
fn network_bytes(cfg: &ExtractConfig, backbone: &Backbone) -> Result<(Option<Vec<u8>>, String)> {
    Ok(match cfg.precision {
        Precision::Fp32 => (None, "fp32".to_string()),
        Precision::Int8 => {
            let spec = crate::quantize::CalibSpec {
                threads: cfg.threads,
                size: cfg.size,
                resize: cfg.resize,
                ..crate::quantize::CalibSpec::new(&cfg.data)
            };
            let (bytes, info) = crate::quantize::int8_model_shared(
                backbone,
                &spec,
                &cfg.run.join("models"),
                cfg.hub.int8_cache.as_deref(),
            )?;
            (Some(bytes), format!("int8:{}", info.key))
        }
    })
}

/// The summary of `split` when its feature file at `target` already holds features of that key.
fn up_to_date(target: &Target, data: &Dataset, split: &Split) -> Option<SplitSummary> {
    let (meta, shape) = store::read_header(&target.path).ok()?;
    if meta.cache_key != target.key {
        return None;
    }
    Some(SplitSummary {
        split: split.name.clone(),
        path: target.path.clone(),
        rows: meta.files.len(),
        class_counts: class_counts(data, split, &meta.files),
        shape,
        skipped: meta.skipped,
        excluded: meta.excluded,
        up_to_date: true,
        seconds: 0.0,
        images_per_second: 0.0,
    })
}

/// Reads `cfg.exclude` (when given) and removes its photos from `data`, saying how many left each
/// split; returns what each split lost and what the summary records of the list.
fn apply_exclude(
    cfg: &ExtractConfig,
    data: &mut Dataset,
    on_event: &mut dyn FnMut(Event),
) -> Result<(Removed, Option<ExcludeInfo>)> {
    let Some(file) = &cfg.exclude else {
        return Ok((Removed::new(), None));
    };
    let list = ExcludeList::read(file)?;
    let removed = list.apply(data)?;
    on_event(Event::Note(&exclude_note(&list, &removed)));
    let info = ExcludeInfo {
        list: file.clone(),
        sha256: list.sha256(),
        paths: list.len(),
    };
    Ok((removed, Some(info)))
}

/// `exclude LIST (sha256 …): left out 2 photos of train, 0 photos of validation`.
fn exclude_note(list: &ExcludeList, removed: &Removed) -> String {
    let per_split: Vec<String> = removed
        .iter()
        .map(|(split, rels)| {
            let n = rels.len();
            format!("{n} photo{} of {split}", if n == 1 { "" } else { "s" })
        })
        .collect();
    format!(
        "exclude {} (sha256 {}…): left out {}",
        list.source.display(),
        &list.sha256()[..12],
        per_split.join(", ")
    )
}

/// Rows per class among `files` (the rows of a feature file of `split`).
fn class_counts(data: &Dataset, split: &Split, files: &[String]) -> Vec<usize> {
    let by_file: BTreeMap<&str, usize> = split
        .items
        .iter()
        .map(|i| (i.rel.as_str(), i.label))
        .collect();
    let mut counts = vec![0; data.classes.len()];
    for f in files {
        if let Some(&l) = by_file.get(f.as_str()) {
            counts[l] += 1;
        }
    }
    counts
}

/// Decodes, resizes and normalises one image into `slot`.
pub fn prepare(
    item_path: &Path,
    size: u32,
    resize: Resize,
    pre: Preprocess,
    layout: Layout,
    slot: &mut [f32],
) -> Result<()> {
    let decoded = crate::image_io::load_rgb8(item_path)?;
    let img = preprocess::frame(&decoded.image, size, resize)?;
    preprocess::write_input(&img, pre, layout, slot)
}

/// [`prepare`] of a photo already in memory (e.g. an upload): the same decode limits, frame and
/// preprocessing; `name` is only used in error messages.
pub fn prepare_bytes(bytes: &[u8], name: &Path, spec: &InputSpec, slot: &mut [f32]) -> Result<()> {
    let decoded = crate::image_io::decode_rgb8(bytes, name)?;
    let img = preprocess::frame(&decoded.image, spec.size, spec.resize)?;
    preprocess::write_input(&img, spec.preprocess, spec.layout, slot)
}

/// One split to extract and where its features go.
struct SplitJob<'a> {
    backbone: &'a Backbone,
    /// [`Backend::engine`] of the network that runs it.
    engine: Option<&'a str>,
    data: &'a Dataset,
    split: &'a Split,
    /// The photos of the split `--exclude` left out.
    excluded: &'a [String],
    target: Target,
}

fn extract_split(
    runner: &mut dyn FeatureNet,
    job: &SplitJob<'_>,
    cfg: &ExtractConfig,
    on_event: &mut dyn FnMut(Event),
) -> Result<SplitSummary> {
    let SplitJob {
        backbone,
        data,
        split,
        excluded,
        ref target,
        ..
    } = *job;
    let start = Instant::now();
    let total = split.items.len();
    on_event(Event::SplitStart {
        split: &split.name,
        total,
    });
    let path = target.path.clone();
    let spec = InputSpec {
        size: cfg.size,
        resize: cfg.resize,
        preprocess: backbone.preprocess,
        layout: backbone.cut.input_layout,
    };
    let mut writer: Option<FeatureWriter> = None;
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut done = 0usize;
    infer::run_images(
        runner,
        &spec,
        &split.items,
        cfg.batch,
        &mut |out: BatchOut| {
            report_skipped(cfg, data, &split.name, out.skipped, on_event)?;
            done += out.items.len() + out.skipped.len();
            skipped.extend_from_slice(out.skipped);
            write_rows(&mut writer, &path, &out)?;
            on_event(Event::Progress {
                split: &split.name,
                done,
                total,
            });
            Ok(())
        },
    )?;
    let writer = match (writer, cfg.shard) {
        (Some(w), _) => Some(w),
        // A shard may hold no readable photo of a split; `merge` judges the whole split.
        (None, Some(_)) => Some(FeatureWriter::create(&path, &[0])?),
        (None, None) => None,
    };
    let Some(writer) = writer else {
        return Err(crate::photos::none_read(&split.name, total, &skipped));
    };
    let rows = writer.rows();
    let path = writer.finish(split_meta(job, cfg, skipped.clone()))?;
    let seconds = start.elapsed().as_secs_f64();
    on_event(Event::SplitDone {
        split: &split.name,
        rows,
        seconds,
    });
    let (meta, shape) = store::read_header(&path)?;
    Ok(SplitSummary {
        split: split.name.clone(),
        class_counts: class_counts(data, split, &meta.files),
        shape,
        path,
        rows,
        skipped,
        excluded: excluded.to_vec(),
        up_to_date: false,
        seconds,
        images_per_second: rows as f64 / seconds.max(1e-9),
    })
}
