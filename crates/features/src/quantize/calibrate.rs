//! Calibration: drawing the calibration images (seeded, balanced over classes, from the training split),
//! their content digest, and measuring each activation tensor's min/max by running the FP32 model with a
//! ReduceMin/ReduceMax pair on every tensor to calibrate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use prost::Message;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::dataset::{self, is_image_name};
use crate::onnx::build::{float_value, int_attr, node};
use crate::onnx::proto::ModelProto;
use crate::onnx::{CutModel, Layout};
use crate::preprocess::{self, Preprocess, Resize};
use crate::runtime::{self, Device, SessionOptions};
use crate::store::Skipped;
use crate::{Error, Result};

/// Fewest usable calibration images accepted.
pub const MIN_CALIB_IMAGES: usize = 8;

crate::choices! {
    /// How activation ranges are estimated from the calibration images.
    pub enum CalibMethod("calibration method") {
        /// Smallest and largest value seen over all calibration images (ONNX Runtime's `MinMax`).
        MinMax = "minmax",
    }
}

/// One drawn calibration image and its bytes (read once: the digest covers exactly what is decoded).
#[derive(Debug, Clone)]
pub struct CalibImage {
    pub path: PathBuf,
    /// Path relative to the calibration folder, `/`-separated.
    pub rel: String,
    pub label: usize,
    /// File contents, or why the file could not be read.
    pub bytes: std::result::Result<Vec<u8>, String>,
}

/// The drawn calibration set.
#[derive(Debug, Clone)]
pub struct CalibSet {
    /// Split the images were drawn from (`train`, or `all` for a folder without splits).
    pub split: String,
    pub images: Vec<CalibImage>,
    /// sha256 over every drawn file's relative path, label and content digest, in draw order.
    pub digest: String,
}

/// Which images, how many, and how they are preprocessed.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibSpec {
    /// `DIR/<split>/<class>/*`, `DIR/<class>/*`, or a folder of images.
    pub dir: PathBuf,
    /// Split to draw from; `None`: `train` when present, else the only split.
    pub split: Option<String>,
    /// Images to draw (default 64), round-robin over classes.
    pub count: usize,
    /// Seed of the draw.
    pub seed: u64,
    /// Side of the square network input (150 in the tutorial).
    pub size: u32,
    pub resize: Resize,
    pub method: CalibMethod,
    pub activations: super::ActType,
    /// Range of the int8 weights (default: what this CPU computes exactly).
    pub weights: super::WeightRange,
    /// Images per calibration batch.
    pub batch: usize,
    /// ONNX Runtime threads for calibration (`None`: all cores).
    pub threads: Option<usize>,
}

