//! The autoscaler's decision: replicas and retrieval depth from one latency observation.
//!
//! Pure: the caller supplies the observation, the policy, the current state and the time, and
//! gets back a [`Decision`] and the next state. Nothing here talks to Prometheus or Kubernetes.
//!
//! The hybrid's own lever comes first. Under pressure (p95 above target) top-k drops at once,
//! in proportion to the overshoot, because a fine-tuned reader loses little with fewer passages
//! and the runtime picks the change up in seconds; replicas grow in the same decision, bounded by
//! the scale-up window and step. With headroom, top-k is restored first, one step at a time and
//! only while the restored depth is predicted to stay within target; replicas shrink only once
//! top-k is back at the policy's value and the scale-down window has passed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Below this fraction of the target, latency has headroom (restore top-k, then scale in).
/// Between it and 1.0 nothing changes: the band keeps the loop from chasing its own effect.
pub const HEADROOM_RATIO: f64 = 0.7;

/// Top-k is restored one step only if latency scaled by the larger prompt stays under this
/// fraction of the target. Latency is assumed proportional to top-k, which overestimates the
/// effect (embedding, decode and the fixed part of the prompt do not grow), so restoring does
/// not push latency back over the target and the loop does not oscillate.
pub const RESTORE_PREDICTED_RATIO: f64 = 0.85;

/// After top-k changes, wait this long before changing it again, so the change shows in the
/// latency Prometheus reports before it is judged.
pub const TOP_K_COOLDOWN: Duration = Duration::from_secs(10);

/// Largest overshoot acted on in one decision: a reading of "nothing finishes" (infinite p95)
/// scales as if latency were this many times the target (then bounded by `maxStep`).
pub const MAX_PRESSURE_RATIO: f64 = 10.0;

/// Queued requests per ready replica treated as pressure even while the measured p95 (which
/// only counts finished requests) still looks fine.
pub const QUEUE_PRESSURE_PER_REPLICA: f64 = 4.0;

/// Scaling speed limits of one direction (the ServingPolicy's `scaleUp` / `scaleDown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub stabilization: Duration,
    pub max_step: i32,
}

/// What the ServingPolicy allows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub target_p95: Duration,
    pub target_ttft_p95: Option<Duration>,
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// The policy's top-k: restored to when there is no pressure.
    pub top_k: i32,
    pub min_top_k: i32,
    pub up: Rule,
    pub down: Rule,
}

/// One reading of the serving pods' metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Prometheus could not be queried; the reason.
    Unavailable(String),
    /// Prometheus answered but has no series for this HybridModel (not scraped yet).
    NoData,
    /// Series exist and the request rate is zero.
    Idle,
    Measured {
        /// p95 end-to-end latency, seconds.
        p95: f64,
        /// p95 time to first token, seconds, when the runtime reports it.
        ttft_p95: Option<f64>,
        /// Requests per second over the window.
        rate: f64,
        /// Requests waiting in the pods' queues, summed.
        queue: f64,
    },
}

/// What the autoscaler remembers between ticks (in memory; lost on restart, which only delays
/// scale-in by one window because an empty history never permits it).
#[derive(Clone, Debug)]
pub struct State {
    pub replicas: i32,
    pub top_k: i32,
    last_top_k_change: Option<Instant>,
    /// (time, recommended replicas), oldest first, covering the longer window.
    history: VecDeque<(Instant, i32)>,
    /// When this state started collecting recommendations.
    since: Instant,
}

impl State {
    pub fn new(replicas: i32, top_k: i32, now: Instant) -> Self {
        Self {
            replicas,
            top_k,
            last_top_k_change: None,
            history: VecDeque::new(),
            since: now,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Hold,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Hold => "hold",
        }
    }
}

/// Why a decision was taken. `as_str` is the Event reason, the status reason and the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    LatencyAboveTarget,
    QueueBuildingUp,
    WithinTarget,
    Headroom,
    NoTraffic,
    PrometheusUnavailable,
    NoData,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LatencyAboveTarget => "LatencyAboveTarget",
            Reason::QueueBuildingUp => "QueueBuildingUp",
            Reason::WithinTarget => "WithinTarget",
            Reason::Headroom => "Headroom",
            Reason::NoTraffic => "NoTraffic",
            Reason::PrometheusUnavailable => "PrometheusUnavailable",
            Reason::NoData => "NoData",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub replicas: i32,
    pub top_k: i32,
    /// Direction of the replica change (a top-k-only change is `Hold` with a changed top-k).
    pub direction: Direction,
    pub reason: Reason,
    pub message: String,
}

