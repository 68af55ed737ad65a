//! Corpus: documents, how they are chunked and embedded, and where their index lives.

use crate::common::{
    ComputeResources, Conditions, DataSource, JobRecord, LocalObjectReference, Placement, Progress,
    RetryState,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Corpus is a set of documents indexed for retrieval. Its content revision is a digest of the
/// source contents, the chunking settings and the embedding model: a change to any of them
/// builds a new immutable index revision in a Job; an unchanged corpus builds nothing. The new
/// revision becomes active only when its Job succeeds, and the previous ones are kept for
/// rollback (`retainRevisions`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hybrid.dev",
    version = "v1alpha1",
    kind = "Corpus",
    plural = "corpora",
    singular = "corpus",
    shortname = "corp",
    category = "hybrid",
    namespaced,
    status = "CorpusStatus",
    doc = "Documents indexed for retrieval-augmented generation",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","description":"Active index revision","jsonPath":".status.activeRevision.revision"}"#,
    printcolumn = r#"{"name":"Documents","type":"integer","jsonPath":".status.activeRevision.documents"}"#,
    printcolumn = r#"{"name":"Chunks","type":"integer","jsonPath":".status.activeRevision.chunks"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CorpusSpec {
    /// Where the documents come from. Each entry sets exactly one source kind; documents from all
    /// entries form one corpus.
    #[schemars(length(min = 1, max = 64))]
    pub sources: Vec<DataSource>,
    /// How documents are split into passages before embedding.
    #[serde(default)]
    pub chunking: Chunking,
    /// Embedding model used for documents and queries. Changing it re-embeds every document.
    pub embedding: Embedding,
    /// Where index revisions are stored: an embedded Qdrant shard per revision (the default, loaded
    /// by each serving pod) or collections in a remote Qdrant cluster. Set exactly one.
    #[serde(default)]
    pub vector_store: VectorStore,
    /// How often HTTP sources are fetched again and PVC and S3 sources scanned again to detect
    /// changes, as a duration (`30s`, `15m`, `1h30m`; at least `10s`). A change starts a new index
    /// revision; an unchanged source starts nothing. ConfigMap sources are watched, so edits to
    /// them are seen at once either way. Unset: sources are read when the Corpus is created or
    /// its spec changes, never periodically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub refresh_interval: Option<String>,
    /// Number of previous index revisions kept for rollback besides the active one.
    #[serde(default = "default_retain_revisions")]
    #[schemars(range(min = 1, max = 20))]
    pub retain_revisions: i32,
    /// Resources and placement of index Jobs. Embedding runs on GPUs when `resources.gpus` > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexer: Option<IndexerSpec>,
}

fn default_retain_revisions() -> i32 {
    1
}

/// Passage splitting. Sizes are in tokens of the embedding model's tokenizer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.overlap < self.size")
    .message("chunking.overlap must be smaller than chunking.size"))]
pub struct Chunking {
    /// `fixed` windows of `size` tokens, `sentence` (packs whole sentences up to `size`) or
    /// `markdown` (splits at headings first, then packs sentences).
    #[serde(default)]
    pub strategy: ChunkingStrategy,
    /// Target passage length in tokens.
    #[serde(default = "default_chunk_size")]
    #[schemars(range(min = 16, max = 2048))]
    pub size: i32,
    /// Tokens shared by consecutive passages, so a fact cut at a boundary is still retrievable.
    #[serde(default = "default_chunk_overlap")]
    #[schemars(range(min = 0, max = 1024))]
    pub overlap: i32,
}

impl Default for Chunking {
    fn default() -> Self {
        Self {
            strategy: ChunkingStrategy::default(),
            size: default_chunk_size(),
            overlap: default_chunk_overlap(),
        }
    }
}

fn default_chunk_size() -> i32 {
    256
}
fn default_chunk_overlap() -> i32 {
    32
}

/// How documents are split into passages.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChunkingStrategy {
    /// Fixed token windows.
    Fixed,
    /// Whole sentences packed up to the size.
    Sentence,
    /// Markdown sections first, then sentences.
    #[default]
    Markdown,
}

/// The embedding model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Embedding {
    /// Location of a BERT-family sentence embedder directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`): `file:///path`, `pvc://<claim>/<path>`, `s3://<bucket>/<prefix>` or
    /// `http(s)://...`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(file://.+|s3://.+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[^/].*|https?://[^/@?#]+([/?#].*)?)$')")
        .message("embedding.model must be a URI with scheme file://, pvc://, s3://, http:// or https://: pvc://<claim>/<path> with a valid claim name and a path, http(s):// with no user:password@ in it"),
        validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')")
        .message("embedding.model must not contain a '..' segment: it would climb out of its volume or prefix"))]
    pub model: String,
    /// Vector dimensions the model produces (384 for all-MiniLM-L6-v2). Checked against the model
    /// when indexing.
    #[schemars(range(min = 8, max = 4096))]
    pub dimensions: i32,
}

