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
    AuditLog, JOB_POD_ANNOTATIONS, LOADED_ANNOTATION, Operator, bound_claims, control_plane_cpu,
    cpu_seconds, delete_volumes, install_chart_rbac, operator_user,
};
use hybrid_e2e::{TestNamespace, client, install_crds, repo_root};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
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
    let templates = Templates::read()?;

    // BENCH_CREATE_ONLY=1: no operator; only the creates, to show what the apiserver alone
    // takes for them on this machine.
    let create_only = env_or("BENCH_CREATE_ONLY", 0) == 1;
    let w = Watched::start(&ns);
    ns.api::<ServingPolicy>()
        .create(&PostParams::default(), &policy)
        .await?;
    if env_or("BENCH_FLOOR", 0) == 1 {
        return floor(&ns, &kubeconfig, &templates, &w, n, &audit).await;
    }
    let op = match create_only {
        true => None,
        false => Some(Operator::start(&kubeconfig, &name)?),
    };
    eprintln!(
        "bench: {n} HybridModels in {name}; operator pid {:?}",
        op.as_ref().map(Operator::pid)
    );
    let cpu_before = control_plane_cpu()?;
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| templates.create_model(&ns, i))
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
    let cpu = cpu_split(&cpu_before, Some(&op))?;
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
    println!("BENCH cpu models={n} until all Ready: {cpu}");
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

/// The examples' manifests, made into model `i`'s objects by [`Templates::create_model`].
struct Templates {
    corpus_cm: String,
    corpus: String,
    adapter: String,
    model: String,
}

impl Templates {
    fn read() -> Result<Self> {
        Ok(Self {
            corpus_cm: example("corpus-configmap.yaml")?,
            corpus: example("corpus.yaml")?,
            adapter: example("adapter.yaml")?,
            model: example("hybridmodel.yaml")?,
        })
    }

    /// A small document per corpus (the operator digests ConfigMap contents, not their size), a
    /// dataset, a Corpus and an Adapter whose Job pods end with a result (KWOK), and the
    /// HybridModel `m-<i>` serving them.
    async fn create_model(&self, ns: &TestNamespace, i: usize) -> Result<()> {
        let doc_cm = |key: &str| -> Result<ConfigMap> {
            let mut cm: ConfigMap = serde_yaml::from_str(&self.corpus_cm)?;
            cm.metadata.name = Some(format!("{key}-{i}"));
            cm.data = Some(BTreeMap::from([(
                if key == "d" { "train.jsonl" } else { "doc.md" }.to_owned(),
                format!(
                    "{{\"messages\": [{{\"role\": \"user\", \"content\": \"question {i}\"}}, {{\"role\": \"assistant\", \"content\": \"answer {i}\"}}]}}\n"
                ),
            )]));
            Ok(cm)
        };
        let pp = PostParams::default();
        ns.api::<ConfigMap>().create(&pp, &doc_cm("c")?).await?;
        ns.api::<ConfigMap>().create(&pp, &doc_cm("d")?).await?;
        let mut c: Corpus = serde_yaml::from_str(
            &self
                .corpus
                .replace("name: finance-notes", &format!("name: c-{i}"))
                .replace("name: finance-corpus", &format!("name: c-{i}")),
        )?;
        annotate(
            &mut c,
            json!({"kind": "IndexResult", "revision": format!("ix-{i}"),
                "documents": 1, "chunks": 1, "reused": 0, "reembedded": 1,
                "durationSeconds": 1.0, "location": format!("/pvc/hybrid-artifacts/indexes/ix-{i}.tar.gz")}),
        );
        ns.api::<Corpus>().create(&pp, &c).await?;
        let mut a: Adapter = serde_yaml::from_str(
            &self
                .adapter
                .replace("name: finance-compliance", &format!("name: a-{i}"))
                .replace("name: finance-dataset", &format!("name: d-{i}")),
        )?;
        annotate(
            &mut a,
            json!({"kind": "TrainResult", "revision": format!("ad-{i}"),
                "artifactUri": format!("file:///pvc/hybrid-artifacts/adapters/ad-{i}"),
                "finalLoss": 1.0, "evalLoss": null, "steps": 1, "tokensPerSecond": 1.0,
                "durationSeconds": 1.0}),
        );
        ns.api::<Adapter>().create(&pp, &a).await?;
        let m: HybridModel = serde_yaml::from_str(
            &self
                .model
                .replace("name: advisor\n", &format!("name: m-{i}\n"))
                .replace("name: finance-compliance", &format!("name: a-{i}"))
                .replace("name: finance-notes", &format!("name: c-{i}")),
        )?;
        ns.api::<HybridModel>().create(&pp, &m).await?;
        Ok(())
    }
}

/// CPU seconds each control-plane component (and the operator, when given) used since `before`,
/// and their share of what the machine's cores could give in that time.
fn cpu_split(before: &BTreeMap<String, f64>, op: Option<&Operator>) -> Result<String> {
    let mut used: Vec<(String, f64)> = control_plane_cpu()?
        .into_iter()
        .map(|(name, s)| {
            let s0 = before.get(&name).copied().unwrap_or(0.0);
            (name, s - s0)
        })
        .collect();
    if let Some(op) = op {
        used.push(("operator".to_owned(), cpu_seconds(op.pid())?));
    }
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = used.iter().map(|(_, s)| s).sum();
    let parts: Vec<String> = used.iter().map(|(n, s)| format!("{n}={s:.0}")).collect();
    Ok(format!("cpu_s total={total:.0} {}", parts.join(" ")))
}

/// Names in the template model's objects, replaced by each copy's number.
const TEMPLATE_ID: usize = 987_654_321;

