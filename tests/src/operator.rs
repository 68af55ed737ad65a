//! Running the real `hybrid-operator` binary against the local cluster with the Helm chart's
//! RBAC (never as cluster admin), playing the serving runtime's reporting role, and counting the
//! operator's writes in the apiserver's audit log.

use crate::{Check, TestNamespace, kubectl, poll, repo_root};
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Deserialize as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Release name the chart is rendered with; also its ServiceAccount's name.
pub const RELEASE: &str = "hybrid-operator";
/// The serving pods' report annotation (docs/runtime-contract.md, section 3).
pub use hybrid_contract::loaded::LOADED_REVISIONS_ANNOTATION as LOADED_ANNOTATION;
/// Annotation on a Corpus/Adapter whose JSON object the operator puts on its Jobs' pods.
pub const JOB_POD_ANNOTATIONS: &str = "hybrid.dev/job-pod-annotations";

/// The operator binary: `$HYBRID_OPERATOR_BIN`, else `<target dir>/debug/hybrid-operator`
/// (`tests/cluster/e2e.sh` builds it).
pub fn operator_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HYBRID_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug").join("hybrid-operator");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build -p hybrid-operator` or set HYBRID_OPERATOR_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// The cluster state directory (where `kubeconfig` and `audit.log` are).
pub fn cluster_dir() -> Result<PathBuf> {
    let kubeconfig = std::env::var_os("KUBECONFIG").ok_or_else(|| anyhow!("KUBECONFIG unset"))?;
    Path::new(&kubeconfig)
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("KUBECONFIG has no directory"))
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat` (clock ticks
/// of 1/100 s, Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no command name"))?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat: {} fields", fields.len()))?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// CPU seconds used so far by each component `cluster.sh` started (etcd, kube-apiserver, ...),
/// from the pids it records.
pub fn control_plane_cpu() -> Result<std::collections::BTreeMap<String, f64>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(cluster_dir()?.join("pids"))? {
        let path = entry?.path();
        if path.extension().is_some() {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let pid: u32 = std::fs::read_to_string(&path)?.trim().parse()?;
        if let Ok(s) = cpu_seconds(pid) {
            out.insert(name.into_owned(), s);
        }
    }
    Ok(out)
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl_program() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// Renders the chart's ServiceAccount and RBAC for a release in `namespace`, applies them, and
/// writes a kubeconfig that authenticates as that ServiceAccount with a bound token. Returns the
/// kubeconfig's path.
pub fn install_chart_rbac(namespace: &str) -> Result<PathBuf> {
    let helm = std::env::var("HELM").unwrap_or_else(|_| "helm".to_owned());
    let chart = repo_root().join("charts/hybrid-operator");
    let rendered = run(
        &helm,
        &[
            "template",
            RELEASE,
            &chart.to_string_lossy(),
            "--namespace",
            namespace,
            // helm's offline default (1.20) is below the chart's kubeVersion.
            "--kube-version",
            "1.35.0",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        None,
    )?;
    let rendered = own_cluster_role_binding(&rendered, namespace)?;
    run(
        &kubectl_program(),
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-n",
            namespace,
            "-f",
            "-",
        ],
        Some(&rendered),
    )?;
    service_account_kubeconfig(namespace, RELEASE)
}

/// The chart's ClusterRoleBinding renamed `<release>-<namespace>`. The chart names it after the
/// release, one per cluster; tests in parallel each install the chart in their own namespace, and
/// with one shared name each install replaced the binding's subject, taking the cluster-wide
/// permissions from the operators of the tests before it (CI, 27 Nov: "cannot list corpora").
fn own_cluster_role_binding(rendered: &str, namespace: &str) -> Result<String> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(rendered) {
        let mut value = serde_yaml::Value::deserialize(doc)?;
        if value["kind"].as_str() == Some("ClusterRoleBinding") {
            value["metadata"]["name"] = format!("{RELEASE}-{namespace}").into();
        }
        if !value.is_null() {
            docs.push(serde_yaml::to_string(&value)?);
        }
    }
    Ok(docs.join("---\n"))
}

/// A kubeconfig that authenticates as ServiceAccount `account` of `namespace` with a bound token
/// (written next to the cluster's kubeconfig). Returns its path.
pub fn service_account_kubeconfig(namespace: &str, account: &str) -> Result<PathBuf> {
    let token = run(
        &kubectl_program(),
        &["create", "token", account, "-n", namespace, "--duration=2h"],
        None,
    )?;
    let view = |path: &str| {
        run(
            &kubectl_program(),
            &[
                "config",
                "view",
                "--raw",
                "--minify",
                "-o",
                &format!("jsonpath={{{path}}}"),
            ],
            None,
        )
    };
    let server = view(".clusters[0].cluster.server")?;
    let ca = view(".clusters[0].cluster.certificate-authority-data")?;
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", certificate-authority-data: \"{ca}\"}}\n\
         users:\n- name: {account}\n  user: {{token: \"{}\"}}\ncontexts:\n- name: {account}\n  context: {{cluster: c, user: {account}, namespace: {namespace}}}\n\
         current-context: {account}\n",
        token.trim()
    );
    let path = cluster_dir()?.join(format!("{account}-{namespace}.kubeconfig"));
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Writes by the operator of namespace `ns` since `mark` to objects of that namespace (or
/// cluster-scoped ones), without Lease renewals (leader election heartbeats). Each test runs its
/// own operator, which watches every namespace: it rightly touches an earlier test's objects
/// while that namespace is still being deleted, and those writes are not this test's.
pub fn operator_writes(audit: &AuditLog, mark: u64, ns: &str) -> Result<Vec<String>> {
    Ok(audit
        .writes_since(mark, &operator_user(ns))?
        .into_iter()
        .filter(|w| w.resource != "leases")
        .filter(|w| w.namespace.as_deref().is_none_or(|n| n == ns))
        .map(|w| w.to_string())
        .collect())
}

/// The audit log user name of the chart's ServiceAccount in `namespace`.
pub fn operator_user(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:{RELEASE}")
}

/// The identity (`--pod-name`) of every operator the tests start, as it appears in the Lease.
pub const IDENTITY: &str = "e2e-operator";

/// Who holds the operator's leader election Lease (`hybrid-operator`), if anyone.
pub async fn lease_holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt(RELEASE)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// A running `hybrid-operator` process; SIGKILLed when dropped.
pub struct Operator {
    child: Child,
    kubeconfig: PathBuf,
    namespace: String,
    extra_args: Vec<String>,
    pub admin_port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the binary as the chart's ServiceAccount, with leader election in `namespace`.
    pub fn start(kubeconfig: &Path, namespace: &str) -> Result<Self> {
        Self::start_with(kubeconfig, namespace, &[])
    }

    /// [`Operator::start`] with extra command-line flags (kept for [`Operator::restart`]).
    pub fn start_with(kubeconfig: &Path, namespace: &str, extra_args: &[&str]) -> Result<Self> {
        let admin_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = cluster_dir()?.join(format!("logs/operator-{namespace}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(operator_binary()?)
            .args([
                "--runtime-image",
                "ghcr.io/hybrid-operator/hybrid-runtime:e2e",
                "--admin-port",
                &admin_port.to_string(),
                "--leader-election-namespace",
                namespace,
                "--pod-name",
                IDENTITY,
            ])
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("HYBRID_E2E_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting hybrid-operator")?;
        Ok(Self {
            child,
            kubeconfig: kubeconfig.to_owned(),
            namespace: namespace.to_owned(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            admin_port,
            log,
        })
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, as the kubelet ends a pod (a rolling update, a drain).
    pub fn terminate(&mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.child.id());
        }
        Ok(())
    }

    /// SIGTERM, then checks the exit a pod's shutdown needs: within 30 s (the kubelet's grace
    /// period, as a bound for a hang, not a timing assertion), with code 0 and `says` in the
    /// log. Prints how long it took; returns the log.
    pub fn stop(&mut self, says: &str) -> Result<String> {
        let sent = std::time::Instant::now();
        self.terminate()?;
        let (code, log) = self.wait_exit(Duration::from_secs(30))?;
        eprintln!(
            "operator exited {:.2} s after SIGTERM",
            sent.elapsed().as_secs_f64()
        );
        assert_eq!(code, 0, "exit code after SIGTERM; log:\n{log}");
        assert!(log.contains(says), "no {says:?} in the log:\n{log}");
        Ok(log)
    }

    /// SIGKILL and start a fresh process with the same identity and credentials.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let fresh = Self::start_with(&self.kubeconfig, &self.namespace, &args)?;
        // The old process is already reaped; dropping it only retries a harmless kill.
        drop(std::mem::replace(self, fresh));
        Ok(())
    }

    /// Waits until the process exits and returns its log, for start-up failures.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(i32, String)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Ok((status.code().unwrap_or(-1), log));
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                bail!(
                    "hybrid-operator still runs after {timeout:?}; the end of its log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/metrics` of the admin server.
    pub fn metrics(&self) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }

    /// Sum of a counter or histogram `_count` over all label sets, 0 when absent.
    pub fn metric_sum(&self, name: &str) -> Result<f64> {
        Ok(self
            .metrics()?
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Process id, for /proc/<pid>/status.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{}/status", self.pid()))
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One write request of the audit log.
#[derive(Clone, Debug)]
pub struct AuditWrite {
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub code: Option<i64>,
}

impl std::fmt::Display for AuditWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}{} {}/{} -> {}",
            self.verb,
            self.resource,
            self.subresource
                .as_deref()
                .map(|s| format!("/{s}"))
                .unwrap_or_default(),
            self.namespace.as_deref().unwrap_or("-"),
            self.name.as_deref().unwrap_or("-"),
            self.code.map(|c| c.to_string()).unwrap_or_default()
        )
    }
}

