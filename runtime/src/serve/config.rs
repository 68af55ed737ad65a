//! `config.yaml` of `hybrid-runtime serve`: the document is the contract's
//! ([`hybrid_contract::serve_config`]), shared with the operator that renders it; what only the
//! runtime needs of it is here.

pub use hybrid_contract::limits::MAX_TOP_K;
pub use hybrid_contract::serve_config::*;

/// How the model loader holds base weights of a given `model.precision`.
pub fn base_weights(precision: Precision) -> crate::model::BaseWeights {
    use crate::model::BaseWeights;
    match precision {
        Precision::Quantized => BaseWeights::Quantized,
        Precision::Q8_0 => BaseWeights::Q8_0,
        Precision::F16 => BaseWeights::Float16,
        Precision::F32 => BaseWeights::Float32,
    }
}
