//! Where revisions and models live: local paths (`/x`, `file:///x`), `s3://bucket/key` (any
//! S3-compatible store, configured by the standard `AWS_*` environment variables) and, for reading
//! only, `http(s)://` URLs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
    Http(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct StorageError {
    pub location: String,
    pub message: String,
}

fn err(location: impl std::fmt::Display, message: impl std::fmt::Display) -> StorageError {
    StorageError {
        location: location.to_string(),
        message: message.to_string(),
    }
}

impl Location {
    pub fn parse(uri: &str) -> Result<Self, StorageError> {
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(err(uri, "missing bucket name in s3://bucket/key"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                key: key.trim_matches('/').to_string(),
            });
        }
        if uri.starts_with("http://") || uri.starts_with("https://") {
            return Ok(Self::Http(uri.trim_end_matches('/').to_string()));
        }
        if let Some(path) = uri.strip_prefix("file://") {
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if uri.contains("://") {
            return Err(err(
                uri,
                "unsupported scheme (use a path, file://, s3:// or http(s)://)",
            ));
        }
        if uri.is_empty() {
            return Err(err(uri, "empty location"));
        }
        Ok(Self::Local(PathBuf::from(uri)))
    }

    /// `self` as a directory/prefix, joined with `name`.
    pub fn join(&self, name: &str) -> Self {
        match self {
            Self::Local(p) => Self::Local(p.join(name)),
            Self::S3 { bucket, key } if key.is_empty() => Self::S3 {
                bucket: bucket.clone(),
                key: name.to_string(),
            },
            Self::S3 { bucket, key } => Self::S3 {
                bucket: bucket.clone(),
                key: format!("{key}/{name}"),
            },
            Self::Http(u) => Self::Http(format!("{u}/{name}")),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => {
                let absolute = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                write!(f, "file://{}", absolute.display())
            }
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::Http(u) => f.write_str(u),
        }
    }
}

fn s3(
    location: &Location,
    bucket: &str,
) -> Result<Arc<dyn object_store::ObjectStore>, StorageError> {
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| err(location, e))?;
    Ok(Arc::new(store))
}

/// A local file holding the object at `location`: the path itself for local locations, else a
/// download into `scratch`.
pub async fn fetch(location: &Location, scratch: &Path) -> Result<PathBuf, StorageError> {
    let bytes = match location {
        Location::Local(path) => {
            std::fs::metadata(path).map_err(|e| err(location, e))?;
            return Ok(path.clone());
        }
        Location::S3 { bucket, key } => {
            let store = s3(location, bucket)?;
            let result = store
                .get(&key.as_str().into())
                .await
                .map_err(|e| err(location, e))?;
            result.bytes().await.map_err(|e| err(location, e))?
        }
        Location::Http(url) => reqwest::get(url)
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| err(location, e))?
            .bytes()
            .await
            .map_err(|e| err(location, e))?,
    };
    std::fs::create_dir_all(scratch).map_err(|e| err(scratch.display(), e))?;
    let name = location
        .to_string()
        .rsplit('/')
        .next()
        .unwrap_or("download")
        .to_string();
    let path = scratch.join(if name.is_empty() {
        "download".to_string()
    } else {
        name
    });
    std::fs::write(&path, &bytes).map_err(|e| err(path.display(), e))?;
    Ok(path)
}

/// Whether an object already exists at `location` (revisions are immutable: never overwritten).
pub async fn exists(location: &Location) -> Result<bool, StorageError> {
    match location {
        Location::Local(path) => Ok(path.exists()),
        Location::S3 { bucket, key } => {
            match s3(location, bucket)?.head(&key.as_str().into()).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(err(location, e)),
            }
        }
        Location::Http(_) => Err(err(location, "http(s) locations are read-only")),
    }
}

/// Copies `file` to `location` so that readers see either nothing or the whole object: a local
/// copy is renamed into place, an S3 upload becomes visible only when it completes.
pub async fn publish(file: &Path, location: &Location) -> Result<(), StorageError> {
    match location {
        Location::Local(target) => {
            let dir = target
                .parent()
                .ok_or_else(|| err(location, "no parent directory"))?;
            std::fs::create_dir_all(dir).map_err(|e| err(dir.display(), e))?;
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let staging = dir.join(format!(".{name}.{}.partial", std::process::id()));
            let copied =
                std::fs::copy(file, &staging).and_then(|_| std::fs::rename(&staging, target));
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&staging);
                return Err(err(location, e));
            }
            Ok(())
        }
        Location::S3 { bucket, key } => {
            let store = s3(location, bucket)?;
            let mut writer = BufWriter::new(store, key.as_str().into());
            let mut source = tokio::fs::File::open(file)
                .await
                .map_err(|e| err(file.display(), e))?;
            if let Err(e) = tokio::io::copy(&mut source, &mut writer).await {
                let _ = writer.abort().await;
                return Err(err(location, e));
            }
            writer.shutdown().await.map_err(|e| err(location, e))
        }
        Location::Http(_) => Err(err(location, "http(s) locations are read-only")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_join() {
        assert_eq!(
            Location::parse("s3://b/idx/")
                .ok()
                .map(|l| l.join("r.tar.gz")),
            Some(Location::S3 {
                bucket: "b".into(),
                key: "idx/r.tar.gz".into()
            })
        );
        assert_eq!(
            Location::parse("file:///x").ok(),
            Some(Location::Local("/x".into()))
        );
        assert_eq!(
            Location::parse("/x").ok().map(|l| l.to_string()),
            Some("file:///x".to_string())
        );
        assert!(Location::parse("gs://b/k").is_err());
    }

    #[tokio::test]
    async fn local_publish_is_all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::write(&src, b"payload").expect("write");
        let target = Location::Local(dir.path().join("out/rev.tar.gz"));
        assert!(!exists(&target).await.expect("exists"));
        publish(&src, &target).await.expect("publish");
        assert_eq!(
            std::fs::read(dir.path().join("out/rev.tar.gz")).expect("read"),
            b"payload"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .expect("dir")
            .collect();
        assert_eq!(leftovers.len(), 1, "no staging file left behind");
        let missing = publish(
            &dir.path().join("nope"),
            &Location::Local(dir.path().join("out/other")),
        )
        .await;
        assert!(missing.is_err());
        assert!(!dir.path().join("out/other").exists());
    }
}
