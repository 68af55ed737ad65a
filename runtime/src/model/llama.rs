//! Llama-family decoder (SmolLM2 and friends), written so that gradients reach the LoRA layers.
//!
//! candle's own `llama`/`quantized_llama` use fused RMSNorm, softmax and RoPE kernels that have no
//! backward pass, and quantized matmuls that drop the gradient of their input without an error.
//! This model uses only differentiable ops (`rms_norm_slow`, `softmax`, `rope*_slow`) and keeps
//! the base weights in f32 whenever a gradient has to pass through them.
//!
//! Weight layout: GGUF files store the rows of `q_proj`/`k_proj` permuted so that RoPE rotates
//! adjacent pairs (`rope_i`); Hugging Face checkpoints keep the original order and rotate the two
//! halves of each head (`rope`). The model keeps whatever layout its source has and records it in
//! [`RopeLayout`]; adapters are converted at the PEFT boundary (see `crate::lora::peft`).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{D, DType, Device, Error, Module, Result, Tensor};

use crate::lora::{AdapterSet, LoraBranch, LoraSettings, TargetModule};

/// How RoPE pairs the dimensions of a head, which follows from how q/k rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Adjacent pairs (GGUF / llama.cpp row order).
    Interleaved,
    /// First half with second half (Hugging Face row order).
    Halves,
}

/// Hyperparameters of a Llama-family checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub rope_layout: RopeLayout,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Output rows of a projection and the number of heads they are grouped in (for q/k
    /// permutation); `None` heads for projections that RoPE does not touch.
    pub fn projection_shape(&self, module: TargetModule) -> (usize, usize, Option<usize>) {
        let h = self.hidden_size;
        let kv = self.num_kv_heads * self.head_dim();
        let i = self.intermediate_size;
        match module {
            TargetModule::QProj => (h, h, Some(self.num_heads)),
            TargetModule::KProj => (kv, h, Some(self.num_kv_heads)),
            TargetModule::VProj => (kv, h, None),
            TargetModule::OProj => (h, h, None),
            TargetModule::GateProj | TargetModule::UpProj => (i, h, None),
            TargetModule::DownProj => (h, i, None),
        }
    }
}

/// How the frozen base weights are held. docs/runtime-precision.md compares the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseWeights {
    /// Every weight in f32: needed wherever a gradient flows through the layer.
    Float32,
    /// Linear layers and the token embedding dequantized to f16 (half of f32's memory);
    /// activations are cast to f16 around each matmul, which candle's CPU gemm runs natively.
    /// Inference only.
    Float16,
    /// Linear layers as candle quantized matmuls on the file's own blocks (inference; no
    /// gradient through them).
    Quantized,
    /// Linear layers re-quantized at load to Q8_0, the 32-element block format that candle's CPU
    /// dot product has AVX2/NEON kernels for (Q4_1, the packaged GGUF's format, has only a scalar
    /// loop). 8.5 bits per weight, so the rounding it adds to 4-bit source blocks is small.
    /// Inference only.
    Q8_0,
    /// Quantized only where no trainable parameter lies below the layer's input, so no gradient
    /// has to pass through it (the attention projections of layer 0); f32 everywhere else.
    QuantizedWhereFrozen,
}

/// How one linear layer's weight is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinearHeld {
    Dense(DType),
    /// The file's blocks as they are.
    FileBlocks,
    Requantized(GgmlDType),
}

impl BaseWeights {
    /// `frozen_input`: nothing trainable lies below this layer's input.
    fn linear(self, frozen_input: bool) -> LinearHeld {
        match self {
            BaseWeights::Float32 => LinearHeld::Dense(DType::F32),
            BaseWeights::Float16 => LinearHeld::Dense(DType::F16),
            BaseWeights::Quantized => LinearHeld::FileBlocks,
            BaseWeights::Q8_0 => LinearHeld::Requantized(GgmlDType::Q8_0),
            BaseWeights::QuantizedWhereFrozen if frozen_input => LinearHeld::FileBlocks,
            BaseWeights::QuantizedWhereFrozen => LinearHeld::Dense(DType::F32),
        }
    }

