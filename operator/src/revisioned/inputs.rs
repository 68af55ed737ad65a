//! Content revisions: which index or adapter the spec asks for, as a digest of everything that
//! changes the result. Same inputs, same revision; so an unchanged Corpus never reindexes and an
//! unchanged Adapter never retrains, across operator restarts too.

use crate::digest::{ContentDigest, sha256_hex};
use crate::error::{Error, Result};
use hybrid_crds::common::{ConfigMapSource, DataSource};
use hybrid_crds::{AdapterSpec, CorpusSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;

/// ConfigMaps referenced by a resource's sources, by name, as read from the cluster.
pub type ConfigMaps = BTreeMap<String, ConfigMap>;

/// The documents of a ConfigMap source: key → sha256 of its value, sorted by key. `data` and
/// `binaryData` are both documents; `keys` selects a subset.
pub fn config_map_documents(
    source: &ConfigMapSource,
    config_maps: &ConfigMaps,
) -> Result<BTreeMap<String, String>> {
    let cm = config_maps
        .get(&source.name)
        .ok_or_else(|| Error::ReferenceNotFound {
            kind: "ConfigMap",
            name: source.name.clone(),
        })?;
    let mut all = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        all.insert(k.clone(), sha256_hex(v));
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        all.insert(k.clone(), sha256_hex(&v.0));
    }
    let selected = match source.keys.as_deref() {
        None | Some([]) => all,
        Some(keys) => {
            let mut selected = BTreeMap::new();
            for key in keys {
                let digest = all.get(key).ok_or_else(|| {
                    Error::SourceUnreadable(format!(
                        "ConfigMap {:?} has no key {key:?}",
                        source.name
                    ))
                })?;
                selected.insert(key.clone(), digest.clone());
            }
            selected
        }
    };
    if selected.is_empty() {
        return Err(Error::SourceUnreadable(format!(
            "ConfigMap {:?} has no documents",
            source.name
        )));
    }
    Ok(selected)
}

/// What the operator learned of the sources it cannot read from the API server: the HTTP
/// bodies it fetched and the scan Job's digest of the PVC and S3 sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteDigests {
    /// sha256 of each HTTP source's body, by URL.
    pub http: BTreeMap<String, String>,
    /// Digest of the listing of the PVC and S3 sources; None when the Corpus has none.
    pub scan: Option<String>,
}

/// Adds sources to a digest: ConfigMap sources by their documents' contents (the operator reads
/// them); HTTP sources by their spec and, when `http` is given, their body digest; PVC and S3
/// sources by their spec (their contents enter through the scan digest).
fn digest_sources(
    d: &mut ContentDigest,
    sources: &[DataSource],
    config_maps: &ConfigMaps,
    http: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    for (i, source) in sources.iter().enumerate() {
        d.field("source", i.to_string());
        match (&source.config_map, &source.http, http) {
            (Some(cm), _, _) => {
                for (key, digest) in config_map_documents(cm, config_maps)? {
                    d.field("document", key).field("sha256", digest);
                }
            }
            (None, Some(src), Some(bodies)) => {
                let body = bodies.get(&src.url).ok_or_else(|| {
                    Error::SourceUnreadable(format!("{} has not been fetched yet", src.url))
                })?;
                d.json_field("spec", source)?;
                d.field("sha256", body);
            }
            _ => {
                d.json_field("spec", source)?;
            }
        }
    }
    Ok(())
}

/// The Corpus content revision: sources (with the HTTP and scan digests), chunking, and
/// embedding model and dimensions. A Corpus with only ConfigMap sources writes no remote field,
/// so its revision is the one earlier operator versions computed.
pub fn corpus_content_revision(
    spec: &CorpusSpec,
    config_maps: &ConfigMaps,
    remote: &RemoteDigests,
) -> Result<String> {
    let mut d = ContentDigest::new("hybrid.dev/corpus-content/v1");
    digest_sources(&mut d, &spec.sources, config_maps, Some(&remote.http))?;
    d.json_field("chunking", &spec.chunking)?;
    d.field("embedding.model", &spec.embedding.model).field(
        "embedding.dimensions",
        spec.embedding.dimensions.to_string(),
    );
    if let Some(scan) = &remote.scan {
        d.field("scan", scan);
    }
    Ok(d.finish_revision())
}

