//! Events (events.k8s.io/v1) on the resources the operator manages. A repeat of an Event (same
//! object, type, reason, action and note) within [`SERIES_WINDOW`] of the last one becomes a
//! series on the first (`series.count`, `series.lastObservedTime`) instead of a new object, as
//! kube's `Recorder` and client-go do. Unlike kube's `Recorder`, which keeps a clone of every
//! Event it published for six minutes (about 2 KiB each, five per model while 1,000 models
//! converge) and scans them all on each publish, this keeps a hash of the repeat key and the
//! Event's name, and sweeps expired entries at most once per [`SWEEP_EVERY`]. The note is part of
//! the key: a repeat with a different note is a new Event, not a count on an older text.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a published Event takes repeats into its series.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// How often expired series are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Publishes Events as `controller` (`instance`: this replica, e.g. its pod name).
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<Series>,
}

/// The Events published within [`SERIES_WINDOW`], by a hash of their repeat key.
#[derive(Default)]
struct Series {
    recent: HashMap<u64, Recent>,
    swept: Option<Instant>,
}

/// What a repeat needs: the first Event's name (its namespace is the object's), how many it stands for, and when it was last
/// seen.
#[derive(Clone, Debug, PartialEq)]
struct Recent {
    name: String,
    count: i32,
    last: Instant,
}

/// What to do for one publish: create a new Event, or count a repeat on an existing one.
#[derive(Debug, PartialEq)]
enum Step {
    Create,
    Repeat(Recent),
}

impl Series {
    /// The step for an Event with key `key` at `now`, forgetting expired entries first (at most
    /// once per [`SWEEP_EVERY`]).
    fn step(&mut self, key: u64, now: Instant) -> Step {
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            self.recent
                .retain(|_, r| now.duration_since(r.last) < SERIES_WINDOW);
            self.swept = Some(now);
        }
        match self.recent.get(&key) {
            Some(r) if now.duration_since(r.last) < SERIES_WINDOW => Step::Repeat(Recent {
                count: r.count + 1,
                last: now,
                ..r.clone()
            }),
            _ => Step::Create,
        }
    }

    fn record(&mut self, key: u64, recent: Recent) {
        self.recent.insert(key, recent);
    }
}

/// The repeat key of `ev` on `regarding`, hashed (a collision, one in 2^64 per pair, would count
/// one Event's repeat on another).
fn repeat_key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    matches!(ev.type_, EventType::Warning).hash(&mut h);
    (&ev.reason, &ev.action, &ev.note).hash(&mut h);
    let r = regarding;
    (&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid).hash(&mut h);
    ev.secondary
        .as_ref()
        .map(|s| (&s.api_version, &s.kind, &s.namespace, &s.name, &s.uid))
        .hash(&mut h);
    h.finish()
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            series: Mutex::default(),
        }
    }

    /// Publishes `ev` on `regarding` (in its namespace, or `default` for a cluster-scoped object).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = repeat_key(ev, regarding);
        let now = Instant::now();
        let step = self.lock().step(key, now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        if let Step::Repeat(recent) = step {
            let series = EventSeries {
                count: recent.count,
                last_observed_time: MicroTime(Timestamp::now()),
            };
            let patch = serde_json::json!({ "series": series });
            match api
                .patch(&recent.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.lock().record(key, recent);
                    return Ok(());
                }
                // The Event expired in the apiserver (or was deleted): start a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(ev, regarding, namespace);
        let created = api.create(&PostParams::default(), &event).await?;
        self.lock().record(
            key,
            Recent {
                name: created.metadata.name.unwrap_or_default(),
                count: 1,
                last: now,
            },
        );
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new Event object, named as kube and client-go name them (`<object>.<nanoseconds>`).
    fn event(&self, ev: &Event, regarding: &ObjectReference, namespace: &str) -> K8sEvent {
        let now = Timestamp::now();
        K8sEvent {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Reconcile".to_owned(),
            secondary: None,
        }
    }

    fn object(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("hybrid.dev/v1alpha1".to_owned()),
            kind: Some("Corpus".to_owned()),
            namespace: Some("team".to_owned()),
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    #[test]
    fn repeats_are_keyed_by_object_reason_and_note() {
        let a = repeat_key(&event("Indexed", "revision r1"), &object("a"));
        assert_eq!(
            a,
            repeat_key(&event("Indexed", "revision r1"), &object("a"))
        );
        assert_ne!(
            a,
            repeat_key(&event("Indexed", "revision r2"), &object("a"))
        );
        assert_ne!(
            a,
            repeat_key(&event("Indexing", "revision r1"), &object("a"))
        );
        assert_ne!(
            a,
            repeat_key(&event("Indexed", "revision r1"), &object("b"))
        );
        let mut warning = event("Indexed", "revision r1");
        warning.type_ = EventType::Warning;
        assert_ne!(a, repeat_key(&warning, &object("a")));
    }

    #[test]
    fn a_repeat_within_the_window_counts_on_the_first_event_and_expires_after_it() {
        let mut s = Series::default();
        let t0 = Instant::now();
        assert_eq!(s.step(1, t0), Step::Create);
        let first = Recent {
            name: "a.17".to_owned(),
            count: 1,
            last: t0,
        };
        s.record(1, first.clone());
        // Another key is its own Event.
        assert_eq!(s.step(2, t0), Step::Create);

        let t1 = t0 + Duration::from_secs(60);
        let Step::Repeat(second) = s.step(1, t1) else {
            panic!("a repeat after 60 s is not counted");
        };
        assert_eq!(
            (second.name.as_str(), second.count, second.last),
            ("a.17", 2, t1)
        );
        s.record(1, second);

        // The window runs from the last repeat: 6 min after it, a new Event; the sweep forgets it.
        let t2 = t1 + SERIES_WINDOW;
        assert_eq!(s.step(1, t2), Step::Create);
        assert!(s.recent.is_empty(), "expired entries are swept");
    }

    #[test]
    fn sweeps_run_at_most_once_per_interval() {
        let mut s = Series::default();
        let t0 = Instant::now();
        s.step(1, t0);
        s.record(
            1,
            Recent {
                name: "a.1".to_owned(),
                count: 1,
                last: t0,
            },
        );
        // Expired, but the last sweep was less than SWEEP_EVERY ago,
        s.swept = Some(t0 + SERIES_WINDOW);
        assert_eq!(
            s.step(2, t0 + SERIES_WINDOW + Duration::from_secs(1)),
            Step::Create
        );
        assert_eq!(s.recent.len(), 1, "no sweep within SWEEP_EVERY of the last");
        // and swept once it is due.
        s.step(2, t0 + SERIES_WINDOW + SWEEP_EVERY);
        assert!(s.recent.is_empty());
    }
}
