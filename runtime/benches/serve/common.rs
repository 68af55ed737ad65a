//! What the sections share: output folder, timing statistics, memory readings, greedy decoding.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use hybrid_runtime::model::{KvCache, Llama};

pub fn out_dir() -> PathBuf {
    let dir = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-serve"));
    std::fs::create_dir_all(&dir).expect("create BENCH_OUT");
    dir
}

/// Threads candle's CPU kernels use (rayon's pool: RAYON_NUM_THREADS, else every core).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

pub fn write_json(path: &std::path::Path, value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).expect("json");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Resident and peak resident memory of this process, MiB (Linux /proc).
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system, all threads) this process has used, in seconds, from
/// /proc/self/stat. Under a loaded machine, wall time measures the machine; CPU time per token
/// measures the code. Ticks are USER_HZ, 100 on every mainstream Linux build.
pub fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}

/// Value at quantile `q` (0..=1) of `samples`, nearest rank.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    quantile(samples, 0.5)
}

pub fn ids_tensor(ids: &[u32], device: &Device) -> Tensor {
    Tensor::new(ids, device)
        .and_then(|t| t.unsqueeze(0))
        .expect("ids tensor")
}

/// Index of the largest logit of the last position of `(1, t, vocab)` logits.
pub fn greedy(logits: &Tensor) -> u32 {
    let t = logits.dim(1).expect("logits shape");
    logits
        .narrow(1, t - 1, 1)
        .and_then(|l| l.flatten_all())
        .and_then(|l| l.argmax(0))
        .and_then(|a| a.to_scalar::<u32>())
        .expect("argmax")
}

/// One greedy generation: the prompt in one forward pass (prefill, which ends with the first
/// token), then `new_tokens - 1` single-token steps. EOS does not stop it, so every run decodes
/// the same number of tokens.
pub struct Generation {
    pub prefill_s: f64,
    pub decode_s: f64,
    pub prefill_cpu_s: f64,
    pub decode_cpu_s: f64,
    pub tokens: Vec<u32>,
    /// Logits of the last prompt position (the first token's distribution).
    pub first_logits: Tensor,
}

pub fn generate(model: &Llama, prompt: &[u32], new_tokens: usize) -> Generation {
    let device = model.device().clone();
    let mut cache = KvCache::new();
    let cpu = cpu_s();
    let start = Instant::now();
    let logits = model
        .forward_cached(&ids_tensor(prompt, &device), &mut cache)
        .expect("prefill");
    let mut next = greedy(&logits);
    let prefill_s = start.elapsed().as_secs_f64();
    let prefill_cpu_s = cpu_s() - cpu;
    let t = logits.dim(1).expect("logits shape");
    let first_logits = logits
        .narrow(1, t - 1, 1)
        .and_then(|l| l.flatten_all())
        .expect("last logits");
    let mut tokens = vec![next];
    let cpu = cpu_s();
    let start = Instant::now();
    for _ in 1..new_tokens {
        let logits = model
            .forward_cached(&ids_tensor(&[next], &device), &mut cache)
            .expect("decode step");
        next = greedy(&logits);
        tokens.push(next);
    }
    Generation {
        prefill_s,
        decode_s: start.elapsed().as_secs_f64(),
        prefill_cpu_s,
        decode_cpu_s: cpu_s() - cpu,
        tokens,
        first_logits,
    }
}

/// A fixed retrieval-style prompt: system message, two context passages and a question, in
/// SmolLM2's chat format. About 200 tokens, the size of a short RAG prompt.
pub fn sample_prompt() -> String {
    use hybrid_runtime::chat::{ChatTemplate, Message, Role};
    let context = "[1] Harbourline Balanced Income Fund invests about 60% in investment-grade \
        bonds and 40% in dividend-paying equities. Its objective is a steady income with \
        moderate growth; distributions are paid monthly. The fund's risks include interest-rate \
        risk on the bond sleeve, equity market risk, and credit risk if issuers are downgraded.\n\
        [2] Rates outlook, first quarter 2026: the central bank held its policy rate and signalled \
        that cuts depend on services inflation easing. Longer yields rose as term premia \
        recovered; duration-heavy portfolios lost value over the quarter.";
    ChatTemplate::default().render_prompt(&[
        Message {
            role: Role::System,
            content: "You are a financial information assistant at a regulated firm. Be factual \
                and brief, cite context passages as [n]."
                .into(),
        },
        Message {
            role: Role::User,
            content: format!(
                "Context:\n{context}\n\nQuestion: What are the main risks of the Harbourline \
                 fund if rates stay high?"
            ),
        },
    ])
}

pub fn encode(tok: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, false)
        .expect("tokenize")
        .get_ids()
        .to_vec()
}
