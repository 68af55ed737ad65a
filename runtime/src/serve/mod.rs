//! `hybrid-runtime serve`: OpenAI-compatible chat completions over one base model with
//! per-request LoRA adapters and retrieval from embedded index revisions (docs/runtime-serve.md).
//!
//! Layout: [`config`] is the contract's `config.yaml`; [`state`] loads revisions into immutable
//! snapshots; [`engine`] owns the model on its own thread; [`rag`] finds passages and puts them
//! into the prompt; [`http`] is the HTTP layer, talking to the engine only through channels;
//! [`reload`] decides when the config file is loaded again; [`metrics`] the Prometheus series.

pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod rag;
pub mod reload;
pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use config::{
    BaseModel, ConfigError, Limits, ModelFormat, ServeConfig, ServedAdapter, ServedIndex,
};
use engine::{EngineSettings, LlamaModel};
use http::AppState;
use metrics::Metrics;
use reload::ReloadError;
use state::{Current, LoadError, Loader};

/// Test-only: milliseconds the engine sleeps after every decode round, to make a small model
/// look slow (autoscaler e2e). Never set it in production.
pub const INJECT_DECODE_DELAY_ENV: &str = "HYBRID_RUNTIME_INJECT_DECODE_DELAY_MS";
/// Test-only: microseconds the engine sleeps per prompt token before prefill, so retrieval depth
/// moves latency deterministically (autoscaler e2e). Never set it in production.
pub const INJECT_PREFILL_DELAY_ENV: &str = "HYBRID_RUNTIME_INJECT_PREFILL_DELAY_US_PER_TOKEN";

/// How often the config file's digest is compared (contract §2: a second is enough).
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// Why `serve` could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--adapter takes name=dir, got `{0}`")]
    AdapterFlag(String),
    #[error("--model or --config is required")]
    NoModel,
    #[error("--index needs --embedder (or HYBRID_EMBEDDER_DIR)")]
    IndexWithoutEmbedder,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    LocalAddr(std::io::Error),
    #[error("server: {0}")]
    Server(std::io::Error),
    #[error("starting the engine thread: {0}")]
    EngineThread(std::io::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// config.yaml as the operator renders it (docs/runtime-contract.md); reloaded on change.
    #[arg(long, conflicts_with_all = ["model", "index", "adapter", "precision"])]
    pub config: Option<PathBuf>,
    /// Local mode: base model (GGUF file or safetensors directory; path or URI).
    #[arg(long, required_unless_present = "config")]
    pub model: Option<String>,
    /// Local mode: how the base model's weights are held: quantized (the GGUF's blocks), q8_0,
    /// f16 or f32 (docs/runtime-precision.md). Default: f16 for GGUF, f32 for safetensors.
    #[arg(long)]
    pub precision: Option<config::Precision>,
    /// Where the model computes: auto, cpu, cuda or cuda:N (auto: a GPU when this binary has
    /// CUDA and one is visible, else the CPU). With --config it overrides the config's `device`.
    #[arg(long)]
    pub device: Option<crate::device::DeviceChoice>,
    /// Local mode: index revision archive (repeatable).
    #[arg(long)]
    pub index: Vec<String>,
    /// Local mode: embedding model directory the indexes were built with.
    #[arg(long, env = "HYBRID_EMBEDDER_DIR")]
    pub embedder: Option<String>,
    /// Local mode: `name=dir` PEFT adapter (repeatable; the first is the default).
    #[arg(long, value_parser = parse_adapter)]
    pub adapter: Vec<(String, String)>,
    /// Local mode: served model name.
    #[arg(long, default_value = "local")]
    pub name: String,
    /// Local mode: passages per question.
    #[arg(long, default_value_t = config::DEFAULT_TOP_K)]
    pub top_k: usize,
    /// Local mode: system prompt.
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Local mode: sequences generated at once.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CONCURRENCY)]
    pub max_concurrency: usize,
    /// Local mode: requests waiting beyond those (more get 429).
    #[arg(long, default_value_t = config::DEFAULT_MAX_QUEUE)]
    pub max_queue: usize,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Enables POST /v1/admin/reload (loopback clients only).
    #[arg(long)]
    pub admin_reload: bool,
    /// Where remote models, adapters and index archives are downloaded and unpacked.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("hybrid-serve"))]
    pub scratch: PathBuf,
}

fn parse_adapter(s: &str) -> Result<(String, String), ServeError> {
    s.split_once('=')
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .filter(|(n, d)| !n.is_empty() && !d.is_empty())
        .ok_or_else(|| ServeError::AdapterFlag(s.to_string()))
}