    /// The dtype of the token embedding table (and of a tied LM head held dense).
    fn embedding_dtype(self) -> DType {
        match self {
            BaseWeights::Float16 => DType::F16,
            _ => DType::F32,
        }
    }
}

/// A frozen linear layer, `y = x Wᵀ`, `W` of shape `(out, in)`.
#[derive(Debug, Clone)]
pub enum BaseLinear {
    /// f32, or f16 with the input cast to f16 and the output back to the input's dtype.
    Dense(Tensor),
    Quantized(QMatMul),
}

impl BaseLinear {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            BaseLinear::Dense(w) => {
                let dims = x.dims().to_vec();
                let (rows, inner) = match dims.split_last() {
                    Some((inner, lead)) => (lead.iter().product::<usize>(), *inner),
                    None => return Err(Error::msg("linear input must have at least one dim")),
                };
                let x2 = x.reshape((rows, inner))?;
                let y = match w.dtype() == x.dtype() {
                    true => x2.matmul(&w.t()?)?,
                    false => x2
                        .to_dtype(w.dtype())?
                        .matmul(&w.t()?)?
                        .to_dtype(x.dtype())?,
                };
                let mut out_dims = dims;
                if let Some(last) = out_dims.last_mut() {
                    *last = w.dim(0)?;
                }
                y.reshape(out_dims)
            }
            BaseLinear::Quantized(q) => q.forward(x),
        }
    }
}

/// A base linear layer with an optional LoRA branch.
#[derive(Debug, Clone)]
pub struct AdaptedLinear {
    pub base: BaseLinear,
    pub lora: Option<LoraBranch>,
}

impl AdaptedLinear {
    /// `extra` is a per-call adapter's branch for this layer (serving), added on top of the
    /// attached one; it never sees dropout.
    fn forward(
        &self,
        x: &Tensor,
        dropout: Option<&crate::lora::DropoutRng>,
        extra: Option<&LoraBranch>,
    ) -> Result<Tensor> {
        let mut y = self.base.forward(x)?;
        if let Some(lora) = &self.lora {
            y = (y + lora.forward(x, dropout)?)?;
        }
        if let Some(lora) = extra {
            y = (y + lora.forward_frozen(x)?)?;
        }
        Ok(y)
    }
}

#[derive(Debug, Clone)]
pub struct Block {
    attn_norm: Tensor,
    pub q_proj: AdaptedLinear,
    pub k_proj: AdaptedLinear,
    pub v_proj: AdaptedLinear,
    pub o_proj: AdaptedLinear,
    mlp_norm: Tensor,
    pub gate_proj: AdaptedLinear,
    pub up_proj: AdaptedLinear,
    pub down_proj: AdaptedLinear,
}

impl Block {
    pub fn linear(&self, module: TargetModule) -> &AdaptedLinear {
        match module {
            TargetModule::QProj => &self.q_proj,
            TargetModule::KProj => &self.k_proj,
            TargetModule::VProj => &self.v_proj,
            TargetModule::OProj => &self.o_proj,
            TargetModule::GateProj => &self.gate_proj,
            TargetModule::UpProj => &self.up_proj,
            TargetModule::DownProj => &self.down_proj,
        }
    }

    pub fn linear_mut(&mut self, module: TargetModule) -> &mut AdaptedLinear {
        match module {
            TargetModule::QProj => &mut self.q_proj,
            TargetModule::KProj => &mut self.k_proj,
            TargetModule::VProj => &mut self.v_proj,
            TargetModule::OProj => &mut self.o_proj,
            TargetModule::GateProj => &mut self.gate_proj,
            TargetModule::UpProj => &mut self.up_proj,
            TargetModule::DownProj => &mut self.down_proj,
        }
    }
}

/// The decoder. `forward` runs a whole sequence (no KV cache) and returns logits for every
/// position, which is what training, perplexity and prefill need.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    embed_tokens: Tensor,
    pub layers: Vec<Block>,
    norm: Tensor,
    lm_head: BaseLinear,
    device: Device,
    /// RoPE cos/sin `(positions, head_dim/2)` ([`rope_table_rows`]), computed once on the model's
    /// device, so a decode step reads a slice instead of uploading a table (docs/gpu.md).
    rope: (Tensor, Tensor),
}

