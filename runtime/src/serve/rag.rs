//! Retrieval-augmented prompting, independent of HTTP: search every loaded index for a question,
//! keep the best passages, and put them into the user's turn through the prompt template.

use std::sync::Arc;

use super::config::MAX_TOP_K;
use super::metrics::Metrics;
use super::state::{LoadedIndex, Snapshot};
use crate::embed::EmbedError;
use crate::store::{SearchHit, StoreError};

/// Filtered searches over-fetch this many times `top_k` before filtering (the filter is applied
/// to the hits, not inside the vector search).
const FILTER_OVERFETCH: usize = 8;

/// Default prompt around retrieved passages when the config has no `promptTemplate`.
pub const DEFAULT_PROMPT_TEMPLATE: &str = "Answer the question using the numbered passages below. \
Cite the passages you use as [1], [2].\n\n{context}\n\nQuestion: {question}";

/// A passage found for a question, with the index it came from.
pub struct Found {
    pub index: Arc<LoadedIndex>,
    pub hit: SearchHit,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("the embedder returned no vector")]
    NoVector,
    #[error(transparent)]
    Search(#[from] StoreError),
}

/// A per-request passage count outside what the server allows.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("retrieval.top_k must be between 1 and {MAX_TOP_K}, got {got}")]
pub struct TopKOutOfRange {
    pub got: usize,
}

/// Passages per index: the request's `top_k`, else the config's.
pub fn top_k(requested: Option<usize>, default: usize) -> Result<usize, TopKOutOfRange> {
    let k = requested.unwrap_or(default);
    if !(1..=MAX_TOP_K).contains(&k) {
        return Err(TopKOutOfRange { got: k });
    }
    Ok(k)
}

/// Embeds `query` once per embedder and searches every loaded index: `top_k` from each, best
/// first within each index. A non-empty `documents` keeps only passages of those document ids.
pub fn search_indexes(
    snapshot: &Snapshot,
    metrics: &Metrics,
    query: &str,
    top_k: usize,
    documents: &[String],
) -> Result<Vec<Vec<Found>>, SearchError> {
    let mut vectors: Vec<(String, Vec<f32>)> = Vec::new();
    let mut out = Vec::new();
    for index in &snapshot.indexes {
        let vector = match vectors.iter().find(|(p, _)| *p == index.embedder_path) {
            Some((_, v)) => v.clone(),
            None => {
                let timer = metrics.embedding_duration.start_timer();
                let v = index
                    .embedder
                    .embed(&[query])?
                    .into_iter()
                    .next()
                    .ok_or(SearchError::NoVector)?;
                timer.observe_duration();
                vectors.push((index.embedder_path.clone(), v.clone()));
                v
            }
        };
        let timer = metrics.retrieval_duration.start_timer();
        let filtering = !documents.is_empty();
        let fetch = match filtering {
            true => (top_k * FILTER_OVERFETCH).min(crate::store::MAX_SEARCH_HITS),
            false => top_k,
        };
        let hits = index.index.search(&vector, fetch)?;
        timer.observe_duration();
        let found = hits
            .into_iter()
            .filter(|h| !filtering || documents.contains(&h.payload.document_id))
            .take(top_k)
            .map(|hit| Found {
                index: index.clone(),
                hit,
            })
            .collect();
        out.push(found);
    }
    Ok(out)
}

/// The `top_k` best passages over all indexes, best first (ties keep index order).
pub fn best(per_index: Vec<Vec<Found>>, top_k: usize) -> Vec<Found> {
    let mut found: Vec<Found> = per_index.into_iter().flatten().collect();
    found.sort_by(|a, b| b.hit.score.total_cmp(&a.hit.score));
    found.truncate(top_k);
    found
}

/// The user's turn with `passages` numbered `[1]`, `[2]` … in `template` (its `{context}` and
/// `{question}`), or [`DEFAULT_PROMPT_TEMPLATE`]. Citations use the same numbers.
pub fn augment(template: Option<&str>, passages: &[Found], question: &str) -> String {
    let mut context = String::new();
    for (n, f) in passages.iter().enumerate() {
        let p = &f.hit.payload;
        context.push_str(&format!("[{}] {}\n{}\n\n", n + 1, p.title, p.text.trim()));
    }
    template
        .unwrap_or(DEFAULT_PROMPT_TEMPLATE)
        .replace("{context}", context.trim_end())
        .replace("{question}", question)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_defaults_and_stays_in_range() {
        assert_eq!(top_k(None, 5), Ok(5));
        assert_eq!(top_k(Some(MAX_TOP_K), 5), Ok(MAX_TOP_K));
        assert_eq!(top_k(Some(0), 5), Err(TopKOutOfRange { got: 0 }));
        let e = top_k(Some(MAX_TOP_K + 1), 5).expect_err("over the limit");
        assert!(
            e.to_string()
                .starts_with("retrieval.top_k must be between 1 and")
        );
    }
}
