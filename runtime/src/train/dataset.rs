//! JSONL chat datasets: one `{"messages":[{"role":..,"content":..},..]}` object per line.

use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::TrainError;
use crate::chat::{ChatTemplate, Message, Role};

#[derive(Debug, Deserialize)]
struct Line {
    messages: Vec<Message>,
}

/// One tokenized conversation.
#[derive(Debug, Clone)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Per token: whether the model is trained to predict it (assistant turns only).
    pub targets: Vec<bool>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStats {
    pub examples: usize,
    pub skipped_overlong: usize,
    pub blank_lines: usize,
    /// sha256 of each file's bytes, in the order given.
    pub file_digests: Vec<String>,
}

pub struct LoadOptions<'a> {
    pub tokenizer: &'a Tokenizer,
    pub template: &'a ChatTemplate,
    pub max_seq_len: usize,
    pub skip_overlong: bool,
}

/// Reads, validates and tokenizes every line of every file. Blank lines are ignored; any other
/// line that is not a valid example fails the whole load with its file and line number.
pub fn load(
    paths: &[PathBuf],
    opts: &LoadOptions<'_>,
) -> Result<(Vec<Example>, DatasetStats), TrainError> {
    let mut examples = Vec::new();
    let mut stats = DatasetStats::default();
    for path in paths {
        let bytes = read_dataset(path).map_err(|detail| TrainError::DatasetUnreadable {
            path: path.clone(),
            detail,
        })?;
        stats.file_digests.push(hex::encode(Sha256::digest(&bytes)));
        let text = String::from_utf8(bytes).map_err(|e| TrainError::DatasetUnreadable {
            path: path.clone(),
            detail: format!("not UTF-8: {e}"),
        })?;
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            if raw.trim().is_empty() {
                stats.blank_lines += 1;
                continue;
            }
            let malformed = |detail: String| TrainError::MalformedExample {
                path: path.clone(),
                line,
                detail,
            };
            let parsed: Line = serde_json::from_str(raw).map_err(|e| malformed(e.to_string()))?;
            validate(&parsed.messages).map_err(malformed)?;
            let (ids, targets) = opts
                .template
                .encode_for_training(opts.tokenizer, &parsed.messages)
                .map_err(malformed)?;
            if ids.len() > opts.max_seq_len {
                if opts.skip_overlong {
                    stats.skipped_overlong += 1;
                    continue;
                }
                return Err(TrainError::ExampleTooLong {
                    path: path.clone(),
                    line,
                    tokens: ids.len(),
                    max: opts.max_seq_len,
                });
            }
            examples.push(Example { ids, targets });
        }
    }
    stats.examples = examples.len();
    if examples.is_empty() {
        let files: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        let why = if stats.skipped_overlong > 0 {
            format!(
                "all {} examples were longer than {} tokens",
                stats.skipped_overlong, opts.max_seq_len
            )
        } else {
            "no examples".to_string()
        };
        return Err(TrainError::EmptyDataset(format!(
            "{}: {why}",
            files.join(", ")
        )));
    }
    Ok((examples, stats))
}

/// A dataset file, or an `http(s)://` URL (an Adapter's HTTP dataset), read whole.
fn read_dataset(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = path.to_string_lossy();
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return std::fs::read(path).map_err(|e| e.to_string());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let response = reqwest::get(&*text)
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?;
        Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
    })
}

fn validate(messages: &[Message]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("`messages` is empty".into());
    }
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err("no assistant message, so nothing to learn from".into());
    }
    if let Some(i) = messages
        .iter()
        .position(|m| m.role == Role::Assistant && m.content.trim().is_empty())
    {
        return Err(format!("assistant message {i} is empty"));
    }
    if let Some(i) = messages.iter().skip(1).position(|m| m.role == Role::System) {
        return Err(format!(
            "system message at position {} (only the first message may be one)",
            i + 1
        ));
    }
    Ok(())
}

/// Seeded shuffle, then the last `fraction` (at least one example when `fraction > 0` and there
/// are two or more) held out for evaluation.
pub fn split(mut examples: Vec<Example>, fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    examples.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = examples.len();
    let mut held = (n as f64 * fraction).round() as usize;
    if fraction > 0.0 && n >= 2 {
        held = held.clamp(1, n - 1);
    } else {
        held = held.min(n.saturating_sub(1));
    }
    let eval = examples.split_off(n - held);
    (examples, eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: u32) -> Example {
        Example {
            ids: vec![n],
            targets: vec![true],
        }
    }

    #[test]
    fn split_is_seeded_and_keeps_both_sides_non_empty() {
        let all: Vec<_> = (0..10).map(ex).collect();
        let (t1, e1) = split(all.clone(), 0.2, 5);
        let (t2, e2) = split(all.clone(), 0.2, 5);
        assert_eq!((t1.len(), e1.len()), (8, 2));
        assert_eq!(
            e1.iter().map(|e| e.ids[0]).collect::<Vec<_>>(),
            e2.iter().map(|e| e.ids[0]).collect::<Vec<_>>()
        );
        assert_eq!(t1.len(), t2.len());
        let (t, e) = split(vec![ex(1), ex(2)], 0.01, 1);
        assert_eq!((t.len(), e.len()), (1, 1));
        let (t, e) = split(vec![ex(1), ex(2)], 0.0, 1);
        assert_eq!((t.len(), e.len()), (2, 0));
    }

    /// Serves `body` (or a 404 for any other path) to `n` requests on 127.0.0.1.
    fn serve(body: &'static str, n: usize) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/data/train.jsonl",
            listener.local_addr().expect("addr")
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let mut stream = stream.expect("accept");
                let mut buf = [0u8; 4096];
                let len = stream.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..len]);
                let response = if request.starts_with("GET /data/train.jsonl ") {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        url
    }

    #[test]
    fn http_datasets_are_fetched_and_an_error_status_is_an_error() {
        let body = "{\"messages\": []}\n";
        let url = serve(body, 2);
        let bytes = read_dataset(&PathBuf::from(&url)).expect("fetched");
        assert_eq!(bytes, body.as_bytes());
        let missing = url.replace("train.jsonl", "missing.jsonl");
        let err = read_dataset(&PathBuf::from(&missing)).expect_err("404");
        assert!(err.contains("404"), "{err}");
        let file = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(file.path(), b"local").expect("write");
        assert_eq!(read_dataset(file.path()).expect("file"), b"local");
    }

    #[test]
    fn validation_names_the_problem() {
        let m = |role, content: &str| Message {
            role,
            content: content.into(),
        };
        assert!(validate(&[]).is_err());
        let err = validate(&[m(Role::User, "hi")]).expect_err("no answer");
        assert!(err.contains("assistant"), "{err}");
        assert!(validate(&[m(Role::User, "hi"), m(Role::Assistant, " ")]).is_err());
        assert!(
            validate(&[
                m(Role::User, "hi"),
                m(Role::System, "s"),
                m(Role::Assistant, "a")
            ])
            .is_err()
        );
        assert!(
            validate(&[
                m(Role::System, "s"),
                m(Role::User, "hi"),
                m(Role::Assistant, "a")
            ])
            .is_ok()
        );
    }
}