/// The GGUF metadata prefix of the architectures this file can run.
const GGUF_ARCHITECTURES: &[&str] = &["llama"];

impl Llama {
    /// Loads a Llama-family GGUF file. `weights` chooses how the frozen weights are held.
    pub fn from_gguf(path: &Path, weights: BaseWeights, device: &Device) -> Result<Self> {
        let mut file = File::open(path)
            .map_err(|e| Error::msg(format!("cannot open {}: {e}", path.display())))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| Error::msg(format!("{} is not a GGUF file: {e}", path.display())))?;
        let config = config_from_gguf(&content)?;
        let mut load = |name: &str| -> Result<Arc<QTensor>> {
            content
                .tensor(&mut file, name, device)
                .map(Arc::new)
                .map_err(|e| Error::msg(format!("{}: tensor {name}: {e}", path.display())))
        };
        let dense = |q: &QTensor| q.dequantize(device);
        let base = |q: Arc<QTensor>, held: LinearHeld| -> Result<BaseLinear> {
            Ok(match held {
                LinearHeld::Dense(dtype) => {
                    BaseLinear::Dense(q.dequantize(device)?.to_dtype(dtype)?)
                }
                LinearHeld::FileBlocks => BaseLinear::Quantized(QMatMul::from_arc(q)?),
                LinearHeld::Requantized(dtype) if q.dtype() == dtype => {
                    BaseLinear::Quantized(QMatMul::from_arc(q)?)
                }
                LinearHeld::Requantized(dtype) => {
                    let requantized = QTensor::quantize(&q.dequantize(device)?, dtype)?;
                    BaseLinear::Quantized(QMatMul::from_qtensor(requantized)?)
                }
            })
        };
        let linear = |q: Arc<QTensor>, frozen_input: bool| -> Result<AdaptedLinear> {
            Ok(AdaptedLinear {
                base: base(q, weights.linear(frozen_input))?,
                lora: None,
            })
        };
        let embed_q = load("token_embd.weight")?;
        let embed_tokens = dense(&embed_q)?.to_dtype(weights.embedding_dtype())?;
        let norm = dense(&*load("output_norm.weight")?)?;
        // Every trainable layer lies below the LM head, so a gradient passes through it.
        let (lm_head, tie_word_embeddings) =
            match content.tensor_infos.contains_key("output.weight") {
                true => (base(load("output.weight")?, weights.linear(false))?, false),
                false => match weights.linear(false) {
                    LinearHeld::Dense(_) => (BaseLinear::Dense(embed_tokens.clone()), true),
                    held => (base(embed_q, held)?, true),
                },
            };
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("blk.{i}");
            // Nothing trainable sits below layer 0's attention projections, so no gradient needs
            // to pass through them.
            let attn_input_frozen = i == 0;
            layers.push(Block {
                attn_norm: dense(&*load(&format!("{p}.attn_norm.weight"))?)?,
                q_proj: linear(load(&format!("{p}.attn_q.weight"))?, attn_input_frozen)?,
                k_proj: linear(load(&format!("{p}.attn_k.weight"))?, attn_input_frozen)?,
                v_proj: linear(load(&format!("{p}.attn_v.weight"))?, attn_input_frozen)?,
                o_proj: linear(load(&format!("{p}.attn_output.weight"))?, false)?,
                mlp_norm: dense(&*load(&format!("{p}.ffn_norm.weight"))?)?,
                gate_proj: linear(load(&format!("{p}.ffn_gate.weight"))?, false)?,
                up_proj: linear(load(&format!("{p}.ffn_up.weight"))?, false)?,
                down_proj: linear(load(&format!("{p}.ffn_down.weight"))?, false)?,
            });
        }
        let config = LlamaConfig {
            tie_word_embeddings,
            ..config
        };
        Ok(Self {
            rope: rope_table(&config, 0, rope_table_rows(&config), device)?,
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            device: device.clone(),
        })
    }

    /// Loads a Hugging Face `LlamaForCausalLM` directory (`config.json` + `*.safetensors`).
    pub fn from_safetensors_dir(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let raw = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::msg(format!("cannot read {}: {e}", config_path.display())))?;
        let config = config_from_hf_json(&raw)
            .map_err(|e| Error::msg(format!("{}: {e}", config_path.display())))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::msg(format!("cannot list {}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::msg(e.to_string()))?.path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                for (name, t) in candle_core::safetensors::load(&path, device)? {
                    tensors.insert(name, t.to_dtype(DType::F32)?);
                }
            }
        }
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| Error::msg(format!("{}: missing tensor {name}", dir.display())))
        };
        let dense = |t: Tensor| AdaptedLinear {
            base: BaseLinear::Dense(t),
            lora: None,
        };
        let embed_tokens = take("model.embed_tokens.weight")?;
        let norm = take("model.norm.weight")?;
        let lm_head = match config.tie_word_embeddings {
            true => BaseLinear::Dense(embed_tokens.clone()),
            false => BaseLinear::Dense(take("lm_head.weight")?),
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                attn_norm: take(&format!("{p}.input_layernorm.weight"))?,
                q_proj: dense(take(&format!("{p}.self_attn.q_proj.weight"))?),
                k_proj: dense(take(&format!("{p}.self_attn.k_proj.weight"))?),
                v_proj: dense(take(&format!("{p}.self_attn.v_proj.weight"))?),
                o_proj: dense(take(&format!("{p}.self_attn.o_proj.weight"))?),
                mlp_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_proj: dense(take(&format!("{p}.mlp.gate_proj.weight"))?),
                up_proj: dense(take(&format!("{p}.mlp.up_proj.weight"))?),
                down_proj: dense(take(&format!("{p}.mlp.down_proj.weight"))?),
            });
        }
        Ok(Self {
            rope: rope_table(&config, 0, rope_table_rows(&config), device)?,
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Attaches fresh LoRA branches (A random, B zero: the model's output is unchanged) to the
    /// target modules of every layer. `init(len, fan_in)` draws A's entries.
    pub fn attach_lora(
        &mut self,
        settings: &LoraSettings,
        init: &mut dyn FnMut(usize, usize) -> Vec<f32>,
    ) -> Result<()> {
        let config = self.config.clone();
        let device = self.device.clone();
        for block in self.layers.iter_mut() {
            for &module in &settings.target_modules {
                let (out_dim, in_dim, _) = config.projection_shape(module);
                let a = Tensor::from_vec(
                    init(settings.rank * in_dim, in_dim),
                    (settings.rank, in_dim),
                    &device,
                )?;
                let b = Tensor::zeros((out_dim, settings.rank), DType::F32, &device)?;
                block.linear_mut(module).lora = Some(LoraBranch::new(a, b, settings)?);
            }
        }
        Ok(())
    }

    /// Every LoRA branch with its layer index and module, in a stable order.
    pub fn lora_branches(&self) -> Vec<(usize, TargetModule, &LoraBranch)> {
        let mut out = Vec::new();
        for (i, block) in self.layers.iter().enumerate() {
            for module in TargetModule::ALL {
                if let Some(lora) = &block.linear(module).lora {
                    out.push((i, module, lora));
                }
            }
        }
        out
    }

    /// Adds an adapter's low-rank updates into the base weights, `W ← W + scale · B A`, so the
    /// merged model computes what [`Self::forward_cached_with`] computes with the adapter
    /// unmerged, without the branch's two extra matmuls per layer. The update is formed in f32
    /// and rounded once to the weight's dtype.
    ///
    /// Float bases only (f32 or f16): quantized blocks would have to be re-quantized, and the
    /// update (small next to W) would drown in their rounding. Checked before anything changes,
    /// so an error leaves the model as it was.
    pub fn merge_adapter(&mut self, adapter: &AdapterSet) -> Result<()> {
        if adapter.num_layers() != self.layers.len() {
            return Err(Error::msg(format!(
                "adapter has {} layers, the model {}",
                adapter.num_layers(),
                self.layers.len()
            )));
        }
        let mut merged = Vec::new();
        for (layer, module, branch) in adapter.branches() {
            let BaseLinear::Dense(w) = &self.layers[layer].linear(module).base else {
                return Err(Error::msg(format!(
                    "cannot merge an adapter into quantized weights (layer {layer} {module}): \
                     load the base in f32 or f16, or apply the adapter unmerged"
                )));
            };
            let update = (branch.b.as_tensor().matmul(branch.a.as_tensor())? * branch.scale)?;
            let w_merged = (w.to_dtype(DType::F32)? + update)?.to_dtype(w.dtype())?;
            merged.push((layer, module, w_merged));
        }
        for (layer, module, w) in merged {
            self.layers[layer].linear_mut(module).base = BaseLinear::Dense(w);
        }
        Ok(())
    }

    /// Final hidden states `(batch, seq, hidden)` for token ids `(batch, seq)`.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        dropout: Option<&crate::lora::DropoutRng>,
    ) -> Result<Tensor> {
        self.hidden_from(input_ids, None, dropout, None)
    }

    /// Runs `input_ids` `(batch, seq)` after the tokens already in `cache`, appends their keys
    /// and values to it, and returns the logits `(batch, seq, vocab)` of the new positions.
    pub fn forward_cached(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.forward_cached_with(input_ids, cache, None)
    }

    /// [`Self::forward_cached`] with an adapter chosen for this call, applied on top of any
    /// attached branches. The model is not changed, so one `Llama` serves many adapters at once.
    pub fn forward_cached_with(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        adapter: Option<&AdapterSet>,
    ) -> Result<Tensor> {
        if let Some(a) = adapter
            && a.num_layers() != self.layers.len()
        {
            return Err(Error::msg(format!(
                "adapter has {} layers, the model {}",
                a.num_layers(),
                self.layers.len()
            )));
        }
        let hidden = self.hidden_from(input_ids, Some(cache), None, adapter)?;
        self.logits(&hidden)
    }

    fn hidden_from(
        &self,
        input_ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        dropout: Option<&crate::lora::DropoutRng>,
        adapter: Option<&AdapterSet>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let past = cache.as_ref().map(|c| c.len).unwrap_or(0);
        if let Some(c) = cache.as_mut()
            && c.layers.len() != self.layers.len()
        {
            c.layers = vec![None; self.layers.len()];
        }
        let mut x = self
            .embed_tokens
            .index_select(&input_ids.flatten_all()?, 0)?
            .to_dtype(DType::F32)?
            .reshape((b, t, self.config.hidden_size))?;
        let (cos, sin) = self.rope_tables(past, t)?;
        let mask = match t {
            1 => None,
            _ => Some(causal_mask(t, past, &self.device)?),
        };
        for (i, block) in self.layers.iter().enumerate() {
            let slot = cache.as_mut().and_then(|c| c.layers.get_mut(i));
            let extra = adapter.map(|a| (a, i));
            x = self.block_forward(block, &x, (&cos, &sin), mask.as_ref(), slot, dropout, extra)?;
        }
        if let Some(c) = cache {
            c.len += t;
        }
        candle_nn::ops::rms_norm_slow(&x, &self.norm, self.config.rms_norm_eps as f32)
    }

    /// Logits over the vocabulary for hidden states of any leading shape.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Logits `(batch, seq, vocab)` for every position of `input_ids` `(batch, seq)`.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let hidden = self.forward_hidden(input_ids, None)?;
        self.logits(&hidden)
    }

    /// RoPE cos/sin `(t, head_dim/2)` for positions `past..past + t`: a slice of the table made
    /// at load, or computed for positions past the model's context length.
    fn rope_tables(&self, past: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let (cos, sin) = &self.rope;
        match past + t <= cos.dim(0)? {
            true => Ok((cos.narrow(0, past, t)?, sin.narrow(0, past, t)?)),
            false => rope_table(&self.config, past, t, &self.device),
        }
    }

    // One argument per input of the block; a struct for them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        block: &Block,
        x: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        dropout: Option<&crate::lora::DropoutRng>,
        adapter: Option<(&AdapterSet, usize)>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let extra = |m: TargetModule| adapter.and_then(|(a, layer)| a.branch(layer, m));
        let eps = c.rms_norm_eps as f32;
        let (b, t, _) = x.dims3()?;
        let hd = c.head_dim();
        let h = candle_nn::ops::rms_norm_slow(x, &block.attn_norm, eps)?;
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = heads(
            block
                .q_proj
                .forward(&h, dropout, extra(TargetModule::QProj))?,
            c.num_heads,
        )?;
        let k = heads(
            block
                .k_proj
                .forward(&h, dropout, extra(TargetModule::KProj))?,
            c.num_kv_heads,
        )?;
        let v = heads(
            block
                .v_proj
                .forward(&h, dropout, extra(TargetModule::VProj))?,
            c.num_kv_heads,
        )?;
        let (q, k) = match c.rope_layout {
            RopeLayout::Interleaved => (
                candle_nn::rotary_emb::rope_i_slow(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i_slow(&k, cos, sin)?,
            ),
            RopeLayout::Halves => (
                candle_nn::rotary_emb::rope_slow(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_slow(&k, cos, sin)?,
            ),
        };
        let (k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let kv_len = k.dim(2)?;
        let group = c.num_heads / c.num_kv_heads;
        let repeat = |kv: Tensor| -> Result<Tensor> {
            if group == 1 {
                return Ok(kv);
            }
            kv.unsqueeze(2)?
                .broadcast_as((b, c.num_kv_heads, group, kv_len, hd))?
                .reshape((b, c.num_heads, kv_len, hd))
        };
        let k = repeat(k)?;
        let v = repeat(v)?;
        let mut scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let attn = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, c.num_heads * hd))?;
        let x = (x + block
            .o_proj
            .forward(&attn, dropout, extra(TargetModule::OProj))?)?;
        let h = candle_nn::ops::rms_norm_slow(&x, &block.mlp_norm, eps)?;
        let gate = block
            .gate_proj
            .forward(&h, dropout, extra(TargetModule::GateProj))?
            .silu()?;
        let up = block
            .up_proj
            .forward(&h, dropout, extra(TargetModule::UpProj))?;
        let mlp = block
            .down_proj
            .forward(&(gate * up)?, dropout, extra(TargetModule::DownProj))?;
        x + mlp
    }
}

