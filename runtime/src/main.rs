//! `hybrid-runtime`: the data plane of hybrid-operator (serve, index, train, eval).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hybrid-runtime", version, about = "Hybrid RAG + LoRA runtime: serve, index, train, eval")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a new index revision from a corpus (not implemented yet).
    Index,
    /// Fine-tune a LoRA adapter (not implemented yet).
    Train,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    match Cli::parse().command {
        Command::Index => anyhow::bail!("`hybrid-runtime index` is not implemented yet"),
        Command::Train => anyhow::bail!("`hybrid-runtime train` is not implemented yet"),
    }
}