fn file_digest(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| config::digest(&b)[..12].to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The config local flags stand for, so both modes run the same code.
pub fn local_config(args: &ServeArgs) -> Result<ServeConfig, ServeError> {
    let model = args.model.clone().ok_or(ServeError::NoModel)?;
    let format = match Path::new(&model).is_dir() {
        true => ModelFormat::Safetensors,
        false => ModelFormat::Gguf,
    };
    if !args.index.is_empty() && args.embedder.is_none() {
        return Err(ServeError::IndexWithoutEmbedder);
    }
    let indexes = args
        .index
        .iter()
        .enumerate()
        .map(|(i, location)| {
            let stem = location
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".tar.gz")
                .to_string();
            ServedIndex {
                corpus: match args.index.len() {
                    1 => "local".to_string(),
                    _ => format!("local-{i}"),
                },
                revision: stem,
                location: location.clone(),
                embedder: args.embedder.clone().unwrap_or_default(),
                dimensions: None,
            }
        })
        .collect();
    let adapters = args
        .adapter
        .iter()
        .map(|(name, dir)| ServedAdapter {
            name: name.clone(),
            revision: format!(
                "local-{}",
                file_digest(&Path::new(dir).join(crate::lora::peft::WEIGHTS_FILE))
            ),
            artifact_uri: dir.clone(),
        })
        .collect();
    let config = ServeConfig {
        name: args.name.clone(),
        serving_revision: Some("local".into()),
        model: BaseModel {
            source: model,
            format,
            precision: args.precision,
        },
        adapters,
        indexes,
        top_k: args.top_k,
        prompt_template: None,
        system_prompt: args.system_prompt.clone(),
        limits: Limits {
            max_concurrency: args.max_concurrency,
            max_queue: args.max_queue,
            ..Limits::default()
        },
        device: args.device.unwrap_or_default(),
    };
    config.validate()?;
    Ok(config)
}

/// Runs the subcommand and returns the process exit code.
pub fn main(args: &ServeArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn run(args: &ServeArgs) -> Result<(), ServeError> {
    let (mut config, digest) = match &args.config {
        Some(path) => {
            let (c, d) = ServeConfig::read(path)?;
            (c, Some(d))
        }
        None => (local_config(args)?, None),
    };
    let device_flag = match (args.device, &args.config) {
        (Some(device), Some(_)) => {
            tracing::info!(
                "--device {device} overrides the config's device {}",
                config.device
            );
            config.device = device;
            "--device"
        }
        (_, Some(_)) => "device (serve config)",
        (_, None) => "--device",
    };
    // Chosen before anything listens, so `--device cuda` without a GPU fails at start.
    let placement = crate::device::select(config.device, device_flag)?;
    crate::device::log_placement("serve", config.device, &placement);
    let metrics = Arc::new(Metrics::new()?);
    let state = Arc::new(AppState {
        current: Current::default(),
        base: OnceLock::new(),
        engine: OnceLock::new(),
        loader: OnceLock::new(),
        metrics,
        limits: config.limits,
        admin_reload: args.admin_reload,
        config_path: args.config.clone(),
        reload: tokio::sync::Mutex::new(reload::ReloadState::new(digest)),
        reports: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        load_error: RwLock::new(None),
    });
    state
        .metrics
        .device
        .with_label_values(&[placement.label.as_str()])
        .set(1);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: args.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::LocalAddr)?;
    tracing::info!("listening on http://{local} (ready once the model and indexes are loaded)");
    let app = http::router(state.clone());
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal());
    let loading = load_initial(state.clone(), config, placement, args.scratch.clone());
    let server = async { server.await.map_err(ServeError::Server) };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        r = loading => r?,
    }
    if state.config_path.is_some() {
        let watcher = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CONFIG_POLL).await;
                if let Err(e) = reload_once(&watcher, false).await {
                    tracing::error!("config reload failed; the previous config keeps serving: {e}");
                }
            }
        });
    }
    server.await
}

