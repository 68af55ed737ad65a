//! The autoscaler's queries against a real Prometheus (Debian's `prometheus` package): it
//! scrapes a loopback endpoint that serves runtime-shaped histograms, and the operator's client
//! turns the answers into observations. Then Prometheus is stopped: the reading becomes
//! `Unavailable`, which the decision holds on.
//!
//! Fails, rather than skips, when the `prometheus` binary is missing (`apt-get install prometheus`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hybrid_operator::autoscaler::decide::Observation;
use hybrid_operator::autoscaler::prometheus::{Client, Queries};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Serves `/metrics`: one HybridModel `fin` in namespace `ml` whose requests all take between
/// 1 and 2 seconds, `per_scrape` more of them at every scrape.
fn serve_metrics(listener: TcpListener, per_scrape: u64) {
    let count = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let n = count.fetch_add(per_scrape, Ordering::SeqCst) + per_scrape;
            let l = r#"namespace="ml",model="fin",adapter="tone",outcome="ok""#;
            let body = format!(
                "# TYPE hybrid_runtime_request_duration_seconds histogram\n\
                 hybrid_runtime_request_duration_seconds_bucket{{{l},le=\"0.5\"}} 0\n\
                 hybrid_runtime_request_duration_seconds_bucket{{{l},le=\"1\"}} 0\n\
                 hybrid_runtime_request_duration_seconds_bucket{{{l},le=\"2\"}} {n}\n\
                 hybrid_runtime_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {n}\n\
                 hybrid_runtime_request_duration_seconds_sum{{{l}}} {sum}\n\
                 hybrid_runtime_request_duration_seconds_count{{{l}}} {n}\n\
                 # TYPE hybrid_runtime_requests_total counter\n\
                 hybrid_runtime_requests_total{{{l}}} {n}\n\
                 # TYPE hybrid_runtime_queue_depth gauge\n\
                 hybrid_runtime_queue_depth{{namespace=\"ml\",model=\"fin\"}} 3\n",
                sum = n as f64 * 1.5
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_answers_become_observations() {
    let bin = which("prometheus").expect("the prometheus binary (apt-get install prometheus)");
    let target = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target_addr = target.local_addr().expect("addr");
    serve_metrics(target, 10);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: runtime\n    honor_labels: true\n    \
             static_configs: [{{targets: ['{target_addr}']}}]\n"
        ),
    )
    .expect("config");
    let port = free_port();
    let prom = Killed(
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new().expect("client");
    let queries = Queries::new("ml", "fin", Duration::from_secs(30));

    // Until two scrapes are in, the answer is "no data" (or Prometheus is still starting).
    let deadline = Instant::now() + Duration::from_secs(60);
    let measured = loop {
        let obs = client.observe(&base, &queries).await;
        if let Observation::Measured { .. } = obs {
            break obs;
        }
        assert!(
            Instant::now() < deadline,
            "no measurement within 60 s; last: {obs:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let Observation::Measured {
        p95,
        ttft_p95,
        rate,
        queue,
    } = measured
    else {
        unreachable!("loop breaks on Measured only")
    };
    // Every request lands in (1, 2]: Prometheus interpolates p95 to 1.95 s.
    assert!((p95 - 1.95).abs() < 1e-6, "p95 {p95}");
    assert_eq!(ttft_p95, None, "no TTFT series served");
    assert!(rate > 0.0, "rate {rate}");
    assert_eq!(queue, 3.0);

    // Another model in the same Prometheus has no series: no data, not idle.
    let other = client
        .observe(&base, &Queries::new("ml", "other", Duration::from_secs(30)))
        .await;
    assert_eq!(other, Observation::NoData);

    drop(prom);
    let obs = client.observe(&base, &queries).await;
    assert!(matches!(obs, Observation::Unavailable(_)), "{obs:?}");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
