//! `hybrid-runtime scan`: a cheap listing of corpus sources, for change detection.
//!
//! The operator cannot watch PVC and S3 sources, so it runs this as a small Job at creation and
//! every `refreshInterval` (docs/operator.md, "Source refresh"). Each document the index would
//! read is listed with its path or key, its size, and its modification time (files) or ETag
//! (objects). No content is read: a volume costs one `stat` per file, a bucket one LIST request
//! per thousand keys. The digest is over the sorted listing, so directory and listing order do
//! not matter. A file rewritten with the same bytes gets a new modification time and counts as a
//! change; that costs one index Job, which reuses every unchanged document's vectors.
//!
//! The result is one JSON object, written like the index result (termination message):
//! `{"kind":"ScanResult","digest":..,"documents":N,"bytes":N,"durationSeconds":F}` or
//! `{"kind":"ScanError","reason":..,"message":..}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use object_store::ObjectStore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::source::{DocumentFormat, Source};

/// Kubernetes reads at most 4096 bytes of a termination message.
const MAX_RESULT_BYTES: usize = 4096;

#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// A source to list: a directory or file (also `file://`) or `s3://bucket/prefix`.
    /// Repeatable; the digest covers the sources in the order given.
    #[arg(long = "source", required = true)]
    pub sources: Vec<String>,
    /// Where the JSON result (or error) is written.
    #[arg(long, default_value = "/dev/termination-log")]
    pub result_path: PathBuf,
}

/// One listed document: enough to notice an edit, a new file or a removed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the source directory, or the object key.
    pub id: String,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch (files), or the ETag (objects).
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename = "ScanResult", rename_all = "camelCase")]
pub struct ScanResult {
    /// sha256 of the listing, full hex.
    pub digest: String,
    pub documents: u64,
    pub bytes: u64,
    pub duration_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("invalid source {spec:?}: {message}")]
    InvalidSource { spec: String, message: String },
    #[error("cannot list {location}: {message}")]
    Unreadable { location: String, message: String },
}

impl ScanError {
    /// Stable label, the `reason` of the error result.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSource { .. } => "InvalidSource",
            Self::Unreadable { .. } => "SourceUnreadable",
        }
    }

    fn unreadable(location: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::Unreadable {
            location: location.to_string(),
            message: e.to_string(),
        }
    }
}

/// Digest of the listings of several sources, in source order. Each source's entries are
/// sorted by id first, and every field is framed by its length, so neither listing order nor
/// field boundaries can make two different listings collide.
pub fn listing_digest(listings: &[Vec<Listed>]) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(b"hybrid.dev/source-scan/v1");
    for (i, listing) in listings.iter().enumerate() {
        field(b"source");
        field(i.to_string().as_bytes());
        let mut sorted: Vec<&Listed> = listing.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        for entry in sorted {
            field(entry.id.as_bytes());
            field(entry.size.to_string().as_bytes());
            field(entry.version.as_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

/// Lists one source. HTTP sources are refused: the operator fetches and digests them itself.
pub async fn list_source(source: &Source) -> Result<Vec<Listed>, ScanError> {
    match source {
        Source::Local(path) => list_local(path),
        Source::Http(url) => Err(ScanError::InvalidSource {
            spec: url.clone(),
            message: "HTTP sources are digested by the operator; scan lists directories and s3:// prefixes".into(),
        }),
        Source::S3 { bucket, prefix } => {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| ScanError::unreadable(source, e))?;
            list_object_store(Arc::new(store), prefix, &format!("s3://{bucket}")).await
        }
    }
}

/// Lists the objects `read_object_store` would read: supported formats, no hidden path parts.
pub async fn list_object_store(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    uri_base: &str,
) -> Result<Vec<Listed>, ScanError> {
    let list_prefix = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix));
    let metas: Vec<_> = store
        .list(list_prefix.as_ref())
        .try_collect()
        .await
        .map_err(|e| ScanError::unreadable(format!("{uri_base}/{prefix}"), e))?;
    Ok(metas
        .into_iter()
        .filter(|meta| {
            let key = meta.location.to_string();
            !key.split('/').any(|part| part.starts_with('.'))
                && DocumentFormat::from_name(&key).is_some()
        })
        .map(|meta| Listed {
            id: meta.location.to_string(),
            size: meta.size,
            version: meta
                .e_tag
                .unwrap_or_else(|| meta.last_modified.to_rfc3339()),
        })
        .collect())
}

/// Lists the files `read_sources` would read under a local path: a single named file, or the
/// supported, non-hidden files of a directory tree (file symlinks followed, as ConfigMap mounts
/// need; symlinked directories not descended).
pub fn list_local(root: &Path) -> Result<Vec<Listed>, ScanError> {
    let meta = std::fs::metadata(root).map_err(|e| ScanError::unreadable(root.display(), e))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![listed(name, &meta)]);
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

