//! The rendered Helm chart against the real API server: every object it renders is admitted
//! by a server-side dry run (after the chart's CRDs are installed).

use std::process::Command;

use hybrid_e2e::{
    TestNamespace, client, dry_run_apply_yaml, install_crds, parse_yaml, repo_root, resolve_kind,
};

const OPTIONAL_GROUPS: &[&str] = &["monitoring.coreos.com"];

#[tokio::test]
async fn rendered_chart_passes_server_side_dry_run() {
    let chart = repo_root().join("charts/hybrid-operator");
    assert!(
        chart.join("Chart.yaml").is_file(),
        "no chart at {}",
        chart.display()
    );
    let client = client().await.expect("cluster client");
    install_crds(&client).await.expect("install CRDs");
    let ns = TestNamespace::create(&client, "chart")
        .await
        .expect("namespace");

    let helm = std::env::var_os("HELM").unwrap_or_else(|| "helm".into());
    // Render for this cluster's version (helm built from source otherwise assumes v1.20).
    let version = client.apiserver_version().await.expect("server version");
    let rendered = Command::new(&helm)
        .args(["template", "hybrid-operator"])
        .arg(&chart)
        .args([
            "--namespace",
            ns.name(),
            "--kube-version",
            &version.git_version,
        ])
        .output()
        .expect("run helm (make e2e sets HELM)");
    assert!(
        rendered.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let rendered = String::from_utf8(rendered.stdout).expect("UTF-8 manifest");
    let objects = parse_yaml(&rendered).expect("rendered chart is YAML objects");
    assert!(!objects.is_empty(), "the chart renders nothing");

    let mut skipped = Vec::new();
    for object in objects {
        let types = object.types.clone().expect("apiVersion and kind");
        let group = types.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let qualified = if group.is_empty() {
            types.kind.clone()
        } else {
            format!("{}.{group}", types.kind)
        };
        // The Prometheus Operator's kinds are optional in the chart and not served here.
        if OPTIONAL_GROUPS.contains(&group) && resolve_kind(&client, &qualified).await.is_err() {
            skipped.push(qualified);
            continue;
        }
        let yaml = serde_yaml::to_string(&object).expect("serialize");
        dry_run_apply_yaml(&client, Some(ns.name()), &yaml)
            .await
            .unwrap_or_else(|e| panic!("{qualified} {:?} rejected: {e:#}", object.metadata.name));
    }
    if !skipped.is_empty() {
        eprintln!("not served by this cluster, not dry-run: {skipped:?}");
    }
}
