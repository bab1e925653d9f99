//! `bottleneck tutorial`: parses the options, calls `tutorial::run`, shows each stage's progress
//! and prints the summary (human or `--json`).

use std::path::PathBuf;

use features::extract::Precision;
use features::preprocess::Preprocess;
use tutorial::{Action, Event, Stage, Summary, TutorialConfig};

use crate::args::{Global, HubFlags, RuntimeFlags};
use crate::progress;

/// Run the whole tutorial (scratch, extract, train-head, finetune) and write RUN/report.md and
/// RUN/report.html; run it again to continue an interrupted run.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bottleneck tutorial --data ../shared/data/dogs_vs_cats --model ../shared/models/vgg16_keras_notop.onnx \
--preprocess caffe --run runs/tutorial\n  bottleneck tutorial --data ../shared/data/dogs_vs_cats --model vgg16 --run runs/keras2016 --keras2016\n  \
bottleneck tutorial --data ../shared/data/dogs_vs_cats --model vgg16 --run runs/smoke --quick\n\n\
Default settings are bottleneck's recipe (see BENCHMARKS.md): stage 1 trains the tutorial's convnet 100 epochs with \
the 2016 shear (11.5 degrees), shifts of 0.1 and a cosine learning rate; stages 2-3 run at 224 px; fine-tuning uses SGD lr 1e-5, momentum 0.9, \
10 epochs over 5 cached augmented draws, with an int8 frozen part on the CPU. --keras2016 runs the tutorial's own settings."
)]
pub struct TutorialArgs {
    /// Data folder: DIR/train/<class>/*.jpg and DIR/validation/<class>/*.jpg.
    #[arg(long)]
    pub data: PathBuf,
    /// A model name from models/ (e.g. vgg16) or a local .onnx file.
    #[arg(long, default_value = "vgg16")]
    pub model: String,
    /// Preprocessing: caffe, torch or unit (default: the model's manifest).
    #[arg(long)]
    pub preprocess: Option<Preprocess>,
    /// Run folder: stage outputs, RUN/tutorial.json (stage times), RUN/report.md and RUN/report.html.
    #[arg(long)]
    pub run: PathBuf,
    /// Smoke test: 16 images per class and split, 2 scratch / 5 head / 2 fine-tuning epochs, --aug-cache 1.
    #[arg(long)]
    pub quick: bool,
    /// Stages to run, comma-separated: scratch, extract, train-head, finetune [default: all].
    #[arg(long, value_name = "LIST")]
    pub stages: Option<String>,
    /// Use only the first N images of each class of each split [default: all; 16 with --quick].
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// The 2016 tutorial's own settings (150 px everywhere, 50 epochs per stage, stage 1 with its
    /// augmentation, fine-tuning lr 1e-4 on an FP32 frozen part, --aug-cache 10) instead of bottleneck's recipe.
    #[arg(long)]
    pub keras2016: bool,
    /// Side of the square input of the VGG16 stages (2 and 3) in pixels [default: 224; 150 with --keras2016].
    #[arg(long)]
    pub size: Option<u32>,
    /// Side of stage 1's input in pixels.
    #[arg(long, default_value_t = 150)]
    pub scratch_size: u32,
    /// Epochs of stage 1 (scratch) [default: 100; 50 with --keras2016; 2 with --quick].
    #[arg(long)]
    pub scratch_epochs: Option<usize>,
    /// Epochs of stage 2b (train-head) [default: 50; 5 with --quick].
    #[arg(long)]
    pub head_epochs: Option<usize>,
    /// Epochs of stage 3 (finetune) [default: 10; 50 with --keras2016; 2 with --quick].
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// SGD learning rate of fine-tuning [default: 1e-5; 1e-4 with --keras2016].
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// Augmented draws per training image cached for fine-tuning; 0 augments afresh every epoch [default: 5; 10 with --keras2016; 1 with --quick].
    #[arg(long, value_name = "K")]
    pub aug_cache: Option<usize>,
    /// Input tensor of the block to fine-tune [default: the model manifest's, block4_pool for VGG16].
    #[arg(long, value_name = "TENSOR")]
    pub split_at: Option<String>,
    /// Backbone precision of extraction: fp32 or int8.
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// Precision of fine-tuning's frozen part and of its model.onnx: fp32 or int8 [default: int8 on
    /// --device cpu (3-4x faster, same accuracy), else fp32; fp32 with --keras2016].
    #[arg(long)]
    pub finetune_precision: Option<Precision>,
    /// Precision of training products (stage 1 and fine-tuning's block): auto (bf16 products with FP32
    /// sums on CPUs with AVX512-BF16, else fp32), fp32 or bf16.
    #[arg(long, default_value = "auto")]
    pub train_precision: train::kernels::TrainPrecision,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// Replace outputs in RUN made from other inputs or settings (matching stages are still reused).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub hub: HubFlags,
}

