//! Support library for the cluster e2e tests.
//!
//! The tests run against the local control plane of `tests/cluster/cluster.sh` (`make e2e`
//! starts one, runs them and stops it). Everything here talks to the cluster named by
//! `KUBECONFIG` and refuses to guess one: a test suite that creates and deletes namespaces must
//! never land on someone's real cluster through `~/.kube/config`.
//!
//! Each test gets a [`TestNamespace`], deleted when the value is dropped (also when the test
//! panics). [`apply_yaml`], [`wait_for_condition`] and [`install_crds`] cover what most tests
//! need; [`kubectl`] runs the matching kubectl for the checks that are about kubectl itself.

pub mod autoscale;
pub mod operator;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::{self, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;

/// Field manager for everything the tests apply.
pub const FIELD_MANAGER: &str = "hybrid-e2e";
/// Label on every namespace the tests create, so leftovers are easy to find and delete.
pub const E2E_LABEL: &str = "hybrid.dev/e2e";
/// Set to keep test namespaces for inspection instead of deleting them.
pub const KEEP_NAMESPACES_ENV: &str = "HYBRID_E2E_KEEP_NAMESPACES";

const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The repository root (the workspace that contains this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A client for the cluster in `KUBECONFIG`.
pub async fn client() -> Result<Client> {
    // kube links rustls with ring and reqwest (the autoscaler test's HTTP client) with aws-lc-rs;
    // with both compiled in, rustls needs the process default chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
        bail!(
            "KUBECONFIG is not set. Run `make e2e`, or start a cluster with \
             `tests/cluster/cluster.sh up` and `eval \"$(tests/cluster/cluster.sh env)\"`"
        );
    }
    Client::try_default()
        .await
        .context("building a client from KUBECONFIG")
}

/// What one look at the cluster found while [`poll`] waits.
pub enum Check<T> {
    Done(T),
    /// Not there yet; the text describes what was seen, for the timeout error.
    Waiting(String),
}

/// Calls `check` until it is done, fails, or `timeout` passes. The timeout error carries the
/// last state `check` reported, which is usually what a failing test needs to show.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
{
    let start = Instant::now();
    loop {
        match check().await? {
            Check::Done(value) => return Ok(value),
            Check::Waiting(state) if start.elapsed() >= timeout => {
                bail!("timed out after {timeout:?} waiting for {what}; last seen: {state}")
            }
            Check::Waiting(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Finds the API resource for a kind, written `Kind` or `Kind.group` (`Job`, `Job.batch`,
/// `HybridModel.hybrid.dev`). Discovery runs afresh, so CRDs installed a moment ago are found.
pub async fn resolve_kind(client: &Client, kind: &str) -> Result<(ApiResource, ApiCapabilities)> {
    let (kind, group) = match kind.split_once('.') {
        Some((k, g)) => (k, Some(g)),
        None => (kind, None),
    };
    let mut discovery = Discovery::new(client.clone());
    if let Some(group) = group {
        discovery = discovery.filter(&[group]);
    }
    let discovery = discovery.run().await.context("API discovery")?;
    let mut found: Vec<(ApiResource, ApiCapabilities)> = discovery
        .groups_alphabetical()
        .into_iter()
        .filter_map(|g| g.recommended_kind(kind))
        .collect();
    // The core group wins ties (`Event` is also in events.k8s.io), like kubectl does.
    if let Some(core) = found.iter().position(|(ar, _)| ar.group.is_empty()) {
        return Ok(found.swap_remove(core));
    }
    match found.len() {
        0 => bail!("no API resource of kind {kind:?} in the cluster"),
        1 => Ok(found.swap_remove(0)),
        _ => bail!(
            "kind {kind:?} is served by several groups ({}); write it as Kind.group",
            found
                .iter()
                .map(|(ar, _)| ar.group.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn dynamic_api(
    client: &Client,
    ar: &ApiResource,
    caps: &ApiCapabilities,
    namespace: Option<&str>,
) -> Result<Api<DynamicObject>> {
    Ok(match (&caps.scope, namespace) {
        (Scope::Cluster, _) => Api::all_with(client.clone(), ar),
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        (Scope::Namespaced, None) => bail!("{} is namespaced; give a namespace", ar.kind),
    })
}

/// Splits a multi-document YAML stream into objects, skipping empty documents.
pub fn parse_yaml(yaml: &str) -> Result<Vec<DynamicObject>> {
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value =
            serde_yaml::Value::deserialize(doc).with_context(|| format!("YAML document {i}"))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(serde_json::to_value(value)?)
            .with_context(|| format!("YAML document {i} is not a Kubernetes object"))?;
        objects.push(object);
    }
    Ok(objects)
}

async fn apply_with(
    client: &Client,
    namespace: Option<&str>,
    yaml: &str,
    params: &PatchParams,
) -> Result<Vec<DynamicObject>> {
    let mut applied = Vec::new();
    for object in parse_yaml(yaml)? {
        let types = object
            .types
            .as_ref()
            .ok_or_else(|| anyhow!("object without apiVersion/kind: {:?}", object.metadata.name))?;
        let gvk = GroupVersionKind::try_from(types)?;
        let (ar, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("resolving {}/{}", types.api_version, types.kind))?;
        let name = object
            .metadata
            .name
            .clone()
            .ok_or_else(|| anyhow!("{} without metadata.name", types.kind))?;
        let ns = object.metadata.namespace.as_deref().or(namespace);
        let api = dynamic_api(client, &ar, &caps, ns)?;
        let result = api
            .patch(&name, params, &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {} {name}", types.kind))?;
        applied.push(result);
    }
    Ok(applied)
}

/// Server-side applies every object of a multi-document YAML stream. Namespaced objects
/// without a namespace go to `namespace`.
pub async fn apply_yaml(
    client: &Client,
    namespace: Option<&str>,
    yaml: &str,
) -> Result<Vec<DynamicObject>> {
    apply_with(
        client,
        namespace,
        yaml,
        &PatchParams::apply(FIELD_MANAGER).force(),
    )
    .await
}

/// Like [`apply_yaml`] with `dryRun=All`: the API server admits and validates, stores nothing.
pub async fn dry_run_apply_yaml(
    client: &Client,
    namespace: Option<&str>,
    yaml: &str,
) -> Result<Vec<DynamicObject>> {
    let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    apply_with(client, namespace, yaml, &params).await
}

/// The `status` of condition `type_` of a dynamic object, if it has one.
pub fn condition_status(object: &DynamicObject, type_: &str) -> Option<String> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

fn conditions_summary(object: &DynamicObject) -> String {
    match object.data["status"]["conditions"].as_array() {
        Some(conditions) if !conditions.is_empty() => conditions
            .iter()
            .map(|c| {
                format!(
                    "{}={} ({})",
                    c["type"].as_str().unwrap_or("?"),
                    c["status"].as_str().unwrap_or("?"),
                    c["message"].as_str().or(c["reason"].as_str()).unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => "no conditions".to_owned(),
    }
}

/// Waits until condition `condition` of the object is `True` and returns the object.
/// `kind` is as for [`resolve_kind`]; `namespace` is ignored for cluster-scoped kinds.
pub async fn wait_for_condition(
    client: &Client,
    namespace: Option<&str>,
    kind: &str,
    name: &str,
    condition: &str,
    timeout: Duration,
) -> Result<DynamicObject> {
    let (ar, caps) = resolve_kind(client, kind).await?;
    let api = dynamic_api(client, &ar, &caps, namespace)?;
    let what = format!("{kind} {name} to be {condition}");
    poll(&what, timeout, || async {
        Ok(match api.get_opt(name).await? {
            None => Check::Waiting("not found".to_owned()),
            Some(object) if condition_status(&object, condition).as_deref() == Some("True") => {
                Check::Done(object)
            }
            Some(object) => Check::Waiting(conditions_summary(&object)),
        })
    })
    .await
}

/// The CRD manifests the chart ships, in file name order.
pub fn crd_files() -> Result<Vec<PathBuf>> {
    let dir = repo_root().join("charts/hybrid-operator/crds");
    let mut files = yaml_files(&dir)?;
    files.sort();
    if files.is_empty() {
        bail!("no CRD YAML in {}; run `make generate`", dir.display());
    }
    Ok(files)
}

/// `*.yaml` / `*.yml` files directly in `dir` (not recursive); empty if `dir` is missing.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Installs (server-side applies) the chart's CRDs and waits until each is Established.
/// Returns the CRD names.
pub async fn install_crds(client: &Client) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for file in crd_files()? {
        let yaml = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for crd in apply_yaml(client, None, &yaml)
            .await
            .with_context(|| format!("applying {}", file.display()))?
        {
            names.push(crd.name_any());
        }
    }
    for name in &names {
        wait_for_condition(
            client,
            None,
            "CustomResourceDefinition",
            name,
            "Established",
            Duration::from_secs(60),
        )
        .await?;
    }
    Ok(names)
}

/// A namespace for one test, deleted when dropped unless `HYBRID_E2E_KEEP_NAMESPACES` is set.
pub struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<random>` and waits for its `default` ServiceAccount, without
    /// which the API server refuses bare Pods.
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let name = format!("e2e-{prefix}-{}", random_suffix());
        let mut ns = Namespace::default();
        ns.meta_mut().name = Some(name.clone());
        ns.labels_mut()
            .insert(E2E_LABEL.to_owned(), "true".to_owned());
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let this = Self {
            client: client.clone(),
            name,
        };
        let accounts = this.api::<ServiceAccount>();
        poll(
            &format!("ServiceAccount default in {}", this.name),
            Duration::from_secs(60),
            || async {
                Ok(match accounts.get_opt("default").await? {
                    Some(_) => Check::Done(()),
                    None => Check::Waiting(
                        "not created yet (is kube-controller-manager running?)".to_owned(),
                    ),
                })
            },
        )
        .await?;
        Ok(this)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A typed API for this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// [`apply_yaml`] into this namespace.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        apply_yaml(&self.client, Some(&self.name), yaml).await
    }

    /// [`wait_for_condition`] in this namespace.
    pub async fn wait_for_condition(
        &self,
        kind: &str,
        name: &str,
        condition: &str,
        timeout: Duration,
    ) -> Result<DynamicObject> {
        wait_for_condition(
            &self.client,
            Some(&self.name),
            kind,
            name,
            condition,
            timeout,
        )
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_NAMESPACES_ENV).is_some() {
            eprintln!(
                "keeping namespace {} ({KEEP_NAMESPACES_ENV} is set)",
                self.name
            );
            return;
        }
        // Drop cannot await, and the test's runtime may be single-threaded and busy dropping
        // us: delete from a thread with its own runtime and its own client.
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = client().await?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await?;
                Ok(())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not delete namespace {}: {e:#}", self.name),
            Err(_) => eprintln!(
                "could not delete namespace {}: deleting thread panicked",
                self.name
            ),
        }
    }
}

fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let mut n = hasher.finish();
    let mut s = String::new();
    for _ in 0..6 {
        s.push(char::from(
            b"abcdefghijklmnopqrstuvwxyz0123456789"[(n % 36) as usize],
        ));
        n /= 36;
    }
    s
}

/// Output of a [`kubectl`] run.
#[derive(Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs kubectl against `KUBECONFIG`: `$KUBECTL` if set (`make e2e` points it at the kubectl
/// built with the cluster), else `kubectl` from `PATH`.
pub fn kubectl<I, S>(args: I) -> Result<KubectlOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let program = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let output = Command::new(&program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    Ok(KubectlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_yaml_skips_empty_documents_and_keeps_types() {
        let objects = parse_yaml(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n---\n---\n\
             apiVersion: batch/v1\nkind: Job\nmetadata: {name: b, namespace: x}\n",
        )
        .expect("valid YAML");
        assert_eq!(objects.len(), 2);
        assert_eq!(
            objects[0].types.as_ref().map(|t| t.kind.as_str()),
            Some("ConfigMap")
        );
        assert_eq!(objects[0].data["data"]["k"], "v");
        assert_eq!(objects[1].metadata.namespace.as_deref(), Some("x"));
    }

    #[test]
    fn parse_yaml_rejects_non_objects() {
        assert!(parse_yaml("- just\n- a list\n").is_err());
    }

    #[test]
    fn condition_status_reads_the_named_condition() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "status": {"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "False"}
            ]}
        }))
        .expect("valid object");
        assert_eq!(
            condition_status(&object, "Complete").as_deref(),
            Some("False")
        );
        assert_eq!(
            condition_status(&object, "SuccessCriteriaMet").as_deref(),
            Some("True")
        );
        assert_eq!(condition_status(&object, "Failed"), None);
    }

    #[test]
    fn namespace_suffixes_are_dns_labels_and_differ() {
        let a = random_suffix();
        let b = random_suffix();
        assert_ne!(a, b);
        assert!(
            a.len() == 6
                && a.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
