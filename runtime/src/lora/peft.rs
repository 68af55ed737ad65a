//! Reading and writing adapters in Hugging Face PEFT's format: `adapter_config.json` and
//! `adapter_model.safetensors` with keys
//! `base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight`.
//!
//! PEFT adapters are always in Hugging Face row order. When the model runs on GGUF weights
//! (q/k rows interleaved for RoPE, see `crate::model::llama`), the rows of q/k's `lora_B` are
//! permuted on the way out and back on the way in; `lora_A` and the other modules are unchanged.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{AdapterSet, LoraBranch, LoraSettings, TargetModule};
use crate::model::{Llama, LlamaConfig, RopeLayout};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The fields of PEFT's `LoraConfig` this runtime writes and reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub task_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f32,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub inference_mode: bool,
    /// DoRA (weight-decomposed LoRA) adds a magnitude vector per module; not supported here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_dora: bool,
}

fn default_bias() -> String {
    "none".into()
}

fn tensor_key(layer: usize, module: TargetModule, matrix: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{matrix}.weight",
        module.hf_parent(),
        module.hf_name()
    )
}

/// GGUF (adjacent RoPE pairs) → HF (halves) row order of a matrix whose rows are grouped in
/// `heads` heads: rows `(h, j, s)` become `(h, s, j)`.
pub fn interleaved_to_halves(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let hd = rows / heads;
    t.reshape((heads, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// HF (halves) → GGUF (adjacent RoPE pairs) row order; the inverse of [`interleaved_to_halves`].
pub fn halves_to_interleaved(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let hd = rows / heads;
    t.reshape((heads, 2, hd / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// `lora_B` as PEFT expects it for this model's layout.
fn b_for_peft(
    config: &LlamaConfig,
    module: TargetModule,
    b: &Tensor,
) -> candle_core::Result<Tensor> {
    match (config.rope_layout, config.projection_shape(module).2) {
        (RopeLayout::Interleaved, Some(heads)) => interleaved_to_halves(b, heads),
        _ => Ok(b.clone()),
    }
}

fn b_from_peft(
    config: &LlamaConfig,
    module: TargetModule,
    b: &Tensor,
) -> candle_core::Result<Tensor> {
    match (config.rope_layout, config.projection_shape(module).2) {
        (RopeLayout::Interleaved, Some(heads)) => halves_to_interleaved(b, heads),
        _ => Ok(b.clone()),
    }
}

/// Writes the model's LoRA branches to `dir` in PEFT format.
pub fn save(
    model: &Llama,
    settings: &LoraSettings,
    base_model_name: &str,
    dir: &Path,
) -> Result<(), String> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (layer, module, branch) in model.lora_branches() {
        let b =
            b_for_peft(&model.config, module, branch.b.as_tensor()).map_err(|e| e.to_string())?;
        tensors.insert(
            tensor_key(layer, module, "A"),
            branch
                .a
                .as_tensor()
                .contiguous()
                .map_err(|e| e.to_string())?,
        );
        tensors.insert(tensor_key(layer, module, "B"), b);
    }
    let config = AdapterConfig {
        peft_type: "LORA".into(),
        task_type: "CAUSAL_LM".into(),
        r: settings.rank,
        lora_alpha: settings.alpha,
        lora_dropout: settings.dropout,
        target_modules: settings
            .target_modules
            .iter()
            .map(|m| m.hf_name().to_string())
            .collect(),
        use_rslora: settings.use_rslora,
        fan_in_fan_out: false,
        bias: "none".into(),
        base_model_name_or_path: Some(base_model_name.to_string()),
        inference_mode: true,
        use_dora: false,
    };
    let weights = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights)
        .map_err(|e| format!("cannot write {}: {e}", weights.display()))?;
    // candle creates the file 0600; the serving pod may run as another user.
    set_readable(&weights)?;
    let json = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, json + "\n")
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))
}

#[cfg(unix)]
fn set_readable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn set_readable(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// Reads a PEFT LoRA adapter from `dir` and attaches it to `model`, replacing the branches of
/// the modules it holds. Returns the adapter's settings.
pub fn load(model: &mut Llama, dir: &Path, device: &Device) -> Result<LoraSettings, String> {
    let adapter = read(&model.config, model.layers.len(), dir, device)?;
    for (layer, module, branch) in adapter.branches() {
        if let Some(block) = model.layers.get_mut(layer) {
            block.linear_mut(module).lora = Some(branch.clone());
        }
    }
    Ok(adapter.settings)
}

/// Reads a PEFT LoRA adapter from `dir` for a model of this shape, without attaching it: the
/// result is passed per call to `Llama::forward_cached_with` (serving several adapters over one
/// base model).
pub fn read(
    config: &LlamaConfig,
    num_layers: usize,
    dir: &Path,
    device: &Device,
) -> Result<AdapterSet, String> {
    let config_path = dir.join(CONFIG_FILE);
    let raw = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
    let peft: AdapterConfig = serde_json::from_str(&raw)
        .map_err(|e| format!("{}: not a PEFT LoRA config: {e}", config_path.display()))?;
    if peft.peft_type != "LORA" {
        return Err(format!(
            "{}: peft_type {} is not LORA",
            config_path.display(),
            peft.peft_type
        ));
    }
    if peft.use_dora {
        return Err(format!(
            "{}: use_dora is true: DoRA adapters (lora_magnitude_vector) are not supported; train a plain LoRA adapter (use_dora: false)",
            config_path.display()
        ));
    }
    if peft.fan_in_fan_out {
        return Err(format!(
            "{}: fan_in_fan_out adapters are not supported",
            config_path.display()
        ));
    }
    let target_modules = peft
        .target_modules
        .iter()
        .map(|m| m.parse::<TargetModule>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let settings = LoraSettings {
        rank: peft.r,
        alpha: peft.lora_alpha,
        dropout: peft.lora_dropout,
        target_modules,
        use_rslora: peft.use_rslora,
    };
    let weights = dir.join(WEIGHTS_FILE);
    let mut tensors = candle_core::safetensors::load(&weights, device)
        .map_err(|e| format!("cannot read {}: {e}", weights.display()))?;
    let mut adapter = AdapterSet::new(settings.clone(), num_layers);
    for layer in 0..num_layers {
        for &module in &settings.target_modules {
            let a = tensors.remove(&tensor_key(layer, module, "A"));
            let b = tensors.remove(&tensor_key(layer, module, "B"));
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (None, None) => continue,
                _ => {
                    return Err(format!(
                        "{}: layer {layer} {module} has only one of lora_A/lora_B",
                        weights.display()
                    ));
                }
            };
            let (out_dim, in_dim, _) = config.projection_shape(module);
            if a.dims() != [settings.rank, in_dim] || b.dims() != [out_dim, settings.rank] {
                return Err(format!(
                    "{}: layer {layer} {module}: lora_A {:?} / lora_B {:?} do not fit r={} and the base model",
                    weights.display(),
                    a.dims(),
                    b.dims(),
                    settings.rank
                ));
            }
            let a = a
                .to_dtype(candle_core::DType::F32)
                .map_err(|e| e.to_string())?;
            let b = b_from_peft(
                config,
                module,
                &b.to_dtype(candle_core::DType::F32)
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let branch = LoraBranch::new(a, b, &settings).map_err(|e| e.to_string())?;
            adapter.insert(layer, module, branch);
        }
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(format!(
            "{}: unexpected tensor {extra} (layer out of range or module not in target_modules)",
            weights.display()
        ));
    }
    Ok(adapter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_permutations_are_inverse_and_match_llama_cpp() -> candle_core::Result<()> {
        // Two heads of head_dim 4: HF rows per head are [x0, x1 | y0, y1] (halves);
        // llama.cpp interleaves them as [x0, y0, x1, y1].
        let hf = Tensor::arange(0f32, 8., &Device::Cpu)?.reshape((8, 1))?;
        let gguf = halves_to_interleaved(&hf, 2)?;
        assert_eq!(
            gguf.flatten_all()?.to_vec1::<f32>()?,
            vec![0., 2., 1., 3., 4., 6., 5., 7.]
        );
        let back = interleaved_to_halves(&gguf, 2)?;
        assert_eq!(
            back.flatten_all()?.to_vec1::<f32>()?,
            hf.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn a_dora_adapter_is_refused_by_name() {
        let raw = r#"{"vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
            "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
            "rms_norm_eps":1e-5,"rope_theta":100000.0,"tie_word_embeddings":true}"#;
        let config = crate::model::llama::config_from_hf_json(raw).expect("config");
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            r#"{"peft_type":"LORA","task_type":"CAUSAL_LM","r":8,"lora_alpha":16,
                "lora_dropout":0.0,"target_modules":["q_proj"],"use_dora":true}"#,
        )
        .expect("write config");
        let err = read(&config, 30, dir.path(), &Device::Cpu).expect_err("DoRA");
        assert!(
            err.contains("use_dora") && err.contains("DoRA adapters"),
            "{err}"
        );
    }

    #[test]
    fn keys_use_hf_module_paths() {
        assert_eq!(
            tensor_key(3, TargetModule::GateProj, "B"),
            "base_model.model.model.layers.3.mlp.gate_proj.lora_B.weight"
        );
        assert_eq!(
            tensor_key(0, TargetModule::QProj, "A"),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        );
    }
}
