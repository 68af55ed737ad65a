//! `hybrid-runtime index`: build a new index revision from a corpus.
//!
//! Read sources → chunk → embed (only what changed since the previous revision) → write an
//! embedded Qdrant shard → pack it with its manifest → publish the archive at
//! `<output>/<revision>.tar.gz`. The revision id is a digest of the inputs, so an unchanged corpus
//! gives the same id. The job contract (flags, result and progress files) is in
//! docs/runtime-index.md.

pub mod manifest;
pub mod progress;
#[cfg(feature = "remote-qdrant")]
pub mod remote;
pub mod revision;
pub mod storage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::chunk::{self, ChunkStrategy, ChunkingConfig};
use crate::embed::{self, Embedder};
use crate::source::{self, Document, Source};
use crate::store::{ChunkPayload, EdgeStore, EdgeStoreOptions, StoredChunk, VectorStore};
use manifest::{DocumentEntry, EmbedderInfo, FORMAT_VERSION, MANIFEST_FILE, Manifest};
use progress::{Phase, Progress};
use revision::{LoadedRevision, SHARD_DIR};
use storage::Location;

/// Kubernetes reads at most 4096 bytes of a termination message.
pub const MAX_RESULT_BYTES: usize = 4096;

/// Chunks per forward pass. Chunks are sorted by length first, so a batch pads little; 32 was the
/// knee of the throughput curve on 2 cores (reference/runtime-feasibility.md §2b).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Points per upsert call into the shard.
const UPSERT_BATCH: usize = 1_000;

#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// Corpus index config (YAML); flags given here override its fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A source: local path (directory, file, ConfigMap mount), http(s) URL or s3://bucket/prefix.
    /// Repeatable; replaces the config's sources.
    #[arg(long = "source")]
    pub sources: Vec<String>,
    #[arg(long)]
    pub chunk_strategy: Option<ChunkStrategy>,
    /// Chunk size in embedder tokens.
    #[arg(long)]
    pub chunk_size: Option<usize>,
    /// Overlap between consecutive chunks in embedder tokens.
    #[arg(long)]
    pub chunk_overlap: Option<usize>,
    /// Embedding model: a local directory, or an s3:// / http(s):// prefix holding
    /// config.json, tokenizer.json and model.safetensors.
    #[arg(long, env = "HYBRID_EMBEDDER_DIR")]
    pub embedder: Option<String>,
    /// Where revisions are published: a local directory, file:// or s3://bucket/prefix (an
    /// archive per revision), or qdrant://host:port/<corpus> (a collection per revision behind
    /// the alias <corpus>).
    #[arg(long)]
    pub output: Option<String>,
    /// The previous revision (archive, or qdrant:// collection or alias); its unchanged
    /// documents are reused.
    #[arg(long)]
    pub previous: Option<String>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Where the JSON result (or error) is written.
    #[arg(long, default_value = "/dev/termination-log")]
    pub result_path: PathBuf,
    /// Where the JSON progress file is kept up to date.
    #[arg(long)]
    pub progress_path: Option<PathBuf>,
    /// Where the embedder computes: auto (a GPU when this binary has CUDA and one is visible,
    /// else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value_t)]
    pub device: crate::device::DeviceChoice,
    /// Scratch space for downloads and the revision being built (removed afterwards).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// The YAML config file (`--config`), camelCase like the Corpus resource.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexConfigFile {
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub chunking: Option<ChunkingConfig>,
    pub embedder: Option<String>,
    pub output: Option<String>,
    pub previous: Option<String>,
    pub batch_size: Option<usize>,
}

/// Everything one index run needs, validated.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    pub sources: Vec<Source>,
    pub chunking: ChunkingConfig,
    pub embedder: String,
    pub output: String,
    pub previous: Option<String>,
    pub batch_size: usize,
    pub progress_path: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub store: EdgeStoreOptions,
    pub device: crate::device::DeviceChoice,
}

