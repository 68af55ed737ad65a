//! The embedder against the published sentence-transformers reference values.

mod index_support;

use hybrid_runtime::embed::{Embedder, cosine};

#[test]
fn cosine_similarities_match_the_published_reference() {
    let embedder = Embedder::load(&index_support::embedder_dir()).expect("model loads");
    assert_eq!(embedder.dimension(), 384);
    let v = embedder
        .embed(&[
            "The new movie is awesome",
            "The new movie is so great",
            "The cat sits outside",
            "The dog plays in the garden",
        ])
        .expect("embeds");
    // sentence-transformers/all-MiniLM-L6-v2 reference values: 0.8939 and 0.2838.
    let similar = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[2], &v[3]);
    assert!(
        (similar - 0.8939).abs() < 0.002,
        "cos(movie, movie) = {similar}"
    );
    assert!(
        (unrelated - 0.2838).abs() < 0.002,
        "cos(cat, dog) = {unrelated}"
    );
    for e in &v {
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
    }
}

#[test]
fn padding_does_not_change_an_embedding() {
    let embedder = Embedder::load(&index_support::embedder_dir()).expect("model loads");
    let short = "Short text.";
    let long = "A much longer sentence that forces the short one in the same batch to be padded with many tokens.";
    let alone = embedder.embed(&[short]).expect("embeds");
    let batched = embedder.embed(&[long, short]).expect("embeds");
    let drift = alone[0]
        .iter()
        .zip(&batched[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        drift < 1e-4,
        "masked pooling must ignore padding; max drift {drift}"
    );
}

#[test]
fn inputs_longer_than_the_model_window_are_truncated_not_rejected() {
    let embedder = Embedder::load(&index_support::embedder_dir()).expect("model loads");
    let long = "word ".repeat(2_000);
    assert!(embedder.count_tokens(&long).expect("tokenizes") > 512);
    let v = embedder.embed(&[&long]).expect("embeds");
    assert_eq!(v[0].len(), 384);
}
