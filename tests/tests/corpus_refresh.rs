//! `refreshInterval` with an HTTP source, end to end: the real `hybrid-operator` binary (as the
//! chart's ServiceAccount) fetches a document from a small HTTP server on 127.0.0.1 that this
//! test runs. Unchanged content at each refresh → conditional requests, no Job and no write;
//! changed content → exactly one new index Job and the new revision active; server gone → the
//! `SourcesChecked` condition says so while the active revision stays and Ready stays True.
//!
//! Index Job results are simulated as in `operator_lifecycle.rs`: KWOK's
//! `hybrid.dev/kwok-termination-message` through the Corpus's `hybrid.dev/job-pod-annotations`.
//! (The PVC/S3 scan Job, and Adapter datasets, are run end to end by `source_scan.rs`.)
#![cfg(feature = "e2e")]

use anyhow::{Result, bail};
use hybrid_crds::Corpus;
use hybrid_e2e::operator::{
    AuditLog, Operator, bound_claims, delete_volumes, install_chart_rbac, kwok_result,
    operator_writes, set_job_pod_annotations,
};
use hybrid_e2e::{Check, TestNamespace, client, poll};
use serde_json::json;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CORPUS: &str = "rates";
const WAIT: Duration = Duration::from_secs(120);
const REFRESH_SECS: u64 = 10;

/// The document the test serves, its version (the ETag), and what the server saw.
#[derive(Default)]
struct Served {
    body: String,
    version: u32,
    requests: usize,
    not_modified: usize,
}

