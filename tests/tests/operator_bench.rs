//! Operator benchmark (ignored by default; `scripts/bench-operator.sh` runs it): N HybridModels,
//! each with its own Corpus, Adapter and ConfigMaps, on KWOK GPU nodes, with the operator
//! running as the chart's ServiceAccount. Prints: time from the first create to all Ready,
//! operator peak RSS, reconciles per second, and apiserver writes per object on an idle resync
//! (the operator restarted, so every object is reconciled again). Numbers, not pass/fail.
//!
//! As in `operator_lifecycle`, the test plays the runtime: Job results come from KWOK
//! termination-message annotations (passed through `hybrid.dev/job-pod-annotations`), and a
//! loop writes each serving pod's `hybrid.dev/loaded-revisions` report from its model's
//! config.yaml, as `hybrid-runtime serve` would after loading it.

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use hybrid_crds::{Adapter, Corpus, HybridModel, ServingPolicy};
use hybrid_e2e::operator::{
    AuditLog, JOB_POD_ANNOTATIONS, LOADED_ANNOTATION, Operator, bound_claims, delete_volumes,
    install_chart_rbac, operator_user,
};
use hybrid_e2e::{TestNamespace, client, install_crds, repo_root};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn example(file: &str) -> Result<String> {
    std::fs::read_to_string(repo_root().join("examples/finance").join(file))
        .with_context(|| format!("examples/finance/{file}"))
}

fn annotate<K: Resource>(obj: &mut K, result: serde_json::Value) {
    let pod = json!({"hybrid.dev/kwok-termination-message": result.to_string()});
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(JOB_POD_ANNOTATIONS.to_owned(), pod.to_string());
}

/// A cache of `api`'s objects (with `labels`, when given), kept by a watch. The bench reads these
/// each second instead of listing: at 1,000 models, listing models, pods and ConfigMaps every
/// second was a large share of the apiserver's work on the 2-core machine.
fn watched<K>(api: Api<K>, labels: Option<&str>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let wc = labels.map_or_else(watcher::Config::default, |l| {
        watcher::Config::default().labels(l)
    });
    tokio::spawn(
        watcher(api, wc)
            .default_backoff()
            .reflect(writer)
            .for_each(|_| futures::future::ready(())),
    );
    store
}

/// What the bench watches in its namespace.
struct Watched {
    models: Store<HybridModel>,
    corpora: Store<Corpus>,
    adapters: Store<Adapter>,
    deployments: Store<Deployment>,
    configs: Store<ConfigMap>,
    pods: Store<Pod>,
}

impl Watched {
    fn start(ns: &TestNamespace) -> Self {
        let serving = Some("app.kubernetes.io/component=serving");
        Self {
            models: watched(ns.api(), None),
            corpora: watched(ns.api(), None),
            adapters: watched(ns.api(), None),
            deployments: watched(ns.api(), serving),
            configs: watched(ns.api(), serving),
            pods: watched(ns.api(), serving),
        }
    }
}

/// Writes every serving pod's report from its model's config.yaml (unless the pod has it);
/// returns how many pods it patched.
async fn play_runtime(ns: &TestNamespace, w: &Watched) -> Result<usize> {
    let configs: BTreeMap<String, String> = w
        .configs
        .state()
        .iter()
        .filter_map(|c| {
            let model = c.labels().get("hybrid.dev/hybridmodel")?.clone();
            let yaml: serde_yaml::Value =
                serde_yaml::from_str(c.data.as_ref()?.get("config.yaml")?).ok()?;
            let list = |key: &str, name: &str| -> Vec<serde_json::Value> {
                yaml[key]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|e| json!({"name": e[name].as_str(), "revision": e["revision"].as_str()}))
                    .collect()
            };
            let report = json!({"servingRevision": yaml["servingRevision"].as_str(),
                "adapters": list("adapters", "name"), "indexes": list("indexes", "corpus")});
            Some((model, report.to_string()))
        })
        .collect();
    let pods: Api<Pod> = ns.api();
    let todo: Vec<(String, String)> = w
        .pods
        .state()
        .iter()
        .filter_map(|p| {
            let report = configs.get(p.labels().get("hybrid.dev/hybridmodel")?)?;
            let has = p.annotations().get(LOADED_ANNOTATION);
            (has != Some(report)).then(|| (p.name_any(), report.clone()))
        })
        .collect();
    let n = todo.len();
    futures::stream::iter(todo)
        .map(|(name, report)| {
            let pods = pods.clone();
            async move {
                let patch = json!({"metadata": {"annotations": {LOADED_ANNOTATION: report}}});
                match pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    // A pod the watch has not yet seen deleted.
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    r => r.map(|_| ()),
                }
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(n)
}

/// When each stage was first complete for every model (seconds from the first create): all
/// Corpora indexed, all Adapters trained, all serving Deployments available. Sampled every few
/// seconds, to tell the control plane's share (Job and pod start-up in KWOK) from the
/// operator's.
#[derive(Default)]
struct Stages {
    indexed: Option<f64>,
    trained: Option<f64>,
    available: Option<f64>,
}

impl Stages {
    fn sample(&mut self, w: &Watched, n: usize, at: f64) {
        if self.indexed.is_none() {
            let done = (w.corpora.state().iter())
                .filter(|c| {
                    c.status
                        .as_ref()
                        .is_some_and(|s| s.active_revision.is_some())
                })
                .count();
            self.indexed = (done == n).then_some(at);
        }
        if self.trained.is_none() {
            let done = (w.adapters.state().iter())
                .filter(|a| {
                    a.status
                        .as_ref()
                        .is_some_and(|s| s.active_revision.is_some())
                })
                .count();
            self.trained = (done == n).then_some(at);
        }
        if self.available.is_none() {
            let done = (w.deployments.state().iter())
                .filter(|d| {
                    d.status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0)
                        >= 1
                })
                .count();
            self.available = (done == n).then_some(at);
        }
    }

    fn line(&self) -> String {
        let s = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        format!(
            "indexed_s={} trained_s={} available_s={}",
            s(self.indexed),
            s(self.trained),
            s(self.available)
        )
    }
}

