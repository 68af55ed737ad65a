//! A remote Qdrant server as a [`VectorStore`] (`qdrant-client`, gRPC).
//!
//! Layout on the server, for a corpus named `<corpus>`:
//! - every index revision is its own collection, `<corpus>-<revision>` (e.g.
//!   `finance-notes-ix-3f0c2a9be41d7a55c8e1`), written once and then only read;
//! - the revision's manifest (the same JSON the archive holds) is the collection's metadata under
//!   [`MANIFEST_METADATA_KEY`], so a collection alone is enough for incremental reuse;
//! - the alias `<corpus>` names the newest complete revision. It is moved in one atomic
//!   `ChangeAliases` request (delete + create) only after every point is written and counted.
//!
//! Locations are `qdrant://host[:port]/<name>` (plain gRPC) or `qdrants://host[:port]/<name>`
//! (TLS), port 6334 by default; `<name>` is a corpus (alias) or a revision collection. The API key,
//! if the server wants one, comes from `QDRANT_API_KEY`.
//!
//! The [`VectorStore`] trait is synchronous and `serve` calls it from async code, so the store runs
//! its client on a private one-thread tokio runtime and waits for each answer on a channel, which
//! neither nests runtimes nor blocks the caller's runtime for longer than the request.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    AliasOperations, ChangeAliases, CountPointsBuilder, CreateAlias, CreateCollectionBuilder,
    DeleteAlias, Distance, GetPointsBuilder, PointId, PointStruct, Query, QueryPointsBuilder,
    RetrievedPoint, SearchParamsBuilder, UpsertPointsBuilder, Value, VectorParamsBuilder,
    VectorsOutput, alias_operations::Action, collections_client::CollectionsClient,
    point_id::PointIdOptions, vector_output::Vector,
};

use super::{
    ChunkPayload, DEFAULT_HNSW_EF, MAX_SEARCH_HITS, SearchHit, StoreError, StoredChunk, VectorStore,
};

/// gRPC port of a Qdrant server.
pub const DEFAULT_GRPC_PORT: u16 = 6334;

/// Collection metadata key holding the revision's manifest JSON.
pub const MANIFEST_METADATA_KEY: &str = "hybridIndexManifest";

/// Environment variable with the server's API key.
pub const API_KEY_ENV: &str = "QDRANT_API_KEY";

/// Longest collection or alias name accepted (Qdrant's own limit is 255 bytes).
const MAX_NAME: usize = 200;

/// A `qdrant://` location: server plus a collection or alias name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QdrantLocation {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub name: String,
}

impl QdrantLocation {
    /// True for the `qdrant://` and `qdrants://` schemes.
    pub fn is_qdrant(uri: &str) -> bool {
        uri.starts_with("qdrant://") || uri.starts_with("qdrants://")
    }

    pub fn parse(uri: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = uri.strip_prefix("qdrants://") {
            (true, rest)
        } else if let Some(rest) = uri.strip_prefix("qdrant://") {
            (false, rest)
        } else {
            return Err(format!("{uri}: not a qdrant:// or qdrants:// location"));
        };
        let (authority, name) = rest.split_once('/').unwrap_or((rest, ""));
        let name = name.trim_end_matches('/');
        if authority.is_empty() {
            return Err(format!("{uri}: missing host (qdrant://host:port/name)"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{uri}: port `{port}` is not a number"))?;
                (host.to_string(), port)
            }
            _ => (authority.to_string(), DEFAULT_GRPC_PORT),
        };
        if host.is_empty() {
            return Err(format!("{uri}: missing host (qdrant://host:port/name)"));
        }
        validate_name(name).map_err(|e| format!("{uri}: {e}"))?;
        Ok(Self {
            tls,
            host,
            port,
            name: name.to_string(),
        })
    }

    /// The gRPC endpoint URL the client connects to.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// The same server with another collection or alias name.
    pub fn with_name(&self, name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..self.clone()
        }
    }
}

impl fmt::Display for QdrantLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "qdrants" } else { "qdrant" };
        write!(f, "{scheme}://{}:{}/{}", self.host, self.port, self.name)
    }
}

