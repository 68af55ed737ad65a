//! `hybrid-runtime eval` with retrieval: recall@k of the real finance index on the finance QA set,
//! a wrong supporting document lowering it, generation with retrieved context, and bad flags.
//! Needs the packaged models (`scripts/fetch-models.sh`); fails, never skips, without them.

mod index_support;
mod train_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hybrid_runtime::chunk::{ChunkStrategy, ChunkingConfig};
use hybrid_runtime::index::progress::Progress;
use hybrid_runtime::index::{IndexSettings, build_revision};
use hybrid_runtime::source::Source;
use hybrid_runtime::store::EdgeStoreOptions;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Indexes examples/finance/corpus with the example Corpus' chunking (markdown, 256/32).
fn finance_index(tmp: &Path) -> String {
    let settings = IndexSettings {
        sources: vec![Source::Local(repo().join("examples/finance/corpus"))],
        chunking: ChunkingConfig {
            strategy: ChunkStrategy::Markdown,
            size_tokens: 256,
            overlap_tokens: 32,
        },
        embedder: index_support::embedder_dir().display().to_string(),
        output: tmp.join("indexes").display().to_string(),
        previous: None,
        batch_size: 16,
        progress_path: None,
        work_dir: tmp.join("work"),
        store: EdgeStoreOptions::default(),
        device: Default::default(),
    };
    let result =
        build_revision(&settings, &mut Progress::new(None)).expect("finance corpus indexes");
    assert_eq!(result.documents, 12);
    result.location
}

fn eval(args: &[&str]) -> Output {
    Command::new(train_support::runtime_bin())
        .arg("eval")
        .args(args)
        .env("HYBRID_EMBEDDER_DIR", index_support::embedder_dir())
        .output()
        .expect("runs")
}

fn report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "eval failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report is JSON")
}

fn recall(report: &serde_json::Value, k: usize) -> f64 {
    report["retrieval"]["recallAtK"][k.to_string()]
        .as_f64()
        .unwrap_or_else(|| panic!("no recall@{k} in {report}"))
}

#[test]
fn recall_at_k_on_the_finance_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let index = finance_index(tmp.path());
    let qa = repo().join("examples/finance/dataset/qa.jsonl");
    let qa = qa.to_str().expect("utf-8 path");

    let base = report(&eval(&[
        "--retrieval-only",
        "--index",
        &index,
        "--dataset",
        qa,
        "--recall-at",
        "1,2,4,8",
    ]));
    println!("finance recall@k: {}", base["retrieval"]["recallAtK"]);
    assert_eq!(base["kind"], "EvalResult");
    assert_eq!(base["items"], 20);
    assert_eq!(base["retrieval"]["itemsWithSupportingDocuments"], 20);
    assert_eq!(
        base["retrieval"]["unknownSupportingDocuments"],
        serde_json::json!([])
    );
    assert!(base["exactMatch"].is_null(), "nothing generated: {base}");
    let (r1, r2, r4, r8) = (
        recall(&base, 1),
        recall(&base, 2),
        recall(&base, 4),
        recall(&base, 8),
    );
    assert!(
        r1 <= r2 && r2 <= r4 && r4 <= r8,
        "recall grows with k: {r1} {r2} {r4} {r8}"
    );
    // 12 documents, each question answerable from exactly one with its own names and numbers.
    // Four passages drawn at random would cover the right document about 30% of the time (79
    // chunks, ~6.6 per document). Measured with MiniLM: @1 0.80, @2 0.95, @4 1.00, @8 1.00.
    assert!(r4 >= 0.8, "recall@4 {r4} is far above chance (~0.33)");
    assert!(r1 < r8, "recall changes with k: @1 {r1}, @8 {r8}");
    let items = base["perItem"].as_array().expect("items");
    assert!(items.iter().all(|i| {
        i["retrievedDocuments"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    }));

    // A deliberately wrong supporting document (one that exists, on another subject) for the
    // first five questions lowers recall; an id the index lacks is reported.
    let text =
        std::fs::read_to_string(repo().join("examples/finance/dataset/qa.jsonl")).expect("qa");
    let mut wrong = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut item: serde_json::Value = serde_json::from_str(line).expect("json");
        if i < 5 {
            let replacement = if item["supporting_documents"][0]
                == "harbourline-balanced-income-fund-factsheet"
            {
                "tessary-semiconductor-10k-2025"
            } else {
                "harbourline-balanced-income-fund-factsheet"
            };
            item["supporting_documents"] = serde_json::json!([replacement]);
        }
        if i == 5 {
            item["supporting_documents"] = serde_json::json!(["no-such-note"]);
        }
        wrong.push_str(&item.to_string());
        wrong.push('\n');
    }
    let wrong_path = tmp.path().join("wrong.jsonl");
    std::fs::write(&wrong_path, wrong).expect("write");
    let worse = report(&eval(&[
        "--retrieval-only",
        "--index",
        &index,
        "--dataset",
        wrong_path.to_str().expect("utf-8"),
        "--recall-at",
        "4",
    ]));
    let w4 = recall(&worse, 4);
    println!("recall@4 with 5 wrong and 1 unknown supporting document: {w4} (was {r4})");
    assert!(
        w4 < r4,
        "wrong supporting documents lower recall@4: {w4} vs {r4}"
    );
    assert_eq!(
        worse["retrieval"]["unknownSupportingDocuments"],
        serde_json::json!(["no-such-note"])
    );

    // Generation with retrieved context: two questions, short answers, both metrics present.
    let two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    let two_path = tmp.path().join("two.jsonl");
    std::fs::write(&two_path, two).expect("write");
    let gguf = train_support::smollm2_gguf();
    let generated = report(&eval(&[
        "--base-model",
        gguf.to_str().expect("utf-8"),
        "--index",
        &index,
        "--dataset",
        two_path.to_str().expect("utf-8"),
        "--top-k",
        "2",
        "--max-new-tokens",
        "24",
    ]));
    println!("{generated}");
    assert_eq!(generated["items"], 2);
    assert!(generated["tokenF1"].is_number(), "{generated}");
    assert!(generated["formatCompliance"].is_number(), "{generated}");
    for item in generated["perItem"].as_array().expect("items") {
        assert!(
            item["prediction"]
                .as_str()
                .is_some_and(|p| !p.trim().is_empty()),
            "{item}"
        );
    }
}

