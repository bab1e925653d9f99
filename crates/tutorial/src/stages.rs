//! The run itself: plan every stage from what `RUN` holds, refuse outputs of other inputs, run the
//! stages in order (a stage that ran makes the later ones stale), record each stage's time in
//! `RUN/tutorial.json` as it goes, and write the report.

use std::path::PathBuf;
use std::time::Instant;

use head::pipeline::{train_head, TrainHeadOptions};
use serde::Serialize;

use crate::audit_step;
use crate::check::{self, Found};
use crate::config::{Stage, TutorialConfig};
use crate::error::{Error, Result};
use crate::inputs::{self, Inputs, Prepared};
use crate::record::{Record, Status};
use crate::report::{self, Row};
use crate::select;
use crate::stage1;

/// What a sitting does with a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Run it from the start (no outputs yet).
    Run,
    /// Continue an interrupted run (fine-tuning resumes from its checkpoint, extraction adds the
    /// missing splits, an interrupted head is trained again).
    Continue,
    /// Run it again: its outputs were made from other inputs (`force`), or an earlier stage ran now.
    Rerun,
    /// Finished outputs of the same inputs and settings: nothing to do.
    Reuse,
    /// Not run in this sitting (not among the stages asked for, or not available).
    Skip,
}

impl Action {
    /// A word for progress lines and the report.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Run => "run",
            Action::Continue => "continue",
            Action::Rerun => "rerun",
            Action::Reuse => "reuse",
            Action::Skip => "skip",
        }
    }
}

