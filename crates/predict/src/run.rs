//! Streaming predictions: image files go through `features::infer::run_images` (parallel decode
//! workers, batches in file order, the same decode/resize/preprocessing as extraction) into the one
//! ONNX classifier — run by ONNX Runtime, or by Candle on a GPU, as `accel::engine::select` picks
//! for `--device` — and come back as [`Prediction`]s batch by batch; unreadable images are
//! reported as skipped and the rest goes on.

use std::path::PathBuf;
use std::time::Instant;

use features::dataset::Item;
use features::engine::{FeatureNet, NetRequest};
use features::infer::{run_images, BatchOut, InputSpec};
use features::runtime::{Device, Engine, SessionOptions};
use features::store::Skipped;
use serde::Serialize;

use crate::classifier::{Classifier, OUTPUT_NAME};
use crate::error::{Error, Result};

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub class: String,
    pub probability: f32,
}

/// The classifier's answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The file as given (or relative to the data folder when evaluating).
    pub file: String,
    #[serde(skip)]
    pub path: PathBuf,
    /// The item's label (only meaningful for labelled data).
    #[serde(skip)]
    pub label: usize,
    /// The most probable class and its probability.
    pub class: String,
    pub index: usize,
    pub probability: f32,
    /// The `k` most probable classes, best first.
    pub top: Vec<Ranked>,
    /// Every class's probability, in class order.
    pub probabilities: Vec<f32>,
}

/// Totals of a prediction pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStats {
    pub images: usize,
    pub predicted: usize,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Receives each batch's predictions and skipped files, in input order.
pub type OnBatch<'a> = dyn FnMut(&[Prediction], &[Skipped]) -> Result<()> + 'a;

/// A classifier with the engine that runs it.
pub struct Predictor {
    pub classifier: Classifier,
    runner: Box<dyn FeatureNet>,
    /// Why it runs elsewhere than asked (`--device auto` on the CPU), if it does.
    pub note: Option<String>,
}

/// Why an int8 classifier does not run on `ran_on`, and what to do.
fn int8_refusal(classifier: &Classifier, ran_on: &str) -> String {
    format!(
        "{} holds an int8 part (trained with --precision int8), which only ONNX Runtime runs, on \
         the CPU, not {ran_on}: use --device cpu (or --device auto); for the GPU, train the run with \
         --precision fp32",
        classifier.source.display()
    )
}

/// Class indices sorted by decreasing probability (ties keep class order; NaN last).
pub fn ranking(probs: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    let key = |i: usize| {
        if probs[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            probs[i]
        }
    };
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    idx
}

impl Prediction {
    /// Builds the prediction of `item` from its probability row.
    pub fn new(item: &Item, probs: &[f32], classes: &[String], top_k: usize) -> Self {
        let order = ranking(probs);
        let best = order.first().copied().unwrap_or(0);
        Prediction {
            file: item.rel.clone(),
            path: item.path.clone(),
            label: item.label,
            class: classes.get(best).cloned().unwrap_or_default(),
            index: best,
            probability: probs.get(best).copied().unwrap_or(f32::NAN),
            top: order
                .iter()
                .take(top_k.max(1))
                .map(|&i| Ranked {
                    class: classes[i].clone(),
                    probability: probs[i],
                })
                .collect(),
            probabilities: probs.to_vec(),
        }
    }
}

/// Checks that a batch of classifier output is `k` finite probabilities per image; `names` are the
/// batch's images in order, for the message.
fn check_rows(
    source: &std::path::Path,
    row_shape: &[usize],
    rows: &[f32],
    k: usize,
    names: impl Iterator<Item = String>,
) -> Result<()> {
    let width: usize = row_shape.iter().product();
    if width != k {
        return Err(Error::Mismatch(format!(
            "the classifier returns rows of shape {row_shape:?} but has {k} classes"
        )));
    }
    if let Some((name, bad)) = names
        .zip(rows.chunks_exact(k.max(1)))
        .find_map(|(name, row)| train::finite::first_non_finite(row).map(|b| (name, b)))
    {
        return Err(Error::Mismatch(format!(
            "{} gave a probability that is not a number for {name} ({bad}): its weights (or the \
             backbone's) are damaged; re-run the stage that wrote it, nothing was predicted from it",
            source.display(),
        )));
    }
    Ok(())
}

