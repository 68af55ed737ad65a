//! `hybrid-runtime index` end to end: incremental reuse, deterministic revisions, snapshots that
//! load and search, and bad input that fails cleanly without publishing anything.

mod index_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hybrid_runtime::chunk::{ChunkStrategy, ChunkingConfig};
use hybrid_runtime::embed::Embedder;
use hybrid_runtime::index::progress::Progress;
use hybrid_runtime::index::revision::LoadedRevision;
use hybrid_runtime::index::{IndexResult, IndexSettings, build_revision};
use hybrid_runtime::source::Source;
use hybrid_runtime::store::{EdgeStoreOptions, SearchHit};

fn settings(corpus: &Path, output: &Path, previous: Option<&str>, work: &Path) -> IndexSettings {
    IndexSettings {
        sources: vec![Source::Local(corpus.to_path_buf())],
        chunking: ChunkingConfig {
            strategy: ChunkStrategy::Markdown,
            size_tokens: 32,
            overlap_tokens: 8,
        },
        embedder: index_support::embedder_dir().display().to_string(),
        output: output.display().to_string(),
        previous: previous.map(str::to_string),
        batch_size: 8,
        progress_path: None,
        work_dir: work.to_path_buf(),
        store: EdgeStoreOptions::default(),
        device: Default::default(),
    }
}

fn index(settings: &IndexSettings) -> IndexResult {
    build_revision(settings, &mut Progress::new(None)).expect("index run succeeds")
}

fn open(location: &str, work: &Path) -> LoadedRevision {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(LoadedRevision::open(location, work))
        .expect("revision loads")
}

fn search(revision: &LoadedRevision, embedder: &Embedder, query: &str) -> Vec<SearchHit> {
    let q = embedder.embed(&[query]).expect("embeds").remove(0);
    revision.search(&q, 5).expect("search")
}

const QUERIES: [&str; 4] = [
    "how often should I water tomato plants",
    "when is an invoice due",
    "tallest volcano on Mars",
    "rolling update max surge",
];

#[test]
fn unchanged_corpus_reembeds_nothing_and_keeps_the_revision_id() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    index_support::write_corpus(&corpus);
    let work = tmp.path().join("work");

    let first = index(&settings(&corpus, &tmp.path().join("out1"), None, &work));
    println!("first run: {first:?}");
    assert_eq!(first.documents, index_support::TOPICS.len());
    assert_eq!(first.reused, 0);
    assert_eq!(first.reembedded, first.chunks);
    assert!(
        first.chunks > first.documents,
        "size 32 splits some documents: {}",
        first.chunks
    );

    let second = index(&settings(
        &corpus,
        &tmp.path().join("out2"),
        Some(&first.location),
        &work,
    ));
    println!("second run: {second:?}");
    assert_eq!(
        second.revision, first.revision,
        "same inputs, same revision id"
    );
    assert_eq!(second.reembedded, 0);
    assert_eq!(second.reused, first.chunks);
    assert_ne!(second.location, first.location);

    // Both snapshots load and answer every query identically, scores and payloads included.
    let embedder = Embedder::load(&index_support::embedder_dir()).expect("model");
    let a = open(&first.location, &work);
    let b = open(&second.location, &work);
    assert_eq!(a.revision(), first.revision);
    assert_eq!(a.manifest(), b.manifest());
    for query in QUERIES {
        assert_eq!(
            search(&a, &embedder, query),
            search(&b, &embedder, query),
            "query {query:?}"
        );
    }
    // And the answers are the right documents, with their metadata.
    let top = |query: &str| search(&a, &embedder, query).remove(0).payload;
    let tomato = top(QUERIES[0]);
    assert_eq!(tomato.document_id, "gardening/tomatoes.md");
    assert_eq!(tomato.title, "Growing tomatoes");
    assert!(
        tomato.source_uri.starts_with("file://")
            && tomato.source_uri.ends_with("gardening/tomatoes.md")
    );
    assert_eq!(top(QUERIES[1]).document_id, "finance/invoices.md");
    assert_eq!(top(QUERIES[2]).document_id, "astronomy/mars.txt");

    drop((a, b));
    // Indexing into the same output again keeps the published archive (revisions are immutable).
    let third = index(&settings(
        &corpus,
        &tmp.path().join("out1"),
        Some(&first.location),
        &work,
    ));
    assert_eq!(third.location, first.location);
    assert_eq!(
        std::fs::read_dir(&work).expect("work dir").count(),
        0,
        "scratch space is cleaned up"
    );
}