/// Collection and alias names: 1–200 of `A-Z a-z 0-9 - _ .`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing collection name (qdrant://host:port/name)".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "collection name is longer than {MAX_NAME} characters"
        ));
    }
    if name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "collection name `{name}` may only hold letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

/// The collection that holds `revision` of `corpus`.
pub fn collection_name(corpus: &str, revision: &str) -> String {
    format!("{corpus}-{revision}")
}

/// One step of moving an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasStep {
    Delete { alias: String },
    Create { alias: String, collection: String },
}

/// The alias changes that make `alias` name `collection`, given the collection it names now.
/// Sent as one `ChangeAliases` request, so readers see the old or the new target, never none.
pub fn alias_plan(alias: &str, collection: &str, current: Option<&str>) -> Vec<AliasStep> {
    let create = AliasStep::Create {
        alias: alias.to_string(),
        collection: collection.to_string(),
    };
    match current {
        Some(c) if c == collection => Vec::new(),
        Some(_) => vec![
            AliasStep::Delete {
                alias: alias.to_string(),
            },
            create,
        ],
        None => vec![create],
    }
}

fn to_operation(step: &AliasStep) -> AliasOperations {
    let action = match step {
        AliasStep::Delete { alias } => Action::DeleteAlias(DeleteAlias {
            alias_name: alias.clone(),
        }),
        AliasStep::Create { alias, collection } => Action::CreateAlias(CreateAlias {
            collection_name: collection.clone(),
            alias_name: alias.clone(),
        }),
    };
    AliasOperations {
        action: Some(action),
    }
}

/// A chunk as a Qdrant point (numeric id, unnamed dense vector, payload = [`ChunkPayload`]).
pub fn to_point(chunk: StoredChunk) -> Result<PointStruct, String> {
    let json = serde_json::to_value(&chunk.payload).map_err(|e| e.to_string())?;
    let payload = qdrant_client::Payload::try_from(json).map_err(|e| e.to_string())?;
    Ok(PointStruct::new(chunk.point_id, chunk.vector, payload))
}

/// The numeric id of a point (UUID ids are not ours).
pub fn point_number(id: Option<PointId>) -> Result<u64, String> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Num(n)) => Ok(n),
        Some(PointIdOptions::Uuid(u)) => Err(format!("unexpected UUID point id {u}")),
        None => Err("point without an id".into()),
    }
}

/// A point's payload back as a [`ChunkPayload`].
pub fn payload_from_qdrant(map: HashMap<String, Value>) -> Result<ChunkPayload, String> {
    let json = serde_json::to_value(&map).map_err(|e| e.to_string())?;
    serde_json::from_value(json).map_err(|e| format!("payload: {e}"))
}

/// The unnamed dense vector of a returned point.
pub fn dense_vector(vectors: Option<VectorsOutput>) -> Result<Vec<f32>, String> {
    match vectors.as_ref().and_then(VectorsOutput::get_vector) {
        Some(Vector::Dense(d)) => Ok(d.data),
        Some(_) => Err("the default vector is not dense".into()),
        None => Err("no default vector".into()),
    }
}

/// The collection metadata that carries `manifest`.
pub fn manifest_metadata(manifest: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    HashMap::from([(MANIFEST_METADATA_KEY.to_string(), manifest.clone())])
}

