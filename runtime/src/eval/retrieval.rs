//! Retrieval scoring: which supporting documents the top-k passages came from, and the RAG prompt
//! the model is asked with.

use crate::store::SearchHit;

/// Whether an index document id names the supporting document `wanted` of a QA item.
///
/// QA sets name documents the way people do, by file stem (`rates-outlook-q1-2026`), while the
/// index uses its document ids (`rates-outlook-q1-2026.md`, `notes/x.md`, `s3://b/notes/x.md`).
/// A document matches when its id, its id without the extension, its last path segment or that
/// segment without the extension equals `wanted`.
pub fn document_matches(document_id: &str, wanted: &str) -> bool {
    let last = document_id.rsplit('/').next().unwrap_or(document_id);
    document_id == wanted
        || strip_extension(document_id) == wanted
        || last == wanted
        || strip_extension(last) == wanted
}

fn strip_extension(id: &str) -> &str {
    let last_start = id.rfind('/').map_or(0, |i| i + 1);
    match id[last_start..].rfind('.') {
        Some(dot) if dot > 0 => &id[..last_start + dot],
        _ => id,
    }
}

/// Document ids of the hits, best first, each once.
pub fn ranked_documents(hits: &[SearchHit]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for hit in hits {
        if !out.contains(&hit.payload.document_id) {
            out.push(hit.payload.document_id.clone());
        }
    }
    out
}

/// Share of `supporting` found among the documents of the first `k` hits (`None` when the item
/// names no supporting document).
pub fn recall_at(hits: &[SearchHit], supporting: &[String], k: usize) -> Option<f64> {
    if supporting.is_empty() {
        return None;
    }
    let top = &hits[..k.min(hits.len())];
    let found = supporting
        .iter()
        .filter(|s| {
            top.iter()
                .any(|h| document_matches(&h.payload.document_id, s))
        })
        .count();
    Some(found as f64 / supporting.len() as f64)
}

/// Default user turn with retrieved context, in the layout the example datasets train on.
pub const DEFAULT_PROMPT_TEMPLATE: &str = "Context:\n{context}\n\nQuestion: {question}";

/// Renders the user turn: `{context}` becomes the passages as `[n] text` lines (whitespace
/// collapsed, so a passage is one line), `{question}` the question.
pub fn render_prompt(template: &str, question: &str, passages: &[SearchHit]) -> String {
    let context = passages
        .iter()
        .enumerate()
        .map(|(i, hit)| {
            let text = hit.payload.text.split_whitespace().collect::<Vec<_>>();
            format!("[{}] {}", i + 1, text.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n");
    template
        .replace("{context}", &context)
        .replace("{question}", question)
}

/// Checks a prompt template has both placeholders.
pub fn validate_template(template: &str) -> Result<(), String> {
    for key in ["{context}", "{question}"] {
        if !template.contains(key) {
            return Err(format!("--prompt-template must contain {key}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChunkPayload;

    fn hit(document: &str, text: &str) -> SearchHit {
        SearchHit {
            point_id: 0,
            score: 1.0,
            payload: ChunkPayload {
                document_id: document.into(),
                chunk_id: format!("{document}#0"),
                chunk_index: 0,
                title: String::new(),
                source_uri: String::new(),
                section: None,
                text: text.into(),
            },
        }
    }

    #[test]
    fn documents_match_by_id_stem_or_last_segment() {
        assert!(document_matches("rates-outlook.md", "rates-outlook"));
        assert!(document_matches("rates-outlook.md", "rates-outlook.md"));
        assert!(document_matches("notes/rates.md", "notes/rates"));
        assert!(document_matches("notes/rates.md", "rates"));
        assert!(document_matches("s3://bucket/notes/rates.md", "rates"));
        assert!(document_matches("https://x.example/a/rates", "rates"));
        assert!(!document_matches("rates-outlook.md", "rates"));
        assert!(!document_matches("notes/rates.md", "notes"));
        assert!(!document_matches(".hidden", ""));
    }

    #[test]
    fn recall_counts_supporting_documents_in_the_top_k() {
        let hits = [
            hit("a.md", ""),
            hit("b.md", ""),
            hit("a.md", ""),
            hit("c.md", ""),
        ];
        let both = ["b".to_string(), "c".to_string()];
        assert_eq!(recall_at(&hits, &both, 1), Some(0.0));
        assert_eq!(recall_at(&hits, &both, 2), Some(0.5));
        assert_eq!(recall_at(&hits, &both, 4), Some(1.0));
        assert_eq!(recall_at(&hits, &both, 10), Some(1.0), "k beyond the hits");
        assert_eq!(recall_at(&hits, &[], 4), None);
        assert_eq!(ranked_documents(&hits), ["a.md", "b.md", "c.md"]);
    }

    #[test]
    fn prompt_numbers_passages_on_single_lines() {
        let prompt = render_prompt(
            DEFAULT_PROMPT_TEMPLATE,
            "Why?",
            &[
                hit("a.md", "## Rates\n\nThe rate\nfell."),
                hit("b.md", "Other"),
            ],
        );
        assert_eq!(
            prompt,
            "Context:\n[1] ## Rates The rate fell.\n[2] Other\n\nQuestion: Why?"
        );
        assert!(validate_template("{question}").is_err());
        assert!(validate_template("{context} {question}").is_ok());
    }
}
