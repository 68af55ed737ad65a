//! The leader's shutdown: on SIGTERM (a rolling update, a node drain) the operator stops its
//! controllers, releases its Lease so a standby takes over at once instead of waiting for the
//! lease to expire, and exits 0. Until `2d5384f` it never exited: the background loops (the
//! autoscaler's ticks, two watches) outlived the controllers and the Lease stayed held.

use anyhow::Result;
use hybrid_e2e::operator::{IDENTITY, Operator, install_chart_rbac, lease_holder as holder};
use hybrid_e2e::{Check, TestNamespace, client, install_crds, poll};
use k8s_openapi::api::coordination::v1::Lease;
use std::time::Duration;

const LEASE: &str = "hybrid-operator";

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

    // Not "controllers stopped": this operator also reconciles the objects of earlier tests'
    // namespaces still being deleted, and one of those may use up the 10 s grace (CI, 27 Nov:
    // a Corpus of corpus_refresh's namespace). The release is what a standby waits for.
    let log = op.stop("released the lease")?;
    assert_eq!(
        holder(&leases).await?,
        None,
        "the Lease is still held after the leader exited; log:\n{log}"
    );
    Ok(())
}

/// A standby (another replica holds the Lease) exits 0 on SIGTERM too, and leaves the Lease
/// to its holder. The operator listens for signals before it waits for leadership. Until this
/// test, each controller installed its own listener when first polled, and a SIGTERM between
/// two of those installs was never seen by the later ones: the leader ran on (CI, 27 Nov).
#[tokio::test]
async fn sigterm_stops_a_standby_and_leaves_the_lease_alone() -> Result<()> {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "standby").await?;
    let kubeconfig = install_chart_rbac(ns.name())?;
    let leases = ns.api::<Lease>();
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    leases
        .create(
            &Default::default(),
            &Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(LEASE.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("other-replica".into()),
                    lease_duration_seconds: Some(3600),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            },
        )
        .await?;
    let mut op = Operator::start(&kubeconfig, ns.name())?;
    let log_path = op.log.clone();
    poll(
        "the operator to wait for leadership",
        Duration::from_secs(60),
        || async {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Ok(if log.contains("waiting for leadership") {
                Check::Done(())
            } else {
                Check::Waiting("no \"waiting for leadership\" in its log".into())
            })
        },
    )
    .await?;

    let log = op.stop("stopped before acquiring leadership")?;
    assert_eq!(
        holder(&leases).await?.as_deref(),
        Some("other-replica"),
        "the standby touched the other replica's Lease; log:\n{log}"
    );
    Ok(())
}
