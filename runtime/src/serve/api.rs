//! The HTTP layer: OpenAI-compatible routes plus retrieval, health, metrics and admin routes.
//! Handlers validate, retrieve and tokenize, then hand a [`GenerationJob`] to the engine and
//! relay its events; they never run the model themselves.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::config::{Limits, MAX_TOP_K};
use super::engine::{EngineHandle, Event, GenerationJob, SamplingParams, SubmitError};
use super::metrics::{Metrics, Outcome};
use super::state::{BaseModel, Current, LoadedIndex, Loader, Selection, Snapshot};
use crate::chat::{Message, Role};
use crate::retrieve::Citation as RetrievedPassage;
use crate::store::SearchHit;

/// Largest request body: a 2048-token prompt is ~10 KiB of text, so 1 MiB leaves room for long
/// conversations while keeping a flood of huge bodies from exhausting memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Seconds a client is told to wait after a 429; one decode round of a full batch on CPU.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// Stop sequences per request, as in the OpenAI API.
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Inputs per /v1/embeddings request; one forward pass each batch.
pub const MAX_EMBEDDING_INPUTS: usize = 256;
/// Filtered searches over-fetch this many times `top_k` before filtering (the filter is applied
/// to the hits, not inside the vector search).
const FILTER_OVERFETCH: usize = 8;

/// Default prompt around retrieved passages when the config has no `promptTemplate`.
pub const DEFAULT_PROMPT_TEMPLATE: &str = "Answer the question using the numbered passages below. \
Cite the passages you use as [1], [2].\n\n{context}\n\nQuestion: {question}";

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

pub fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/retrieve", post(retrieve))
        .route("/v1/models", get(models))
        .route("/v1/admin/revisions", get(revisions))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.admin_reload {
        app = app.route("/v1/admin/reload", post(admin_reload));
    }
    app.fallback(|| async {
        ApiError::new(StatusCode::NOT_FOUND, "no such route").kind("not_found_error")
    })
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .with_state(state)
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = match status.as_u16() {
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn param(mut self, p: &'static str) -> Self {
        self.param = Some(p);
        self
    }
    fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }
    fn kind(mut self, k: &'static str) -> Self {
        self.kind = k;
        self
    }
    fn outcome(&self) -> Outcome {
        match self.status.as_u16() {
            429 => Outcome::Rejected,
            s if s >= 500 => Outcome::ServerError,
            _ => Outcome::ClientError,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

fn body_error(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            format!("request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        )
        .code("body_too_large");
    }
    ApiError::new(status, format!("cannot read the request body: {rejection}"))
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))
        .code("invalid_json")
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

struct Ready {
    snapshot: Arc<Snapshot>,
    base: Arc<BaseModel>,
    engine: EngineHandle,
}

fn ready(state: &AppState) -> Result<Ready, ApiError> {
    match (state.current.get(), state.base.get(), state.engine.get()) {
        (Some(snapshot), Some(base), Some(engine)) => Ok(Ready {
            snapshot,
            base: base.clone(),
            engine: engine.clone(),
        }),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model and indexes are still loading",
        )),
    }
}

fn unknown_model(model: &str, snapshot: &Snapshot) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "model `{model}` does not exist; available models: {}",
            snapshot.model_ids().join(", ")
        ),
    )
    .param("model")
    .code("model_not_found")
}

// ---- chat completions ------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// Extension: per-request retrieval settings.
    #[serde(default)]
    pub retrieval: Option<RetrievalOptions>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalOptions {
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub filter: Option<RetrievalFilter>,
}

