//! Publishing a revision to a remote Qdrant server (`--output qdrant://host:port/<corpus>`).
//!
//! The revision is built in a local shard exactly as for an archive (so incremental reuse and the
//! revision id do not depend on where it is published), then copied into the collection
//! `<corpus>-<revision>` with the manifest as collection metadata, counted, and only then is the
//! alias `<corpus>` moved to it. A failed copy deletes the half-written collection; the alias, and
//! so what `serve` reads, stays on the previous revision.

use super::IndexError;
use super::manifest::Manifest;
use super::storage::StorageError;
use crate::store::remote::{QdrantLocation, RemoteStore, collection_name, validate_name};
use crate::store::{EdgeStore, StoreError, VectorStore};

/// Points per upsert request.
const UPLOAD_BATCH: usize = 256;

fn publish_err(location: impl std::fmt::Display, e: impl std::fmt::Display) -> IndexError {
    IndexError::Publish(StorageError {
        location: location.to_string(),
        message: e.to_string(),
    })
}

/// Checks an output location; returns the corpus alias it names.
pub fn parse_output(output: &str) -> Result<QdrantLocation, String> {
    QdrantLocation::parse(output)
}

/// The collection a revision of the corpus at `output` is written to.
pub fn revision_location(
    output: &QdrantLocation,
    revision: &str,
) -> Result<QdrantLocation, String> {
    let name = collection_name(&output.name, revision);
    validate_name(&name)?;
    Ok(output.with_name(&name))
}

/// Copies the sealed local shard into `<corpus>-<revision>` and moves the alias `<corpus>` to it.
/// Returns the collection's location (the result's `location`).
pub fn publish(output: &str, manifest: &Manifest, local: &EdgeStore) -> Result<String, IndexError> {
    let target = parse_output(output).map_err(|e| publish_err(output, e))?;
    let collection =
        revision_location(&target, &manifest.revision).map_err(|e| publish_err(output, e))?;
    let manifest_json = serde_json::to_value(manifest).map_err(|e| publish_err(&collection, e))?;
    let err = |e: StoreError| publish_err(&collection, e);

    if RemoteStore::exists(&collection).map_err(err)? {
        match RemoteStore::open(&collection) {
            Ok((existing, found))
                if found == manifest_json && existing.count().map_err(err)? == manifest.chunks =>
            {
                tracing::info!(location = %collection, "revision already published; revisions are immutable, keeping it");
                existing.move_alias(&target.name).map_err(err)?;
                return Ok(collection.to_string());
            }
            Ok(_) | Err(_) => {
                tracing::warn!(location = %collection, "incomplete collection from an earlier run: rewriting it");
            }
        }
    }

    let mut remote =
        RemoteStore::create(&collection, local.dimension(), &manifest_json).map_err(err)?;
    let upload = |remote: &mut RemoteStore| -> Result<(), StoreError> {
        let total = manifest.chunks as u64;
        let mut start = 0u64;
        while start < total {
            let end = (start + UPLOAD_BATCH as u64).min(total);
            let ids: Vec<u64> = (start..end).collect();
            let chunks = local.get(&ids)?;
            if chunks.len() != ids.len() {
                return Err(StoreError::Remote {
                    location: collection.to_string(),
                    message: format!(
                        "the local shard returned {} of points {start}..{end}",
                        chunks.len()
                    ),
                });
            }
            remote.upsert(chunks)?;
            start = end;
        }
        remote.seal()?;
        let stored = remote.count()?;
        if stored != manifest.chunks {
            return Err(StoreError::Remote {
                location: collection.to_string(),
                message: format!(
                    "{stored} points stored, the manifest lists {}",
                    manifest.chunks
                ),
            });
        }
        Ok(())
    };
    if let Err(e) = upload(&mut remote) {
        if let Err(cleanup) = remote.delete() {
            tracing::warn!(location = %collection, error = %cleanup, "cannot delete the incomplete collection");
        }
        return Err(err(e));
    }
    remote.move_alias(&target.name).map_err(err)?;
    Ok(collection.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_collections_sit_next_to_the_corpus_alias() {
        let output = parse_output("qdrant://qdrant:6334/finance-notes").expect("valid");
        assert_eq!(output.name, "finance-notes");
        let rev = revision_location(&output, "ix-0123456789abcdef0123").expect("valid");
        assert_eq!(
            rev.to_string(),
            "qdrant://qdrant:6334/finance-notes-ix-0123456789abcdef0123"
        );
        let long = parse_output(&format!("qdrant://q/{}", "c".repeat(195))).expect("valid");
        assert!(revision_location(&long, "ix-0123456789abcdef0123").is_err());
    }
}
