//! `bottleneck evaluate`: the run's classifier on a labelled split; prints accuracy, per-class
//! precision/recall/F1, the confusion matrix and the worst mistakes, and writes
//! RUN/evaluate/<split>/{evaluation.json, worst.png}.

use std::path::PathBuf;

use anyhow::Context;
use predict::evaluate::{evaluate, EvaluateOptions, Event, DEFAULT_WORST};

use crate::args::Global;
use crate::commands::predict::{ClassifierFlags, SessionFlags};
use crate::progress;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  bottleneck evaluate --run runs/dvc --data ../shared/data/dogs_vs_cats --split validation"
)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub classifier: ClassifierFlags,
    /// Labelled data: DIR/<split>/<class>/*.jpg or DIR/<class>/*.jpg.
    #[arg(long)]
    pub data: PathBuf,
    /// Split to evaluate [default: validation, or the only split].
    #[arg(long)]
    pub split: Option<String>,
    /// How many of the most confidently wrong images to list and draw.
    #[arg(long, default_value_t = DEFAULT_WORST, value_name = "N")]
    pub worst: usize,
    /// Replace an existing RUN/evaluate/<split>.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub session: SessionFlags,
}

pub fn run(args: &EvaluateArgs, global: &Global) -> anyhow::Result<()> {
    let opts = EvaluateOptions {
        run: args.classifier.run.clone(),
        data: args.data.clone(),
        split: args.split.clone(),
        worst: args.worst,
        force: args.force,
        batch: args.session.batch,
        session: args.session.options(),
        engine: args.session.runtime.engine.get(),
        load: args.classifier.load_options(),
    };
    let mut bar = None;
    let eval = evaluate(&opts, &mut |ev| match ev {
        Event::Ready {
            classifier,
            device,
            note,
            split,
            total,
        } => {
            if let Some(n) = note {
                progress::note(global, n);
            }
            progress::note(global, format!("{} on {device}", classifier.describe()));
            bar = Some(progress::bar(global, total as u64, split, "img"));
        }
        Event::Progress { done, .. } => {
            if let Some(b) = &bar {
                b.set_position(done as u64);
            }
        }
        Event::Skipped { file, reason } => {
            let msg = format!("skipped {file}: {reason}");
            match &bar {
                Some(b) if !global.quiet && !global.json => b.println(msg),
                _ => progress::note(global, msg),
            }
        }
    })
    .with_context(|| {
        format!(
            "evaluating {} on {}",
            args.classifier.run.display(),
            args.data.display()
        )
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    progress::summary(global, &eval, || {
        let s = &eval.scores;
        println!(
            "{} split '{}': {} images ({} skipped), stage {}, {:.1} img/s",
            eval.data.display(),
            eval.split,
            s.images,
            eval.skipped.len(),
            eval.classifier.stage.name(),
            eval.images_per_second
        );
        println!(
            "accuracy {:.4} ({}/{}), log loss {:.4}, calibration error (ECE) {:.4}, macro F1 {:.4}",
            s.accuracy, s.correct, s.images, s.log_loss, s.ece, s.macro_f1
        );
        println!(
            "{:>16}  {:>9}  {:>6}  {:>6}  {:>7}",
            "class", "precision", "recall", "F1", "support"
        );
        for c in &s.per_class {
            println!(
                "{:>16}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
                c.class, c.precision, c.recall, c.f1, c.support
            );
        }
        print!("{}", s.confusion.render());
        if !s.worst.is_empty() {
            println!("most confidently wrong:");
            for m in &s.worst {
                println!(
                    "  {:.4} {} (true {}, p={:.4})  {}",
                    m.probability,
                    m.predicted,
                    m.truth,
                    m.true_probability,
                    m.path.display()
                );
            }
        }
        for k in &eval.skipped {
            println!("skipped {}: {}", k.file, k.reason);
        }
        println!(
            "wrote {} and {}",
            eval.paths.json.display(),
            eval.paths.sheet.display()
        );
        Ok(())
    })
}
