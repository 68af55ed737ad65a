//! Vector stores for index revisions.
//!
//! [`VectorStore`] is what `index` writes through and `serve` searches through. [`EdgeStore`] is
//! the embedded Qdrant engine (qdrant-edge): one shard directory per index revision, packed into a
//! snapshot archive by [`crate::index`]. [`remote::RemoteStore`] (cargo feature `remote-qdrant`,
//! on by default) is a collection on a Qdrant server (see docs/runtime-index.md).

#[cfg(feature = "remote-qdrant")]
pub mod remote;

/// True for `qdrant://` and `qdrants://` locations (a collection on a Qdrant server), whether or
/// not this build can reach one.
pub fn is_remote(location: &str) -> bool {
    location.starts_with("qdrant://") || location.starts_with("qdrants://")
}

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use qdrant_edge::{
    CountRequestBuilder, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder, EdgeOptimizersConfig,
    EdgeShard, EdgeVectorParamsBuilder, NamedQuery, PointId, PointInsertOperations,
    PointOperations, PointStruct, QueryEnum, QueryRequestBuilder, RetrieveRequestBuilder,
    ScoringQuery, SearchParams, UpdateOperation, VectorInternal, VectorStructInternal,
    WithPayloadInterface, WithVector,
};
use serde::{Deserialize, Serialize};

/// Below this many points a search is an exact scan: under a millisecond at this size on 2 cores
/// (reference/runtime-feasibility.md §4) and recall is 1.0. Above it the shard builds HNSW.
pub const DEFAULT_EXACT_SEARCH_LIMIT: usize = 20_000;

/// HNSW beam width at query time. 512 measured recall@10 ≥ 0.96 even on uniformly random 384-d
/// vectors, the hardest case; text embeddings cluster and do better.
pub const DEFAULT_HNSW_EF: usize = 512;

/// Most hits one search returns: above a request's `top_k` ([`hybrid_contract::limits::MAX_TOP_K`])
/// when a document filter over-fetches, and still a bounded read, not a scan.
pub const MAX_SEARCH_HITS: usize = 1_000;

/// What is stored with every vector, and returned with every hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkPayload {
    pub document_id: String,
    pub chunk_id: String,
    pub chunk_index: usize,
    pub title: String,
    pub source_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub point_id: u64,
    pub vector: Vec<f32>,
    pub payload: ChunkPayload,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub point_id: u64,
    pub score: f32,
    pub payload: ChunkPayload,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vector store at {path}: {message}")]
    Engine { path: PathBuf, message: String },
    #[error("vector has {got} dimensions, the store expects {expected}")]
    Dimension { expected: usize, got: usize },
    #[error("top_k must be between 1 and {MAX_SEARCH_HITS}, got {0}")]
    TopK(usize),
    #[error("qdrant {location}: {message}")]
    Remote { location: String, message: String },
    #[error("point {id} in {path} has a malformed payload or vector: {message}")]
    Corrupt {
        path: PathBuf,
        id: u64,
        message: String,
    },
}

/// A collection of chunk vectors with payloads, searchable by similarity.
pub trait VectorStore: Send + Sync {
    fn dimension(&self) -> usize;
    fn upsert(&self, chunks: Vec<StoredChunk>) -> Result<(), StoreError>;
    /// Makes everything written durable and builds the search index the size calls for.
    fn seal(&mut self) -> Result<(), StoreError>;
    fn count(&self) -> Result<usize, StoreError>;
    /// Hits, best first. Scores are cosine similarities for normalised vectors.
    fn search(&self, query: &[f32], top_k: usize) -> Result<Vec<SearchHit>, StoreError>;
    /// The stored vectors and payloads of the given points; unknown ids are left out.
    fn get(&self, point_ids: &[u64]) -> Result<Vec<StoredChunk>, StoreError>;
}

#[derive(Debug, Clone, Copy)]
pub struct EdgeStoreOptions {
    pub exact_search_limit: usize,
    pub hnsw_ef: usize,
}