async fn load_initial(
    state: Arc<AppState>,
    config: ServeConfig,
    placement: crate::device::Placement,
    scratch: PathBuf,
) -> Result<(), ServeError> {
    let started = std::time::Instant::now();
    let result = async {
        let base = Arc::new(state::load_base(&config, placement, &scratch).await?);
        tracing::info!(
            "model {} loaded ({} layers, {} weights, on {})",
            config.model.source,
            base.model.layers.len(),
            config.model.precision(),
            base.placement.label
        );
        let injected = |env: &str, unit: fn(u64) -> Duration, what: &str| {
            let delay = std::env::var(env)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(unit)
                .unwrap_or_default();
            if !delay.is_zero() {
                tracing::warn!("{env} is set: {what} sleeps {delay:?} (test only)");
            }
            delay
        };
        let decode_delay = injected(
            INJECT_DECODE_DELAY_ENV,
            Duration::from_millis,
            "every decode step",
        );
        let prefill_delay_per_token = injected(
            INJECT_PREFILL_DELAY_ENV,
            Duration::from_micros,
            "prefill, per prompt token,",
        );
        let engine = engine::spawn(
            Arc::new(LlamaModel {
                model: base.model.clone(),
                tokenizer: base.tokenizer.clone(),
                stop_ids: base.stop_ids.clone(),
            }),
            EngineSettings {
                max_concurrency: config.limits.max_concurrency,
                max_queue: config.limits.max_queue,
                decode_delay,
                prefill_delay_per_token,
            },
            state.metrics.clone(),
        )
        .map_err(ServeError::EngineThread)?;
        let loader = Arc::new(Loader::new(base.clone(), scratch));
        let snapshot = loader.load(config, None).await?;
        let _ = state.base.set(base);
        let _ = state.engine.set(engine);
        let _ = state.loader.set(loader);
        publish(&state, Arc::new(snapshot));
        Ok::<_, ServeError>(())
    }
    .await;
    match &result {
        Ok(()) => tracing::info!("ready in {:.1}s", started.elapsed().as_secs_f64()),
        Err(e) => {
            state
                .metrics
                .config_reload
                .with_label_values(&["error"])
                .inc();
            if let Ok(mut slot) = state.load_error.write() {
                *slot = Some(e.to_string());
            }
        }
    }
    result
}

/// Makes `snapshot` the one new requests get, and reports it on the pod: the operator reads the
/// report to mark revisions loaded, so a failed report is retried (with backoff) until it lands
/// or a newer snapshot's report takes over.
fn publish(state: &AppState, snapshot: Arc<state::Snapshot>) {
    let revisions = snapshot.revisions.clone();
    state.current.set(snapshot);
    state.metrics.set_loaded(&revisions);
    state.metrics.config_reload.with_label_values(&["ok"]).inc();
    tracing::info!("serving revisions {}", revisions.to_annotation());
    let reports = state.reports.clone();
    let this = reports.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        // The same backoff as a failed reload: 1 s doubling to 60 s.
        let mut delay = reload::RETRY_BASE;
        loop {
            match state::annotate_pod(&revisions).await {
                Ok(()) => return,
                Err(e) => {
                    metrics.report_failures.inc();
                    tracing::warn!(
                        "cannot report loaded revisions on the pod (retrying in {delay:?}): {e}"
                    );
                }
            }
            tokio::time::sleep(delay).await;
            if reports.load(std::sync::atomic::Ordering::SeqCst) != this {
                return; // a newer snapshot reports itself
            }
            delay = (delay * 2).min(reload::RETRY_MAX);
        }
    });
}

/// Re-reads the config file and, when its content changed (or `force`), loads and switches to
/// it. Returns the loaded revisions (None when nothing is due). A bad file leaves the current
/// snapshot serving; a file that does not parse is not tried again, one whose revisions fail to
/// load is tried again with backoff ([`reload::ReloadState`]).
pub async fn reload_once(
    state: &AppState,
    force: bool,
) -> Result<Option<state::LoadedRevisions>, ReloadError> {
    let path = state
        .config_path
        .as_ref()
        .ok_or(ReloadError::NoConfigFile)?;
    let mut tried = state.reload.lock().await;
    let bytes = std::fs::read(path).map_err(|source| ReloadError::Read {
        path: path.clone(),
        source,
    })?;
    let digest = config::digest(&bytes);
    if !force && !tried.due(&digest, std::time::Instant::now()) {
        return Ok(None);
    }
    let failed = |e: ReloadError| {
        state
            .metrics
            .config_reload
            .with_label_values(&["error"])
            .inc();
        e
    };
    let parsed = String::from_utf8(bytes)
        .map_err(ReloadError::from)
        .and_then(|text| ServeConfig::parse(&text).map_err(ReloadError::from));
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            tried.settle(digest);
            return Err(failed(e));
        }
    };
    if config.limits != state.limits {
        tracing::warn!("limits changed in the config; they apply after a restart");
    }
    let loader = state
        .loader
        .get()
        .ok_or_else(|| failed(ReloadError::NotLoaded))?;
    let previous = state.current.get();
    let snapshot = match loader.load(config, previous.as_deref()).await {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let (failures, delay) = tried.failed(digest, std::time::Instant::now());
            return Err(failed(ReloadError::Load {
                source: Box::new(e),
                failures,
                delay,
            }));
        }
    };
    tried.settle(digest);
    let revisions = snapshot.revisions.clone();
    publish(state, Arc::new(snapshot));
    Ok(Some(revisions))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
