//! Source scans and dataset digests, end to end, with the real `hybrid-operator` binary (as the
//! chart's ServiceAccount):
//!
//! - a Corpus with a PVC source: the scan Job `<corpus>-scan` lists it and its digest makes the
//!   content revision (one index Job); the same listing at each `refreshInterval` starts no
//!   index Job and writes nothing but the scan Job itself; a different listing starts exactly
//!   one index Job; a failing scan keeps the active revision and `SourcesChecked` says why;
//! - an Adapter with an HTTP dataset served from 127.0.0.1 by this test: an unchanged body at
//!   each refresh writes nothing, an edited body behind the same URL trains exactly once;
//! - an Adapter with a PVC dataset: its scan Job `<adapter>-dataset-scan` gives the dataset
//!   digest, and a new listing trains exactly once.
//!
//! Job results are simulated by KWOK through `hybrid.dev/job-pod-annotations`: index and
//! training pods end with `hybrid.dev/kwok-termination-message`, scan pods (component `scan`)
//! with `hybrid.dev/kwok-scan-termination-message` (tests/cluster/kwok/stages.yaml).
//!
//! Tests share one cluster and each runs its own operator (which watches all namespaces), so they
//! take turns through [`LOCK`]: another test's operator would otherwise create this test's Jobs
//! under its own name, and the audit log counts would miss them.
#![cfg(feature = "e2e")]

use anyhow::{Result, bail};
use hybrid_crds::{Adapter, Corpus};
use hybrid_e2e::operator::{
    AuditLog, Operator, bound_claims, delete_volumes, install_chart_rbac, operator_writes,
    set_job_pod_annotations,
};
use hybrid_e2e::{Check, TestNamespace, client, poll};
use serde_json::json;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(120);
const REFRESH_SECS: u64 = 10;

fn index_result(revision: &str) -> serde_json::Value {
    json!({"kind": "IndexResult", "revision": revision, "documents": 3, "chunks": 9,
        "reused": 0, "reembedded": 9, "durationSeconds": 1.5,
        "location": format!("/pvc/hybrid-artifacts/indexes/{revision}.tar.gz")})
}

fn scan_result(digest: &str) -> serde_json::Value {
    json!({"kind": "ScanResult", "digest": digest, "documents": 3, "bytes": 4096,
        "durationSeconds": 0.1})
}

fn train_result(revision: &str) -> serde_json::Value {
    json!({"kind": "TrainResult", "revision": revision,
        "artifactUri": format!("file:///pvc/hybrid-artifacts/adapters/{revision}"),
        "finalLoss": 0.8, "evalLoss": 1.1, "steps": 20, "tokensPerSecond": 500.0,
        "durationSeconds": 30.0})
}

/// Job pod annotations: the index/training result, and the scan result for scan pods.
fn results(job: &serde_json::Value, scan: &serde_json::Value) -> serde_json::Value {
    json!({
        "hybrid.dev/kwok-termination-message": job.to_string(),
        "hybrid.dev/kwok-scan-termination-message": scan.to_string(),
    })
}

/// The Jobs the operator created since `mark`, as audit lines.
fn jobs_created(audit: &AuditLog, mark: u64, ns: &str, infix: &str) -> Result<Vec<String>> {
    Ok(operator_writes(audit, mark, ns)?
        .into_iter()
        .filter(|w| w.starts_with("create jobs") && w.contains(infix) && !w.ends_with("409"))
        .collect())
}

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Waits for the Corpus's `revision` active and Ready, from a scan whose digest is `scan`.
async fn corpus_active(
    ns: &TestNamespace,
    name: &str,
    revision: &str,
    scan: &str,
) -> Result<Corpus> {
    let api: kube::Api<Corpus> = ns.api();
    poll(
        &format!("Corpus {name}: revision {revision} from scan {scan}"),
        WAIT,
        || async {
            let c = api.get(name).await?;
            let st = c.status.clone().unwrap_or_default();
            let active = st.active_revision.as_ref().map(|a| a.revision.clone());
            let scanned = st.source_scan.as_ref().map(|s| s.digest.clone());
            let ready = condition(&st.conditions, "Ready").is_some_and(|c| c.status == "True");
            Ok(
                if active.as_deref() == Some(revision) && scanned.as_deref() == Some(scan) && ready
                {
                    Check::Done(c)
                } else {
                    Check::Waiting(format!(
                        "active {active:?}, scan {scanned:?}, conditions {:?}",
                        st.conditions
                    ))
                },
            )
        },
    )
    .await
}

