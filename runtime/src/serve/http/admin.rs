//! Routes about the server rather than a model answer: the served model ids, loaded revisions,
//! readiness, Prometheus metrics and the loopback-only reload.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, Ready};

pub(super) async fn models(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let Ready { snapshot, .. } = state.ready()?;
    let data: Vec<serde_json::Value> = snapshot
        .model_ids()
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "hybrid-operator"}))
        .collect();
    Ok(axum::Json(serde_json::json!({"object": "list", "data": data})).into_response())
}

pub(super) async fn revisions(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let snapshot = state.current.get().ok_or(ApiError::NothingLoaded)?;
    Ok(axum::Json(snapshot.revisions.clone()).into_response())
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.ready() {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(_) => {
            let reason = state
                .load_error
                .read()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "loading".into());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            )
                .into_response()
        }
    }
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Re-reads the config file now (what the watcher does every second). Only with
/// `--admin-reload`, and only from loopback: it is a debugging aid, not an API.
pub(super) async fn reload(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Response, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::NotLoopback);
    }
    let revisions = crate::serve::reload_once(&state, true).await?;
    Ok(axum::Json(revisions).into_response())
}