impl TutorialArgs {
    /// The library configuration: the tutorial's settings (or `--quick`'s), then the flags given.
    pub fn config(&self) -> anyhow::Result<TutorialConfig> {
        let mut cfg = TutorialConfig::new(&self.data, &self.model, &self.run);
        if self.keras2016 {
            cfg = cfg.keras2016();
        }
        if self.quick {
            cfg = cfg.quick();
        }
        if let Some(s) = &self.stages {
            cfg.stages = Stage::parse_list(s)?;
        }
        cfg.preprocess = self.preprocess;
        cfg.limit = self.limit.or(cfg.limit);
        cfg.size = self.size.or(cfg.size);
        cfg.scratch_size = self.scratch_size;
        cfg.scratch_epochs = self.scratch_epochs.unwrap_or(cfg.scratch_epochs);
        cfg.head_epochs = self.head_epochs.unwrap_or(cfg.head_epochs);
        cfg.finetune_epochs = self.finetune_epochs.unwrap_or(cfg.finetune_epochs);
        cfg.finetune.sgd.learning_rate = self.finetune_lr.unwrap_or(cfg.finetune.sgd.learning_rate);
        cfg.finetune.aug_cache = self.aug_cache.unwrap_or(cfg.finetune.aug_cache);
        cfg.split_at = self.split_at.clone();
        cfg.precision = self.precision;
        cfg.set_device(self.runtime.device, self.finetune_precision);
        cfg.engine = self.runtime.engine.get();
        cfg.train_precision = self.train_precision;
        cfg.threads = self.runtime.threads;
        cfg.force = self.force;
        cfg.hub = self.hub.options();
        Ok(cfg)
    }
}

pub fn run(args: &TutorialArgs, global: &Global) -> anyhow::Result<()> {
    run_config(&args.config()?, global)
}

/// Runs `cfg`'s stages, showing each one's progress, then prints the summary.
pub fn run_config(cfg: &TutorialConfig, global: &Global) -> anyhow::Result<()> {
    let mut out = progress::Phases::new(global);
    let summary = tutorial::run(cfg, &mut |ev| match ev {
        Event::Plan { stage, action, why } => out.say(format!(
            "stage {:>2} {:<10} {:<8} {why}",
            stage.number(),
            stage.name(),
            action.verb()
        )),
        Event::StageStart { stage, action } => out.say(format!(
            "── stage {} ({}): {} {}",
            stage.number(),
            stage.name(),
            if action == Action::Continue {
                "continuing"
            } else {
                "running"
            },
            stage.title()
        )),
        Event::StageDone { stage, seconds } => {
            out.end();
            out.say(format!(
                "── stage {} ({}) done in {}",
                stage.number(),
                stage.name(),
                tutorial::report::duration(seconds)
            ))
        }
        Event::Info(s) => out.say(s),
        Event::Extract(e) => match e {
            features::extract::Event::Note(note) => out.say(format!("  {note}")),
            features::extract::Event::Ready {
                device,
                model,
                preprocess,
                output,
            } => out.say(format!(
                "  model {model} → {output}, {} preprocessing, on {device}",
                preprocess.name()
            )),
            features::extract::Event::SplitStart { split, total } => out.start(split, total, "img"),
            features::extract::Event::Progress { done, .. } => out.set(done),
            features::extract::Event::UpToDate { split, rows } => {
                out.say(format!("  {split}: features up to date ({rows} rows)"))
            }
            features::extract::Event::Skipped {
                split,
                file,
                reason,
            } => out.say(format!("  {split}: skipped {file}: {reason}")),
            features::extract::Event::SplitDone {
                split,
                rows,
                seconds,
            } => {
                out.end();
                out.say(format!("  {split}: {rows} rows in {seconds:.1} s"));
            }
        },
        Event::Head(e) | Event::Finetune(e) => out.stage_event(e, "  "),
        Event::Scratch(e) => out.stage_event(e, "  "),
        Event::Audit(e) => out.stage_event(e, "  "),
    });
    out.end();
    let summary = summary?;
    progress::summary(global, &summary, || {
        print_summary(&summary);
        Ok(())
    })
}