/// The apiserver audit log (`<cluster dir>/audit.log`, written by `cluster.sh up`).
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn open() -> Result<Self> {
        let path = cluster_dir()?.join("audit.log");
        if !path.exists() {
            bail!(
                "{} missing: the cluster was started without the audit log (restart it with tests/cluster/cluster.sh)",
                path.display()
            );
        }
        Ok(Self { path })
    }

    /// Current end of the log, to count from.
    pub fn mark(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Write requests (create, update, patch, delete) by `user` after `mark`.
    pub fn writes_since(&self, mark: u64, user: &str) -> Result<Vec<AuditWrite>> {
        Ok(self
            .all_writes_since(mark)?
            .into_iter()
            .filter(|(u, _)| u == user)
            .map(|(_, w)| w)
            .collect())
    }

    /// Every write request after `mark`, with the user who made it.
    pub fn all_writes_since(&self, mark: u64) -> Result<Vec<(String, AuditWrite)>> {
        let mut f = std::fs::File::open(&self.path)?;
        let mut text = String::new();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(mark))?;
        f.read_to_string(&mut text)?;
        let mut out = Vec::new();
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if e["stage"] != "ResponseComplete" {
                continue;
            }
            let verb = e["verb"].as_str().unwrap_or_default();
            if !matches!(
                verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            ) {
                continue;
            }
            let r = &e["objectRef"];
            let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            let user = s(&e["user"]["username"]).unwrap_or_default();
            out.push((
                user,
                AuditWrite {
                    verb: verb.to_owned(),
                    resource: s(&r["resource"]).unwrap_or_default(),
                    subresource: s(&r["subresource"]),
                    namespace: s(&r["namespace"]),
                    name: s(&r["name"]),
                    code: e["responseStatus"]["code"].as_i64(),
                },
            ));
        }
        Ok(out)
    }
}

