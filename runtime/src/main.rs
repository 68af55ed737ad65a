//! `hybrid-runtime`: the data plane of hybrid-operator (serve, index, train, eval).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hybrid-runtime",
    version,
    about = "Hybrid RAG + LoRA runtime: serve, index, train, eval"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a new index revision from a corpus (reusing unchanged documents' vectors).
    Index(Box<hybrid_runtime::index::IndexArgs>),
    /// Fine-tune a LoRA adapter on JSONL chat examples and publish it as a PEFT revision.
    Train(Box<hybrid_runtime::train::cli::TrainArgs>),
    /// Answer a QA set with a model (+ adapter); report accuracy and format compliance.
    Eval(Box<hybrid_runtime::eval::cli::EvalArgs>),
    /// Search an index revision and print the passages with their citations (debugging, demo).
    Retrieve(hybrid_runtime::retrieve::RetrieveArgs),
    /// Serve chat completions (OpenAI API) with per-request adapters and cited retrieval.
    Serve(Box<hybrid_runtime::serve::ServeArgs>),
    /// List the documents of directories and S3 prefixes (path, size, mtime or ETag; no
    /// contents) and print a digest of the listing: the operator's change check for PVC and S3.
    Scan(hybrid_runtime::scan::ScanArgs),
    /// Delete stored revisions (index archives, adapter directories; files, directories or
    /// s3:// keys) that the operator no longer retains. Idempotent.
    Prune(hybrid_runtime::prune::PruneArgs),
    /// Check that a trainer image's output is a PEFT LoRA adapter serving can load; write the
    /// training Job's result (TrainResult, or TrainError naming what is wrong).
    VerifyAdapter(hybrid_runtime::train::verify::VerifyAdapterArgs),
}

fn main() -> anyhow::Result<()> {
    // Two rustls crypto providers are linked (kube: ring; reqwest, object_store: aws-lc-rs); pick
    // one for every client before any TLS connection. Err means one is installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Jobs' logs are read without RUST_LOG set, so progress (info) shows by default.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Pods' logs end up in termination messages and condition text: colour only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Index(args) => std::process::exit(hybrid_runtime::index::run(*args)),
        Command::Train(args) => std::process::exit(hybrid_runtime::train::cli::main(&args)),
        Command::Eval(args) => std::process::exit(hybrid_runtime::eval::cli::main(&args)),
        Command::Retrieve(args) => std::process::exit(hybrid_runtime::retrieve::main(&args)),
        Command::Serve(args) => std::process::exit(hybrid_runtime::serve::main(&args)),
        Command::Scan(args) => std::process::exit(hybrid_runtime::scan::run(&args)),
        Command::Prune(args) => std::process::exit(hybrid_runtime::prune::run(&args)),
        Command::VerifyAdapter(args) => {
            std::process::exit(hybrid_runtime::train::verify::main(&args))
        }
    }
}
