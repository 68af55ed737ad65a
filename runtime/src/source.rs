//! Reading corpus documents from their sources.
//!
//! Source kinds, as written in a corpus config or on the command line:
//! - a local path (`/data/docs`, `file:///data/docs`): a directory walked recursively (PVCs and
//!   ConfigMap mounts) or a single file;
//! - an `http://` or `https://` URL: one document;
//! - `s3://bucket/prefix`: every object under the prefix, from any S3-compatible store. Endpoint,
//!   region and credentials come from the standard `AWS_*` environment variables.
//!
//! Text (`.txt`, `.text`, `.rst`, no extension) and Markdown (`.md`, `.markdown`, `.mdx`) are
//! parsed. In directories and prefixes other files are skipped (and logged); a file or URL named
//! explicitly must be UTF-8 text. Hidden entries (names starting with `.`) are skipped, which also
//! skips the `..data` bookkeeping of ConfigMap mounts while following their key symlinks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

/// Parallel object downloads per source; enough to hide request latency without flooding.
const FETCH_CONCURRENCY: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local(PathBuf),
    Http(String),
    S3 { bucket: String, prefix: String },
}

impl std::str::FromStr for Source {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| SourceError::Invalid {
            spec: s.to_string(),
            message: why.to_string(),
        };
        if s.trim().is_empty() {
            return Err(invalid("empty source"));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            url::Url::parse(s).map_err(|e| invalid(&e.to_string()))?;
            return Ok(Self::Http(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("missing bucket name in s3://bucket/prefix"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_end_matches('/').to_string(),
            });
        }
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if s.contains("://") {
            return Err(invalid(
                "unsupported scheme (use a path, file://, http(s):// or s3://)",
            ));
        }
        Ok(Self::Local(PathBuf::from(s)))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Http(u) => f.write_str(u),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    Text,
    Markdown,
}

impl DocumentFormat {
    /// Format from a file name; `None` for formats we do not parse.
    pub fn from_name(name: &str) -> Option<Self> {
        let file = name.rsplit('/').next().unwrap_or(name);
        let Some((_, ext)) = file.rsplit_once('.') else {
            return Some(Self::Text);
        };
        match ext.to_ascii_lowercase().as_str() {
            "md" | "markdown" | "mdx" => Some(Self::Markdown),
            "txt" | "text" | "rst" => Some(Self::Text),
            _ => None,
        }
    }
}

/// A parsed document, ready for chunking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Stable id: the path relative to a local source directory, or the full URL / `s3://` URI.
    pub id: String,
    pub source_uri: String,
    pub format: DocumentFormat,
    pub title: String,
    pub text: String,
    /// SHA-256 of the raw bytes: unchanged digest, unchanged chunks.
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid source {spec:?}: {message}")]
    Invalid { spec: String, message: String },
    #[error("cannot read {location}: {message}")]
    Unreadable { location: String, message: String },
    #[error("{location} is not UTF-8 text: {message}")]
    NotText { location: String, message: String },
    #[error(
        "document id {id:?} is produced by both {first} and {second}; give the sources distinct file names"
    )]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
}

impl SourceError {
    fn unreadable(location: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::Unreadable {
            location: location.to_string(),
            message: e.to_string(),
        }
    }
}

/// Reads every source, in order; the result is sorted by document id.
pub async fn read_sources(sources: &[Source]) -> Result<Vec<Document>, SourceError> {
    let mut documents = Vec::new();
    for source in sources {
        let found = match source {
            Source::Local(path) => read_local(path)?,
            Source::Http(url) => vec![read_http(url).await?],
            Source::S3 { bucket, prefix } => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| SourceError::unreadable(source, e))?;
                read_object_store(Arc::new(store), prefix, &format!("s3://{bucket}")).await?
            }
        };
        tracing::info!(source = %source, documents = found.len(), "read source");
        documents.extend(found);
    }
    documents.sort_by(|a, b| a.id.cmp(&b.id));
    for pair in documents.windows(2) {
        if pair[0].id == pair[1].id {
            return Err(SourceError::DuplicateId {
                id: pair[0].id.clone(),
                first: pair[0].source_uri.clone(),
                second: pair[1].source_uri.clone(),
            });
        }
    }
    Ok(documents)
}