/// Keeps only passages of the listed documents (ids as in citations' `document`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalFilter {
    #[serde(default)]
    pub documents: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseCitation {
    /// The `[n]` marker of the passage in the prompt.
    pub index: usize,
    pub document: String,
    pub chunk: String,
    pub score: f32,
    pub source: String,
    pub title: String,
    pub corpus: String,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
    pub citations: Vec<ResponseCitation>,
    pub revisions: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct Choice {
    pub index: usize,
    pub message: AssistantMessage,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<ResponseCitation>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revisions: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Records a request's duration and outcome when dropped; an unfinished stream (client gone)
/// counts as cancelled.
struct RequestRecord {
    metrics: Arc<Metrics>,
    labels: [String; 2],
    started: Instant,
    outcome: Outcome,
    /// Whether this record reports on drop (false once handed over to a stream).
    armed: bool,
}

impl RequestRecord {
    /// Moves the reporting duty to a new record (the response stream's); this one goes quiet.
    fn hand_over(&mut self) -> RequestRecord {
        self.armed = false;
        RequestRecord {
            metrics: self.metrics.clone(),
            labels: self.labels.clone(),
            started: self.started,
            outcome: Outcome::Cancelled,
            armed: true,
        }
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let [m, a] = &self.labels;
        let o = self.outcome.label();
        self.metrics
            .request_duration
            .with_label_values(&[m.as_str(), a.as_str(), o])
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .requests
            .with_label_values(&[m.as_str(), a.as_str(), o])
            .inc();
    }
}

fn message_text(m: &ChatMessage) -> String {
    match &m.content {
        None => String::new(),
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter(|p| p.kind == "text")
            .filter_map(|p| p.text.clone())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn role(r: &str) -> Result<Role, ApiError> {
    match r {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(ApiError::bad(format!(
            "messages: role `{other}` is not supported (system, developer, user, assistant)"
        ))
        .param("messages")),
    }
}

/// Passages found for a question, with the index each came from.
struct Found {
    index: Arc<LoadedIndex>,
    hit: SearchHit,
}

/// Embeds `query` once per embedder and searches every loaded index: `top_k` from each, best
/// first within each index.
fn search_indexes(
    snapshot: &Snapshot,
    metrics: &Metrics,
    query: &str,
    top_k: usize,
    filter: Option<&RetrievalFilter>,
) -> Result<Vec<Vec<Found>>, String> {
    let mut vectors: Vec<(String, Vec<f32>)> = Vec::new();
    let mut out = Vec::new();
    for index in &snapshot.indexes {
        let vector = match vectors.iter().find(|(p, _)| *p == index.embedder_path) {
            Some((_, v)) => v.clone(),
            None => {
                let timer = metrics.embedding_duration.start_timer();
                let v = index
                    .embedder
                    .embed(&[query])
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .next()
                    .ok_or("the embedder returned no vector")?;
                timer.observe_duration();
                vectors.push((index.embedder_path.clone(), v.clone()));
                v
            }
        };
        let timer = metrics.retrieval_duration.start_timer();
        let filtering = filter.is_some_and(|f| !f.documents.is_empty());
        let fetch = match filtering {
            true => (top_k * FILTER_OVERFETCH).min(crate::store::MAX_TOP_K),
            false => top_k,
        };
        let hits = index
            .index
            .search(&vector, fetch)
            .map_err(|e| e.to_string())?;
        timer.observe_duration();
        let found = hits
            .into_iter()
            .filter(|h| match filter {
                Some(f) if filtering => f.documents.contains(&h.payload.document_id),
                _ => true,
            })
            .take(top_k)
            .map(|hit| Found {
                index: index.clone(),
                hit,
            })
            .collect();
        out.push(found);
    }
    Ok(out)
}

fn retrieval_top_k(options: Option<&RetrievalOptions>, default: usize) -> Result<usize, ApiError> {
    let k = options.and_then(|o| o.top_k).unwrap_or(default);
    if !(1..=MAX_TOP_K).contains(&k) {
        return Err(ApiError::bad(format!(
            "retrieval.top_k must be between 1 and {MAX_TOP_K}, got {k}"
        ))
        .param("retrieval.top_k"));
    }
    Ok(k)
}

async fn search_blocking(
    snapshot: Arc<Snapshot>,
    metrics: Arc<Metrics>,
    query: String,
    top_k: usize,
    filter: Option<RetrievalFilter>,
) -> Result<Vec<Vec<Found>>, ApiError> {
    tokio::task::spawn_blocking(move || {
        search_indexes(&snapshot, &metrics, &query, top_k, filter.as_ref())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("retrieval: {e}")))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("retrieval: {e}")))
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut record = RequestRecord {
        metrics: state.metrics.clone(),
        labels: ["unknown".into(), "unknown".into()],
        started: Instant::now(),
        outcome: Outcome::Cancelled,
        armed: true,
    };
    match chat(&state, body, &mut record).await {
        Ok(response) => response,
        Err(e) => {
            record.outcome = e.outcome();
            e.into_response()
        }
    }
}

async fn chat(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    record: &mut RequestRecord,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let request: ChatRequest = parse_json(&body)?;
    let Ready {
        snapshot,
        base,
        engine,
    } = ready(state)?;
    let selection: Selection = snapshot
        .resolve(&request.model)
        .ok_or_else(|| unknown_model(&request.model, &snapshot))?;
    // `model` is the HybridModel name, whichever id (`<name>`, `<name>:<adapter>`) was asked
    // for: the autoscaler and the alerts select on it (docs/metrics.md); `adapter` says which.
    record.labels = [
        snapshot.config.name.clone(),
        selection.adapter_label().to_string(),
    ];
    let limits = state.limits;
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(limits.max_tokens);
    let max_tokens_param = match request.max_completion_tokens {
        Some(_) => "max_completion_tokens",
        None => "max_tokens",
    };
    if max_tokens == 0 || max_tokens > limits.max_tokens {
        return Err(ApiError::bad(format!(
            "{max_tokens_param} must be between 1 and the server's limit maxTokens ({}), got {max_tokens}",
            limits.max_tokens
        ))
        .param(max_tokens_param));
    }
    let temperature = request.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(format!(
            "temperature must be between 0 and 2, got {temperature}"
        ))
        .param("temperature"));
    }
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(format!("top_p must be in (0, 1], got {top_p}")).param("top_p"));
    }
    let stop = match request.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    };
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::bad(format!(
            "stop may hold at most {MAX_STOP_SEQUENCES} sequences, got {}",
            stop.len()
        ))
        .param("stop"));
    }
    if request.messages.is_empty() {
        return Err(ApiError::bad("messages must not be empty").param("messages"));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    for m in &request.messages {
        messages.push(Message {
            role: role(&m.role)?,
            content: message_text(m),
        });
    }
    let config = &snapshot.config;
    let top_k = retrieval_top_k(request.retrieval.as_ref(), config.top_k)?;
    let last_user = messages.iter().rposition(|m| m.role == Role::User);
    let mut citations = Vec::new();
    if let Some(i) = last_user
        && !snapshot.indexes.is_empty()
    {
        let question = messages[i].content.clone();
        let filter = request.retrieval.as_ref().and_then(|r| r.filter.clone());
        let per_index = search_blocking(
            snapshot.clone(),
            state.metrics.clone(),
            question.clone(),
            top_k,
            filter,
        )
        .await?;
        let mut found: Vec<Found> = per_index.into_iter().flatten().collect();
        found.sort_by(|a, b| b.hit.score.total_cmp(&a.hit.score));
        found.truncate(top_k);
        let mut context = String::new();
        for (n, f) in found.iter().enumerate() {
            let p = &f.hit.payload;
            context.push_str(&format!("[{}] {}\n{}\n\n", n + 1, p.title, p.text.trim()));
            citations.push(ResponseCitation {
                index: n + 1,
                document: p.document_id.clone(),
                chunk: p.chunk_id.clone(),
                score: f.hit.score,
                source: p.source_uri.clone(),
                title: p.title.clone(),
                corpus: f.index.corpus.clone(),
            });
        }
        let template = config
            .prompt_template
            .as_deref()
            .unwrap_or(DEFAULT_PROMPT_TEMPLATE);
        messages[i].content = template
            .replace("{context}", context.trim_end())
            .replace("{question}", &question);
    }
    if let Some(system) = &config.system_prompt
        && messages.first().is_none_or(|m| m.role != Role::System)
    {
        messages.insert(
            0,
            Message {
                role: Role::System,
                content: system.clone(),
            },
        );
    }
    let prompt_text = base.template.render_prompt(&messages);
    let prompt = base
        .tokenizer
        .encode(prompt_text, false)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("tokenizer: {e}")))?
        .get_ids()
        .to_vec();
    if prompt.len() > limits.max_prompt_tokens {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the prompt (messages, system prompt and retrieved passages) is {} tokens, over the server's limit maxPromptTokens ({})",
                prompt.len(),
                limits.max_prompt_tokens
            ),
        )
        .param("messages")
        .code("context_length_exceeded"));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let prompt_tokens = prompt.len();
    let job = GenerationJob {
        prompt,
        adapter: selection.adapter.as_ref().map(|a| a.weights.clone()),
        params: SamplingParams {
            max_tokens,
            temperature,
            top_p,
            seed: request.seed,
            stop,
        },
        received: record.started,
        labels: record.labels.clone(),
        events: tx,
    };
    match engine.submit(job) {
        Ok(()) => {}
        Err(SubmitError::QueueFull) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the server is at capacity ({} generating, {} queued); retry after {RETRY_AFTER_SECONDS}s",
                    limits.max_concurrency, limits.max_queue
                ),
            )
            .code("queue_full"));
        }
        Err(SubmitError::Stopped) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the generation engine has stopped",
            ));
        }
    }
    let [m, a] = &record.labels;
    state
        .metrics
        .prompt_tokens
        .with_label_values(&[m.as_str(), a.as_str()])
        .inc_by(prompt_tokens as u64);
    let reply = Reply {
        id: format!("chatcmpl-{:016x}", rand::random::<u64>()),
        created: now_secs(),
        model: request.model.clone(),
        prompt_tokens,
        citations,
        revisions: snapshot.revisions.clone(),
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(snapshot.config.serving_revision()) {
        headers.insert("x-hybrid-serving-revision", v);
    }
    if request.stream.unwrap_or(false) {
        let record = record.hand_over();
        return Ok((headers, stream_reply(reply, rx, record, snapshot)).into_response());
    }
    let (text, finish, completion_tokens) = collect(rx).await?;
    record.outcome = Outcome::Ok;
    state
        .metrics
        .completion_tokens
        .with_label_values(&[m.as_str(), a.as_str()])
        .inc_by(completion_tokens as u64);
    let body = ChatCompletion {
        id: reply.id,
        object: "chat.completion",
        created: reply.created,
        model: reply.model,
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: text,
            },
            finish_reason: finish,
        }],
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        },
        citations: reply.citations,
        revisions: reply.revisions,
    };
    Ok((headers, axum::Json(body)).into_response())
}

