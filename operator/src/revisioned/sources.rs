//! Sources the operator cannot watch: HTTP documents, which it fetches and digests itself, and
//! PVC and S3 sources, which a scan Job lists (`build::scan_job`). Both are checked when their
//! spec is new and again every `refreshInterval`.

use crate::cluster::caches::OwnerCaches;
use crate::cluster::job_api;
use crate::context::Context;
use crate::digest::hex;
use crate::error::{Error, Result};
use crate::objects::{name_of, namespace_of};
use crate::revisioned::inputs::RemoteDigests;
use crate::revisioned::jobs;
use crate::revisioned::results::parse_scan_report;
use crate::revisioned::scan_job::{
    SCAN_DEADLINE_SECONDS, ScanOwner, scan_job, scan_job_name, scan_sources_key,
};
use crate::status::set_condition;
use hybrid_crds::CorpusStatus;
use hybrid_crds::common::{Conditions, DataSource};
use hybrid_crds::conditions::{reasons, types};
use hybrid_crds::corpus::{HttpSourceState, SourceScan};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Resource};
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One HTTP check may take this long in all (connect, headers, body); a slow server must not
/// hold a reconcile worker for longer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Larger bodies are refused: a corpus document is text, and the cap bounds the download a
/// wrong URL can cost. The body is hashed as it streams, so memory stays flat either way.
pub const MAX_HTTP_BYTES: u64 = 64 * 1024 * 1024;
/// Shortest `refreshInterval`: below it, checks would mostly cost requests and scan Jobs.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// When a check failed and no earlier digest stands in for it, the next try comes after this
/// (or after `refreshInterval`, if shorter).
pub const RETRY_FAILED_CHECK: Duration = Duration::from_secs(60);