#[tokio::test]
async fn pvc_source_is_rescanned_and_reindexed_only_when_the_listing_changes() -> Result<()> {
    const CORPUS: &str = "handbook";
    let _turn = LOCK.lock().await;
    let client = client().await?;
    hybrid_e2e::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "op-scan").await?;
    let n = ns.name().to_owned();
    let kubeconfig = install_chart_rbac(&n)?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts", "filings"]).await?;
    let audit = AuditLog::open()?;
    let start = audit.mark()?;

    ns.apply_yaml(&format!(
        "apiVersion: hybrid.dev/v1alpha1\nkind: Corpus\nmetadata: {{name: {CORPUS}}}\n\
         spec:\n  sources:\n  - persistentVolumeClaim: {{claimName: filings, path: /docs}}\n\
         \x20 embedding: {{model: pvc://hybrid-models/all-MiniLM-L6-v2, dimensions: 384}}\n\
         \x20 refreshInterval: {REFRESH_SECS}s\n"
    ))
    .await?;
    set_job_pod_annotations(
        &n,
        "corpus",
        CORPUS,
        &results(&index_result("ix-scan-1"), &scan_result("listing-1")),
    )?;
    let mut op = Operator::start(&kubeconfig, &n)?;

    // 1. First scan → content revision → one index Job.
    let corpus = corpus_active(&ns, CORPUS, "ix-scan-1", "listing-1").await?;
    let first = corpus.status.unwrap_or_default();
    let checked = condition(&first.conditions, "SourcesChecked");
    assert!(
        checked.is_some_and(|c| c.status == "True" && c.message.contains("3 documents")),
        "SourcesChecked: {checked:?}"
    );
    let index_jobs = jobs_created(&audit, start, &n, "-index-")?;
    assert_eq!(index_jobs.len(), 1, "one index Job: {index_jobs:?}");
    assert!(
        !jobs_created(&audit, start, &n, &format!("/{CORPUS}-scan "))?.is_empty(),
        "the scan Job ran"
    );

    // 2. The same listing for three intervals: the scan Job runs again, nothing else is
    //    written (no index Job, no status, no Event).
    set_job_pod_annotations(
        &n,
        "corpus",
        CORPUS,
        &results(&index_result("ix-scan-2"), &scan_result("listing-1")),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await; // the annotation's own reconcile
    let mark = audit.mark()?;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3 * REFRESH_SECS + 2)).await;
    let writes = operator_writes(&audit, mark, &n)?;
    let scan_job = format!(" {n}/{CORPUS}-scan ");
    let (scans, other): (Vec<String>, Vec<String>) =
        writes.into_iter().partition(|w| w.contains(&scan_job));
    let rescans = scans
        .iter()
        .filter(|w| w.starts_with("create jobs"))
        .count();
    println!(
        "unchanged listing: {rescans} scans in {:.0}s, other writes: {}",
        started.elapsed().as_secs_f64(),
        other.len()
    );
    assert!(rescans >= 2, "rescanned every refreshInterval: {scans:#?}");
    assert!(
        other.is_empty(),
        "writes besides the scan Job while the listing was unchanged: {other:#?}"
    );
    let api: kube::Api<Corpus> = ns.api();
    let st = api.get(CORPUS).await?.status.unwrap_or_default();
    assert_eq!(st.content_revision, first.content_revision);

    // 3. A different listing: exactly one new index Job, its revision active.
    let mark = audit.mark()?;
    set_job_pod_annotations(
        &n,
        "corpus",
        CORPUS,
        &results(&index_result("ix-scan-2"), &scan_result("listing-2")),
    )?;
    let corpus = corpus_active(&ns, CORPUS, "ix-scan-2", "listing-2").await?;
    let second = corpus.status.unwrap_or_default();
    assert_ne!(
        second.content_revision, first.content_revision,
        "a new listing is a new content revision"
    );
    let index_jobs = jobs_created(&audit, mark, &n, "-index-")?;
    assert_eq!(
        index_jobs.len(),
        1,
        "one index Job per change: {index_jobs:?}"
    );

    // 4. The scan fails: SourcesChecked False with the scan's message, the revision stays
    //    active, Ready stays True, no index Job.
    let mark = audit.mark()?;
    set_job_pod_annotations(
        &n,
        "corpus",
        CORPUS,
        &json!({
            "hybrid.dev/kwok-fail": "Error",
            "hybrid.dev/kwok-termination-message":
                json!({"kind": "ScanError", "reason": "SourceUnreadable",
                    "message": "cannot list /pvc/filings/docs: permission denied"}).to_string(),
        }),
    )?;
    let (message, st) = poll("SourcesChecked False", WAIT, || async {
        let st = api.get(CORPUS).await?.status.unwrap_or_default();
        Ok(match condition(&st.conditions, "SourcesChecked").cloned() {
            Some(c) if c.status == "False" => Check::Done((c.message, st)),
            other => Check::Waiting(format!("{other:?}")),
        })
    })
    .await?;
    assert!(message.contains(&format!("{CORPUS}-scan")), "{message}");
    assert!(message.contains("permission denied"), "{message}");
    assert!(message.contains("active revision stays"), "{message}");
    assert_eq!(
        st.active_revision.map(|a| a.revision).as_deref(),
        Some("ix-scan-2")
    );
    assert_eq!(st.content_revision, second.content_revision);
    assert!(
        condition(&st.conditions, "Ready").is_some_and(|c| c.status == "True"),
        "{:?}",
        st.conditions
    );
    // Failing again at the next refresh changes nothing but the scan Job.
    tokio::time::sleep(Duration::from_secs(REFRESH_SECS + 5)).await;
    let index_jobs = jobs_created(&audit, mark, &n, "-index-")?;
    assert!(
        index_jobs.is_empty(),
        "no index Job for a failed scan: {index_jobs:?}"
    );
    let again = api.get(CORPUS).await?.status.unwrap_or_default();
    assert_eq!(
        condition(&again.conditions, "SourcesChecked").map(|c| &c.message),
        Some(&message)
    );

    if !op.running() {
        bail!("operator exited; see {}", op.log.display());
    }
    op.kill()?;
    delete_volumes(&client, &n).await;
    Ok(())
}

