//! `POST /v1/chat/completions`: validates the request, retrieves passages for the last user
//! turn, tokenizes, queues the job and answers whole or streamed ([`super::sse`]).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::retrieve::search;
use super::wire::{
    AssistantMessage, ChatCompletion, ChatMessage, ChatRequest, Choice, ResponseCitation,
    StopField, Usage,
};
use super::{AppState, Ready, sse};
use crate::chat::{Message, Role};
use crate::serve::engine::{Event, GenerationJob, SamplingParams, SubmitError};
use crate::serve::metrics::{Metrics, Outcome};
use crate::serve::rag;
use crate::serve::state::Selection;

/// Stop sequences per request, as in the OpenAI API.
pub const MAX_STOP_SEQUENCES: usize = 4;

/// Records a request's duration and outcome when dropped; an unfinished stream (client gone)
/// counts as cancelled.
pub(super) struct RequestRecord {
    pub(super) metrics: Arc<Metrics>,
    pub(super) labels: [String; 2],
    started: Instant,
    pub(super) outcome: Outcome,
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

/// What the answer carries besides its text, whether it is sent whole or streamed.
pub(super) struct Reply {
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) model: String,
    pub(super) prompt_tokens: usize,
    pub(super) citations: Vec<ResponseCitation>,
    pub(super) revisions: hybrid_contract::loaded::LoadedRevisions,
}

pub(super) async fn chat_completions(
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
    let request: ChatRequest = serde_json::from_slice(&body?).map_err(ApiError::InvalidJson)?;
    let Ready {
        snapshot,
        base,
        engine,
    } = state.ready()?;
    let selection: Selection =
        snapshot
            .resolve(&request.model)
            .ok_or_else(|| ApiError::UnknownModel {
                model: request.model.clone(),
                available: snapshot.model_ids(),
            })?;
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
        return Err(ApiError::bad(
            max_tokens_param,
            format!(
                "{max_tokens_param} must be between 1 and the server's limit maxTokens ({}), got {max_tokens}",
                limits.max_tokens
            ),
        ));
    }
    let temperature = request.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(
            "temperature",
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(
            "top_p",
            format!("top_p must be in (0, 1], got {top_p}"),
        ));
    }
    let stop = request.stop.map(StopField::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::bad(
            "stop",
            format!(
                "stop may hold at most {MAX_STOP_SEQUENCES} sequences, got {}",
                stop.len()
            ),
        ));
    }
    if request.messages.is_empty() {
        return Err(ApiError::bad("messages", "messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    for m in &request.messages {
        messages.push(Message {
            role: role(m)?,
            content: m.text(),
        });
    }
    let config = &snapshot.config;
    let top_k = rag::top_k(
        request.retrieval.as_ref().and_then(|r| r.top_k),
        config.top_k,
    )
    .map_err(|source| ApiError::TopK {
        field: "retrieval.top_k",
        source,
    })?;
    let last_user = messages.iter().rposition(|m| m.role == Role::User);
    let mut citations = Vec::new();
    if let Some(i) = last_user
        && !snapshot.indexes.is_empty()
    {
        let question = messages[i].content.clone();
        let documents = request
            .retrieval
            .and_then(|r| r.filter)
            .map(|f| f.documents)
            .unwrap_or_default();
        let per_index = search(
            snapshot.clone(),
            state.metrics.clone(),
            question.clone(),
            top_k,
            documents,
        )
        .await?;
        let passages = rag::best(per_index, top_k);
        citations = passages
            .iter()
            .enumerate()
            .map(|(n, f)| ResponseCitation {
                index: n + 1,
                document: f.hit.payload.document_id.clone(),
                chunk: f.hit.payload.chunk_id.clone(),
                score: f.hit.score,
                source: f.hit.payload.source_uri.clone(),
                title: f.hit.payload.title.clone(),
                corpus: f.index.corpus.clone(),
            })
            .collect();
        messages[i].content = rag::augment(config.prompt_template.as_deref(), &passages, &question);
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
        .map_err(ApiError::Tokenizer)?
        .get_ids()
        .to_vec();
    if prompt.len() > limits.max_prompt_tokens {
        return Err(ApiError::PromptTooLong {
            tokens: prompt.len(),
            limit: limits.max_prompt_tokens,
        });
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
    engine.submit(job).map_err(|e| match e {
        SubmitError::QueueFull => ApiError::Overloaded {
            max_concurrency: limits.max_concurrency,
            max_queue: limits.max_queue,
        },
        SubmitError::Stopped => ApiError::EngineStopped,
    })?;
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
        return Ok((headers, sse::stream_reply(reply, rx, record, snapshot)).into_response());
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
        usage: Usage::new(prompt_tokens, completion_tokens),
        citations: reply.citations,
        revisions: reply.revisions,
    };
    Ok((headers, axum::Json(body)).into_response())
}

fn role(m: &ChatMessage) -> Result<Role, ApiError> {
    match m.role.as_str() {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(ApiError::bad(
            "messages",
            format!(
                "messages: role `{other}` is not supported (system, developer, user, assistant)"
            ),
        )),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The whole answer, its finish reason and its token count, once the engine is done.
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
            Event::Failed(message) => return Err(ApiError::Generation(message)),
        }
    }
    Err(ApiError::EngineDropped)
}
