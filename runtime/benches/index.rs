//! Indexing benchmark: cold throughput, an unchanged re-run, and an incremental run with 1% of
//! the documents edited. Prints numbers; never fails on time.
//!
//!   cargo bench -p hybrid-runtime --bench index -- [DOCS] [PARTS_PER_DOC]
//!
//! Needs the embedding model (HYBRID_EMBEDDER_DIR or scripts/fetch-models.sh's cache).

#[path = "../tests/index_support/mod.rs"]
mod index_support;

use std::time::Instant;

use hybrid_runtime::chunk::{ChunkStrategy, ChunkingConfig};
use hybrid_runtime::index::progress::Progress;
use hybrid_runtime::index::{DEFAULT_BATCH_SIZE, IndexResult, IndexSettings, build_revision};
use hybrid_runtime::source::Source;
use hybrid_runtime::store::EdgeStoreOptions;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let docs = args.first().copied().unwrap_or(200);
    let parts = args.get(1).copied().unwrap_or(4);
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("mkdir");
    index_support::write_large_corpus(&corpus, docs, parts);
    let settings = |previous: Option<&str>| IndexSettings {
        sources: vec![Source::Local(corpus.clone())],
        chunking: ChunkingConfig {
            strategy: ChunkStrategy::Markdown,
            size_tokens: 128,
            overlap_tokens: 16,
        },
        embedder: index_support::embedder_dir().display().to_string(),
        output: tmp.path().join("out").display().to_string(),
        previous: previous.map(str::to_string),
        batch_size: DEFAULT_BATCH_SIZE,
        progress_path: None,
        work_dir: tmp.path().join("work"),
        store: EdgeStoreOptions::default(),
        device: Default::default(),
    };
    let timed = |s: &IndexSettings| -> (IndexResult, f64) {
        let start = Instant::now();
        let result = build_revision(s, &mut Progress::new(None)).expect("index run");
        (result, start.elapsed().as_secs_f64())
    };

    let (cold, cold_s) = timed(&settings(None));
    println!(
        "cold:        {} docs, {} chunks in {cold_s:.2} s = {:.1} chunks/s (re-embedded {})",
        cold.documents,
        cold.chunks,
        cold.chunks as f64 / cold_s,
        cold.reembedded
    );

    let (same, same_s) = timed(&settings(Some(&cold.location)));
    println!(
        "unchanged:   {same_s:.2} s = {:.1}% of cold; reused {}, re-embedded {}, same revision: {}",
        100.0 * same_s / cold_s,
        same.reused,
        same.reembedded,
        same.revision == cold.revision
    );

    let changed = (docs / 100).max(1);
    for d in 0..changed {
        let path = corpus.join(format!("doc-{:05}.md", d * 100));
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("\n\nAn edited closing paragraph that changes this document.\n");
        std::fs::write(&path, text).expect("write");
    }
    let (inc, inc_s) = timed(&settings(Some(&cold.location)));
    println!(
        "incremental: {changed} of {docs} docs edited: {inc_s:.2} s = {:.1}% of cold; reused {}, re-embedded {}",
        100.0 * inc_s / cold_s,
        inc.reused,
        inc.reembedded
    );
}
