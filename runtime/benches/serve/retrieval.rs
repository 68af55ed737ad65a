//! Search latency and HNSW recall of the embedded Qdrant store at 10k and 100k chunks.
//!
//! Vectors are synthetic: embedding 100k real chunks takes about an hour on two cores. They are
//! 384-d, unit length, with the cluster structure of text embeddings: `CLUSTERS` random unit
//! centres (one per "topic"); each point is its centre plus isotropic Gaussian noise of
//! per-dimension σ = `NOISE`, renormalised (cosine to its centre ≈ 0.7, to another centre ≈ 0).
//! Queries are fresh points drawn the same way, not in the store. Everything is seeded
//! (ChaCha8, `SEED`), so every run searches the same data.

use std::path::Path;
use std::time::Instant;

use hybrid_runtime::store::{
    ChunkPayload, DEFAULT_HNSW_EF, EdgeStore, EdgeStoreOptions, StoredChunk, VectorStore,
};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde_json::json;

use crate::common::quantile;

const DIM: usize = 384;
const CLUSTERS: usize = 500;
const NOISE: f32 = 0.05;
const SEED: u64 = 7;
const QUERIES: usize = 200;
const TOP_K: usize = 10;
const SIZES: [usize; 2] = [10_000, 100_000];
/// Beam widths compared with the shipped one (recall vs latency).
const EXTRA_EF: [usize; 2] = [64, 128];

struct Clustered {
    rng: rand_chacha::ChaCha8Rng,
    centres: Vec<Vec<f32>>,
    noise: Normal<f32>,
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

impl Clustered {
    fn new() -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
        let unit = Normal::new(0f32, 1.0).expect("normal");
        let centres = (0..CLUSTERS)
            .map(|_| {
                let mut c: Vec<f32> = (0..DIM).map(|_| unit.sample(&mut rng)).collect();
                normalise(&mut c);
                c
            })
            .collect();
        Self {
            rng,
            centres,
            noise: Normal::new(0f32, NOISE).expect("normal"),
        }
    }

    fn point(&mut self) -> Vec<f32> {
        let c = rand::Rng::random_range(&mut self.rng, 0..CLUSTERS);
        let mut v: Vec<f32> = self.centres[c]
            .iter()
            .map(|x| x + self.noise.sample(&mut self.rng))
            .collect();
        normalise(&mut v);
        v
    }
}

fn payload(id: u64) -> ChunkPayload {
    ChunkPayload {
        document_id: format!("doc-{}", id / 8),
        chunk_id: format!("doc-{}#{}", id / 8, id % 8),
        chunk_index: (id % 8) as usize,
        title: "synthetic".into(),
        source_uri: format!("synthetic://{id}"),
        section: None,
        text: "synthetic chunk".into(),
    }
}

fn latencies(
    queries: &[Vec<f32>],
    search: impl Fn(&[f32]) -> Vec<u64>,
) -> (Vec<f64>, Vec<Vec<u64>>) {
    for q in queries.iter().take(10) {
        search(q);
    }
    let mut ms = Vec::with_capacity(queries.len());
    let mut hits = Vec::with_capacity(queries.len());
    for q in queries {
        let start = Instant::now();
        hits.push(search(q));
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    (ms, hits)
}

fn recall(approx: &[Vec<u64>], exact: &[Vec<u64>]) -> f64 {
    let found: usize = approx
        .iter()
        .zip(exact)
        .map(|(a, e)| a.iter().filter(|id| e.contains(id)).count())
        .sum();
    found as f64 / exact.iter().map(Vec::len).sum::<usize>().max(1) as f64
}

pub fn run(out: &Path) {
    println!(
        "\n== retrieval: EdgeStore, synthetic clustered 384-d vectors ({CLUSTERS} clusters, σ {NOISE}, seed {SEED}), {QUERIES} queries, top-{TOP_K}"
    );
    let mut vectors = Clustered::new();
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| vectors.point()).collect();
    let mut points: Vec<Vec<f32>> = Vec::new();
    let mut results = Vec::new();
    for size in SIZES {
        while points.len() < size {
            points.push(vectors.point());
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("shard");
        // Force the HNSW graph at both sizes (the shipped store would scan below 20k points);
        // exact search on the same shard is the reference.
        let build_options = EdgeStoreOptions {
            exact_search_limit: 1_000,
            hnsw_ef: DEFAULT_HNSW_EF,
        };
        let start = Instant::now();
        let mut store = EdgeStore::create(&dir, DIM, build_options).expect("create store");
        for (b, batch) in points.chunks(5_000).enumerate() {
            let chunks = batch
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let id = (b * 5_000 + i) as u64;
                    StoredChunk {
                        point_id: id,
                        vector: v.clone(),
                        payload: payload(id),
                    }
                })
                .collect();
            store.upsert(chunks).expect("upsert");
        }
        let upsert_s = start.elapsed().as_secs_f64();
        store.seal().expect("seal (builds HNSW)");
        let build_s = start.elapsed().as_secs_f64();
        println!(
            "{size} points: upsert {upsert_s:.1} s, upsert + HNSW build {build_s:.1} s, indexed vectors {}",
            store.indexed_vectors().unwrap_or_default()
        );
        let ids = |hits: Vec<hybrid_runtime::store::SearchHit>| -> Vec<u64> {
            hits.into_iter().map(|h| h.point_id).collect()
        };
        let (exact_ms, exact_hits) = latencies(&queries, |q| {
            ids(store.search_exact(q, TOP_K).expect("exact"))
        });
        println!(
            "  exact        p50 {:.2} ms  p99 {:.2} ms",
            quantile(&exact_ms, 0.5),
            quantile(&exact_ms, 0.99)
        );
        let mut row = json!({
            "points": size, "upsert_s": upsert_s, "build_s": build_s,
            "exact": { "p50_ms": quantile(&exact_ms, 0.5), "p99_ms": quantile(&exact_ms, 0.99) },
            "hnsw": [],
        });
        drop(store);
        for ef in std::iter::once(DEFAULT_HNSW_EF).chain(EXTRA_EF) {
            let store = EdgeStore::open(
                &dir,
                EdgeStoreOptions {
                    exact_search_limit: 1_000,
                    hnsw_ef: ef,
                },
            )
            .expect("reopen store");
            let (ms, hits) = latencies(&queries, |q| ids(store.search(q, TOP_K).expect("hnsw")));
            let r = recall(&hits, &exact_hits);
            let shipped = if ef == DEFAULT_HNSW_EF {
                " (shipped)"
            } else {
                ""
            };
            println!(
                "  HNSW ef {ef:<4} p50 {:.2} ms  p99 {:.2} ms  recall@{TOP_K} {r:.3}{shipped}",
                quantile(&ms, 0.5),
                quantile(&ms, 0.99)
            );
            if let Some(list) = row["hnsw"].as_array_mut() {
                list.push(json!({ "ef": ef, "p50_ms": quantile(&ms, 0.5),
                    "p99_ms": quantile(&ms, 0.99), "recall_at_10": r }));
            }
        }
        results.push(row);
    }
    crate::common::write_json(
        &out.join("retrieval.json"),
        &json!({ "clusters": CLUSTERS, "noise_sigma": NOISE, "seed": SEED, "queries": QUERIES,
                 "top_k": TOP_K, "sizes": results }),
    );
}