/// The manifest JSON out of a collection's metadata.
pub fn manifest_from_metadata(
    metadata: &HashMap<String, Value>,
) -> Result<serde_json::Value, String> {
    let value = metadata.get(MANIFEST_METADATA_KEY).ok_or_else(|| {
        format!("the collection has no `{MANIFEST_METADATA_KEY}` metadata: not written by `hybrid-runtime index`")
    })?;
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// A collection on a Qdrant server.
pub struct RemoteStore {
    client: Arc<Qdrant>,
    /// `Some` until dropped; shut down in the background so dropping inside async code is fine.
    runtime: Option<tokio::runtime::Runtime>,
    location: QdrantLocation,
    dimension: usize,
    points: usize,
}

fn remote_err(location: &QdrantLocation, e: impl fmt::Display) -> StoreError {
    StoreError::Remote {
        location: location.to_string(),
        message: e.to_string(),
    }
}

impl RemoteStore {
    /// Connects to the server of `location` (no request is sent yet).
    fn connect(location: &QdrantLocation) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("qdrant-client")
            .enable_all()
            .build()
            .map_err(|e| remote_err(location, e))?;
        let client = {
            let _guard = runtime.enter();
            Qdrant::from_url(&location.endpoint())
                .api_key(std::env::var(API_KEY_ENV).ok())
                .timeout(Duration::from_secs(60))
                .skip_compatibility_check()
                .build()
                .map_err(|e| remote_err(location, e))?
        };
        Ok(Self {
            client: Arc::new(client),
            runtime: Some(runtime),
            location: location.clone(),
            dimension: 0,
            points: 0,
        })
    }

    /// Runs a request on the store's runtime and waits for it.
    fn call<T, F>(&self, f: impl FnOnce(Arc<Qdrant>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, qdrant_client::QdrantError>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| remote_err(&self.location, "store is closed"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = f(Arc::clone(&self.client));
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| remote_err(&self.location, "the request task stopped"))?
            .map_err(|e| remote_err(&self.location, e))
    }

    /// Creates the collection `location.name` for `dimension`-d vectors with `manifest` as
    /// metadata. If a collection of that name exists already, it is deleted first: revisions are
    /// written in one go, so an existing one that the caller decided to rewrite is a leftover of a
    /// failed run.
    pub fn create(
        location: &QdrantLocation,
        dimension: usize,
        manifest: &serde_json::Value,
    ) -> Result<Self, StoreError> {
        let mut store = Self::connect(location)?;
        let name = location.name.clone();
        let exists = {
            let name = name.clone();
            store.call(|c| async move { c.collection_exists(name).await })?
        };
        if exists {
            let name = name.clone();
            store.call(|c| async move { c.delete_collection(name).await })?;
        }
        let metadata = manifest_metadata(manifest);
        let request = CreateCollectionBuilder::new(name)
            .vectors_config(VectorParamsBuilder::new(dimension as u64, Distance::Dot))
            .metadata(metadata);
        store.call(|c| async move { c.create_collection(request).await })?;
        store.dimension = dimension;
        Ok(store)
    }

    /// Opens an existing collection, or the collection an alias names now (so later reads stay
    /// on that revision when the alias moves), and returns it with its manifest JSON.
    pub fn open(location: &QdrantLocation) -> Result<(Self, serde_json::Value), StoreError> {
        let mut store = Self::connect(location)?;
        if let Some(target) = store.alias_target(&location.name)? {
            store.location = location.with_name(&target);
        }
        let location = store.location.clone();
        let location = &location;
        let name = location.name.clone();
        let info = store
            .call(|c| async move { c.collection_info(name).await })?
            .result
            .ok_or_else(|| remote_err(location, "no collection info returned"))?;
        let config = info
            .config
            .ok_or_else(|| remote_err(location, "no collection config returned"))?;
        let manifest =
            manifest_from_metadata(&config.metadata).map_err(|e| remote_err(location, e))?;
        store.dimension = manifest
            .pointer("/embedder/dimension")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| remote_err(location, "manifest has no embedder.dimension"))?
            as usize;
        store.points = store.count_exact()?;
        Ok((store, manifest))
    }

    /// The collection an alias names now (`None`: no such alias).
    pub fn alias_target(&self, alias: &str) -> Result<Option<String>, StoreError> {
        let aliases = self.call(|c| async move { c.list_aliases().await })?;
        Ok(aliases
            .aliases
            .into_iter()
            .find(|a| a.alias_name == alias)
            .map(|a| a.collection_name))
    }

    /// Points `alias` at this store's collection in one atomic request.
    pub fn move_alias(&self, alias: &str) -> Result<(), StoreError> {
        validate_name(alias).map_err(|e| remote_err(&self.location, e))?;
        let current = self.alias_target(alias)?;
        let plan = alias_plan(alias, &self.location.name, current.as_deref());
        if plan.is_empty() {
            return Ok(());
        }
        let request = ChangeAliases {
            actions: plan.iter().map(to_operation).collect(),
            timeout: None,
        };
        let endpoint = self.location.endpoint();
        let api_key = std::env::var(API_KEY_ENV).ok();
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| remote_err(&self.location, "store is closed"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(change_aliases(endpoint, api_key, request).await);
        });
        rx.recv()
            .map_err(|_| remote_err(&self.location, "the request task stopped"))?
            .map_err(|e| remote_err(&self.location, e))?;
        tracing::info!(alias, collection = %self.location.name, previous = ?current, "alias moved");
        Ok(())
    }

    /// Whether a collection (not an alias) of this name exists.
    pub fn exists(location: &QdrantLocation) -> Result<bool, StoreError> {
        let store = Self::connect(location)?;
        let name = location.name.clone();
        store.call(|c| async move { c.collection_exists(name).await })
    }

    /// Deletes this store's collection (cleanup after a failed write).
    pub fn delete(self) -> Result<(), StoreError> {
        let name = self.location.name.clone();
        self.call(|c| async move { c.delete_collection(name).await })
            .map(|_| ())
    }

    pub fn location(&self) -> &QdrantLocation {
        &self.location
    }

    fn count_exact(&self) -> Result<usize, StoreError> {
        let name = self.location.name.clone();
        let count =
            self.call(|c| async move { c.count(CountPointsBuilder::new(name).exact(true)).await })?;
        Ok(count.result.map_or(0, |r| r.count as usize))
    }
}

