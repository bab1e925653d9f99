//! The command-line grammar: global flags and one subcommand per stage.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::{
    audit, augment_preview, bench, data, evaluate, export, extract, finetune, fit, merge, predict,
    quantize, scratch, serve, train_head, tutorial,
};

/// Strong image classifiers from a few hundred photos per class, by transfer learning from VGG16.
#[derive(Debug, Parser)]
#[command(name = "bottleneck", version, about, long_about = None,
    after_help = "Example:\n  bottleneck extract --data data/ --model vgg16 --run runs/demo\n  bottleneck train-head --run runs/demo")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The parsed command line and which of the subcommand's arguments were given on it (clap
    /// exits with its usage message on a bad one).
    pub fn parse_with_given() -> (Cli, Given) {
        let matches = Cli::command().get_matches();
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let given = Given::of(matches.subcommand().map(|(_, m)| m));
        (cli, given)
    }
}

/// The arguments a user typed (not left to their defaults), by clap id: the field's name, as
/// `--resume` asks about the settings it may take from a checkpoint.
#[derive(Debug, Default)]
pub struct Given(Vec<String>);

impl Given {
    /// The arguments of `matches` that came from the command line.
    pub fn of(matches: Option<&ArgMatches>) -> Given {
        Given(matches.map_or_else(Vec::new, |m| {
            m.ids()
                .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                .map(|id| id.as_str().to_string())
                .collect()
        }))
    }

    /// Whether the argument `id` was given.
    pub fn flag(&self, id: &str) -> bool {
        self.0.iter().any(|g| g == id)
    }
}

/// Flags every subcommand understands.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Print a machine-readable JSON summary on stdout instead of the human one.
    #[arg(long, global = true)]
    pub json: bool,
    /// Only print errors (no progress bars, no summary unless --json).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Your own photos: extract, a calibrated head, then fine-tuning, with a report; resumable.
    Fit(fit::FitArgs),
    /// Run the whole tutorial (scratch, extract, train-head, finetune) and write a report; resumable.
    Tutorial(tutorial::TutorialArgs),
    /// Train the tutorial's small convnet from scratch on augmented images (stage 1).
    Scratch(scratch::ScratchArgs),
    /// Run the frozen VGG16 conv base over every image and cache the features (stage 2a).
    Extract(extract::ExtractArgs),
    /// Join the shard files of a job array (`extract --shard I/N`) into ordinary feature files.
    Merge(merge::MergeArgs),
    /// Train the dense classifier on cached features (stage 2b).
    TrainHead(train_head::TrainHeadArgs),
    /// Fine-tune the top conv block together with the trained head on augmented images (stage 3).
    Finetune(finetune::FinetuneArgs),
    /// Classify images or folders with the best stage of a run (finetune, else head).
    Predict(predict::PredictArgs),
    /// Serve the best stage of a run over HTTP: a JSON API, Prometheus metrics and a drag-and-drop page.
    Serve(serve::ServeArgs),
    /// Find the photos that hurt: likely mislabeled, near-duplicates and leaks, out-of-place photos.
    Audit(audit::AuditArgs),
    /// Accuracy, per-class precision/recall/F1, confusion matrix and the worst mistakes on labelled data.
    Evaluate(evaluate::EvaluateArgs),
    /// Write one self-contained ONNX classifier (image batch in, class probabilities out).
    Export(export::ExportArgs),
    /// Prepare datasets, e.g. the tutorial's Dogs vs Cats layout from the Kaggle archive.
    Data(data::DataArgs),
    /// Write randomly augmented copies of one image and a contact sheet.
    AugmentPreview(augment_preview::AugmentPreviewArgs),
    /// Measure raw ONNX Runtime against the extraction pipeline on the same images.
    Bench(bench::BenchArgs),
    /// Quantize the backbone to int8 with calibration images.
    Quantize(quantize::QuantizeArgs),
}

/// Where the networks run (every command that runs the backbone).
#[derive(Debug, Clone, Args)]
pub struct RuntimeFlags {
    /// cpu, cuda (the whole stage on the GPU through Candle; an error if CUDA cannot start or the
    /// binary was built without `--features cuda`) or auto (CUDA if it starts, else the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: features::runtime::Device,
    #[command(flatten)]
    pub engine: EngineFlag,
    /// ONNX Runtime intra-op threads (default: all physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The engine knob, a diagnostic and test flag (see `accel::engine`).
#[derive(Debug, Clone, Args)]
pub struct EngineFlag {
    /// auto, ort (ONNX Runtime on --device, CPU training) or candle (Candle also on the CPU);
    /// default: BOTTLENECK_ENGINE, else auto.
    #[arg(long, hide = true)]
    pub engine: Option<features::runtime::Engine>,
}

impl EngineFlag {
    /// The engine asked for (`auto` lets `accel::engine::select` read `BOTTLENECK_ENGINE`).
    pub fn get(&self) -> features::runtime::Engine {
        self.engine.unwrap_or(features::runtime::Engine::Auto)
    }
}

impl RuntimeFlags {
    /// The session options these flags describe.
    pub fn options(&self) -> features::runtime::SessionOptions {
        features::runtime::SessionOptions {
            device: self.device,
            threads: self.threads,
        }
    }
}

/// Model downloads (every command that resolves a model name).
#[derive(Debug, Clone, Args)]
pub struct HubFlags {
    /// Never use the network for model downloads (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// A manifest (TOML, as in models/) describing a local .onnx model passed with --model: its
    /// preprocessing, input size, resize rule and the tensor to cut features at.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<std::path::PathBuf>,
}

impl HubFlags {
    /// The hub options: the environment's, offline when asked.
    pub fn options(&self) -> features::manifest::HubOptions {
        let mut hub = features::manifest::HubOptions::from_env();
        hub.offline |= self.offline;
        hub.manifest = self.manifest.clone();
        hub
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    /// Every named choice the command line takes: clap's possible values are exactly the names written
    /// in files and parsed from them (the library crates generate clap's half only with their `clap`
    /// feature, which this crate turns on).
    fn agree<T: ValueEnum + std::fmt::Display + std::str::FromStr + PartialEq + std::fmt::Debug>() {
        for v in T::value_variants() {
            let name = v
                .to_possible_value()
                .expect("no hidden choices")
                .get_name()
                .to_string();
            assert_eq!(name, v.to_string());
            assert!(name.parse::<T>().ok().as_ref() == Some(v), "{name}");
        }
    }

    #[test]
    fn clap_and_the_names_agree_for_every_choice() {
        agree::<features::runtime::Device>();
        agree::<features::runtime::Engine>();
        agree::<features::preprocess::Preprocess>();
        agree::<features::preprocess::Resize>();
        agree::<features::extract::Precision>();
        agree::<features::quantize::ActType>();
        agree::<features::quantize::CalibMethod>();
        agree::<features::augment::preview::PreviewFormat>();
        agree::<features::augment::FillMode>();
        agree::<accel::device::DTypeChoice>();
        agree::<finetune::rows::Precision>();
        agree::<head::recipe::Recipe>();
        agree::<predict::Stage>();
        agree::<train::optim::OptimizerKind>();
        agree::<train::kernels::precision::TrainPrecision>();
        agree::<train::schedule::LrSchedule>();
        agree::<train::metrics::Keep>();
    }
}
