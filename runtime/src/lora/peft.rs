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

/// Reads and checks `adapter_config.json` in `dir` as serving does: a PEFT LoRA config (not
/// another PEFT type, not DoRA, not `fan_in_fan_out`) whose `target_modules` are Llama
/// projections. Returns its settings.
pub fn read_config(dir: &Path) -> Result<LoraSettings, String> {
    let config_path = dir.join(CONFIG_FILE);
    let raw = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
    // The type first: another PEFT method's config lacks LoRA's fields, and "missing field `r`"
    // would hide that it is not LoRA at all.
    let doc: serde_json::Value = serde_json::from_str(&raw)
        .map_err(|e| format!("{}: not a PEFT LoRA config: {e}", config_path.display()))?;
    if let Some(kind) = doc.get("peft_type").and_then(|t| t.as_str())
        && kind != "LORA"
    {
        return Err(format!(
            "{}: peft_type {kind} is not LORA",
            config_path.display()
        ));
    }
    let peft: AdapterConfig = serde_json::from_value(doc)
        .map_err(|e| format!("{}: not a PEFT LoRA config: {e}", config_path.display()))?;
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
    Ok(LoraSettings {
        rank: peft.r,
        alpha: peft.lora_alpha,
        dropout: peft.lora_dropout,
        target_modules,
        use_rslora: peft.use_rslora,
    })
}

/// What [`inspect`] found in an adapter directory.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    pub settings: LoraSettings,
    /// lora_A/lora_B pairs (one per adapted module of a layer).
    pub pairs: usize,
    /// Layers with at least one pair.
    pub layers: usize,
}

/// Largest safetensors header read (the format's own bound is 100 MB; an adapter's header lists
/// at most a few hundred tensors).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Checks, without a base model and without reading tensor data, that `dir` holds an adapter
/// [`read`] can load: [`read_config`]'s checks, then `adapter_model.safetensors` with a complete
/// header, only `lora_A`/`lora_B` tensors of the configured `target_modules` under PEFT's key
/// names, in float types, in complete pairs of shapes `A: (r, in)` and `B: (out, r)`, and at
/// least one pair. What needs the base model (layer count, `in`/`out`) is left to [`read`].
pub fn inspect(dir: &Path) -> Result<AdapterSummary, String> {
    let settings = read_config(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    if settings.rank == 0 {
        return Err(format!("{}: r is 0", config_path.display()));
    }
    if settings.target_modules.is_empty() {
        return Err(format!(
            "{}: target_modules is empty",
            config_path.display()
        ));
    }
    let weights = dir.join(WEIGHTS_FILE);
    let header = read_safetensors_header(&weights)?;
    let mut tensors: Vec<(String, &safetensors::tensor::TensorInfo)> =
        header.tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    // (layer, module) → shapes of lora_A and lora_B.
    type Pair = (Option<Vec<usize>>, Option<Vec<usize>>);
    let mut pairs: std::collections::BTreeMap<(usize, TargetModule), Pair> = Default::default();
    for (name, info) in &tensors {
        let Some((layer, module, matrix)) = parse_tensor_key(name, &settings.target_modules) else {
            let modules: Vec<&str> = settings
                .target_modules
                .iter()
                .map(|m| m.hf_name())
                .collect();
            return Err(format!(
                "{}: unexpected tensor {name}: expected only base_model.model.model.layers.<i>.<self_attn|mlp>.<module>.lora_<A|B>.weight for target_modules {}",
                weights.display(),
                modules.join(",")
            ));
        };
        use safetensors::Dtype;
        if !matches!(
            info.dtype,
            Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64
        ) {
            return Err(format!(
                "{}: tensor {name} is {:?}, not a float type (F16, BF16, F32, F64)",
                weights.display(),
                info.dtype
            ));
        }
        let entry = pairs.entry((layer, module)).or_default();
        match matrix {
            "A" => entry.0 = Some(info.shape.clone()),
            _ => entry.1 = Some(info.shape.clone()),
        }
    }
    let r = settings.rank;
    for ((layer, module), pair) in &pairs {
        let (Some(a), Some(b)) = pair else {
            return Err(format!(
                "{}: layer {layer} {module} has only one of lora_A/lora_B",
                weights.display()
            ));
        };
        let fits = a.len() == 2 && b.len() == 2 && a[0] == r && b[1] == r && a[1] > 0 && b[0] > 0;
        if !fits {
            return Err(format!(
                "{}: layer {layer} {module}: lora_A {a:?} / lora_B {b:?} do not fit r={r} (expected lora_A (r, in) and lora_B (out, r))",
                weights.display()
            ));
        }
    }
    if pairs.is_empty() {
        return Err(format!(
            "{}: holds no lora_A/lora_B tensor pair",
            weights.display()
        ));
    }
    let layers = pairs
        .keys()
        .map(|(layer, _)| *layer)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    Ok(AdapterSummary {
        pairs: pairs.len(),
        layers,
        settings,
    })
}

/// The layer, module and matrix (`"A"`/`"B"`) of a PEFT tensor key ([`tensor_key`]) of one of
/// `modules`.
fn parse_tensor_key(
    name: &str,
    modules: &[TargetModule],
) -> Option<(usize, TargetModule, &'static str)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let layer: usize = rest.split_once('.')?.0.parse().ok()?;
    modules
        .iter()
        .flat_map(|&m| [(m, "A"), (m, "B")])
        .find(|&(m, matrix)| tensor_key(layer, m, matrix) == name)
        .map(|(m, matrix)| (layer, m, matrix))
}

/// The header of a safetensors file (read alone: the tensor data is not loaded), checked by the
/// `safetensors` crate (offsets contiguous, sizes matching dtype × shape) and against the file's
/// length (a truncated copy fails here).
fn read_safetensors_header(path: &Path) -> Result<safetensors::tensor::Metadata, String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let not_safetensors =
        |detail: String| format!("{}: not a safetensors file: {detail}", path.display());
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|_| {
        not_safetensors(format!(
            "{len} bytes, shorter than the 8-byte header length"
        ))
    })?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || n > len - 8 {
        return Err(not_safetensors(format!(
            "header length {n} does not fit the file's {len} bytes"
        )));
    }
    let mut raw = vec![0u8; n as usize];
    file.read_exact(&mut raw)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let header: safetensors::tensor::Metadata =
        serde_json::from_slice(&raw).map_err(|e| not_safetensors(format!("header: {e}")))?;
    let expected = 8 + n + header.data_len() as u64;
    if expected != len {
        return Err(format!(
            "{}: the header describes {expected} bytes but the file has {len} (truncated or corrupt)",
            path.display()
        ));
    }
    Ok(header)
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
    let settings = read_config(dir)?;
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
