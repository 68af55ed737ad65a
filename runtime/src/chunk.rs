//! Splitting documents into embedding-sized chunks.
//!
//! Sizes are counted in the embedder's own tokens, so a chunk of `size_tokens` always fits the
//! model's window. Three strategies:
//! - `fixed`: windows of `size_tokens` tokens, each starting `size_tokens - overlap_tokens` after
//!   the previous one;
//! - `sentence`: whole sentences packed greedily up to `size_tokens`, with trailing sentences of the
//!   previous chunk repeated (up to `overlap_tokens`) at the start of the next;
//! - `markdown`: Markdown blocks (paragraphs, lists, code blocks, tables) packed the same way, never
//!   across a heading, and each chunk remembers the heading path it sits under.
//!
//! A single sentence or block longer than `size_tokens` falls back to fixed windows. Chunking is a
//! pure function of the text and the config, which is what makes revision ids deterministic.

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

/// Largest chunk the BERT-family embedders accept: 512 positions minus `[CLS]` and `[SEP]`.
pub const MAX_CHUNK_TOKENS: usize = 510;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChunkStrategy {
    Fixed,
    Sentence,
    #[default]
    Markdown,
}

impl std::str::FromStr for ChunkStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "sentence" => Ok(Self::Sentence),
            "markdown" => Ok(Self::Markdown),
            other => Err(format!(
                "unknown chunking strategy {other:?} (expected fixed, sentence or markdown)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkingConfig {
    #[serde(default)]
    pub strategy: ChunkStrategy,
    #[serde(default = "default_size")]
    pub size_tokens: usize,
    #[serde(default = "default_overlap")]
    pub overlap_tokens: usize,
}

fn default_size() -> usize {
    256
}
fn default_overlap() -> usize {
    32
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            strategy: ChunkStrategy::default(),
            size_tokens: default_size(),
            overlap_tokens: default_overlap(),
        }
    }
}

impl ChunkingConfig {
    /// Checks the sizes; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.size_tokens == 0 || self.size_tokens > MAX_CHUNK_TOKENS {
            return Err(format!(
                "chunking.sizeTokens must be between 1 and {MAX_CHUNK_TOKENS}, got {}",
                self.size_tokens
            ));
        }
        if self.overlap_tokens >= self.size_tokens {
            return Err(format!(
                "chunking.overlapTokens ({}) must be smaller than chunking.sizeTokens ({})",
                self.overlap_tokens, self.size_tokens
            ));
        }
        Ok(())
    }
}

/// Byte spans of the tokens of a text, in order, without special tokens.
pub trait TokenSpans {
    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, String>;
}

/// One chunk of a document: its text is a verbatim slice `[start, end)` of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub index: usize,
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// Heading path (`Intro > Setup`) for the markdown strategy.
    pub section: Option<String>,
    pub tokens: usize,
}

/// A run of text that should stay whole if it fits (a sentence, a block), with its token range.
#[derive(Debug, Clone)]
struct Unit {
    first_token: usize,
    end_token: usize,
    section: Option<usize>,
}

/// Chunks `text`. Documents with no tokens give no chunks.
pub fn chunk_text(
    text: &str,
    config: &ChunkingConfig,
    tokenizer: &dyn TokenSpans,
) -> Result<Vec<Chunk>, String> {
    config.validate()?;
    let spans = tokenizer.token_spans(text)?;
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    let (units, sections) = match config.strategy {
        ChunkStrategy::Fixed => (
            vec![Unit {
                first_token: 0,
                end_token: spans.len(),
                section: None,
            }],
            Vec::new(),
        ),
        ChunkStrategy::Sentence => (sentence_units(text, &spans), Vec::new()),
        ChunkStrategy::Markdown => markdown_units(text, &spans),
    };
    let mut ranges: Vec<(usize, usize, Option<usize>)> = Vec::new();
    pack(&units, config, &mut ranges);
    Ok(ranges
        .into_iter()
        .enumerate()
        .map(|(index, (first, end, section))| {
            let start = spans[first].0;
            let stop = spans[end - 1].1;
            Chunk {
                index,
                start,
                end: stop,
                text: text[start..stop].to_string(),
                section: section.and_then(|s| sections.get(s).cloned()),
                tokens: end - first,
            }
        })
        .collect())
}

