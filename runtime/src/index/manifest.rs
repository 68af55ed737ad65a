//! The manifest stored in every index revision, and the revision id derived from it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::ChunkingConfig;
use crate::source::Document;

/// Bumped whenever the archive layout or chunk payload changes meaning; part of the revision id,
/// so a new format never reuses vectors written by an old one.
pub const FORMAT_VERSION: u32 = 1;

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedderInfo {
    /// SHA-256 over the model's config, tokenizer and weights.
    pub digest: String,
    pub dimension: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentEntry {
    pub id: String,
    pub digest: String,
    pub source_uri: String,
    pub title: String,
    /// Point ids of this document's chunks are `first_point .. first_point + chunks`.
    pub first_point: u64,
    pub chunks: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub revision: String,
    pub embedder: EmbedderInfo,
    pub chunking: ChunkingConfig,
    pub chunks: usize,
    pub documents: Vec<DocumentEntry>,
}

impl Manifest {
    /// Whether chunks of this revision can be reused by a revision built with `embedder` and
    /// `chunking`: same vectors and same chunk boundaries, or nothing.
    pub fn compatible_with(&self, embedder: &EmbedderInfo, chunking: &ChunkingConfig) -> bool {
        self.format_version == FORMAT_VERSION
            && &self.embedder == embedder
            && &self.chunking == chunking
    }

    pub fn document(&self, id: &str) -> Option<&DocumentEntry> {
        self.documents
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.documents[i])
    }
}

/// Content-addressed revision id: the same documents (ids, bytes, origins), chunking and embedding
/// model always give the same id, and any change to them gives a new one. `documents` must be
/// sorted by id (as [`crate::source::read_sources`] returns them).
pub fn revision_id(
    embedder: &EmbedderInfo,
    chunking: &ChunkingConfig,
    documents: &[Document],
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(&FORMAT_VERSION.to_le_bytes());
    field(embedder.digest.as_bytes());
    field(&(embedder.dimension as u64).to_le_bytes());
    field(format!("{:?}", chunking.strategy).as_bytes());
    field(&(chunking.size_tokens as u64).to_le_bytes());
    field(&(chunking.overlap_tokens as u64).to_le_bytes());
    for doc in documents {
        field(doc.id.as_bytes());
        field(doc.digest.as_bytes());
        field(doc.source_uri.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("ix-{}", &digest[..20])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkStrategy;
    use crate::source::{DocumentFormat, parse_document};

    fn doc(id: &str, body: &str) -> Document {
        parse_document(
            id.into(),
            format!("file:///c/{id}"),
            DocumentFormat::Text,
            body.as_bytes(),
        )
        .expect("doc")
    }

    #[test]
    fn revision_id_depends_on_content_chunking_and_model_only() {
        let embedder = EmbedderInfo {
            digest: "m1".into(),
            dimension: 384,
        };
        let chunking = ChunkingConfig::default();
        let docs = vec![doc("a.txt", "alpha"), doc("b.txt", "beta")];
        let id = revision_id(&embedder, &chunking, &docs);
        assert_eq!(id, revision_id(&embedder, &chunking, &docs.clone()));
        assert!(id.starts_with("ix-") && id.len() == 23, "{id}");

        let edited = vec![doc("a.txt", "alpha"), doc("b.txt", "beta!")];
        assert_ne!(id, revision_id(&embedder, &chunking, &edited));
        let other_model = EmbedderInfo {
            digest: "m2".into(),
            dimension: 384,
        };
        assert_ne!(id, revision_id(&other_model, &chunking, &docs));
        let other_chunking = ChunkingConfig {
            strategy: ChunkStrategy::Fixed,
            ..chunking.clone()
        };
        assert_ne!(id, revision_id(&embedder, &other_chunking, &docs));
        let fewer = vec![doc("a.txt", "alpha")];
        assert_ne!(id, revision_id(&embedder, &chunking, &fewer));
    }
}
