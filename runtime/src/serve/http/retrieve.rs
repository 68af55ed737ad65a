//! `POST /v1/retrieve`: the passages a question would be answered from, per index, without
//! generating; the same search chat completions run ([`search`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::wire::{RetrieveRequest, RetrieveResponse, RetrieveResult};
use super::{AppState, Ready};
use crate::retrieve::Citation as RetrievedPassage;
use crate::serve::metrics::Metrics;
use crate::serve::rag::{self, Found};
use crate::serve::state::Snapshot;

/// [`rag::search_indexes`] off the async workers: embedding and vector search are CPU-bound.
pub(super) async fn search(
    snapshot: Arc<Snapshot>,
    metrics: Arc<Metrics>,
    query: String,
    top_k: usize,
    documents: Vec<String>,
) -> Result<Vec<Vec<Found>>, ApiError> {
    let found = tokio::task::spawn_blocking(move || {
        rag::search_indexes(&snapshot, &metrics, &query, top_k, &documents)
    })
    .await
    .map_err(ApiError::RetrievalTask)??;
    Ok(found)
}

pub(super) async fn retrieve(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: RetrieveRequest = serde_json::from_slice(&body?).map_err(ApiError::InvalidJson)?;
    let Ready { snapshot, .. } = state.ready()?;
    if request.query.trim().is_empty() {
        return Err(ApiError::bad("query", "query must not be empty"));
    }
    let top_k =
        rag::top_k(request.top_k, snapshot.config.top_k).map_err(|source| ApiError::TopK {
            field: "top_k",
            source,
        })?;
    let per_index = search(
        snapshot.clone(),
        state.metrics.clone(),
        request.query.clone(),
        top_k,
        request.filter.map(|f| f.documents).unwrap_or_default(),
    )
    .await?;
    let results: Vec<RetrieveResult> = per_index
        .into_iter()
        .zip(&snapshot.indexes)
        .map(|(found, index)| RetrieveResult {
            corpus: index.corpus.clone(),
            revision: index.index.revision().to_string(),
            passages: found
                .into_iter()
                .enumerate()
                .map(|(i, f)| RetrievedPassage {
                    rank: i + 1,
                    score: f.hit.score,
                    document_id: f.hit.payload.document_id,
                    chunk_id: f.hit.payload.chunk_id,
                    title: f.hit.payload.title,
                    source_uri: f.hit.payload.source_uri,
                    text: f.hit.payload.text,
                })
                .collect(),
        })
        .collect();
    // A struct, not `json!`: scores stay f32 in the output, exactly as the CLI prints them.
    Ok(axum::Json(RetrieveResponse {
        query: request.query,
        results,
        revisions: snapshot.revisions.clone(),
    })
    .into_response())
}
