//! The embedded Qdrant vector store: persistence, exact search, HNSW recall.

use hybrid_runtime::store::{ChunkPayload, EdgeStore, EdgeStoreOptions, StoredChunk, VectorStore};

const DIM: usize = 64;

/// Deterministic pseudo-random unit vectors (xorshift), so failures reproduce.
fn vectors(count: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed.max(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    (0..count)
        .map(|_| {
            let v: Vec<f32> = (0..DIM).map(|_| next()).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect()
}

fn chunk(id: u64, vector: Vec<f32>) -> StoredChunk {
    StoredChunk {
        point_id: id,
        vector,
        payload: ChunkPayload {
            document_id: format!("doc-{}", id / 10),
            chunk_id: format!("doc-{}#{}", id / 10, id % 10),
            chunk_index: (id % 10) as usize,
            title: "Title".into(),
            source_uri: format!("file:///corpus/doc-{}", id / 10),
            section: id.is_multiple_of(2).then(|| "Intro".to_string()),
            text: format!("text of chunk {id}"),
        },
    }
}

#[test]
fn a_sealed_shard_reopens_with_identical_results_and_payloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = vectors(500, 7);
    let mut store =
        EdgeStore::create(dir.path(), DIM, EdgeStoreOptions::default()).expect("create");
    store
        .upsert(
            data.iter()
                .cloned()
                .enumerate()
                .map(|(i, v)| chunk(i as u64, v))
                .collect(),
        )
        .expect("upsert");
    store.seal().expect("seal");
    assert!(
        !store.uses_hnsw(),
        "500 points stay below the exact-search limit"
    );
    let queries = vectors(5, 99);
    let before: Vec<_> = queries
        .iter()
        .map(|q| store.search(q, 10).expect("search"))
        .collect();
    // A stored vector is its own nearest neighbour, with its payload intact.
    let hit = &store.search(&data[42], 1).expect("search")[0];
    assert_eq!(hit.point_id, 42);
    assert_eq!(hit.payload, chunk(42, vec![]).payload);
    assert!((hit.score - 1.0).abs() < 1e-5);
    drop(store);

    let reopened = EdgeStore::open(dir.path(), EdgeStoreOptions::default()).expect("open");
    assert_eq!(reopened.count().expect("count"), 500);
    let after: Vec<_> = queries
        .iter()
        .map(|q| reopened.search(q, 10).expect("search"))
        .collect();
    assert_eq!(before, after);
    let got = reopened.get(&[3, 1_000_000, 1]).expect("get");
    assert_eq!(
        got.iter().map(|c| c.point_id).collect::<Vec<_>>(),
        [3, 1],
        "unknown ids are left out, order kept"
    );
    assert_eq!(got[0].vector, data[3], "vectors come back bit-identical");
}

#[test]
fn wrong_dimension_and_top_k_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EdgeStore::create(dir.path(), DIM, EdgeStoreOptions::default()).expect("create");
    assert!(store.search(&[0.0; 3], 5).is_err());
    assert!(store.search(&[0.0; DIM], 0).is_err());
    assert!(store.upsert(vec![chunk(1, vec![0.5; 3])]).is_err());
}

#[test]
fn hnsw_above_the_size_threshold_keeps_recall_at_least_095() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EdgeStoreOptions {
        exact_search_limit: 1_000,
        ..EdgeStoreOptions::default()
    };
    let mut store = EdgeStore::create(dir.path(), DIM, options).expect("create");
    let data = vectors(4_000, 3);
    for (start, batch) in data.chunks(1_000).enumerate() {
        let points = batch
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, v)| chunk((start * 1_000 + i) as u64, v))
            .collect();
        store.upsert(points).expect("upsert");
    }
    store.seal().expect("seal");
    assert!(store.uses_hnsw());
    assert!(
        store.indexed_vectors().expect("info") > 0,
        "optimize built an HNSW index"
    );
    let queries = vectors(50, 1234);
    let k = 10;
    let mut found = 0;
    for q in &queries {
        let exact: Vec<u64> = store
            .search_exact(q, k)
            .expect("exact")
            .iter()
            .map(|h| h.point_id)
            .collect();
        let approx = store.search(q, k).expect("hnsw");
        found += approx
            .iter()
            .filter(|h| exact.contains(&h.point_id))
            .count();
    }
    let recall = found as f64 / (queries.len() * k) as f64;
    println!("recall@{k} with HNSW = {recall:.3}");
    assert!(recall >= 0.95, "recall@{k} = {recall}");
}
