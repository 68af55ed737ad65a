//! When the config watcher loads the config file again: a new digest at once; a digest whose load
//! failed again after a backoff (an adapter or index revision still being written, a storage
//! hiccup), so a transient error does not leave the pod on the old revisions until the ConfigMap
//! changes once more; a digest that serves, or that cannot parse, never again. Pure: the clock is
//! passed in. [`ReloadError`] says why a reload left the previous snapshot serving.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::config::ConfigError;
use super::state::LoadError;

/// Why a reload did not switch to the config file's content; the previous snapshot keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("serve runs from flags, not --config: nothing to reload")]
    NoConfigFile,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not UTF-8: {0}")]
    NotUtf8(#[from] std::string::FromUtf8Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the initial load has not finished")]
    NotLoaded,
    #[error("{source} (attempt {failures}; trying again in {delay:?})")]
    Load {
        source: Box<LoadError>,
        failures: u32,
        delay: Duration,
    },
}

/// First retry of a failed load; doubled after each failure.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between two tries of one failed load.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct ReloadState {
    /// The digest serving now, or refused for good (it does not parse).
    settled: Option<String>,
    retry: Option<Retry>,
}

#[derive(Debug)]
struct Retry {
    digest: String,
    failures: u32,
    at: Instant,
}

impl ReloadState {
    /// The state after the initial load of `digest`.
    pub fn new(digest: Option<String>) -> Self {
        Self {
            settled: digest,
            retry: None,
        }
    }

    /// Whether the file whose content has `digest` should be loaded at `now`.
    pub fn due(&self, digest: &str, now: Instant) -> bool {
        if self.settled.as_deref() == Some(digest) {
            return false;
        }
        match &self.retry {
            Some(r) if r.digest == digest => now >= r.at,
            _ => true,
        }
    }

    /// `digest` now serves, or can never serve (it does not parse): not tried again.
    pub fn settle(&mut self, digest: String) {
        self.settled = Some(digest);
        self.retry = None;
    }

    /// Loading `digest` failed at `now`; returns how many times in a row and the wait until the
    /// next try (1 s, 2 s, 4 s … at most [`RETRY_MAX`]).
    pub fn failed(&mut self, digest: String, now: Instant) -> (u32, Duration) {
        let failures = match &self.retry {
            Some(r) if r.digest == digest => r.failures + 1,
            _ => 1,
        };
        let delay = RETRY_BASE
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(RETRY_MAX);
        self.retry = Some(Retry {
            digest,
            failures,
            at: now + delay,
        });
        (failures, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_load_is_retried_with_backoff_until_it_serves() {
        let t0 = Instant::now();
        let mut s = ReloadState::new(Some("v1".into()));
        assert!(!s.due("v1", t0), "the serving config is not loaded again");
        assert!(s.due("v2", t0), "a new config is loaded at once");
        assert_eq!(s.failed("v2".into(), t0), (1, Duration::from_secs(1)));
        assert!(!s.due("v2", t0 + Duration::from_millis(500)));
        assert!(s.due("v2", t0 + Duration::from_secs(1)));
        assert_eq!(
            s.failed("v2".into(), t0 + Duration::from_secs(1)),
            (2, Duration::from_secs(2))
        );
        assert!(!s.due("v2", t0 + Duration::from_secs(2)));
        assert!(s.due("v2", t0 + Duration::from_secs(3)));
        // Another config meanwhile is loaded at once, with a fresh count.
        assert!(s.due("v3", t0 + Duration::from_secs(2)));
        assert_eq!(
            s.failed("v3".into(), t0 + Duration::from_secs(2)),
            (1, Duration::from_secs(1))
        );
        s.settle("v3".into());
        assert!(!s.due("v3", t0 + Duration::from_secs(100)));
        assert!(s.due("v2", t0 + Duration::from_secs(100)));
    }

    #[test]
    fn the_backoff_is_capped() {
        let t0 = Instant::now();
        let mut s = ReloadState::default();
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = s.failed("v".into(), t0).1;
        }
        assert_eq!(last, RETRY_MAX);
    }
}
