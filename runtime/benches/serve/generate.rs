//! Prefill and decode throughput of SmolLM2 at the weight precision `serve` uses by default
//! (`DEFAULT_GGUF_PRECISION`: f16, dequantized from the file's Q4_1 blocks), and where a decode
//! step's time goes. `scripts/bench/llamacpp_baseline.py` replays the same prompt ids and token
//! count through llama.cpp on the file's own Q4_1 weights.

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use hybrid_runtime::model::Llama;
use hybrid_runtime::serve::config::DEFAULT_GGUF_PRECISION;
use serde_json::json;

use crate::common::{self, median};
use crate::train_support;

/// New tokens per run: long enough that per-step cost dominates the decode timing.
pub const NEW_TOKENS: usize = 64;
const RUNS: usize = 3;
/// Repetitions of the per-component timings of one decode step.
const PROFILE_REPS: usize = 20;

pub fn run(out: &Path) {
    let gguf = train_support::smollm2_gguf();
    let device = candle_core::Device::Cpu;
    let tok = hybrid_runtime::tokenizer::from_gguf(&gguf).expect("tokenizer");
    let prompt = common::encode(&tok, &common::sample_prompt());
    let start = Instant::now();
    let precision = DEFAULT_GGUF_PRECISION;
    let model = Llama::from_gguf(
        &gguf,
        hybrid_runtime::serve::config::base_weights(precision),
        &device,
    )
    .expect("model");
    let load_s = start.elapsed().as_secs_f64();
    println!(
        "\n== generate: SmolLM2-135M Q4_1 file, served as {precision} (the serve default), {} prompt tokens, {NEW_TOKENS} new tokens, greedy, {RUNS} runs",
        prompt.len()
    );
    // One short warm-up so first-touch page faults and thread-pool start are not timed.
    common::generate(&model, &prompt[..8], 2);
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    let mut tokens = Vec::new();
    let (mut prefill_cpu, mut decode_cpu) = (0.0, 0.0);
    for _ in 0..RUNS {
        let g = common::generate(&model, &prompt, NEW_TOKENS);
        prefill.push(prompt.len() as f64 / g.prefill_s);
        decode.push((NEW_TOKENS - 1) as f64 / g.decode_s);
        prefill_cpu += g.prefill_cpu_s;
        decode_cpu += g.decode_cpu_s;
        tokens = g.tokens;
    }
    let (prefill_tps, decode_tps) = (median(&prefill), median(&decode));
    // Tokens per CPU-second over all runs: what the code costs, independent of machine load.
    let prefill_cpu_tps = (RUNS * prompt.len()) as f64 / prefill_cpu;
    let decode_cpu_tps = (RUNS * (NEW_TOKENS - 1)) as f64 / decode_cpu;
    println!(
        "load {load_s:.2} s; prefill {prefill_tps:.1} tok/s ({prefill_cpu_tps:.1} per CPU-s); decode {decode_tps:.1} tok/s ({decode_cpu_tps:.1} per CPU-s)"
    );
    println!(
        "greedy answer: {:?}",
        tok.decode(&tokens, true).unwrap_or_default()
    );

    let profile = profile_decode(&model, &prompt);
    common::write_json(
        &out.join("prompt.json"),
        &json!({ "prompt_ids": prompt, "new_tokens": NEW_TOKENS, "runs": RUNS }),
    );
    common::write_json(
        &out.join("generate.json"),
        &json!({
            "precision": precision.as_str(),
            "load_s": load_s,
            "prompt_tokens": prompt.len(),
            "new_tokens": NEW_TOKENS,
            "prefill_tok_s": prefill_tps,
            "decode_tok_s": decode_tps,
            "prefill_tok_per_cpu_s": prefill_cpu_tps,
            "decode_tok_per_cpu_s": decode_cpu_tps,
            "threads": common::threads(),
            "prefill_runs": prefill,
            "decode_runs": decode,
            "tokens": tokens,
            "decode_profile_ms": profile,
        }),
    );
}

/// Splits one decode step (one token after the prompt) into the layers' linear layers
/// (matrix-vector products), the LM head, greedy sampling, and the rest (attention
/// over the KV cache, norms, RoPE, cache concatenation, op dispatch), by timing each part on
/// its own with inputs of the real shapes.
fn profile_decode(model: &Llama, prompt: &[u32]) -> serde_json::Value {
    let device = model.device().clone();
    let c = &model.config;
    let mut cache = hybrid_runtime::model::KvCache::new();
    let logits = model
        .forward_cached(&common::ids_tensor(prompt, &device), &mut cache)
        .expect("prefill");
    let mut next = common::greedy(&logits);
    let mut step_ms = Vec::new();
    for _ in 0..PROFILE_REPS {
        let start = Instant::now();
        let logits = model
            .forward_cached(&common::ids_tensor(&[next], &device), &mut cache)
            .expect("step");
        next = common::greedy(&logits);
        step_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let hidden = Tensor::randn(0f32, 1.0, (1, 1, c.hidden_size), &device).expect("x");
    let inter = Tensor::randn(0f32, 1.0, (1, 1, c.intermediate_size), &device).expect("x");
    let time_ms = |f: &dyn Fn()| -> f64 {
        f();
        let start = Instant::now();
        for _ in 0..PROFILE_REPS {
            f();
        }
        start.elapsed().as_secs_f64() * 1e3 / PROFILE_REPS as f64
    };
    let linears_ms = time_ms(&|| {
        for block in &model.layers {
            for (lin, x) in [
                (&block.q_proj, &hidden),
                (&block.k_proj, &hidden),
                (&block.v_proj, &hidden),
                (&block.o_proj, &hidden),
                (&block.gate_proj, &hidden),
                (&block.up_proj, &hidden),
                (&block.down_proj, &inter),
            ] {
                lin.base.forward(x).expect("linear");
            }
        }
    });
    let lm_head_ms = time_ms(&|| {
        model.logits(&hidden).expect("lm head");
    });
    let vocab_logits = model.logits(&hidden).expect("lm head");
    let sampling_ms = time_ms(&|| {
        common::greedy(&vocab_logits);
    });
    let step = median(&step_ms);
    let rest = step - linears_ms - lm_head_ms - sampling_ms;
    let pct = |x: f64| 100.0 * x / step;
    println!(
        "decode step at position {}: {step:.2} ms = linear layers {linears_ms:.2} ms ({:.0}%) + LM head {lm_head_ms:.2} ms ({:.0}%) + greedy sampling {sampling_ms:.3} ms ({:.1}%) + attention/norms/other {rest:.2} ms ({:.0}%)",
        cache.len(),
        pct(linears_ms),
        pct(lm_head_ms),
        pct(sampling_ms),
        pct(rest)
    );
    json!({
        "step": step,
        "linear_layers": linears_ms,
        "lm_head": lm_head_ms,
        "greedy_sampling": sampling_ms,
        "attention_norms_other": rest,
    })
}