impl IndexSettings {
    pub fn from_args(args: &IndexArgs) -> Result<Self, IndexError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| IndexError::InvalidConfig(format!("{}: {e}", path.display())))?;
                serde_yaml::from_str::<IndexConfigFile>(&text)
                    .map_err(|e| IndexError::InvalidConfig(format!("{}: {e}", path.display())))?
            }
            None => IndexConfigFile::default(),
        };
        let raw_sources = if args.sources.is_empty() {
            file.sources
        } else {
            args.sources.clone()
        };
        if raw_sources.is_empty() {
            return Err(IndexError::InvalidConfig(
                "no sources: give --source or `sources` in the config".into(),
            ));
        }
        let sources = raw_sources
            .iter()
            .map(|s| s.parse::<Source>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IndexError::InvalidConfig(e.to_string()))?;
        let mut chunking = file.chunking.unwrap_or_default();
        if let Some(s) = args.chunk_strategy {
            chunking.strategy = s;
        }
        if let Some(n) = args.chunk_size {
            chunking.size_tokens = n;
        }
        if let Some(n) = args.chunk_overlap {
            chunking.overlap_tokens = n;
        }
        chunking.validate().map_err(IndexError::InvalidConfig)?;
        let embedder = args.embedder.clone().or(file.embedder).ok_or_else(|| {
            IndexError::InvalidConfig(
                "no embedder: give --embedder, HYBRID_EMBEDDER_DIR or `embedder`".into(),
            )
        })?;
        let output = args.output.clone().or(file.output).ok_or_else(|| {
            IndexError::InvalidConfig("no output: give --output or `output` in the config".into())
        })?;
        if crate::store::is_remote(&output) {
            check_remote_output(&output)?;
        } else {
            Location::parse(&output)
                .map_err(|e| IndexError::InvalidConfig(format!("output: {e}")))?;
        }
        let batch_size = args
            .batch_size
            .or(file.batch_size)
            .unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(IndexError::InvalidConfig(
                "batchSize must be at least 1".into(),
            ));
        }
        Ok(Self {
            sources,
            chunking,
            embedder,
            output,
            previous: args.previous.clone().or(file.previous),
            batch_size,
            progress_path: args.progress_path.clone(),
            work_dir: args
                .work_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("hybrid-index")),
            store: EdgeStoreOptions::default(),
            device: args.device,
        })
    }
}

/// The job's result, written to the termination message path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexResult {
    pub kind: String,
    pub revision: String,
    pub documents: usize,
    pub chunks: usize,
    /// Chunks whose vectors were copied from the previous revision.
    pub reused: usize,
    /// Chunks embedded in this run.
    pub reembedded: usize,
    pub duration_seconds: f64,
    pub location: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("invalid index config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("empty corpus: no text found in {0}")]
    EmptyCorpus(String),
    #[error("embedder {location}: {message}")]
    Embedder { location: String, message: String },
    #[error("chunking {document}: {message}")]
    Chunking { document: String, message: String },
    #[error(transparent)]
    Embedding(embed::EmbedError),
    #[error("writing the revision: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("writing the revision: {0}")]
    Revision(#[from] revision::RevisionError),
    #[error("publishing to {0}")]
    Publish(storage::StorageError),
    #[error("work directory {path}: {message}")]
    WorkDir { path: String, message: String },
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
}

impl IndexError {
    /// Stable short label, for the operator's condition reason and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidConfig(_) => "InvalidConfig",
            Self::Source(source::SourceError::Invalid { .. }) => "InvalidSource",
            Self::Source(source::SourceError::DuplicateId { .. }) => "DuplicateDocument",
            Self::Source(_) => "SourceUnreadable",
            Self::EmptyCorpus(_) => "EmptyCorpus",
            Self::Embedder { .. } => "EmbedderUnavailable",
            Self::Chunking { .. } => "ChunkingFailed",
            Self::Embedding(_) => "EmbeddingFailed",
            Self::Store(_) | Self::Revision(_) => "WriteFailed",
            Self::Publish(_) => "PublishFailed",
            Self::WorkDir { .. } => "WorkDirUnavailable",
            Self::Device(_) => "DeviceUnavailable",
        }
    }
}

