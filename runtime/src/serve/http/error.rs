//! Every way an HTTP request can fail, and the one place each becomes a status code and the
//! OpenAI-style body `{"error": {"message", "type", "param", "code"}}`.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinError;

use super::MAX_BODY_BYTES;
use crate::embed::EmbedError;
use crate::serve::metrics::Outcome;
use crate::serve::rag::{SearchError, TopKOutOfRange};
use crate::serve::reload::ReloadError;

/// Seconds a client is told to wait after a 429; one decode round of a full batch on CPU.
pub const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such route")]
    NoSuchRoute,
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("cannot read the request body: {0}")]
    UnreadableBody(BytesRejection),
    #[error("request body is not valid JSON for this endpoint: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// A well-formed request with a value the server does not accept; `field` is the JSON path.
    #[error("{message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    #[error("{source}")]
    TopK {
        field: &'static str,
        source: TopKOutOfRange,
    },
    #[error("model `{model}` does not exist; available models: {}", available.join(", "))]
    UnknownModel {
        model: String,
        available: Vec<String>,
    },
    #[error("this server has no index, so no embedding model")]
    NoEmbeddingModel,
    #[error(
        "the prompt (messages, system prompt and retrieved passages) is {tokens} tokens, over the server's limit maxPromptTokens ({limit})"
    )]
    PromptTooLong { tokens: usize, limit: usize },
    #[error("the model and indexes are still loading")]
    NotReady,
    #[error("nothing is loaded yet")]
    NothingLoaded,
    #[error(
        "the server is at capacity ({max_concurrency} generating, {max_queue} queued); retry after {RETRY_AFTER_SECONDS}s"
    )]
    Overloaded {
        max_concurrency: usize,
        max_queue: usize,
    },
    #[error("the generation engine has stopped")]
    EngineStopped,
    /// The engine's message for a failed sequence (it crosses a channel as text).
    #[error("generation failed: {0}")]
    Generation(String),
    #[error("generation failed: the engine dropped the request")]
    EngineDropped,
    #[error("tokenizer: {0}")]
    Tokenizer(tokenizers::Error),
    #[error("retrieval: {0}")]
    Retrieval(#[from] SearchError),
    #[error("retrieval: {0}")]
    RetrievalTask(#[source] JoinError),
    #[error(transparent)]
    Embedding(#[from] EmbedError),
    #[error(transparent)]
    EmbeddingTask(JoinError),
    #[error("admin reload is only allowed from loopback")]
    NotLoopback,
    #[error(transparent)]
    Reload(#[from] ReloadError),
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            },
            _ => ApiError::UnreadableBody(rejection),
        }
    }
}