impl Default for EdgeStoreOptions {
    fn default() -> Self {
        Self {
            exact_search_limit: DEFAULT_EXACT_SEARCH_LIMIT,
            hnsw_ef: DEFAULT_HNSW_EF,
        }
    }
}

/// An embedded Qdrant shard in a local directory.
pub struct EdgeStore {
    shard: EdgeShard,
    path: PathBuf,
    dimension: usize,
    options: EdgeStoreOptions,
    points: usize,
}

impl EdgeStore {
    /// Creates an empty shard in `dir` (which must not hold one already).
    pub fn create(
        dir: &Path,
        dimension: usize,
        options: EdgeStoreOptions,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| engine(dir, e))?;
        // Vectors are L2-normalised by the embedder, so the dot product is the cosine. Dot also
        // stores vectors untouched (Cosine re-normalises them), which keeps reused vectors
        // bit-identical across revisions.
        let vector = EdgeVectorParamsBuilder::new(dimension, Distance::Dot).build();
        // The indexing threshold (KiB of vectors) is where qdrant builds HNSW on optimize.
        let indexing_kb =
            (options.exact_search_limit * dimension * std::mem::size_of::<f32>()).div_ceil(1024);
        let config = EdgeConfigBuilder::new()
            .vector(DEFAULT_VECTOR_NAME, vector)
            .optimizers(EdgeOptimizersConfig {
                indexing_threshold: Some(indexing_kb.max(1)),
                default_segment_number: Some(1),
                ..Default::default()
            })
            // A revision is written once and then only read: no write-ahead log to replay or ship.
            .wal_enabled(false)
            .build();
        let shard = EdgeShard::new(dir, config).map_err(|e| engine(dir, e))?;
        Ok(Self {
            shard,
            path: dir.to_path_buf(),
            dimension,
            options,
            points: 0,
        })
    }

    /// Opens a shard written by [`EdgeStore::create`] + [`VectorStore::seal`].
    pub fn open(dir: &Path, options: EdgeStoreOptions) -> Result<Self, StoreError> {
        let shard = EdgeShard::load(dir, None).map_err(|e| engine(dir, e))?;
        let dimension = {
            let config = shard.config();
            config.vectors.get(DEFAULT_VECTOR_NAME).map(|v| v.size)
        }
        .ok_or_else(|| engine(dir, "the shard has no default dense vector"))?;
        let mut store = Self {
            shard,
            path: dir.to_path_buf(),
            dimension,
            options,
            points: 0,
        };
        store.points = store.count_exact()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when searches go through the HNSW graph rather than an exact scan.
    pub fn uses_hnsw(&self) -> bool {
        self.points >= self.options.exact_search_limit
    }

    /// Vectors reachable through an HNSW graph (0 while every search is an exact scan).
    pub fn indexed_vectors(&self) -> Result<usize, StoreError> {
        self.shard
            .info()
            .map(|i| i.indexed_vectors_count)
            .map_err(|e| engine(&self.path, e))
    }

    /// Exact scan regardless of size; the reference for recall measurements.
    pub fn search_exact(&self, query: &[f32], top_k: usize) -> Result<Vec<SearchHit>, StoreError> {
        self.query(
            query,
            top_k,
            SearchParams {
                exact: true,
                ..Default::default()
            },
        )
    }

    fn count_exact(&self) -> Result<usize, StoreError> {
        self.shard
            .count(CountRequestBuilder::new().exact(true).build())
            .map_err(|e| engine(&self.path, e))
    }

    fn query(
        &self,
        query: &[f32],
        top_k: usize,
        params: SearchParams,
    ) -> Result<Vec<SearchHit>, StoreError> {
        if query.len() != self.dimension {
            return Err(StoreError::Dimension {
                expected: self.dimension,
                got: query.len(),
            });
        }
        if top_k == 0 || top_k > MAX_SEARCH_HITS {
            return Err(StoreError::TopK(top_k));
        }
        let request = QueryRequestBuilder::new(top_k)
            .query(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                query: VectorInternal::from(query.to_vec()),
                using: None,
            })))
            .with_payload(WithPayloadInterface::Bool(true))
            .params(params)
            .build();
        let points = self
            .shard
            .query(request)
            .map_err(|e| engine(&self.path, e))?;
        points
            .into_iter()
            .map(|p| {
                let point_id = num_id(&self.path, p.id)?;
                let payload = decode_payload(&self.path, point_id, p.payload)?;
                Ok(SearchHit {
                    point_id,
                    score: p.score,
                    payload,
                })
            })
            .collect()
    }
}

