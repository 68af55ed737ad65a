//! Sources the operator cannot watch: HTTP documents, which it fetches and digests itself, and
//! PVC and S3 sources, which a scan Job lists (`build::scan_job`). Both are checked when their
//! spec is new and again every `refreshInterval`.

use crate::digest::hex;
use hybrid_crds::corpus::HttpSourceState;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
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

/// When each Corpus's HTTP and scanned sources are next due for a check, kept by this process
/// only. It is not status: recording every check there would write each Corpus every
/// `refreshInterval` although nothing changed. After a restart, a Corpus whose stored digests
/// still match its spec is first checked one `refreshInterval` later, so a restart alone starts
/// no Job and writes nothing.
#[derive(Default)]
pub struct RefreshSchedule {
    next: Mutex<HashMap<String, Planned>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Planned {
    /// Digest of the source specs the plan was made for; a spec change makes a new plan.
    sources: String,
    at: Instant,
}

impl RefreshSchedule {
    /// Whether the sources of `key` (a Corpus uid) are due for a check now. `stale` says the
    /// stored digests do not cover the current sources (new Corpus, changed spec): they are
    /// checked at once unless a failed check of the same sources waits for its retry.
    pub fn due(
        &self,
        key: &str,
        sources: &str,
        stale: bool,
        refresh: Option<Duration>,
        now: Instant,
    ) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        match next.get(key).filter(|p| p.sources == sources) {
            Some(planned) => now >= planned.at,
            None if stale => true,
            None => {
                if let Some(refresh) = refresh {
                    next.insert(
                        key.to_owned(),
                        Planned {
                            sources: sources.to_owned(),
                            at: now + refresh,
                        },
                    );
                }
                false
            }
        }
    }

    /// Records a check made now: the next one comes after `refresh`, or sooner when `stale`
    /// (the check failed and nothing stands in for it). No plan at all when neither applies.
    pub fn checked(
        &self,
        key: &str,
        sources: &str,
        stale: bool,
        refresh: Option<Duration>,
        now: Instant,
    ) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let wait = match (stale, refresh) {
            (true, Some(r)) => Some(r.min(RETRY_FAILED_CHECK)),
            (true, None) => Some(RETRY_FAILED_CHECK),
            (false, r) => r,
        };
        match wait {
            Some(wait) => {
                next.insert(
                    key.to_owned(),
                    Planned {
                        sources: sources.to_owned(),
                        at: now + wait,
                    },
                );
            }
            None => {
                next.remove(key);
            }
        }
    }

    /// How long until the next planned check of `key`, if one is planned.
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        next.get(key).map(|p| p.at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    fn schedule_checks_new_sources_at_once_and_known_ones_every_interval() {
        let s = RefreshSchedule::default();
        let t0 = Instant::now();
        let hour = Some(Duration::from_secs(3600));
        // New Corpus: due at once.
        assert!(s.due("uid", "k1", true, hour, t0));
        s.checked("uid", "k1", false, hour, t0);
        assert!(!s.due("uid", "k1", false, hour, t0 + Duration::from_secs(10)));
        assert!(s.due("uid", "k1", false, hour, t0 + Duration::from_secs(3600)));
        // A spec change is due at once, whatever the plan said.
        assert!(s.due("uid", "k2", true, hour, t0 + Duration::from_secs(20)));
        // A failed check with nothing to stand in: retried after a minute, not at every pass.
        s.checked("uid", "k2", true, hour, t0);
        assert!(!s.due("uid", "k2", true, hour, t0 + Duration::from_secs(30)));
        assert!(s.due("uid", "k2", true, hour, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn without_an_interval_only_new_sources_are_checked() {
        let s = RefreshSchedule::default();
        let t0 = Instant::now();
        assert!(s.due("uid", "k1", true, None, t0));
        s.checked("uid", "k1", false, None, t0);
        assert!(!s.due(
            "uid",
            "k1",
            false,
            None,
            t0 + Duration::from_secs(86400 * 30)
        ));
        assert_eq!(s.wait("uid", t0), None);
    }

    #[test]
    fn a_restart_with_valid_digests_waits_one_interval() {
        let s = RefreshSchedule::default();
        let t0 = Instant::now();
        let hour = Some(Duration::from_secs(3600));
        assert!(
            !s.due("uid", "k1", false, hour, t0),
            "first sight, digests valid"
        );
        assert_eq!(s.wait("uid", t0), Some(Duration::from_secs(3600)));
        assert!(s.due("uid", "k1", false, hour, t0 + Duration::from_secs(3600)));
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