/// An HTTP/1.1 server on 127.0.0.1 serving the body in `served` with an ETag (its version),
/// answering `If-None-Match` with 304, on a thread of its own. Returns the URL.
fn serve(served: Arc<Mutex<(String, u32)>>) -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/chats.jsonl", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0u8; 16 * 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_lowercase();
            let (body, version) = served.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let etag = format!("\"v{version}\"");
            let response = if request.contains(&format!("if-none-match: {etag}")) {
                format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n")
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Ok(url)
}

#[tokio::test]
async fn http_dataset_edited_behind_the_same_url_trains_exactly_once() -> Result<()> {
    const ADAPTER: &str = "tone";
    let _turn = LOCK.lock().await;
    let client = client().await?;
    hybrid_e2e::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "op-dataset").await?;
    let n = ns.name().to_owned();
    let kubeconfig = install_chart_rbac(&n)?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts"]).await?;
    let audit = AuditLog::open()?;
    let start = audit.mark()?;

    let chat = |answer: &str| {
        json!({"messages": [{"role": "user", "content": "What is the policy rate?"},
            {"role": "assistant", "content": answer}]})
        .to_string()
            + "\n"
    };
    let served = Arc::new(Mutex::new((chat("4.25%."), 1)));
    let url = serve(served.clone())?;
    ns.apply_yaml(&format!(
        "apiVersion: hybrid.dev/v1alpha1\nkind: Adapter\nmetadata: {{name: {ADAPTER}}}\n\
         spec:\n  baseModel: {{source: pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf, format: gguf}}\n\
         \x20 dataset:\n  - http: {{url: \"{url}\"}}\n\
         \x20 output: {{storage: pvc://hybrid-artifacts/adapters}}\n\
         \x20 refreshInterval: {REFRESH_SECS}s\n"
    ))
    .await?;
    set_job_pod_annotations(
        &n,
        "adapter",
        ADAPTER,
        &results(&train_result("ad-1"), &scan_result("-")),
    )?;
    let mut op = Operator::start(&kubeconfig, &n)?;

    let api: kube::Api<Adapter> = ns.api();
    let active = |revision: &'static str| {
        let api = api.clone();
        async move {
            poll(&format!("Adapter revision {revision}"), WAIT, || async {
                let a = api.get(ADAPTER).await?;
                let st = a.status.clone().unwrap_or_default();
                let active = st.active_revision.as_ref().map(|r| r.revision.clone());
                let ready = condition(&st.conditions, "Ready").is_some_and(|c| c.status == "True");
                Ok(if active.as_deref() == Some(revision) && ready {
                    Check::Done(st)
                } else {
                    Check::Waiting(format!("active {active:?}, {:?}", st.conditions))
                })
            })
            .await
        }
    };

    // 1. Fetched once, trained once.
    let first = active("ad-1").await?;
    assert_eq!(first.http_sources.len(), 1, "{:?}", first.http_sources);
    assert!(first.http_sources[0].etag.is_some());
    let train_jobs = jobs_created(&audit, start, &n, "-train-")?;
    assert_eq!(
        train_jobs.len(),
        1,
        "one training Job: {:#?}",
        operator_writes(&audit, start, &n)?
    );

    // 2. Unchanged for three intervals: conditional requests, nothing written.
    set_job_pod_annotations(
        &n,
        "adapter",
        ADAPTER,
        &results(&train_result("ad-2"), &scan_result("-")),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mark = audit.mark()?;
    tokio::time::sleep(Duration::from_secs(3 * REFRESH_SECS + 2)).await;
    let writes = operator_writes(&audit, mark, &n)?;
    assert!(
        writes.is_empty(),
        "writes by the operator while the dataset was unchanged: {writes:#?}"
    );

    // 3. Edited behind the same URL: exactly one training Job, the new revision active.
    let mark = audit.mark()?;
    *served.lock().unwrap_or_else(|p| p.into_inner()) = (chat("4.00%, after the March cut."), 2);
    let second = active("ad-2").await?;
    assert_ne!(second.dataset_digest, first.dataset_digest);
    assert_ne!(second.training_revision, first.training_revision);
    assert_ne!(second.http_sources[0].digest, first.http_sources[0].digest);
    let train_jobs = jobs_created(&audit, mark, &n, "-train-")?;
    assert_eq!(
        train_jobs.len(),
        1,
        "one training Job per edit: {train_jobs:?}"
    );
    // And nothing more once it is active.
    tokio::time::sleep(Duration::from_secs(REFRESH_SECS + 2)).await;
    let train_jobs = jobs_created(&audit, mark, &n, "-train-")?;
    assert_eq!(train_jobs.len(), 1, "{train_jobs:?}");

    if !op.running() {
        bail!("operator exited; see {}", op.log.display());
    }
    op.kill()?;
    delete_volumes(&client, &n).await;
    Ok(())
}

