//! `POST /v1/embeddings`, with the embedder the first index was built with (the one retrieval
//! uses); any served model id selects it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::error::ApiError;
use super::wire::EmbeddingsRequest;
use super::{AppState, Ready};

/// Inputs per /v1/embeddings request; one forward pass each batch.
pub const MAX_EMBEDDING_INPUTS: usize = 256;

pub(super) async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: EmbeddingsRequest =
        serde_json::from_slice(&body?).map_err(ApiError::InvalidJson)?;
    let Ready { snapshot, .. } = state.ready()?;
    if snapshot.resolve(&request.model).is_none() {
        return Err(ApiError::UnknownModel {
            model: request.model,
            available: snapshot.model_ids(),
        });
    }
    let Some(index) = snapshot.indexes.first().cloned() else {
        return Err(ApiError::NoEmbeddingModel);
    };
    let inputs = request.input.into_vec();
    if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::bad(
            "input",
            format!(
                "input must hold 1 to {MAX_EMBEDDING_INPUTS} strings, got {}",
                inputs.len()
            ),
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad(
                "encoding_format",
                format!("encoding_format must be float or base64, got {other}"),
            ));
        }
    };
    let metrics = state.metrics.clone();
    let (vectors, tokens) = tokio::task::spawn_blocking(move || {
        let timer = metrics.embedding_duration.start_timer();
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let vectors = index.embedder.embed(&refs)?;
        timer.observe_duration();
        let tokens: usize = refs
            .iter()
            .map(|t| index.embedder.count_tokens(t).unwrap_or(0))
            .sum();
        Ok::<_, ApiError>((vectors, tokens))
    })
    .await
    .map_err(ApiError::EmbeddingTask)??;
    let data: Vec<serde_json::Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match base64 {
                true => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    serde_json::Value::String(
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                    )
                }
                false => serde_json::json!(v),
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}
