//! The training model against the real SmolLM2 weights: LoRA wiring, gradients, PEFT round trip.

mod train_support;

use candle_core::{D, Device, Result, Tensor};
use hybrid_runtime::chat::{ChatTemplate, Message, Role};
use hybrid_runtime::lora::{LoraInit, LoraSettings, TargetModule, peft};
use hybrid_runtime::model::{BaseWeights, Llama};
use hybrid_runtime::train::dataset::Example;
use rand::{Rng, SeedableRng};

fn model() -> Llama {
    Llama::from_gguf(
        &train_support::smollm2_gguf(),
        BaseWeights::Float32,
        &Device::Cpu,
    )
    .expect("model loads")
}

fn settings(modules: &[TargetModule]) -> LoraSettings {
    LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: modules.to_vec(),
        use_rslora: false,
    }
}

fn example() -> Example {
    let tok =
        hybrid_runtime::tokenizer::from_gguf(&train_support::smollm2_gguf()).expect("tokenizer");
    let messages = [
        Message {
            role: Role::User,
            content: "What is 2+2?".into(),
        },
        Message {
            role: Role::Assistant,
            content: "4".into(),
        },
    ];
    let (ids, targets) = ChatTemplate::default()
        .encode_for_training(&tok, &messages)
        .expect("encodes");
    Example { ids, targets }
}

fn ids(example: &Example) -> Result<Tensor> {
    Tensor::new(example.ids.as_slice(), &Device::Cpu)?.unsqueeze(0)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()
}

/// Sets every B to small random values so that the adapter changes the output.
fn randomize_b(model: &Llama, seed: u64) -> Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (_, _, branch) in model.lora_branches() {
        let n = branch.b.elem_count();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-0.02f32..0.02)).collect();
        branch
            .b
            .set(&Tensor::from_vec(values, branch.b.shape(), &Device::Cpu)?)?;
    }
    Ok(())
}

#[test]
fn tokenizer_uses_smollm2_pre_tokenizer() {
    let tok =
        hybrid_runtime::tokenizer::from_gguf(&train_support::smollm2_gguf()).expect("tokenizer");
    let enc = tok.encode("Hello world 2024", false).expect("encodes");
    // 19556 is `Hello` without the GPT-2 prefix space; digits are split one by one.
    assert_eq!(enc.get_ids()[0], 19556, "{:?}", enc.get_tokens());
    assert_eq!(
        enc.get_tokens()
            .iter()
            .filter(|t| t.chars().all(|c| c.is_ascii_digit()))
            .count(),
        4
    );
    let im = tok.encode("<|im_start|>user", false).expect("encodes");
    assert_eq!(im.get_ids()[0], 1, "<|im_start|> must be one special token");
}

#[test]
fn fresh_adapter_changes_nothing_and_trained_b_does() -> Result<()> {
    let ex = example();
    let mut m = model();
    let before = m.forward(&ids(&ex)?)?;
    let mut init = LoraInit::new(1);
    m.attach_lora(&settings(&TargetModule::ALL), &mut |n, fan_in| {
        init.uniform(n, fan_in)
    })?;
    let with_zero_b = m.forward(&ids(&ex)?)?;
    assert_eq!(max_abs_diff(&before, &with_zero_b)?, 0.0);
    randomize_b(&m, 2)?;
    let with_b = m.forward(&ids(&ex)?)?;
    assert!(
        max_abs_diff(&before, &with_b)? > 1e-2,
        "a non-zero B must change the logits"
    );
    Ok(())
}

#[test]
fn gradient_reaches_every_lora_matrix_in_every_layer() -> Result<()> {
    let ex = example();
    let mut m = model();
    let mut init = LoraInit::new(3);
    m.attach_lora(&settings(&TargetModule::ALL), &mut |n, fan_in| {
        init.uniform(n, fan_in)
    })?;
    randomize_b(&m, 4)?;
    let loss = hybrid_runtime::train::batch_loss(&m, std::slice::from_ref(&ex), 0)?;
    let grads = loss.backward()?;
    let branches = m.lora_branches();
    assert_eq!(branches.len(), 30 * 7);
    for (layer, module, branch) in branches {
        for (name, var) in [("A", &branch.a), ("B", &branch.b)] {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("no gradient for layer {layer} {module} {name}"));
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(
                norm > 0.0,
                "zero gradient for layer {layer} {module} {name}"
            );
        }
    }
    Ok(())
}

