//! Answer scoring in the style of SQuAD: compare after lower-casing and dropping punctuation,
//! the articles a/an/the and extra whitespace.

use std::collections::HashMap;

pub fn normalize(text: &str) -> String {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() || c == '.' || c == '%' {
                c
            } else {
                ' '
            }
        })
        .collect();
    lowered
        .split_whitespace()
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty() && !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn exact_match(prediction: &str, gold: &str) -> bool {
    normalize(prediction) == normalize(gold)
}

/// Harmonic mean of token precision and recall over the normalised bags of words.
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let p = normalize(prediction);
    let g = normalize(gold);
    let p: Vec<&str> = p.split_whitespace().collect();
    let g: Vec<&str> = g.split_whitespace().collect();
    if p.is_empty() || g.is_empty() {
        return if p.is_empty() && g.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &g {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0usize;
    for w in &p {
        if let Some(c) = counts.get_mut(w)
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Whether the normalised gold answer appears, word-aligned, in the normalised prediction.
pub fn contains_answer(prediction: &str, gold: &str) -> bool {
    let g = normalize(gold);
    !g.is_empty() && format!(" {} ", normalize(prediction)).contains(&format!(" {g} "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_ignores_case_articles_and_punctuation() {
        assert_eq!(
            normalize("The  Rate was 4.25%, (from 4.50%)."),
            "rate was 4.25% from 4.50%"
        );
        assert!(exact_match("The Paris!", "paris"));
        assert!(!exact_match("Paris, France", "Paris"));
    }

    #[test]
    fn f1_rewards_partial_overlap() {
        assert_eq!(token_f1("Paris", "Paris"), 1.0);
        assert_eq!(token_f1("London", "Paris"), 0.0);
        let f = token_f1("the rate is 4.25%", "4.25% (from 4.50%)");
        // common {4.25%}: precision 1/3, recall 1/3.
        assert!((f - 1.0 / 3.0).abs() < 1e-9, "{f}");
    }

    #[test]
    fn containment_is_word_aligned() {
        assert!(contains_answer("It closed at 3.62% in March.", "3.62%"));
        assert!(!contains_answer("It closed at 13.62% in March.", "3.62%"));
        assert!(!contains_answer("anything", ""));
    }
}
