//! The per-epoch checkpoint `RUN/finetune/checkpoint.safetensors`: every trainable tensor (in
//! the crate's internal layouts), the optimizer's velocity buffers and step count, the best epoch's
//! weights, the history and the [`Settings`]. Shuffling, dropout and augmentation draw their
//! random numbers from streams derived from `(seed, epoch)`, so the seed and the epoch count are
//! the whole random state: a resumed run repeats an uninterrupted one exactly.

use std::collections::HashMap;
use std::path::Path;

use train::metrics::EpochMetrics;

use crate::config::Settings;
use crate::epoch::State;
use crate::error::{Error, Result};
use crate::net::Net;
use crate::tensors::{self, F32Tensor, Loaded};

const FORMAT: &str = "bottleneck-finetune-checkpoint";
const FORMAT_VERSION: u32 = 1;

/// Everything needed to continue training after the last completed epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub settings: Settings,
    /// Epochs the run was asked for when the checkpoint was written.
    pub epochs: usize,
    /// One entry per completed epoch.
    pub history: Vec<EpochMetrics>,
    /// Trainable tensors in `Net::params` order.
    pub params: Vec<Vec<f32>>,
    /// SGD velocity per tensor (empty without momentum).
    pub velocity: Vec<Vec<f32>>,
    pub iterations: u64,
    /// The epoch with the lowest validation loss so far and its weights (`keep best` only).
    pub best: Option<(usize, Vec<Vec<f32>>)>,
}

/// Writes `ck` atomically; `names` are the tensor names in `params` order.
pub fn save(path: &Path, names: &[String], ck: &Checkpoint) -> Result<()> {
    if names.len() != ck.params.len() || names.len() != ck.velocity.len() {
        return Err(Error::Invalid(
            "checkpoint: names, parameters and velocities differ in number".into(),
        ));
    }
    let mut t = Vec::new();
    for (i, n) in names.iter().enumerate() {
        t.push((
            format!("param/{n}"),
            F32Tensor {
                shape: vec![ck.params[i].len()],
                data: &ck.params[i],
            },
        ));
        t.push((
            format!("velocity/{n}"),
            F32Tensor {
                shape: vec![ck.velocity[i].len()],
                data: &ck.velocity[i],
            },
        ));
        if let Some((_, best)) = &ck.best {
            t.push((
                format!("best/{n}"),
                F32Tensor {
                    shape: vec![best[i].len()],
                    data: &best[i],
                },
            ));
        }
    }
    let mut m = HashMap::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("format_version".into(), FORMAT_VERSION.to_string());
    m.insert("settings".into(), to_json(&ck.settings)?);
    m.insert("epochs".into(), ck.epochs.to_string());
    m.insert("history".into(), to_json(&ck.history)?);
    m.insert("iterations".into(), ck.iterations.to_string());
    m.insert("names".into(), to_json(&names.to_vec())?);
    m.insert(
        "best_epoch".into(),
        to_json(&ck.best.as_ref().map(|(e, _)| *e))?,
    );
    m.insert(
        "layout".into(),
        "conv weights as im2col matrices [9*in, out]; head kernel rows in NHWC order".into(),
    );
    tensors::write(path, t, m)
}

/// Reads a checkpoint written by [`save`]; `names` must be the current network's tensor names.
pub fn load(path: &Path, names: &[String]) -> Result<Checkpoint> {
    let fix = "delete RUN/finetune and start over (or pass --force)";
    let f = Loaded::read(path, fix)?;
    if f.meta("format")? != FORMAT {
        return Err(Error::file(
            path,
            format!("not a fine-tuning checkpoint; {fix}"),
        ));
    }
    let version: u32 = f.meta_json("format_version")?;
    if version != FORMAT_VERSION {
        return Err(Error::file(
            path,
            format!("checkpoint format {version} is not supported; {fix}"),
        ));
    }
    let stored: Vec<String> = f.meta_json("names")?;
    if stored != names {
        return Err(Error::file(
            path,
            format!("the checkpoint holds tensors {stored:?} but the network has {names:?}; {fix}"),
        ));
    }
    let best_epoch: Option<usize> = f.meta_json("best_epoch")?;
    let mut params = Vec::new();
    let mut velocity = Vec::new();
    let mut best = Vec::new();
    for n in names {
        params.push(f.f32(&format!("param/{n}"))?.1);
        velocity.push(f.f32(&format!("velocity/{n}"))?.1);
        if best_epoch.is_some() {
            best.push(f.f32(&format!("best/{n}"))?.1);
        }
    }
    Ok(Checkpoint {
        settings: f.meta_json("settings")?,
        epochs: f.meta_json("epochs")?,
        history: f.meta_json("history")?,
        params,
        velocity,
        iterations: f.meta_json("iterations")?,
        best: best_epoch.map(|e| (e, best)),
    })
}

/// The settings stored in a checkpoint (to fill in flags not given with `--resume`).
pub fn read_settings(path: &Path) -> Result<(Settings, usize)> {
    let f = Loaded::read(path, "delete RUN/finetune and start over (or pass --force)")?;
    Ok((f.meta_json("settings")?, f.meta_json("epochs")?))
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::Invalid(format!("cannot encode checkpoint metadata: {e}")))
}

/// The checkpoint of a training state after the epochs of `history`.
pub fn of_state(
    state: &State,
    history: &[EpochMetrics],
    best: Option<&(usize, Net)>,
    settings: &Settings,
    epochs: usize,
) -> Checkpoint {
    let copy = |n: &Net| n.params().iter().map(|p| p.to_vec()).collect();
    Checkpoint {
        settings: settings.clone(),
        epochs,
        history: history.to_vec(),
        params: copy(&state.net),
        velocity: state
            .optim
            .state()
            .0
            .iter()
            .map(|[v, _]| v.clone())
            .collect(),
        iterations: state.optim.iterations(),
        best: best.map(|(e, n)| (*e, copy(n))),
    }
}

/// Puts a checkpoint's weights and optimizer state into `state`; returns where the run stands
/// (its history and best epoch) for the epoch driver.
pub fn restore(
    state: &mut State,
    ck: Checkpoint,
    path: &Path,
) -> Result<train::driver::Progress<Net>> {
    apply_params(&mut state.net, ck.params, path)?;
    let slots = ck.velocity.into_iter().map(|v| [v, Vec::new()]).collect();
    state.optim.set_state(slots, ck.iterations).map_err(|_| {
        Error::file(
            path,
            "the optimizer state does not fit the network; start over with --force",
        )
    })?;
    let best = match ck.best {
        Some((e, p)) => {
            let mut best = state.net.clone();
            apply_params(&mut best, p, path)?;
            Some((e, best))
        }
        None => None,
    };
    Ok(train::driver::Progress {
        history: ck.history,
        best,
    })
}

fn apply_params(net: &mut Net, values: Vec<Vec<f32>>, path: &Path) -> Result<()> {
    let mut params = net.params_mut();
    if params.len() != values.len() || params.iter().zip(&values).any(|(p, v)| p.len() != v.len()) {
        return Err(Error::file(
            path,
            "the weights do not fit the network; start over with --force",
        ));
    }
    for (p, v) in params.iter_mut().zip(values) {
        **p = v;
    }
    Ok(())
}
