//! The CUDA build on a GPU, against the CPU on the same packaged models: greedy decoding, sentence
//! embeddings and LoRA training steps. Compiled only with `--features cuda`
//! (`scripts/build-cuda.sh` runs it); where no GPU is visible every test says so and checks
//! nothing else, so it can run in CI and on a GPU machine alike.
#![cfg(feature = "cuda")]

mod index_support;
mod train_support;

use candle_core::{Device, Tensor};
use hybrid_runtime::chat::{ChatTemplate, Message, Role};
use hybrid_runtime::device::{DeviceChoice, Placement, select};
use hybrid_runtime::embed::Embedder;
use hybrid_runtime::model::{BaseWeights, KvCache, Llama};

/// Greedy tokens compared after the prompt.
const DECODE_STEPS: usize = 16;
/// Same weights in f32 on both sides: only summation order differs (cuBLAS vs gemm), which moves
/// logits by ~1e-4; a near tie could still flip a token, so the shorter of the two agreeing
/// prefixes must cover most of the answer.
const MIN_AGREEING_TOKENS: usize = 12;
/// Cosine between the CPU's and the GPU's embedding of the same text (both f32).
const MIN_EMBEDDING_COSINE: f32 = 0.9999;

fn gpu() -> Option<Placement> {
    match select(DeviceChoice::Cuda(0), "--device") {
        Ok(p) => {
            eprintln!("GPU: {}", p.label);
            Some(p)
        }
        Err(e) => {
            eprintln!("SKIPPED: no GPU to compare with the CPU ({e})");
            None
        }
    }
}

fn greedy(model: &Llama, prompt: &[u32]) -> Vec<u32> {
    let mut cache = KvCache::new();
    let mut input = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..DECODE_STEPS {
        let ids = Tensor::new(input.as_slice(), model.device())
            .and_then(|t| t.unsqueeze(0))
            .expect("ids");
        let logits = model
            .forward_cached_with(&ids, &mut cache, None)
            .expect("forward");
        let t = logits.dim(1).expect("seq");
        let next = logits
            .narrow(1, t - 1, 1)
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.argmax(0))
            .and_then(|a| a.to_scalar::<u32>())
            .expect("argmax");
        out.push(next);
        input = vec![next];
    }
    out
}

#[test]
fn gpu_greedy_decoding_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let gguf = train_support::smollm2_gguf();
    let tok = hybrid_runtime::tokenizer::from_gguf(&gguf).expect("tokenizer");
    let prompt = ChatTemplate::default().render_prompt(&[Message {
        role: Role::User,
        content: "What does a bond's duration measure?".into(),
    }]);
    let ids = tok
        .encode(prompt, false)
        .expect("encodes")
        .get_ids()
        .to_vec();
    let cpu_model = Llama::from_gguf(&gguf, BaseWeights::Float32, &Device::Cpu).expect("cpu");
    let gpu_model = Llama::from_gguf(&gguf, BaseWeights::Float32, &gpu.device).expect("gpu");
    let (cpu, on_gpu) = (greedy(&cpu_model, &ids), greedy(&gpu_model, &ids));
    let agree = cpu.iter().zip(&on_gpu).take_while(|(a, b)| a == b).count();
    eprintln!(
        "GPU greedy: {agree}/{DECODE_STEPS} tokens agree; cpu {:?} gpu {:?}",
        tok.decode(&cpu, true),
        tok.decode(&on_gpu, true)
    );
    assert!(agree >= MIN_AGREEING_TOKENS, "cpu {cpu:?} gpu {on_gpu:?}");
    // f16 weights, serve's default on a GPU, load and decode there too.
    let f16 = Llama::from_gguf(&gguf, BaseWeights::Float16, &gpu.device).expect("f16 on gpu");
    assert_eq!(greedy(&f16, &ids).len(), DECODE_STEPS);
}

#[test]
fn gpu_embeddings_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let dir = index_support::embedder_dir();
    let cpu = Embedder::load(&dir).expect("cpu embedder");
    let on_gpu = Embedder::load_for(&dir, &gpu).expect("gpu embedder");
    let texts = [
        "The Velorian Monetary Authority cut its policy rate.",
        "Duration measures a bond's sensitivity to interest rates.",
        "short",
    ];
    let (a, b) = (
        cpu.embed(&texts).expect("cpu"),
        on_gpu.embed(&texts).expect("gpu"),
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let cosine: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        assert!(cosine >= MIN_EMBEDDING_COSINE, "text {i}: cosine {cosine}");
    }
}

#[test]
fn gpu_training_steps_run_and_lower_the_loss() {
    let Some(_) = gpu() else { return };
    let out = tempfile::tempdir().expect("tempdir");
    let dataset = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/finance/dataset/train.jsonl");
    let spec = hybrid_runtime::train::spec::TrainSpec {
        base_model: Some(train_support::smollm2_gguf().display().to_string()),
        datasets: vec![dataset],
        max_steps: Some(6),
        eval_fraction: 0.0,
        output_dir: out.path().to_path_buf(),
        result_path: out.path().join("result.json"),
        device: DeviceChoice::Cuda(0),
        ..Default::default()
    };
    let result = hybrid_runtime::train::run(&spec).expect("trains on the GPU");
    eprintln!(
        "GPU training: {} steps, final loss {:.3}, {:.0} tokens/s",
        result.steps, result.final_loss, result.tokens_per_second
    );
    assert!(result.final_loss.is_finite());
    assert!(out.path().join(&result.revision).exists());
}
