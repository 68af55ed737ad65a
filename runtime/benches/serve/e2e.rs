//! End-to-end latency of one retrieval-augmented answer, phase by phase, on the finance example
//! index (built in-process with the corpus's own chunking): embed the question, search, build
//! the prompt, prefill (time to first token), decode, with the serve default weight precision. At top-k 4 and 12, to measure how much
//! fewer passages cut the time to first token.
//!
//! The prompt follows examples/finance/hybridmodel.yaml (system prompt, then `Context:` with the
//! passages numbered `[n]`, then `Question:`). `serve` may format passages slightly differently;
//! what matters here is how prefill grows with the number of passages.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hybrid_runtime::chat::{ChatTemplate, Message, Role};
use hybrid_runtime::chunk::{ChunkStrategy, ChunkingConfig};
use hybrid_runtime::embed::Embedder;
use hybrid_runtime::index::progress::Progress;
use hybrid_runtime::index::revision::LoadedRevision;
use hybrid_runtime::index::{DEFAULT_BATCH_SIZE, IndexSettings, build_revision};
use hybrid_runtime::model::Llama;
use hybrid_runtime::serve::config::DEFAULT_GGUF_PRECISION;
use hybrid_runtime::source::Source;
use hybrid_runtime::store::EdgeStoreOptions;
use serde_json::json;

use crate::common::{self, median};
use crate::{index_support, train_support};

const TOP_KS: [usize; 2] = [4, 12];
const NEW_TOKENS: usize = 32;
const SYSTEM: &str = "You are a financial information assistant at a regulated firm. Be factual \
    and brief, never promise returns, state the risks, cite context passages as [n], and end \
    with the standard disclaimer.";
const QUESTIONS: [&str; 3] = [
    "What are the main risks of the Harbourline Balanced Income Fund?",
    "How did Northwind Grid's revenue develop in 2025?",
    "What does the suitability disclosure bulletin require from advisers?",
];

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

pub fn run(out: &Path) {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/finance/corpus");
    let tmp = tempfile::tempdir().expect("tempdir");
    // examples/finance/corpus.yaml: markdown chunks of 256 tokens, 32 overlap.
    let settings = IndexSettings {
        sources: vec![Source::Local(corpus)],
        chunking: ChunkingConfig {
            strategy: ChunkStrategy::Markdown,
            size_tokens: 256,
            overlap_tokens: 32,
        },
        embedder: index_support::embedder_dir().display().to_string(),
        output: tmp.path().join("out").display().to_string(),
        previous: None,
        batch_size: DEFAULT_BATCH_SIZE,
        progress_path: None,
        work_dir: tmp.path().join("work"),
        store: EdgeStoreOptions::default(),
        device: Default::default(),
    };
    let start = Instant::now();
    let index = build_revision(&settings, &mut Progress::new(None)).expect("index finance corpus");
    println!(
        "\n== e2e: finance example index ({} docs, {} chunks, built in {:.1} s), SmolLM2 as {DEFAULT_GGUF_PRECISION} (serve default), {NEW_TOKENS} new tokens",
        index.documents,
        index.chunks,
        start.elapsed().as_secs_f64()
    );
    let revision = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio")
        .block_on(LoadedRevision::open(
            &index.location,
            &tmp.path().join("scratch"),
        ))
        .expect("open revision");
    let embedder = Embedder::load(&index_support::embedder_dir()).expect("embedder");
    let gguf = train_support::smollm2_gguf();
    let tok = hybrid_runtime::tokenizer::from_gguf(&gguf).expect("tokenizer");
    let model = Llama::from_gguf(
        &gguf,
        hybrid_runtime::serve::config::base_weights(DEFAULT_GGUF_PRECISION),
        &candle_core::Device::Cpu,
    )
    .expect("model");
    common::generate(&model, &[1, 2, 3], 2);
    embedder.embed(&["warm-up"]).expect("warm-up");

    let mut rows = Vec::new();
    for top_k in TOP_KS {
        let mut phases: Vec<[f64; 5]> = Vec::new();
        let mut prompt_tokens = Vec::new();
        for question in QUESTIONS {
            let t = Instant::now();
            let query = embedder.embed(&[question]).expect("embed query");
            let embed_ms = ms(t);
            let t = Instant::now();
            let hits = revision.search(&query[0], top_k).expect("search");
            let retrieve_ms = ms(t);
            let t = Instant::now();
            let context = hits
                .iter()
                .enumerate()
                .map(|(i, h)| format!("[{}] {}", i + 1, h.payload.text.trim()))
                .collect::<Vec<_>>()
                .join("\n\n");
            let prompt = ChatTemplate::default().render_prompt(&[
                Message {
                    role: Role::System,
                    content: SYSTEM.into(),
                },
                Message {
                    role: Role::User,
                    content: format!("Context:\n{context}\n\nQuestion: {question}"),
                },
            ]);
            let ids = common::encode(&tok, &prompt);
            let prompt_ms = ms(t);
            let g = common::generate(&model, &ids, NEW_TOKENS);
            prompt_tokens.push(ids.len() as f64);
            phases.push([
                embed_ms,
                retrieve_ms,
                prompt_ms,
                g.prefill_s * 1e3,
                g.decode_s * 1e3,
            ]);
        }
        let col = |i: usize| median(&phases.iter().map(|p| p[i]).collect::<Vec<_>>());
        let (embed, retrieve, prompt, prefill, decode) = (col(0), col(1), col(2), col(3), col(4));
        let ttft = embed + retrieve + prompt + prefill;
        println!(
            "top-k {top_k:>2}: prompt {:.0} tokens | embed {embed:.1} ms, retrieve {retrieve:.2} ms, prompt {prompt:.1} ms, prefill {prefill:.0} ms → first token {ttft:.0} ms | decode {} tokens {decode:.0} ms | total {:.0} ms",
            median(&prompt_tokens),
            NEW_TOKENS - 1,
            ttft + decode
        );
        rows.push(json!({
            "top_k": top_k, "prompt_tokens": median(&prompt_tokens), "embed_ms": embed,
            "retrieve_ms": retrieve, "prompt_ms": prompt, "prefill_ms": prefill,
            "ttft_ms": ttft, "decode_ms": decode, "decode_tokens": NEW_TOKENS - 1,
            "total_ms": ttft + decode,
        }));
    }
    if let [k4, k12] = rows.as_slice() {
        let r = |k: &str| k12[k].as_f64().unwrap_or(f64::NAN) / k4[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "top-k 12 vs 4: {:.1}× the prompt tokens, {:.1}× the prefill, {:.1}× the time to first token",
            r("prompt_tokens"),
            r("prefill_ms"),
            r("ttft_ms")
        );
    }
    common::write_json(
        &out.join("e2e.json"),
        &json!({ "chunks": index.chunks, "questions": QUESTIONS.len(),
                 "precision": DEFAULT_GGUF_PRECISION.as_str(), "rows": rows }),
    );
}
