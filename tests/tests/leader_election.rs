//! The leader's shutdown: on SIGTERM (a rolling update, a node drain) the operator stops its
//! controllers, releases its Lease so a standby takes over at once instead of waiting for the
//! lease to expire, and exits 0. Until `2d5384f` it never exited: the background loops (the
//! autoscaler's ticks, two watches) outlived the controllers and the Lease stayed held.

use anyhow::Result;
use hybrid_e2e::operator::{Operator, install_chart_rbac};
use hybrid_e2e::{Check, TestNamespace, client, install_crds, poll};
use k8s_openapi::api::coordination::v1::Lease;
use std::time::{Duration, Instant};

const LEASE: &str = "hybrid-operator";
const IDENTITY: &str = "e2e-operator";

async fn holder(leases: &kube::Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

#[tokio::test]
async fn sigterm_releases_the_lease_and_exits() -> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "lease").await?;
    let kubeconfig = install_chart_rbac(ns.name())?;
    let mut op = Operator::start(&kubeconfig, ns.name())?;
    let leases = ns.api::<Lease>();

    poll(
        "the operator to hold its Lease",
        Duration::from_secs(60),
        || async {
            Ok(match holder(&leases).await? {
                Some(h) if h == IDENTITY => Check::Done(()),
                other => Check::Waiting(format!("holder {other:?}")),
            })
        },
    )
    .await?;

    let sent = Instant::now();
    op.terminate()?;
    // A bound for a process that hangs, not a timing assertion: the release takes one request.
    let (code, log) = op.wait_exit(Duration::from_secs(30))?;
    eprintln!(
        "operator exited {:.2} s after SIGTERM",
        sent.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "exit code after SIGTERM; log:\n{log}");
    assert!(
        log.contains("controllers stopped"),
        "the controllers did not report stopping; log:\n{log}"
    );
    assert_eq!(
        holder(&leases).await?,
        None,
        "the Lease is still held after the leader exited; log:\n{log}"
    );
    Ok(())
}
