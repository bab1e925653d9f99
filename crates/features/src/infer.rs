//! Batched inference over image files: worker threads decode and preprocess whole batches while the one
//! frozen network (ONNX Runtime or another [`crate::engine::Backend`]'s) runs the previous one; batches
//! reach the caller in file order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::dataset::Item;
use crate::engine::FeatureNet;
use crate::extract::prepare;
use crate::onnx::Layout;
use crate::preprocess::{Preprocess, Resize};
use crate::store::Skipped;
use crate::{Error, Result};

/// How images become network input.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub size: u32,
    pub resize: Resize,
    pub preprocess: Preprocess,
    pub layout: Layout,
}

/// One batch of results, in input order.
pub struct BatchOut<'a> {
    /// The images of this batch that were decoded, one output row each.
    pub items: &'a [Item],
    /// `items.len()` rows of `row_shape.iter().product()` values.
    pub rows: &'a [f32],
    /// Shape of one row (e.g. `[512, 4, 4]` or `[2]`).
    pub row_shape: &'a [usize],
    /// The images of this batch that could not be read.
    pub skipped: &'a [Skipped],
}

struct Batch {
    input: Vec<f32>,
    items: Vec<Item>,
    skipped: Vec<Skipped>,
}

/// Decode/preprocess threads: enough to keep a GPU fed, without starving a CPU session.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

fn prepare_batch(items: &[Item], spec: &InputSpec) -> Batch {
    let per_image = 3 * spec.size as usize * spec.size as usize;
    let mut batch = Batch {
        input: Vec::with_capacity(items.len() * per_image),
        items: Vec::new(),
        skipped: Vec::new(),
    };
    for item in items {
        let at = batch.input.len();
        batch.input.resize(at + per_image, 0.0);
        match prepare(
            &item.path,
            spec.size,
            spec.resize,
            spec.preprocess,
            spec.layout,
            &mut batch.input[at..],
        ) {
            Ok(()) => batch.items.push(item.clone()),
            Err(e) => {
                batch.input.truncate(at);
                let reason = match e {
                    Error::Image { reason, .. } => reason,
                    other => other.to_string(),
                };
                batch.skipped.push(Skipped {
                    file: item.rel.clone(),
                    reason,
                });
            }
        }
    }
    batch
}

/// Runs `net` over `items` in batches of `batch` (images prepared in the layout the network takes,
/// whatever `spec.layout` says), calling `on_batch` for each batch in order. An error from
/// `on_batch` or the network stops the workers and is returned.
pub fn run_images(
    net: &mut dyn FeatureNet,
    spec: &InputSpec,
    items: &[Item],
    batch: usize,
    on_batch: &mut dyn FnMut(BatchOut) -> Result<()>,
) -> Result<()> {
    if batch == 0 {
        return Err(Error::Invalid("batch size must be at least 1".into()));
    }
    let spec = &InputSpec {
        layout: net.layout(),
        ..*spec
    };
    let chunks: Vec<&[Item]> = items.chunks(batch).collect();
    let workers = workers();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = crossbeam_channel::bounded::<(usize, Batch)>(workers * 2);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop, chunks) = (&next, &stop, &chunks);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= chunks.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                if tx.send((i, prepare_batch(chunks[i], spec))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut consume = || -> Result<()> {
            let mut pending: BTreeMap<usize, Batch> = BTreeMap::new();
            let mut want = 0usize;
            for (i, b) in rx.iter() {
                pending.insert(i, b);
                while let Some(b) = pending.remove(&want) {
                    want += 1;
                    if b.items.is_empty() {
                        on_batch(BatchOut {
                            items: &[],
                            rows: &[],
                            row_shape: &[],
                            skipped: &b.skipped,
                        })?;
                        continue;
                    }
                    let n = b.items.len();
                    let (dims, values) = net.run(&b.input, n, spec.size as usize)?;
                    on_batch(BatchOut {
                        items: &b.items,
                        rows: &values,
                        row_shape: &dims[1..],
                        skipped: &b.skipped,
                    })?;
                }
            }
            Ok(())
        };
        let r = consume();
        if r.is_err() {
            stop.store(true, Ordering::Relaxed);
            // Drain so that workers blocked on a full channel can finish.
            while rx.recv().is_ok() {}
        }
        r
    })
}
