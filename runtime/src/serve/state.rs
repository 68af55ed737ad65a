//! What `serve` has loaded: the base model (once per process) and a [`Snapshot`] of adapter and
//! index revisions, replaced as a whole on every successful reload. Requests clone the current
//! `Arc<Snapshot>` when they arrive, so a swap never changes a request that is already running;
//! the old revisions are freed when the last request holding them ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use candle_core::quantized::gguf_file;
use tokenizers::Tokenizer;

use super::config::{BASE_ADAPTER, ModelFormat, Precision, ServeConfig};
use crate::chat::{ChatTemplate, IM_END};
use crate::device::{DeviceChoice, Placement};
use crate::embed::{EmbedError, Embedder};
use crate::index::revision::{LoadedRevision, RevisionError};
use crate::index::storage::{self, Location, StorageError};
use crate::lora::{AdapterSet, peft};
use crate::model::Llama;

/// The Pod annotation the operator reads (docs/runtime-contract.md §3).
pub use hybrid_contract::loaded::{LOADED_REVISIONS_ANNOTATION, LoadedRevisions};

/// Why the base model, an adapter or an index revision could not be loaded. The text names the
/// config field at fault, as it ends up in `/readyz` and the reload logs.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{field}: {source}")]
    Location {
        field: &'static str,
        source: StorageError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("model.source {uri}: safetensors models must be a local directory")]
    SafetensorsNotLocal { uri: String },
    #[error(transparent)]
    Model(#[from] candle_core::Error),
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Gguf {
        path: PathBuf,
        source: candle_core::Error,
    },
    /// From the GGUF tokenizer builder, which reports a message.
    #[error("{0}")]
    GgufTokenizer(String),
    #[error("{}: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        source: tokenizers::Error,
    },
    #[error("loading the model: {0}")]
    ModelTask(tokio::task::JoinError),
    #[error("model.source changed from {from} to {to}: a new base model needs a restart")]
    SourceChanged { from: String, to: String },
    #[error(
        "model.precision changed from {from} to {to}: reloading the base model needs a restart"
    )]
    PrecisionChanged { from: Precision, to: Precision },
    #[error("device changed from {from} to {to}: moving the model needs a restart")]
    DeviceChanged {
        from: DeviceChoice,
        to: DeviceChoice,
    },
    #[error("adapters[{position}] ({name}): {source}")]
    Adapter {
        position: usize,
        name: String,
        source: Box<LoadError>,
    },
    #[error("indexes[{position}] ({corpus}): {source}")]
    Index {
        position: usize,
        corpus: String,
        source: Box<LoadError>,
    },
    #[error("dimensions is {declared} but the embedder {embedder} gives {actual}")]
    Dimensions {
        declared: usize,
        embedder: String,
        actual: usize,
    },
    #[error(transparent)]
    Revision(#[from] RevisionError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// From the PEFT reader, which reports a message.
    #[error("{0}")]
    Peft(String),
    #[error("embedder {dir}: must be a local directory")]
    EmbedderNotLocal { dir: String },
    #[error(transparent)]
    Embedder(#[from] EmbedError),
    #[error("embedder cache poisoned")]
    EmbedderCachePoisoned,
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// Why the loaded revisions could not be reported on the Pod.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("patching pod {namespace}/{name}: {source}")]
    Patch {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

pub struct BaseModel {
    pub model: Arc<Llama>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub stop_ids: Vec<u32>,
    /// `model.source`, `model.format` and `model.precision` it was loaded with; a reload that
    /// changes them needs a restart (the operator rolls the pods).
    pub source: (String, ModelFormat, Precision),
    /// The `device` it was loaded for and where that put it; adapters and embedders go there too.
    pub device: DeviceChoice,
    pub placement: Placement,
}

pub struct LoadedAdapter {
    pub name: String,
    pub revision: String,
    pub artifact_uri: String,
    pub weights: Arc<AdapterSet>,
}

pub struct LoadedIndex {
    pub corpus: String,
    pub revision: String,
    pub location: String,
    pub embedder_path: String,
    pub embedder: Arc<Embedder>,
    pub index: LoadedRevision,
}

/// One consistent set of revisions.
pub struct Snapshot {
    pub config: ServeConfig,
    pub adapters: Vec<Arc<LoadedAdapter>>,
    pub indexes: Vec<Arc<LoadedIndex>>,
    /// The contract §3 JSON of this set.
    pub revisions: LoadedRevisions,
}

/// What a request's `model` field selects.
#[derive(Clone)]
pub struct Selection {
    pub model_id: String,
    pub adapter: Option<Arc<LoadedAdapter>>,
}

impl Selection {
    pub fn adapter_label(&self) -> &str {
        self.adapter
            .as_ref()
            .map_or(BASE_ADAPTER, |a| a.name.as_str())
    }
}

impl Snapshot {
    /// Served model ids (contract §1): `<name>` (default adapter, or the base model when there
    /// is none), `<name>:base`, and `<name>:<adapter>` for every adapter.
    pub fn model_ids(&self) -> Vec<String> {
        let name = &self.config.name;
        let mut ids = vec![name.clone(), format!("{name}:{BASE_ADAPTER}")];
        ids.extend(self.adapters.iter().map(|a| format!("{name}:{}", a.name)));
        ids
    }

    pub fn resolve(&self, model: &str) -> Option<Selection> {
        let name = &self.config.name;
        let adapter = match model.split_once(':') {
            None if model == name => self.adapters.first().cloned(),
            Some((n, BASE_ADAPTER)) if n == name => None,
            Some((n, a)) if n == name => Some(self.adapters.iter().find(|x| x.name == a)?.clone()),
            _ => return None,
        };
        Some(Selection {
            model_id: model.to_string(),
            adapter,
        })
    }
}

fn location_path(uri: &str, field: &'static str) -> Result<Option<PathBuf>, LoadError> {
    match Location::parse(uri).map_err(|source| LoadError::Location { field, source })? {
        Location::Local(p) => Ok(Some(p)),
        _ => Ok(None),
    }
}

/// Loads the base model named by the config: GGUF with its weights held as `model.precision`
/// says, or a Hugging Face safetensors directory (f32) with its `tokenizer.json`.
pub async fn load_base(
    config: &ServeConfig,
    placement: Placement,
    scratch: &Path,
) -> Result<BaseModel, LoadError> {
    let source = &config.model.source;
    let path = match location_path(source, "model.source")? {
        Some(p) => p,
        None if config.model.format == ModelFormat::Safetensors => {
            return Err(LoadError::SafetensorsNotLocal {
                uri: source.clone(),
            });
        }
        None => {
            let loc = Location::parse(source)?;
            storage::fetch(&loc, &scratch.join("model"))
                .await
                .map_err(|source| LoadError::Location {
                    field: "model.source",
                    source,
                })?
        }
    };
    let format = config.model.format;
    let precision = config.model.precision();
    let device = placement.device.clone();
    let load = move || -> Result<(Llama, Tokenizer, ChatTemplate), LoadError> {
        match format {
            ModelFormat::Gguf => {
                let model = Llama::from_gguf(
                    &path,
                    crate::serve::config::base_weights(precision),
                    &device,
                )?;
                let mut file = std::fs::File::open(&path).map_err(|source| LoadError::Open {
                    path: path.clone(),
                    source,
                })?;
                let content =
                    gguf_file::Content::read(&mut file).map_err(|source| LoadError::Gguf {
                        path: path.clone(),
                        source,
                    })?;
                let tokenizer = crate::tokenizer::from_gguf_content(&content)
                    .map_err(LoadError::GgufTokenizer)?;
                let template = content
                    .metadata
                    .get("tokenizer.chat_template")
                    .and_then(|v| v.to_string().ok())
                    .map(|t| ChatTemplate::from_jinja(t))
                    .unwrap_or_default();
                Ok((model, tokenizer, template))
            }
            ModelFormat::Safetensors => {
                let model = Llama::from_safetensors_dir(&path, &device)?;
                let tok_path = path.join("tokenizer.json");
                let tokenizer =
                    Tokenizer::from_file(&tok_path).map_err(|source| LoadError::Tokenizer {
                        path: tok_path.clone(),
                        source,
                    })?;
                Ok((model, tokenizer, ChatTemplate::default()))
            }
        }
    };
    let (model, tokenizer, template) = tokio::task::spawn_blocking(load)
        .await
        .map_err(LoadError::ModelTask)??;
    let stop_ids = [IM_END, "<|endoftext|>", "</s>"]
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
    Ok(BaseModel {
        model: Arc::new(model),
        tokenizer: Arc::new(tokenizer),
        template,
        stop_ids,
        source: (source.clone(), format, precision),
        device: config.device,
        placement,
    })
}

/// Builds snapshots, reusing what an earlier snapshot already holds (same name, revision and
/// location) and embedders by directory.
pub struct Loader {
    pub base: Arc<BaseModel>,
    pub scratch: PathBuf,
    embedders: Mutex<HashMap<String, Arc<Embedder>>>,
}

impl Loader {
    pub fn new(base: Arc<BaseModel>, scratch: PathBuf) -> Self {
        Self {
            base,
            scratch,
            embedders: Mutex::new(HashMap::new()),
        }
    }

    pub async fn load(
        &self,
        config: ServeConfig,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, LoadError> {
        let (source, format, precision) = &self.base.source;
        if (&config.model.source, config.model.format) != (source, *format) {
            return Err(LoadError::SourceChanged {
                from: source.clone(),
                to: config.model.source.clone(),
            });
        }
        if config.model.precision() != *precision {
            return Err(LoadError::PrecisionChanged {
                from: *precision,
                to: config.model.precision(),
            });
        }
        if config.device != self.base.device {
            return Err(LoadError::DeviceChanged {
                from: self.base.device,
                to: config.device,
            });
        }
        let mut adapters = Vec::new();
        for (i, spec) in config.adapters.iter().enumerate() {
            let reused = previous.and_then(|p| {
                p.adapters
                    .iter()
                    .find(|a| {
                        a.name == spec.name
                            && a.revision == spec.revision
                            && a.artifact_uri == spec.artifact_uri
                    })
                    .cloned()
            });
            let adapter = match reused {
                Some(a) => a,
                None => {
                    let weights = self.load_adapter(&spec.artifact_uri).await.map_err(|e| {
                        LoadError::Adapter {
                            position: i,
                            name: spec.name.clone(),
                            source: Box::new(e),
                        }
                    })?;
                    tracing::info!(adapter = %spec.name, revision = %spec.revision, "adapter loaded");
                    Arc::new(LoadedAdapter {
                        name: spec.name.clone(),
                        revision: spec.revision.clone(),
                        artifact_uri: spec.artifact_uri.clone(),
                        weights: Arc::new(weights),
                    })
                }
            };
            adapters.push(adapter);
        }
        let mut indexes = Vec::new();
        for (i, spec) in config.indexes.iter().enumerate() {
            let reused = previous.and_then(|p| {
                p.indexes
                    .iter()
                    .find(|x| {
                        x.corpus == spec.corpus
                            && x.revision == spec.revision
                            && x.location == spec.location
                            && x.embedder_path == spec.embedder
                    })
                    .cloned()
            });
            let index = match reused {
                Some(x) => x,
                None => {
                    let field = |e: LoadError| LoadError::Index {
                        position: i,
                        corpus: spec.corpus.clone(),
                        source: Box::new(e),
                    };
                    let embedder = self.embedder(&spec.embedder).await.map_err(field)?;
                    if let Some(d) = spec.dimensions
                        && d != embedder.dimension()
                    {
                        return Err(field(LoadError::Dimensions {
                            declared: d,
                            embedder: spec.embedder.clone(),
                            actual: embedder.dimension(),
                        }));
                    }
                    let index = LoadedRevision::open(&spec.location, &self.scratch.join("indexes"))
                        .await
                        .map_err(|e| field(e.into()))?;
                    tracing::info!(corpus = %spec.corpus, revision = %spec.revision, "index loaded");
                    Arc::new(LoadedIndex {
                        corpus: spec.corpus.clone(),
                        revision: spec.revision.clone(),
                        location: spec.location.clone(),
                        embedder_path: spec.embedder.clone(),
                        embedder,
                        index,
                    })
                }
            };
            indexes.push(index);
        }
        let mut revisions = config.loaded_revisions();
        revisions.device = Some(self.base.placement.label.clone());
        Ok(Snapshot {
            config,
            adapters,
            indexes,
            revisions,
        })
    }

    async fn load_adapter(&self, uri: &str) -> Result<AdapterSet, LoadError> {
        let (dir, _download) = match location_path(uri, "artifactUri")? {
            Some(dir) => (dir, None),
            None => {
                let loc = Location::parse(uri)?;
                std::fs::create_dir_all(&self.scratch)?;
                let tmp = tempfile::Builder::new()
                    .prefix("adapter-")
                    .tempdir_in(&self.scratch)?;
                for name in [peft::CONFIG_FILE, peft::WEIGHTS_FILE] {
                    storage::fetch(&loc.join(name), tmp.path()).await?;
                }
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let model = self.base.model.clone();
        let device = self.base.placement.device.clone();
        tokio::task::spawn_blocking(move || {
            peft::read(&model.config, model.layers.len(), &dir, &device)
        })
        .await?
        .map_err(LoadError::Peft)
    }

    async fn embedder(&self, dir: &str) -> Result<Arc<Embedder>, LoadError> {
        let cached = self
            .embedders
            .lock()
            .map_err(|_| LoadError::EmbedderCachePoisoned)?
            .get(dir)
            .cloned();
        if let Some(e) = cached {
            return Ok(e);
        }
        let path = location_path(dir, "embedder")?.ok_or_else(|| LoadError::EmbedderNotLocal {
            dir: dir.to_string(),
        })?;
        let placement = self.base.placement.clone();
        let embedder =
            tokio::task::spawn_blocking(move || Embedder::load_for(&path, &placement)).await??;
        let embedder = Arc::new(embedder);
        self.embedders
            .lock()
            .map_err(|_| LoadError::EmbedderCachePoisoned)?
            .insert(dir.to_string(), embedder.clone());
        Ok(embedder)
    }
}

/// The current snapshot; swapped whole.
#[derive(Default)]
pub struct Current(RwLock<Option<Arc<Snapshot>>>);

impl Current {
    pub fn get(&self) -> Option<Arc<Snapshot>> {
        self.0.read().ok().and_then(|s| s.clone())
    }

    pub fn set(&self, snapshot: Arc<Snapshot>) {
        if let Ok(mut s) = self.0.write() {
            *s = Some(snapshot);
        }
    }
}

/// Writes the loaded revisions to this Pod's annotation when `POD_NAME` and `POD_NAMESPACE` are
/// set (downward API); otherwise does nothing.
pub async fn annotate_pod(revisions: &LoadedRevisions) -> Result<(), ReportError> {
    let (Ok(name), Ok(namespace)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE"))
    else {
        return Ok(());
    };
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, Patch, PatchParams};
    let client = kube::Client::try_default()
        .await
        .map_err(ReportError::Client)?;
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let patch = serde_json::json!({
        "metadata": {"annotations": {LOADED_REVISIONS_ANNOTATION: revisions.to_annotation()}}
    });
    pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ReportError::Patch {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    Ok(())
}
