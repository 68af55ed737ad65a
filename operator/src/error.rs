//! The operator's one error type. Every variant has a stable short [`Error::label`], used as the
//! `reason` label of the reconcile error metric and as the Event reason, so it only ever gets
//! added to, never renamed.

use hybrid_crds::conditions::reasons;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed (network, conflict, forbidden, ...). Transient: retried.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),

    /// The spec is invalid in a way admission could not catch. Not retried until the spec changes.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// A referenced object does not exist.
    #[error("{kind} {name:?} not found in the same namespace")]
    ReferenceNotFound { kind: &'static str, name: String },

    /// A referenced object exists but is not usable yet (for example no active revision).
    #[error("{kind} {name:?} is not ready: {message}")]
    DependencyNotReady {
        kind: &'static str,
        name: String,
        message: String,
    },

    /// An Adapter was trained for another base model than the HybridModel serves.
    #[error(
        "Adapter {adapter:?} is trained for base model {adapter_base:?}, but this HybridModel serves {model_base:?}"
    )]
    BaseModelMismatch {
        adapter: String,
        adapter_base: String,
        model_base: String,
    },

    /// Sources could not be read to compute a content revision (missing ConfigMap key, ...).
    #[error("source unreadable: {0}")]
    SourceUnreadable(String),

    /// A Job's termination message did not follow the result contract.
    #[error("job result unreadable: {0}")]
    JobResult(String),

    /// Serializing a desired object or status failed; a bug, not a user error.
    #[error("serialization failed: {0}")]
    Serialization(String),

    /// An object the API server returned lacks a field it always sets (namespace, uid, ...).
    #[error("object is missing {0}")]
    MissingObjectKey(&'static str),

    /// A feature the API allows but this operator version does not implement yet.
    #[error("not implemented yet: {0}")]
    NotImplemented(String),
}

impl Error {
    /// Stable, bounded label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::InvalidSpec(_) => reasons::INVALID_SPEC,
            Error::ReferenceNotFound { .. } => reasons::REFERENCE_NOT_FOUND,
            Error::DependencyNotReady { .. } => reasons::DEPENDENCY_NOT_READY,
            Error::BaseModelMismatch { .. } => reasons::BASE_MODEL_MISMATCH,
            Error::SourceUnreadable(_) => reasons::SOURCE_UNREADABLE,
            Error::JobResult(_) => "JobResultInvalid",
            Error::Serialization(_) => "Serialization",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::NotImplemented(_) => "NotImplemented",
        }
    }

    /// Whether retrying without a change to the spec or its dependencies can help. Permanent
    /// errors set Stalled and wait for a watch event instead of a timed requeue.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Kube(_) | Error::Serialization(_) | Error::MissingObjectKey(_)
        )
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serialization(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_reuse_the_condition_reasons_users_match_on() {
        let e = Error::BaseModelMismatch {
            adapter: "a".into(),
            adapter_base: "file:///x".into(),
            model_base: "file:///y".into(),
        };
        assert_eq!(e.label(), "BaseModelMismatch");
        assert!(!e.is_transient());
        assert!(e.to_string().contains("file:///x") && e.to_string().contains("file:///y"));
        assert_eq!(
            Error::ReferenceNotFound {
                kind: "Corpus",
                name: "x".into()
            }
            .label(),
            "ReferenceNotFound"
        );
    }
}