/// BENCH_FLOOR=1: what the control plane alone needs for N models on this machine, a floor for
/// any operator. The operator runs one model (the template) to Ready and stops; the bench then
/// creates, for N models at once, copies of every object the operator made for it (index and
/// training Jobs, serving Deployment, Service, PodDisruptionBudget, runtime ConfigMap) and waits
/// until every Job has succeeded and every Deployment is available. An operator makes the same
/// objects, one stage after another, and writes statuses and Events besides.
async fn floor(
    ns: &TestNamespace,
    kubeconfig: &std::path::Path,
    templates: &Templates,
    w: &Watched,
    n: usize,
    audit: &AuditLog,
) -> Result<()> {
    let name = ns.name().to_owned();
    templates.create_model(ns, TEMPLATE_ID).await?;
    let mut op = Operator::start(kubeconfig, &name)?;
    let t = Instant::now();
    while count_ready(&w.models) < 1 {
        play_runtime(ns, w).await?;
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "template model not Ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    op.terminate()?;
    op.wait_exit(Duration::from_secs(30))?;
    let objects = [
        operator_made::<Job>(ns).await?,
        operator_made::<Deployment>(ns).await?,
        operator_made::<Service>(ns).await?,
        operator_made::<PodDisruptionBudget>(ns).await?,
        operator_made::<ConfigMap>(ns).await?,
    ];
    eprintln!(
        "bench floor: the operator made {} Jobs, {} Deployments, {} Services, {} PDBs, {} ConfigMaps for one model",
        objects[0].1.len(),
        objects[1].1.len(),
        objects[2].1.len(),
        objects[3].1.len(),
        objects[4].1.len()
    );
    let jobs: Store<Job> = watched(
        ns.api(),
        Some("app.kubernetes.io/managed-by=hybrid-operator"),
    );
    let copies = objects.iter().map(|(_, o)| o.len()).sum::<usize>() * n;
    let cpu_before = control_plane_cpu()?;
    let mark = audit.mark()?;
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let objects = &objects;
            async move {
                for (create, manifests) in objects {
                    for m in manifests {
                        create(ns, m.replace(&TEMPLATE_ID.to_string(), &i.to_string())).await?;
                    }
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let created = t0.elapsed();
    let (want_jobs, want_deployments) = (objects[0].1.len() * (n + 1), n + 1);
    let done = loop {
        let succeeded = (jobs.state().iter())
            .filter(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1)
            .count();
        let available = (w.deployments.state().iter())
            .filter(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
                    >= 1
            })
            .count();
        if succeeded >= want_jobs && available >= want_deployments {
            break t0.elapsed();
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(env_or("BENCH_TIMEOUT_SECONDS", 900)),
            "floor: {succeeded}/{want_jobs} Jobs succeeded, {available}/{want_deployments} Deployments available"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cpu = cpu_split(&cpu_before, None)?;
    let mut by_user: BTreeMap<String, usize> = BTreeMap::new();
    for (user, _) in audit.all_writes_since(mark)? {
        let user = user.rsplit(':').next().unwrap_or_default().to_owned();
        *by_user.entry(user).or_default() += 1;
    }
    let writes: usize = by_user.values().sum();
    println!(
        "BENCH floor models={n} objects_created={copies} created_s={:.1} all_done_s={:.1} \
         writes_per_model={:.1} {cpu}",
        created.as_secs_f64(),
        done.as_secs_f64(),
        writes as f64 / n as f64,
    );
    println!("BENCH floor writes by user: {by_user:?}");
    delete_volumes(ns.client(), &name).await;
    Ok(())
}

/// Creates one object in the namespace from its JSON manifest.
type CreateFn = for<'a> fn(&'a TestNamespace, String) -> futures::future::BoxFuture<'a, Result<()>>;

/// The objects of kind `K` the operator made in the namespace, as JSON manifests it could create
/// again (what the apiserver set on them is removed), with the function that creates one.
async fn operator_made<K>(ns: &TestNamespace) -> Result<(CreateFn, Vec<String>)>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync,
{
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=hybrid-operator");
    let mut manifests = Vec::new();
    for obj in ns.api::<K>().list(&lp).await? {
        let mut v = serde_json::to_value(&obj)?;
        strip_server_fields(&mut v);
        manifests.push(v.to_string());
    }
    fn create<K>(ns: &TestNamespace, manifest: String) -> futures::future::BoxFuture<'_, Result<()>>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync,
    {
        Box::pin(async move {
            let obj: K = serde_json::from_str(&manifest)?;
            ns.api::<K>().create(&PostParams::default(), &obj).await?;
            Ok(())
        })
    }
    Ok((create::<K> as CreateFn, manifests))
}

/// Removes what the apiserver and controllers set on an object (identity, status, the Job
/// controller's selector and labels, a Service's cluster IP, owner references), so that a copy
/// can be created.
fn strip_server_fields(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v.pointer_mut("/metadata").and_then(|m| m.as_object_mut()) {
        for key in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "ownerReferences",
            "finalizers",
        ] {
            m.remove(key);
        }
    }
    for labels in ["/metadata/labels", "/spec/template/metadata/labels"] {
        if let Some(l) = v.pointer_mut(labels).and_then(|l| l.as_object_mut()) {
            for key in [
                "controller-uid",
                "batch.kubernetes.io/controller-uid",
                "job-name",
                "batch.kubernetes.io/job-name",
            ] {
                l.remove(key);
            }
        }
    }
    if let Some(a) = v
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.as_object_mut())
    {
        a.remove("deployment.kubernetes.io/revision");
    }
    let job = v["kind"] == "Job";
    let service = v["kind"] == "Service";
    if let Some(spec) = v.pointer_mut("/spec").and_then(|s| s.as_object_mut()) {
        if job {
            spec.remove("selector");
        }
        if service {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
    }
}