impl VectorStore for EdgeStore {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn upsert(&self, chunks: Vec<StoredChunk>) -> Result<(), StoreError> {
        let mut points = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            if chunk.vector.len() != self.dimension {
                return Err(StoreError::Dimension {
                    expected: self.dimension,
                    got: chunk.vector.len(),
                });
            }
            let payload =
                serde_json::to_value(&chunk.payload).map_err(|e| engine(&self.path, e))?;
            points.push(PointStruct::new(chunk.point_id, chunk.vector, payload).into());
        }
        self.shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .map_err(|e| engine(&self.path, e))
    }

    fn seal(&mut self) -> Result<(), StoreError> {
        self.points = self.count_exact()?;
        if self.uses_hnsw() {
            self.shard.optimize().map_err(|e| engine(&self.path, e))?;
        }
        self.shard.flush().map_err(|e| engine(&self.path, e))
    }

    fn count(&self) -> Result<usize, StoreError> {
        Ok(self.points)
    }

    fn search(&self, query: &[f32], top_k: usize) -> Result<Vec<SearchHit>, StoreError> {
        let params = if self.uses_hnsw() {
            SearchParams {
                hnsw_ef: Some(self.options.hnsw_ef.max(top_k)),
                ..Default::default()
            }
        } else {
            SearchParams {
                exact: true,
                ..Default::default()
            }
        };
        self.query(query, top_k, params)
    }

    fn get(&self, point_ids: &[u64]) -> Result<Vec<StoredChunk>, StoreError> {
        let request =
            RetrieveRequestBuilder::new(point_ids.iter().map(|&id| PointId::NumId(id)).collect())
                .with_payload(WithPayloadInterface::Bool(true))
                .with_vector(WithVector::Bool(true))
                .build();
        let records = self
            .shard
            .retrieve(request)
            .map_err(|e| engine(&self.path, e))?;
        let mut by_id = HashMap::with_capacity(records.len());
        for record in records {
            let point_id = num_id(&self.path, record.id)?;
            let vector = match record.vector {
                Some(VectorStructInternal::Single(v)) => v,
                Some(VectorStructInternal::Named(mut named)) => {
                    match named.remove(DEFAULT_VECTOR_NAME) {
                        Some(VectorInternal::Dense(v)) => v,
                        _ => return Err(corrupt(&self.path, point_id, "no dense default vector")),
                    }
                }
                _ => return Err(corrupt(&self.path, point_id, "no dense vector")),
            };
            let payload = decode_payload(&self.path, point_id, record.payload)?;
            by_id.insert(
                point_id,
                StoredChunk {
                    point_id,
                    vector,
                    payload,
                },
            );
        }
        // Keep the caller's order.
        Ok(point_ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }
}

fn engine(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn corrupt(path: &Path, id: u64, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        id,
        message: message.to_string(),
    }
}

fn num_id(path: &Path, id: PointId) -> Result<u64, StoreError> {
    match id {
        PointId::NumId(n) => Ok(n),
        PointId::Uuid(u) => Err(engine(path, format!("unexpected UUID point id {u}"))),
    }
}

fn decode_payload(
    path: &Path,
    id: u64,
    payload: Option<qdrant_edge::Payload>,
) -> Result<ChunkPayload, StoreError> {
    let map = payload
        .ok_or_else(|| corrupt(path, id, "missing payload"))?
        .0;
    serde_json::from_value(serde_json::Value::Object(map.into_iter().collect()))
        .map_err(|e| corrupt(path, id, e))
}