impl Predictor {
    /// Opens `classifier` on the engine `accel::engine::select` picks for `opts.device` and
    /// `engine`: ONNX Runtime on the CPU, Candle on a GPU. A classifier with an int8 part runs in
    /// ONNX Runtime on the CPU only: `auto` goes there with a note, an asked-for GPU is an error.
    pub fn new(classifier: Classifier, opts: &SessionOptions, engine: Engine) -> Result<Self> {
        let int8 = features::onnx::is_quantized(&classifier.onnx)?;
        let mut selected = accel::engine::select(opts.device, engine, opts.threads)?;
        // `engine()` is `None` for ONNX Runtime, the only engine that runs int8 graphs.
        if int8 && selected.backend.engine().is_some() {
            if opts.device != Device::Auto {
                return Err(Error::Invalid(int8_refusal(&classifier, &selected.ran_on)));
            }
            let why = format!(
                "--device auto: {} holds an int8 part, which runs in ONNX Runtime on the CPU",
                classifier.source.display()
            );
            selected = accel::engine::select(Device::Cpu, Engine::Ort, opts.threads)?;
            selected.note = Some(why);
        }
        let runner = selected.backend.open(&NetRequest {
            model: &classifier.onnx,
            output: OUTPUT_NAME,
            onnx: &classifier.onnx,
            onnx_layout: classifier.spec.layout,
            int8,
            threads: opts.threads,
        })?;
        Ok(Predictor {
            classifier,
            runner,
            note: selected.note,
        })
    }

    /// Where the classifier runs (`cpu`, `cuda`, `cuda:0 (Candle)`, …).
    pub fn device(&self) -> String {
        self.runner.device()
    }

    /// How images become this classifier's input, in the layout its engine takes.
    pub fn input_spec(&self) -> InputSpec {
        InputSpec {
            layout: self.runner.layout(),
            ..self.classifier.spec
        }
    }

    /// Probabilities (`n` rows of one per class) of `n` images already prepared with
    /// [`Predictor::input_spec`] (e.g. by `features::extract::prepare_bytes`); `names` name them
    /// in messages. The same checks as [`Predictor::run`]: a row that is not finite is an error.
    pub fn classify(&mut self, input: &[f32], n: usize, names: &[String]) -> Result<Vec<f32>> {
        let size = self.classifier.spec.size as usize;
        let (dims, values) = self.runner.run(input, n, size)?;
        let k = self.classifier.classes.len();
        check_rows(
            &self.classifier.source,
            dims.get(1..).unwrap_or(&[]),
            &values,
            k,
            names.iter().cloned(),
        )?;
        Ok(values)
    }

    /// Classifies `items` in batches of `batch`, calling `on_batch` with each batch's predictions
    /// and skipped files in input order. Only an error of the session or of `on_batch` stops it.
    pub fn run(
        &mut self,
        items: &[Item],
        batch: usize,
        top_k: usize,
        on_batch: &mut OnBatch,
    ) -> Result<RunStats> {
        let start = Instant::now();
        let classes = self.classifier.classes.clone();
        let k = classes.len();
        let mut stats = RunStats {
            images: items.len(),
            ..Default::default()
        };
        let mut failure: Option<Error> = None;
        let spec = self.classifier.spec;
        let source = self.classifier.source.clone();
        let result = run_images(
            self.runner.as_mut(),
            &spec,
            items,
            batch,
            &mut |out: BatchOut| {
                if !out.items.is_empty() {
                    let names = out.items.iter().map(|it| it.path.display().to_string());
                    if let Err(e) = check_rows(&source, out.row_shape, out.rows, k, names) {
                        failure = Some(e);
                        return Err(features::Error::Invalid("stopped".into()));
                    }
                }
                let preds: Vec<Prediction> = out
                    .items
                    .iter()
                    .zip(out.rows.chunks_exact(k.max(1)))
                    .map(|(it, row)| Prediction::new(it, row, &classes, top_k))
                    .collect();
                stats.predicted += preds.len();
                stats.skipped.extend_from_slice(out.skipped);
                if let Err(e) = on_batch(&preds, out.skipped) {
                    failure = Some(e);
                    return Err(features::Error::Invalid("stopped".into()));
                }
                Ok(())
            },
        );
        if let Some(e) = failure {
            return Err(e);
        }
        result?;
        stats.seconds = start.elapsed().as_secs_f64();
        stats.images_per_second = stats.predicted as f64 / stats.seconds.max(1e-9);
        Ok(stats)
    }
}
