//! Overload on loopback: one sequence at a time, a queue of two, twenty requests at once. The
//! excess is refused with 429 + Retry-After and a JSON error, nothing answers 5xx, and the
//! server's memory stays flat across bursts.

mod index_support;
mod serve_support;
mod train_support;

use serde_json::json;
use serve_support::{Server, get, post_json};

async fn burst(server: &Server, n: usize) -> Vec<serve_support::Reply> {
    let request = json!({
        "model": "fin",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "temperature": 0,
    });
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = server.url("/v1/chat/completions");
            let body = request.clone();
            tokio::spawn(async move { post_json(&url, &body).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn excess_requests_get_429_with_retry_after_and_memory_stays_flat() {
    let gguf = serve_support::gguf();
    // The injected delay keeps the admitted requests busy while the burst arrives.
    let server = Server::start(
        &[
            "--model",
            gguf.to_str().expect("utf-8"),
            "--name",
            "fin",
            "--max-concurrency",
            "1",
            "--max-queue",
            "2",
        ],
        &[("HYBRID_RUNTIME_INJECT_DECODE_DELAY_MS", "40")],
    );
    let rss_start = server.rss_kib();
    let mut rss_after = Vec::new();
    for round in 0..3 {
        let replies = burst(&server, 20).await;
        let ok = replies.iter().filter(|r| r.status == 200).count();
        let rejected: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
        let server_errors = replies.iter().filter(|r| r.status >= 500).count();
        println!(
            "round {round}: {ok} answered, {} rejected with 429",
            rejected.len()
        );
        assert_eq!(server_errors, 0, "no 5xx under overload");
        assert_eq!(
            ok + rejected.len(),
            20,
            "every request is answered or rejected"
        );
        assert!(ok >= 1, "the admitted requests are answered");
        assert!(
            !rejected.is_empty(),
            "20 requests cannot fit 1 running + 2 queued"
        );
        for r in &rejected {
            let retry = r.headers.get("retry-after").expect("Retry-After on 429");
            assert!(
                retry
                    .to_str()
                    .expect("ascii")
                    .parse::<u64>()
                    .expect("seconds")
                    >= 1
            );
            assert!(r.error_message().contains("capacity"), "{}", r.text());
        }
        rss_after.push(server.rss_kib());
    }
    println!(
        "RSS: {} MiB at start, after bursts {:?} MiB",
        rss_start / 1024,
        rss_after.iter().map(|k| k / 1024).collect::<Vec<_>>()
    );
    let growth = rss_after[2].saturating_sub(rss_after[0]);
    assert!(
        growth < 64 * 1024,
        "RSS grew by {} MiB between the first and the third burst",
        growth / 1024
    );
    let metrics = get(&server.url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"outcome="rejected""#),
        "429s are counted as rejected:\n{metrics}"
    );
    assert!(
        metrics.contains("hybrid_runtime_queue_depth 0"),
        "queue drained:\n{metrics}"
    );
}