/// Parses a Go-style duration as the CRD allows it: one or more `<integer><unit>` with unit
/// `h`, `m` or `s` (`90s`, `15m`, `1h30m`). Errors name `spec.refreshInterval`.
pub fn parse_refresh_interval(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("spec.refreshInterval {text:?} {why}");
    if text.is_empty() {
        return Err(invalid("is empty; use a duration like 30s, 15m or 1h"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid("is not a duration like 30s, 15m or 1h30m")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| invalid("is not a duration like 30s, 15m or 1h30m"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| invalid("is too long"))?;
    }
    if !digits.is_empty() {
        return Err(invalid("lacks a unit (h, m or s) after its last number"));
    }
    let interval = Duration::from_secs(total);
    if interval < MIN_REFRESH {
        return Err(invalid(&format!(
            "is shorter than the minimum of {}s",
            MIN_REFRESH.as_secs()
        )));
    }
    Ok(interval)
}

/// Fetches an HTTP source and digests its body. With the validators of the previous fetch of
/// the same URL, the request is conditional, and a `304 Not Modified` returns the previous
/// state unchanged (no body is transferred). Errors are one line for a condition message.
pub async fn check_http(
    client: &reqwest::Client,
    url: &str,
    previous: Option<&HttpSourceState>,
) -> Result<HttpSourceState, String> {
    let previous = previous.filter(|p| p.url == url);
    let mut request = client.get(url).timeout(HTTP_TIMEOUT);
    if let Some(p) = previous {
        if let Some(etag) = &p.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(modified) = &p.last_modified {
            request = request.header(IF_MODIFIED_SINCE, modified);
        }
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    if response.status() == StatusCode::NOT_MODIFIED
        && let Some(p) = previous
    {
        return Ok(p.clone());
    }
    if !response.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", response.status()));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_HTTP_BYTES)
    {
        return Err(too_large(url));
    }
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
    let mut hasher = Sha256::new();
    let mut read: u64 = 0;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {}", error_chain(&e)))?
    {
        read += chunk.len() as u64;
        if read > MAX_HTTP_BYTES {
            return Err(too_large(url));
        }
        hasher.update(&chunk);
    }
    let digest = hex(&hasher.finalize());
    Ok(HttpSourceState {
        url: url.to_owned(),
        digest,
        etag,
        last_modified,
    })
}

fn too_large(url: &str) -> String {
    format!(
        "GET {url}: the body is larger than {} MiB",
        MAX_HTTP_BYTES / (1024 * 1024)
    )
}

/// reqwest's Display stops at "error sending request"; the causes say what went wrong
/// (connection refused, timed out, DNS).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What the check of the HTTP and scanned sources found, ready to go into the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteCheck {
    /// Digests for the revision (content or training); None while one is missing (first fetch
    /// failed, first scan running).
    pub digests: Option<RemoteDigests>,
    pub http_sources: Vec<HttpSourceState>,
    pub source_scan: Option<SourceScan>,
    /// The `SourcesChecked` condition, when this pass checked something; `Some(None)` removes
    /// it (no HTTP, PVC or S3 source is left).
    pub checked: Option<Option<(bool, &'static str, String)>>,
    /// Why the revision is not known yet (reason, message), when `digests` is None.
    pub pending: Option<(&'static str, String)>,
    /// A scan Job is running.
    pub scan_running: bool,
    /// The running scan Job's pod is stuck (not past its bound yet).
    pub scan_stuck: Option<crate::stuck::Stuck>,
    /// A warning Event for a failed check, published when the status records it.
    pub event: Option<(&'static str, String)>,
}

impl RemoteCheck {
    /// Puts the digests and the `SourcesChecked` condition into `status`.
    pub fn apply_to(&self, status: &mut impl SourcesStatus, generation: Option<i64>, now: &Time) {
        let (http_sources, source_scan, conditions) = status.sources_mut();
        *http_sources = self.http_sources.clone();
        *source_scan = self.source_scan.clone();
        match &self.checked {
            Some(Some((ok, reason, message))) => set_condition(
                conditions,
                types::SOURCES_CHECKED,
                *ok,
                reason,
                message,
                generation,
                now,
            ),
            Some(None) => conditions.retain(|c| c.type_ != types::SOURCES_CHECKED),
            None => {}
        }
    }
}

/// Checks the HTTP sources (fetch) and the PVC and S3 sources (scan Job) when they are new or
/// due (`refreshInterval`), reads a finished scan Job, and returns the digests to use: the
/// fresh ones, or the stored ones when nothing was due or a check failed. `sources` are the
/// owner's (a Corpus's `spec.sources`, an Adapter's `spec.dataset`), as `kind` names them.
#[allow(clippy::too_many_arguments)]
pub async fn check_remote_sources<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    caches: &OwnerCaches,
    owner: &K,
    kind: &ScanOwner,
    sources: &[DataSource],
    jobs_api: &Api<Job>,
    current: &impl SourcesStatus,
    refresh: Option<Duration>,
) -> Result<RemoteCheck> {
    let name = name_of(owner)?;
    if let Some(i) = sources.iter().position(|s| {
        s.http
            .as_ref()
            .is_some_and(|h| h.headers_secret_ref.is_some())
    }) {
        return Err(Error::NotImplemented(format!(
            "{}[{i}].http.headersSecretRef: neither the operator's fetch nor the runtime's index command can send request headers yet",
            kind.field
        )));
    }
    let urls: Vec<&str> = sources
        .iter()
        .filter_map(|s| s.http.as_ref().map(|h| h.url.as_str()))
        .collect();
    let scan_key = scan_sources_key(sources)?;
    let scan_name = scan_job_name(&name, kind);
    if urls.is_empty() && scan_key.is_none() {
        let had_check = crate::status::find(current.conditions(), types::SOURCES_CHECKED).is_some();
        return Ok(RemoteCheck {
            digests: Some(RemoteDigests::default()),
            checked: had_check.then_some(None),
            ..Default::default()
        });
    }
    let mut check = RemoteCheck::default();
    let mut http: BTreeMap<String, HttpSourceState> = current
        .http_sources()
        .iter()
        .filter(|h| urls.contains(&h.url.as_str()))
        .map(|h| (h.url.clone(), h.clone()))
        .collect();
    let mut scan = current
        .source_scan()
        .cloned()
        .filter(|s| Some(&s.sources) == scan_key.as_ref());
    let mut errors = Vec::new();
    let mut checked_now = false;

    // The owner's scan Job: read it if it finished (then delete it: one at a time), and
    // drop it if it lists sources the spec no longer has.
    let ns = namespace_of(owner)?;
    if let Some(job) = caches.job(&ns, &scan_name) {
        let job_key = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::objects::LABEL_REVISION))
            .cloned();
        let current_scan = job_key.is_some() && job_key == scan_key;
        let stuck = caches.stuck(&ns, &scan_name);
        let now = crate::status::now().0;
        match jobs::job_phase(&*job) {
            // Stuck past its bound: a failed check, the Job deleted; the next check retries.
            jobs::JobPhase::Running
                if current_scan && stuck.as_ref().is_some_and(|s| s.past_bound(now)) =>
            {
                checked_now = true;
                if let Some(stuck) = &stuck {
                    errors.push(format!(
                        "scan Job {scan_name}: {}",
                        jobs::stuck_failure(stuck)
                    ));
                }
                job_api::delete(jobs_api, &scan_name).await?;
            }
            jobs::JobPhase::Running if current_scan => {
                check.scan_running = true;
                check.scan_stuck = stuck;
            }
            jobs::JobPhase::Running => job_api::delete(jobs_api, &scan_name).await?,
            phase => {
                let state = caches
                    .terminated(&ctx.client, &ns, &scan_name, "scan")
                    .await?;
                if let Some(key) = scan_key.clone().filter(|_| current_scan) {
                    checked_now = true; // a scan result was read
                    let message = state
                        .as_ref()
                        .and_then(|t| t.message.clone())
                        .unwrap_or_default();
                    match (phase, parse_scan_report(&message)) {
                        (jobs::JobPhase::Succeeded, Ok(Ok(result))) => {
                            scan = Some(SourceScan {
                                sources: key,
                                digest: result.digest,
                                documents: result.documents as i64,
                            });
                        }
                        (jobs::JobPhase::Succeeded, Ok(Err(failure))) => {
                            errors.push(format!("scan Job {scan_name}: {failure}"))
                        }
                        (jobs::JobPhase::Succeeded, Err(e)) => {
                            errors.push(format!("scan Job {scan_name}: {e}"))
                        }
                        _ => errors.push(format!(
                            "scan Job {scan_name}: {}",
                            jobs::job_failure_message(
                                &*job,
                                Duration::from_secs(SCAN_DEADLINE_SECONDS as u64),
                                state.as_ref(),
                                "scan",
                                |m| {
                                    match parse_scan_report(m) {
                                        Ok(Err(failure)) => Some(failure.to_string()),
                                        _ => None,
                                    }
                                }
                            )
                        )),
                    }
                }
                job_api::delete(jobs_api, &scan_name).await?;
            }
        }
    }

    let missing = |http: &BTreeMap<String, HttpSourceState>, scan: &Option<SourceScan>| -> bool {
        urls.iter().any(|u| !http.contains_key(*u)) || (scan_key.is_some() && scan.is_none())
    };
    let plan_key = {
        let mut d = crate::digest::ContentDigest::new("hybrid.dev/remote-sources/v1");
        for url in &urls {
            d.field("url", url);
        }
        d.field("scan", scan_key.as_deref().unwrap_or_default());
        d.finish_revision()
    };
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let start = Instant::now();
    if ctx
        .refresh
        .due(&uid, &plan_key, missing(&http, &scan), refresh, start)
    {
        checked_now |= !urls.is_empty();
        for url in &urls {
            match check_http(&ctx.http, url, http.get(*url)).await {
                Ok(state) => {
                    http.insert((*url).to_owned(), state);
                }
                Err(e) => errors.push(e),
            }
        }
        if scan_key.is_some() && !check.scan_running {
            let job = scan_job(
                owner,
                kind,
                sources,
                scan_key.as_deref().unwrap_or_default(),
                &ctx.settings.runtime_image,
            )?;
            if job_api::create_if_absent(jobs_api, &job).await?.1 {
                ctx.metrics.job_started("scan");
            }
            check.scan_running = true;
        }
        ctx.refresh
            .checked(&uid, &plan_key, missing(&http, &scan), refresh, start);
    }

    check.http_sources = urls.iter().filter_map(|u| http.get(*u).cloned()).collect();
    check.http_sources.dedup_by(|a, b| a.url == b.url);
    check.source_scan = scan.clone();
    if !missing(&http, &scan) {
        check.digests = Some(RemoteDigests {
            http: http
                .iter()
                .map(|(url, state)| (url.clone(), state.digest.clone()))
                .collect(),
            scan: scan.as_ref().map(|s| s.digest.clone()),
        });
    } else if let Some(stuck) = check.scan_stuck.as_ref().filter(|_| errors.is_empty()) {
        check.pending = Some((
            stuck.reason,
            format!(
                "scan Job {scan_name} is stuck: {}; after {} in {} it is stopped and the sources are checked again",
                stuck.message,
                crate::stuck::human(stuck.bound()),
                stuck.reason
            ),
        ));
    } else if check.scan_running && errors.is_empty() {
        check.pending = Some((
            reasons::SCANNING,
            format!(
                "scan Job {scan_name} lists the PVC and S3 sources before the {} is computed",
                kind.revision
            ),
        ));
    } else {
        check.pending = Some((
            reasons::SOURCE_UNREADABLE,
            format!(
                "{}; checked again within {}s",
                errors.join("; "),
                refresh
                    .unwrap_or(RETRY_FAILED_CHECK)
                    .min(RETRY_FAILED_CHECK)
                    .as_secs()
            ),
        ));
    }
    // Starting a scan finishes nothing; the condition changes once something was read.
    if checked_now {
        check.checked = Some(Some(if errors.is_empty() {
            let mut parts = Vec::new();
            if !urls.is_empty() {
                parts.push(format!("{} HTTP source(s) fetched", urls.len()));
            }
            if let Some(scan) = &scan {
                parts.push(format!(
                    "PVC and S3 sources scanned: {} documents",
                    scan.documents
                ));
            }
            (true, reasons::SUCCEEDED, parts.join("; "))
        } else {
            let kept = if check.digests.is_some() {
                "; the digests of the last successful check are kept, so the active revision stays"
            } else {
                ""
            };
            let message = format!("{}{kept}", errors.join("; "));
            check.event = Some((reasons::SOURCE_UNREADABLE, message.clone()));
            (false, reasons::SOURCE_UNREADABLE, message)
        }));
    }
    Ok(check)
}

/// The status fields a source check reads and writes; the Corpus and the Adapter have the same
/// ones (`httpSources`, `sourceScan`, the `SourcesChecked` condition).
pub trait SourcesStatus {
    fn http_sources(&self) -> &[HttpSourceState];
    fn source_scan(&self) -> Option<&SourceScan>;
    fn conditions(&self) -> &Conditions;
    fn sources_mut(
        &mut self,
    ) -> (
        &mut Vec<HttpSourceState>,
        &mut Option<SourceScan>,
        &mut Conditions,
    );
}

impl SourcesStatus for CorpusStatus {
    fn http_sources(&self) -> &[HttpSourceState] {
        &self.http_sources
    }
    fn source_scan(&self) -> Option<&SourceScan> {
        self.source_scan.as_ref()
    }
    fn conditions(&self) -> &Conditions {
        &self.conditions
    }
    fn sources_mut(
        &mut self,
    ) -> (
        &mut Vec<HttpSourceState>,
        &mut Option<SourceScan>,
        &mut Conditions,
    ) {
        (
            &mut self.http_sources,
            &mut self.source_scan,
            &mut self.conditions,
        )
    }
}

impl SourcesStatus for hybrid_crds::AdapterStatus {
    fn http_sources(&self) -> &[HttpSourceState] {
        &self.http_sources
    }
    fn source_scan(&self) -> Option<&SourceScan> {
        self.source_scan.as_ref()
    }
    fn conditions(&self) -> &Conditions {
        &self.conditions
    }
    fn sources_mut(
        &mut self,
    ) -> (
        &mut Vec<HttpSourceState>,
        &mut Option<SourceScan>,
        &mut Conditions,
    ) {
        (
            &mut self.http_sources,
            &mut self.source_scan,
            &mut self.conditions,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("ts"))
    }

    #[test]
    fn refresh_intervals_parse_like_go_durations() {
        for (text, secs) in [
            ("30s", 30),
            ("15m", 900),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2h0m10s", 7210),
        ] {
            assert_eq!(
                parse_refresh_interval(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for (text, needle) in [
            ("", "empty"),
            ("hourly", "not a duration"),
            ("10", "lacks a unit"),
            ("1.5h", "not a duration"),
            ("5s", "minimum of 10s"),
            ("0s", "minimum"),
            ("99999999999999999999h", "not a duration"),
            ("9999999999999999h", "too long"),
        ] {
            let err = parse_refresh_interval(text).expect_err(text);
            assert!(err.starts_with("spec.refreshInterval"), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn a_failed_source_check_changes_the_status_once_not_at_every_attempt() {
        let kept = HttpSourceState {
            url: "https://example.com/rates.md".into(),
            digest: "d1".into(),
            etag: Some("\"v1\"".into()),
            last_modified: None,
        };
        let failed = RemoteCheck {
            digests: Some(RemoteDigests::default()),
            http_sources: vec![kept.clone()],
            checked: Some(Some((
                false,
                reasons::SOURCE_UNREADABLE,
                "GET https://example.com/rates.md: HTTP 503".into(),
            ))),
            ..Default::default()
        };
        let mut status = hybrid_crds::CorpusStatus::default();
        failed.apply_to(&mut status, Some(2), &t(10));
        assert_eq!(status.http_sources, [kept], "the last good digest stays");
        let first = status.clone();
        failed.apply_to(&mut status, Some(2), &t(20));
        assert_eq!(status, first, "the same failure again writes nothing");

        // A pass that checked nothing leaves the condition alone; a Corpus without HTTP, PVC
        // or S3 sources drops it.
        let idle = RemoteCheck {
            http_sources: first.http_sources.clone(),
            ..Default::default()
        };
        idle.apply_to(&mut status, Some(2), &t(30));
        assert_eq!(status, first);
        let gone = RemoteCheck {
            checked: Some(None),
            ..Default::default()
        };
        gone.apply_to(&mut status, Some(3), &t(40));
        assert!(crate::status::find(&status.conditions, "SourcesChecked").is_none());
        assert!(status.http_sources.is_empty());
    }

    /// A one-connection-at-a-time HTTP server on 127.0.0.1 that answers every request with the
    /// response `respond` builds from the request text.
    async fn serve(respond: impl Fn(&str) -> String + Send + 'static) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let _ = stream.write_all(respond(&request).as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        format!("http://{addr}/rates.md")
    }

    #[tokio::test]
    async fn http_bodies_are_digested_and_revalidated_with_their_etag() {
        let url = serve(|request| {
            if request.to_lowercase().contains("if-none-match: \"v1\"") {
                "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_owned()
            } else {
                "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: 5\r\nConnection: close\r\n\r\nrates"
                    .to_owned()
            }
        })
        .await;
        let client = reqwest::Client::new();
        let first = check_http(&client, &url, None).await.expect("fetched");
        assert_eq!(first.digest, sha256_hex("rates"));
        assert_eq!(first.etag.as_deref(), Some("\"v1\""));
        let again = check_http(&client, &url, Some(&first))
            .await
            .expect("revalidated");
        assert_eq!(again, first, "304 keeps the stored digest");
    }

    #[tokio::test]
    async fn http_failures_are_one_clear_line() {
        let url = serve(|_| {
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_owned()
        })
        .await;
        let client = reqwest::Client::new();
        let err = check_http(&client, &url, None).await.expect_err("503");
        assert!(err.contains("HTTP 503"), "{err}");

        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let err = check_http(&client, &format!("http://127.0.0.1:{port}/a.md"), None)
            .await
            .expect_err("refused");
        assert!(err.starts_with("GET http://127.0.0.1:"), "{err}");
        assert!(err.to_lowercase().contains("connect"), "{err}");

        let big = serve(|_| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                MAX_HTTP_BYTES + 1
            )
        })
        .await;
        let err = check_http(&client, &big, None).await.expect_err("too big");
        assert!(err.contains("larger than 64 MiB"), "{err}");
    }
}
