//! Reading a HybridModel's latency from Prometheus' HTTP API (`/api/v1/query`).
//!
//! Five instant queries per tick, each over the runtime pods' series of one HybridModel
//! (`namespace` from the scrape target, `model` = the HybridModel name the runtime exports):
//! p95 end-to-end latency and p95 time to first token from the histograms, the request rate,
//! and the requests queued and being generated now. The rate window is the operator's `--autoscaler-window`.

use hybrid_contract::metrics as names;
use std::time::Duration;

use serde::Deserialize;

use super::decide::Observation;

/// Longest a single query may take; a tick never waits on a slow Prometheus longer than this.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The PromQL of one HybridModel's observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    pub p95: String,
    pub ttft_p95: String,
    pub rate: String,
    pub queue: String,
    pub in_flight: String,
}

impl Queries {
    pub fn new(namespace: &str, model: &str, window: Duration) -> Self {
        let sel = format!(
            "namespace=\"{}\",model=\"{}\"",
            escape(namespace),
            escape(model)
        );
        let w = format!("{}s", window.as_secs().max(1));
        let quantile = |metric: &str| {
            format!("histogram_quantile(0.95, sum by (le) (rate({metric}_bucket{{{sel}}}[{w}])))")
        };
        Self {
            p95: quantile(names::REQUEST_DURATION_SECONDS),
            ttft_p95: quantile(names::TIME_TO_FIRST_TOKEN_SECONDS),
            rate: format!("sum(rate({}{{{sel}}}[{w}]))", names::REQUESTS_TOTAL),
            queue: format!("sum({}{{{sel}}})", names::QUEUE_DEPTH),
            in_flight: format!("sum({}{{{sel}}})", names::IN_FLIGHT_SEQUENCES),
        }
    }
}

/// PromQL string literal escaping (label values are Kubernetes names, but be exact anyway).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("querying Prometheus at {url}: {message}")]
    Http { url: String, message: String },
    #[error("Prometheus answered {status} to {query}: {message}")]
    Status {
        status: String,
        query: String,
        message: String,
    },
}

/// `{"status":"success","data":{"resultType":"vector","result":[{"value":[ts,"1.5"]}]}}`
#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    value: (f64, String),
}

/// Parses an instant-query answer into its single value: `None` for an empty vector, NaN kept
/// (histogram_quantile of no requests is NaN).
fn parse(query: &str, body: &str) -> Result<Option<f64>, QueryError> {
    let resp: Response = serde_json::from_str(body).map_err(|e| QueryError::Status {
        status: "unparseable".into(),
        query: query.into(),
        message: e.to_string(),
    })?;
    if resp.status != "success" {
        return Err(QueryError::Status {
            status: resp.status,
            query: query.into(),
            message: resp.error.unwrap_or_default(),
        });
    }
    let Some(sample) = resp.data.and_then(|d| d.result.into_iter().next()) else {
        return Ok(None);
    };
    let v = match sample.value.1.as_str() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().map_err(|_| QueryError::Status {
            status: "unparseable".into(),
            query: query.into(),
            message: format!("sample value {s:?}"),
        })?,
    };
    Ok(Some(v))
}

/// The answers of one tick's queries (`None`: an empty result).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Readings {
    pub p95: Option<f64>,
    pub ttft_p95: Option<f64>,
    pub rate: Option<f64>,
    pub queue: Option<f64>,
    pub in_flight: Option<f64>,
}

/// Turns the answers into an observation.
pub fn observe(r: Readings) -> Observation {
    let Some(rate) = r.rate else {
        return Observation::NoData;
    };
    let gauge = |v: Option<f64>| v.filter(|q| q.is_finite()).unwrap_or(0.0);
    let (queue, in_flight) = (gauge(r.queue), gauge(r.in_flight));
    if rate <= 0.0 && queue <= 0.0 {
        // No request finished in the window and none waits. With sequences still being
        // generated that is not idleness: the window may just be short of samples (Prometheus
        // restarted) or requests may be slow. Hold instead of restoring the policy's top-k.
        return if in_flight > 0.0 {
            Observation::NoData
        } else {
            Observation::Idle
        };
    }
    match r.p95.filter(|v| v.is_finite()) {
        Some(p95) => Observation::Measured {
            p95,
            ttft_p95: r.ttft_p95.filter(|v| v.is_finite()),
            rate,
            queue,
        },
        // Requests arrive but none finished in the window: that is pressure, not health.
        None if queue > 0.0 => Observation::Measured {
            p95: f64::INFINITY,
            ttft_p95: None,
            rate,
            queue,
        },
        None => Observation::NoData,
    }
}

