//! LoRA layers: `y = W x + (alpha / r) · B A dropout(x)` with `A: (r, in)`, `B: (out, r)`.
//!
//! Only A and B are trainable (`Var`s); the base weight stays frozen. Fresh branches start with
//! B = 0, so attaching them does not change the model's output (PEFT's default init).

pub mod peft;

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use candle_core::{Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The linear layers of a Llama block a LoRA branch can attach to, by their Hugging Face names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TargetModule {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl TargetModule {
    pub const ALL: [TargetModule; 7] = [
        TargetModule::QProj,
        TargetModule::KProj,
        TargetModule::VProj,
        TargetModule::OProj,
        TargetModule::GateProj,
        TargetModule::UpProj,
        TargetModule::DownProj,
    ];

    /// The module's name in Hugging Face / PEFT checkpoints.
    pub fn hf_name(self) -> &'static str {
        match self {
            TargetModule::QProj => "q_proj",
            TargetModule::KProj => "k_proj",
            TargetModule::VProj => "v_proj",
            TargetModule::OProj => "o_proj",
            TargetModule::GateProj => "gate_proj",
            TargetModule::UpProj => "up_proj",
            TargetModule::DownProj => "down_proj",
        }
    }

    /// Position in [`TargetModule::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The parent module in the HF module tree (`self_attn` or `mlp`).
    pub fn hf_parent(self) -> &'static str {
        match self {
            TargetModule::QProj
            | TargetModule::KProj
            | TargetModule::VProj
            | TargetModule::OProj => "self_attn",
            _ => "mlp",
        }
    }
}

impl fmt::Display for TargetModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hf_name())
    }
}

impl FromStr for TargetModule {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        TargetModule::ALL
            .into_iter()
            .find(|m| m.hf_name() == s.trim())
            .ok_or_else(|| {
                let known: Vec<_> = TargetModule::ALL.iter().map(|m| m.hf_name()).collect();
                format!("unknown target module `{s}` (known: {})", known.join(", "))
            })
    }
}

/// Shape and scaling of the LoRA branches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub target_modules: Vec<TargetModule>,
    /// rsLoRA scaling (`alpha / sqrt(r)`) instead of `alpha / r`.
    pub use_rslora: bool,
}

impl LoraSettings {
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// Seeded source of dropout masks, so that a training run is reproducible.
pub struct DropoutRng(RefCell<ChaCha8Rng>);

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self(RefCell::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    /// Inverted dropout: zero each element with probability `p`, scale survivors by `1/(1-p)`.
    fn apply(&self, x: &Tensor, p: f32) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - p;
        let n = x.elem_count();
        let mut rng = self.0.borrow_mut();
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        x * mask
    }
}

/// One trainable low-rank update attached to a frozen linear layer.
#[derive(Debug, Clone)]
pub struct LoraBranch {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
}

impl LoraBranch {
    pub fn new(a: Tensor, b: Tensor, settings: &LoraSettings) -> Result<Self> {
        Ok(Self {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: settings.scale(),
            dropout: settings.dropout,
        })
    }

    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or_default()
    }

    /// The branch's contribution `scale · B A dropout(x)` for `x` of shape `(.., in)`.
    /// `dropout` is `None` outside training. `a` and `b` are variables, so the result records
    /// the operations that made it (for the backward pass); use [`Self::forward_frozen`] where
    /// no gradient is wanted.
    pub fn forward(&self, x: &Tensor, dropout: Option<&DropoutRng>) -> Result<Tensor> {
        let x = match dropout {
            Some(rng) => rng.apply(x, self.dropout)?,
            None => x.clone(),
        };
        self.apply(&x, self.a.as_tensor(), self.b.as_tensor())
    }

    /// [`Self::forward`] without dropout and without recording operations: serving. A result
    /// made from variables keeps every tensor it was computed from alive while it lives, and a
    /// KV cache entry lives for the whole sequence, so an adapter applied with `forward` held
    /// all of a request's activations (gigabytes for a 500-token prompt).
    pub fn forward_frozen(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(
            x,
            &self.a.as_tensor().detach(),
            &self.b.as_tensor().detach(),
        )
    }

    fn apply(&self, x: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = dims.last().copied().unwrap_or_default();
        let rows = x.elem_count() / inner.max(1);
        let y = x.reshape((rows, inner))?.matmul(&a.t()?)?.matmul(&b.t()?)?;
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = self.b.dim(0)?;
        }
        y.reshape(out_dims)? * self.scale
    }
}

