//! `hybrid-runtime prune`: deletes stored revisions the operator no longer keeps.
//!
//! Index revisions (archives) and adapter revisions (directories) are written to storage the
//! operator cannot reach itself: a PersistentVolumeClaim or an S3 bucket. When a revision falls
//! out of a resource's retained history, or the resource is deleted, the operator runs this as a
//! small Job with the locations to delete (docs/operator.md, "Stored artifacts").
//!
//! Deleting is idempotent: a location that is already gone counts as `absent`, not as an error,
//! so a retried Job converges. Every location is tried even when one fails; the command then
//! exits 1 and the result names the first failure. A location that could only be a storage root
//! (`/`, `/pvc`, a claim's mount root, a bucket without a key) is refused before anything is
//! deleted: a wrong argument must never wipe a volume.
//!
//! The result is one JSON object, written like the index result (termination message):
//! `{"kind":"PruneResult","deleted":N,"absent":N,"bytes":N}` or
//! `{"kind":"PruneError","reason":..,"message":..,"deleted":N}`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;

use crate::index::storage::Location;

#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// A stored revision to delete: a file or directory (also `file://`), or `s3://bucket/key`
    /// (the object and everything under `key/`). Repeatable.
    #[arg(long = "location", required = true)]
    pub locations: Vec<String>,
    /// Where the JSON result (or error) is written.
    #[arg(long, default_value = "/dev/termination-log")]
    pub result_path: PathBuf,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename = "PruneResult", rename_all = "camelCase")]
pub struct PruneResult {
    /// Locations that existed and were deleted.
    pub deleted: u64,
    /// Locations that did not exist (already deleted by an earlier attempt, or never written).
    pub absent: u64,
    /// Bytes freed.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("--location {location:?}: {message}")]
    InvalidLocation { location: String, message: String },
    #[error("cannot delete {location}: {message}")]
    Failed { location: String, message: String },
}

impl PruneError {
    /// Stable label, the `reason` of the error result.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidLocation { .. } => "InvalidLocation",
            Self::Failed { .. } => "DeleteFailed",
        }
    }

    fn failed(location: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::Failed {
            location: location.to_string(),
            message: e.to_string(),
        }
    }
}

/// Parses a location and refuses what could only be a storage root.
pub fn parse_location(uri: &str) -> Result<Location, PruneError> {
    let invalid = |message: &str| PruneError::InvalidLocation {
        location: uri.to_owned(),
        message: message.to_owned(),
    };
    match Location::parse(uri).map_err(|e| invalid(&e.message))? {
        Location::Local(path) => {
            if !path.is_absolute() {
                return Err(invalid("a local location must be an absolute path"));
            }
            if path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            {
                return Err(invalid("a local location may not contain . or .."));
            }
            // `/pvc/<claim>` is a whole volume; a revision lives at least one level below.
            let depth = path
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count();
            let min = if path.starts_with("/pvc") { 3 } else { 2 };
            if depth < min {
                return Err(invalid(
                    "refusing to delete a storage root; a revision is a file or directory below it",
                ));
            }
            Ok(Location::Local(path))
        }
        Location::S3 { key, .. } if key.is_empty() => Err(invalid(
            "refusing to delete a whole bucket; name the revision's key",
        )),
        s3 @ Location::S3 { .. } => Ok(s3),
        Location::Http(_) => Err(invalid(
            "HTTP locations are read-only; prune deletes files, directories and s3:// objects",
        )),
    }
}

/// What deleting one location did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Deleted { bytes: u64 },
    Absent,
}

/// Deletes a local file or directory tree.
pub fn delete_local(path: &Path) -> Result<Outcome, PruneError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Absent),
        Err(e) => return Err(PruneError::failed(path.display(), e)),
    };
    if meta.is_dir() {
        let bytes = tree_size(path);
        std::fs::remove_dir_all(path).map_err(|e| PruneError::failed(path.display(), e))?;
        Ok(Outcome::Deleted { bytes })
    } else {
        std::fs::remove_file(path).map_err(|e| PruneError::failed(path.display(), e))?;
        Ok(Outcome::Deleted { bytes: meta.len() })
    }
}

fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Deletes the object at `key` and every object under `key/`.
pub async fn delete_objects(
    store: Arc<dyn ObjectStore>,
    key: &str,
    uri: &str,
) -> Result<Outcome, PruneError> {
    let exact = object_store::path::Path::from(key);
    let mut doomed = Vec::new();
    let mut bytes = 0;
    match store.head(&exact).await {
        Ok(meta) => {
            bytes += meta.size;
            doomed.push(exact.clone());
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(PruneError::failed(uri, e)),
    }
    let below: Vec<_> = store
        .list(Some(&exact))
        .try_collect()
        .await
        .map_err(|e| PruneError::failed(uri, e))?;
    for meta in below {
        if meta.location != exact {
            bytes += meta.size;
            doomed.push(meta.location);
        }
    }
    if doomed.is_empty() {
        return Ok(Outcome::Absent);
    }
    for path in doomed {
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(PruneError::failed(format!("{uri} ({path})"), e)),
        }
    }
    Ok(Outcome::Deleted { bytes })
}

async fn delete(location: &Location) -> Result<Outcome, PruneError> {
    match location {
        Location::Local(path) => delete_local(path),
        Location::S3 { bucket, key } => {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| PruneError::failed(location, e))?;
            delete_objects(Arc::new(store), key, &location.to_string()).await
        }
        Location::Http(_) => unreachable!("parse_location refuses HTTP"),
    }
}