impl Decision {
    /// Whether anything changed compared with `state` before the tick.
    pub fn changes(&self, before_replicas: i32, before_top_k: i32) -> bool {
        self.replicas != before_replicas || self.top_k != before_top_k
    }
}

/// One autoscaler tick. Updates `state` and returns what to apply.
pub fn decide(policy: &Policy, obs: &Observation, state: &mut State, now: Instant) -> Decision {
    let hold = |state: &State, reason: Reason, message: String| Decision {
        replicas: state.replicas,
        top_k: state.top_k,
        direction: Direction::Hold,
        reason,
        message,
    };
    // Bounds may have changed in the policy since the last tick.
    let top_k_bounds = |k: i32| k.clamp(policy.min_top_k, policy.top_k.max(policy.min_top_k));
    state.top_k = top_k_bounds(state.top_k);

    let (recommended, reason, message) = match obs {
        Observation::Unavailable(why) => {
            // Forget the window: decisions resume only on fresh evidence.
            state.history.clear();
            state.since = now;
            return hold(
                state,
                Reason::PrometheusUnavailable,
                format!(
                    "holding {} replicas and top-k {}: {why}",
                    state.replicas, state.top_k
                ),
            );
        }
        Observation::NoData => {
            state.history.clear();
            state.since = now;
            return hold(
                state,
                Reason::NoData,
                format!(
                    "holding {} replicas and top-k {}: Prometheus has no latency series for this model yet",
                    state.replicas, state.top_k
                ),
            );
        }
        Observation::Idle => {
            if state.top_k != policy.top_k && cooled_down(state, now) {
                state.top_k = top_k_bounds(policy.top_k);
                state.last_top_k_change = Some(now);
            }
            (
                policy.min_replicas,
                Reason::NoTraffic,
                "no requests: scaling to the policy minimum".to_owned(),
            )
        }
        Observation::Measured {
            p95,
            ttft_p95,
            queue,
            ..
        } => {
            let latency_ratio = p95 / policy.target_p95.as_secs_f64();
            let ttft_ratio = match (ttft_p95, policy.target_ttft_p95) {
                (Some(v), Some(t)) => v / t.as_secs_f64(),
                _ => 0.0,
            };
            let queue_per_replica = queue / f64::from(state.replicas.max(1));
            let mut ratio = latency_ratio.max(ttft_ratio);
            let mut reason = Reason::LatencyAboveTarget;
            if ratio <= 1.0 && queue_per_replica > QUEUE_PRESSURE_PER_REPLICA {
                // Finished requests look fine but work piles up: act before p95 shows it.
                ratio = queue_per_replica / QUEUE_PRESSURE_PER_REPLICA;
                reason = Reason::QueueBuildingUp;
            }
            let observed = format!(
                "p95 {:.0} ms against {} ms target",
                p95 * 1000.0,
                policy.target_p95.as_millis()
            );
            if ratio.is_nan() {
                return hold(
                    state,
                    Reason::NoData,
                    format!("holding: unusable reading ({observed})"),
                );
            }
            let ratio = ratio.min(MAX_PRESSURE_RATIO);
            if ratio > 1.0 {
                if state.top_k > policy.min_top_k && cooled_down(state, now) {
                    let lowered =
                        ((f64::from(state.top_k) / ratio).floor() as i32).min(state.top_k - 1);
                    state.top_k = top_k_bounds(lowered);
                    state.last_top_k_change = Some(now);
                }
                let wanted = (f64::from(state.replicas) * ratio).ceil() as i32;
                (wanted, reason, observed)
            } else if ratio < HEADROOM_RATIO {
                if state.top_k < policy.top_k {
                    let next = state.top_k + 1;
                    let predicted = ratio * f64::from(next) / f64::from(state.top_k);
                    if predicted < RESTORE_PREDICTED_RATIO && cooled_down(state, now) {
                        state.top_k = top_k_bounds(next);
                        state.last_top_k_change = Some(now);
                    }
                    // Replicas wait until retrieval depth is fully restored.
                    (
                        state.replicas,
                        Reason::Headroom,
                        format!("{observed}; restoring top-k first"),
                    )
                } else {
                    // Size for the target with the band's margin: ratio / HEADROOM_RATIO ≤ 1.
                    let wanted = (f64::from(state.replicas) * ratio / HEADROOM_RATIO).ceil() as i32;
                    (wanted.max(1), Reason::Headroom, observed)
                }
            } else {
                (state.replicas, Reason::WithinTarget, observed)
            }
        }
    };

    let recommended = recommended.clamp(policy.min_replicas, policy.max_replicas);
    state.history.push_back((now, recommended));
    let keep = policy.up.stabilization.max(policy.down.stabilization);
    while let Some(&(t, _)) = state.history.front() {
        if now.duration_since(t) > keep {
            state.history.pop_front();
        } else {
            break;
        }
    }

    let current = state
        .replicas
        .clamp(policy.min_replicas, policy.max_replicas);
    let mut replicas = current;
    if recommended > current && covered(state, now, policy.up.stabilization) {
        // Scale up to what every recommendation of the window agrees on (the lowest).
        let floor = window(state, now, policy.up.stabilization)
            .min()
            .unwrap_or(current);
        if floor > current {
            replicas = floor.min(current + policy.up.max_step);
        }
    } else if recommended < current && covered(state, now, policy.down.stabilization) {
        // Scale down only to the highest recommendation of the window.
        let ceiling = window(state, now, policy.down.stabilization)
            .max()
            .unwrap_or(current);
        if ceiling < current {
            replicas = ceiling.max(current - policy.down.max_step);
        }
    }
    let direction = match replicas.cmp(&state.replicas) {
        std::cmp::Ordering::Greater => Direction::Up,
        std::cmp::Ordering::Less => Direction::Down,
        std::cmp::Ordering::Equal => Direction::Hold,
    };
    state.replicas = replicas;
    Decision {
        replicas,
        top_k: state.top_k,
        direction,
        reason,
        message,
    }
}

