//! Weight precision trade-offs: the same GGUF loaded in every `model.precision` of `serve`: f32,
//! f16, Q8_0 (re-quantized at load) and the file's Q4_1 blocks (candle `QMatMul`). Each
//! precision runs in a child process of this bench, so load time and resident memory are its own.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::Tensor;
use hybrid_runtime::chat::{ChatTemplate, Message, Role};
use hybrid_runtime::model::Llama;
use hybrid_runtime::serve::config::{DEFAULT_GGUF_PRECISION, Precision};
use serde_json::json;

use crate::common;
use crate::train_support;

pub const CHILD_ARG: &str = "precision-child";
/// f32 first: it is the reference the others are compared with.
const MODES: [Precision; 4] = [
    Precision::F32,
    Precision::F16,
    Precision::Q8_0,
    Precision::Quantized,
];
const NEW_TOKENS: usize = 24;

fn prompts() -> Vec<String> {
    let chat = |q: &str| {
        ChatTemplate::default().render_prompt(&[Message {
            role: Role::User,
            content: q.into(),
        }])
    };
    vec![
        common::sample_prompt(),
        chat("What is the capital of France?"),
        chat("Explain in two sentences what a bond's duration measures."),
    ]
}

/// Runs in the child: load with one precision, generate greedily from every prompt, write the
/// numbers and first-token logits to BENCH_OUT.
pub fn child(mode: &str) {
    let precision: Precision = mode.parse().unwrap_or_else(|e| panic!("{e}"));
    let weights = hybrid_runtime::serve::config::base_weights(precision);
    let out = common::out_dir();
    let gguf = train_support::smollm2_gguf();
    let tok = hybrid_runtime::tokenizer::from_gguf(&gguf).expect("tokenizer");
    let (rss_before, _) = common::rss_mib();
    let start = Instant::now();
    let model = Llama::from_gguf(&gguf, weights, &candle_core::Device::Cpu).expect("model");
    let load_s = start.elapsed().as_secs_f64();
    let (rss_loaded, _) = common::rss_mib();
    common::generate(&model, &[1, 2, 3], 2);
    let mut runs = Vec::new();
    let mut logits = std::collections::HashMap::new();
    for (i, prompt) in prompts().iter().enumerate() {
        let ids = common::encode(&tok, prompt);
        let g = common::generate(&model, &ids, NEW_TOKENS);
        runs.push(json!({
            "prompt_tokens": ids.len(),
            "prefill_tok_s": ids.len() as f64 / g.prefill_s,
            "decode_tok_s": (NEW_TOKENS - 1) as f64 / g.decode_s,
            "prefill_tok_per_cpu_s": ids.len() as f64 / g.prefill_cpu_s,
            "decode_tok_per_cpu_s": (NEW_TOKENS - 1) as f64 / g.decode_cpu_s,
            "tokens": g.tokens,
            "text": tok.decode(&g.tokens, true).unwrap_or_default(),
        }));
        logits.insert(format!("prompt{i}"), g.first_logits);
    }
    let (rss_end, rss_peak) = common::rss_mib();
    candle_core::safetensors::save(&logits, out.join(format!("precision-{mode}.safetensors")))
        .expect("save logits");
    common::write_json(
        &out.join(format!("precision-{mode}.json")),
        &json!({
            "mode": mode,
            "load_s": load_s,
            "rss_model_mib": rss_loaded - rss_before,
            "rss_after_generation_mib": rss_end,
            "rss_peak_mib": rss_peak,
            "runs": runs,
        }),
    );
}