/// Index of the first token whose span starts at or after `byte`.
fn token_at(spans: &[(usize, usize)], byte: usize) -> usize {
    spans.partition_point(|&(start, _)| start < byte)
}

fn sentence_units(text: &str, spans: &[(usize, usize)]) -> Vec<Unit> {
    let mut units = Vec::new();
    for (offset, sentence) in text.split_sentence_bound_indices() {
        let first_token = token_at(spans, offset);
        let end_token = token_at(spans, offset + sentence.len());
        if end_token > first_token {
            units.push(Unit {
                first_token,
                end_token,
                section: None,
            });
        }
    }
    units
}

/// Top-level Markdown blocks with the index of the heading path each sits under. A heading starts
/// a new section; the heading itself is the first unit of its section.
fn markdown_units(text: &str, spans: &[(usize, usize)]) -> (Vec<Unit>, Vec<String>) {
    let mut units = Vec::new();
    let mut sections: Vec<String> = Vec::new();
    let mut path: Vec<(HeadingLevel, String)> = Vec::new();
    let mut current_section: Option<usize> = None;
    let mut depth = 0usize;
    let mut heading: Option<(HeadingLevel, String)> = None;
    let mut heading_units = 0usize;
    for (event, range) in Parser::new(text).into_offset_iter() {
        match event {
            Event::Start(tag) => {
                if let Tag::Heading { level, .. } = tag {
                    heading = Some((level, String::new()));
                    heading_units = units.len();
                }
                if depth == 0 {
                    push_unit(&mut units, spans, range.start, range.end, current_section);
                }
                depth += 1;
            }
            Event::End(tag_end) => {
                depth = depth.saturating_sub(1);
                if let (TagEnd::Heading(_), Some((level, title))) = (tag_end, heading.take()) {
                    path.retain(|(l, _)| *l < level);
                    path.push((level, title.trim().to_string()));
                    sections.push(
                        path.iter()
                            .map(|(_, t)| t.as_str())
                            .collect::<Vec<_>>()
                            .join(" > "),
                    );
                    current_section = Some(sections.len() - 1);
                    // The heading belongs to the section it opens.
                    for unit in &mut units[heading_units..] {
                        unit.section = current_section;
                    }
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, title)) = heading.as_mut() {
                    title.push_str(&t);
                }
                if depth == 0 {
                    push_unit(&mut units, spans, range.start, range.end, current_section);
                }
            }
            _ if depth == 0 => {
                push_unit(&mut units, spans, range.start, range.end, current_section)
            }
            _ => {}
        }
    }
    (units, sections)
}

fn push_unit(
    units: &mut Vec<Unit>,
    spans: &[(usize, usize)],
    start: usize,
    end: usize,
    section: Option<usize>,
) {
    let first_token = token_at(spans, start);
    let end_token = token_at(spans, end);
    if end_token > first_token {
        units.push(Unit {
            first_token,
            end_token,
            section,
        });
    }
}

/// Greedy packing of whole units into chunks of at most `size_tokens`, never mixing sections.
fn pack(units: &[Unit], config: &ChunkingConfig, out: &mut Vec<(usize, usize, Option<usize>)>) {
    let size = config.size_tokens;
    let overlap = config.overlap_tokens;
    let mut i = 0;
    while i < units.len() {
        let unit = &units[i];
        let len = unit.end_token - unit.first_token;
        if len > size {
            fixed_windows(unit.first_token, unit.end_token, config, unit.section, out);
            i += 1;
            continue;
        }
        // Start with trailing units of the previous chunk (same section) as overlap.
        let mut first = i;
        let mut carried = 0;
        if overlap > 0 && out.last().is_some_and(|last| last.2 == unit.section) {
            let last_end = out.last().map_or(0, |last| last.1);
            while first > 0 {
                let prev = &units[first - 1];
                let prev_len = prev.end_token - prev.first_token;
                if prev.section != unit.section
                    || prev.end_token > last_end
                    || carried + prev_len > overlap
                    || carried + prev_len + len > size
                {
                    break;
                }
                carried += prev_len;
                first -= 1;
            }
        }
        let start_token = units[first].first_token;
        let mut end = i;
        while end < units.len()
            && units[end].section == unit.section
            && units[end].end_token - units[end].first_token <= size
            && units[end].end_token - start_token <= size
        {
            end += 1;
        }
        out.push((start_token, units[end - 1].end_token, unit.section));
        i = end;
    }
}

