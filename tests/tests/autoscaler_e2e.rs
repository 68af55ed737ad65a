//! The latency autoscaler end to end: the real `hybrid-operator` (chart RBAC) on the local
//! control plane, Debian's Prometheus, and real `hybrid-runtime serve` processes standing in for
//! the HybridModel's pods (see `hybrid_e2e::autoscale` for how they follow the pods KWOK runs).
//!
//! The serving processes carry the documented test-only latency injection
//! (`HYBRID_RUNTIME_INJECT_PREFILL_DELAY_US_PER_TOKEN`, `HYBRID_RUNTIME_INJECT_DECODE_DELAY_MS`):
//! every prompt token costs a fixed sleep in the engine thread, as prefill costs GPU time, so
//! retrieval depth and replicas move latency the same way on every machine instead of with the
//! load of a shared 2-core VM. Everything else is real: the model, embedder, index, queues,
//! metrics, scraping, PromQL, decisions, the Deployment, the scheduler placing pods on KWOK GPU
//! nodes, and the config reload that carries top-k to the processes.
//!
//! One run, in phases:
//! 1. pressure: a closed-loop load of [`CLIENTS`] clients pushes p95 over the SLO → top-k drops
//!    and the Deployment scales out (pods scheduled on GPU nodes, new processes join);
//! 2. steady: the same load for `HYBRID_E2E_AUTOSCALER_STEADY_SECS` (default 600) → after the
//!    first adjustments neither replicas nor top-k cycle (at most one reversal each); halfway
//!    through Prometheus is stopped for [`OUTAGE`] → replicas and top-k held, the condition says
//!    why, and the autoscaler recovers when Prometheus returns;
//! 3. idle: the load stops → top-k is restored first, replicas go back to the minimum after the
//!    scale-down window.
//!
//! It prints the reaction time (p95 crossing the SLO in Prometheus → first decision) and writes
//! the timeline to `<target>/tmp/autoscaler-e2e/timeline.json` (`scripts/plot-autoscaler.py`
//! draws docs/autoscaler-e2e.png from it). Timing is reported, not asserted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use hybrid_crds::HybridModel;
use hybrid_e2e::autoscale::{
    Load, Prometheus, StandInSpec, StandIns, minilm_dir, runtime_binary, smollm2_gguf,
};
use hybrid_e2e::operator::{
    Operator, bound_claims, delete_volumes, install_chart_rbac, kwok_result,
    service_account_kubeconfig, set_job_pod_annotations,
};
use hybrid_e2e::{Check, TestNamespace, client, poll, repo_root};
use hybrid_operator::autoscaler::prometheus::{Client as PromClient, Queries};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use serde::Serialize;
use serde_json::json;

const MODEL: &str = "advisor";
const CORPUS: &str = "finance-notes";
/// p95 end-to-end target of the test's ServingPolicy, on a bucket boundary of the runtime's
/// latency histogram. Large because the injected prompt cost is large: on a busy 2-core machine
/// the real CPU time of a prompt varies by seconds, and the injected part must dominate it.
const SLO_MS: u64 = 20_000;
const MIN_REPLICAS: i32 = 1;
const MAX_REPLICAS: i32 = 4;
const TOP_K: i32 = 4;
const MIN_TOP_K: i32 = 1;
const SCALE_UP_WINDOW_S: u64 = 4;
const SCALE_DOWN_WINDOW_S: u64 = 30;
/// The operator's PromQL rate window (`--autoscaler-window`, its default): 30 scrapes at 1 s.
const WINDOW: Duration = Duration::from_secs(30);
/// Concurrent closed-loop clients during the load phases.
const CLIENTS: usize = 3;
/// Injected cost per prompt token (µs) and per decode round (ms).
const PREFILL_US_PER_TOKEN: u64 = 40_000;
const DECODE_MS: u64 = 100;
/// Tokens each answer may have.
const MAX_TOKENS: u64 = 4;
/// Prometheus down for this long in the middle of the steady phase.
const OUTAGE: Duration = Duration::from_secs(30);
/// Adjustments allowed at the start of the steady phase before "no reversal" is checked.
const SETTLE: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(240);
/// Direction reversals of replicas or top-k allowed after settling: one correction is damping,
/// two (down, up, down) would be a cycle.
const MAX_REVERSALS: usize = 1;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One second of the run, as the plot shows it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Sample {
    /// Seconds since the run started.
    t: f64,
    unix: f64,
    phase: String,
    /// The operator's p95 expression evaluated by the test (None: Prometheus down or no data).
    p95_ms: Option<f64>,
    slo_ms: u64,
    desired_replicas: Option<i32>,
    deployment_replicas: Option<i32>,
    ready_replicas: Option<i32>,
    serving_processes: usize,
    top_k: Option<i32>,
    config_top_k: Option<i64>,
    reason: Option<String>,
}