/// Deletes every location; all are validated before the first deletion.
pub async fn prune(locations: &[String]) -> (PruneResult, Option<PruneError>) {
    let mut result = PruneResult::default();
    let parsed: Result<Vec<Location>, PruneError> =
        locations.iter().map(|l| parse_location(l)).collect();
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return (result, Some(e)),
    };
    let mut first_error = None;
    for location in &parsed {
        match delete(location).await {
            Ok(Outcome::Deleted { bytes }) => {
                tracing::info!(location = %location, bytes, "deleted");
                result.deleted += 1;
                result.bytes += bytes;
            }
            Ok(Outcome::Absent) => {
                tracing::info!(location = %location, "already absent");
                result.absent += 1;
            }
            Err(e) => {
                tracing::error!(location = %location, error = %e, "delete failed");
                first_error.get_or_insert(e);
            }
        }
    }
    (result, first_error)
}

/// The result line: `PruneResult`, or `PruneError` with what was deleted before the failure.
pub fn result_json(result: &PruneResult, error: Option<&PruneError>) -> String {
    match error {
        None => serde_json::to_string(result).expect("plain struct"),
        Some(e) => {
            let message: String = e.to_string().chars().take(3000).collect();
            serde_json::json!({
                "kind": "PruneError",
                "reason": e.reason(),
                "message": message,
                "deleted": result.deleted,
            })
            .to_string()
        }
    }
}

/// Entry point: exit code 0 when every location is gone, 1 otherwise.
pub fn run(args: &PruneArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hybrid-runtime prune: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let (result, error) = runtime.block_on(prune(&args.locations));
    let json = result_json(&result, error.as_ref());
    println!("{json}");
    if let Err(e) = std::fs::write(&args.result_path, &json) {
        tracing::warn!(path = %args.result_path.display(), error = %e, "cannot write the result");
    }
    i32::from(error.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn storage_roots_and_relative_paths_are_refused() {
        for bad in [
            "/",
            "/pvc",
            "/pvc/claim",
            "file:///pvc/claim/",
            "/data",
            "relative/dir",
            "/pvc/claim/../other",
            "s3://bucket",
            "s3://bucket/",
            "https://example.com/x",
            "gs://bucket/x",
        ] {
            let err = parse_location(bad).expect_err(bad);
            assert!(
                err.to_string().contains("--location"),
                "{bad}: error names the flag: {err}"
            );
        }
        for good in [
            "/pvc/claim/indexes/abc.tar.gz",
            "file:///pvc/claim/adapters/0123",
            "/data/indexes",
            "s3://bucket/indexes/abc.tar.gz",
        ] {
            parse_location(good).expect(good);
        }
    }

    #[test]
    fn deletes_files_and_trees_and_counts_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(&archive, b"12345").expect("write");
        let adapter = dir.path().join("adapters/rev1");
        std::fs::create_dir_all(adapter.join("nested")).expect("mkdir");
        std::fs::write(adapter.join("adapter_model.safetensors"), b"0123456789").expect("w");
        std::fs::write(adapter.join("nested/x"), b"abc").expect("w");
        let keep = dir.path().join("adapters/rev2");
        std::fs::create_dir_all(&keep).expect("mkdir");

        assert_eq!(
            delete_local(&archive).expect("file"),
            Outcome::Deleted { bytes: 5 }
        );
        assert_eq!(
            delete_local(&adapter).expect("dir"),
            Outcome::Deleted { bytes: 13 }
        );
        assert!(!archive.exists() && !adapter.exists());
        assert!(keep.exists(), "a sibling revision is untouched");
        assert_eq!(delete_local(&archive).expect("again"), Outcome::Absent);
    }

    #[tokio::test]
    async fn prune_validates_everything_first_and_tries_every_location() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.tar.gz");
        std::fs::write(&a, b"x").expect("write");
        let a_uri = a.display().to_string();

        // One invalid location: nothing is deleted.
        let (result, error) = prune(&[a_uri.clone(), "/".to_owned()]).await;
        assert!(matches!(error, Some(PruneError::InvalidLocation { .. })));
        assert_eq!(result, PruneResult::default());
        assert!(a.exists());

        let missing = dir
            .path()
            .join("never-written.tar.gz")
            .display()
            .to_string();
        let (result, error) = prune(&[a_uri, missing]).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            result,
            PruneResult {
                deleted: 1,
                absent: 1,
                bytes: 1
            }
        );
        let json: serde_json::Value =
            serde_json::from_str(&result_json(&result, None)).expect("json");
        assert_eq!(json["kind"], "PruneResult");
        assert_eq!(json["deleted"], 1);
    }

    #[tokio::test]
    async fn objects_under_a_key_are_deleted_and_siblings_kept() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for key in [
            "adapters/rev1/adapter_model.safetensors",
            "adapters/rev1/adapter_config.json",
            "adapters/rev10/adapter_config.json",
            "indexes/abc.tar.gz",
        ] {
            store
                .put(&key.into(), b"data".to_vec().into())
                .await
                .expect("put");
        }
        let out = delete_objects(store.clone(), "adapters/rev1", "s3://b/adapters/rev1")
            .await
            .expect("delete");
        assert_eq!(out, Outcome::Deleted { bytes: 8 });
        let out = delete_objects(
            store.clone(),
            "indexes/abc.tar.gz",
            "s3://b/indexes/abc.tar.gz",
        )
        .await
        .expect("delete");
        assert_eq!(out, Outcome::Deleted { bytes: 4 });
        let left: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        assert_eq!(left, vec!["adapters/rev10/adapter_config.json".to_owned()]);
        let again = delete_objects(store, "adapters/rev1", "s3://b/adapters/rev1")
            .await
            .expect("again");
        assert_eq!(again, Outcome::Absent);
    }
}
