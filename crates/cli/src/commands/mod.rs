//! Dispatch from a parsed command line to the library call of each subcommand.

pub mod audit;
pub mod augment_preview;
pub mod bench;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod extract;
pub mod finetune;
pub mod fit;
pub mod merge;
pub mod predict;
pub mod quantize;
pub mod scratch;
pub mod serve;
pub mod train_head;
pub mod tutorial;

use crate::args::{Cli, Command, Given};

/// Runs the subcommand the user asked for (`given`: the subcommand's arguments typed, not
/// defaulted).
pub fn run(cli: Cli, given: &Given) -> anyhow::Result<()> {
    match cli.command {
        Command::Extract(a) => extract::run(&a, &cli.global),
        Command::TrainHead(a) => train_head::run(&a, &cli.global),
        Command::Finetune(a) => finetune::run(&a, given, &cli.global),
        Command::AugmentPreview(a) => augment_preview::run(&a, &cli.global),
        Command::Bench(a) => bench::run(&a, &cli.global),
        Command::Quantize(a) => quantize::run(&a, &cli.global),
        Command::Scratch(a) => scratch::run(&a, &cli.global),
        Command::Predict(a) => predict::run(&a, &cli.global),
        Command::Evaluate(a) => evaluate::run(&a, &cli.global),
        Command::Export(a) => export::run(&a, &cli.global),
        Command::Data(a) => data::run(&a, &cli.global),
        Command::Tutorial(a) => tutorial::run(&a, &cli.global),
        Command::Fit(a) => fit::run(&a, &cli.global),
        Command::Merge(a) => merge::run(&a, &cli.global),
        Command::Audit(a) => audit::run(&a, &cli.global),
        Command::Serve(a) => serve::run(&a, &cli.global),
    }
}
