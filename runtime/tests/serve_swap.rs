//! Hot swap: the config file is rewritten (the way the kubelet swaps a ConfigMap's `..data`
//! symlink) between two adapter revisions while requests run. No request fails, and each one
//! reports one consistent revision set and answers exactly as that set answers alone.

mod index_support;
mod serve_support;
mod train_support;

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use hybrid_runtime::lora::{LoraInit, LoraSettings, TargetModule, peft};
use hybrid_runtime::model::{BaseWeights, Llama};
use serde_json::json;
use serve_support::{Server, get, post_json};

/// A PEFT adapter with random, non-zero A and B, so that it visibly changes the answers.
fn random_adapter(gguf: &Path, dir: &Path, seed: u64) {
    let mut model = Llama::from_gguf(gguf, BaseWeights::Quantized, &Device::Cpu).expect("model");
    let settings = LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: vec![
            TargetModule::QProj,
            TargetModule::VProj,
            TargetModule::DownProj,
        ],
        use_rslora: false,
    };
    let mut init = LoraInit::new(seed);
    model
        .attach_lora(&settings, &mut |len, fan_in| init.uniform(len, fan_in))
        .expect("attach");
    let mut values = LoraInit::new(seed + 100);
    for (_, _, branch) in model.lora_branches() {
        let dims = branch.b.dims().to_vec();
        let b = values.uniform(dims[0] * dims[1], 16);
        let b = Tensor::from_vec(b, (dims[0], dims[1]), &Device::Cpu).expect("tensor");
        branch.b.set(&b).expect("set B");
    }
    std::fs::create_dir_all(dir).expect("adapter dir");
    peft::save(&model, &settings, "SmolLM2-135M-Instruct", dir).expect("save adapter");
}

fn config(gguf: &Path, serving: &str, adapter_revision: &str, adapter_dir: &Path) -> String {
    format!(
        "name: fin\nservingRevision: {serving}\nmodel:\n  source: {}\n  format: gguf\nadapters:\n  - name: tone\n    revision: {adapter_revision}\n    artifactUri: file://{}\nlimits:\n  maxConcurrency: 2\n  maxQueue: 64\n  maxTokens: 64\n",
        gguf.display(),
        adapter_dir.display()
    )
}

/// Publishes `text` as `<dir>/config.yaml` the way the kubelet updates a ConfigMap volume:
/// a new timestamped directory, then an atomic rename of the `..data` symlink.
fn publish(dir: &Path, text: &str, generation: u32) {
    let data = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("config.yaml"), text).expect("write config");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(data.file_name().expect("name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    let link = dir.join("config.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/config.yaml", &link).expect("config link");
    }
}