fn cooled_down(state: &State, now: Instant) -> bool {
    state
        .last_top_k_change
        .is_none_or(|t| now.duration_since(t) >= TOP_K_COOLDOWN)
}

/// Whether the state has been collecting for at least `span` (so the window is full).
fn covered(state: &State, now: Instant, span: Duration) -> bool {
    now.duration_since(state.since) >= span
}

fn window(state: &State, now: Instant, span: Duration) -> impl Iterator<Item = i32> + '_ {
    state
        .history
        .iter()
        .filter(move |(t, _)| now.duration_since(*t) <= span)
        .map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            target_p95: Duration::from_millis(1000),
            target_ttft_p95: None,
            min_replicas: 1,
            max_replicas: 8,
            top_k: 8,
            min_top_k: 3,
            up: Rule {
                stabilization: Duration::from_secs(15),
                max_step: 4,
            },
            down: Rule {
                stabilization: Duration::from_secs(300),
                max_step: 1,
            },
        }
    }

    fn measured(p95: f64) -> Observation {
        Observation::Measured {
            p95,
            ttft_p95: None,
            rate: 5.0,
            queue: 0.0,
        }
    }

    /// Runs `obs` every 2 s for `secs`, returning every decision.
    fn run(
        p: &Policy,
        s: &mut State,
        t: &mut Instant,
        secs: u64,
        obs: &Observation,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        for _ in 0..secs / 2 {
            *t += Duration::from_secs(2);
            out.push(decide(p, obs, s, *t));
        }
        out
    }

    #[test]
    fn pressure_lowers_top_k_at_once_and_scales_out_after_the_up_window() {
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(2, 8, t);
        // Steady state first, so the window is full.
        run(&p, &mut s, &mut t, 30, &measured(0.8));
        t += Duration::from_secs(2);
        let first = decide(&p, &measured(2.0), &mut s, t);
        assert_eq!(first.top_k, 4, "8 passages at twice the target → 4");
        assert_eq!(first.reason, Reason::LatencyAboveTarget);
        assert_eq!(
            first.replicas, 2,
            "the up window still holds earlier, lower recommendations"
        );
        let later = run(&p, &mut s, &mut t, 16, &measured(2.0));
        let up = later
            .iter()
            .find(|d| d.direction == Direction::Up)
            .expect("scaled out");
        assert_eq!(up.replicas, 4, "ceil(2 × 2.0)");
        assert!(later.iter().all(|d| d.top_k >= p.min_top_k));
    }

    #[test]
    fn scale_up_is_bounded_by_step_and_maximum() {
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(2, 3, t);
        let ds = run(&p, &mut s, &mut t, 120, &measured(10.0));
        let steps: Vec<i32> = ds.iter().map(|d| d.replicas).collect();
        assert!(
            steps.windows(2).all(|w| w[1] - w[0] <= p.up.max_step),
            "{steps:?}"
        );
        assert_eq!(*steps.last().expect("decisions"), p.max_replicas);
        assert!(ds.iter().all(|d| d.top_k == 3), "already at minTopK");
    }

    #[test]
    fn headroom_restores_top_k_before_scaling_in() {
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(4, 4, t);
        let ds = run(&p, &mut s, &mut t, 600, &measured(0.2));
        let restored = ds
            .iter()
            .position(|d| d.top_k == 8)
            .expect("top-k restored");
        let first_down = ds
            .iter()
            .position(|d| d.direction == Direction::Down)
            .expect("scaled in");
        assert!(
            restored < first_down,
            "top-k at {restored}, scale-in at {first_down}"
        );
        // The first scale-in waits for the 300 s window of low recommendations.
        assert!(
            first_down * 2 >= 300,
            "scaled in after {} s",
            first_down * 2
        );
        let replicas: Vec<i32> = ds.iter().map(|d| d.replicas).collect();
        assert!(replicas.windows(2).all(|w| w[0] - w[1] <= p.down.max_step));
    }

    #[test]
    fn restoring_top_k_stops_where_it_would_breach_again() {
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(1, 3, t);
        // Latency proportional to top-k: 0.2 s per passage. At 3 → 0.6 s (headroom); 4 is
        // predicted at 0.8 s (< 0.85 × target) so it is restored; at 4 the 0.8 s reading is in
        // the band, so it stays there instead of climbing to 5 (1.0 s) and breaching.
        let mut last = None;
        for _ in 0..60 {
            t += Duration::from_secs(2);
            let p95 = 0.2 * f64::from(s.top_k);
            last = Some(decide(&p, &measured(p95), &mut s, t));
        }
        let last = last.expect("decisions");
        assert_eq!((last.replicas, last.top_k), (1, 4));
        assert_eq!(last.reason, Reason::WithinTarget);
    }

    #[test]
    fn within_band_nothing_changes() {
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(3, 6, t);
        let ds = run(&p, &mut s, &mut t, 600, &measured(0.9));
        assert!(ds.iter().all(|d| d.replicas == 3 && d.top_k == 6));
        assert!(ds.iter().all(|d| d.reason == Reason::WithinTarget));
    }

    #[test]
    fn prometheus_down_or_no_data_holds_and_restarts_the_windows() {
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(5, 4, t);
        for obs in [
            Observation::Unavailable("connection refused".into()),
            Observation::NoData,
        ] {
            let ds = run(&p, &mut s, &mut t, 600, &obs);
            assert!(
                ds.iter()
                    .all(|d| d.replicas == 5 && d.top_k == 4 && d.direction == Direction::Hold)
            );
        }
        // Back with low latency: no immediate scale-in, the down window starts over.
        let ds = run(&p, &mut s, &mut t, 60, &measured(0.1));
        assert!(ds.iter().all(|d| d.replicas == 5));
        let d = decide(&p, &Observation::Unavailable("timeout".into()), &mut s, t);
        assert_eq!(d.reason, Reason::PrometheusUnavailable);
        assert!(d.message.contains("timeout"), "{}", d.message);
    }

    #[test]
    fn no_traffic_scales_to_minimum_after_the_down_window() {
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(3, 5, t);
        let ds = run(&p, &mut s, &mut t, 900, &Observation::Idle);
        assert_eq!(ds.last().expect("decisions").replicas, p.min_replicas);
        assert_eq!(ds.last().expect("decisions").top_k, p.top_k);
        assert!(
            ds.iter().take(149).all(|d| d.replicas == 3),
            "nothing before 300 s"
        );
    }

    #[test]
    fn a_queue_building_up_is_pressure_before_p95_shows_it() {
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(2, 8, t);
        let obs = Observation::Measured {
            p95: 0.5,
            ttft_p95: None,
            rate: 10.0,
            queue: 16.0,
        };
        let d = run(&p, &mut s, &mut t, 20, &obs);
        assert_eq!(d[0].reason, Reason::QueueBuildingUp);
        assert!(d[0].top_k < 8);
        assert!(d.last().expect("decisions").replicas > 2);
    }

    #[test]
    fn steady_load_at_the_new_operating_point_does_not_oscillate() {
        // A crude plant: p95 = 0.15 s × top-k / replicas + 0.1 s, at load that needs 2+ replicas.
        let p = policy();
        let mut t = Instant::now();
        let mut s = State::new(1, 8, t);
        let mut changes = Vec::new();
        for tick in 0..300 {
            let p95 = 0.15 * f64::from(s.top_k) / f64::from(s.replicas) + 0.1;
            t += Duration::from_secs(2);
            let before = (s.replicas, s.top_k);
            let d = decide(&p, &measured(p95), &mut s, t);
            if d.changes(before.0, before.1) {
                changes.push((tick, d.replicas, d.top_k));
            }
        }
        // Converges in the first minutes, then holds for the rest of the 10 minutes.
        let late: Vec<_> = changes.iter().filter(|(tick, _, _)| *tick > 150).collect();
        assert!(
            late.is_empty(),
            "still changing after 5 minutes: {changes:?}"
        );
        let p95 = 0.15 * f64::from(s.top_k) / f64::from(s.replicas) + 0.1;
        assert!(p95 <= 1.0, "settled over target: {s:?}");
    }
}
