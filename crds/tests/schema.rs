//! Schema checks that need no apiserver: generated files are fresh, the examples map onto the
//! Rust types without losing a field, and the CEL rules reject what `examples/invalid/` says they
//! reject. Structural checks (bounds, enums, patterns, unknown fields) are exercised against a
//! real kube-apiserver by the e2e suite.

use hybrid_crds::{Adapter, Corpus, HybridModel, ServingPolicy};
use kube::core::cel::Validator;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crds/ has a parent")
        .to_path_buf()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("readable example");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde_json::to_value(serde_yaml::Value::deserialize(d).expect("valid YAML"))
                .expect("JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn schema_for(kind: &str) -> Value {
    let crd = hybrid_crds::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("schema JSON")
}

/// Every leaf path of `input` must survive a round trip through the typed struct.
fn assert_nothing_dropped(path: &str, input: &Value, output: &Value) {
    match input {
        Value::Object(map) => {
            for (k, v) in map {
                let out = output
                    .get(k)
                    .unwrap_or_else(|| panic!("field `{path}.{k}` was dropped by the Rust types"));
                assert_nothing_dropped(&format!("{path}.{k}"), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                assert_nothing_dropped(&format!("{path}[{i}]"), v, &output[i]);
            }
        }
        Value::Number(n) => {
            let (a, b) = (n.as_f64(), output.as_f64());
            assert_eq!(a, b, "`{path}` changed in the round trip");
        }
        _ => assert_eq!(input, output, "`{path}` changed in the round trip"),
    }
}

fn roundtrip(doc: &Value) -> Value {
    let kind = doc["kind"].as_str().expect("kind");
    match kind {
        "Corpus" => {
            serde_json::to_value(serde_json::from_value::<Corpus>(doc.clone()).expect("Corpus"))
        }
        "Adapter" => {
            serde_json::to_value(serde_json::from_value::<Adapter>(doc.clone()).expect("Adapter"))
        }
        "ServingPolicy" => serde_json::to_value(
            serde_json::from_value::<ServingPolicy>(doc.clone()).expect("ServingPolicy"),
        ),
        "HybridModel" => serde_json::to_value(
            serde_json::from_value::<HybridModel>(doc.clone()).expect("HybridModel"),
        ),
        other => panic!("unexpected kind {other}"),
    }
    .expect("serializes")
}

#[test]
fn generated_files_are_fresh() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .current_dir(repo_root())
        .arg("--check")
        .output()
        .expect("crdgen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn valid_examples_roundtrip_and_pass_cel() {
    let mut checked = 0;
    for path in yaml_files(&repo_root().join("examples")) {
        if path.components().any(|c| c.as_os_str() == "invalid") {
            continue;
        }
        for doc in documents(&path) {
            if doc["apiVersion"] != "hybrid.dev/v1alpha1" {
                continue;
            }
            let out = roundtrip(&doc);
            assert_nothing_dropped(&path.display().to_string(), &doc["spec"], &out["spec"]);
            let kind = doc["kind"].as_str().expect("kind");
            let errors = Validator::new().validate_with_defaults(&schema_for(kind), &doc, None);
            assert!(
                errors.is_ok(),
                "{}: CEL rejected a valid example: {errors:?}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "expected the finance and clinical examples, found {checked} resources"
    );
}

/// Messages of every CEL rule in the CRDs.
fn cel_messages() -> Vec<String> {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
                    out.extend(
                        rules
                            .iter()
                            .filter_map(|r| r["message"].as_str().map(str::to_owned)),
                    );
                }
                m.values().for_each(|c| collect(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| collect(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for kind in ["Corpus", "Adapter", "ServingPolicy", "HybridModel"] {
        collect(&schema_for(kind), &mut out);
    }
    out
}

#[test]
fn invalid_examples_declare_expectations_and_cel_rejects_them() {
    let messages = cel_messages();
    let files = yaml_files(&repo_root().join("examples/invalid"));
    assert!(
        files.len() >= 30,
        "examples/invalid must hold at least 30 manifests, found {}",
        files.len()
    );
    let mut cel_checked = 0;
    let mut covered = std::collections::BTreeSet::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            path.display()
        );
        let docs = documents(&path);
        assert_eq!(
            docs.len(),
            1,
            "{} must hold exactly one resource",
            path.display()
        );
        let doc = &docs[0];
        // Files whose expectation is one of our CEL messages are checked here; the others
        // (bounds, enums, patterns, unknown fields) only by the apiserver in the e2e suite.
        if !expects
            .iter()
            .any(|e| messages.iter().any(|m| m.contains(e)))
        {
            continue;
        }
        let kind = doc["kind"].as_str().expect("kind");
        let errors = match Validator::new().validate_with_defaults(&schema_for(kind), doc, None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_vec(),
        };
        let rendered: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect();
        for e in &expects {
            assert!(
                rendered.iter().any(|r| r.contains(e)),
                "{}: expected a CEL error containing {e:?}, got {rendered:?}",
                path.display()
            );
        }
        covered.extend(errors.into_iter().map(|e| e.message));
        cel_checked += 1;
    }
    assert!(
        cel_checked >= 15,
        "only {cel_checked} invalid examples exercise CEL rules"
    );
    let uncovered: Vec<_> = messages.iter().filter(|m| !covered.contains(*m)).collect();
    assert!(
        uncovered.is_empty(),
        "CEL rules without an invalid example: {uncovered:?}"
    );
}

#[test]
fn every_field_is_documented() {
    fn check(path: &str, v: &Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (k, child) in props {
                let p = format!("{path}.{k}");
                if child.get("description").is_none()
                    && !p.ends_with(".metadata")
                    && !p.ends_with(".apiVersion")
                    && !p.ends_with(".kind")
                {
                    missing.push(p.clone());
                }
                // Kubernetes' own types (tolerations, env, resources) carry upstream docs.
                let upstream = ["tolerations", "env", "resources", "conditions"]
                    .contains(&k.as_str())
                    && child.get("items").or(child.get("properties")).is_some()
                    && !p.contains("spec.resources");
                if !upstream {
                    check(&p, child, missing);
                    if let Some(items) = child.get("items") {
                        check(&format!("{p}[]"), items, missing);
                    }
                }
            }
        }
    }
    let mut missing = Vec::new();
    for kind in ["Corpus", "Adapter", "ServingPolicy", "HybridModel"] {
        check(kind, &schema_for(kind), &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description (kubectl explain would be empty): {missing:?}"
    );
}

#[test]
fn kinds_share_the_hybrid_category_and_have_short_names() {
    for crd in hybrid_crds::crds() {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["hybrid".to_owned()][..]),
            "{}",
            names.kind
        );
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{} has no short name",
            names.kind
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} lacks /status",
            names.kind
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            columns.contains(&"Ready") && columns.contains(&"Age"),
            "{} columns: {columns:?}",
            names.kind
        );
    }
    let hm = HybridModel::crd_scale();
    assert_eq!(hm.as_deref(), Some(".spec.replicas"));
}

trait ScalePath {
    fn crd_scale() -> Option<String>;
}

impl ScalePath for HybridModel {
    fn crd_scale() -> Option<String> {
        use kube::CustomResourceExt;
        Self::crd().spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref())
            .map(|s| s.spec_replicas_path.clone())
    }
}
