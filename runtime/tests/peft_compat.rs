//! Hugging Face PEFT loads the adapters this runtime writes and computes the same logits.
//!
//! Needs the Python environment from `scripts/python-env.sh` (torch, transformers, peft, gguf).
//! The test fails, rather than skips, when it is missing.

mod train_support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use candle_core::{Device, Tensor};
use hybrid_runtime::chat::{ChatTemplate, Message, Role};
use hybrid_runtime::lora::{LoraInit, LoraSettings, TargetModule, peft};
use hybrid_runtime::model::{BaseWeights, Llama};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// Largest |Δlogit| allowed between candle and torch, both in f32 on the same dequantized
/// weights. What differs is only the order of floating-point sums (candle's gemm vs torch's
/// BLAS, interleaved vs half-split RoPE): about 1e-6 relative per op, compounded over 30 layers
/// on logits of magnitude ~20; measured differences are ~1e-4 (see docs/runtime-train.md). The
/// bound is far below the adapter's own effect (checked to exceed 0.1), so a wrong module name,
/// a missing q/k permutation or a wrong scale fails it.
const MAX_LOGIT_DIFF: f32 = 2e-3;

fn venv_python() -> PathBuf {
    if let Ok(p) = std::env::var("HYBRID_PYTHON") {
        return PathBuf::from(p);
    }
    let req = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/requirements-test.txt");
    let bytes =
        std::fs::read(&req).unwrap_or_else(|e| panic!("cannot read {}: {e}", req.display()));
    let key = &hex::encode(Sha256::digest(&bytes))[..12];
    let python = train_support::cache_dir().join(format!("pyenv-{key}/bin/python"));
    let complete = train_support::cache_dir().join(format!("pyenv-{key}/.complete"));
    assert!(
        python.exists() && complete.exists(),
        "the PEFT test's Python environment is missing ({}): run `scripts/python-env.sh` first",
        python.display()
    );
    python
}

#[test]
fn peft_loads_the_adapter_and_reproduces_rust_logits() {
    let python = venv_python();
    let gguf = train_support::smollm2_gguf();
    let device = Device::Cpu;
    let tok = hybrid_runtime::tokenizer::from_gguf(&gguf).expect("tokenizer");
    let prompt = ChatTemplate::default().render_prompt(&[Message {
        role: Role::User,
        content: "What is the capital of France?".into(),
    }]);
    let ids: Vec<u32> = tok
        .encode(prompt, false)
        .expect("encodes")
        .get_ids()
        .to_vec();
    let input = Tensor::new(ids.as_slice(), &device)
        .and_then(|t| t.unsqueeze(0))
        .expect("ids");

    let mut model = Llama::from_gguf(&gguf, BaseWeights::Float32, &device).expect("model");
    let base = model
        .forward(&input)
        .and_then(|l| l.squeeze(0))
        .expect("forward");
    // Every module type, so that q/k (permuted rows) and the MLP names are all exercised.
    let settings = LoraSettings {
        rank: 8,
        alpha: 16.0,
        dropout: 0.05,
        target_modules: TargetModule::ALL.to_vec(),
        use_rslora: false,
    };
    let mut init = LoraInit::new(11);
    model
        .attach_lora(&settings, &mut |n, fan_in| init.uniform(n, fan_in))
        .expect("attach");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    for (_, _, branch) in model.lora_branches() {
        let values: Vec<f32> = (0..branch.b.elem_count())
            .map(|_| rng.random_range(-0.01f32..0.01))
            .collect();
        branch
            .b
            .set(&Tensor::from_vec(values, branch.b.shape(), &device).expect("b"))
            .expect("set");
    }
    let adapted = model
        .forward(&input)
        .and_then(|l| l.squeeze(0))
        .expect("forward");

    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = dir.path().join("adapter");
    std::fs::create_dir(&adapter).expect("mkdir");
    peft::save(&model, &settings, "SmolLM2-135M-Instruct", &adapter).expect("save");
    let logits_path = dir.path().join("rust_logits.safetensors");
    let tensors: HashMap<&str, Tensor> = HashMap::from([
        ("input_ids", input.clone()),
        ("base", base),
        ("adapted", adapted.clone()),
    ]);
    candle_core::safetensors::save(&tensors, &logits_path).expect("save logits");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peft/compare.py");
    let hf_dir = dir.path().join("hf-base");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&gguf)
        .arg(&adapter)
        .arg(&logits_path)
        .arg(&hf_dir)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("runs python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare.py failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("compare.py printed no JSON ({e}):\n{stdout}\n{stderr}"));
    println!("PEFT comparison: {report}");
    let num = |k: &str| report[k].as_f64().unwrap_or(f64::INFINITY) as f32;
    assert!(
        num("base_max_abs_diff") < MAX_LOGIT_DIFF,
        "base models differ: {report}"
    );
    assert!(
        num("adapter_effect") > 0.1,
        "the adapter must visibly change the logits: {report}"
    );
    assert!(
        num("adapted_max_abs_diff") < MAX_LOGIT_DIFF,
        "PEFT logits differ from Rust: {report}"
    );
    assert_eq!(report["argmax_agree"], true, "{report}");
    assert_eq!(
        report["lora_modules"].as_array().map(|a| a.len()),
        Some(7),
        "{report}"
    );

    // The same weights in Hugging Face layout (safetensors, half-split RoPE, q/k rows in HF
    // order) with the PEFT adapter loaded as PEFT wrote it: same logits as the GGUF model.
    let mut hf = Llama::from_safetensors_dir(&hf_dir, &device).expect("HF safetensors base loads");
    assert_eq!(
        hf.config.rope_layout,
        hybrid_runtime::model::RopeLayout::Halves
    );
    peft::load(&mut hf, &adapter, &device).expect("adapter loads onto the HF base");
    let hf_adapted = hf
        .forward(&input)
        .and_then(|l| l.squeeze(0))
        .expect("forward");
    let diff = (&hf_adapted - &adapted)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    println!("safetensors base + adapter vs GGUF base + adapter: max |Δlogit| {diff}");
    assert!(
        diff < MAX_LOGIT_DIFF,
        "HF-layout model differs from GGUF-layout model: {diff}"
    );
}
