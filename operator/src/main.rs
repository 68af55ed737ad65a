//! `hybrid-operator`: reconciles Corpus, Adapter, ServingPolicy and HybridModel resources.
//!
//! The controllers are not written yet; this binary only checks that the CRDs are installed,
//! so that a broken install is reported with the command that fixes it.

use hybrid_crds::{Adapter, Corpus, HybridModel, ServingPolicy};
use kube::{Api, Client, api::ListParams};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let client = Client::try_default().await?;
    let lp = ListParams::default().limit(1);
    let missing = [
        (
            "corpora.hybrid.dev",
            Api::<Corpus>::all(client.clone()).list(&lp).await.is_err(),
        ),
        (
            "adapters.hybrid.dev",
            Api::<Adapter>::all(client.clone()).list(&lp).await.is_err(),
        ),
        (
            "servingpolicies.hybrid.dev",
            Api::<ServingPolicy>::all(client.clone())
                .list(&lp)
                .await
                .is_err(),
        ),
        (
            "hybridmodels.hybrid.dev",
            Api::<HybridModel>::all(client).list(&lp).await.is_err(),
        ),
    ];
    let missing: Vec<_> = missing
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "CRDs not installed or not readable: {}. Install them with `kubectl apply --server-side -f charts/hybrid-operator/crds/`",
            missing.join(", ")
        );
    }
    tracing::info!("CRDs present; controllers are not implemented yet");
    Ok(())
}