impl CalibSpec {
    /// The defaults: 64 images, seed 0, 150×150 nearest, min-max, uint8 activations.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CalibSpec {
            dir: dir.into(),
            split: None,
            count: 64,
            seed: 0,
            size: 150,
            resize: Resize::Nearest,
            method: CalibMethod::MinMax,
            weights: super::WeightRange::for_this_cpu(),
            activations: super::ActType::Uint8,
            batch: 16,
            threads: None,
        }
    }

    /// Rejects counts, sizes and batch sizes that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.count < MIN_CALIB_IMAGES {
            return Err(Error::Invalid(format!(
                "--count {} is too few calibration images: use at least {MIN_CALIB_IMAGES} (64 is the default)",
                self.count
            )));
        }
        if self.size < 32 {
            return Err(Error::Invalid(format!(
                "--size {} is too small: VGG16 needs at least 32 pixels",
                self.size
            )));
        }
        if self.batch == 0 {
            return Err(Error::Invalid(
                "the calibration batch must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One candidate file: (path relative to the calibration folder, path, label).
type Candidate = (String, PathBuf, usize);

/// The split drawn from and its candidate files.
fn list_items(spec: &CalibSpec) -> Result<(String, Vec<Candidate>)> {
    let dir = &spec.dir;
    match dataset::scan(dir) {
        Ok(data) => {
            let split = match &spec.split {
                Some(s) => data.split(s).ok_or_else(|| {
                    Error::Dataset(format!(
                        "calibration folder {} has no split '{s}' (splits: {})",
                        dir.display(),
                        data.splits.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?,
                None => match data.split("train") {
                    Some(s) => s,
                    None if data.splits.len() == 1 => &data.splits[0],
                    None => {
                        return Err(Error::Dataset(format!(
                            "calibration folder {} has splits {} but none is called 'train': pass the split to draw from",
                            dir.display(),
                            data.splits.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                        )))
                    }
                },
            };
            let items = split
                .items
                .iter()
                .map(|i| (i.rel.clone(), i.path.clone(), i.label))
                .collect();
            Ok((split.name.clone(), items))
        }
        Err(scan_err) => {
            // A plain folder of images is fine for calibration (no classes needed).
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && is_image_name(p))
                    .filter(|p| {
                        !p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            if files.is_empty() {
                return Err(Error::Dataset(format!(
                    "calibration folder {} holds no images: {scan_err} (a plain folder of .jpg/.png files also works)",
                    dir.display()
                )));
            }
            files.sort();
            let items = files
                .into_iter()
                .map(|p| {
                    let rel = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (rel, p, 0)
                })
                .collect();
            Ok(("all".into(), items))
        }
    }
}

/// Draws `spec.count` images: each class's files shuffled with `spec.seed`, then taken round-robin over
/// the classes so the set is balanced; reads every drawn file once and digests the contents.
pub fn draw(spec: &CalibSpec) -> Result<CalibSet> {
    spec.validate()?;
    let (split, items) = list_items(spec)?;
    let classes = items.iter().map(|i| i.2).max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<Candidate>> = vec![Vec::new(); classes];
    for it in items {
        by_class[it.2].push(it);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    for c in by_class.iter_mut() {
        c.shuffle(&mut rng);
    }
    let mut picked = Vec::with_capacity(spec.count);
    let longest = by_class.iter().map(Vec::len).max().unwrap_or(0);
    'outer: for k in 0..longest {
        for c in &by_class {
            if picked.len() == spec.count {
                break 'outer;
            }
            if let Some(it) = c.get(k) {
                picked.push(it.clone());
            }
        }
    }
    let mut h = runfs::Digest::new();
    let mut images = Vec::with_capacity(picked.len());
    for (rel, path, label) in picked {
        let bytes = crate::image_io::read_photo(&path).map_err(crate::Error::skip_reason);
        h.part(rel.as_bytes()).raw(&(label as u64).to_le_bytes());
        match &bytes {
            Ok(b) => h.raw(&runfs::digest::sha256(b)),
            Err(e) => h.raw(format!("unreadable: {e}").as_bytes()),
        };
        images.push(CalibImage {
            path,
            rel,
            label,
            bytes,
        });
    }
    Ok(CalibSet {
        split,
        images,
        digest: h.hex(),
    })
}

/// Measured ranges and which images gave them.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Tensor → (min, max) over all used images.
    pub ranges: BTreeMap<String, (f32, f32)>,
    /// Relative paths of the images used.
    pub used: Vec<String>,
    pub skipped: Vec<Skipped>,
}

/// Adds `ReduceMin`/`ReduceMax` (all axes, keepdims 0) on each of `tensors` as extra outputs
/// `<t>__calib_min` / `<t>__calib_max`.
pub fn with_range_outputs(model: &[u8], tensors: &[String]) -> Result<Vec<u8>> {
    let mut m = ModelProto::decode(model)
        .map_err(|e| Error::Graph(format!("not a valid ONNX protobuf ({e})")))?;
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    for t in tensors {
        for (op, suffix) in [("ReduceMin", "min"), ("ReduceMax", "max")] {
            let out = format!("{t}__calib_{suffix}");
            g.node
                .push(node(op, &out, &[t], &out, vec![int_attr("keepdims", 0)]));
            g.output.push(float_value(&out));
        }
    }
    Ok(m.encode_to_vec())
}

/// Decodes, resizes and normalises one calibration image into `slot`.
fn prepare(
    img: &CalibImage,
    spec: &CalibSpec,
    pre: Preprocess,
    layout: Layout,
    slot: &mut [f32],
) -> Result<()> {
    let bytes = img.bytes.as_ref().map_err(|e| Error::Image {
        path: img.path.clone(),
        reason: e.clone(),
    })?;
    let decoded = crate::image_io::decode_rgb8(bytes, &img.path)?;
    let resized = preprocess::frame(&decoded.image, spec.size, spec.resize)?;
    preprocess::write_input(&resized, pre, layout, slot)
}

/// Runs the FP32 `cut` model over the calibration images and returns each tensor's min/max.
/// Unreadable images are skipped and listed; fewer than [`MIN_CALIB_IMAGES`] usable ones is an error.
// Over 80 lines: one pass over the calibration photos with the session, the running min/max and the
// skipped list it updates.
pub fn calibrate(
    cut: &CutModel,
    tensors: &[String],
    set: &CalibSet,
    spec: &CalibSpec,
    pre: Preprocess,
) -> Result<Calibration> {
    let s = spec.size as usize;
    let per_image = 3 * s * s;
    let mut used = Vec::new();
    let mut skipped = Vec::new();
    let mut ranges: BTreeMap<String, (f32, f32)> = tensors
        .iter()
        .map(|t| (t.clone(), (f32::INFINITY, f32::NEG_INFINITY)))
        .collect();
    let mut runner = None;
    let mut input = Vec::with_capacity(spec.batch * per_image);
    // Batch by batch, so memory stays at one batch whatever the count.
    for chunk in set.images.chunks(spec.batch) {
        input.clear();
        for img in chunk {
            let at = input.len();
            input.resize(at + per_image, 0.0);
            match prepare(img, spec, pre, cut.input_layout, &mut input[at..]) {
                Ok(()) => used.push(img.rel.clone()),
                Err(e) => {
                    input.truncate(at);
                    let reason = match e {
                        Error::Image { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    skipped.push(Skipped {
                        file: img.rel.clone(),
                        reason,
                    });
                }
            }
        }
        let n = input.len() / per_image;
        if n == 0 {
            continue;
        }
        let r = match runner.as_mut() {
            Some(r) => r,
            None => {
                let model = with_range_outputs(&cut.bytes, tensors)?;
                let opts = SessionOptions {
                    device: Device::Cpu,
                    threads: spec.threads,
                };
                runner.insert(runtime::session(&model, &opts)?)
            }
        };
        let shape = match cut.input_layout {
            Layout::Nchw => [n, 3, s, s],
            Layout::Nhwc => [n, s, s, 3],
        };
        let x = ort::value::TensorRef::from_array_view((shape, &input[..]))?;
        let outputs = r.session.run(ort::inputs![cut.input.as_str() => x])?;
        for t in tensors {
            let lo = scalar(&outputs, &format!("{t}__calib_min"))?;
            let hi = scalar(&outputs, &format!("{t}__calib_max"))?;
            if let Some(r) = ranges.get_mut(t) {
                r.0 = r.0.min(lo);
                r.1 = r.1.max(hi);
            }
        }
    }
    if used.len() < MIN_CALIB_IMAGES {
        let listed: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.file, s.reason))
            .collect();
        return Err(Error::Dataset(format!(
            "only {} usable calibration image{} in {} (split '{}', {} drawn{}); calibration needs at least \
             {MIN_CALIB_IMAGES}: add images or point --calib at a bigger folder",
            used.len(),
            if used.len() == 1 { "" } else { "s" },
            spec.dir.display(),
            set.split,
            set.images.len(),
            if listed.is_empty() { String::new() } else { format!("; unreadable: {}", listed.join("; ")) }
        )));
    }
    if let Some((t, _)) = ranges
        .iter()
        .find(|(_, (lo, hi))| !lo.is_finite() || !hi.is_finite())
    {
        return Err(Error::Runtime(format!(
            "calibration saw non-finite values in tensor '{t}': the model or its preprocessing is broken"
        )));
    }
    Ok(Calibration {
        ranges,
        used,
        skipped,
    })
}

fn scalar(outputs: &ort::session::SessionOutputs, name: &str) -> Result<f32> {
    let value = outputs
        .get(name)
        .ok_or_else(|| Error::Runtime(format!("calibration output '{name}' is missing")))?;
    let (_, v) = value.try_extract_tensor::<f32>()?;
    v.first()
        .copied()
        .ok_or_else(|| Error::Runtime(format!("calibration output '{name}' is empty")))
}
