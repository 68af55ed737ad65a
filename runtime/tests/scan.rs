//! `hybrid-runtime scan` on a directory, as the operator's scan Job runs it: the digest it
//! reports changes when a document is edited, added or removed, and only then.

use std::path::Path;
use std::process::Command;

fn scan(dirs: &[&Path], result: &Path) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hybrid-runtime"));
    cmd.arg("scan");
    for dir in dirs {
        cmd.arg("--source").arg(dir);
    }
    let out = cmd
        .arg("--result-path")
        .arg(result)
        .output()
        .expect("runs hybrid-runtime");
    assert!(
        out.status.success(),
        "scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(result).expect("result file");
    let json: serde_json::Value = serde_json::from_str(&written).expect("JSON result");
    assert_eq!(json["kind"], "ScanResult");
    json
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[test]
fn digest_follows_document_changes_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let docs = tmp.path().join("docs");
    let result = tmp.path().join("result.json");
    write(&docs.join("a.md"), "# A\nalpha");
    write(&docs.join("notes/b.txt"), "beta");
    write(&docs.join("logo.png"), "not a document");
    write(&docs.join(".cache/c.md"), "hidden");

    let first = scan(&[&docs], &result);
    assert_eq!(first["documents"], 2, "{first}");
    assert_eq!(first["bytes"], 9 + 4);
    let digest = first["digest"].as_str().expect("digest").to_owned();
    assert_eq!(digest.len(), 64);

    // The same files: the same digest, however often it runs.
    assert_eq!(scan(&[&docs], &result)["digest"], digest.as_str());
    // Files the index skips (unsupported type, hidden) change nothing.
    write(&docs.join("logo.png"), "another picture");
    write(&docs.join(".cache/c.md"), "still hidden");
    assert_eq!(scan(&[&docs], &result)["digest"], digest.as_str());

    // An edited document: a new digest.
    write(&docs.join("notes/b.txt"), "beta, revised");
    let edited = scan(&[&docs], &result);
    assert_ne!(edited["digest"], digest.as_str());
    assert_eq!(edited["documents"], 2);

    // A new and then a removed document: new digests each time.
    write(&docs.join("c.md"), "# C");
    let added = scan(&[&docs], &result);
    assert_eq!(added["documents"], 3);
    assert_ne!(added["digest"], edited["digest"]);
    std::fs::remove_file(docs.join("c.md")).expect("rm");
    assert_eq!(
        scan(&[&docs], &result)["digest"],
        edited["digest"],
        "removing the new file restores the listing"
    );
}

#[test]
fn an_unreadable_source_is_a_scan_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let result = tmp.path().join("result.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hybrid-runtime"))
        .args(["scan", "--source"])
        .arg(tmp.path().join("missing"))
        .arg("--result-path")
        .arg(&result)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).expect("result")).expect("json");
    assert_eq!(json["kind"], "ScanError");
    assert_eq!(json["reason"], "SourceUnreadable");
    assert!(
        json["message"]
            .as_str()
            .expect("message")
            .contains("missing"),
        "{json}"
    );
}
