//! Index revision archives: a gzip'd tar holding `manifest.json` and `shard/`, the embedded Qdrant
//! shard directory. [`LoadedRevision`] opens one for searching.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::manifest::{MANIFEST_FILE, Manifest};
use super::storage::{self, Location};
use crate::store::{EdgeStore, EdgeStoreOptions, SearchHit, StoreError, VectorStore};

/// Name of the shard directory inside an archive.
pub const SHARD_DIR: &str = "shard";

/// File name of a revision's archive under the output location.
pub fn archive_name(revision: &str) -> String {
    format!("{revision}.tar.gz")
}

#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("revision archive {location}: {message}")]
    Archive { location: String, message: String },
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn archive_err(location: impl std::fmt::Display, e: impl std::fmt::Display) -> RevisionError {
    RevisionError::Archive {
        location: location.to_string(),
        message: e.to_string(),
    }
}

/// Packs `dir` (manifest + shard) into a gzip'd tar at `archive`. Fast compression: the bulk is
/// float vectors, which barely compress, while mmap'd storage files have long zero runs that any
/// level removes.
pub fn pack(dir: &Path, archive: &Path) -> Result<(), RevisionError> {
    let write = || -> std::io::Result<()> {
        let file = File::create(archive)?;
        let mut tar = tar::Builder::new(GzEncoder::new(BufWriter::new(file), Compression::fast()));
        tar.follow_symlinks(false);
        tar.append_path_with_name(dir.join(MANIFEST_FILE), MANIFEST_FILE)?;
        tar.append_dir_all(SHARD_DIR, dir.join(SHARD_DIR))?;
        let mut out = tar.into_inner()?.finish()?;
        std::io::Write::flush(&mut out)
    };
    write().map_err(|e| archive_err(archive.display(), e))
}

/// Unpacks an archive into `dir` (entries escaping `dir` are refused by the tar reader).
pub fn unpack(archive: &Path, dir: &Path) -> Result<(), RevisionError> {
    let file = File::open(archive).map_err(|e| archive_err(archive.display(), e))?;
    tar::Archive::new(GzDecoder::new(BufReader::new(file)))
        .unpack(dir)
        .map_err(|e| archive_err(archive.display(), e))
}

pub fn read_manifest(dir: &Path, location: &str) -> Result<Manifest, RevisionError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| archive_err(location, format!("{MANIFEST_FILE}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| archive_err(location, format!("{MANIFEST_FILE}: {e}")))
}

/// An index revision opened for search: an archive unpacked into a private directory (removed
/// when this is dropped), or a collection on a Qdrant server (`qdrant://`, feature
/// `remote-qdrant`). `serve` holds one per active revision, so a swap only changes which handle
/// new requests get.
pub struct LoadedRevision {
    manifest: Manifest,
    store: Box<dyn VectorStore>,
    location: String,
    shard: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl LoadedRevision {
    /// Fetches (if remote) and unpacks the archive at `location` under `scratch`, then opens it.
    pub async fn open(location: &str, scratch: &Path) -> Result<Self, RevisionError> {
        Self::open_with(location, scratch, EdgeStoreOptions::default()).await
    }

    pub async fn open_with(
        location: &str,
        scratch: &Path,
        options: EdgeStoreOptions,
    ) -> Result<Self, RevisionError> {
        if crate::store::is_remote(location) {
            return Self::open_remote(location);
        }
        std::fs::create_dir_all(scratch).map_err(|e| archive_err(scratch.display(), e))?;
        let dir = tempfile::Builder::new()
            .prefix("revision-")
            .tempdir_in(scratch)
            .map_err(|e| archive_err(scratch.display(), e))?;
        let parsed = Location::parse(location)?;
        let archive = storage::fetch(&parsed, &dir.path().join("download")).await?;
        let unpacked = dir.path().join("data");
        unpack(&archive, &unpacked)?;
        let manifest = read_manifest(&unpacked, location)?;
        let store = EdgeStore::open(&unpacked.join(SHARD_DIR), options)?;
        Self::checked(
            manifest,
            Box::new(store),
            parsed.to_string(),
            Some(unpacked.join(SHARD_DIR)),
            Some(dir),
        )
    }

    /// A revision collection (or the alias naming one) on a Qdrant server. The requests block
    /// this task briefly; revisions are opened rarely.
    #[cfg(feature = "remote-qdrant")]
    fn open_remote(location: &str) -> Result<Self, RevisionError> {
        use crate::store::remote::{QdrantLocation, RemoteStore};
        let parsed = QdrantLocation::parse(location).map_err(|e| archive_err(location, e))?;
        let (store, manifest) = RemoteStore::open(&parsed)?;
        let manifest: Manifest = serde_json::from_value(manifest)
            .map_err(|e| archive_err(location, format!("manifest in collection metadata: {e}")))?;
        let location = store.location().to_string();
        Self::checked(manifest, Box::new(store), location, None, None)
    }

    #[cfg(not(feature = "remote-qdrant"))]
    fn open_remote(location: &str) -> Result<Self, RevisionError> {
        Err(archive_err(
            location,
            "this build has no remote Qdrant support (cargo feature `remote-qdrant`)",
        ))
    }

    fn checked(
        manifest: Manifest,
        store: Box<dyn VectorStore>,
        location: String,
        shard: Option<PathBuf>,
        dir: Option<tempfile::TempDir>,
    ) -> Result<Self, RevisionError> {
        if store.count()? != manifest.chunks {
            return Err(archive_err(
                location,
                format!(
                    "manifest lists {} chunks but the shard holds {}",
                    manifest.chunks,
                    store.count()?
                ),
            ));
        }
        Ok(Self {
            manifest,
            store,
            location,
            shard,
            _dir: dir,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn revision(&self) -> &str {
        &self.manifest.revision
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn store(&self) -> &dyn VectorStore {
        self.store.as_ref()
    }

    /// The unpacked shard directory (`None` for a remote collection).
    pub fn shard_path(&self) -> Option<PathBuf> {
        self.shard.clone()
    }

    /// Nearest chunks to an embedded query, best first.
    pub fn search(&self, query: &[f32], top_k: usize) -> Result<Vec<SearchHit>, StoreError> {
        self.store.search(query, top_k)
    }
}