fn work_err(path: &Path, e: impl std::fmt::Display) -> IndexError {
    IndexError::WorkDir {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Entry point of the subcommand: runs, writes the result (or error) file, returns the exit code.
pub fn run(args: IndexArgs) -> i32 {
    let result_path = args.result_path.clone();
    let outcome = IndexSettings::from_args(&args).and_then(|settings| {
        let mut progress = Progress::new(settings.progress_path.clone());
        let outcome = build_revision(&settings, &mut progress);
        if outcome.is_err() {
            progress.phase(Phase::Failed);
        }
        outcome
    });
    let (json, code) = match &outcome {
        Ok(result) => {
            tracing::info!(
                revision = %result.revision, documents = result.documents, chunks = result.chunks,
                reused = result.reused, reembedded = result.reembedded,
                duration_seconds = result.duration_seconds, location = %result.location, "index revision published"
            );
            (serde_json::to_string(result).unwrap_or_default(), 0)
        }
        Err(e) => {
            tracing::error!(reason = e.reason(), error = %e, "index failed");
            (error_json(e), 1)
        }
    };
    if let Err(e) = std::fs::write(&result_path, json.as_bytes()) {
        tracing::warn!(path = %result_path.display(), error = %e, "cannot write the result file");
    }
    println!("{json}");
    code
}

/// `{"kind":"IndexError","reason":..,"message":..}`, cut to fit a termination message.
pub fn error_json(e: &IndexError) -> String {
    let mut message = e.to_string();
    loop {
        let json =
            serde_json::json!({"kind": "IndexError", "reason": e.reason(), "message": message})
                .to_string();
        if json.len() < MAX_RESULT_BYTES || message.is_empty() {
            return json;
        }
        let mut cut = message
            .len()
            .saturating_sub(json.len() - MAX_RESULT_BYTES + 16);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
}

/// A chunk waiting for its vector.
struct PendingChunk {
    point_id: u64,
    document: usize,
    tokens: usize,
    payload: ChunkPayload,
}

/// Builds and publishes a revision. Nothing is written under `output` unless every step succeeded.
pub fn build_revision(
    settings: &IndexSettings,
    progress: &mut Progress,
) -> Result<IndexResult, IndexError> {
    let started = Instant::now();
    let placement = crate::device::select(settings.device, "--device")?;
    crate::device::log_placement("index", settings.device, &placement);
    std::fs::create_dir_all(&settings.work_dir).map_err(|e| work_err(&settings.work_dir, e))?;
    let scratch = tempfile::Builder::new()
        .prefix("index-")
        .tempdir_in(&settings.work_dir)
        .map_err(|e| work_err(&settings.work_dir, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| work_err(&settings.work_dir, e))?;

    progress.phase(Phase::Reading);
    let documents = runtime.block_on(source::read_sources(&settings.sources))?;
    let sources_text = || {
        settings
            .sources
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if documents.iter().all(|d| d.text.trim().is_empty()) {
        return Err(IndexError::EmptyCorpus(sources_text()));
    }

    let embedder_dir = runtime.block_on(fetch_embedder(&settings.embedder, scratch.path()))?;
    let embedder_err = |e: embed::EmbedError| IndexError::Embedder {
        location: settings.embedder.clone(),
        message: e.to_string(),
    };
    let embedder = Embedder::load_for(&embedder_dir, &placement).map_err(embedder_err)?;
    let embedder_info = EmbedderInfo {
        digest: embed::model_digest(&embedder_dir).map_err(embedder_err)?,
        dimension: embedder.dimension(),
    };
    let revision = manifest::revision_id(&embedder_info, &settings.chunking, &documents);
    tracing::info!(%revision, documents = documents.len(), "corpus read");

    let previous = settings.previous.as_deref().and_then(|location| {
        match runtime.block_on(LoadedRevision::open(location, &scratch.path().join("previous"))) {
            Ok(p) if p.manifest().compatible_with(&embedder_info, &settings.chunking) => Some(p),
            Ok(_) => {
                tracing::info!(previous = location, "embedding model or chunking changed: re-embedding everything");
                None
            }
            Err(e) => {
                tracing::warn!(previous = location, error = %e, "previous revision unusable: re-embedding everything");
                None
            }
        }
    });

    progress.phase(Phase::Chunking);
    let mut entries = Vec::with_capacity(documents.len());
    let mut reused: Vec<StoredChunk> = Vec::new();
    let mut pending: Vec<PendingChunk> = Vec::new();
    let mut settled_documents = 0;
    let mut next_point = 0u64;
    for (doc_index, doc) in documents.iter().enumerate() {
        let first_point = next_point;
        let reusable = previous.as_ref().and_then(|p| {
            p.manifest()
                .document(&doc.id)
                .filter(|e| e.digest == doc.digest)
                .map(|e| (p, e.clone()))
        });
        let chunks = match reusable {
            Some((prev, entry)) => {
                let ids: Vec<u64> =
                    (entry.first_point..entry.first_point + entry.chunks as u64).collect();
                let stored = prev.store().get(&ids)?;
                if stored.len() != ids.len() {
                    return Err(IndexError::Revision(revision::RevisionError::Archive {
                        location: prev.location().to_string(),
                        message: format!("document {} is missing chunks", doc.id),
                    }));
                }
                for (offset, mut chunk) in stored.into_iter().enumerate() {
                    chunk.point_id = first_point + offset as u64;
                    chunk.payload.title.clone_from(&doc.title);
                    chunk.payload.source_uri.clone_from(&doc.source_uri);
                    reused.push(chunk);
                }
                settled_documents += 1;
                entry.chunks
            }
            None => {
                let chunks = chunk::chunk_text(&doc.text, &settings.chunking, &embedder).map_err(
                    |message| IndexError::Chunking {
                        document: doc.source_uri.clone(),
                        message,
                    },
                )?;
                let n = chunks.len();
                if n == 0 {
                    // Nothing to embed: done already.
                    settled_documents += 1;
                }
                for (offset, c) in chunks.into_iter().enumerate() {
                    pending.push(PendingChunk {
                        point_id: first_point + offset as u64,
                        document: doc_index,
                        tokens: c.tokens,
                        payload: payload(doc, c.index, c.section, c.text),
                    });
                }
                n
            }
        };
        next_point += chunks as u64;
        entries.push(DocumentEntry {
            id: doc.id.clone(),
            digest: doc.digest.clone(),
            source_uri: doc.source_uri.clone(),
            title: doc.title.clone(),
            first_point,
            chunks,
        });
    }
    let total_chunks = next_point as usize;
    if total_chunks == 0 {
        return Err(IndexError::EmptyCorpus(sources_text()));
    }
    progress.set_totals(documents.len(), total_chunks);
    progress.advance(settled_documents, reused.len());

    let shard_root = scratch.path().join("revision");
    let mut store = EdgeStore::create(
        &shard_root.join(SHARD_DIR),
        embedder.dimension(),
        settings.store,
    )?;
    let reused_count = reused.len();
    for batch in chunks_of(reused, UPSERT_BATCH) {
        store.upsert(batch)?;
    }

    progress.phase(Phase::Embedding);
    let reembedded = pending.len();
    embed_pending(
        &embedder,
        pending,
        settings.batch_size,
        &entries,
        &store,
        progress,
    )?;

    progress.phase(Phase::Writing);
    store.seal()?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        revision: revision.clone(),
        embedder: embedder_info,
        chunking: settings.chunking.clone(),
        chunks: total_chunks,
        documents: entries,
    };
    if crate::store::is_remote(&settings.output) {
        progress.phase(Phase::Publishing);
        let location = publish_remote(&settings.output, &manifest, &store)?;
        progress.phase(Phase::Done);
        return Ok(IndexResult {
            kind: "IndexResult".into(),
            revision,
            documents: documents.len(),
            chunks: total_chunks,
            reused: reused_count,
            reembedded,
            duration_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            location,
        });
    }
    drop(store);
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| work_err(&shard_root, e))?;
    std::fs::write(shard_root.join(MANIFEST_FILE), manifest_json)
        .map_err(|e| work_err(&shard_root, e))?;
    let archive = scratch.path().join(revision::archive_name(&revision));
    revision::pack(&shard_root, &archive)?;

    progress.phase(Phase::Publishing);
    let output = Location::parse(&settings.output).map_err(IndexError::Publish)?;
    let target = output.join(&revision::archive_name(&revision));
    if runtime
        .block_on(storage::exists(&target))
        .map_err(IndexError::Publish)?
    {
        tracing::info!(location = %target, "revision already published; revisions are immutable, keeping it");
    } else {
        runtime
            .block_on(storage::publish(&archive, &target))
            .map_err(IndexError::Publish)?;
    }
    progress.phase(Phase::Done);
    Ok(IndexResult {
        kind: "IndexResult".into(),
        revision,
        documents: documents.len(),
        chunks: total_chunks,
        reused: reused_count,
        reembedded,
        duration_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        location: target.to_string(),
    })
}

#[cfg(feature = "remote-qdrant")]
fn check_remote_output(output: &str) -> Result<(), IndexError> {
    remote::parse_output(output)
        .map(|_| ())
        .map_err(|e| IndexError::InvalidConfig(format!("output: {e}")))
}

#[cfg(not(feature = "remote-qdrant"))]
fn check_remote_output(output: &str) -> Result<(), IndexError> {
    Err(IndexError::InvalidConfig(format!(
        "output: {output}: this build has no remote Qdrant support (cargo feature `remote-qdrant`)"
    )))
}

#[cfg(feature = "remote-qdrant")]
fn publish_remote(
    output: &str,
    manifest: &Manifest,
    store: &EdgeStore,
) -> Result<String, IndexError> {
    remote::publish(output, manifest, store)
}

#[cfg(not(feature = "remote-qdrant"))]
fn publish_remote(
    output: &str,
    _manifest: &Manifest,
    _store: &EdgeStore,
) -> Result<String, IndexError> {
    check_remote_output(output).map(|()| String::new())
}

fn payload(
    doc: &Document,
    chunk_index: usize,
    section: Option<String>,
    text: String,
) -> ChunkPayload {
    ChunkPayload {
        document_id: doc.id.clone(),
        chunk_id: format!("{}#{chunk_index}", doc.id),
        chunk_index,
        title: doc.title.clone(),
        source_uri: doc.source_uri.clone(),
        section,
        text,
    }
}

fn chunks_of<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(items.len().div_ceil(size));
    let mut iter = items.into_iter().peekable();
    while iter.peek().is_some() {
        out.push(iter.by_ref().take(size).collect());
    }
    out
}

/// Embeds chunks in length-sorted batches and writes them to the store as they complete.
fn embed_pending(
    embedder: &Embedder,
    mut pending: Vec<PendingChunk>,
    batch_size: usize,
    entries: &[DocumentEntry],
    store: &EdgeStore,
    progress: &mut Progress,
) -> Result<(), IndexError> {
    // Similar lengths share a batch, so little compute goes to padding. Stable sort by point id
    // as the tie-breaker keeps the batching deterministic.
    pending.sort_by_key(|c| (c.tokens, c.point_id));
    let mut remaining: HashMap<usize, usize> = HashMap::new();
    for c in &pending {
        *remaining.entry(c.document).or_default() += 1;
    }
    debug_assert!(remaining.keys().all(|&d| d < entries.len()));
    for batch in chunks_of(pending, batch_size) {
        let texts: Vec<&str> = batch.iter().map(|c| c.payload.text.as_str()).collect();
        let vectors = embedder.embed(&texts).map_err(IndexError::Embedding)?;
        let mut finished_docs = 0;
        let n = batch.len();
        let mut stored = Vec::with_capacity(n);
        for (chunk, vector) in batch.into_iter().zip(vectors) {
            if let Some(left) = remaining.get_mut(&chunk.document) {
                *left -= 1;
                if *left == 0 {
                    finished_docs += 1;
                }
            }
            stored.push(StoredChunk {
                point_id: chunk.point_id,
                vector,
                payload: chunk.payload,
            });
        }
        store.upsert(stored)?;
        progress.advance(finished_docs, n);
    }
    Ok(())
}

/// The embedder as a local directory: itself if local, else its three files downloaded.
async fn fetch_embedder(location: &str, scratch: &Path) -> Result<PathBuf, IndexError> {
    let err = |message: String| IndexError::Embedder {
        location: location.to_string(),
        message,
    };
    let parsed = Location::parse(location).map_err(|e| err(e.to_string()))?;
    if let Location::Local(dir) = &parsed {
        return Ok(dir.clone());
    }
    let dir = scratch.join("embedder");
    for name in embed::MODEL_FILES {
        let file = storage::fetch(&parsed.join(name), &dir)
            .await
            .map_err(|e| err(e.to_string()))?;
        if file != dir.join(name) {
            std::fs::rename(&file, dir.join(name)).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_fits_a_termination_message() {
        let e = IndexError::EmptyCorpus("x".repeat(10_000));
        let json = error_json(&e);
        assert!(json.len() < MAX_RESULT_BYTES, "{}", json.len());
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(value["kind"], "IndexError");
        assert_eq!(value["reason"], "EmptyCorpus");
    }

    #[test]
    fn config_file_and_flags_merge_with_flags_winning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corpus-index.yaml");
        std::fs::write(
            &path,
            "sources: [/data/docs, s3://bucket/docs]\nchunking: {strategy: sentence, sizeTokens: 128, overlapTokens: 16}\nembedder: /models/minilm\noutput: s3://bucket/indexes\n",
        )
        .expect("write");
        let args = IndexArgs {
            config: Some(path.clone()),
            sources: vec![],
            chunk_strategy: None,
            chunk_size: Some(200),
            chunk_overlap: None,
            embedder: None,
            output: None,
            previous: None,
            batch_size: None,
            result_path: "/dev/null".into(),
            progress_path: None,
            device: Default::default(),
            work_dir: None,
        };
        let settings = IndexSettings::from_args(&args).expect("valid");
        assert_eq!(settings.sources.len(), 2);
        assert_eq!(
            settings.chunking,
            ChunkingConfig {
                strategy: ChunkStrategy::Sentence,
                size_tokens: 200,
                overlap_tokens: 16
            }
        );
        assert_eq!(settings.output, "s3://bucket/indexes");

        std::fs::write(
            &path,
            "sources: [/x]\nembedder: /m\noutput: /o\nchunking: {overlapTokens: 300}\n",
        )
        .expect("write");
        let err =
            IndexSettings::from_args(&args).expect_err("overlap not below the size from the flag");
        assert_eq!(err.reason(), "InvalidConfig");
        std::fs::write(&path, "sources: [/x]\nembeder: /m\n").expect("write");
        let err = IndexSettings::from_args(&args).expect_err("typo");
        assert!(err.to_string().contains("embeder"), "{err}");
    }
}