fn listed(id: String, meta: &std::fs::Metadata) -> Listed {
    let version = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default();
    Listed {
        id,
        size: meta.len(),
        version,
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Listed>) -> Result<(), ScanError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ScanError::unreadable(dir.display(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ScanError::unreadable(dir.display(), e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let link = entry
            .file_type()
            .map_err(|e| ScanError::unreadable(path.display(), e))?
            .is_symlink();
        let meta =
            std::fs::metadata(&path).map_err(|e| ScanError::unreadable(path.display(), e))?;
        if meta.is_dir() {
            if !link {
                walk(root, &path, out)?;
            }
        } else if meta.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let id = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if DocumentFormat::from_name(&id).is_some() {
                out.push(listed(id, &meta));
            }
        }
    }
    Ok(())
}

/// Lists every source and digests the listings.
pub async fn scan(sources: &[String]) -> Result<ScanResult, ScanError> {
    let started = Instant::now();
    let mut listings = Vec::with_capacity(sources.len());
    for spec in sources {
        let source = spec
            .parse::<Source>()
            .map_err(|e| ScanError::InvalidSource {
                spec: spec.clone(),
                message: e.to_string(),
            })?;
        let listing = list_source(&source).await?;
        tracing::info!(source = %source, documents = listing.len(), "listed source");
        listings.push(listing);
    }
    Ok(ScanResult {
        digest: listing_digest(&listings),
        documents: listings.iter().map(|l| l.len() as u64).sum(),
        bytes: listings.iter().flatten().map(|e| e.size).sum(),
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// `{"kind":"ScanError","reason":..,"message":..}`, cut to fit a termination message.
pub fn error_json(e: &ScanError) -> String {
    let mut message = e.to_string();
    loop {
        let json =
            serde_json::json!({"kind": "ScanError", "reason": e.reason(), "message": message})
                .to_string();
        if json.len() < MAX_RESULT_BYTES || message.is_empty() {
            return json;
        }
        let mut cut = message
            .len()
            .saturating_sub(json.len() - MAX_RESULT_BYTES + 16);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
}

/// Entry point of the subcommand: scans, writes the result (or error) file, returns the exit code.
pub fn run(args: &ScanArgs) -> i32 {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ScanError::unreadable("the async runtime", e))
        .and_then(|runtime| runtime.block_on(scan(&args.sources)));
    let (json, code) = match &outcome {
        Ok(result) => {
            tracing::info!(digest = %result.digest, documents = result.documents, "scan done");
            (serde_json::to_string(result).unwrap_or_default(), 0)
        }
        Err(e) => {
            tracing::error!(reason = e.reason(), error = %e, "scan failed");
            (error_json(e), 1)
        }
    };
    if let Err(e) = std::fs::write(&args.result_path, json.as_bytes()) {
        tracing::warn!(path = %args.result_path.display(), error = %e, "cannot write the result file");
    }
    println!("{json}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn entry(id: &str, size: u64, version: &str) -> Listed {
        Listed {
            id: id.into(),
            size,
            version: version.into(),
        }
    }

    #[test]
    fn digest_ignores_listing_order_but_not_content_or_source_position() {
        let one = |listing: Vec<Listed>| listing_digest(&[listing]);
        let a = vec![entry("a.md", 3, "1"), entry("sub/b.md", 5, "2")];
        let reversed: Vec<_> = a.iter().rev().cloned().collect();
        assert_eq!(one(a.clone()), one(reversed));

        let grown = vec![entry("a.md", 4, "1"), entry("sub/b.md", 5, "2")];
        assert_ne!(one(a.clone()), one(grown));
        let touched = vec![entry("a.md", 3, "9"), entry("sub/b.md", 5, "2")];
        assert_ne!(one(a.clone()), one(touched));
        // The same files under another source position are another corpus layout.
        assert_ne!(
            listing_digest(&[a.clone(), vec![]]),
            listing_digest(&[vec![], a])
        );
        // Framing: "ab"+"c" is not "a"+"bc".
        assert_ne!(
            one(vec![entry("ab", 1, "c")]),
            one(vec![entry("a", 1, "bc")])
        );
    }

    #[tokio::test]
    async fn object_listing_keeps_what_the_index_reads() {
        let store = Arc::new(object_store::memory::InMemory::new());
        for (key, body) in [
            ("docs/a.md", "# A"),
            ("docs/sub/b.txt", "beta"),
            ("docs/c.png", "x"),
            ("docs/.hidden/d.md", "d"),
            ("other/e.md", "e"),
        ] {
            store
                .put(&key.into(), body.as_bytes().to_vec().into())
                .await
                .expect("put");
        }
        let mut listed = list_object_store(store, "docs", "s3://bucket")
            .await
            .expect("lists");
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        let ids: Vec<_> = listed.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["docs/a.md", "docs/sub/b.txt"]);
        assert_eq!(listed[1].size, 4);
        assert!(
            !listed[0].version.is_empty(),
            "an ETag identifies the version"
        );
    }

    #[test]
    fn errors_fit_a_termination_message() {
        let e = ScanError::Unreadable {
            location: "x".repeat(10_000),
            message: "gone".into(),
        };
        let json = error_json(&e);
        assert!(json.len() < MAX_RESULT_BYTES);
        assert!(json.contains("\"reason\":\"SourceUnreadable\""));
    }
}
