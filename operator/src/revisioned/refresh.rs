//! When each revisioned object's sources are next due for a check.

use crate::revisioned::sources::RETRY_FAILED_CHECK;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each Corpus's or Adapter's HTTP and scanned sources are next due for a check, kept by this process
/// only. It is not status: recording every check there would write each Corpus every
/// `refreshInterval` although nothing changed. After a restart, a Corpus whose stored digests
/// still match its spec is first checked one `refreshInterval` later, so a restart alone starts
/// no Job and writes nothing.
#[derive(Default)]
pub struct RefreshSchedule {
    next: Mutex<HashMap<String, Planned>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Planned {
    /// Digest of the source specs the plan was made for; a spec change makes a new plan.
    sources: String,
    at: Instant,
}

impl RefreshSchedule {
    /// Whether the sources of `key` (a Corpus uid) are due for a check now. `stale` says the
    /// stored digests do not cover the current sources (new Corpus, changed spec): they are
    /// checked at once unless a failed check of the same sources waits for its retry.
    pub fn due(
        &self,
        key: &str,
        sources: &str,
        stale: bool,
        refresh: Option<Duration>,
        now: Instant,
    ) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        match next.get(key).filter(|p| p.sources == sources) {
            Some(planned) => now >= planned.at,
            None if stale => true,
            None => {
                if let Some(refresh) = refresh {
                    next.insert(
                        key.to_owned(),
                        Planned {
                            sources: sources.to_owned(),
                            at: now + refresh,
                        },
                    );
                }
                false
            }
        }
    }

    /// Records a check made now: the next one comes after `refresh`, or sooner when `stale`
    /// (the check failed and nothing stands in for it). No plan at all when neither applies.
    pub fn checked(
        &self,
        key: &str,
        sources: &str,
        stale: bool,
        refresh: Option<Duration>,
        now: Instant,
    ) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let wait = match (stale, refresh) {
            (true, Some(r)) => Some(r.min(RETRY_FAILED_CHECK)),
            (true, None) => Some(RETRY_FAILED_CHECK),
            (false, r) => r,
        };
        match wait {
            Some(wait) => {
                next.insert(
                    key.to_owned(),
                    Planned {
                        sources: sources.to_owned(),
                        at: now + wait,
                    },
                );
            }
            None => {
                next.remove(key);
            }
        }
    }

    /// How long until the next planned check of `key`, if one is planned.
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        next.get(key).map(|p| p.at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_checks_new_sources_at_once_and_known_ones_every_interval() {
        let s = RefreshSchedule::default();
        let t0 = Instant::now();
        let hour = Some(Duration::from_secs(3600));
        // New Corpus: due at once.
        assert!(s.due("uid", "k1", true, hour, t0));
        s.checked("uid", "k1", false, hour, t0);
        assert!(!s.due("uid", "k1", false, hour, t0 + Duration::from_secs(10)));
        assert!(s.due("uid", "k1", false, hour, t0 + Duration::from_secs(3600)));
        // A spec change is due at once, whatever the plan said.
        assert!(s.due("uid", "k2", true, hour, t0 + Duration::from_secs(20)));
        // A failed check with nothing to stand in: retried after a minute, not at every pass.
        s.checked("uid", "k2", true, hour, t0);
        assert!(!s.due("uid", "k2", true, hour, t0 + Duration::from_secs(30)));
        assert!(s.due("uid", "k2", true, hour, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn without_an_interval_only_new_sources_are_checked() {
        let s = RefreshSchedule::default();
        let t0 = Instant::now();
        assert!(s.due("uid", "k1", true, None, t0));
        s.checked("uid", "k1", false, None, t0);
        assert!(!s.due(
            "uid",
            "k1",
            false,
            None,
            t0 + Duration::from_secs(86400 * 30)
        ));
        assert_eq!(s.wait("uid", t0), None);
    }

    #[test]
    fn a_restart_with_valid_digests_waits_one_interval() {
        let s = RefreshSchedule::default();
        let t0 = Instant::now();
        let hour = Some(Duration::from_secs(3600));
        assert!(
            !s.due("uid", "k1", false, hour, t0),
            "first sight, digests valid"
        );
        assert_eq!(s.wait("uid", t0), Some(Duration::from_secs(3600)));
        assert!(s.due("uid", "k1", false, hour, t0 + Duration::from_secs(3600)));
    }
}
