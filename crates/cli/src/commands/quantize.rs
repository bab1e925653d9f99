//! `bottleneck quantize` (placeholder; being written).

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {}

pub fn run(_args: &QuantizeArgs, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
