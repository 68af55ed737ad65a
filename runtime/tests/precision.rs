//! Weight precisions on the packaged SmolLM2 GGUF: the reduced ones `serve` can pick stay close to
//! f32, an adapter merged into float weights computes what it computes unmerged, and a wrong
//! `model.precision` is refused with the field named.

mod train_support;

use std::process::Command;

use candle_core::{Device, Tensor};
use hybrid_runtime::chat::{ChatTemplate, Message, Role};
use hybrid_runtime::lora::{AdapterSet, LoraBranch, LoraInit, LoraSettings, TargetModule};
use hybrid_runtime::model::{BaseWeights, KvCache, Llama};
use hybrid_runtime::serve::config::{DEFAULT_GGUF_PRECISION, Precision, ServeConfig};

/// Largest |Δlogit| against f32 for f16 weights. f16 keeps 11 significant bits, so each weight
/// and each matmul input moves by up to ~5e-4 relative; over 30 layers that gives 0.03-0.07 on
/// logits of magnitude ~20 (measured, docs/runtime-precision.md). A wrong cast or a transposed
/// weight gives differences of several logits.
const F16_MAX_LOGIT_DIFF: f32 = 0.25;
/// The same for Q8_0 weights: the Q8_0 kernel quantizes every activation row to 8 bits per
/// 32-value block, and the weights pick up a second rounding on top of their 4-bit source.
/// Measured 0.85-1.3 on the bench's prompts (Q4_1 itself: ~0.65); a wrong layout or scale gives
/// several logits and other greedy tokens.
const Q8_0_MAX_LOGIT_DIFF: f32 = 2.0;
/// Merged against unmerged on f32 weights: the same sums in another order.
const MERGE_F32_MAX_LOGIT_DIFF: f32 = 2e-3;
/// Merged against unmerged on f16 weights: the merged weight is rounded to f16 once more.
const MERGE_F16_MAX_LOGIT_DIFF: f32 = 0.1;
/// Greedy steps compared after the prompt, so the KV-cache path is covered too.
const DECODE_STEPS: usize = 4;

fn prompt_ids(gguf: &std::path::Path) -> Vec<u32> {
    let tok = hybrid_runtime::tokenizer::from_gguf(gguf).expect("tokenizer");
    let prompt = ChatTemplate::default().render_prompt(&[Message {
        role: Role::User,
        content: "What does a bond's duration measure?".into(),
    }]);
    tok.encode(prompt, false)
        .expect("encodes")
        .get_ids()
        .to_vec()
}

fn ids(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("ids")
}

/// Last-position logits of the prompt and of `DECODE_STEPS` greedy steps after it, and the
/// greedy tokens. `next` fixes the tokens fed back (so two models are compared on the same
/// sequence); `None` feeds back the model's own choice.
fn run(
    model: &Llama,
    prompt: &[u32],
    adapter: Option<&AdapterSet>,
    next: Option<&[u32]>,
) -> (Vec<Tensor>, Vec<u32>) {
    let mut cache = KvCache::new();
    let mut input = prompt.to_vec();
    let mut logits = Vec::new();
    let mut tokens = Vec::new();
    for step in 0..=DECODE_STEPS {
        let out = model
            .forward_cached_with(&ids(&input), &mut cache, adapter)
            .expect("forward");
        let t = out.dim(1).expect("seq");
        let last = out
            .narrow(1, t - 1, 1)
            .and_then(|l| l.flatten_all())
            .expect("last");
        let token = last
            .argmax(0)
            .and_then(|a| a.to_scalar::<u32>())
            .expect("argmax");
        tokens.push(token);
        logits.push(last);
        input = vec![next.map_or(token, |n| n[step])];
    }
    (logits, tokens)
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            (a - b)
                .and_then(|d| d.abs())
                .and_then(|d| d.max(0))
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff")
        })
        .fold(0.0, f32::max)
}

fn load(weights: BaseWeights) -> Llama {
    Llama::from_gguf(&train_support::smollm2_gguf(), weights, &Device::Cpu).expect("model")
}

#[test]
fn f16_and_q8_0_logits_stay_close_to_f32() {
    let prompt = prompt_ids(&train_support::smollm2_gguf());
    let (reference, greedy) = run(&load(BaseWeights::Float32), &prompt, None, None);
    for (weights, bound) in [
        (BaseWeights::Float16, F16_MAX_LOGIT_DIFF),
        (BaseWeights::Q8_0, Q8_0_MAX_LOGIT_DIFF),
    ] {
        let (logits, tokens) = run(&load(weights), &prompt, None, Some(&greedy));
        let diff = max_diff(&logits, &reference);
        println!("{weights:?}: max |Δlogit| vs f32 {diff:.4}, greedy {tokens:?} vs {greedy:?}");
        assert!(
            diff <= bound,
            "{weights:?} logits differ from f32 by {diff} (bound {bound})"
        );
        assert_eq!(tokens, greedy, "{weights:?} picks other greedy tokens");
    }
}

