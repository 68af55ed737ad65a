//! `hybrid-runtime serve` with the packaged SmolLM2-135M and MiniLM over the finance example:
//! cited answers, streaming, retrieval parity with the CLI, and 4xx errors.

mod index_support;
mod serve_support;
mod train_support;

use serde_json::json;
use serve_support::{Server, get, parse_sse, post, post_json};

fn local_server(extra: &[&str]) -> Server {
    let gguf = serve_support::gguf();
    let embedder = serve_support::embedder();
    let index = serve_support::finance_index();
    let mut args = vec![
        "--model",
        gguf.to_str().expect("utf-8 path"),
        "--index",
        &index,
        "--embedder",
        embedder.to_str().expect("utf-8 path"),
        "--name",
        "fin",
    ];
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

const QUESTION: &str =
    "What did the Velorian Monetary Authority cut its policy rate to on 11 February 2026?";

#[tokio::test(flavor = "multi_thread")]
async fn cited_answer_and_the_same_text_when_streamed() {
    let server = local_server(&["--top-k", "3"]);
    let request = json!({
        "model": "fin",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 24,
        "temperature": 0,
    });
    let reply = post_json(&server.url("/v1/chat/completions"), &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    println!("answer: {text}\ncitations: {}", body["citations"]);
    assert!(!text.trim().is_empty(), "empty answer: {body}");
    let citations = body["citations"].as_array().expect("citations");
    assert_eq!(citations.len(), 3, "{body}");
    assert!(
        citations.iter().any(|c| c["document"]
            .as_str()
            .is_some_and(|d| d.contains("rates-outlook-q1-2026"))),
        "a citation must point at the rates outlook, which holds the answer: {body}"
    );
    for key in ["chunk", "score", "source", "title"] {
        assert!(
            citations[0].get(key).is_some(),
            "citation lacks {key}: {body}"
        );
    }
    let usage = &body["usage"];
    let completion = usage["completion_tokens"].as_u64().expect("usage");
    assert!((1..=24).contains(&completion), "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().expect("prompt") + completion)
    );
    assert_eq!(body["revisions"]["servingRevision"], "local");

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let reply = post_json(&server.url("/v1/chat/completions"), &streamed).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let content_type = reply.headers["content-type"].to_str().expect("header");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let (stream_text, last) = parse_sse(&reply.text());
    assert_eq!(
        stream_text, text,
        "streaming and non-streaming differ at temperature 0"
    );
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    assert_eq!(last["citations"], body["citations"]);
    assert_eq!(last["usage"], body["usage"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_json_errors_naming_the_problem() {
    let server = local_server(&[]);
    let chat = server.url("/v1/chat/completions");

    let r = post(&chat, r#"{"model": "fin", "messages": ["#).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("JSON"), "{}", r.text());

    let r = post(&chat, r#"{"model": "fin"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("messages"), "{}", r.text());

    let r = post_json(
        &chat,
        &json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 404);
    let m = r.error_message();
    assert!(m.contains("gpt-4") && m.contains("fin:base"), "{m}");
    assert_eq!(r.json()["error"]["param"], "model");

    let r = post_json(
        &chat,
        &json!({"model": "fin", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}),
    )
    .await;
    assert_eq!(r.status, 400);
    let m = r.error_message();
    assert!(m.contains("max_tokens") && m.contains("512"), "{m}");

    let long = "interest rates ".repeat(3000);
    let r = post_json(
        &chat,
        &json!({"model": "fin:base", "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    let m = r.error_message();
    assert!(m.contains("maxPromptTokens") && m.contains("2048"), "{m}");

    let huge = format!(
        r#"{{"model":"fin","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    let r = post(&chat, huge).await;
    assert_eq!(r.status, 413);
    assert!(r.error_message().contains("1048576"), "{}", r.text());

    let r = post_json(
        &chat,
        &json!({"model": "fin", "messages": [{"role": "user", "content": "hi"}], "retrieval": {"top_k": 65}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.error_message().contains("retrieval.top_k"),
        "{}",
        r.text()
    );

    let r = get(&server.url("/v1/models")).await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, ["fin", "fin:base"]);

    let r = get(&server.url("/v1/admin/revisions")).await;
    assert_eq!(r.json()["indexes"][0]["name"], "local", "{}", r.text());

    let metrics = get(&server.url("/metrics")).await.text();
    for name in [
        "hybrid_runtime_requests_total",
        "hybrid_runtime_request_duration_seconds",
        "hybrid_runtime_queue_depth",
        "hybrid_runtime_loaded_revision_info",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(
        // max_tokens over the limit (`fin`), the over-long prompt (`fin:base`) and top_k 65
        // (`fin`) resolve a model, so they count under the HybridModel name `fin`; the others
        // fail before a model is known.
        metrics.contains(
            r#"hybrid_runtime_requests_total{adapter="base",model="fin",outcome="client_error"} 3"#
        ),
        "the three resolved bad requests count as client errors of model fin:\n{metrics}"
    );
    let r = post(&server.url("/v1/admin/reload"), "{}").await;
    assert_eq!(r.status, 404, "admin reload is off by default");
}

#[tokio::test(flavor = "multi_thread")]
async fn retrieve_endpoint_matches_the_cli() {
    let server = local_server(&[]);
    let index = serve_support::finance_index();
    let question = "Which sector led the Veloria Composite 500 in Q1 2026?";
    let cli = std::process::Command::new(train_support::runtime_bin())
        .args([
            "retrieve",
            "--json",
            "--top-k",
            "3",
            "--index",
            &index,
            "--embedder",
        ])
        .arg(serve_support::embedder())
        .arg(question)
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs retrieve");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).expect("cli json");
    let r = post_json(
        &server.url("/v1/retrieve"),
        &json!({"query": question, "top_k": 3}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let served = r.json();
    let result = &served["results"][0];
    assert_eq!(result["revision"], cli["revision"]);
    assert_eq!(
        result["passages"], cli["passages"],
        "serve and the CLI disagree"
    );
    assert_eq!(cli["passages"].as_array().map(Vec::len), Some(3));

    let doc = cli["passages"][1]["documentId"]
        .as_str()
        .expect("documentId");
    let r = post_json(
        &server.url("/v1/retrieve"),
        &json!({"query": question, "top_k": 3, "filter": {"documents": [doc]}}),
    )
    .await;
    let passages = r.json()["results"][0]["passages"].clone();
    assert!(
        !passages.as_array().expect("passages").is_empty(),
        "{}",
        r.text()
    );
    assert!(
        passages
            .as_array()
            .expect("passages")
            .iter()
            .all(|p| p["documentId"] == doc),
        "filter keeps only {doc}: {passages}"
    );

    let r = post_json(
        &server.url("/v1/embeddings"),
        &json!({"model": "fin", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json();
    assert_eq!(e["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        e["data"][0]["embedding"].as_array().map(Vec::len),
        Some(384)
    );
}

/// Where serve computes is logged at start, exported as a metric label and reported with the
/// loaded revisions; `--device cuda` in a build without CUDA is an error at start, not a CPU run.
#[tokio::test(flavor = "multi_thread")]
async fn the_device_is_logged_exported_and_reported() {
    let server = local_server(&["--device", "cpu"]);
    assert!(
        server
            .log_text()
            .contains("serve: computing on cpu (--device cpu"),
        "{}",
        server.log_text()
    );
    let r = get(&server.url("/v1/admin/revisions")).await;
    assert_eq!(r.json()["device"], "cpu", "{}", r.text());
    let metrics = get(&server.url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"hybrid_runtime_device_info{device="cpu"} 1"#),
        "{metrics}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_cuda_is_refused_at_start_by_every_subcommand() {
    let gguf = serve_support::gguf();
    let embedder = serve_support::embedder();
    let corpus = serve_support::finance_corpus();
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("out");
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "serve",
            vec![
                "serve".into(),
                "--model".into(),
                gguf.display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
        ),
        (
            "index",
            vec![
                "index".into(),
                "--source".into(),
                corpus.display().to_string(),
                "--embedder".into(),
                embedder.display().to_string(),
                "--output".into(),
                out.display().to_string(),
                "--result-path".into(),
                work.path().join("index.json").display().to_string(),
            ],
        ),
        (
            "train",
            vec![
                "train".into(),
                "--base-model".into(),
                gguf.display().to_string(),
                "--dataset".into(),
                serve_support::repo_root()
                    .join("examples/finance/dataset/train.jsonl")
                    .display()
                    .to_string(),
                "--output-dir".into(),
                out.display().to_string(),
                "--result-path".into(),
                work.path().join("train.json").display().to_string(),
            ],
        ),
        (
            "eval",
            vec![
                "eval".into(),
                "--base-model".into(),
                gguf.display().to_string(),
                "--dataset".into(),
                serve_support::repo_root()
                    .join("examples/finance/dataset/qa.jsonl")
                    .display()
                    .to_string(),
            ],
        ),
        (
            "retrieve",
            vec![
                "retrieve".into(),
                "--index".into(),
                out.display().to_string(),
                "--embedder".into(),
                embedder.display().to_string(),
                "what".into(),
            ],
        ),
    ];
    for (name, mut args) in cases {
        args.extend(["--device".into(), "cuda".into()]);
        let run = std::process::Command::new(train_support::runtime_bin())
            .args(&args)
            .output()
            .expect("runs hybrid-runtime");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            !run.status.success(),
            "{name} --device cuda succeeded:\n{all}"
        );
        assert!(
            all.contains("--device cuda:0: this hybrid-runtime was built without CUDA support"),
            "{name}: {all}"
        );
    }
}