#[test]
fn peft_files_round_trip_into_a_fresh_model() -> Result<()> {
    let ex = example();
    let modules = [
        TargetModule::QProj,
        TargetModule::KProj,
        TargetModule::DownProj,
    ];
    let mut trained = model();
    let mut init = LoraInit::new(5);
    trained.attach_lora(&settings(&modules), &mut |n, fan_in| {
        init.uniform(n, fan_in)
    })?;
    randomize_b(&trained, 6)?;
    let dir = tempfile::tempdir().expect("tempdir");
    peft::save(&trained, &settings(&modules), "SmolLM2", dir.path()).expect("saves");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("adapter_config.json")).expect("config"),
    )
    .expect("json");
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    let mut loaded = model();
    let back = peft::load(&mut loaded, dir.path(), &Device::Cpu).expect("loads");
    assert_eq!(back.target_modules, modules.to_vec());
    let a = trained.forward(&ids(&ex)?)?;
    let b = loaded.forward(&ids(&ex)?)?;
    assert!(max_abs_diff(&a, &b)? < 1e-5);
    Ok(())
}

#[test]
fn cached_decoding_matches_full_forward() -> Result<()> {
    let ex = example();
    let m = model();
    let full = m.forward(&ids(&ex)?)?.squeeze(0)?;
    let n = ex.ids.len();
    let mut cache = hybrid_runtime::model::KvCache::new();
    let prefix = Tensor::new(&ex.ids[..n - 2], &Device::Cpu)?.unsqueeze(0)?;
    let first = m.forward_cached(&prefix, &mut cache)?.squeeze(0)?;
    let mut last = first.get(n - 3)?;
    assert!(max_abs_diff(&last, &full.get(n - 3)?)? < 1e-4);
    for (pos, &id) in ex.ids[n - 2..].iter().enumerate() {
        let step = Tensor::new(&[id], &Device::Cpu)?.unsqueeze(0)?;
        last = m.forward_cached(&step, &mut cache)?.squeeze(0)?.get(0)?;
        assert!(
            max_abs_diff(&last, &full.get(n - 2 + pos)?)? < 1e-4,
            "position {}",
            n - 2 + pos
        );
    }
    assert_eq!(cache.len(), n);
    Ok(())
}

/// Norm of the gradient of layer 0's q_proj LoRA A for a model loaded with `weights`.
fn layer0_grad_norm(weights: BaseWeights) -> Result<f32> {
    let ex = example();
    let mut m = Llama::from_gguf(&train_support::smollm2_gguf(), weights, &Device::Cpu)?;
    let mut init = LoraInit::new(7);
    let modules = [TargetModule::QProj, TargetModule::VProj];
    m.attach_lora(&settings(&modules), &mut |n, fan_in| {
        init.uniform(n, fan_in)
    })?;
    randomize_b(&m, 8)?;
    let loss = hybrid_runtime::train::batch_loss(&m, std::slice::from_ref(&ex), 0)?;
    let grads = loss.backward()?;
    let (_, _, first) = m.lora_branches()[0];
    // candle's quantized matmul drops gradients silently: no entry at all means none arrived.
    let Some(g) = grads.get(&first.a) else {
        return Ok(0.0);
    };
    g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()
}

/// `qlora` keeps layer 0's q/k/v quantized. Layer 0's LoRA gradient has to come back through
/// all 29 layers above it; if any of them dropped the gradient through its base weights, it
/// would shrink by orders of magnitude. Quantization noise alone moves it by a few percent.
#[test]
fn qlora_base_passes_the_full_gradient_down_to_layer_0() -> Result<()> {
    let float = layer0_grad_norm(BaseWeights::Float32)?;
    let qlora = layer0_grad_norm(BaseWeights::QuantizedWhereFrozen)?;
    let ratio = qlora / float;
    assert!((0.8..1.25).contains(&ratio), "f32 {float} vs qlora {qlora}");
    let quantized = layer0_grad_norm(BaseWeights::Quantized)?;
    assert!(
        quantized / float < 0.5,
        "a fully quantized base should lose most of it: {quantized} vs {float}"
    );
    Ok(())
}
