//! What the serving pods report they have loaded (the contract's loaded-revisions report, which
//! each runtime writes on its own Pod), folded into `status.loaded` and the `Serving` condition.

use crate::cluster::cached_objects::ServingPod;
use hybrid_contract::loaded::{self as contract, LOADED_REVISIONS_ANNOTATION};
use hybrid_crds::model::{LoadedRevisions, NamedRevision};

/// The verdict over a HybridModel's ready serving pods.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedReport {
    /// What every ready pod reports when they agree; otherwise the report of the first pod (by
    /// name) that lags behind the desired serving revision. None when no ready pod reported.
    pub loaded: Option<LoadedRevisions>,
    /// Every ready pod (at least one) reports the desired serving revision.
    pub all_loaded: bool,
    /// Which pods lag and what they report, for the condition message.
    pub message: String,
}

/// A pod's report; `Err` says why it is unusable (absent, not JSON, wrong shape).
pub fn report(pod: &ServingPod) -> Result<LoadedRevisions, String> {
    let raw = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOADED_REVISIONS_ANNOTATION))
        .ok_or_else(|| "no report yet".to_owned())?;
    contract::LoadedRevisions::from_annotation(raw).map(status_of)
}

/// A report as `status.loaded` shows it.
pub fn status_of(report: contract::LoadedRevisions) -> LoadedRevisions {
    let named = |list: Vec<contract::NamedRevision>| {
        list.into_iter()
            .map(|r| NamedRevision {
                name: r.name,
                revision: r.revision,
            })
            .collect()
    };
    LoadedRevisions {
        serving_revision: Some(report.serving_revision).filter(|s| !s.is_empty()),
        adapters: named(report.adapters),
        indexes: named(report.indexes),
        device: report.device,
    }
}

/// Folds the ready pods' reports. `pods` are the HybridModel's serving pods (any state).
pub fn fold(pods: &[&ServingPod], desired_serving_revision: &str) -> LoadedReport {
    let mut ready: Vec<&ServingPod> = pods.iter().copied().filter(|p| p.is_ready()).collect();
    ready.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    if ready.is_empty() {
        return LoadedReport {
            loaded: None,
            all_loaded: false,
            message: "no ready serving pod has reported its loaded revisions".to_owned(),
        };
    }
    let mut lagging = Vec::new();
    let mut first_lagging_report = None;
    let mut agreed = None;
    for pod in &ready {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        match report(pod) {
            Ok(r) if r.serving_revision.as_deref() == Some(desired_serving_revision) => {
                agreed.get_or_insert(r);
            }
            Ok(r) => {
                lagging.push(format!(
                    "{name} reports {}",
                    r.serving_revision
                        .as_deref()
                        .unwrap_or("no serving revision")
                ));
                first_lagging_report.get_or_insert(r);
            }
            Err(why) => lagging.push(format!("{name}: {why}")),
        }
    }
    let total = ready.len();
    if lagging.is_empty() {
        return LoadedReport {
            loaded: agreed,
            all_loaded: true,
            message: format!(
                "{total}/{total} ready pods report serving revision {desired_serving_revision}"
            ),
        };
    }
    let shown: Vec<String> = lagging.iter().take(5).cloned().collect();
    let more = lagging.len().saturating_sub(shown.len());
    LoadedReport {
        loaded: first_lagging_report,
        all_loaded: false,
        message: format!(
            "{}/{total} ready pods report serving revision {desired_serving_revision}; waiting for {}{}",
            total - lagging.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, annotation: Option<&str>) -> ServingPod {
        let mut p: ServingPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .expect("pod");
        if let Some(a) = annotation {
            p.metadata.annotations =
                Some([(LOADED_REVISIONS_ANNOTATION.to_owned(), a.to_owned())].into());
        }
        p
    }

    const NEW: &str = r#"{"servingRevision":"sr-2","adapters":[{"name":"a","revision":"ad-2"}],"indexes":[{"name":"c","revision":"ix-2"}]}"#;
    const OLD: &str = r#"{"servingRevision":"sr-1","adapters":[{"name":"a","revision":"ad-1"}],"indexes":[{"name":"c","revision":"ix-1"}]}"#;

    #[test]
    fn all_ready_pods_on_the_desired_revision_are_loaded() {
        let (a, b) = (pod("p-a", true, Some(NEW)), pod("p-b", true, Some(NEW)));
        let r = fold(&[&a, &b], "sr-2");
        assert!(r.all_loaded, "{}", r.message);
        let loaded = r.loaded.expect("loaded");
        assert_eq!(loaded.serving_revision.as_deref(), Some("sr-2"));
        assert_eq!(loaded.adapters[0].revision, "ad-2");
        assert_eq!(loaded.indexes[0].name, "c");
    }

    #[test]
    fn a_lagging_pod_is_shown_and_named() {
        let (a, b) = (pod("p-a", true, Some(NEW)), pod("p-b", true, Some(OLD)));
        let r = fold(&[&a, &b], "sr-2");
        assert!(!r.all_loaded);
        assert_eq!(
            r.loaded.expect("loaded").serving_revision.as_deref(),
            Some("sr-1"),
            "the oldest report while a swap rolls"
        );
        assert!(r.message.contains("1/2"), "{}", r.message);
        assert!(r.message.contains("p-b reports sr-1"), "{}", r.message);
    }

    #[test]
    fn missing_or_broken_reports_and_unready_pods() {
        let silent = pod("p-a", true, None);
        let broken = pod("p-b", true, Some("{not json"));
        let unready = pod("p-c", false, Some(OLD));
        let r = fold(&[&silent, &broken, &unready], "sr-2");
        assert!(!r.all_loaded);
        assert_eq!(r.loaded, None);
        assert!(r.message.contains("0/2"), "{}", r.message);
        assert!(r.message.contains("p-a: no report yet"), "{}", r.message);
        assert!(
            r.message
                .contains("p-b: unreadable hybrid.dev/loaded-revisions"),
            "{}",
            r.message
        );
        assert!(!fold(&[&unready], "sr-1").all_loaded, "not ready: ignored");
        assert!(!fold(&[], "sr-1").all_loaded);
    }
}
