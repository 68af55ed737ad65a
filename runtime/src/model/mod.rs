//! Model architectures, one file each. They share the LoRA layer types in `crate::lora`.

pub mod llama;

pub use llama::{BaseWeights, KvCache, Llama, LlamaConfig, RopeLayout};