/// PersistentVolumeClaims `names` in the namespace, each bound to a hostPath PV made for it
/// (KWOK pods never mount anything; the scheduler only needs the claims bound).
pub async fn bound_claims(ns: &TestNamespace, names: &[&str]) -> Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(ns.client().clone());
    for name in names {
        let pv = format!("{}-{name}", ns.name());
        let yaml = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {pv}, labels: {{hybrid.dev/e2e: \"true\"}}}}\n\
             spec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteMany]\n  persistentVolumeReclaimPolicy: Delete\n\
             \x20 hostPath: {{path: /tmp/{pv}}}\n  claimRef: {{namespace: {ns}, name: {name}}}\n---\n\
             apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  accessModes: [ReadWriteMany]\n  resources: {{requests: {{storage: 1Gi}}}}\n  volumeName: {pv}\n  storageClassName: \"\"\n",
            ns = ns.name()
        );
        crate::apply_yaml(ns.client(), None, &yaml).await?;
        let _ = &pvs;
    }
    let claims: Api<PersistentVolumeClaim> = ns.api();
    poll("claims Bound", Duration::from_secs(60), || async {
        let list = claims.list(&ListParams::default()).await?;
        let unbound: Vec<String> = list
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
            .map(|c| c.name_any())
            .collect();
        Ok(if unbound.is_empty() {
            Check::Done(())
        } else {
            Check::Waiting(format!("unbound: {unbound:?}"))
        })
    })
    .await
}

