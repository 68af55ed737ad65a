//! Shared by the `serve_*` tests: the finance index (built once per test binary with the real
//! embedder), a `hybrid-runtime serve` child process on a loopback port, and a small HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::index_support;
use crate::train_support;

pub fn gguf() -> PathBuf {
    train_support::smollm2_gguf()
}

pub fn embedder() -> PathBuf {
    index_support::embedder_dir()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn finance_corpus() -> PathBuf {
    repo_root().join("examples/finance/corpus")
}

/// Location of an index revision of examples/finance/corpus, built by `hybrid-runtime index`
/// the first time a test asks (kept in the target's tmp dir, keyed by the corpus content).
pub fn finance_index() -> String {
    static BUILT: Mutex<Option<String>> = Mutex::new(None);
    let mut built = BUILT.lock().expect("index lock");
    if let Some(location) = built.as_ref() {
        return location.clone();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(finance_corpus())
        .expect("finance corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut digest = 0u64;
    for f in &files {
        for b in std::fs::read(f).expect("read corpus file") {
            digest = digest.wrapping_mul(0x100000001b3).wrapping_add(b as u64);
        }
    }
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-finance-{digest:016x}"));
    let result = dir.join("result.json");
    // Reuse an earlier run's index only if the archive it names is still there (a target dir
    // that was moved or copied keeps result.json pointing at the old path).
    let archive_exists = |result: &std::path::Path| {
        std::fs::read(result)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|j| j["location"].as_str().map(str::to_owned))
            .is_some_and(|l| std::path::Path::new(l.trim_start_matches("file://")).exists())
    };
    if !archive_exists(&result) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("index dir");
        let status = Command::new(train_support::runtime_bin())
            .args(["index", "--source"])
            .arg(finance_corpus())
            .args([
                "--chunk-strategy",
                "markdown",
                "--chunk-size",
                "256",
                "--chunk-overlap",
                "32",
            ])
            .arg("--embedder")
            .arg(embedder())
            .arg("--output")
            .arg(dir.join("indexes"))
            .arg("--result-path")
            .arg(dir.join("result.partial.json"))
            .env("RUST_LOG", "warn")
            .status()
            .expect("runs hybrid-runtime index");
        assert!(status.success(), "indexing the finance corpus failed");
        std::fs::rename(dir.join("result.partial.json"), &result).expect("result");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&result).expect("result")).expect("result json");
    let location = json["location"].as_str().expect("location").to_string();
    *built = Some(location.clone());
    location
}

/// A running `hybrid-runtime serve`; killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `serve` with `args` on a free loopback port and waits until /readyz says ready.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(train_support::runtime_bin());
        cmd.arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,qdrant_edge=error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawns hybrid-runtime serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().expect("log").push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!(
                    "serve did not start listening; log:\n{}",
                    log.lock().expect("log").join("\n")
                )
            });
        let server = Server {
            child,
            base: format!("http://{addr}"),
            log,
        };
        server.wait_ready();
        server
    }

    /// Polls /readyz with a plain blocking HTTP/1.1 request (this runs inside async tests, where
    /// starting another runtime is not allowed).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        let addr = self.base.trim_start_matches("http://").to_string();
        loop {
            if readyz_status(&addr) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve never became ready; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn readyz_status(addr: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Status, headers and body of a response.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `message` of an OpenAI-style error body, after checking its shape.
    pub fn error_message(&self) -> String {
        let json = self.json();
        let error = &json["error"];
        assert!(error.is_object(), "no error object in {json}");
        for key in ["message", "type", "param", "code"] {
            assert!(error.get(key).is_some(), "error lacks `{key}`: {json}");
        }
        error["message"].as_str().expect("message").to_string()
    }
}

pub async fn post(url: &str, body: impl Into<reqwest::Body>) -> Reply {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post_json(url: &str, body: &serde_json::Value) -> Reply {
    post(url, serde_json::to_vec(body).expect("json")).await
}

pub async fn get(url: &str) -> Reply {
    let r = reqwest::get(url).await.expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// The text and the last JSON chunk of an SSE chat completion; asserts it ends with `[DONE]`.
pub fn parse_sse(body: &str) -> (String, serde_json::Value) {
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .collect();
    assert_eq!(
        data.last().copied(),
        Some("[DONE]"),
        "stream must end with [DONE]: {body}"
    );
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk {d}: {e}")))
        .collect();
    let mut text = String::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    (text, chunks.last().cloned().expect("at least one chunk"))
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}