/// Digest of an Adapter's dataset contents alone (reported in status and lineage): ConfigMap
/// datasets by their documents, HTTP datasets by the body the operator fetched, PVC and S3
/// datasets by the scan Job's listing. An Adapter with only ConfigMap datasets writes no remote
/// field, so its digest (and training revision) is the one earlier operator versions computed.
pub fn dataset_digest(
    sources: &[DataSource],
    config_maps: &ConfigMaps,
    remote: &RemoteDigests,
) -> Result<String> {
    let mut d = ContentDigest::new("hybrid.dev/dataset/v1");
    digest_sources(&mut d, sources, config_maps, Some(&remote.http))?;
    if let Some(scan) = &remote.scan {
        d.field("scan", scan);
    }
    Ok(d.finish_revision())
}

/// The Adapter training revision: dataset digest, hyperparameters, method, trainer and base
/// model. Resources and placement are left out: where a run happens does not change the adapter.
pub fn training_revision(spec: &AdapterSpec, dataset_digest: &str) -> Result<String> {
    let mut d = ContentDigest::new("hybrid.dev/training/v1");
    d.field("dataset", dataset_digest);
    d.json_field("hyperparameters", &spec.hyperparameters)?;
    d.json_field("method", &spec.method)?;
    d.json_field("trainer", &spec.trainer)?;
    d.json_field("baseModel", &spec.base_model)?;
    Ok(d.finish_revision())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::*;

    fn cms(yamls: &[&str]) -> ConfigMaps {
        yamls
            .iter()
            .map(|y| {
                let cm = config_map(y);
                (cm.metadata.name.clone().expect("name"), cm)
            })
            .collect()
    }

    fn none() -> RemoteDigests {
        RemoteDigests::default()
    }

    #[test]
    fn corpus_revision_follows_document_contents_only() {
        let corpus = corpus(FINANCE_CORPUS);
        let base =
            corpus_content_revision(&corpus.spec, &cms(&[FINANCE_CM]), &none()).expect("rev");

        // Same contents, keys listed in another order in the YAML: same revision.
        let reordered = FINANCE_CM.replace(
            "  a.md: \"# A\\nalpha\"\n  b.md: \"# B\\nbeta\"",
            "  b.md: \"# B\\nbeta\"\n  a.md: \"# A\\nalpha\"",
        );
        assert_ne!(reordered, FINANCE_CM, "fixture edit applied");
        assert_eq!(
            corpus_content_revision(&corpus.spec, &cms(&[&reordered]), &none()).expect("rev"),
            base
        );

        // One edited document: new revision.
        let edited = FINANCE_CM.replace("beta", "beta, revised");
        assert_ne!(
            corpus_content_revision(&corpus.spec, &cms(&[&edited]), &none()).expect("rev"),
            base
        );

        // A label on the ConfigMap is not content.
        let labelled = FINANCE_CM.replace("namespace: demo}", "namespace: demo, labels: {x: y}}");
        assert_eq!(
            corpus_content_revision(&corpus.spec, &cms(&[&labelled]), &none()).expect("rev"),
            base
        );
    }

    #[test]
    fn corpus_revision_follows_chunking_embedding_and_source_specs() {
        let cms = cms(&[FINANCE_CM]);
        let base_corpus = corpus(FINANCE_CORPUS);
        let base = corpus_content_revision(&base_corpus.spec, &cms, &none()).expect("rev");
        for (from, to) in [
            ("size: 256", "size: 512"),
            ("strategy: markdown", "strategy: sentence"),
            ("dimensions: 384", "dimensions: 768"),
            ("all-MiniLM-L6-v2", "bge-small"),
            ("path: /docs", "path: /docs2"),
        ] {
            let changed = corpus(&FINANCE_CORPUS.replace(from, to));
            assert_ne!(
                corpus_content_revision(&changed.spec, &cms, &none()).expect("rev"),
                base,
                "{from} -> {to} must change the revision"
            );
        }
        // Resources and retention do not change what is indexed.
        let same = corpus(&FINANCE_CORPUS.replace("retainRevisions: 2", "retainRevisions: 5"));
        assert_eq!(
            corpus_content_revision(&same.spec, &cms, &none()).expect("rev"),
            base
        );
    }

    #[test]
    fn corpus_revision_includes_the_http_body_and_the_scan_digest() {
        let cms = cms(&[FINANCE_CM]);
        // The fixture's PVC source is scanned; add an HTTP source.
        let spec = corpus(&FINANCE_CORPUS.replace(
            "    - persistentVolumeClaim: {claimName: filings, path: /docs}",
            "    - persistentVolumeClaim: {claimName: filings, path: /docs}\n    - http: {url: https://example.com/rates.md}",
        ))
        .spec;
        let remote = |body: &str, scan: &str| RemoteDigests {
            http: BTreeMap::from([("https://example.com/rates.md".to_owned(), body.to_owned())]),
            scan: Some(scan.to_owned()),
        };
        let base = corpus_content_revision(&spec, &cms, &remote("b1", "s1")).expect("rev");
        assert_eq!(
            corpus_content_revision(&spec, &cms, &remote("b1", "s1")).expect("rev"),
            base,
            "same bodies and listing, same revision"
        );
        assert_ne!(
            corpus_content_revision(&spec, &cms, &remote("b2", "s1")).expect("rev"),
            base,
            "an edit at the URL is a new revision"
        );
        assert_ne!(
            corpus_content_revision(&spec, &cms, &remote("b1", "s2")).expect("rev"),
            base,
            "a changed listing is a new revision"
        );
        let err = corpus_content_revision(&spec, &cms, &RemoteDigests::default())
            .expect_err("not fetched");
        assert!(
            err.to_string().contains("https://example.com/rates.md"),
            "{err}"
        );
    }

    #[test]
    fn a_configmap_only_corpus_keeps_the_revision_earlier_versions_computed() {
        let spec = corpus(&FINANCE_CORPUS.replace(
            "    - persistentVolumeClaim: {claimName: filings, path: /docs}\n",
            "",
        ))
        .spec;
        assert_eq!(spec.sources.len(), 1);
        let mut d = ContentDigest::new("hybrid.dev/corpus-content/v1");
        d.field("source", "0");
        for (key, value) in [("a.md", "# A\nalpha"), ("b.md", "# B\nbeta")] {
            d.field("document", key).field("sha256", sha256_hex(value));
        }
        d.json_field("chunking", &spec.chunking).expect("json");
        d.field("embedding.model", &spec.embedding.model)
            .field("embedding.dimensions", "384");
        assert_eq!(
            corpus_content_revision(&spec, &cms(&[FINANCE_CM]), &none()).expect("rev"),
            d.finish_revision()
        );
    }

    #[test]
    fn missing_configmap_and_key_are_reported() {
        let corpus = corpus(FINANCE_CORPUS);
        let err = corpus_content_revision(&corpus.spec, &ConfigMaps::new(), &none())
            .expect_err("missing");
        assert_eq!(err.label(), "ReferenceNotFound");
        assert!(err.to_string().contains("finance-corpus"));

        let adapter = adapter(FINANCE_ADAPTER);
        let no_key = FINANCE_DATASET_CM.replace("train.jsonl", "other.jsonl");
        let err =
            dataset_digest(&adapter.spec.dataset, &cms(&[&no_key]), &none()).expect_err("no key");
        assert_eq!(err.label(), "SourceUnreadable");
        assert!(err.to_string().contains("train.jsonl"));
    }

    #[test]
    fn a_configmap_only_adapter_keeps_the_dataset_digest_earlier_versions_computed() {
        let adapter = adapter(FINANCE_ADAPTER);
        let mut d = ContentDigest::new("hybrid.dev/dataset/v1");
        d.field("source", "0");
        d.field("document", "train.jsonl").field(
            "sha256",
            sha256_hex(
                r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#,
            ),
        );
        assert_eq!(
            dataset_digest(&adapter.spec.dataset, &cms(&[FINANCE_DATASET_CM]), &none())
                .expect("ds"),
            d.finish_revision()
        );
    }

    #[test]
    fn dataset_digest_follows_the_http_body_and_the_scan_listing() {
        let spec = adapter(&FINANCE_ADAPTER.replace(
            "    - configMap: {name: finance-dataset, keys: [train.jsonl]}",
            "    - configMap: {name: finance-dataset, keys: [train.jsonl]}\n    - http: {url: https://example.com/chats.jsonl}\n    - persistentVolumeClaim: {claimName: chats, path: /train}",
        ))
        .spec;
        assert_eq!(spec.dataset.len(), 3, "fixture edit applied");
        let cms = cms(&[FINANCE_DATASET_CM]);
        let remote = |body: &str, scan: &str| RemoteDigests {
            http: BTreeMap::from([(
                "https://example.com/chats.jsonl".to_owned(),
                body.to_owned(),
            )]),
            scan: Some(scan.to_owned()),
        };
        let base = dataset_digest(&spec.dataset, &cms, &remote("b1", "s1")).expect("ds");
        assert_eq!(
            dataset_digest(&spec.dataset, &cms, &remote("b1", "s1")).expect("ds"),
            base,
            "same body and listing, same digest"
        );
        for (body, scan) in [("b2", "s1"), ("b1", "s2")] {
            let changed = dataset_digest(&spec.dataset, &cms, &remote(body, scan)).expect("ds");
            assert_ne!(changed, base, "body {body}, scan {scan}");
            assert_ne!(
                training_revision(&spec, &changed).expect("rev"),
                training_revision(&spec, &base).expect("rev"),
                "a changed dataset behind the same URL or path trains again"
            );
        }
        let err = dataset_digest(&spec.dataset, &cms, &RemoteDigests::default())
            .expect_err("not fetched");
        assert!(err.to_string().contains("chats.jsonl"), "{err}");
    }

    #[test]
    fn training_revision_ignores_unselected_keys_and_placement() {
        let adapter = adapter(FINANCE_ADAPTER);
        let ds = dataset_digest(&adapter.spec.dataset, &cms(&[FINANCE_DATASET_CM]), &none())
            .expect("ds");
        // README.md is not among `keys`, so editing it changes nothing.
        let readme = FINANCE_DATASET_CM.replace("not training data", "still not");
        assert_eq!(
            dataset_digest(&adapter.spec.dataset, &cms(&[&readme]), &none()).expect("ds"),
            ds
        );
        let rev = training_revision(&adapter.spec, &ds).expect("rev");
        let more_gpus =
            crate::objects::fixtures::adapter(&FINANCE_ADAPTER.replace("gpus: 2", "gpus: 4"));
        assert_eq!(training_revision(&more_gpus.spec, &ds).expect("rev"), rev);

        let rank =
            crate::objects::fixtures::adapter(&FINANCE_ADAPTER.replace("rank: 8", "rank: 16"));
        assert_ne!(training_revision(&rank.spec, &ds).expect("rev"), rev);
        let base = crate::objects::fixtures::adapter(
            &FINANCE_ADAPTER.replace("SmolLM2-135M", "SmolLM2-360M"),
        );
        assert_ne!(training_revision(&base.spec, &ds).expect("rev"), rev);
        assert_ne!(
            training_revision(&adapter.spec, "other-dataset").expect("rev"),
            rev
        );
    }
}