fn print_summary(s: &Summary) {
    for r in &s.stages {
        let acc = r
            .val_accuracy
            .map_or("—".to_string(), |a| format!("val accuracy {a:.4}"));
        let reference = match (r.tutorial, r.target) {
            (Some(t), Some(g)) => format!(" (tutorial {t:.2}, target {g:.3})"),
            _ => String::new(),
        };
        let time = r
            .seconds
            .map_or("time not recorded".to_string(), tutorial::report::duration);
        println!(
            "stage {:>2} {:<10} {:<10} {acc}{reference}, {time}",
            r.number,
            r.stage.name(),
            r.state
        );
    }
    if let Some(a) = &s.audit {
        println!(
            "audit: {} likely mislabeled, {} near-duplicate pairs ({} leaks), {} out of place: see {}",
            a.mislabeled,
            a.duplicates,
            a.leaks,
            a.outliers,
            a.csv.display()
        );
    }
    println!(
        "wrote {} and {}",
        s.report_md.display(),
        s.report_html.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: TutorialArgs,
    }

    fn config(args: &[&str]) -> TutorialConfig {
        Harness::try_parse_from(
            ["x", "--data", "d", "--run", "r"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .expect("arguments parse")
        .args
        .config()
        .expect("a configuration")
    }

    #[test]
    fn defaults_are_the_recipe_keras2016_the_tutorials_and_quick_flags_can_be_overridden() {
        let full = config(&[]);
        assert_eq!(
            (full.scratch_epochs, full.head_epochs, full.finetune_epochs),
            (100, 50, 10)
        );
        assert_eq!(
            (
                full.limit,
                full.finetune.aug_cache,
                full.size,
                full.scratch_size
            ),
            (None, 5, None, 150)
        );
        assert_eq!(full.finetune.sgd.learning_rate, 1e-5);
        assert_eq!(
            (full.precision, full.finetune_precision),
            (Precision::Fp32, None)
        );
        let vgg = features::manifest::builtin()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "vgg16-keras");
        let lite = features::manifest::builtin()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "efficientnet-lite0");
        assert_eq!(full.finetune_precision_for(vgg.as_ref()), Precision::Int8);
        assert_eq!(full.finetune_precision_for(lite.as_ref()), Precision::Fp32);
        assert_eq!(full.finetune_precision_for(None), Precision::Int8);
        assert!(full.scratch_recipe);
        assert_eq!(full.stages, Stage::ALL.to_vec());
        let gpu = config(&["--device", "cuda"]);
        assert_eq!(gpu.finetune_precision_for(vgg.as_ref()), Precision::Fp32);
        let asked = config(&["--finetune-precision", "int8"]);
        assert_eq!(asked.finetune_precision_for(lite.as_ref()), Precision::Int8);

        let k = config(&["--keras2016"]);
        assert_eq!(
            (k.scratch_epochs, k.head_epochs, k.finetune_epochs),
            (50, 50, 50)
        );
        assert_eq!(
            (k.finetune.aug_cache, k.size, k.finetune.sgd.learning_rate),
            (10, Some(150), 1e-4)
        );
        assert_eq!(k.finetune_precision_for(vgg.as_ref()), Precision::Fp32);
        assert!(!k.scratch_recipe);
        let s = config(&["--keras2016", "--size", "224", "--finetune-lr", "3e-5"]);
        assert_eq!((s.size, s.finetune.sgd.learning_rate), (Some(224), 3e-5));

        let quick = config(&["--quick", "--head-epochs", "7", "--stages", "extract,head"]);
        assert_eq!(
            (
                quick.scratch_epochs,
                quick.head_epochs,
                quick.finetune_epochs
            ),
            (2, 7, 2)
        );
        assert_eq!((quick.limit, quick.finetune.aug_cache), (Some(16), 1));
        assert_eq!(quick.stages, vec![Stage::Extract, Stage::TrainHead]);
        let limited = config(&["--quick", "--limit", "40", "--aug-cache", "3"]);
        assert_eq!((limited.limit, limited.finetune.aug_cache), (Some(40), 3));
    }
}