/// A Prometheus HTTP API client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    pub fn new() -> Result<Self, QueryError> {
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .build()
            .map_err(|e| QueryError::Http {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(Self { http })
    }

    pub async fn query(&self, base: &str, query: &str) -> Result<Option<f64>, QueryError> {
        let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
        let http_err = |e: reqwest::Error| QueryError::Http {
            url: url.clone(),
            message: e.to_string(),
        };
        let url_with_query =
            reqwest::Url::parse_with_params(&url, &[("query", query)]).map_err(|e| {
                QueryError::Http {
                    url: url.clone(),
                    message: e.to_string(),
                }
            })?;
        let resp = self
            .http
            .get(url_with_query)
            .send()
            .await
            .map_err(http_err)?;
        let body = resp.text().await.map_err(http_err)?;
        parse(query, &body)
    }

    /// One observation of a HybridModel; an unreachable Prometheus becomes `Unavailable`.
    pub async fn observe(&self, base: &str, queries: &Queries) -> Observation {
        let answers = futures::future::join_all(
            [
                &queries.p95,
                &queries.ttft_p95,
                &queries.rate,
                &queries.queue,
                &queries.in_flight,
            ]
            .map(|q| self.query(base, q)),
        )
        .await;
        match answers.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(v) => observe(Readings {
                p95: v[0],
                ttft_p95: v[1],
                rate: v[2],
                queue: v[3],
                in_flight: v[4],
            }),
            Err(e) => Observation::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_select_one_model_over_the_window() {
        let q = Queries::new("ml", "fin", Duration::from_secs(30));
        assert_eq!(
            q.p95,
            "histogram_quantile(0.95, sum by (le) (rate(hybrid_runtime_request_duration_seconds_bucket{namespace=\"ml\",model=\"fin\"}[30s])))"
        );
        assert_eq!(
            q.rate,
            "sum(rate(hybrid_runtime_requests_total{namespace=\"ml\",model=\"fin\"}[30s]))"
        );
        assert!(
            Queries::new("a\"b", "m", Duration::from_secs(1))
                .queue
                .contains("a\\\"b")
        );
    }

    #[test]
    fn parses_vectors_nan_empty_and_errors() {
        let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"1.25"]}]}}"#;
        assert_eq!(parse("q", one).expect("parsed"), Some(1.25));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(parse("q", nan).expect("parsed").expect("a value").is_nan());
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse("q", empty).expect("parsed"), None);
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        let e = parse("sum(", bad).expect_err("an error").to_string();
        assert!(
            e.contains("parse error at char 5") && e.contains("sum("),
            "{e}"
        );
        assert!(parse("q", "<html>").is_err());
    }

    #[test]
    fn observations_distinguish_idle_from_missing_data() {
        let r = |p95, rate, queue, in_flight| Readings {
            p95,
            ttft_p95: None,
            rate,
            queue,
            in_flight,
        };
        assert_eq!(observe(Readings::default()), Observation::NoData);
        assert_eq!(
            observe(r(Some(f64::NAN), Some(0.0), Some(0.0), Some(0.0))),
            Observation::Idle
        );
        // Nothing finished in the window but sequences are being generated: not idle.
        assert_eq!(
            observe(r(Some(f64::NAN), Some(0.0), Some(0.0), Some(3.0))),
            Observation::NoData
        );
        assert_eq!(
            observe(Readings {
                ttft_p95: Some(0.1),
                ..r(Some(0.4), Some(3.0), None, Some(2.0))
            }),
            Observation::Measured {
                p95: 0.4,
                ttft_p95: Some(0.1),
                rate: 3.0,
                queue: 0.0
            }
        );
        // Nothing finishes but work is queued: infinite latency, which is pressure.
        assert!(matches!(
            observe(r(Some(f64::NAN), Some(2.0), Some(6.0), None)),
            Observation::Measured { p95, .. } if p95.is_infinite()
        ));
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_unavailable() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let client = Client::new().expect("client");
        let obs = client
            .observe(
                &format!("http://127.0.0.1:{port}"),
                &Queries::new("ml", "fin", Duration::from_secs(30)),
            )
            .await;
        assert!(
            matches!(&obs, Observation::Unavailable(m) if m.contains("127.0.0.1")),
            "{obs:?}"
        );
    }
}
