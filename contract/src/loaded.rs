//! The loaded-revisions report: what a serving pod has actually loaded, written by the runtime as
//! JSON in an annotation on its own Pod (and served at `/v1/admin/revisions`), read by the
//! operator into `status.loaded` and the `Serving` condition (docs/runtime-contract.md §3).

use serde::{Deserialize, Serialize};

/// The annotation a serving pod writes its report to.
pub const LOADED_REVISIONS_ANNOTATION: &str = "hybrid.dev/loaded-revisions";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LoadedRevisions {
    /// The serving revision of the config these revisions came from (its `servingRevision`).
    #[serde(default)]
    pub serving_revision: String,
    /// Adapter name and revision.
    #[serde(default)]
    pub adapters: Vec<NamedRevision>,
    /// Corpus name and index revision.
    #[serde(default)]
    pub indexes: Vec<NamedRevision>,
    /// Where the pod computes (`cpu`, `cuda:0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// An adapter's or corpus's name and one of its revisions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedRevision {
    pub name: String,
    pub revision: String,
}

impl LoadedRevisions {
    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A pod's annotation value; the error says why it is unusable.
    pub fn from_annotation(value: &str) -> Result<Self, String> {
        serde_json::from_str(value)
            .map_err(|e| format!("unreadable {LOADED_REVISIONS_ANNOTATION} annotation: {e}"))
    }
}