/// An HTTP/1.1 server on 127.0.0.1 serving `served.body` with an ETag (its version), answering
/// `If-None-Match` with 304, on a thread of its own. Returns the document URL and the flag that
/// takes the server away (the listener is closed: connections are refused).
fn serve(served: Arc<Mutex<Served>>) -> Result<(String, Arc<AtomicBool>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/rates.md", listener.local_addr()?);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0u8; 16 * 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_lowercase();
            let response = {
                let mut s = served.lock().unwrap_or_else(|p| p.into_inner());
                s.requests += 1;
                let etag = format!("\"v{}\"", s.version);
                if request.contains(&format!("if-none-match: {etag}")) {
                    s.not_modified += 1;
                    format!(
                        "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/markdown\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                        s.body.len(),
                        s.body
                    )
                }
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Ok((url, stop))
}

fn index_result(revision: &str) -> serde_json::Value {
    json!({"kind": "IndexResult", "revision": revision, "documents": 1, "chunks": 3,
        "reused": 0, "reembedded": 3, "durationSeconds": 1.5,
        "location": format!("/pvc/hybrid-artifacts/indexes/{revision}.tar.gz")})
}

fn set_body(served: &Mutex<Served>, body: &str) {
    let mut s = served.lock().unwrap_or_else(|p| p.into_inner());
    s.body = body.to_owned();
    s.version += 1;
}

fn counts(served: &Mutex<Served>) -> (usize, usize) {
    let s = served.lock().unwrap_or_else(|p| p.into_inner());
    (s.requests, s.not_modified)
}

/// Waits for `revision` active and Ready, built from a fetch whose digest is not `old_digest`.
async fn wait_active(
    ns: &TestNamespace,
    revision: &str,
    old_digest: Option<&str>,
) -> Result<Corpus> {
    let api: kube::Api<Corpus> = ns.api();
    poll(
        &format!("Corpus active revision {revision}"),
        WAIT,
        || async {
            let c = api.get(CORPUS).await?;
            let st = c.status.clone().unwrap_or_default();
            let active = st.active_revision.as_ref().map(|a| a.revision.clone());
            let fetched = st.http_sources.first().map(|h| h.digest.clone());
            let ready = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok(
                if active.as_deref() == Some(revision)
                    && fetched.is_some()
                    && fetched.as_deref() != old_digest
                    && ready
                {
                    Check::Done(c)
                } else {
                    Check::Waiting(format!(
                        "active {active:?}, fetched {fetched:?}, conditions {:?}",
                        st.conditions
                    ))
                },
            )
        },
    )
    .await
}

#[tokio::test]
async fn http_source_is_refetched_every_refresh_interval_and_reindexed_only_on_change() -> Result<()>
{
    let client = client().await?;
    hybrid_e2e::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "op-refresh").await?;
    let n = ns.name().to_owned();
    let kubeconfig = install_chart_rbac(&n)?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts"]).await?;
    let audit = AuditLog::open()?;

    let served = Arc::new(Mutex::new(Served::default()));
    let first = "# Rates\nThe policy rate is 4.25%.\n";
    set_body(&served, first);
    let (url, stop_server) = serve(served.clone())?;

    ns.apply_yaml(&format!(
        "apiVersion: hybrid.dev/v1alpha1\nkind: Corpus\nmetadata: {{name: {CORPUS}}}\n\
         spec:\n  sources:\n  - http: {{url: \"{url}\"}}\n\
         \x20 embedding: {{model: pvc://hybrid-models/all-MiniLM-L6-v2, dimensions: 384}}\n\
         \x20 refreshInterval: {REFRESH_SECS}s\n"
    ))
    .await?;
    set_job_pod_annotations(
        &n,
        "corpus",
        CORPUS,
        &kwok_result(&index_result("ix-http-1")),
    )?;
    let mut op = Operator::start(&kubeconfig, &n)?;

    // 1. Created: fetched once, indexed once.
    let corpus = wait_active(&ns, "ix-http-1", None).await?;
    let st = corpus.status.unwrap_or_default();
    let first_digest = st.http_sources[0].digest.clone();
    assert!(
        st.http_sources[0].etag.is_some(),
        "the ETag is kept for conditional requests"
    );
    let checked = st.conditions.iter().find(|c| c.type_ == "SourcesChecked");
    assert!(
        checked.is_some_and(|c| c.status == "True"),
        "SourcesChecked: {checked:?}"
    );

    // 2. Unchanged for three intervals: conditional requests answered 304, no Job, no write.
    set_job_pod_annotations(
        &n,
        "corpus",
        CORPUS,
        &kwok_result(&index_result("ix-http-2")),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await; // the annotation's own reconcile
    let mark = audit.mark()?;
    let (requests_before, _) = counts(&served);
    tokio::time::sleep(Duration::from_secs(3 * REFRESH_SECS + 2)).await;
    let (requests, not_modified) = counts(&served);
    assert!(
        requests - requests_before >= 2,
        "refreshed {} times in {}s",
        requests - requests_before,
        3 * REFRESH_SECS + 2
    );
    assert!(
        not_modified >= 2,
        "conditional requests: {not_modified} 304s"
    );
    let writes = operator_writes(&audit, mark, &n)?;
    assert!(
        writes.is_empty(),
        "writes by the operator while the source was unchanged: {writes:#?}"
    );

    // 3. Edited at the URL: exactly one new index Job, the new revision active.
    let second = "# Rates\nThe policy rate is 4.00% (cut in March).\n";
    let mark = audit.mark()?;
    set_body(&served, second);
    let corpus = wait_active(&ns, "ix-http-2", Some(&first_digest)).await?;
    assert_ne!(
        corpus.status.unwrap_or_default().content_revision,
        st.content_revision,
        "a new body is a new content revision"
    );
    let jobs_created: Vec<String> = operator_writes(&audit, mark, &n)?
        .into_iter()
        .filter(|w| w.starts_with("create jobs"))
        .collect();
    assert_eq!(
        jobs_created.len(),
        1,
        "one index Job per edit: {jobs_created:?}"
    );
    assert!(jobs_created[0].contains("rates-index-"), "{jobs_created:?}");

    // 4. Server gone: SourcesChecked False naming the URL; the revision stays, Ready stays True,
    //    no Job.
    stop_server.store(true, Ordering::Relaxed);
    let mark = audit.mark()?;
    let api: kube::Api<Corpus> = ns.api();
    let corpus = poll("SourcesChecked False", WAIT, || async {
        let c = api.get(CORPUS).await?;
        let st = c.status.clone().unwrap_or_default();
        let checked = st
            .conditions
            .iter()
            .find(|c| c.type_ == "SourcesChecked")
            .cloned();
        Ok(match checked {
            Some(c) if c.status == "False" => Check::Done((c.message, st)),
            other => Check::Waiting(format!("{other:?}")),
        })
    })
    .await?;
    let (message, st) = corpus;
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("active revision stays"), "{message}");
    assert_eq!(
        st.active_revision.map(|a| a.revision).as_deref(),
        Some("ix-http-2")
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{:?}",
        st.conditions
    );
    // The transition's warning Event is published after the status write that the poll saw;
    // wait for it, or on a loaded machine it lands in the quiet window below.
    poll("the Event for the unreachable source", WAIT, || async {
        let events = operator_writes(&audit, mark, &n)?
            .into_iter()
            .filter(|w| w.starts_with("create events"))
            .count();
        Ok(if events > 0 {
            Check::Done(())
        } else {
            Check::Waiting("no Event yet".to_owned())
        })
    })
    .await?;
    // Further failed checks change nothing: no flapping writes.
    let mark_quiet = audit.mark()?;
    tokio::time::sleep(Duration::from_secs(2 * REFRESH_SECS + 2)).await;
    let writes = operator_writes(&audit, mark_quiet, &n)?;
    assert!(writes.is_empty(), "writes while unreachable: {writes:#?}");
    let jobs: Vec<String> = operator_writes(&audit, mark, &n)?
        .into_iter()
        .filter(|w| w.starts_with("create jobs"))
        .collect();
    assert!(
        jobs.is_empty(),
        "no Job for an unreachable source: {jobs:?}"
    );

    if !op.running() {
        bail!("operator exited; see {}", op.log.display());
    }
    op.kill()?;
    delete_volumes(&client, &n).await;
    Ok(())
}
