//! Index revisions on a real Qdrant server. Runs only when `QDRANT_URL` names one (its gRPC port,
//! e.g. `QDRANT_URL=http://localhost:6334`, or `qdrant://localhost:6334`); `QDRANT_API_KEY` is
//! passed on. Without it the test prints that it did not run and passes: no server is available
//! in this project's CI or on the development VM (see docs/runtime-index.md).
//!
//! With a server it publishes a corpus as `<corpus>-<revision>` collections behind the alias
//! `<corpus>`, checks searches through the alias equal the archive's, edits a document and checks
//! reuse and the alias move, re-runs unchanged, and deletes what it created.
#![cfg(feature = "remote-qdrant")]

mod index_support;

use std::path::Path;

use hybrid_runtime::chunk::{ChunkStrategy, ChunkingConfig};
use hybrid_runtime::embed::Embedder;
use hybrid_runtime::index::progress::Progress;
use hybrid_runtime::index::revision::LoadedRevision;
use hybrid_runtime::index::{IndexResult, IndexSettings, build_revision};
use hybrid_runtime::source::Source;
use hybrid_runtime::store::EdgeStoreOptions;
use hybrid_runtime::store::remote::{QdrantLocation, RemoteStore};

fn server() -> Option<String> {
    let url = std::env::var("QDRANT_URL").ok()?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("qdrant://"))
        .unwrap_or(&url);
    Some(format!("qdrant://{}", rest.trim_end_matches('/')))
}

fn settings(corpus: &Path, output: &str, previous: Option<&str>, work: &Path) -> IndexSettings {
    IndexSettings {
        sources: vec![Source::Local(corpus.to_path_buf())],
        chunking: ChunkingConfig {
            strategy: ChunkStrategy::Markdown,
            size_tokens: 32,
            overlap_tokens: 8,
        },
        embedder: index_support::embedder_dir().display().to_string(),
        output: output.to_string(),
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

#[test]
fn revisions_are_collections_behind_a_moving_alias() {
    let Some(server) = server() else {
        eprintln!("QDRANT_URL is not set: remote Qdrant test NOT run");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    index_support::write_corpus(&corpus);
    let work = tmp.path().join("work");
    let name = format!("hybrid-test-{}", std::process::id());
    let alias = format!("{server}/{name}");

    let archive = index(&settings(
        &corpus,
        &tmp.path().join("out").display().to_string(),
        None,
        &work,
    ));
    let first = index(&settings(&corpus, &alias, None, &work));
    println!("first: {first:?}");
    assert_eq!(
        first.revision, archive.revision,
        "same inputs, same revision wherever published"
    );
    let expected = QdrantLocation::parse(&alias)
        .expect("alias location")
        .with_name(&format!("{name}-{}", first.revision));
    assert_eq!(first.location, expected.to_string());

    let embedder = Embedder::load(&index_support::embedder_dir()).expect("model");
    let local = open(&archive.location, &work);
    let remote = open(&alias, &work);
    assert_eq!(remote.revision(), first.revision);
    assert_eq!(remote.manifest(), local.manifest());
    for query in [
        "tallest volcano on Mars",
        "when is an invoice due",
        "rolling update max surge",
    ] {
        let q = embedder.embed(&[query]).expect("embeds").remove(0);
        let a = local.search(&q, 5).expect("local search");
        let b = remote.search(&q, 5).expect("remote search");
        assert_eq!(
            a.iter().map(|h| &h.payload).collect::<Vec<_>>(),
            b.iter().map(|h| &h.payload).collect::<Vec<_>>(),
            "{query}"
        );
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x.score - y.score).abs() < 1e-4,
                "{query}: {} vs {}",
                x.score,
                y.score
            );
        }
    }

    std::fs::write(
        corpus.join("pets/cats.md"),
        "# Caring for cats\n\nIndoor cats enjoy climbing trees and scratching posts.",
    )
    .expect("edit");
    let second = index(&settings(&corpus, &alias, Some(&alias), &work));
    println!("second: {second:?}");
    assert_ne!(second.revision, first.revision);
    assert!(second.reused > 0 && second.reembedded > 0 && second.reembedded < second.chunks);
    let moved = open(&alias, &work);
    assert_eq!(
        moved.revision(),
        second.revision,
        "alias moved to the new revision"
    );
    assert_eq!(
        remote.revision(),
        first.revision,
        "an open revision stays on its collection"
    );

    let again = index(&settings(&corpus, &alias, Some(&alias), &work));
    assert_eq!(again.revision, second.revision);
    assert_eq!(again.reembedded, 0);

    drop((local, remote, moved));
    for location in [&first.location, &second.location] {
        let parsed = QdrantLocation::parse(location).expect("location");
        let (store, _) = RemoteStore::open(&parsed).expect("collection exists");
        store.delete().expect("cleanup");
    }
}