/// `ChangeAliases` with several actions: `qdrant-client` only sends one action per request, so
/// this goes through the generated gRPC client directly.
async fn change_aliases(
    endpoint: String,
    api_key: Option<String>,
    request: ChangeAliases,
) -> Result<(), String> {
    let mut builder =
        tonic::transport::Endpoint::from_shared(endpoint.clone()).map_err(|e| e.to_string())?;
    if endpoint.starts_with("https://") {
        builder = builder
            .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
            .map_err(|e| e.to_string())?;
    }
    let channel = builder.connect().await.map_err(|e| e.to_string())?;
    let key = match api_key {
        Some(k) => Some(
            k.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .map_err(|e| format!("{API_KEY_ENV}: {e}"))?,
        ),
        None => None,
    };
    let mut client =
        CollectionsClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            if let Some(k) = &key {
                req.metadata_mut().insert("api-key", k.clone());
            }
            Ok(req)
        });
    client
        .update_aliases(request)
        .await
        .map(|_| ())
        .map_err(|status| format!("update aliases: {status}"))
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn hit_from(point: qdrant_client::qdrant::ScoredPoint) -> Result<SearchHit, String> {
    let point_id = point_number(point.id)?;
    let payload =
        payload_from_qdrant(point.payload).map_err(|e| format!("point {point_id}: {e}"))?;
    Ok(SearchHit {
        point_id,
        score: point.score,
        payload,
    })
}

fn chunk_from(point: RetrievedPoint) -> Result<StoredChunk, String> {
    let point_id = point_number(point.id)?;
    let vector = dense_vector(point.vectors).map_err(|e| format!("point {point_id}: {e}"))?;
    let payload =
        payload_from_qdrant(point.payload).map_err(|e| format!("point {point_id}: {e}"))?;
    Ok(StoredChunk {
        point_id,
        vector,
        payload,
    })
}