pub fn run(out: &Path) {
    println!(
        "\n== precision: f32, f16, q8_0 (re-quantized at load), quantized (the file's Q4_1 blocks); serve default {DEFAULT_GGUF_PRECISION}"
    );
    let exe = std::env::current_exe().expect("bench executable");
    let mut results = Vec::new();
    for mode in MODES {
        let mode = mode.as_str();
        let status = Command::new(&exe)
            .args([CHILD_ARG, mode])
            .env("BENCH_OUT", out)
            .status()
            .expect("spawn precision child");
        assert!(
            status.success(),
            "precision child `{mode}` failed: {status}"
        );
        let text = std::fs::read_to_string(out.join(format!("precision-{mode}.json")))
            .expect("child result");
        let value: serde_json::Value = serde_json::from_str(&text).expect("child json");
        let logits = candle_core::safetensors::load(
            out.join(format!("precision-{mode}.safetensors")),
            &candle_core::Device::Cpu,
        )
        .expect("child logits");
        results.push((mode, value, logits));
    }
    let (_, reference, ref_logits) = &results[0];
    let mut table = Vec::new();
    for (mode, value, logits) in &results {
        let runs = value["runs"].as_array().cloned().unwrap_or_default();
        let ref_runs = reference["runs"].as_array().cloned().unwrap_or_default();
        let mut max_diff = 0f32;
        let mut top1_agree = 0;
        let mut same_answer = 0;
        for (i, (run, ref_run)) in runs.iter().zip(&ref_runs).enumerate() {
            let key = format!("prompt{i}");
            let (a, b): (&Tensor, &Tensor) = (&logits[&key], &ref_logits[&key]);
            let d = (a - b)
                .and_then(|d| d.abs())
                .and_then(|d| d.max(0))
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff");
            max_diff = max_diff.max(d);
            let argmax = |t: &Tensor| {
                t.argmax(0)
                    .and_then(|a| a.to_scalar::<u32>())
                    .expect("argmax")
            };
            top1_agree += usize::from(argmax(a) == argmax(b));
            same_answer += usize::from(run["tokens"] == ref_run["tokens"]);
        }
        let mean = |k: &str| {
            runs.iter().filter_map(|r| r[k].as_f64()).sum::<f64>() / runs.len().max(1) as f64
        };
        println!(
            "{mode:>9}: load {:.2} s, model RSS {:.0} MiB (peak process {:.0} MiB), prefill {:.1} tok/s ({:.1} per CPU-s, {} tok prompt), decode {:.1} tok/s ({:.1} per CPU-s), max |Δ first-token logit| vs f32 {max_diff:.3}, top-1 agree {top1_agree}/{n}, same {NEW_TOKENS}-token greedy answer {same_answer}/{n}",
            value["load_s"].as_f64().unwrap_or(f64::NAN),
            value["rss_model_mib"].as_f64().unwrap_or(f64::NAN),
            value["rss_peak_mib"].as_f64().unwrap_or(f64::NAN),
            runs.first()
                .and_then(|r| r["prefill_tok_s"].as_f64())
                .unwrap_or(f64::NAN),
            runs.first()
                .and_then(|r| r["prefill_tok_per_cpu_s"].as_f64())
                .unwrap_or(f64::NAN),
            runs.first()
                .map(|r| r["prompt_tokens"].clone())
                .unwrap_or_default(),
            mean("decode_tok_s"),
            mean("decode_tok_per_cpu_s"),
            n = runs.len(),
        );
        for (i, run) in runs.iter().enumerate() {
            println!(
                "       prompt {i}: {:?}",
                run["text"].as_str().unwrap_or_default()
            );
        }
        table.push(json!({
            "mode": mode,
            "load_s": value["load_s"],
            "rss_model_mib": value["rss_model_mib"],
            "rss_peak_mib": value["rss_peak_mib"],
            "prefill_tok_s_long_prompt": runs.first().map(|r| r["prefill_tok_s"].clone()),
            "decode_tok_s_mean": mean("decode_tok_s"),
            "prefill_tok_per_cpu_s_long_prompt": runs.first().map(|r| r["prefill_tok_per_cpu_s"].clone()),
            "decode_tok_per_cpu_s_mean": mean("decode_tok_per_cpu_s"),
            "max_first_logit_diff_vs_f32": max_diff,
            "top1_agree": top1_agree,
            "same_greedy_answer": same_answer,
            "prompts": runs.len(),
        }));
    }
    common::write_json(
        &out.join("precision.json"),
        &serde_json::Value::Array(table),
    );
}
