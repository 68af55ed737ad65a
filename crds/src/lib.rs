//! API types of hybrid-operator, group `hybrid.dev`, version `v1alpha1`.
//!
//! Four namespaced kinds: [`Corpus`] (documents and their index), [`Adapter`] (a LoRA adapter and
//! its training data), [`ServingPolicy`] (latency SLO and scaling levers) and [`HybridModel`] (the
//! deployment that binds them). Doc comments on fields are the user documentation: they become
//! `kubectl explain` text and `docs/api.md`.

pub mod adapter;
pub mod common;
pub mod conditions;
pub mod corpus;
pub mod model;
pub mod policy;

pub use adapter::{Adapter, AdapterSpec, AdapterStatus};
pub use corpus::{Corpus, CorpusSpec, CorpusStatus};
pub use model::{HybridModel, HybridModelSpec, HybridModelStatus};
pub use policy::{ServingPolicy, ServingPolicySpec, ServingPolicyStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every kind.
pub const GROUP: &str = "hybrid.dev";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";

/// The CRDs of all four kinds, in a stable order, as installed by the Helm chart.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        Corpus::crd(),
        Adapter::crd(),
        ServingPolicy::crd(),
        HybridModel::crd(),
    ]
    .into_iter()
    .map(reflow_descriptions)
    .collect()
}

/// Doc comments are wrapped at 100 columns in the source; `kubectl explain` wraps again, so keep
/// only paragraph breaks and let it do the wrapping.
fn reflow_descriptions(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn reflow(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(s) if k == "description" => {
                            *s = s
                                .split("\n\n")
                                .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
                                .collect::<Vec<_>>()
                                .join("\n\n");
                        }
                        _ => reflow(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(reflow),
            _ => {}
        }
    }
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            let Ok(mut value) = serde_json::to_value(&*schema) else {
                continue;
            };
            reflow(&mut value);
            if let Ok(reflowed) = serde_json::from_value(value) {
                *schema = reflowed;
            }
        }
    }
    crd
}