impl VectorStore for RemoteStore {
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
            points.push(to_point(chunk).map_err(|e| remote_err(&self.location, e))?);
        }
        let request = UpsertPointsBuilder::new(self.location.name.clone(), points).wait(true);
        self.call(|c| async move { c.upsert_points(request).await })
            .map(|_| ())
    }

    fn seal(&mut self) -> Result<(), StoreError> {
        // The server builds its HNSW index by itself; counting makes sure every write landed.
        self.points = self.count_exact()?;
        Ok(())
    }

    fn count(&self) -> Result<usize, StoreError> {
        Ok(self.points)
    }

    fn search(&self, query: &[f32], top_k: usize) -> Result<Vec<SearchHit>, StoreError> {
        if query.len() != self.dimension {
            return Err(StoreError::Dimension {
                expected: self.dimension,
                got: query.len(),
            });
        }
        if top_k == 0 || top_k > MAX_SEARCH_HITS {
            return Err(StoreError::TopK(top_k));
        }
        let request = QueryPointsBuilder::new(self.location.name.clone())
            .query(Query::new_nearest(query.to_vec()))
            .limit(top_k as u64)
            .with_payload(true)
            .params(SearchParamsBuilder::default().hnsw_ef(DEFAULT_HNSW_EF.max(top_k) as u64));
        let response = self.call(|c| async move { c.query(request).await })?;
        response
            .result
            .into_iter()
            .map(|p| hit_from(p).map_err(|e| remote_err(&self.location, e)))
            .collect()
    }

    fn get(&self, point_ids: &[u64]) -> Result<Vec<StoredChunk>, StoreError> {
        let ids: Vec<PointId> = point_ids.iter().map(|&id| PointId::from(id)).collect();
        let request = GetPointsBuilder::new(self.location.name.clone(), ids)
            .with_payload(true)
            .with_vectors(true);
        let response = self.call(|c| async move { c.get_points(request).await })?;
        let mut by_id = HashMap::with_capacity(response.result.len());
        for point in response.result {
            let chunk = chunk_from(point).map_err(|e| remote_err(&self.location, e))?;
            by_id.insert(chunk.point_id, chunk);
        }
        Ok(point_ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk() -> StoredChunk {
        StoredChunk {
            point_id: 7,
            vector: vec![0.6, 0.8, 0.0],
            payload: ChunkPayload {
                document_id: "notes/rates.md".into(),
                chunk_id: "notes/rates.md#2".into(),
                chunk_index: 2,
                title: "Rates outlook".into(),
                source_uri: "file:///corpus/notes/rates.md".into(),
                section: Some("Rates > Policy".into()),
                text: "The policy rate was cut to 4.25%.".into(),
            },
        }
    }

    #[test]
    fn locations_parse_with_default_port_and_tls() {
        let l = QdrantLocation::parse("qdrant://qdrant.search.svc/finance-notes").expect("parses");
        assert_eq!(
            l,
            QdrantLocation {
                tls: false,
                host: "qdrant.search.svc".into(),
                port: 6334,
                name: "finance-notes".into()
            }
        );
        assert_eq!(l.endpoint(), "http://qdrant.search.svc:6334");
        assert_eq!(
            l.to_string(),
            "qdrant://qdrant.search.svc:6334/finance-notes"
        );
        let t = QdrantLocation::parse("qdrants://q.example:443/c/").expect("parses");
        assert!(t.tls);
        assert_eq!(t.endpoint(), "https://q.example:443");
        assert_eq!(t.name, "c");
        assert_eq!(
            QdrantLocation::parse(&l.to_string()).expect("round trip"),
            l
        );
        assert_eq!(
            l.with_name("finance-notes-ix-1").to_string(),
            "qdrant://qdrant.search.svc:6334/finance-notes-ix-1"
        );
    }

    #[test]
    fn bad_locations_say_what_is_wrong() {
        for (uri, needle) in [
            ("qdrant://host:6334", "missing collection name"),
            ("qdrant:///corpus", "missing host"),
            ("qdrant://host:http/corpus", "port `http`"),
            ("qdrant://host/a b", "may only hold"),
            ("qdrant://host/a/b", "may only hold"),
            ("s3://bucket/x", "not a qdrant://"),
        ] {
            let err = QdrantLocation::parse(uri).expect_err(uri);
            assert!(err.contains(needle), "{uri}: {err}");
        }
        assert!(validate_name(&"x".repeat(MAX_NAME + 1)).is_err());
        assert!(validate_name(".hidden").is_err());
    }

    #[test]
    fn revisions_get_their_own_collection() {
        assert_eq!(
            collection_name("finance-notes", "ix-3f0c2a9be41d7a55c8e1"),
            "finance-notes-ix-3f0c2a9be41d7a55c8e1"
        );
        assert!(
            validate_name(&collection_name("finance-notes", "ix-3f0c2a9be41d7a55c8e1")).is_ok()
        );
    }

    #[test]
    fn alias_plan_creates_moves_or_keeps() {
        let create = AliasStep::Create {
            alias: "docs".into(),
            collection: "docs-ix-2".into(),
        };
        assert_eq!(alias_plan("docs", "docs-ix-2", None), vec![create.clone()]);
        assert_eq!(
            alias_plan("docs", "docs-ix-2", Some("docs-ix-1")),
            vec![
                AliasStep::Delete {
                    alias: "docs".into()
                },
                create
            ]
        );
        assert!(alias_plan("docs", "docs-ix-2", Some("docs-ix-2")).is_empty());
        let ops: Vec<_> = alias_plan("docs", "docs-ix-2", Some("docs-ix-1"))
            .iter()
            .map(to_operation)
            .collect();
        assert!(matches!(&ops[0].action, Some(Action::DeleteAlias(d)) if d.alias_name == "docs"));
        assert!(
            matches!(&ops[1].action, Some(Action::CreateAlias(c)) if c.alias_name == "docs" && c.collection_name == "docs-ix-2")
        );
    }

    #[test]
    fn points_round_trip_through_the_grpc_types() {
        let original = chunk();
        let point = to_point(original.clone()).expect("converts");
        let id = point_number(point.id.clone()).expect("numeric id");
        assert_eq!(id, 7);
        // What the server sends back for a stored point: the same payload map and vector.
        let vectors = point.vectors.clone().expect("vector");
        let dense = match vectors.vectors_options {
            Some(qdrant_client::qdrant::vectors::VectorsOptions::Vector(v)) => v,
            other => panic!("unexpected vectors {other:?}"),
        };
        #[allow(deprecated)]
        let output = qdrant_client::qdrant::VectorOutput {
            data: Vec::new(),
            indices: None,
            vectors_count: None,
            vector: dense.vector.map(|v| match v {
                qdrant_client::qdrant::vector::Vector::Dense(d) => Vector::Dense(d),
                other => panic!("unexpected vector {other:?}"),
            }),
        };
        let back = chunk_from(RetrievedPoint {
            id: point.id.clone(),
            payload: point.payload.clone(),
            vectors: Some(VectorsOutput {
                vectors_options: Some(
                    qdrant_client::qdrant::vectors_output::VectorsOptions::Vector(output),
                ),
            }),
            shard_key: None,
            order_value: None,
        })
        .expect("decodes");
        assert_eq!(back, original);
        let mut no_section = original.clone();
        no_section.payload.section = None;
        let p = to_point(no_section.clone()).expect("converts");
        assert!(
            !p.payload.contains_key("section"),
            "absent section is not stored as null"
        );
        assert_eq!(
            payload_from_qdrant(p.payload).expect("decodes"),
            no_section.payload
        );
    }

    #[test]
    fn malformed_points_are_errors() {
        assert!(point_number(None).is_err());
        let uuid = PointId {
            point_id_options: Some(PointIdOptions::Uuid("0000".into())),
        };
        assert!(point_number(Some(uuid)).is_err());
        assert!(dense_vector(None).is_err());
        let err = payload_from_qdrant(HashMap::new()).expect_err("empty payload");
        assert!(err.contains("payload"), "{err}");
    }

    #[test]
    fn manifest_travels_in_collection_metadata() {
        let manifest = serde_json::json!({"revision": "ix-1", "embedder": {"dimension": 384}});
        let metadata: HashMap<String, Value> = manifest_metadata(&manifest)
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        assert_eq!(
            manifest_from_metadata(&metadata).expect("present"),
            manifest
        );
        let err = manifest_from_metadata(&HashMap::new()).expect_err("missing");
        assert!(err.contains(MANIFEST_METADATA_KEY), "{err}");
    }
}