/// Reconciles and their mean duration per kind, from the operator's histogram.
fn reconciles_by_kind(op: &Operator) -> String {
    let metrics = op.metrics().unwrap_or_default();
    let value = |series: &str, kind: &str| -> f64 {
        let prefix =
            format!("hybrid_operator_reconcile_duration_seconds_{series}{{kind=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or(0.0)
    };
    ["Corpus", "Adapter", "ServingPolicy", "HybridModel"]
        .iter()
        .map(|k| {
            let (count, sum) = (value("count", k), value("sum", k));
            format!(
                "{k}={count:.0}x{:.1}ms",
                if count > 0.0 {
                    1000.0 * sum / count
                } else {
                    0.0
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn count_ready(models: &Store<HybridModel>) -> usize {
    models
        .state()
        .iter()
        .filter(|m| {
            m.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
}

#[tokio::test]
#[ignore = "benchmark: scripts/bench-operator.sh"]
async fn operator_bench() -> Result<()> {
    let n: usize = env_or("BENCH_MODELS", 100);
    let timeout = Duration::from_secs(env_or("BENCH_TIMEOUT_SECONDS", 900));
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "bench").await?;
    let name = ns.name().to_owned();
    let kubeconfig = install_chart_rbac(&name)?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts"]).await?;
    let audit = AuditLog::open()?;

    let policy: ServingPolicy = serde_yaml::from_str(&example("servingpolicy.yaml")?)?;
    let corpus_cm = example("corpus-configmap.yaml")?;
    let (corpus_t, adapter_t, model_t) = (
        example("corpus.yaml")?,
        example("adapter.yaml")?,
        example("hybridmodel.yaml")?,
    );
    // A small document per corpus: the operator digests ConfigMap contents, not their size.
    let doc_cm = |i: usize, key: &str| -> Result<ConfigMap> {
        let mut cm: ConfigMap = serde_yaml::from_str(&corpus_cm)?;
        cm.metadata.name = Some(format!("{key}-{i}"));
        cm.data = Some(BTreeMap::from([(
            if key == "d" { "train.jsonl" } else { "doc.md" }.to_owned(),
            format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"question {i}\"}}, {{\"role\": \"assistant\", \"content\": \"answer {i}\"}}]}}\n"
            ),
        )]));
        Ok(cm)
    };

    // BENCH_CREATE_ONLY=1: no operator; only the creates, to show what the apiserver alone
    // takes for them on this machine.
    let create_only = env_or("BENCH_CREATE_ONLY", 0) == 1;
    let w = Watched::start(&ns);
    let op = match create_only {
        true => None,
        false => Some(Operator::start(&kubeconfig, &name)?),
    };
    eprintln!(
        "bench: {n} HybridModels in {name}; operator pid {:?}",
        op.as_ref().map(Operator::pid)
    );
    let t0 = Instant::now();
    ns.api::<ServingPolicy>()
        .create(&PostParams::default(), &policy)
        .await?;
    futures::stream::iter(0..n)
        .map(|i| {
            let ns = &ns;
            let (corpus_t, adapter_t, model_t) = (&corpus_t, &adapter_t, &model_t);
            async move {
                let pp = PostParams::default();
                ns.api::<ConfigMap>().create(&pp, &doc_cm(i, "c")?).await?;
                ns.api::<ConfigMap>().create(&pp, &doc_cm(i, "d")?).await?;
                let mut c: Corpus = serde_yaml::from_str(
                    &corpus_t
                        .replace("name: finance-notes", &format!("name: c-{i}"))
                        .replace("name: finance-corpus", &format!("name: c-{i}")),
                )?;
                annotate(&mut c, json!({"kind": "IndexResult", "revision": format!("ix-{i}"),
                    "documents": 1, "chunks": 1, "reused": 0, "reembedded": 1,
                    "durationSeconds": 1.0, "location": format!("/pvc/hybrid-artifacts/indexes/ix-{i}.tar.gz")}));
                ns.api::<Corpus>().create(&pp, &c).await?;
                let mut a: Adapter = serde_yaml::from_str(
                    &adapter_t
                        .replace("name: finance-compliance", &format!("name: a-{i}"))
                        .replace("name: finance-dataset", &format!("name: d-{i}")),
                )?;
                annotate(&mut a, json!({"kind": "TrainResult", "revision": format!("ad-{i}"),
                    "artifactUri": format!("file:///pvc/hybrid-artifacts/adapters/ad-{i}"),
                    "finalLoss": 1.0, "evalLoss": null, "steps": 1, "tokensPerSecond": 1.0,
                    "durationSeconds": 1.0}));
                ns.api::<Adapter>().create(&pp, &a).await?;
                let m: HybridModel = serde_yaml::from_str(
                    &model_t
                        .replace("name: advisor\n", &format!("name: m-{i}\n"))
                        .replace("name: finance-compliance", &format!("name: a-{i}"))
                        .replace("name: finance-notes", &format!("name: c-{i}")),
                )?;
                ns.api::<HybridModel>().create(&pp, &m).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let created = t0.elapsed();
    eprintln!(
        "bench: created {} objects in {:.1} s",
        5 * n + 1,
        created.as_secs_f64()
    );
    let Some(mut op) = op else {
        println!(
            "BENCH create-only models={n} objects={} created_s={:.1}",
            5 * n + 1,
            created.as_secs_f64()
        );
        delete_volumes(ns.client(), &name).await;
        return Ok(());
    };

    let mut last_print = Instant::now();
    let mut stages = Stages::default();
    let mut last_sample = Instant::now();
    let all_ready = loop {
        let reported = play_runtime(&ns, &w).await?;
        let ready = count_ready(&w.models);
        if ready == n {
            break t0.elapsed();
        }
        if last_sample.elapsed() >= Duration::from_secs(5) {
            stages.sample(&w, n, t0.elapsed().as_secs_f64());
            last_sample = Instant::now();
        }
        if t0.elapsed() > timeout {
            anyhow::bail!("only {ready}/{n} HybridModels Ready after {timeout:?}");
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "bench: {:>5.1} s  {ready}/{n} Ready, {reported} pod reports written, {:.0} reconciles, \
                 peak RSS {:.1} MiB, heap {}, {}",
                t0.elapsed().as_secs_f64(),
                op.metric_sum("hybrid_operator_reconcile_duration_seconds_count")
                    .unwrap_or(0.0),
                op.peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
                heap(&op),
                stages.line(),
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let reconciles = op.metric_sum("hybrid_operator_reconcile_duration_seconds_count")?;
    let rss = op.peak_rss_kib()?;
    let by_kind = reconciles_by_kind(&op);

    // Idle resync: restart the operator, so every object is reconciled again, and count writes.
    let objects = 3 * n + 1;
    let mark = audit.mark()?;
    op.restart()?;
    let resync_start = Instant::now();
    loop {
        let r = op
            .metric_sum("hybrid_operator_reconcile_duration_seconds_count")
            .unwrap_or(0.0);
        if r >= objects as f64 || resync_start.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let resync = resync_start.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let resync_reconciles = op.metric_sum("hybrid_operator_reconcile_duration_seconds_count")?;
    let writes: Vec<String> = audit
        .writes_since(mark, &operator_user(&name))?
        .into_iter()
        .filter(|w| w.resource != "leases")
        .map(|w| w.to_string())
        .collect();
    let resync_rss = op.peak_rss_kib()?;
    eprintln!("bench: after the resync: heap {}", heap(&op));

    println!(
        "BENCH models={n} objects={objects} created_s={:.1} all_ready_s={:.1} reconciles={reconciles:.0} \
         reconciles_per_s={:.1} peak_rss_mib={:.1} resync_s={:.1} resync_reconciles={resync_reconciles:.0} \
         resync_peak_rss_mib={:.1} idle_writes={} idle_writes_per_object={:.3}",
        created.as_secs_f64(),
        all_ready.as_secs_f64(),
        reconciles / all_ready.as_secs_f64(),
        rss as f64 / 1024.0,
        resync.as_secs_f64(),
        resync_rss as f64 / 1024.0,
        writes.len(),
        writes.len() as f64 / objects as f64,
    );
    println!(
        "BENCH stages models={n} {} all_ready_s={:.0} reconciles {by_kind}; resync reconciles {}",
        stages.line(),
        all_ready.as_secs_f64(),
        reconciles_by_kind(&op),
    );
    if !writes.is_empty() {
        println!(
            "BENCH idle writes (first 20): {:#?}",
            &writes[..writes.len().min(20)]
        );
    }
    drop(op);
    delete_volumes(ns.client(), &name).await;
    Ok(())
}

/// The operator's allocator counts (allocated / resident MiB), when it runs on jemalloc.
fn heap(op: &Operator) -> String {
    let mib = |name| op.metric_sum(name).map(|b| b / 1048576.0);
    match (
        mib("hybrid_operator_heap_allocated_bytes"),
        mib("hybrid_operator_heap_resident_bytes"),
    ) {
        (Ok(a), Ok(r)) if r > 0.0 => format!("{a:.1}/{r:.1} MiB allocated/resident"),
        _ => "-".to_owned(),
    }
}
