//! The HTTP layer: OpenAI-compatible routes plus retrieval, health, metrics and admin routes.
//! Handlers validate, retrieve and tokenize, then hand a
//! [`GenerationJob`](super::engine::GenerationJob) to the engine and relay its events; they never
//! run the model themselves.
//!
//! [`wire`] holds the request and response bodies, [`error`] how failures become responses,
//! [`chat`], [`retrieve`], [`embeddings`] and [`admin`] the handlers, [`sse`] the streamed reply.

mod admin;
mod chat;
mod embeddings;
pub mod error;
mod retrieve;
mod sse;
pub mod wire;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use super::config::Limits;
use super::engine::EngineHandle;
use super::metrics::Metrics;
use super::state::{BaseModel, Current, Loader, Snapshot};
pub use error::ApiError;

/// Largest request body: a 2048-token prompt is ~10 KiB of text, so 1 MiB leaves room for long
/// conversations while keeping a flood of huge bodies from exhausting memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct AppState {
    pub current: Current,
    pub base: OnceLock<Arc<BaseModel>>,
    pub engine: OnceLock<EngineHandle>,
    pub loader: OnceLock<Arc<Loader>>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub admin_reload: bool,
    pub config_path: Option<PathBuf>,
    /// Which config digests to load and when; also serialises reloads.
    pub reload: tokio::sync::Mutex<super::reload::ReloadState>,
    /// Counts published snapshots, so a report being retried stops once a newer one exists.
    pub reports: Arc<std::sync::atomic::AtomicU64>,
    /// Why the server is not ready yet, when loading failed.
    pub load_error: RwLock<Option<String>>,
}

/// What a request needs once the server is ready; the snapshot is the one it keeps to the end.
struct Ready {
    snapshot: Arc<Snapshot>,
    base: Arc<BaseModel>,
    engine: EngineHandle,
}

impl AppState {
    fn ready(&self) -> Result<Ready, ApiError> {
        match (self.current.get(), self.base.get(), self.engine.get()) {
            (Some(snapshot), Some(base), Some(engine)) => Ok(Ready {
                snapshot,
                base: base.clone(),
                engine: engine.clone(),
            }),
            _ => Err(ApiError::NotReady),
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/retrieve", post(retrieve::retrieve))
        .route("/v1/models", get(admin::models))
        .route("/v1/admin/revisions", get(admin::revisions))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics));
    if state.admin_reload {
        app = app.route("/v1/admin/reload", post(admin::reload));
    }
    app.fallback(|| async { ApiError::NoSuchRoute })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
