//! `bottleneck finetune` (placeholder; being written).

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {}

pub fn run(_args: &FinetuneArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
