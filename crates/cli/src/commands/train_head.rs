//! `bottleneck train-head` (owned by its helper; placeholder).

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub struct TrainHeadArgs {}

pub fn run(_args: &TrainHeadArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