async fn wait_for_revision(server: &Server, serving: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(&server.url("/v1/admin/revisions")).await;
        if r.status == 200 && r.json()["servingRevision"] == serving {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never switched to {serving}: {}\n{}",
            r.text(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn request() -> serde_json::Value {
    json!({
        "model": "fin:tone",
        "messages": [{"role": "user", "content": "Name three things a bank does."}],
        "max_tokens": 12,
        "temperature": 0,
    })
}

async fn ask(server: &Server) -> (String, String, String) {
    ServerRef(server.base.clone()).ask().await
}

#[tokio::test(flavor = "multi_thread")]
async fn config_swap_under_load_keeps_each_request_on_one_revision_set() {
    let gguf = serve_support::gguf();
    let tmp = tempfile::tempdir().expect("tmp");
    let (a1, a2) = (tmp.path().join("ad-1"), tmp.path().join("ad-2"));
    random_adapter(&gguf, &a1, 1);
    random_adapter(&gguf, &a2, 2);
    let etc = tmp.path().join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    let v1 = config(&gguf, "sr-1", "ad-1", &a1);
    let v2 = config(&gguf, "sr-2", "ad-2", &a2);
    publish(&etc, &v1, 1);
    let config_path = etc.join("config.yaml");
    let server = Server::start(&["--config", config_path.to_str().expect("utf-8")], &[]);

    let (s, ad, reference_1) = ask(&server).await;
    assert_eq!((s.as_str(), ad.as_str()), ("sr-1", "ad-1"));
    publish(&etc, &v2, 2);
    wait_for_revision(&server, "sr-2").await;
    let (s, ad, reference_2) = ask(&server).await;
    assert_eq!((s.as_str(), ad.as_str()), ("sr-2", "ad-2"));
    println!("adapter 1 answers {reference_1:?}\nadapter 2 answers {reference_2:?}");
    assert_ne!(
        reference_1, reference_2,
        "the two adapters must answer differently for this test to mean anything"
    );

    // A bad config is refused and the current one keeps serving.
    publish(&etc, &v1.replace("limits:", "limitz:"), 3);
    let counted = r#"hybrid_runtime_config_reload_total{outcome="error"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut metrics = String::new();
    while Instant::now() < deadline && !metrics.contains(counted) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        metrics = get(&server.url("/metrics")).await.text();
    }
    assert!(
        metrics.contains(counted),
        "the bad config is counted:\n{metrics}"
    );
    let r = get(&server.url("/v1/admin/revisions")).await;
    assert_eq!(
        r.json()["servingRevision"],
        "sr-2",
        "a bad config must not replace the good one"
    );
    assert!(
        server.log_text().contains("limitz"),
        "the log names the unknown field"
    );

    // Requests arrive every half second while the config flips between the two revision sets;
    // each flip is waited for, so swaps land while earlier requests are still generating.
    let mut tasks = Vec::new();
    for i in 0..10u32 {
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500 * i as u64)).await;
            ServerRef(base).ask().await
        }));
    }
    for generation in 4..8u32 {
        let (text, serving) = if generation % 2 == 0 {
            (&v1, "sr-1")
        } else {
            (&v2, "sr-2")
        };
        publish(&etc, text, generation);
        wait_for_revision(&server, serving).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut seen = std::collections::BTreeMap::new();
    for t in tasks {
        let (serving, adapter, text) = t.await.expect("task");
        let (want_adapter, want_text) = match serving.as_str() {
            "sr-1" => ("ad-1", &reference_1),
            "sr-2" => ("ad-2", &reference_2),
            other => panic!("unknown serving revision {other}"),
        };
        assert_eq!(
            adapter, want_adapter,
            "mixed revision set: {serving} with {adapter}"
        );
        assert_eq!(
            &text, want_text,
            "answer under {serving} differs from that revision's answer"
        );
        *seen.entry(serving).or_insert(0) += 1;
    }
    println!("responses per serving revision during the swaps: {seen:?}");
}

/// A server's base URL, for spawned tasks that cannot borrow the `Server`.
struct ServerRef(String);

impl ServerRef {
    /// (servingRevision, adapter revision, text) of one answer; checks the header agrees.
    async fn ask(&self) -> (String, String, String) {
        let r = post_json(&format!("{}/v1/chat/completions", self.0), &request()).await;
        assert_eq!(
            r.status,
            200,
            "a request failed during the swap: {}",
            r.text()
        );
        let body = r.json();
        let serving = body["revisions"]["servingRevision"]
            .as_str()
            .expect("servingRevision")
            .to_string();
        let header = r.headers["x-hybrid-serving-revision"]
            .to_str()
            .expect("header");
        assert_eq!(
            header, serving,
            "header and body report different revisions"
        );
        let adapter = body["revisions"]["adapters"][0]["revision"]
            .as_str()
            .expect("adapter")
            .to_string();
        let text = body["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .to_string();
        (serving, adapter, text)
    }
}

/// A config whose adapter revision is not on storage yet (its Job's output still being copied)
/// fails to load; serve tries the same file again with backoff and switches once the files are
/// there, with no further change to the config. Before, it waited for the ConfigMap to change.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_load_is_tried_again_without_a_config_change() {
    let gguf = serve_support::gguf();
    let tmp = tempfile::tempdir().expect("tmp");
    let (a1, a2) = (tmp.path().join("ad-1"), tmp.path().join("ad-2"));
    random_adapter(&gguf, &a1, 1);
    let etc = tmp.path().join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    publish(&etc, &config(&gguf, "sr-1", "ad-1", &a1), 1);
    let config_path = etc.join("config.yaml");
    let server = Server::start(&["--config", config_path.to_str().expect("utf-8")], &[]);
    wait_for_revision(&server, "sr-1").await;

    publish(&etc, &config(&gguf, "sr-2", "ad-2", &a2), 2);
    let failed = r#"hybrid_runtime_config_reload_total{outcome="error"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(&server.url("/metrics")).await.text().contains(failed) {
        assert!(
            Instant::now() < deadline,
            "the missing adapter never failed a load"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = get(&server.url("/v1/admin/revisions")).await;
    assert_eq!(
        r.json()["servingRevision"],
        "sr-1",
        "the old revisions keep serving"
    );

    random_adapter(&gguf, &a2, 2);
    wait_for_revision(&server, "sr-2").await;
    assert!(
        server.log_text().contains("trying again in"),
        "the log says the load is retried:\n{}",
        server.log_text()
    );
}
