//! Bounds the operator's API, the serve config and the runtime's requests share.

/// Largest `topK` a ServingPolicy, a serve config or a request may ask for (the CRD's maximum
/// too). More passages than this never fit a small model's prompt anyway.
pub const MAX_TOP_K: usize = 64;
