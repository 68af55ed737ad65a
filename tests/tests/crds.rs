//! The project's CRDs on a real kube-apiserver: they install and become Established, the
//! examples validate as the API promises, and `kubectl explain` shows our field docs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hybrid_crds::{Adapter, Corpus, HybridModel, ServingPolicy};
use hybrid_e2e::{
    Check, TestNamespace, client, install_crds, kubectl, parse_yaml, poll, repo_root, yaml_files,
};
use kube::CustomResourceExt;

/// Every `*.yaml` under `dir`, recursively, sorted.
fn yaml_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = yaml_files(dir).expect("read examples dir");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                files.extend(yaml_files_under(&entry.path()));
            }
        }
    }
    files.sort();
    files
}

fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// The `# expect: <substring>` lines at the top of an invalid example.
fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .map_while(|line| line.strip_prefix('#'))
        .filter_map(|comment| comment.trim().strip_prefix("expect:"))
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect()
}

/// `kubectl apply --dry-run=server` of one file; the namespace is passed only when the file
/// does not name its own.
fn dry_run_apply(file: &Path, namespace: &str) -> hybrid_e2e::KubectlOutput {
    // An overlay (examples/finance/local) is what it renders to, as its comment tells users.
    let rendered;
    let file = if file.file_name().is_some_and(|n| n == "kustomization.yaml") {
        let dir = file
            .parent()
            .expect("overlay dir")
            .to_str()
            .expect("UTF-8 path");
        let out = kubectl(["kustomize", "--load-restrictor=LoadRestrictionsNone", dir])
            .expect("run kubectl kustomize");
        assert!(out.success, "kubectl kustomize {dir}: {}", out.stderr);
        rendered = std::env::temp_dir().join(format!("overlay-{}.yaml", std::process::id()));
        std::fs::write(&rendered, &out.stdout).expect("write rendered overlay");
        rendered.as_path()
    } else {
        file
    };
    let text = std::fs::read_to_string(file).expect("read example");
    let names_namespace = parse_yaml(&text)
        .map(|objects| objects.iter().any(|o| o.metadata.namespace.is_some()))
        .unwrap_or(false);
    let mut args = vec!["apply", "--dry-run=server", "-f"];
    let path = file.to_str().expect("UTF-8 path");
    args.push(path);
    if !names_namespace {
        args.extend(["-n", namespace]);
    }
    kubectl(&args).expect("run kubectl")
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let client = client().await.expect("cluster client");
    let mut installed = install_crds(&client).await.expect("install CRDs");
    installed.sort();
    let mut expected = vec![
        Adapter::crd_name().to_owned(),
        Corpus::crd_name().to_owned(),
        HybridModel::crd_name().to_owned(),
        ServingPolicy::crd_name().to_owned(),
    ];
    expected.sort();
    assert_eq!(
        installed, expected,
        "the chart's CRDs are not the four API kinds"
    );
}

#[tokio::test]
async fn valid_examples_are_accepted_by_server_side_dry_run() {
    let client = client().await.expect("cluster client");
    install_crds(&client).await.expect("install CRDs");
    let ns = TestNamespace::create(&client, "examples")
        .await
        .expect("namespace");
    let invalid = examples_dir().join("invalid");
    let files: Vec<PathBuf> = yaml_files_under(&examples_dir())
        .into_iter()
        .filter(|f| !f.starts_with(&invalid))
        .collect();
    assert!(
        !files.is_empty(),
        "no examples under {}",
        examples_dir().display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let out = dry_run_apply(file, ns.name());
        if !out.success {
            failures.push(format!("{}:\n{}", file.display(), out.stderr.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "examples rejected:\n{}",
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn invalid_examples_are_rejected_with_their_expected_message() {
    let client = client().await.expect("cluster client");
    install_crds(&client).await.expect("install CRDs");
    let ns = TestNamespace::create(&client, "invalid")
        .await
        .expect("namespace");
    let files = yaml_files(&examples_dir().join("invalid")).expect("read examples/invalid");
    assert!(!files.is_empty(), "no examples in examples/invalid");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read example");
        let expected = expectations(&text);
        if expected.is_empty() {
            failures.push(format!("{}: no `# expect: …` line", file.display()));
            continue;
        }
        let out = dry_run_apply(file, ns.name());
        if out.success {
            failures.push(format!(
                "{}: accepted, expected a rejection",
                file.display()
            ));
            continue;
        }
        let missing: Vec<&String> = expected
            .iter()
            .filter(|e| !out.stderr.contains(e.as_str()))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{}: error lacks {missing:?}:\n{}",
                file.display(),
                out.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn kubectl_explain_shows_the_adapter_refs_description() {
    let client = client().await.expect("cluster client");
    install_crds(&client).await.expect("install CRDs");
    // The OpenAPI document picks up a new CRD a moment after it is Established.
    let explained = poll(
        "kubectl explain hybridmodel.spec.adapterRefs",
        Duration::from_secs(60),
        || async {
            let out = kubectl(["explain", "hybridmodel.spec.adapterRefs"])?;
            Ok(if out.success {
                Check::Done(out.stdout)
            } else {
                Check::Waiting(out.stderr)
            })
        },
    )
    .await
    .expect("kubectl explain");
    assert!(
        explained.contains("Adapters to serve"),
        "kubectl explain does not show the field's doc comment:\n{explained}"
    );
}

#[test]
fn expectations_are_read_from_the_leading_comments_only() {
    let text = "# expect: spec.adapterRefs\n#expect:  must be unique \n# other\napiVersion: v1\n# expect: no\n";
    assert_eq!(expectations(text), ["spec.adapterRefs", "must be unique"]);
}