/// Positions the load-time RoPE table covers: the context length, at most 8,192 (4 MiB for a
/// 128-dim head; later positions are computed when used).
fn rope_table_rows(config: &LlamaConfig) -> usize {
    config.max_position_embeddings.clamp(1, 8192)
}

/// RoPE cos/sin `(t, head_dim/2)` for positions `past..past + t`.
fn rope_table(
    config: &LlamaConfig,
    past: usize,
    t: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let hd = config.head_dim();
    let inv_freq: Vec<f32> = (0..hd / 2)
        .map(|i| (1.0 / config.rope_theta.powf(2.0 * i as f64 / hd as f64)) as f32)
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, hd / 2), device)?;
    let pos = Tensor::arange(past as u32, (past + t) as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((t, 1))?;
    let freqs = pos.broadcast_mul(&inv_freq)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// `(t, past + t)` additive mask for `t` new tokens after `past` cached ones: 0 where a
/// position may attend, -inf for the future.
fn causal_mask(t: usize, past: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..past + t).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Tensor::from_vec(data, (t, past + t), device)
}

/// Keys and values of the tokens a sequence has seen so far, per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn config_from_gguf(content: &gguf_file::Content) -> Result<LlamaConfig> {
    let md = &content.metadata;
    let get = |key: &str| {
        md.get(key)
            .ok_or_else(|| Error::msg(format!("GGUF metadata is missing `{key}`")))
    };
    let arch = get("general.architecture")?.to_string()?.clone();
    if !GGUF_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(Error::msg(format!(
            "GGUF architecture `{arch}` is not supported (supported: {GGUF_ARCHITECTURES:?})"
        )));
    }
    let u = |key: &str| -> Result<usize> { Ok(get(&format!("{arch}.{key}"))?.to_u32()? as usize) };
    let f = |key: &str| -> Result<f64> { Ok(get(&format!("{arch}.{key}"))?.to_f32()? as f64) };
    let embed_rows = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims().to_vec())
        .ok_or_else(|| Error::msg("GGUF has no token_embd.weight"))?;
    let num_heads = u("attention.head_count")?;
    Ok(LlamaConfig {
        vocab_size: embed_rows.first().copied().unwrap_or_default(),
        hidden_size: u("embedding_length")?,
        intermediate_size: u("feed_forward_length")?,
        num_layers: u("block_count")?,
        num_heads,
        num_kv_heads: u("attention.head_count_kv").unwrap_or(num_heads),
        rms_norm_eps: f("attention.layer_norm_rms_epsilon")?,
        rope_theta: f("rope.freq_base").unwrap_or(10_000.0),
        max_position_embeddings: u("context_length")?,
        tie_word_embeddings: true,
        rope_layout: RopeLayout::Interleaved,
    })
}

