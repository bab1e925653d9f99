//! Micro-batching: one thread owns the classifier's engine and runs it on batches of the decoded
//! images that requests queue; the first image of a batch waits at most `max_wait` for others (up
//! to `max_batch`). The queue is bounded; an image whose request has gone (timed out, client gone)
//! is dropped before it costs a network run.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use predict::Predictor;
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// One image's probabilities, or why the network failed on its batch.
pub(crate) type Reply = Result<Vec<f32>, String>;

/// One decoded image waiting for the network.
struct Job {
    input: Vec<f32>,
    name: String,
    reply: oneshot::Sender<Reply>,
}

/// The queue is full: the caller answers 503.
#[derive(Debug)]
pub(crate) struct Full;

/// The sending side of the engine thread.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: Sender<Job>,
    metrics: Arc<Metrics>,
}

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub queue: usize,
}

impl Batcher {
    /// Starts the engine thread; it ends when every [`Batcher`] clone is dropped and the queue is empty.
    pub fn start(
        predictor: Predictor,
        how: Batching,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Batcher, JoinHandle<()>)> {
        let (tx, rx) = crossbeam_channel::bounded(how.queue);
        let m = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("serve-engine".into())
            .spawn(move || engine_loop(predictor, rx, how, &m))?;
        Ok((Batcher { tx, metrics }, handle))
    }

    /// Queues one prepared image; the answer comes on the returned receiver.
    pub fn submit(&self, input: Vec<f32>, name: String) -> Result<oneshot::Receiver<Reply>, Full> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { input, name, reply }) {
            Ok(()) => {
                self.metrics.queued(self.tx.len());
                Ok(rx)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(Full),
        }
    }
}

/// Takes the first waiting image, then others until the batch is full or `max_wait` has passed.
fn next_batch(rx: &Receiver<Job>, how: &Batching) -> Option<Vec<Job>> {
    let first = rx.recv().ok()?;
    let deadline = Instant::now() + how.max_wait;
    let mut jobs = vec![first];
    while jobs.len() < how.max_batch {
        match rx.recv_deadline(deadline) {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
    Some(jobs)
}

fn engine_loop(mut predictor: Predictor, rx: Receiver<Job>, how: Batching, metrics: &Metrics) {
    let k = predictor.classifier.classes.len();
    while let Some(mut jobs) = next_batch(&rx, &how) {
        metrics.queued(rx.len());
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let n = jobs.len();
        let mut input = Vec::with_capacity(n * jobs[0].input.len());
        let mut names = Vec::with_capacity(n);
        for j in &mut jobs {
            input.append(&mut j.input);
            names.push(std::mem::take(&mut j.name));
        }
        let start = Instant::now();
        let result = predictor.classify(&input, n, &names);
        metrics.batch(n, start.elapsed());
        match result {
            Ok(rows) => {
                for (j, row) in jobs.into_iter().zip(rows.chunks_exact(k.max(1))) {
                    let _ = j.reply.send(Ok(row.to_vec()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, images = n, "the classifier failed on a batch");
                for j in jobs {
                    let _ = j.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