/// Builds a [`Document`] from raw bytes; errors name `location`.
pub fn parse_document(
    id: String,
    source_uri: String,
    format: DocumentFormat,
    bytes: &[u8],
) -> Result<Document, SourceError> {
    let digest = hex::encode(Sha256::digest(bytes));
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| SourceError::NotText {
            location: source_uri.clone(),
            message: e.to_string(),
        })?
        .to_string();
    let title = match format {
        DocumentFormat::Markdown => markdown_title(&text),
        DocumentFormat::Text => None,
    }
    .unwrap_or_else(|| default_title(&id));
    Ok(Document {
        id,
        source_uri,
        format,
        title,
        text,
        digest,
    })
}

fn markdown_title(text: &str) -> Option<String> {
    let mut in_fence = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        } else if !in_fence && let Some(title) = trimmed.strip_prefix("# ") {
            let title = title.trim().trim_end_matches('#').trim();
            if !title.is_empty() {
                return Some(title.to_string());
            }
        }
    }
    None
}

fn default_title(id: &str) -> String {
    let name = id.trim_end_matches('/').rsplit('/').next().unwrap_or(id);
    name.rsplit_once('.')
        .map_or(name, |(stem, _)| stem)
        .to_string()
}

fn read_local(root: &Path) -> Result<Vec<Document>, SourceError> {
    let meta = std::fs::metadata(root).map_err(|e| SourceError::unreadable(root.display(), e))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let format = DocumentFormat::from_name(&name).unwrap_or(DocumentFormat::Text);
        return Ok(vec![read_local_file(root, name, format)?]);
    }
    let mut files = Vec::new();
    walk(root, root, &mut files)?;
    let mut documents = Vec::with_capacity(files.len());
    for (path, id) in files {
        match DocumentFormat::from_name(&id) {
            Some(format) => documents.push(read_local_file(&path, id, format)?),
            None => tracing::info!(file = %path.display(), "skipping file of unsupported type"),
        }
    }
    Ok(documents)
}

fn read_local_file(
    path: &Path,
    id: String,
    format: DocumentFormat,
) -> Result<Document, SourceError> {
    let bytes = std::fs::read(path).map_err(|e| SourceError::unreadable(path.display(), e))?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    parse_document(id, format!("file://{}", absolute.display()), format, &bytes)
}

/// Collects regular files under `dir` with their `/`-separated paths relative to `root`.
/// Symlinks to files are followed (ConfigMap keys); symlinked directories are not descended, so a
/// link cycle cannot loop.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SourceError::unreadable(dir.display(), e))?;
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| SourceError::unreadable(dir.display(), e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let link = entry
            .file_type()
            .map_err(|e| SourceError::unreadable(path.display(), e))?
            .is_symlink();
        let meta =
            std::fs::metadata(&path).map_err(|e| SourceError::unreadable(path.display(), e))?;
        if meta.is_dir() {
            if link {
                tracing::info!(dir = %path.display(), "not following symlinked directory");
            } else {
                walk(root, &path, out)?;
            }
        } else if meta.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let id = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((path, id));
        }
    }
    Ok(())
}

async fn read_http(url: &str) -> Result<Document, SourceError> {
    let response = reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| SourceError::unreadable(url, e))?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| SourceError::unreadable(url, e))?;
    let path = url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    let format = if content_type.starts_with("text/markdown") {
        DocumentFormat::Markdown
    } else {
        DocumentFormat::from_name(&path).unwrap_or(DocumentFormat::Text)
    };
    parse_document(url.to_string(), url.to_string(), format, &bytes)
}