impl ApiError {
    pub fn bad(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoSuchRoute | ApiError::UnknownModel { .. } => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnreadableBody(rejection) => rejection.status(),
            ApiError::InvalidJson(_)
            | ApiError::BadRequest { .. }
            | ApiError::TopK { .. }
            | ApiError::NoEmbeddingModel
            | ApiError::PromptTooLong { .. }
            | ApiError::Reload(_) => StatusCode::BAD_REQUEST,
            ApiError::NotLoopback => StatusCode::FORBIDDEN,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady | ApiError::NothingLoaded | ApiError::EngineStopped => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Generation(_)
            | ApiError::EngineDropped
            | ApiError::Tokenizer(_)
            | ApiError::Retrieval(_)
            | ApiError::RetrievalTask(_)
            | ApiError::Embedding(_)
            | ApiError::EmbeddingTask(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error `type`.
    fn kind(&self) -> &'static str {
        match self {
            ApiError::NoSuchRoute => "not_found_error",
            ApiError::NotLoopback => "permission_error",
            _ => match self.status().as_u16() {
                429 => "rate_limit_error",
                s if s >= 500 => "server_error",
                _ => "invalid_request_error",
            },
        }
    }

    /// The request field at fault, when there is one.
    fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::TopK { field, .. } => Some(field),
            ApiError::UnknownModel { .. } | ApiError::NoEmbeddingModel => Some("model"),
            ApiError::PromptTooLong { .. } => Some("messages"),
            ApiError::Reload(_) => Some("config"),
            _ => None,
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::PayloadTooLarge { .. } => Some("body_too_large"),
            ApiError::InvalidJson(_) => Some("invalid_json"),
            ApiError::UnknownModel { .. } => Some("model_not_found"),
            ApiError::PromptTooLong { .. } => Some("context_length_exceeded"),
            ApiError::Overloaded { .. } => Some("queue_full"),
            _ => None,
        }
    }

    /// How the request counts in `hybrid_runtime_requests_total`.
    pub fn outcome(&self) -> Outcome {
        match self.status().as_u16() {
            429 => Outcome::Rejected,
            s if s >= 500 => Outcome::ServerError,
            _ => Outcome::ClientError,
        }
    }

    /// The JSON body; also sent as the last event of a stream that fails after its 200.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": self.to_string(), "type": self.kind(), "param": self.param(), "code": self.code(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::config::MAX_TOP_K;

    fn reply(e: ApiError) -> (StatusCode, Option<HeaderValue>, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).cloned();
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1 << 16))
            .expect("body");
        let json = serde_json::from_slice(&body).expect("JSON body");
        (status, retry, json)
    }

    #[test]
    fn a_bad_value_is_400_naming_the_field() {
        let (status, retry, body) = reply(ApiError::bad(
            "temperature",
            "temperature must be between 0 and 2, got 3",
        ));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(retry, None);
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "temperature must be between 0 and 2, got 3",
                "type": "invalid_request_error", "param": "temperature", "code": null,
            }})
        );
    }

    #[test]
    fn overloaded_is_429_with_retry_after() {
        let (status, retry, body) = reply(ApiError::Overloaded {
            max_concurrency: 4,
            max_queue: 16,
        });
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry, Some(HeaderValue::from(RETRY_AFTER_SECONDS)));
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "queue_full");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("4 generating, 16 queued"), "{message}");
        assert_eq!(
            ApiError::Overloaded {
                max_concurrency: 1,
                max_queue: 1
            }
            .outcome(),
            Outcome::Rejected
        );
    }

    #[test]
    fn an_unknown_model_is_404_listing_the_served_ones() {
        let (status, _, body) = reply(ApiError::UnknownModel {
            model: "gpt-4".into(),
            available: vec!["fin".into(), "fin:base".into()],
        });
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body["error"],
            serde_json::json!({
                "message": "model `gpt-4` does not exist; available models: fin, fin:base",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found",
            })
        );
    }

    #[test]
    fn each_variant_keeps_its_status_type_and_code() {
        let cases = [
            (ApiError::NoSuchRoute, 404, "not_found_error", None, None),
            (
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                },
                413,
                "invalid_request_error",
                None,
                Some("body_too_large"),
            ),
            (
                ApiError::InvalidJson(serde_json::from_str::<u8>("x").expect_err("not JSON")),
                400,
                "invalid_request_error",
                None,
                Some("invalid_json"),
            ),
            (
                ApiError::TopK {
                    field: "top_k",
                    source: TopKOutOfRange { got: 0 },
                },
                400,
                "invalid_request_error",
                Some("top_k"),
                None,
            ),
            (
                ApiError::PromptTooLong {
                    tokens: 3000,
                    limit: 2048,
                },
                400,
                "invalid_request_error",
                Some("messages"),
                Some("context_length_exceeded"),
            ),
            (
                ApiError::NoEmbeddingModel,
                400,
                "invalid_request_error",
                Some("model"),
                None,
            ),
            (
                ApiError::Reload(ReloadError::NotLoaded),
                400,
                "invalid_request_error",
                Some("config"),
                None,
            ),
            (ApiError::NotLoopback, 403, "permission_error", None, None),
            (ApiError::NotReady, 503, "server_error", None, None),
            (ApiError::NothingLoaded, 503, "server_error", None, None),
            (ApiError::EngineStopped, 503, "server_error", None, None),
            (
                ApiError::Generation("boom".into()),
                500,
                "server_error",
                None,
                None,
            ),
            (ApiError::EngineDropped, 500, "server_error", None, None),
            (
                ApiError::Retrieval(SearchError::NoVector),
                500,
                "server_error",
                None,
                None,
            ),
        ];
        for (error, status, kind, param, code) in cases {
            let what = format!("{error:?}");
            assert_eq!(error.status().as_u16(), status, "{what}");
            let expected_outcome = match status {
                s if s >= 500 => Outcome::ServerError,
                _ => Outcome::ClientError,
            };
            assert_eq!(error.outcome(), expected_outcome, "{what}");
            let (_, retry, body) = reply(error);
            assert_eq!(retry, None, "{what}");
            assert_eq!(body["error"]["type"], kind, "{what}");
            assert_eq!(body["error"]["param"], serde_json::json!(param), "{what}");
            assert_eq!(body["error"]["code"], serde_json::json!(code), "{what}");
        }
    }

    #[test]
    fn messages_read_as_before() {
        assert_eq!(
            ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES
            }
            .to_string(),
            format!("request body is larger than the limit of {MAX_BODY_BYTES} bytes")
        );
        assert_eq!(
            ApiError::TopK {
                field: "top_k",
                source: TopKOutOfRange { got: 65 }
            }
            .to_string(),
            format!("retrieval.top_k must be between 1 and {MAX_TOP_K}, got 65")
        );
        assert_eq!(
            ApiError::Retrieval(SearchError::NoVector).to_string(),
            "retrieval: the embedder returned no vector"
        );
        assert_eq!(
            ApiError::EngineDropped.to_string(),
            "generation failed: the engine dropped the request"
        );
    }
}
