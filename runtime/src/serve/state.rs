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
use crate::embed::Embedder;
use crate::index::revision::LoadedRevision;
use crate::index::storage::{self, Location};
use crate::lora::{AdapterSet, peft};
use crate::model::Llama;

/// The Pod annotation the operator reads (docs/runtime-contract.md §3).
pub const LOADED_REVISIONS_ANNOTATION: &str = "hybrid.dev/loaded-revisions";

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
    pub revisions: serde_json::Value,
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

fn location_path(uri: &str, what: &str) -> Result<Option<PathBuf>, String> {
    match Location::parse(uri).map_err(|e| format!("{what}: {e}"))? {
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
) -> Result<BaseModel, String> {
    let source = &config.model.source;
    let path = match location_path(source, "model.source")? {
        Some(p) => p,
        None if config.model.format == ModelFormat::Safetensors => {
            return Err(format!(
                "model.source {source}: safetensors models must be a local directory"
            ));
        }
        None => {
            let loc = Location::parse(source).map_err(|e| e.to_string())?;
            storage::fetch(&loc, &scratch.join("model"))
                .await
                .map_err(|e| format!("model.source: {e}"))?
        }
    };
    let format = config.model.format;
    let precision = config.model.precision();
    let device = placement.device.clone();
    let load = move || -> Result<(Llama, Tokenizer, ChatTemplate), String> {
        match format {
            ModelFormat::Gguf => {
                let model = Llama::from_gguf(&path, precision.base_weights(), &device)
                    .map_err(|e| e.to_string())?;
                let mut file = std::fs::File::open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                let content = gguf_file::Content::read(&mut file)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let tokenizer = crate::tokenizer::from_gguf_content(&content)?;
                let template = content
                    .metadata
                    .get("tokenizer.chat_template")
                    .and_then(|v| v.to_string().ok())
                    .map(|t| ChatTemplate::from_jinja(t))
                    .unwrap_or_default();
                Ok((model, tokenizer, template))
            }
            ModelFormat::Safetensors => {
                let model =
                    Llama::from_safetensors_dir(&path, &device).map_err(|e| e.to_string())?;
                let tok_path = path.join("tokenizer.json");
                let tokenizer = Tokenizer::from_file(&tok_path)
                    .map_err(|e| format!("{}: {e}", tok_path.display()))?;
                Ok((model, tokenizer, ChatTemplate::default()))
            }
        }
    };
    let (model, tokenizer, template) = tokio::task::spawn_blocking(load)
        .await
        .map_err(|e| format!("loading the model: {e}"))??;
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
    ) -> Result<Snapshot, String> {
        let (source, format, precision) = &self.base.source;
        if (&config.model.source, config.model.format) != (source, *format) {
            return Err(format!(
                "model.source changed from {source} to {}: a new base model needs a restart",
                config.model.source
            ));
        }
        if config.model.precision() != *precision {
            return Err(format!(
                "model.precision changed from {precision} to {}: reloading the base model needs a restart",
                config.model.precision()
            ));
        }
        if config.device != self.base.device {
            return Err(format!(
                "device changed from {} to {}: moving the model needs a restart",
                self.base.device, config.device
            ));
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
                    let weights = self
                        .load_adapter(&spec.artifact_uri)
                        .await
                        .map_err(|e| format!("adapters[{i}] ({}): {e}", spec.name))?;
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
                    let field = |e: String| format!("indexes[{i}] ({}): {e}", spec.corpus);
                    let embedder = self.embedder(&spec.embedder).await.map_err(field)?;
                    if let Some(d) = spec.dimensions
                        && d != embedder.dimension()
                    {
                        return Err(field(format!(
                            "dimensions is {d} but the embedder {} gives {}",
                            spec.embedder,
                            embedder.dimension()
                        )));
                    }
                    let index = LoadedRevision::open(&spec.location, &self.scratch.join("indexes"))
                        .await
                        .map_err(|e| field(e.to_string()))?;
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
        revisions["device"] = serde_json::Value::from(self.base.placement.label.as_str());
        Ok(Snapshot {
            config,
            adapters,
            indexes,
            revisions,
        })
    }

    async fn load_adapter(&self, uri: &str) -> Result<AdapterSet, String> {
        let (dir, _download) = match location_path(uri, "artifactUri")? {
            Some(dir) => (dir, None),
            None => {
                let loc = Location::parse(uri).map_err(|e| e.to_string())?;
                std::fs::create_dir_all(&self.scratch).map_err(|e| e.to_string())?;
                let tmp = tempfile::Builder::new()
                    .prefix("adapter-")
                    .tempdir_in(&self.scratch)
                    .map_err(|e| e.to_string())?;
                for name in [peft::CONFIG_FILE, peft::WEIGHTS_FILE] {
                    storage::fetch(&loc.join(name), tmp.path())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let model = self.base.model.clone();
        let device = self.base.placement.device.clone();
        tokio::task::spawn_blocking(move || {
            peft::read(&model.config, model.layers.len(), &dir, &device)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn embedder(&self, dir: &str) -> Result<Arc<Embedder>, String> {
        let cached = self
            .embedders
            .lock()
            .map_err(|_| "embedder cache poisoned".to_string())?
            .get(dir)
            .cloned();
        if let Some(e) = cached {
            return Ok(e);
        }
        let path = location_path(dir, "embedder")?
            .ok_or_else(|| format!("embedder {dir}: must be a local directory"))?;
        let placement = self.base.placement.clone();
        let embedder = tokio::task::spawn_blocking(move || Embedder::load_for(&path, &placement))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let embedder = Arc::new(embedder);
        self.embedders
            .lock()
            .map_err(|_| "embedder cache poisoned".to_string())?
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
pub async fn annotate_pod(revisions: &serde_json::Value) -> Result<(), String> {
    let (Ok(name), Ok(namespace)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE"))
    else {
        return Ok(());
    };
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, Patch, PatchParams};
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("kubernetes client: {e}"))?;
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let patch = serde_json::json!({
        "metadata": {"annotations": {LOADED_REVISIONS_ANNOTATION: revisions.to_string()}}
    });
    pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("patching pod {namespace}/{name}: {e}"))?;
    Ok(())
}