/// Deletes the PVs [`bound_claims`] made for this namespace.
pub async fn delete_volumes(client: &Client, namespace: &str) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    if let Ok(list) = pvs
        .list(&ListParams::default().labels("hybrid.dev/e2e=true"))
        .await
    {
        for pv in list.items {
            if pv.name_any().starts_with(namespace) {
                let _ = pvs.delete(&pv.name_any(), &DeleteParams::default()).await;
            }
        }
    }
}

/// Sets [`JOB_POD_ANNOTATIONS`] on a Corpus or Adapter (`kind` as kubectl spells it).
pub fn set_job_pod_annotations(
    namespace: &str,
    kind: &str,
    name: &str,
    annotations: &serde_json::Value,
) -> Result<()> {
    let out = kubectl([
        "-n",
        namespace,
        "annotate",
        "--overwrite",
        &format!("{kind}/{name}"),
        &format!("{JOB_POD_ANNOTATIONS}={annotations}"),
    ])?;
    if !out.success {
        bail!("kubectl annotate {kind}/{name}: {}", out.stderr);
    }
    Ok(())
}

/// Pod annotations that make a KWOK Job pod succeed with `result` as its termination message.
pub fn kwok_result(result: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "hybrid.dev/kwok-termination-message": result.to_string() })
}

/// Plays the serving runtime's reporting role (the pods are KWOK pods; nothing runs in them):
/// reads the model's `config.yaml` and writes, on every serving pod, the annotation a runtime
/// that loaded it writes (docs/runtime-contract.md, section 3). Returns the serving revision.
pub async fn report_loaded(ns: &TestNamespace, model: &str) -> Result<String> {
    let cm = ns
        .api::<ConfigMap>()
        .get(&format!("{model}-runtime"))
        .await?;
    let yaml = cm
        .data
        .as_ref()
        .and_then(|d| d.get("config.yaml"))
        .ok_or_else(|| anyhow!("{model}-runtime has no config.yaml"))?;
    let config: serde_yaml::Value = serde_yaml::from_str(yaml)?;
    let list = |key: &str, name: &str| -> Vec<serde_json::Value> {
        config[key]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|e| {
                        serde_json::json!({
                            "name": e[name].as_str().unwrap_or_default(),
                            "revision": e["revision"].as_str().unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let serving_revision = config["servingRevision"]
        .as_str()
        .ok_or_else(|| anyhow!("config.yaml has no servingRevision"))?
        .to_owned();
    let report = serde_json::json!({
        "servingRevision": serving_revision,
        "adapters": list("adapters", "name"),
        "indexes": list("indexes", "corpus"),
    });
    let pods: Api<Pod> = ns.api();
    let serving = pods
        .list(&ListParams::default().labels(&format!(
            "hybrid.dev/hybridmodel={model},app.kubernetes.io/component=serving"
        )))
        .await?;
    if serving.items.is_empty() {
        bail!("no serving pods of {model}");
    }
    let patch =
        serde_json::json!({"metadata": {"annotations": {LOADED_ANNOTATION: report.to_string()}}});
    for pod in serving.items {
        pods.patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(serving_revision)
}

/// UIDs of a model's serving pods, sorted.
pub async fn serving_pod_uids(ns: &TestNamespace, model: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = ns.api();
    let mut uids: Vec<String> = pods
        .list(&ListParams::default().labels(&format!(
            "hybrid.dev/hybridmodel={model},app.kubernetes.io/component=serving"
        )))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    uids.sort();
    Ok(uids)
}