struct Run {
    ns: TestNamespace,
    start: Instant,
    phase: Arc<std::sync::Mutex<String>>,
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
}

impl Run {
    fn set_phase(&self, phase: &str) {
        eprintln!(
            "[autoscaler-e2e {:>6.1}s] phase {phase}",
            self.start.elapsed().as_secs_f64()
        );
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.to_owned();
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn model(&self) -> Result<HybridModel> {
        Ok(self.ns.api::<HybridModel>().get(MODEL).await?)
    }

    async fn deployment_replicas(&self) -> Result<Option<i32>> {
        Ok(self
            .ns
            .api::<Deployment>()
            .get_opt(MODEL)
            .await?
            .and_then(|d| d.spec)
            .and_then(|s| s.replicas))
    }
}

fn steady_duration() -> Duration {
    std::env::var("HYBRID_E2E_AUTOSCALER_STEADY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(600))
}

/// Builds the corpus's index with the real indexer into the "artifacts volume" and returns the
/// IndexResult JSON the index Job's pod reports.
fn build_index(volumes: &std::path::Path) -> Result<serde_json::Value> {
    let out = volumes.join("hybrid-artifacts/indexes");
    std::fs::create_dir_all(&out)?;
    let result_path = volumes.join("index-result.json");
    let status = std::process::Command::new(runtime_binary()?)
        .args(["index", "--source"])
        .arg(repo_root().join("examples/finance/corpus"))
        .args(["--chunk-strategy", "markdown", "--chunk-size", "32"])
        .args(["--chunk-overlap", "0", "--embedder"])
        .arg(minilm_dir()?)
        .arg("--output")
        .arg(&out)
        .arg("--result-path")
        .arg(&result_path)
        .env("RUST_LOG", "warn")
        .status()
        .context("running hybrid-runtime index")?;
    if !status.success() {
        bail!("hybrid-runtime index failed: {status}");
    }
    let mut result: serde_json::Value = serde_json::from_slice(&std::fs::read(&result_path)?)?;
    // As the index Job reports it: the path inside the pod's artifacts volume.
    let revision = result["revision"].as_str().unwrap_or_default().to_owned();
    result["location"] = json!(format!("/pvc/hybrid-artifacts/indexes/{revision}.tar.gz"));
    Ok(result)
}

fn manifests(prometheus_url: &str) -> String {
    format!(
        r#"
apiVersion: hybrid.dev/v1alpha1
kind: Corpus
metadata: {{name: {CORPUS}}}
spec:
  sources: [{{configMap: {{name: finance-corpus}}}}]
  chunking: {{strategy: markdown, size: 32, overlap: 0}}
  embedding: {{model: pvc://hybrid-models/all-MiniLM-L6-v2, dimensions: 384}}
  vectorStore: {{embedded: {{storage: pvc://hybrid-artifacts/indexes}}}}
---
apiVersion: hybrid.dev/v1alpha1
kind: ServingPolicy
metadata: {{name: fast}}
spec:
  latency: {{p95Ms: {SLO_MS}}}
  replicas: {{min: {MIN_REPLICAS}, max: {MAX_REPLICAS}}}
  scaleUp: {{stabilizationSeconds: {SCALE_UP_WINDOW_S}, maxStep: 2}}
  scaleDown: {{stabilizationSeconds: {SCALE_DOWN_WINDOW_S}, maxStep: 1}}
  retrieval: {{topK: {TOP_K}, minTopK: {MIN_TOP_K}}}
  gpu:
    resourceName: nvidia.com/gpu
    count: 1
    nodeSelector: {{nvidia.com/gpu.present: "true"}}
    tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
  prometheus: {{url: "{prometheus_url}"}}
  autoscaling: {{enabled: true}}
---
apiVersion: hybrid.dev/v1alpha1
kind: HybridModel
metadata: {{name: {MODEL}}}
spec:
  model: {{source: pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf, format: gguf}}
  corpusRefs: [{{name: {CORPUS}}}]
  servingPolicyRef: {{name: fast}}
"#
    )
}

/// Direction changes of a series (ignoring repeats): 3 → 4 → 3 is one reversal.
fn reversals(values: &[i32]) -> usize {
    let mut steps: Vec<i32> = Vec::new();
    for w in values.windows(2) {
        let d = (w[1] - w[0]).signum();
        if d != 0 {
            steps.push(d);
        }
    }
    steps.windows(2).filter(|w| w[0] != w[1]).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latency_slo_drives_top_k_and_replicas() -> Result<()> {
    let client = client().await?;
    hybrid_e2e::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "autoscale").await?;
    let n = ns.name().to_owned();
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("autoscaler-e2e");
    let _ = std::fs::remove_dir_all(&work);
    let volumes = work.join("pvc");
    std::fs::create_dir_all(volumes.join("hybrid-models"))?;
    std::os::unix::fs::symlink(
        smollm2_gguf()?,
        volumes.join("hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )?;
    std::os::unix::fs::symlink(
        minilm_dir()?,
        volumes.join("hybrid-models/all-MiniLM-L6-v2"),
    )?;
    let index = build_index(&volumes)?;
    eprintln!("index built: {index}");

    let kubeconfig = install_chart_rbac(&n)?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts"]).await?;
    let mut prometheus = Prometheus::start(&work.join("prometheus")).await?;
    let corpus_cm =
        std::fs::read_to_string(repo_root().join("examples/finance/corpus-configmap.yaml"))?;
    ns.apply_yaml(&corpus_cm).await?;
    ns.apply_yaml(&manifests(&prometheus.url())).await?;
    set_job_pod_annotations(&n, "corpus", CORPUS, &kwok_result(&index))?;
    let window = format!("{}s", WINDOW.as_secs());
    let _operator = Operator::start_with(
        &kubeconfig,
        &n,
        &["--autoscaler-tick", "2s", "--autoscaler-window", &window],
    )?;

    // The serving pods' ServiceAccount exists once the operator reconciled the HybridModel.
    let runtime_kubeconfig = poll("ServiceAccount hybrid-runtime", WAIT, || async {
        Ok(match service_account_kubeconfig(&n, "hybrid-runtime") {
            Ok(path) => Check::Done(path),
            Err(e) => Check::Waiting(format!("{e:#}")),
        })
    })
    .await?;
    let mut stand_ins = StandIns::new(StandInSpec {
        namespace: n.clone(),
        model: MODEL.to_owned(),
        volumes: volumes.clone(),
        work: work.join("pods"),
        env: vec![
            (
                "HYBRID_RUNTIME_INJECT_PREFILL_DELAY_US_PER_TOKEN".into(),
                PREFILL_US_PER_TOKEN.to_string(),
            ),
            (
                "HYBRID_RUNTIME_INJECT_DECODE_DELAY_MS".into(),
                DECODE_MS.to_string(),
            ),
        ],
        // On a CPU, f32 weights prefill fastest (docs/runtime-precision.md); the injected
        // delays, not this machine's cores, are meant to set the latency.
        precision: Some("f32".into()),
        kubeconfig: Some(runtime_kubeconfig),
    })?;
    let backends = stand_ins.backends.clone();
    let processes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let targets = prometheus.targets();
    let kubelet = {
        let (client, processes, stop) = (client.clone(), processes.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Err(e) = stand_ins.sync(&client, &targets).await {
                    eprintln!("stand-in sync: {e:#}");
                }
                processes.store(stand_ins.ready(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let run = Arc::new(Run {
        ns,
        start: Instant::now(),
        phase: Arc::new(std::sync::Mutex::new("setup".into())),
        samples: Arc::new(std::sync::Mutex::new(Vec::new())),
    });
    let queries = Queries::new(&n, MODEL, WINDOW);
    let sampler = {
        let (run, processes, stop, url, p95_query) = (
            run.clone(),
            processes.clone(),
            stop.clone(),
            prometheus.url(),
            queries.p95.clone(),
        );
        tokio::spawn(async move {
            let Ok(prom) = PromClient::new() else { return };
            let cms: Api<ConfigMap> = run.ns.api();
            while !stop.load(Ordering::SeqCst) {
                let next = Instant::now() + Duration::from_secs(1);
                let status = run
                    .model()
                    .await
                    .ok()
                    .and_then(|m| m.status)
                    .and_then(|s| s.autoscaler);
                let deployment = run
                    .ns
                    .api::<Deployment>()
                    .get_opt(MODEL)
                    .await
                    .ok()
                    .flatten();
                let config_top_k = cms
                    .get_opt(&format!("{MODEL}-runtime"))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| c.data)
                    .and_then(|d| d.get("config.yaml").cloned())
                    .and_then(|y| serde_yaml::from_str::<serde_yaml::Value>(&y).ok())
                    .and_then(|v| v["topK"].as_i64());
                let sample = Sample {
                    t: run.start.elapsed().as_secs_f64(),
                    unix: unix_now(),
                    phase: run.phase.lock().map(|p| p.clone()).unwrap_or_default(),
                    // +Inf (above every bucket) is drawn at the largest bucket, 120 s.
                    p95_ms: prom
                        .query(&url, &p95_query)
                        .await
                        .ok()
                        .flatten()
                        .filter(|v| !v.is_nan())
                        .map(|v| v.min(120.0) * 1000.0),
                    slo_ms: SLO_MS,
                    desired_replicas: status.as_ref().and_then(|s| s.desired_replicas),
                    deployment_replicas: deployment
                        .as_ref()
                        .and_then(|d| d.spec.as_ref())
                        .and_then(|s| s.replicas),
                    ready_replicas: deployment
                        .as_ref()
                        .and_then(|d| d.status.as_ref())
                        .and_then(|s| s.ready_replicas),
                    serving_processes: processes.load(Ordering::SeqCst),
                    top_k: status.as_ref().and_then(|s| s.top_k),
                    config_top_k,
                    reason: status.as_ref().and_then(|s| s.reason.clone()),
                };
                run.samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(sample);
                tokio::time::sleep_until(next.into()).await;
            }
        })
    };

    let result = scenario(&run, &mut prometheus, &backends, &queries).await;

    // A few more samples, so the timeline shows where the run ended.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let _ = kubelet.await;
    let samples = run.samples();
    let timeline = work.join("timeline.json");
    std::fs::write(&timeline, serde_json::to_vec_pretty(&samples)?)?;
    eprintln!(
        "timeline ({} samples): {}\nplot it: scripts/plot-autoscaler.py {} docs/autoscaler-e2e.png",
        samples.len(),
        timeline.display(),
        timeline.display()
    );
    delete_volumes(&client, &n).await;
    result
}

async fn scenario(
    run: &Run,
    prometheus: &mut Prometheus,
    backends: &Arc<std::sync::RwLock<Vec<String>>>,
    queries: &Queries,
) -> Result<()> {
    // The first pod's process loads and reports its revisions.
    poll("one serving process ready", WAIT, || async {
        let n = backends.read().map(|b| b.len()).unwrap_or_default();
        Ok(if n >= 1 {
            Check::Done(())
        } else {
            Check::Waiting(format!("{n} ready processes"))
        })
    })
    .await?;
    let request = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What did the central bank do in February 2026?"}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    });

    // 1. Pressure.
    run.set_phase("load");
    let load_started = unix_now();
    let load = Load::start(CLIENTS, backends.clone(), request)?;
    let decided = poll("the first decision under pressure", WAIT, || async {
        let a = run.model().await?.status.and_then(|s| s.autoscaler);
        let reason = a
            .as_ref()
            .and_then(|a| a.reason.clone())
            .unwrap_or_default();
        Ok(
            if reason.starts_with("LatencyAboveTarget") || reason.starts_with("QueueBuildingUp") {
                Check::Done((unix_now(), a))
            } else {
                Check::Waiting(reason)
            },
        )
    })
    .await?;
    let (decided_at, first) = decided;
    let first = first.unwrap_or_default();
    eprintln!("first decision: {first:?}");
    if first.top_k.unwrap_or(TOP_K) >= TOP_K {
        bail!("the first decision under pressure did not lower top-k: {first:?}");
    }
    // Scale-out: pods on KWOK GPU nodes, processes serving them.
    poll("scale-out onto GPU nodes", WAIT, || async {
        let pods = run
            .ns
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!(
                "hybrid.dev/hybridmodel={MODEL},app.kubernetes.io/component=serving"
            )))
            .await?;
        let on_gpu = pods
            .items
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| n.starts_with("kwok-gpu-"))
            })
            .count();
        let serving = backends.read().map(|b| b.len()).unwrap_or_default();
        Ok(if on_gpu >= 2 && serving >= 2 {
            Check::Done(())
        } else {
            Check::Waiting(format!(
                "{} pods, {on_gpu} on GPU nodes, {serving} processes serving",
                pods.items.len()
            ))
        })
    })
    .await?;

    // Reaction time: the operator's own p95 expression, as Prometheus evaluates it each second.
    let series = prometheus
        .query_range(&queries.p95, load_started - 5.0, decided_at, 1.0)
        .await?;
    let crossed = series
        .iter()
        .find(|(_, v)| *v * 1000.0 > SLO_MS as f64)
        .map(|(t, _)| *t);
    match crossed {
        Some(t) => eprintln!(
            "REACTION: p95 crossed {SLO_MS} ms at +{:.1} s after the load started; first decision \
             observed +{:.1} s after the crossing (goal ≤ 10 s, on top of the {} s rate window and \
             1 s scrape)",
            t - load_started,
            decided_at - t,
            WINDOW.as_secs()
        ),
        None => eprintln!(
            "REACTION: the decision came before Prometheus' p95 crossed the SLO at 1 s resolution \
             (queue pressure or TTFT acted first); decision +{:.1} s after the load started",
            decided_at - load_started
        ),
    }

    // 2. Steady load, with a Prometheus outage in the middle.
    run.set_phase("steady");
    let steady = steady_duration();
    let steady_start = run.start.elapsed();
    tokio::time::sleep(steady / 2).await;
    let held = run.deployment_replicas().await?;
    let held_top_k = run
        .model()
        .await?
        .status
        .and_then(|s| s.autoscaler)
        .and_then(|a| a.top_k);
    run.set_phase("prometheus-down");
    prometheus.stop();
    let outage_start = Instant::now();
    let unavailable = poll(
        "the autoscaler to notice Prometheus is gone",
        WAIT,
        || async {
            let m = run.model().await?;
            let st = m.status.unwrap_or_default();
            let reason = st.autoscaler.and_then(|a| a.reason).unwrap_or_default();
            let cond = st
                .conditions
                .iter()
                .find(|c| c.type_ == "Autoscaling")
                .cloned();
            Ok(
                if reason.starts_with("PrometheusUnavailable")
                    && cond
                        .as_ref()
                        .is_some_and(|c| c.status == "False" && c.reason == "MetricsUnavailable")
                {
                    Check::Done(cond)
                } else {
                    Check::Waiting(format!("reason {reason:?}, condition {cond:?}"))
                },
            )
        },
    )
    .await?;
    eprintln!("during the outage: {unavailable:?}");
    tokio::time::sleep(OUTAGE.saturating_sub(outage_start.elapsed())).await;
    let during = run.deployment_replicas().await?;
    let during_top_k = run
        .model()
        .await?
        .status
        .and_then(|s| s.autoscaler)
        .and_then(|a| a.top_k);
    if (during, during_top_k) != (held, held_top_k) {
        bail!(
            "replicas/top-k changed while Prometheus was down: {held:?}/{held_top_k:?} → {during:?}/{during_top_k:?}"
        );
    }
    prometheus.restart().await?;
    run.set_phase("steady");
    poll("the autoscaler to read Prometheus again", WAIT, || async {
        let reason = run
            .model()
            .await?
            .status
            .and_then(|s| s.autoscaler)
            .and_then(|a| a.reason)
            .unwrap_or_default();
        Ok(
            if reason.starts_with("PrometheusUnavailable") || reason.starts_with("NoData") {
                Check::Waiting(reason)
            } else {
                Check::Done(())
            },
        )
    })
    .await?;
    let elapsed = run.start.elapsed() - steady_start;
    tokio::time::sleep(steady.saturating_sub(elapsed)).await;

    // No oscillation: after the settling period, neither replicas nor top-k reverse direction.
    let samples = run.samples();
    let settle_at = (steady_start + SETTLE.min(steady / 2)).as_secs_f64();
    let steady_samples: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= settle_at && s.phase != "load")
        .collect();
    let replicas: Vec<i32> = steady_samples
        .iter()
        .filter_map(|s| s.desired_replicas)
        .collect();
    let top_ks: Vec<i32> = steady_samples.iter().filter_map(|s| s.top_k).collect();
    let changes = |v: &[i32]| v.windows(2).filter(|w| w[0] != w[1]).count();
    eprintln!(
        "STEADY: {} s of steady load after {} s settling: replicas {:?}..{:?} ({} changes, {} reversals), top-k ({} changes, {} reversals)",
        steady.as_secs(),
        SETTLE.min(steady / 2).as_secs(),
        replicas.iter().min(),
        replicas.iter().max(),
        changes(&replicas),
        reversals(&replicas),
        changes(&top_ks),
        reversals(&top_ks)
    );
    // One correction (a restored passage taken back) is damping; a second reversal is a cycle.
    if reversals(&replicas) > MAX_REVERSALS || reversals(&top_ks) > MAX_REVERSALS {
        bail!(
            "the autoscaler oscillated under steady load: replicas {replicas:?}, top-k {top_ks:?}"
        );
    }

    // 3. Load removed: top-k restored first, then replicas back to the minimum.
    run.set_phase("idle");
    let stats = load.stop().await;
    eprintln!("LOAD: {stats:?}");
    if stats.server_errors > 0 {
        bail!("the serving processes answered 5xx: {stats:?}");
    }
    if stats.ok == 0 {
        bail!("no request succeeded: {stats:?}");
    }
    let idle_start = run.start.elapsed().as_secs_f64();
    poll(
        "top-k restored and replicas back to the minimum",
        WAIT,
        || async {
            let a = run
                .model()
                .await?
                .status
                .and_then(|s| s.autoscaler)
                .unwrap_or_default();
            let replicas = run.deployment_replicas().await?;
            Ok(
                if a.top_k == Some(TOP_K) && replicas == Some(MIN_REPLICAS) {
                    Check::Done(())
                } else {
                    Check::Waiting(format!(
                        "top-k {:?}, replicas {replicas:?}: {:?}",
                        a.top_k, a.reason
                    ))
                },
            )
        },
    )
    .await?;
    let samples = run.samples();
    let idle: Vec<&Sample> = samples.iter().filter(|s| s.t >= idle_start).collect();
    let restored_at = idle.iter().find(|s| s.top_k == Some(TOP_K)).map(|s| s.t);
    let start_replicas = idle.first().and_then(|s| s.desired_replicas);
    let first_scale_in = idle
        .iter()
        .find(|s| s.desired_replicas < start_replicas)
        .map(|s| s.t);
    eprintln!(
        "IDLE: top-k restored +{:.1} s after the load stopped, first scale-in +{:.1} s (window {SCALE_DOWN_WINDOW_S} s)",
        restored_at.unwrap_or(f64::NAN) - idle_start,
        first_scale_in.unwrap_or(f64::NAN) - idle_start
    );
    if let (Some(r), Some(s)) = (restored_at, first_scale_in)
        && r > s
    {
        bail!("replicas shrank (+{s:.1} s) before top-k was restored (+{r:.1} s)");
    }
    Ok(())
}

#[test]
fn reversals_count_direction_changes() {
    assert_eq!(reversals(&[1, 1, 3, 4, 4]), 0);
    assert_eq!(reversals(&[4, 3, 3, 1]), 0);
    assert_eq!(reversals(&[1, 3, 2]), 1);
    assert_eq!(reversals(&[2, 3, 2, 3]), 2);
}