#[test]
fn bad_eval_flags_fail_with_the_flag_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let qa = train_support::fixture("qa.jsonl");
    let qa = qa.to_str().expect("utf-8");
    let missing = tmp.path().join("missing.tar.gz");
    let missing = missing.to_str().expect("utf-8");
    for (args, reason, needle) in [
        (
            vec!["--retrieval-only", "--dataset", qa],
            "InvalidConfig",
            "--index",
        ),
        (vec!["--dataset", qa], "InvalidConfig", "--base-model"),
        (
            vec![
                "--retrieval-only",
                "--index",
                missing,
                "--dataset",
                qa,
                "--top-k",
                "0",
            ],
            "InvalidConfig",
            "--top-k",
        ),
        (
            vec![
                "--retrieval-only",
                "--index",
                missing,
                "--dataset",
                qa,
                "--recall-at",
                "0,4",
            ],
            "InvalidConfig",
            "--recall-at",
        ),
        (
            vec![
                "--retrieval-only",
                "--index",
                missing,
                "--dataset",
                qa,
                "--prompt-template",
                "{question}",
            ],
            "InvalidConfig",
            "{context}",
        ),
        (
            vec!["--retrieval-only", "--index", missing, "--dataset", qa],
            "IndexUnavailable",
            "missing.tar.gz",
        ),
        (
            vec!["--retrieval-only", "--index", "gs://b/x", "--dataset", qa],
            "IndexUnavailable",
            "unsupported scheme",
        ),
    ] {
        let out = eval(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("error JSON");
        assert_eq!(json["kind"], "EvalError", "{args:?}");
        assert_eq!(json["reason"], reason, "{args:?}: {json}");
        assert!(
            json["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{args:?}: {json}"
        );
    }
    let out = Command::new(train_support::runtime_bin())
        .args([
            "eval",
            "--retrieval-only",
            "--index",
            missing,
            "--dataset",
            qa,
        ])
        .env_remove("HYBRID_EMBEDDER_DIR")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--embedder"));

    let schema_qa = tmp.path().join("schema.jsonl");
    std::fs::write(
        &schema_qa,
        "{\"question\":\"q\",\"answer\":\"a\",\"format\":{\"jsonSchema\":{\"type\":7}}}\n",
    )
    .expect("write");
    let out = eval(&[
        "--retrieval-only",
        "--index",
        missing,
        "--dataset",
        schema_qa.to_str().expect("utf-8"),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    assert_eq!(json["reason"], "MalformedExample", "{json}");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("schema.jsonl:1") && m.contains("format.jsonSchema")),
        "{json}"
    );
}
