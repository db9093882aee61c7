//! `tug-agent`: the node agent alone, for worker nodes. The same flags and
//! code as `tug agent`, in a binary without the control plane: a third of
//! `tug`'s machine code, so a third of the pages the agent maps (its RSS
//! is mostly those pages; see BENCHMARKS.md, pod startup).

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

/// The same allocator as `tug`'s, for the same reasons.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tugboat's node agent (a kubelet with containerd, runc and CNI): joins a
/// cluster with `--server` and `--token`, as `tug agent` does.
#[derive(Parser)]
#[command(name = "tug-agent", version)]
struct Cli {
    #[command(flatten)]
    args: tug::agent::AgentArgs,
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let kubeconfig_flag = matches.value_source("kubeconfig") == Some(ValueSource::CommandLine);
    tug::agent::init_tracing();
    tug::agent::run(cli.args, kubeconfig_flag)
}
