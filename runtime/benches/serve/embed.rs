//! Embedding throughput of all-MiniLM-L6-v2 on ~128-token chunks of the example corpora, in
//! index-sized batches. `scripts/bench/st_baseline.py` embeds the same texts with the same batch size
//! through sentence-transformers and checks that the vectors agree.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hybrid_runtime::chunk::{ChunkStrategy, ChunkingConfig, chunk_text};
use hybrid_runtime::embed::Embedder;
use hybrid_runtime::index::DEFAULT_BATCH_SIZE;
use serde_json::json;

use crate::common::{self, median};
use crate::index_support;

const PASSES: usize = 3;
/// Embeddings written for the baseline's agreement check.
const CHECKED: usize = 16;

pub fn corpus_files() -> Vec<PathBuf> {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files = Vec::new();
    for example in std::fs::read_dir(&examples).expect("examples/").flatten() {
        let corpus = example.path().join("corpus");
        if let Ok(entries) = std::fs::read_dir(&corpus) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    files.sort();
    files
}

pub fn run(out: &Path) {
    let dir = index_support::embedder_dir();
    let embedder = Embedder::load(&dir).expect("embedder");
    let config = ChunkingConfig {
        strategy: ChunkStrategy::Markdown,
        size_tokens: 128,
        overlap_tokens: 16,
    };
    let mut texts = Vec::new();
    for file in corpus_files() {
        let text = std::fs::read_to_string(&file).expect("corpus file");
        texts.extend(
            chunk_text(&text, &config, &embedder)
                .expect("chunking")
                .into_iter()
                .map(|c| c.text),
        );
    }
    // Similar lengths batched together, as `index` does (and as sentence-transformers' `encode`
    // does internally), so neither side pays for padding the other avoids.
    let mut sized: Vec<(usize, String)> = texts
        .into_iter()
        .map(|t| (embedder.count_tokens(&t).expect("count"), t))
        .collect();
    sized.sort_by_key(|(n, _)| *n);
    let tokens: usize = sized.iter().map(|(n, _)| n).sum();
    let texts: Vec<String> = sized.into_iter().map(|(_, t)| t).collect();
    println!(
        "\n== embed: all-MiniLM-L6-v2, {} chunks of the example corpora (mean {:.0} tokens), batch {DEFAULT_BATCH_SIZE}, {PASSES} passes",
        texts.len(),
        tokens as f64 / texts.len() as f64
    );
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    embedder.embed(&refs[..4]).expect("warm-up");
    let mut rates = Vec::new();
    let mut first = Vec::new();
    for _ in 0..PASSES {
        let start = Instant::now();
        let mut vectors = Vec::with_capacity(refs.len());
        for batch in refs.chunks(DEFAULT_BATCH_SIZE) {
            vectors.extend(embedder.embed(batch).expect("embed"));
        }
        rates.push(refs.len() as f64 / start.elapsed().as_secs_f64());
        first = vectors.into_iter().take(CHECKED).collect();
    }
    let rate = median(&rates);
    println!("ours: {rate:.1} chunks/s (passes: {rates:.1?})");
    common::write_json(
        &out.join("chunks.json"),
        &json!({ "texts": texts, "batch_size": DEFAULT_BATCH_SIZE, "passes": PASSES,
                 "embedder_dir": dir, "first_vectors": first }),
    );
    common::write_json(
        &out.join("embed.json"),
        &json!({ "chunks": texts.len(), "mean_tokens": tokens as f64 / texts.len() as f64,
                 "chunks_per_s": rate, "passes": rates }),
    );
}
