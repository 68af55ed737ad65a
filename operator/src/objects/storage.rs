//! Translating storage URIs of the API into what a pod sees.
//!
//! `pvc://<claim>/<path>` becomes a volume of that claim mounted at `/pvc/<claim>`, and the URI
//! becomes the local path `/pvc/<claim>/<path>`. Every pod the operator builds (index Jobs,
//! training Jobs, serving pods) uses the same mapping, so a location one pod reports (an index
//! archive, an adapter directory) is valid in every other pod. `file://` URIs are paths baked into
//! the image; `s3://` and `http(s)://` URIs are passed to the runtime as they are.

use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume, VolumeMount};
use std::collections::BTreeMap;

/// Mount root of PersistentVolumeClaims in every pod the operator builds.
pub const PVC_ROOT: &str = "/pvc";

/// What a storage URI needs in the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A path inside the pod (a mounted claim or the image's own filesystem).
    Local(String),
    /// A remote URI the runtime reads or writes itself.
    Remote(String),
}

impl Location {
    pub fn as_arg(&self) -> &str {
        match self {
            Location::Local(p) | Location::Remote(p) => p,
        }
    }
}

/// The PVC volumes a pod needs, keyed by claim. A claim used both read-only and writable is
/// mounted writable once.
#[derive(Clone, Debug, Default)]
pub struct ClaimMounts {
    claims: BTreeMap<String, bool>,
}

impl ClaimMounts {
    /// Resolves a URI, registering the claim it needs.
    pub fn resolve(&mut self, uri: &str, writable: bool) -> Result<Location> {
        if let Some(rest) = uri.strip_prefix("pvc://") {
            let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
            if claim.is_empty() {
                return Err(Error::InvalidSpec(format!(
                    "{uri:?} names no PersistentVolumeClaim; expected pvc://<claim>/<path>"
                )));
            }
            let w = self.claims.entry(claim.to_owned()).or_insert(false);
            *w |= writable;
            let path = path.trim_end_matches('/');
            Ok(Location::Local(if path.is_empty() {
                format!("{PVC_ROOT}/{claim}")
            } else {
                format!("{PVC_ROOT}/{claim}/{path}")
            }))
        } else if let Some(path) = uri.strip_prefix("file://") {
            Ok(Location::Local(path.to_owned()))
        } else if uri.starts_with("s3://")
            || uri.starts_with("http://")
            || uri.starts_with("https://")
        {
            Ok(Location::Remote(uri.to_owned()))
        } else {
            Err(Error::InvalidSpec(format!(
                "{uri:?} is not a pvc://, file://, s3:// or http(s):// URI"
            )))
        }
    }

    /// Registers a claim by name (PVC data sources name the claim directly).
    pub fn claim(&mut self, claim: &str, writable: bool) -> String {
        let w = self.claims.entry(claim.to_owned()).or_insert(false);
        *w |= writable;
        format!("{PVC_ROOT}/{claim}")
    }

    /// Volume names are DNS labels; claim names may be longer and contain dots, so volumes are
    /// numbered in claim-name order (stable for the same set of claims).
    pub fn volumes_and_mounts(&self) -> (Vec<Volume>, Vec<VolumeMount>) {
        self.claims
            .iter()
            .enumerate()
            .map(|(i, (claim, writable))| {
                let name = format!("pvc-{i}");
                (
                    Volume {
                        name: name.clone(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: claim.clone(),
                            read_only: Some(!writable),
                        }),
                        ..Default::default()
                    },
                    VolumeMount {
                        name,
                        mount_path: format!("{PVC_ROOT}/{claim}"),
                        read_only: Some(!writable),
                        ..Default::default()
                    },
                )
            })
            .unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvc_uris_become_paths_under_one_mount_per_claim() {
        let mut m = ClaimMounts::default();
        assert_eq!(
            m.resolve("pvc://hybrid-models/all-MiniLM-L6-v2", false)
                .expect("ok"),
            Location::Local("/pvc/hybrid-models/all-MiniLM-L6-v2".into())
        );
        assert_eq!(
            m.resolve("pvc://hybrid-artifacts/indexes/", true)
                .expect("ok"),
            Location::Local("/pvc/hybrid-artifacts/indexes".into())
        );
        m.resolve("pvc://hybrid-models/other", false).expect("ok");
        let (volumes, mounts) = m.volumes_and_mounts();
        assert_eq!(volumes.len(), 2, "one volume per claim");
        let artifacts = mounts
            .iter()
            .find(|m| m.mount_path == "/pvc/hybrid-artifacts")
            .expect("artifacts mounted");
        assert_eq!(artifacts.read_only, Some(false));
        let models = mounts
            .iter()
            .find(|m| m.mount_path == "/pvc/hybrid-models")
            .expect("models mounted");
        assert_eq!(models.read_only, Some(true));
    }

    #[test]
    fn remote_and_file_uris_need_no_volume() {
        let mut m = ClaimMounts::default();
        assert_eq!(
            m.resolve("s3://bucket/x", true).expect("ok"),
            Location::Remote("s3://bucket/x".into())
        );
        assert_eq!(
            m.resolve("file:///models/m.gguf", false).expect("ok"),
            Location::Local("/models/m.gguf".into())
        );
        assert!(m.volumes_and_mounts().0.is_empty());
        assert!(m.resolve("ftp://x/y", false).is_err());
        assert!(m.resolve("pvc:///x", false).is_err());
    }
}