/// An adapter's LoRA branches held apart from any model, so that several adapters can share one
/// base model and be chosen per forward call (`Llama::forward_cached_with`). Built once and then
/// only read: serving shares it in an `Arc`, so a request keeps the revision it started with.
#[derive(Debug, Clone)]
pub struct AdapterSet {
    pub settings: LoraSettings,
    layers: Vec<[Option<LoraBranch>; 7]>,
}

impl AdapterSet {
    /// An adapter without branches for a model of `num_layers` layers.
    pub fn new(settings: LoraSettings, num_layers: usize) -> Self {
        Self {
            settings,
            layers: vec![Default::default(); num_layers],
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Sets the branch of `module` in `layer`; `false` when the layer is out of range.
    pub fn insert(&mut self, layer: usize, module: TargetModule, branch: LoraBranch) -> bool {
        match self.layers.get_mut(layer) {
            Some(slots) => {
                slots[module.index()] = Some(branch);
                true
            }
            None => false,
        }
    }

    pub fn branch(&self, layer: usize, module: TargetModule) -> Option<&LoraBranch> {
        self.layers
            .get(layer)
            .and_then(|slots| slots[module.index()].as_ref())
    }

    /// Every branch with its layer index and module, in a stable order.
    pub fn branches(&self) -> impl Iterator<Item = (usize, TargetModule, &LoraBranch)> {
        self.layers.iter().enumerate().flat_map(|(i, slots)| {
            TargetModule::ALL
                .into_iter()
                .filter_map(move |m| slots[m.index()].as_ref().map(|b| (i, m, b)))
        })
    }
}

/// PEFT's default initialisation of A (kaiming-uniform with a = √5, i.e. U(±1/√in)), drawn from
/// a seeded generator.
pub struct LoraInit(ChaCha8Rng);

impl LoraInit {
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// `len` values for a matrix of shape `(len / fan_in, fan_in)`.
    pub fn uniform(&mut self, len: usize, fan_in: usize) -> Vec<f32> {
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        (0..len)
            .map(|_| self.0.random_range(-bound..bound))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn settings() -> LoraSettings {
        LoraSettings {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
            target_modules: vec![TargetModule::QProj],
            use_rslora: false,
        }
    }

    #[test]
    fn target_modules_round_trip_and_reject_unknown_names() {
        for m in TargetModule::ALL {
            assert_eq!(m.hf_name().parse::<TargetModule>(), Ok(m));
        }
        let err = "qkv_proj"
            .parse::<TargetModule>()
            .expect_err("unknown name");
        assert!(err.contains("q_proj"), "{err}");
    }

    #[test]
    fn branch_computes_scaled_low_rank_product() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f32, 0., 0.], [0., 1., 0.]], &dev)?;
        let b = Tensor::new(&[[1f32, 1.], [0., 2.]], &dev)?;
        let lora = LoraBranch::new(a, b, &settings())?;
        let x = Tensor::new(&[[[1f32, 2., 3.]]], &dev)?;
        let y = lora.forward(&x, None)?.to_vec3::<f32>()?;
        // A x = (1, 2); B A x = (3, 4); scale = 4 / 2.
        assert_eq!(y, vec![vec![vec![6.0, 8.0]]]);
        Ok(())
    }

    #[test]
    fn dropout_is_seeded_and_preserves_expectation() -> Result<()> {
        let x = Tensor::ones((1, 4000), DType::F32, &Device::Cpu)?;
        let a = DropoutRng::new(7).apply(&x, 0.25)?.to_vec2::<f32>()?;
        let b = DropoutRng::new(7).apply(&x, 0.25)?.to_vec2::<f32>()?;
        assert_eq!(a, b);
        let zeros = a[0].iter().filter(|v| **v == 0.0).count() as f64 / 4000.0;
        assert!((zeros - 0.25).abs() < 0.03, "dropped fraction {zeros}");
        let mean: f32 = a[0].iter().sum::<f32>() / 4000.0;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        Ok(())
    }
}