#[test]
fn editing_one_document_reembeds_only_its_chunks_and_deleted_documents_disappear() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    index_support::write_corpus(&corpus);
    let work = tmp.path().join("work");
    let out = tmp.path().join("out");
    let first = index(&settings(&corpus, &out, None, &work));

    std::fs::write(
        corpus.join("pets/cats.md"),
        "# Caring for cats\n\nCats need fresh water daily. Indoor cats enjoy climbing trees and scratching posts.",
    )
    .expect("edit");
    std::fs::remove_file(corpus.join("music/guitar.txt")).expect("delete");
    let second = index(&settings(&corpus, &out, Some(&first.location), &work));
    println!("after edit + delete: {second:?}");
    assert_ne!(second.revision, first.revision);
    assert_eq!(second.documents, first.documents - 1);

    let embedder = Embedder::load(&index_support::embedder_dir()).expect("model");
    let old = open(&first.location, &work);
    let new = open(&second.location, &work);
    let chunks_of =
        |r: &LoadedRevision, id: &str| r.manifest().document(id).map_or(0, |d| d.chunks);
    assert_eq!(
        second.reembedded,
        chunks_of(&new, "pets/cats.md"),
        "only the edited document is embedded"
    );
    assert_eq!(
        second.reused,
        first.chunks - chunks_of(&old, "pets/cats.md") - chunks_of(&old, "music/guitar.txt")
    );
    assert_eq!(second.chunks, second.reused + second.reembedded);

    assert!(new.manifest().document("music/guitar.txt").is_none());
    let guitar = search(&new, &embedder, "how to tune a guitar string");
    assert!(
        guitar
            .iter()
            .all(|h| h.payload.document_id != "music/guitar.txt"),
        "deleted document is gone"
    );
    let scratching = search(&new, &embedder, "scratching posts for indoor cats");
    assert_eq!(scratching[0].payload.document_id, "pets/cats.md");
    assert!(
        scratching[0].payload.text.contains("scratching posts"),
        "the new text is what is indexed"
    );
    // Unchanged documents answer exactly as before.
    assert_eq!(
        search(&old, &embedder, QUERIES[1])[0],
        search(&new, &embedder, QUERIES[1])[0]
    );
}

#[test]
fn changing_chunking_or_model_forces_a_full_reembed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    index_support::write_corpus(&corpus);
    let work = tmp.path().join("work");
    let out = tmp.path().join("out");
    let first = index(&settings(&corpus, &out, None, &work));

    let mut rechunked = settings(&corpus, &out, Some(&first.location), &work);
    rechunked.chunking.size_tokens = 48;
    let second = index(&rechunked);
    assert_eq!(second.reused, 0);
    assert_eq!(second.reembedded, second.chunks);
    assert_ne!(second.revision, first.revision);

    // Same weights under another tokenizer config is another model.
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).expect("mkdir");
    let src = index_support::embedder_dir();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(name), model.join(name)).expect("copy");
    }
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).expect("read"))
            .expect("json");
    tokenizer["truncation"]["max_length"] = serde_json::json!(256);
    std::fs::write(model.join("tokenizer.json"), tokenizer.to_string()).expect("write");
    let mut other_model = settings(&corpus, &out, Some(&first.location), &work);
    other_model.embedder = model.display().to_string();
    let third = index(&other_model);
    assert_eq!(third.reused, 0);
    assert_ne!(third.revision, first.revision);
}

fn binary() -> Command {
    // Cargo names the binary at compile time when it builds it for this test; otherwise it sits
    // next to the `deps/` directory holding this test executable.
    let exe = option_env!("CARGO_BIN_EXE_hybrid-runtime")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let test_exe = std::env::current_exe().expect("test executable path");
            test_exe
                .parent()
                .and_then(Path::parent)
                .expect("target dir")
                .join("hybrid-runtime")
        });
    let mut cmd = Command::new(exe);
    cmd.env("HYBRID_EMBEDDER_DIR", index_support::embedder_dir())
        .env("RUST_LOG", "info");
    cmd
}

struct Run {
    code: Option<i32>,
    result: serde_json::Value,
    stderr: String,
}