#[tokio::test]
async fn pvc_dataset_is_scanned_and_a_new_listing_trains_exactly_once() -> Result<()> {
    const ADAPTER: &str = "filings-tone";
    let _turn = LOCK.lock().await;
    let client = client().await?;
    hybrid_e2e::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "op-dataset-scan").await?;
    let n = ns.name().to_owned();
    let kubeconfig = install_chart_rbac(&n)?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts", "chats"]).await?;
    let audit = AuditLog::open()?;
    let start = audit.mark()?;

    ns.apply_yaml(&format!(
        "apiVersion: hybrid.dev/v1alpha1\nkind: Adapter\nmetadata: {{name: {ADAPTER}}}\n\
         spec:\n  baseModel: {{source: pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf, format: gguf}}\n\
         \x20 dataset:\n  - persistentVolumeClaim: {{claimName: chats, path: /train.jsonl}}\n\
         \x20 output: {{storage: pvc://hybrid-artifacts/adapters}}\n\
         \x20 refreshInterval: {REFRESH_SECS}s\n"
    ))
    .await?;
    set_job_pod_annotations(
        &n,
        "adapter",
        ADAPTER,
        &results(&train_result("ad-pvc-1"), &scan_result("chats-1")),
    )?;
    let mut op = Operator::start(&kubeconfig, &n)?;

    let api: kube::Api<Adapter> = ns.api();
    let active = |revision: &'static str, scan: &'static str| {
        let api = api.clone();
        async move {
            poll(
                &format!("Adapter revision {revision} from scan {scan}"),
                WAIT,
                || async {
                    let st = api.get(ADAPTER).await?.status.unwrap_or_default();
                    let active = st.active_revision.as_ref().map(|r| r.revision.clone());
                    let scanned = st.source_scan.as_ref().map(|s| s.digest.clone());
                    let ready =
                        condition(&st.conditions, "Ready").is_some_and(|c| c.status == "True");
                    Ok(
                        if active.as_deref() == Some(revision)
                            && scanned.as_deref() == Some(scan)
                            && ready
                        {
                            Check::Done(st)
                        } else {
                            Check::Waiting(format!(
                                "active {active:?}, scan {scanned:?}, {:?}",
                                st.conditions
                            ))
                        },
                    )
                },
            )
            .await
        }
    };

    // 1. Scanned by `<adapter>-dataset-scan`, trained once.
    let first = active("ad-pvc-1", "chats-1").await?;
    let scans = jobs_created(&audit, start, &n, &format!("/{ADAPTER}-dataset-scan "))?;
    assert!(!scans.is_empty(), "the dataset scan Job ran");
    let train_jobs = jobs_created(&audit, start, &n, "-train-")?;
    assert_eq!(train_jobs.len(), 1, "one training Job: {train_jobs:?}");

    // 2. A new listing at the next refresh: exactly one training Job.
    let mark = audit.mark()?;
    set_job_pod_annotations(
        &n,
        "adapter",
        ADAPTER,
        &results(&train_result("ad-pvc-2"), &scan_result("chats-2")),
    )?;
    let second = active("ad-pvc-2", "chats-2").await?;
    assert_ne!(second.dataset_digest, first.dataset_digest);
    assert_ne!(second.training_revision, first.training_revision);
    let train_jobs = jobs_created(&audit, mark, &n, "-train-")?;
    assert_eq!(
        train_jobs.len(),
        1,
        "one training Job per change: {train_jobs:?}"
    );

    if !op.running() {
        bail!("operator exited; see {}", op.log.display());
    }
    op.kill()?;
    delete_volumes(&client, &n).await;
    Ok(())
}