/// Where index revisions live. Set exactly one of `embedded` or `qdrant`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.embedded) != has(self.qdrant)")
    .message("vectorStore must set exactly one of embedded or qdrant"),
    validation = Rule::new("!has(self.qdrant)")
    .message("qdrant is not implemented yet: the index Job publishes embedded Qdrant shards only; use vectorStore.embedded"))]
pub struct VectorStore {
    /// Embedded Qdrant (the default): each revision is a shard snapshot written to `storage` and
    /// loaded by every serving pod. Best up to a few million passages per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedStore>,
    /// Reserved: a remote Qdrant cluster, each revision a collection and an alias moved to it
    /// after the index Job succeeds. Not implemented yet, so admission refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<QdrantStore>,
}

impl Default for VectorStore {
    fn default() -> Self {
        Self {
            embedded: Some(EmbeddedStore::default()),
            qdrant: None,
        }
    }
}

/// Embedded Qdrant shard snapshots.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedStore {
    /// Base URI of the snapshots, one sub-path per revision: `pvc://<claim>/<path>`,
    /// `s3://<bucket>/<prefix>` or `file:///path`.
    #[serde(default = "default_embedded_storage")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(file://.+|s3://.+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*(/.*)?)$')")
        .message("vectorStore.embedded.storage must be a URI with scheme pvc://, s3:// or file://, for example pvc://hybrid-artifacts/indexes, with a valid claim name after pvc://"),
        validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')")
        .message("vectorStore.embedded.storage must not contain a '..' segment: it would climb out of its volume or prefix"))]
    pub storage: String,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        Self {
            storage: default_embedded_storage(),
        }
    }
}

fn default_embedded_storage() -> String {
    "pvc://hybrid-artifacts/indexes".to_owned()
}

/// A remote Qdrant cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QdrantStore {
    /// gRPC URL of Qdrant, for example `http://qdrant.search.svc:6334`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/@?#]+([/?#].*)?$')")
        .message("qdrant.url must start with http:// or https:// followed by a host, with no user:password@ in it (credentials belong in a Secret)"))]
    pub url: String,
    /// Secret with key `apiKey` holding the Qdrant API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<LocalObjectReference>,
    /// Shards per collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub shards: Option<i32>,
    /// Replicas per shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: Option<i32>,
}

/// Index Job resources and placement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexerSpec {
    /// CPU, memory and GPUs of the index Job's pod.
    #[serde(default)]
    pub resources: ComputeResources,
    /// Node selector and tolerations of the index Job's pod.
    #[serde(default, flatten)]
    pub placement: Placement,
}

/// Observed state of a Corpus.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CorpusStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled and Indexed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Conditions,
    /// Digest of the current source contents, chunking settings and embedding model. Differs from
    /// `activeRevision.contentRevision` while a new revision is being built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_revision: Option<String>,
    /// The index revision serving pods load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<IndexRevision>,
    /// Earlier revisions kept for rollback, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_revisions: Vec<IndexRevision>,
    /// Progress of the running index Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The most recent index Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobRecord>,
    /// Failed attempts at the current content revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryState>,
    /// HTTP sources as the operator last fetched them, in `spec.sources` order. Their body
    /// digests are part of `contentRevision`; they are fetched again every `refreshInterval`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_sources: Vec<HttpSourceState>,
    /// The last scan of the PVC and S3 sources (a small Job listing their documents). Its digest
    /// is part of `contentRevision`; the scan runs again every `refreshInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_scan: Option<SourceScan>,
}

/// An HTTP source as last fetched.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpSourceState {
    /// The URL fetched.
    pub url: String,
    /// sha256 of the response body.
    pub digest: String,
    /// `ETag` of the response, sent as `If-None-Match` on the next check so an unchanged
    /// document is not downloaded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Last-Modified` of the response, sent as `If-Modified-Since` on the next check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// The result of the last scan of the PVC and S3 sources.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceScan {
    /// Digest of the source locations the scan listed; after a change to them the scan is
    /// repeated before a new content revision is computed.
    pub sources: String,
    /// Digest of the listing: path or key, size, and modification time or ETag of each document.
    pub digest: String,
    /// Documents listed.
    #[serde(default)]
    pub documents: i64,
}

/// One immutable index revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexRevision {
    /// Revision id reported by the index Job (deterministic for the same inputs).
    pub revision: String,
    /// Content revision (source digest) the index was built from.
    pub content_revision: String,
    /// Snapshot URI (embedded store) or collection name (remote Qdrant).
    pub location: String,
    /// Documents indexed.
    #[serde(default)]
    pub documents: i64,
    /// Passages indexed.
    #[serde(default)]
    pub chunks: i64,
    /// Index Job that built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the revision became available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
}
