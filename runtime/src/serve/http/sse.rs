//! The streamed chat answer (`"stream": true`) as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, Sse};
use serde::Serialize;
use tokio::sync::mpsc;

use super::chat::{Reply, RequestRecord};
use super::error::ApiError;
use super::wire::{ChatChunk, ChunkChoice, Delta, Usage};
use crate::serve::engine::Event;
use crate::serve::metrics::Outcome;
use crate::serve::state::Snapshot;

fn sse_json<T: Serialize>(value: &T) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({"error": {"message": e.to_string(), "type": "server_error"}}).to_string()
    }))
}

/// `data: {chunk}` events as the engine produces text, a final chunk with `finish_reason`,
/// `usage`, `citations` and `revisions`, then `data: [DONE]`. Dropping the stream (client gone)
/// drops the event receiver, which cancels the sequence in the engine.
pub(super) fn stream_reply(
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
                last.usage = Some(Usage::new(s.reply.prompt_tokens, completion_tokens));
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
                // The 200 is already sent: the failure travels as the stream's last event.
                let body = ApiError::Generation(message).body();
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