/// An adapter on every module type with a B far from zero, so it changes the logits visibly.
fn adapter(model: &Llama) -> AdapterSet {
    let settings = LoraSettings {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        target_modules: TargetModule::ALL.to_vec(),
        use_rslora: false,
    };
    let mut init = LoraInit::new(5);
    let mut set = AdapterSet::new(settings.clone(), model.layers.len());
    for layer in 0..model.layers.len() {
        for module in TargetModule::ALL {
            let (out_dim, in_dim, _) = model.config.projection_shape(module);
            let r = settings.rank;
            let a = Tensor::from_vec(init.uniform(r * in_dim, in_dim), (r, in_dim), &Device::Cpu)
                .expect("A");
            let b = Tensor::from_vec(init.uniform(out_dim * r, 256), (out_dim, r), &Device::Cpu)
                .expect("B");
            let branch = LoraBranch::new(a, b, &settings).expect("branch");
            assert!(set.insert(layer, module, branch));
        }
    }
    set
}

#[test]
fn merged_adapter_matches_unmerged_on_float_bases() {
    let prompt = prompt_ids(&train_support::smollm2_gguf());
    for (weights, bound) in [
        (BaseWeights::Float32, MERGE_F32_MAX_LOGIT_DIFF),
        (BaseWeights::Float16, MERGE_F16_MAX_LOGIT_DIFF),
    ] {
        let model = load(weights);
        let adapter = adapter(&model);
        let (base, _) = run(&model, &prompt, None, None);
        let (unmerged, greedy) = run(&model, &prompt, Some(&adapter), None);
        let mut merged_model = model.clone();
        merged_model.merge_adapter(&adapter).expect("merge");
        let (merged, _) = run(&merged_model, &prompt, None, Some(&greedy));
        let effect = max_diff(&unmerged, &base);
        let diff = max_diff(&merged, &unmerged);
        println!("{weights:?}: adapter effect {effect:.3}, merged vs unmerged {diff:.5}");
        assert!(
            effect > 0.5,
            "the test adapter barely changes the logits ({effect})"
        );
        assert!(
            diff <= bound,
            "{weights:?}: merged logits differ from unmerged by {diff} (bound {bound})"
        );
        // The original model is untouched: merging worked on a copy.
        let (again, _) = run(&model, &prompt, None, None);
        assert_eq!(max_diff(&again, &base), 0.0);
    }
}

/// Serving applies an adapter without recording operations for a backward pass: a recorded
/// result keeps every activation it came from alive, and through the KV cache that lasted the
/// whole sequence (a served pod grew by 5 GB per request with the finance adapter).
#[test]
fn a_served_adapter_records_no_backward_graph() {
    let model = load(BaseWeights::Float16);
    let adapter = adapter(&model);
    let prompt = prompt_ids(&train_support::smollm2_gguf());
    let mut cache = KvCache::new();
    let logits = model
        .forward_cached_with(&ids(&prompt), &mut cache, Some(&adapter))
        .expect("forward");
    assert!(
        !logits.track_op(),
        "serving logits record the operations that made them"
    );
    let next = model
        .forward_cached_with(&ids(&prompt[..1]), &mut cache, Some(&adapter))
        .expect("decode step");
    assert!(!next.track_op(), "a decode step records its operations");
}

#[test]
fn merging_into_quantized_weights_is_refused_and_changes_nothing() {
    let mut model = load(BaseWeights::Q8_0);
    let adapter = adapter(&model);
    let prompt = prompt_ids(&train_support::smollm2_gguf());
    let (before, _) = run(&model, &prompt, None, None);
    let err = model.merge_adapter(&adapter).expect_err("quantized base");
    assert!(err.to_string().contains("quantized"), "{err}");
    let (after, _) = run(&model, &prompt, None, None);
    assert_eq!(max_diff(&before, &after), 0.0);
}

#[test]
fn serve_names_model_precision_when_its_value_is_wrong() {
    let bin = train_support::runtime_bin();
    let out = Command::new(&bin)
        .args([
            "serve",
            "--model",
            "/nonexistent.gguf",
            "--precision",
            "fp16",
        ])
        .output()
        .expect("run hybrid-runtime");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("model.precision") && stderr.contains("f16"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "name: m\nmodel:\n  source: /nonexistent.gguf\n  precision: int4\n",
    )
    .expect("write config");
    let out = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run hybrid-runtime");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("model.precision") && stderr.contains("int4"),
        "{stderr}"
    );
}

const CONFIG: &str = "name: m\nmodel:\n  source: /models/smollm2.gguf\n  format: gguf\n";

#[test]
fn precision_defaults_by_format_and_bad_values_name_the_field() {
    let c = ServeConfig::parse(CONFIG).expect("valid config");
    assert_eq!(c.model.precision(), DEFAULT_GGUF_PRECISION);
    for p in Precision::ALL {
        let text = format!("{CONFIG}  precision: {p}\n");
        let c = ServeConfig::parse(&text).expect("valid precision");
        assert_eq!(c.model.precision(), p);
    }
    let err = ServeConfig::parse(&format!("{CONFIG}  precision: q4\n")).expect_err("unknown value");
    assert!(err.to_string().contains("model.precision"), "{err}");
    assert!(err.to_string().contains("q8_0"), "{err}");

    let safetensors = CONFIG.replace("format: gguf", "format: safetensors");
    let c = ServeConfig::parse(&safetensors).expect("safetensors defaults to f32");
    assert_eq!(c.model.precision(), Precision::F32);
    let err = ServeConfig::parse(&format!("{safetensors}  precision: q8_0\n"))
        .expect_err("q8_0 needs GGUF");
    assert!(err.to_string().contains("model.precision"), "{err}");
}