/// Progress reports: the plan, stage boundaries, and each stage's own events.
#[derive(Debug)]
pub enum Event<'a> {
    /// What will be done with a stage, and why.
    Plan {
        stage: Stage,
        action: Action,
        why: String,
    },
    /// A stage begins.
    StageStart {
        stage: Stage,
        action: Action,
    },
    /// A stage ended; `seconds` over every sitting.
    StageDone {
        stage: Stage,
        seconds: f64,
    },
    /// A line of information.
    Info(String),
    Extract(features::extract::Event<'a>),
    Head(train::stage::StageEvent<'a>),
    Finetune(finetune::Event<'a>),
    Scratch(scratch::Event<'a>),
    /// The audit of the training photos after the head.
    Audit(train::stage::StageEvent<'a>),
}

/// What [`run`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run: PathBuf,
    pub report_md: PathBuf,
    pub report_html: PathBuf,
    pub record: PathBuf,
    pub inputs: Inputs,
    /// One row per stage, as in the report.
    pub stages: Vec<Row>,
    /// What the audit found, when it ran.
    pub audit: Option<AuditBrief>,
}

/// The audit's counts in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct AuditBrief {
    pub mislabeled: usize,
    pub duplicates: usize,
    pub leaks: usize,
    pub outliers: usize,
    pub csv: PathBuf,
}

/// Wall-clock time of a stage in this sitting, on top of earlier sittings' time.
struct Clock {
    stage: Stage,
    prior: f64,
    sittings: usize,
    start: Instant,
}

impl Clock {
    fn start(record: &Record, stage: Stage, action: Action) -> Clock {
        let (prior, sittings) = match action {
            Action::Continue => record.prior(stage),
            _ => (0.0, 0),
        };
        Clock {
            stage,
            prior,
            sittings: sittings + 1,
            start: Instant::now(),
        }
    }

    fn seconds(&self) -> f64 {
        self.prior + self.start.elapsed().as_secs_f64()
    }

    fn mark(
        &self,
        record: &mut Record,
        run: &std::path::Path,
        status: Status,
        device: Option<String>,
    ) -> Result<f64> {
        let seconds = self.seconds();
        record.set(self.stage, status, seconds, self.sittings, device);
        record.save(run)?;
        Ok(seconds)
    }
}

/// Runs the tutorial as configured and writes the report.
pub fn run(cfg: &TutorialConfig, on_event: &mut dyn FnMut(Event<'_>)) -> Result<Summary> {
    cfg.validate()?;
    // Asked-for CUDA that cannot start stops here, before anything is written.
    let engine = accel::engine::select(cfg.device, cfg.engine, cfg.threads)?;
    if let Some(note) = &engine.note {
        on_event(Event::Info(note.clone()));
    }
    let _lock = runfs::RunLock::acquire(&cfg.run, "tutorial")?;
    let chosen;
    let cfg = if cfg.candidates.len() > 1 {
        let selection = select::select(cfg, on_event)?;
        chosen = TutorialConfig {
            model: selection.winner().model.clone(),
            ..cfg.clone()
        };
        &chosen
    } else {
        cfg
    };
    let prep = inputs::prepare(cfg)?;
    let mut record = Record::load(&cfg.run)?;
    let inputs_changed = inputs_changed(cfg, &prep, &mut record)?;
    let plan = plan(cfg, &prep, inputs_changed)?;
    record.inputs = Some(prep.inputs.clone());
    record.save(&cfg.run)?;
    if cfg.candidates.len() > 1 && cfg.runs(Stage::Extract) {
        select::adopt_features(cfg, &cfg.model)?;
    }
    for (stage, action, why, _) in &plan {
        on_event(Event::Plan {
            stage: *stage,
            action: *action,
            why: why.clone(),
        });
    }
    let did = run_plan(cfg, &prep, plan, &mut record, on_event)?;
    let audited = audit_step::run(cfg, &mut |e| on_event(Event::Audit(e)));
    if let audit_step::Outcome::Failed(e) = &audited {
        on_event(Event::Info(format!("warning: the audit failed: {e}")));
    }
    let written = report::write(&cfg.run, &record, &prep.inputs, &did, &audited)?;
    Ok(Summary {
        run: cfg.run.clone(),
        report_md: written.md,
        report_html: written.html,
        record: crate::record::path(&cfg.run),
        inputs: prep.inputs,
        stages: written.rows,
        audit: match audited {
            audit_step::Outcome::Done(a) => Some(AuditBrief {
                mislabeled: a.mislabeled.len(),
                duplicates: a.duplicates.len(),
                leaks: a.leaks(),
                outliers: a.outliers.len(),
                csv: cfg.run.join("audit").join("audit.csv"),
            }),
            _ => None,
        },
    })
}

/// Whether the run folder holds a tutorial of other inputs: an error, or with `--force` true (and
/// the record's stages forgotten).
fn inputs_changed(cfg: &TutorialConfig, prep: &Prepared, record: &mut Record) -> Result<bool> {
    let Some(prev) = &record.inputs else {
        return Ok(false);
    };
    let diff = prev.differences(&prep.inputs);
    if diff.is_empty() {
        return Ok(false);
    }
    if !cfg.force {
        return Err(Error::Mismatch(format!(
            "{} holds a tutorial run of other inputs ({}); use another --run, or pass --force to replace its outputs",
            cfg.run.display(),
            diff.join("; ")
        )));
    }
    record.stages.clear();
    Ok(true)
}

/// One stage of the plan: what to do, why, and what its outputs said.
type Planned = (Stage, Action, String, Found);

/// What to do with each stage, from what its outputs say; outputs of other inputs or settings
/// are an error naming them all, unless `--force`.
fn plan(cfg: &TutorialConfig, prep: &Prepared, inputs_changed: bool) -> Result<Vec<Planned>> {
    let mut plan = Vec::new();
    let mut refusals = Vec::new();
    for stage in Stage::ALL {
        let found = check::stage(stage, cfg, prep)?;
        let (action, why) = if !cfg.runs(stage) {
            (Action::Skip, "not among --stages".to_string())
        } else if let (Stage::Finetune, Some(why)) = (stage, &prep.no_finetune) {
            (Action::Skip, why.clone())
        } else {
            match &found {
                Found::Absent => (Action::Run, "no outputs yet".into()),
                Found::Done if inputs_changed => (
                    Action::Rerun,
                    "the run's inputs changed (--force)".to_string(),
                ),
                Found::Done => (
                    Action::Reuse,
                    "finished earlier with the same inputs and settings".into(),
                ),
                Found::Partial(why) => (Action::Continue, why.clone()),
                Found::Other(diff) if cfg.force => {
                    (Action::Rerun, format!("--force: {}", diff.join("; ")))
                }
                Found::Other(diff) => {
                    refusals.push(format!("{stage}: {}", diff.join("; ")));
                    (Action::Skip, String::new())
                }
            }
        };
        plan.push((stage, action, why, found));
    }
    if !refusals.is_empty() {
        return Err(Error::Mismatch(format!(
            "{} holds outputs made from other inputs or settings:\n  {}\nuse another --run, or pass --force to replace them",
            cfg.run.display(),
            refusals.join("\n  ")
        )));
    }
    Ok(plan)
}

/// Runs the planned stages in order (a stage after one that wrote new outputs is rerun, not
/// reused), recording each; returns what became of every stage.
fn run_plan(
    cfg: &TutorialConfig,
    prep: &Prepared,
    plan: Vec<Planned>,
    record: &mut Record,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<(Stage, Action, Found)>> {
    let mut stale = false; // an earlier stage of the transfer chain wrote new outputs now
    let mut did = Vec::new();
    for (stage, mut action, _, found) in plan {
        if stale
            && matches!(stage, Stage::TrainHead | Stage::Finetune)
            && matches!(action, Action::Reuse | Action::Continue)
        {
            action = Action::Rerun;
        }
        if matches!(action, Action::Skip | Action::Reuse) {
            did.push((stage, action, found));
            continue;
        }
        on_event(Event::StageStart { stage, action });
        let clock = Clock::start(record, stage, action);
        clock.mark(record, &cfg.run, Status::Running, None)?;
        let (device, wrote) = match stage {
            Stage::Scratch => run_scratch(cfg, prep, action, &clock, record, on_event)?,
            Stage::Extract => run_extract(cfg, prep, &clock, record, on_event)?,
            Stage::TrainHead => run_head(cfg, action, on_event)?,
            Stage::Finetune => run_finetune(cfg, prep, action, &clock, record, on_event)?,
        };
        stale |= wrote;
        let seconds = clock.mark(record, &cfg.run, Status::Done, device)?;
        on_event(Event::StageDone { stage, seconds });
        did.push((stage, action, Found::Done));
    }
    Ok(did)
}

/// Stage 1; continues from the checkpoint when there is one.
fn run_scratch(
    cfg: &TutorialConfig,
    prep: &Prepared,
    action: Action,
    clock: &Clock,
    record: &mut Record,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Option<String>, bool)> {
    let resume = action == Action::Continue
        && scratch::ScratchPaths::new(&cfg.run)
            .stage
            .checkpoint
            .is_file();
    let report = stage1::run(cfg, prep, resume, action != Action::Run, &mut |ev| {
        if let scratch::Event::Epoch { .. } = ev {
            let _ = clock.mark(record, &cfg.run, Status::Running, None);
        }
        on_event(Event::Scratch(ev));
    })?;
    Ok((Some(report.device), false))
}

/// Stage 2a; returns the device and whether any split was (re)written.
fn run_extract(
    cfg: &TutorialConfig,
    prep: &Prepared,
    clock: &Clock,
    record: &mut Record,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Option<String>, bool)> {
    let ecfg = check::extract_config(cfg, prep);
    let summary = accel::engine::extract(&ecfg, &mut |ev| {
        if let features::extract::Event::SplitDone { .. } = ev {
            // Keeps the time of finished splits if the next one is interrupted.
            let _ = clock.mark(record, &cfg.run, Status::Running, None);
        }
        on_event(Event::Extract(ev));
    })?;
    let wrote = summary.splits.iter().any(|s| !s.up_to_date);
    Ok((wrote.then_some(summary.device), wrote))
}

/// Stage 2b; an interrupted or stale head is trained again from the start.
fn run_head(
    cfg: &TutorialConfig,
    action: Action,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Option<String>, bool)> {
    let opts = TrainHeadOptions {
        run: cfg.run.clone(),
        config: check::head_config(cfg),
        val_split: None,
        force: action != Action::Run,
    };
    train_head(&opts, &mut |p| on_event(Event::Head(p)))?;
    Ok((Some("cpu".into()), true))
}

/// Stage 3; continues from the checkpoint when there is one.
fn run_finetune(
    cfg: &TutorialConfig,
    prep: &Prepared,
    action: Action,
    clock: &Clock,
    record: &mut Record,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Option<String>, bool)> {
    let paths = finetune::FinetunePaths::new(&cfg.run);
    let resume = action == Action::Continue && paths.stage.checkpoint.is_file();
    let mut fcfg = check::finetune_config(cfg, prep);
    if resume {
        // The checkpoint's model name (same sha256, checked) and split tensor: resuming needs
        // the settings exactly as they were written.
        let (s, _) = finetune::checkpoint::read_settings(&paths.stage.checkpoint)?;
        fcfg.model = Some(s.model);
        fcfg.split_at = cfg.split_at.clone().or(Some(s.split_at));
    }
    fcfg.resume = resume;
    fcfg.force = !resume && action != Action::Run;
    let mut device: Option<String> = None;
    let report = finetune::finetune(&fcfg, &mut |ev| {
        if let finetune::Event::Epoch { .. } = ev {
            let _ = clock.mark(record, &cfg.run, Status::Running, device.clone());
        }
        on_event(Event::Finetune(ev));
    })?;
    device.get_or_insert(if report.device == report.train_device {
        report.device.clone()
    } else {
        format!(
            "{} (frozen part), {} (training)",
            report.device, report.train_device
        )
    });
    if !report.finished {
        return Err(Error::Invalid(format!(
            "fine-tuning stopped after epoch {} of {}; run the tutorial again to continue",
            report.epochs_done, report.epochs_requested
        )));
    }
    Ok((device, true))
}