struct Reply {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    citations: Vec<ResponseCitation>,
    revisions: serde_json::Value,
}

fn engine_failed(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("generation failed: {message}"),
    )
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<(String, &'static str, usize), ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Delta(d) => text.push_str(&d),
            Event::Finished {
                reason,
                completion_tokens,
            } => return Ok((text, reason.as_str(), completion_tokens)),
            Event::Failed(message) => return Err(engine_failed(message)),
        }
    }
    Err(engine_failed("the engine dropped the request".into()))
}

fn sse_json<T: Serialize>(value: &T) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({"error": {"message": e.to_string(), "type": "server_error"}}).to_string()
    }))
}

/// `data: {chunk}` events as the engine produces text, a final chunk with `finish_reason`,
/// `usage`, `citations` and `revisions`, then `data: [DONE]`. Dropping the stream (client gone)
/// drops the event receiver, which cancels the sequence in the engine.
fn stream_reply(
    reply: Reply,
    rx: mpsc::UnboundedReceiver<Event>,
    record: RequestRecord,
    snapshot: Arc<Snapshot>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    struct S {
        reply: Reply,
        rx: mpsc::UnboundedReceiver<Event>,
        record: RequestRecord,
        first: bool,
        done: bool,
        // Keeps the revisions the request started with alive until its stream ends.
        _snapshot: Arc<Snapshot>,
    }
    let chunk = |r: &Reply, delta: Delta, finish: Option<&'static str>| ChatChunk {
        id: r.id.clone(),
        object: "chat.completion.chunk",
        created: r.created,
        model: r.model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
        }],
        usage: None,
        citations: None,
        revisions: None,
    };
    let start = S {
        reply,
        rx,
        record,
        first: true,
        done: false,
        _snapshot: snapshot,
    };
    let stream = futures::stream::unfold(start, move |mut s| async move {
        if s.done {
            return None;
        }
        let event = match s.rx.recv().await {
            Some(Event::Delta(text)) => {
                let role = s.first.then_some("assistant");
                s.first = false;
                sse_json(&chunk(
                    &s.reply,
                    Delta {
                        role,
                        content: Some(text),
                    },
                    None,
                ))
            }
            Some(Event::Finished {
                reason,
                completion_tokens,
            }) => {
                let [m, a] = &s.record.labels;
                s.record
                    .metrics
                    .completion_tokens
                    .with_label_values(&[m.as_str(), a.as_str()])
                    .inc_by(completion_tokens as u64);
                s.record.outcome = Outcome::Ok;
                let mut last = chunk(&s.reply, Delta::default(), Some(reason.as_str()));
                last.usage = Some(Usage {
                    prompt_tokens: s.reply.prompt_tokens,
                    completion_tokens,
                    total_tokens: s.reply.prompt_tokens + completion_tokens,
                });
                last.citations = Some(s.reply.citations.clone());
                last.revisions = Some(s.reply.revisions.clone());
                s.done = true;
                let events = futures::stream::iter([
                    Ok::<_, Infallible>(sse_json(&last)),
                    Ok(SseEvent::default().data("[DONE]")),
                ]);
                return Some((futures::future::Either::Right(events), s));
            }
            Some(Event::Failed(message)) => {
                s.record.outcome = Outcome::ServerError;
                s.done = true;
                let err = engine_failed(message);
                let body = serde_json::json!({"error": {
                    "message": err.message, "type": err.kind, "param": null, "code": null,
                }});
                let events = futures::stream::iter([
                    Ok::<_, Infallible>(SseEvent::default().data(body.to_string())),
                    Ok(SseEvent::default().data("[DONE]")),
                ]);
                return Some((futures::future::Either::Right(events), s));
            }
            None => return None,
        };
        Some((
            futures::future::Either::Left(futures::stream::once(async {
                Ok::<_, Infallible>(event)
            })),
            s,
        ))
    });
    Sse::new(futures::StreamExt::flatten(stream))
}