fn fixed_windows(
    first: usize,
    end: usize,
    config: &ChunkingConfig,
    section: Option<usize>,
    out: &mut Vec<(usize, usize, Option<usize>)>,
) {
    let step = config.size_tokens - config.overlap_tokens;
    let mut start = first;
    loop {
        let stop = (start + config.size_tokens).min(end);
        out.push((start, stop, section));
        if stop == end {
            break;
        }
        start += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whitespace tokenizer: one token per word, so sizes are easy to reason about.
    struct Words;
    impl TokenSpans for Words {
        fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, String> {
            let mut spans = Vec::new();
            let mut start = None;
            for (i, c) in text.char_indices() {
                match (c.is_whitespace(), start) {
                    (false, None) => start = Some(i),
                    (true, Some(s)) => {
                        spans.push((s, i));
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                spans.push((s, text.len()));
            }
            Ok(spans)
        }
    }

    fn cfg(strategy: ChunkStrategy, size: usize, overlap: usize) -> ChunkingConfig {
        ChunkingConfig {
            strategy,
            size_tokens: size,
            overlap_tokens: overlap,
        }
    }

    #[test]
    fn fixed_windows_respect_size_and_overlap() {
        let text = (0..10)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_text(&text, &cfg(ChunkStrategy::Fixed, 4, 1), &Words).expect("chunks");
        let texts: Vec<_> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]);
        assert!(chunks.iter().all(|c| c.tokens <= 4));
    }

    #[test]
    fn sentences_stay_whole_and_overlap_by_whole_sentences() {
        let text = "One two three. Four five. Six seven eight. Nine.";
        let chunks = chunk_text(text, &cfg(ChunkStrategy::Sentence, 6, 2), &Words).expect("chunks");
        let texts: Vec<_> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "One two three. Four five.",
                "Four five. Six seven eight. Nine."
            ]
        );
        for c in &chunks {
            assert!(c.tokens <= 6, "{c:?}");
            assert!(
                c.text.ends_with('.'),
                "chunk cut inside a sentence: {:?}",
                c.text
            );
        }
        assert_eq!(chunks[1].tokens, 6, "overlap is counted in the chunk size");
    }

    #[test]
    fn markdown_chunks_never_cross_headings_and_carry_the_heading_path() {
        let text = "# Guide\n\nIntro words here.\n\n## Install\n\nRun the installer now.\n\n```\ncode block\n\nstill code\n```\n\n## Use\n\nCall it.\n";
        let chunks =
            chunk_text(text, &cfg(ChunkStrategy::Markdown, 50, 0), &Words).expect("chunks");
        let sections: Vec<_> = chunks
            .iter()
            .map(|c| c.section.clone().unwrap_or_default())
            .collect();
        assert_eq!(sections, ["Guide", "Guide > Install", "Guide > Use"]);
        assert!(chunks[1].text.starts_with("## Install"));
        assert!(
            chunks[1].text.contains("still code\n```"),
            "code block kept whole: {:?}",
            chunks[1].text
        );
        assert!(!chunks[1].text.contains("Call it"));
    }

    #[test]
    fn oversized_blocks_fall_back_to_windows() {
        let para = (0..25)
            .map(|i| format!("x{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks =
            chunk_text(&para, &cfg(ChunkStrategy::Markdown, 10, 0), &Words).expect("chunks");
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.tokens <= 10));
    }

    #[test]
    fn chunking_is_deterministic_and_empty_text_gives_nothing() {
        let text = "A b c. D e f g. H.\n\nI j k.";
        let config = cfg(ChunkStrategy::Sentence, 5, 1);
        assert_eq!(
            chunk_text(text, &config, &Words),
            chunk_text(text, &config, &Words)
        );
        assert!(chunk_text("   \n", &config, &Words).expect("ok").is_empty());
    }

    #[test]
    fn invalid_sizes_name_the_field() {
        let err = cfg(ChunkStrategy::Fixed, 8, 8)
            .validate()
            .expect_err("overlap >= size");
        assert!(err.contains("overlapTokens"), "{err}");
        let err = cfg(ChunkStrategy::Fixed, 600, 0)
            .validate()
            .expect_err("too large");
        assert!(err.contains("sizeTokens"), "{err}");
    }
}
