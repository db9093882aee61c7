//! `tug bench ...`: benchmarks that print a table.

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(clap::Subcommand)]
pub enum Which {
    /// API server throughput and latency on both store backends.
    Api(ApiBenchArgs),
}

#[derive(clap::Args)]
pub struct ApiBenchArgs {}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Api(_) => anyhow::bail!("not written yet"),
    }
}
