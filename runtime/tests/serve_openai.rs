//! The official `openai` Python client, unchanged, against `hybrid-runtime serve`: chat
//! (plain and streamed), models, embeddings and a 404, through scripts/openai-client-check.py.
//! The client's venv comes from scripts/openai-env.sh (built from PyPI on first use); the test
//! fails when it cannot be had.

mod index_support;
mod serve_support;
mod train_support;

use std::process::Command;

fn openai_python() -> String {
    let out = Command::new("bash")
        .arg(serve_support::repo_root().join("scripts/openai-env.sh"))
        .output()
        .expect("runs scripts/openai-env.sh");
    assert!(
        out.status.success(),
        "scripts/openai-env.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("PYTHON="))
        .expect("PYTHON= line")
        .to_string()
}

#[test]
fn official_openai_client_talks_to_serve() {
    let python = openai_python();
    let gguf = serve_support::gguf();
    let embedder = serve_support::embedder();
    let index = serve_support::finance_index();
    let server = serve_support::Server::start(
        &[
            "--model",
            gguf.to_str().expect("utf-8"),
            "--index",
            &index,
            "--embedder",
            embedder.to_str().expect("utf-8"),
            "--name",
            "fin",
            "--top-k",
            "2",
        ],
        &[],
    );
    let out = Command::new(python)
        .arg(serve_support::repo_root().join("scripts/openai-client-check.py"))
        .arg(server.url("/v1"))
        .arg("fin")
        .output()
        .expect("runs the python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("report json");
    println!("{report}");
    assert_eq!(report["models"], serde_json::json!(["fin", "fin:base"]));
    assert_eq!(report["embedding_dims"], serde_json::json!([384, 384]));
    let citations = report["citations"].as_array().expect("citations");
    assert!(
        citations.iter().any(|d| d
            .as_str()
            .is_some_and(|d| d.contains("rates-outlook-q1-2026"))),
        "{report}"
    );
    assert!(
        report["not_found"]
            .as_str()
            .expect("404 text")
            .contains("no-such-model")
    );
}
