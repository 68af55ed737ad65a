//! Shutdown with a reconcile that does not finish. Its own test binary: every operator the
//! tests start watches all namespaces, and the silent source here would hold up the shutdown of
//! the operators in `leader_election` too (their clean stop is what those tests check).

use anyhow::Result;
use hybrid_e2e::operator::{IDENTITY, Operator, install_chart_rbac, lease_holder as holder};
use hybrid_e2e::{Check, TestNamespace, client, install_crds, poll};
use k8s_openapi::api::coordination::v1::Lease;
use std::time::Duration;

/// A reconcile that does not finish (here: an HTTP source whose server accepts the connection
/// and never answers, under the operator's 30 s fetch timeout) does not keep the leader from
/// exiting: after 10 s of grace it stops without the reconcile and releases the Lease.
#[tokio::test]
async fn a_stuck_reconcile_does_not_keep_the_leader_from_exiting() -> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "stuck").await?;
    let kubeconfig = install_chart_rbac(ns.name())?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/docs.md", listener.local_addr()?);
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::spawn({
        let accepted = accepted.clone();
        move || {
            for stream in listener.incoming().flatten() {
                // Held open, never answered.
                accepted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(stream);
            }
        }
    });
    ns.apply_yaml(&format!(
        "apiVersion: hybrid.dev/v1alpha1\nkind: Corpus\nmetadata: {{name: silent}}\n\
         spec:\n  sources:\n  - http: {{url: \"{url}\"}}\n\
         \x20 embedding: {{model: pvc://hybrid-models/all-MiniLM-L6-v2, dimensions: 384}}\n"
    ))
    .await?;

    let mut op = Operator::start(&kubeconfig, ns.name())?;
    let leases = ns.api::<Lease>();
    poll(
        "the leader to be fetching the silent source",
        Duration::from_secs(60),
        || async {
            let fetching = !accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            Ok(match holder(&leases).await? {
                Some(h) if h == IDENTITY && fetching => Check::Done(()),
                other => Check::Waiting(format!("holder {other:?}, fetching: {fetching}")),
            })
        },
    )
    .await?;

    let log = op.stop("reconciles still running")?;
    assert_eq!(
        holder(&leases).await?,
        None,
        "the Lease is still held after the leader exited; log:\n{log}"
    );
    Ok(())
}