// ---- retrieval, embeddings, models -----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveRequest {
    pub query: String,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub filter: Option<RetrievalFilter>,
}

#[derive(Debug, Serialize)]
pub struct RetrieveResponse {
    pub query: String,
    pub results: Vec<RetrieveResult>,
    pub revisions: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct RetrieveResult {
    pub corpus: String,
    pub revision: String,
    pub passages: Vec<RetrievedPassage>,
}

async fn retrieve(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let request: RetrieveRequest = parse_json(&body)?;
    let Ready { snapshot, .. } = ready(&state)?;
    if request.query.trim().is_empty() {
        return Err(ApiError::bad("query must not be empty").param("query"));
    }
    let options = RetrievalOptions {
        top_k: request.top_k,
        filter: None,
    };
    let top_k = retrieval_top_k(Some(&options), snapshot.config.top_k).map_err(|e| ApiError {
        param: Some("top_k"),
        ..e
    })?;
    let per_index = search_blocking(
        snapshot.clone(),
        state.metrics.clone(),
        request.query.clone(),
        top_k,
        request.filter,
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

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// Embeds with the first index's embedder (the one retrieval uses); any served model id selects
/// it.
async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let request: EmbeddingsRequest = parse_json(&body)?;
    let Ready { snapshot, .. } = ready(&state)?;
    if snapshot.resolve(&request.model).is_none() {
        return Err(unknown_model(&request.model, &snapshot));
    }
    let Some(index) = snapshot.indexes.first().cloned() else {
        return Err(
            ApiError::bad("this server has no index, so no embedding model").param("model"),
        );
    };
    let inputs = match request.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::bad(format!(
            "input must hold 1 to {MAX_EMBEDDING_INPUTS} strings, got {}",
            inputs.len()
        ))
        .param("input"));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "encoding_format must be float or base64, got {other}"
            ))
            .param("encoding_format"));
        }
    };
    let metrics = state.metrics.clone();
    let (vectors, tokens) = tokio::task::spawn_blocking(move || {
        let timer = metrics.embedding_duration.start_timer();
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let vectors = index.embedder.embed(&refs).map_err(|e| e.to_string())?;
        timer.observe_duration();
        let tokens: usize = refs
            .iter()
            .map(|t| index.embedder.count_tokens(t).unwrap_or(0))
            .sum();
        Ok::<_, String>((vectors, tokens))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
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

async fn models(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let Ready { snapshot, .. } = ready(&state)?;
    let data: Vec<serde_json::Value> = snapshot
        .model_ids()
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "hybrid-operator"}))
        .collect();
    Ok(axum::Json(serde_json::json!({"object": "list", "data": data})).into_response())
}

async fn revisions(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let snapshot = state
        .current
        .get()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "nothing is loaded yet"))?;
    Ok(axum::Json(snapshot.revisions.clone()).into_response())
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match ready(&state) {
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

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Re-reads the config file now (what the watcher does every second). Only with
/// `--admin-reload`, and only from loopback: it is a debugging aid, not an API.
async fn admin_reload(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Response, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin reload is only allowed from loopback",
        )
        .kind("permission_error"));
    }
    match super::reload_once(&state, true).await {
        Ok(revisions) => Ok(axum::Json(revisions).into_response()),
        Err(message) => Err(ApiError::bad(message).param("config")),
    }
}