pub(crate) fn config_from_hf_json(raw: &str) -> std::result::Result<LlamaConfig, String> {
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let u = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .ok_or_else(|| format!("missing integer `{k}`"))
    };
    let num_heads = u("num_attention_heads")?;
    Ok(LlamaConfig {
        vocab_size: u("vocab_size")?,
        hidden_size: u("hidden_size")?,
        intermediate_size: u("intermediate_size")?,
        num_layers: u("num_hidden_layers")?,
        num_heads,
        num_kv_heads: u("num_key_value_heads").unwrap_or(num_heads),
        rms_norm_eps: v
            .get("rms_norm_eps")
            .and_then(|x| x.as_f64())
            .unwrap_or(1e-5),
        rope_theta: v
            .get("rope_theta")
            .and_then(|x| x.as_f64())
            .unwrap_or(10_000.0),
        max_position_embeddings: u("max_position_embeddings").unwrap_or(2048),
        tie_word_embeddings: v
            .get("tie_word_embeddings")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        rope_layout: RopeLayout::Halves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_blocks_only_the_future() -> Result<()> {
        let m = causal_mask(3, 0, &Device::Cpu)?.to_vec2::<f32>()?;
        assert_eq!(m[0][0], 0.0);
        assert!(m[0][1].is_infinite());
        assert_eq!(m[2][1], 0.0);
        let m = causal_mask(2, 3, &Device::Cpu)?.to_vec2::<f32>()?;
        assert_eq!(m[0][..4], [0.0; 4]);
        assert!(m[0][4].is_infinite());
        assert_eq!(m[1][4], 0.0);
        Ok(())
    }

    #[test]
    fn rope_rows_sliced_from_the_load_time_table_equal_rows_computed_for_them() -> Result<()> {
        let raw = r#"{"vocab_size":8,"hidden_size":16,"intermediate_size":32,
            "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
            "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":64}"#;
        let c = config_from_hf_json(raw).expect("valid config");
        let (cos, sin) = rope_table(&c, 0, c.max_position_embeddings, &Device::Cpu)?;
        let (cos2, sin2) = rope_table(&c, 37, 5, &Device::Cpu)?;
        assert_eq!(
            cos.narrow(0, 37, 5)?.to_vec2::<f32>()?,
            cos2.to_vec2::<f32>()?
        );
        assert_eq!(
            sin.narrow(0, 37, 5)?.to_vec2::<f32>()?,
            sin2.to_vec2::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn hf_config_parses_smollm2_shape() {
        let raw = r#"{"vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
            "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
            "rms_norm_eps":1e-5,"rope_theta":100000.0,"tie_word_embeddings":true}"#;
        let c = config_from_hf_json(raw).expect("valid config");
        assert_eq!(c.head_dim(), 64);
        assert_eq!(c.projection_shape(TargetModule::KProj), (192, 576, Some(3)));
        assert_eq!(c.rope_layout, RopeLayout::Halves);
    }
}
