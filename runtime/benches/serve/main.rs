//! Serving benchmarks (BENCHMARKS.md, "Serving"): generation, weight precision, embedding,
//! retrieval and the end-to-end latency of one retrieval-augmented answer. Prints numbers and
//! writes them as JSON for `scripts/bench-serve.sh`, which puts them next to the llama.cpp and
//! sentence-transformers baselines. Never fails on time.
//!
//!   cargo bench -p hybrid-runtime --bench serve -- [generate|precision|embed|retrieval|e2e]...
//!
//! With no section named, all run. `BENCH_OUT` (default `target/bench-serve`) receives the JSON
//! files and the inputs the baselines replay (prompt token ids, chunk texts). Models come from
//! `scripts/fetch-models.sh`'s cache or HYBRID_LLM_GGUF / HYBRID_EMBEDDER_DIR.

#[path = "../../tests/index_support/mod.rs"]
mod index_support;
#[path = "../../tests/train_support/mod.rs"]
mod train_support;

mod common;
mod e2e;
mod embed;
mod generate;
mod precision;
mod retrieval;

const SECTIONS: [&str; 5] = ["generate", "precision", "embed", "retrieval", "e2e"];

fn main() {
    // `cargo bench` passes `--bench`; anything else not a section is a mistake worth naming.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [first, mode] = args.as_slice()
        && first == precision::CHILD_ARG
    {
        precision::child(mode);
        return;
    }
    for a in &args {
        assert!(
            SECTIONS.contains(&a.as_str()),
            "unknown section `{a}`; expected one of {SECTIONS:?}"
        );
    }
    let run = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let out = common::out_dir();
    println!("threads: {}", common::threads());
    if run("generate") {
        generate::run(&out);
    }
    if run("precision") {
        precision::run(&out);
    }
    if run("embed") {
        embed::run(&out);
    }
    if run("retrieval") {
        retrieval::run(&out);
    }
    if run("e2e") {
        e2e::run(&out);
    }
}
