//! An adapter that Hugging Face PEFT itself created loads into our model and reproduces PEFT's
//! logits. The other direction of `peft_compat.rs`: there PEFT reads what we write, here we read
//! what PEFT writes, including its q/k `lora_B` rows in Hugging Face order, which
//! `lora::peft::load` must permute into the GGUF model's interleaved RoPE order.
//!
//! Needs the Python environment from `scripts/python-env.sh` (torch, transformers, peft, gguf).
//! The test fails, rather than skips, when it is missing.

mod train_support;

use std::path::PathBuf;
use std::process::Command;

use candle_core::{Device, Tensor};
use hybrid_runtime::chat::{ChatTemplate, Message, Role};
use hybrid_runtime::lora::peft;
use hybrid_runtime::model::{BaseWeights, Llama};
use sha2::{Digest, Sha256};

/// Same bound as `peft_compat.rs`, for the same reason: candle and torch run f32 on the same
/// dequantized weights, and only the order of floating-point sums differs (~1e-4 measured on
/// logits of magnitude ~20). A wrong q/k permutation, module name or scale moves the logits by
/// about the adapter's whole effect, which the test requires to be far larger.
const MAX_LOGIT_DIFF: f32 = 2e-3;

/// The adapter's effect must exceed the tolerance by this factor, or a broken load could hide
/// inside the tolerance.
const MIN_EFFECT_OVER_TOLERANCE: f32 = 50.0;

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

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("logit difference")
}

fn argmax_rows(t: &Tensor) -> Vec<u32> {
    t.argmax(1)
        .and_then(|a| a.to_vec1::<u32>())
        .expect("argmax")
}

#[test]
fn peft_made_adapter_loads_and_matches_peft_logits() {
    let python = venv_python();
    let gguf = train_support::smollm2_gguf();
    let device = Device::Cpu;
    let tok = hybrid_runtime::tokenizer::from_gguf(&gguf).expect("tokenizer");
    let prompt = ChatTemplate::default().render_prompt(&[Message {
        role: Role::User,
        content: "Summarise the risks of a balanced income fund in one sentence.".into(),
    }]);
    let ids: Vec<u32> = tok
        .encode(prompt, false)
        .expect("encodes")
        .get_ids()
        .to_vec();
    let ids_arg = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");

    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = dir.path().join("adapter");
    let logits_path = dir.path().join("peft_logits.safetensors");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/peft_make_adapter.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&gguf)
        .arg(&adapter)
        .arg(&logits_path)
        .arg(&ids_arg)
        .env("HF_HUB_OFFLINE", "1")
        .env("TQDM_DISABLE", "1")
        .output()
        .expect("runs python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "peft_make_adapter.py failed:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("PEFT made: {}", stdout.trim());

    let reference = candle_core::safetensors::load(&logits_path, &device).expect("PEFT logits");
    let peft_ids: Vec<u32> = reference["input_ids"]
        .squeeze(0)
        .and_then(|t| t.to_dtype(candle_core::DType::U32))
        .and_then(|t| t.to_vec1())
        .expect("input_ids");
    assert_eq!(peft_ids, ids, "PEFT ran on other token ids");
    let (peft_base, peft_adapted) = (&reference["base"], &reference["adapted"]);
    let effect = max_abs_diff(peft_adapted, peft_base);
    assert!(
        effect > MIN_EFFECT_OVER_TOLERANCE * MAX_LOGIT_DIFF,
        "the PEFT adapter must visibly change the logits: max |Δlogit| {effect}"
    );

    let input = Tensor::new(ids.as_slice(), &device)
        .and_then(|t| t.unsqueeze(0))
        .expect("ids");
    let mut model = Llama::from_gguf(&gguf, BaseWeights::Float32, &device).expect("model");
    let base = model
        .forward(&input)
        .and_then(|l| l.squeeze(0))
        .expect("forward");
    let base_diff = max_abs_diff(&base, peft_base);
    println!("base: max |Δlogit| vs transformers {base_diff}");
    assert!(
        base_diff < MAX_LOGIT_DIFF,
        "our base model differs from transformers' GGUF load: {base_diff}"
    );

    let settings = peft::load(&mut model, &adapter, &device).expect("PEFT adapter loads");
    assert_eq!(settings.rank, 8);
    assert_eq!(model.lora_branches().len(), 7 * model.config.num_layers);
    // `verify-adapter`, which checks image trainers' output, accepts what PEFT itself wrote.
    let summary = hybrid_runtime::train::verify::check_output(&adapter).expect("verifies");
    assert_eq!(summary.pairs, 7 * model.config.num_layers);
    let adapted = model
        .forward(&input)
        .and_then(|l| l.squeeze(0))
        .expect("forward");
    let adapted_diff = max_abs_diff(&adapted, peft_adapted);
    println!("adapted: max |Δlogit| vs PEFT {adapted_diff}; adapter effect {effect}");
    assert!(
        adapted_diff < MAX_LOGIT_DIFF,
        "logits with the PEFT-made adapter differ from PEFT's: {adapted_diff} (effect {effect})"
    );
    assert_eq!(argmax_rows(&adapted), argmax_rows(peft_adapted));

    // The comparison is sensitive to the q/k row order: leaving lora_B in Hugging Face order
    // (undoing the permutation the loader applied) moves the logits well past the tolerance.
    let config = model.config.clone();
    for (_, module, branch) in model.lora_branches() {
        // Only q and k have heads that RoPE rotates.
        if let (_, _, Some(heads)) = config.projection_shape(module) {
            let hf_order =
                peft::interleaved_to_halves(branch.b.as_tensor(), heads).expect("permute");
            branch.b.set(&hf_order).expect("set");
        }
    }
    let unpermuted = model
        .forward(&input)
        .and_then(|l| l.squeeze(0))
        .expect("forward");
    let wrong_diff = max_abs_diff(&unpermuted, peft_adapted);
    println!("without the q/k permutation: max |Δlogit| vs PEFT {wrong_diff}");
    assert!(
        wrong_diff > 10.0 * MAX_LOGIT_DIFF,
        "the q/k permutation should matter: {wrong_diff}"
    );
}