fn run_cli(args: &[&str], tmp: &Path) -> Run {
    let result_path = tmp.join("result.json");
    let _ = std::fs::remove_file(&result_path);
    let output = binary()
        .arg("index")
        .args(args)
        .arg("--result-path")
        .arg(&result_path)
        .arg("--work-dir")
        .arg(tmp.join("work"))
        .output()
        .expect("binary runs");
    let text = std::fs::read_to_string(&result_path).expect("result file written");
    assert!(
        text.len() < 4096,
        "termination message too long: {}",
        text.len()
    );
    Run {
        code: output.status.code(),
        result: serde_json::from_str(&text).expect("result is JSON"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn published(out: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(out)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[test]
fn cli_writes_result_and_progress_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    index_support::write_corpus(&corpus);
    let out = tmp.path().join("out");
    let progress = tmp.path().join("progress.json");
    let config = tmp.path().join("corpus-index.yaml");
    std::fs::write(
        &config,
        format!(
            "sources: [{}]\nchunking: {{strategy: sentence, sizeTokens: 48, overlapTokens: 8}}\noutput: file://{}\n",
            corpus.display(),
            out.display()
        ),
    )
    .expect("config");
    let run = run_cli(
        &[
            "--config",
            config.to_str().expect("utf8"),
            "--progress-path",
            progress.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.result["kind"], "IndexResult");
    assert_eq!(run.result["documents"], 10);
    let revision = run.result["revision"].as_str().expect("revision");
    assert_eq!(
        run.result["location"],
        format!("file://{}/{revision}.tar.gz", out.display())
    );
    assert!(run.result["durationSeconds"].as_f64().is_some());
    assert_eq!(published(&out), [out.join(format!("{revision}.tar.gz"))]);

    let progress: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&progress).expect("progress file"))
            .expect("json");
    assert_eq!(progress["phase"], "done");
    assert_eq!(progress["documentsDone"], 10);
    assert_eq!(progress["documentsTotal"], 10);
    assert_eq!(progress["chunksDone"], run.result["chunks"]);
    assert_eq!(progress["chunksTotal"], run.result["chunks"]);
    assert!(
        run.stderr.contains("index progress"),
        "progress is logged too"
    );
}

#[test]
fn unreadable_sources_fail_with_the_file_named_and_publish_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let out_arg = out.to_str().expect("utf8");

    let missing = tmp.path().join("no-such-dir");
    let run = run_cli(
        &[
            "--source",
            missing.to_str().expect("utf8"),
            "--output",
            out_arg,
        ],
        tmp.path(),
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(run.result["kind"], "IndexError");
    assert_eq!(run.result["reason"], "SourceUnreadable");
    assert!(
        run.result["message"]
            .as_str()
            .expect("message")
            .contains("no-such-dir"),
        "{}",
        run.result
    );

    let corpus = tmp.path().join("corpus");
    index_support::write_corpus(&corpus);
    std::fs::write(corpus.join("binary.txt"), b"\x89PNG\r\n\x1a\n\xff\xfe\x00").expect("write");
    let run = run_cli(
        &[
            "--source",
            corpus.to_str().expect("utf8"),
            "--output",
            out_arg,
        ],
        tmp.path(),
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(run.result["reason"], "SourceUnreadable");
    assert!(
        run.result["message"]
            .as_str()
            .expect("message")
            .contains("binary.txt"),
        "{}",
        run.result
    );
    std::fs::remove_file(corpus.join("binary.txt")).expect("rm");

    std::os::unix::fs::symlink(tmp.path().join("gone.md"), corpus.join("dangling.md"))
        .expect("symlink");
    let run = run_cli(
        &[
            "--source",
            corpus.to_str().expect("utf8"),
            "--output",
            out_arg,
        ],
        tmp.path(),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.result["message"]
            .as_str()
            .expect("message")
            .contains("dangling.md"),
        "{}",
        run.result
    );

    assert!(
        published(&out).is_empty(),
        "nothing published: {:?}",
        published(&out)
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join("work"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn an_empty_corpus_is_an_error_naming_the_source() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("empty");
    std::fs::create_dir_all(corpus.join("sub")).expect("mkdir");
    std::fs::write(corpus.join("sub/blank.md"), "  \n\n").expect("write");
    std::fs::write(corpus.join("image.png"), b"\x89PNG").expect("write");
    let out = tmp.path().join("out");
    let run = run_cli(
        &[
            "--source",
            corpus.to_str().expect("utf8"),
            "--output",
            out.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(run.result["reason"], "EmptyCorpus");
    assert!(
        run.result["message"]
            .as_str()
            .expect("message")
            .contains(corpus.to_str().expect("utf8")),
        "{}",
        run.result
    );
    assert!(published(&out).is_empty());
}

#[test]
fn configmap_mounts_are_read_through_their_key_symlinks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The layout the kubelet writes: keys are symlinks into `..data`, itself a symlink.
    let mount = tmp.path().join("mount");
    let data = mount.join("..2026_01_01_00_00_00.000000000");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(
        data.join("faq.md"),
        "# FAQ\n\nRefunds are processed within five business days.",
    )
    .expect("write");
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.000000000", mount.join("..data"))
        .expect("symlink");
    std::os::unix::fs::symlink("..data/faq.md", mount.join("faq.md")).expect("symlink");
    let work = tmp.path().join("work");
    let result = index(&settings(&mount, &tmp.path().join("out"), None, &work));
    assert_eq!(result.documents, 1, "only the key, not the ..data copies");
    let revision = open(&result.location, &work);
    assert_eq!(revision.manifest().documents[0].id, "faq.md");
}

/// Serves `body` to the first `requests` HTTP requests on a loopback port.
fn serve_once(body: &'static str, requests: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.expect("connection");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/markdown\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    format!("http://127.0.0.1:{port}/handbook/refunds.md")
}

#[test]
fn http_sources_are_indexed_under_their_url() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = serve_once(
        "# Refund policy\n\nRefunds are paid within five business days.",
        1,
    );
    let work = tmp.path().join("work");
    let mut s = settings(tmp.path(), &tmp.path().join("out"), None, &work);
    s.sources = vec![url.parse().expect("url source")];
    let result = index(&s);
    assert_eq!(result.documents, 1);
    let revision = open(&result.location, &work);
    let doc = &revision.manifest().documents[0];
    assert_eq!(
        (doc.id.as_str(), doc.title.as_str()),
        (url.as_str(), "Refund policy")
    );
}