/// Reads every supported object under `prefix`; documents are named `{uri_base}/{key}`.
pub async fn read_object_store(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    uri_base: &str,
) -> Result<Vec<Document>, SourceError> {
    let list_prefix = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix));
    let listing_uri = format!("{uri_base}/{prefix}");
    let metas: Vec<_> = store
        .list(list_prefix.as_ref())
        .try_collect()
        .await
        .map_err(|e| SourceError::unreadable(&listing_uri, e))?;
    let mut wanted = Vec::new();
    for meta in metas {
        let key = meta.location.to_string();
        let hidden = key.split('/').any(|part| part.starts_with('.'));
        match DocumentFormat::from_name(&key) {
            Some(format) if !hidden => wanted.push((meta.location, format)),
            _ => tracing::info!(object = %key, "skipping object of unsupported type"),
        }
    }
    futures::stream::iter(wanted)
        .map(|(location, format)| {
            let store = Arc::clone(&store);
            async move {
                let uri = format!("{uri_base}/{location}");
                let bytes = match store.get(&location).await {
                    Ok(result) => result
                        .bytes()
                        .await
                        .map_err(|e| SourceError::unreadable(&uri, e))?,
                    Err(e) => return Err(SourceError::unreadable(&uri, e)),
                };
                parse_document(uri.clone(), uri, format, &bytes)
            }
        })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_by_scheme() {
        assert_eq!(
            "/data/docs".parse::<Source>().ok(),
            Some(Source::Local("/data/docs".into()))
        );
        assert_eq!(
            "file:///data/docs".parse::<Source>().ok(),
            Some(Source::Local("/data/docs".into()))
        );
        assert_eq!(
            "s3://bucket/some/prefix/".parse::<Source>().ok(),
            Some(Source::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            })
        );
        assert!(matches!(
            "https://example.com/a.md".parse::<Source>(),
            Ok(Source::Http(_))
        ));
        assert!("ftp://x/y".parse::<Source>().is_err());
        assert!("s3:///nobucket".parse::<Source>().is_err());
    }

    #[test]
    fn formats_and_titles() {
        assert_eq!(
            DocumentFormat::from_name("a/b/README.md"),
            Some(DocumentFormat::Markdown)
        );
        assert_eq!(
            DocumentFormat::from_name("notes.TXT"),
            Some(DocumentFormat::Text)
        );
        assert_eq!(
            DocumentFormat::from_name("LICENSE"),
            Some(DocumentFormat::Text)
        );
        assert_eq!(DocumentFormat::from_name("image.png"), None);
        let doc = parse_document(
            "guide.md".into(),
            "file:///guide.md".into(),
            DocumentFormat::Markdown,
            b"```\n# not a title\n```\n# Real Title #\nbody",
        )
        .expect("parses");
        assert_eq!(doc.title, "Real Title");
        let doc = parse_document(
            "dir/notes.txt".into(),
            "u".into(),
            DocumentFormat::Text,
            b"x",
        )
        .expect("parses");
        assert_eq!(doc.title, "notes");
    }

    #[test]
    fn invalid_utf8_names_the_file() {
        let err = parse_document(
            "bad.txt".into(),
            "file:///corpus/bad.txt".into(),
            DocumentFormat::Text,
            b"ok \xff\xfe",
        )
        .expect_err("not text");
        assert!(err.to_string().contains("file:///corpus/bad.txt"), "{err}");
    }

    #[tokio::test]
    async fn object_store_prefix_reads_supported_objects() {
        let store = Arc::new(object_store::memory::InMemory::new());
        for (key, body) in [
            ("docs/a.md", "# A\nalpha"),
            ("docs/sub/b.txt", "beta"),
            ("docs/c.png", "x"),
            ("other/d.md", "d"),
        ] {
            store
                .put(&key.into(), body.as_bytes().to_vec().into())
                .await
                .expect("put");
        }
        let docs = read_object_store(store, "docs", "s3://bucket")
            .await
            .expect("reads");
        let ids: Vec<_> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["s3://bucket/docs/a.md", "s3://bucket/docs/sub/b.txt"]);
        assert_eq!(docs[0].title, "A");
    }
}
