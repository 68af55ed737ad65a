//! The generation engine: one OS thread owns the model and runs every sequence.
//!
//! HTTP handlers send a [`GenerationJob`] over a bounded channel (its capacity is the queue: a
//! full channel is answered 429 by the handler) and read [`Event`]s from the job's own channel.
//! The engine admits up to `max_concurrency` sequences and advances them round-robin, one token
//! each per turn (a new sequence's prompt is prefilled in its first turn), so a long answer does
//! not hold up a short one. A sequence whose event receiver is gone (client disconnected) is
//! dropped at its next turn. A panic while stepping a sequence fails that request only.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use super::metrics::Metrics;
use crate::lora::AdapterSet;
use crate::model::{KvCache, Llama};

/// Why a generation step failed; the request fails with its text, the engine keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] candle_core::Error),
    #[error("{0}")]
    Decode(tokenizers::Error),
    #[error("empty prompt")]
    EmptyPrompt,
}

/// What the engine needs from a model: next-token logits for new input after a cache, and
/// detokenisation. The real one is [`LlamaModel`]; tests use a fake.
pub trait TokenModel: Send + Sync {
    fn next_logits(
        &self,
        cache: &mut KvCache,
        input: &[u32],
        adapter: Option<&AdapterSet>,
    ) -> Result<Vec<f32>, EngineError>;
    /// The next token: greedy at temperature 0, else sampled ([`sample`]). A model on a GPU
    /// overrides this so that greedy decoding copies one id to the host, not the logits.
    fn next_token(
        &self,
        cache: &mut KvCache,
        input: &[u32],
        adapter: Option<&AdapterSet>,
        params: &SamplingParams,
        rng: &mut ChaCha8Rng,
    ) -> Result<u32, EngineError> {
        let logits = self.next_logits(cache, input, adapter)?;
        Ok(sample(&logits, params.temperature, params.top_p, rng))
    }
    fn decode(&self, ids: &[u32]) -> Result<String, EngineError>;
    /// Ids that end a sequence (end of turn, end of text).
    fn stop_ids(&self) -> &[u32];
    /// Longest sequence (prompt + completion) the model supports.
    fn context_length(&self) -> usize;
}

pub struct LlamaModel {
    pub model: Arc<Llama>,
    pub tokenizer: Arc<Tokenizer>,
    pub stop_ids: Vec<u32>,
}

impl LlamaModel {
    /// The last position's logits `(vocab,)` for `input` after `cache`, where the model computes.
    fn last_logits(
        &self,
        cache: &mut KvCache,
        input: &[u32],
        adapter: Option<&AdapterSet>,
    ) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(input, self.model.device())?.unsqueeze(0)?;
        let logits = self.model.forward_cached_with(&ids, cache, adapter)?;
        logits.squeeze(0)?.get(input.len() - 1)
    }
}

impl TokenModel for LlamaModel {
    fn next_logits(
        &self,
        cache: &mut KvCache,
        input: &[u32],
        adapter: Option<&AdapterSet>,
    ) -> Result<Vec<f32>, EngineError> {
        Ok(self
            .last_logits(cache, input, adapter)
            .and_then(|l| l.to_vec1::<f32>())?)
    }

    fn next_token(
        &self,
        cache: &mut KvCache,
        input: &[u32],
        adapter: Option<&AdapterSet>,
        params: &SamplingParams,
        rng: &mut ChaCha8Rng,
    ) -> Result<u32, EngineError> {
        if params.temperature > 0.0 {
            // Nucleus sampling sorts the whole distribution: done on the host (one row of
            // vocabulary-size logits per token).
            let logits = self.next_logits(cache, input, adapter)?;
            return Ok(sample(&logits, params.temperature, params.top_p, rng));
        }
        // Greedy: the argmax runs where the logits are; only the id comes back.
        Ok(self
            .last_logits(cache, input, adapter)
            .and_then(|l| l.argmax(0)?.to_scalar::<u32>())?)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(EngineError::Decode)
    }

    fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    fn context_length(&self) -> usize {
        self.model.config.max_position_embeddings
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text; the concatenation of all deltas is the answer.
    Delta(String),
    Finished {
        reason: FinishReason,
        completion_tokens: usize,
    },
    Failed(String),
}

pub struct GenerationJob {
    pub prompt: Vec<u32>,
    /// The adapter revision the request resolved at arrival; held until the sequence ends.
    pub adapter: Option<Arc<AdapterSet>>,
    pub params: SamplingParams,
    pub received: Instant,
    /// `model` and `adapter` metric labels.
    pub labels: [String; 2],
    pub events: mpsc::UnboundedSender<Event>,
}

/// Why a job could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    QueueFull,
    Stopped,
}

#[derive(Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<GenerationJob>,
    metrics: Arc<Metrics>,
}

impl EngineHandle {
    /// Queues a job without waiting: a full queue is the caller's 429.
    pub fn submit(&self, job: GenerationJob) -> Result<(), SubmitError> {
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(SubmitError::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SubmitError::Stopped),
        }
    }
}

pub struct EngineSettings {
    pub max_concurrency: usize,
    pub max_queue: usize,
    /// Test-only extra sleep per decode step (`HYBRID_RUNTIME_INJECT_DECODE_DELAY_MS`).
    pub decode_delay: Duration,
    /// Test-only extra sleep per prompt token at prefill
    /// (`HYBRID_RUNTIME_INJECT_PREFILL_DELAY_US_PER_TOKEN`).
    pub prefill_delay_per_token: Duration,
}

/// Starts the engine thread. It stops when every [`EngineHandle`] is dropped.
pub fn spawn(
    model: Arc<dyn TokenModel>,
    settings: EngineSettings,
    metrics: Arc<Metrics>,
) -> std::io::Result<EngineHandle> {
    let (tx, rx) = mpsc::channel(settings.max_queue.max(1));
    let engine_metrics = metrics.clone();
    std::thread::Builder::new()
        .name("hybrid-engine".into())
        .spawn(move || run(model, settings, rx, engine_metrics))?;
    Ok(EngineHandle { jobs: tx, metrics })
}

struct Sequence {
    job: GenerationJob,
    cache: KvCache,
    generated: Vec<u32>,
    emitted: usize,
    rng: ChaCha8Rng,
    last_token_at: Option<Instant>,
}

enum Turn {
    Continue,
    Done,
}

fn run(
    model: Arc<dyn TokenModel>,
    settings: EngineSettings,
    mut rx: mpsc::Receiver<GenerationJob>,
    metrics: Arc<Metrics>,
) {
    let mut active: Vec<Sequence> = Vec::new();
    loop {
        while active.len() < settings.max_concurrency {
            let job = if active.is_empty() {
                match rx.blocking_recv() {
                    Some(job) => job,
                    None => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            metrics.queue_depth.dec();
            let rng = match job.params.seed {
                Some(seed) => ChaCha8Rng::seed_from_u64(seed),
                None => ChaCha8Rng::from_os_rng(),
            };
            active.push(Sequence {
                job,
                cache: KvCache::new(),
                generated: Vec::new(),
                emitted: 0,
                rng,
                last_token_at: None,
            });
        }
        metrics.in_flight.set(active.len() as i64);
        let mut i = 0;
        while i < active.len() {
            let seq = &mut active[i];
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                turn(
                    model.as_ref(),
                    seq,
                    &metrics,
                    settings.prefill_delay_per_token,
                )
            }));
            let done = match outcome {
                Ok(Ok(Turn::Continue)) => false,
                Ok(Ok(Turn::Done)) => true,
                Ok(Err(e)) => {
                    let message = e.to_string();
                    tracing::error!("generation failed: {message}");
                    let _ = seq.job.events.send(Event::Failed(message));
                    true
                }
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    tracing::error!(
                        "generation panicked (request failed, engine keeps serving): {message}"
                    );
                    let _ = seq
                        .job
                        .events
                        .send(Event::Failed(format!("internal error: {message}")));
                    true
                }
            };
            if done {
                active.swap_remove(i);
            } else {
                i += 1;
            }
        }
        metrics.in_flight.set(active.len() as i64);
        if !settings.decode_delay.is_zero() && !active.is_empty() {
            std::thread::sleep(settings.decode_delay);
        }
    }
}

/// One token of one sequence (the whole prompt on its first turn).
fn turn(
    model: &dyn TokenModel,
    seq: &mut Sequence,
    metrics: &Metrics,
    prefill_delay_per_token: Duration,
) -> Result<Turn, EngineError> {
    if seq.job.events.is_closed() {
        return Ok(Turn::Done);
    }
    let params = &seq.job.params;
    let input: Vec<u32> = match seq.generated.last() {
        Some(&last) => vec![last],
        None => seq.job.prompt.clone(),
    };
    if input.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if seq.generated.is_empty() && !prefill_delay_per_token.is_zero() {
        // Test-only: a prompt costs time in proportion to its length, as prefill does on a
        // GPU, so retrieval depth moves latency the same way on every machine.
        std::thread::sleep(prefill_delay_per_token.saturating_mul(input.len() as u32));
    }
    let next = model.next_token(
        &mut seq.cache,
        &input,
        seq.job.adapter.as_deref(),
        params,
        &mut seq.rng,
    )?;
    let now = Instant::now();
    let [m, a] = &seq.job.labels;
    match seq.last_token_at {
        None => metrics
            .time_to_first_token
            .with_label_values(&[m.as_str(), a.as_str()])
            .observe((now - seq.job.received).as_secs_f64()),
        Some(t) => metrics
            .inter_token_latency
            .with_label_values(&[m.as_str(), a.as_str()])
            .observe((now - t).as_secs_f64()),
    }
    seq.last_token_at = Some(now);
    let finish = |seq: &mut Sequence, reason, text_final: bool| -> Result<Turn, EngineError> {
        if text_final {
            let text = model.decode(&seq.generated)?;
            let (delta, _) = next_delta(&text, seq.emitted, &seq.job.params.stop, true);
            if !delta.is_empty() {
                let _ = seq.job.events.send(Event::Delta(delta));
            }
        }
        let _ = seq.job.events.send(Event::Finished {
            reason,
            completion_tokens: seq.generated.len(),
        });
        Ok(Turn::Done)
    };
    if model.stop_ids().contains(&next) {
        return finish(seq, FinishReason::Stop, true);
    }
    seq.generated.push(next);
    let text = model.decode(&seq.generated)?;
    let (delta, stopped) = next_delta(&text, seq.emitted, &params.stop, false);
    if !delta.is_empty() {
        seq.emitted += delta.len();
        if seq.job.events.send(Event::Delta(delta)).is_err() {
            return Ok(Turn::Done);
        }
    }
    if stopped {
        return finish(seq, FinishReason::Stop, false);
    }
    let at_limit = seq.generated.len() >= params.max_tokens
        || seq.job.prompt.len() + seq.generated.len() >= model.context_length();
    if at_limit {
        return finish(seq, FinishReason::Length, true);
    }
    Ok(Turn::Continue)
}

/// The text after byte `emitted` that is safe to send now, and whether a stop string ended the
/// answer. Text that may be the start of a stop string, or of an incomplete UTF-8 character
/// (decoded as U+FFFD), is held back until the next token decides it, so streamed deltas always
/// add up to the final answer.
pub fn next_delta(text: &str, emitted: usize, stops: &[String], finished: bool) -> (String, bool) {
    let earliest = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min();
    if let Some(pos) = earliest {
        let end = pos.max(emitted);
        return (text.get(emitted..end).unwrap_or_default().to_string(), true);
    }
    let mut end = text.len();
    if !finished {
        let held = stops
            .iter()
            .flat_map(|s| s.char_indices().skip(1).map(move |(i, _)| &s[..i]))
            .filter(|prefix| text.ends_with(prefix))
            .map(|p| p.len())
            .max()
            .unwrap_or(0);
        end -= held;
        if text[..end].ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
    }
    if end <= emitted {
        return (String::new(), false);
    }
    (
        text.get(emitted..end).unwrap_or_default().to_string(),
        false,
    )
}

/// Greedy at temperature 0; otherwise nucleus sampling (`top_p`) from the tempered softmax.
pub fn sample(logits: &[f32], temperature: f32, top_p: f32, rng: &mut ChaCha8Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0 as u32
    };
    if temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l - max) / temperature).exp()))
        .filter(|(_, p)| p.is_finite() && *p > 0.0)
        .collect();
    if probs.is_empty() {
        return argmax();
    }
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f32 = probs.iter().map(|p| p.1).sum();
    let cutoff = top_p.clamp(f32::MIN_POSITIVE, 1.0) * total;
    let mut kept = 0.0;
    let mut n = 0;
    for (_, p) in &probs {
        kept += p;
        n += 1;
        if kept >= cutoff {
            break;
        }
    }
    let mut r = rng.random::<f32>() * kept;
    for (id, p) in &probs[..n] {
        if r < *p {
            return *id;
        }
        r -= p;
    }
    probs[n - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emits the bytes of a fixed answer (no byte repeats, so the last token says where it is);
    /// token 0 ends the sequence, and a prompt holding 999 makes it panic.
    struct Scripted(Vec<u32>);

    impl TokenModel for Scripted {
        fn next_logits(
            &self,
            _cache: &mut KvCache,
            input: &[u32],
            _adapter: Option<&AdapterSet>,
        ) -> Result<Vec<f32>, EngineError> {
            if input.contains(&999) {
                panic!("scripted failure");
            }
            let next = match input {
                [last] => self
                    .0
                    .iter()
                    .position(|t| t == last)
                    .and_then(|p| self.0.get(p + 1))
                    .copied()
                    .unwrap_or(0),
                _ => self.0[0],
            };
            let mut logits = vec![0.0; 256];
            logits[next as usize] = 1.0;
            Ok(logits)
        }
        fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
            Ok(ids.iter().map(|&i| i as u8 as char).collect())
        }
        fn stop_ids(&self) -> &[u32] {
            &[0]
        }
        fn context_length(&self) -> usize {
            100
        }
    }

    fn job(prompt: Vec<u32>, stop: &[&str]) -> (GenerationJob, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let job = GenerationJob {
            prompt,
            adapter: None,
            params: SamplingParams {
                max_tokens: 50,
                temperature: 0.0,
                top_p: 1.0,
                seed: None,
                stop: stop.iter().map(|s| s.to_string()).collect(),
            },
            received: Instant::now(),
            labels: ["m".into(), "base".into()],
            events: tx,
        };
        (job, rx)
    }

    fn collect(rx: &mut mpsc::UnboundedReceiver<Event>) -> (String, Option<Event>) {
        let mut text = String::new();
        while let Some(e) = rx.blocking_recv() {
            match e {
                Event::Delta(d) => text.push_str(&d),
                other => return (text, Some(other)),
            }
        }
        (text, None)
    }

    fn engine(queue: usize) -> EngineHandle {
        let answer: Vec<u32> = b"the quick".iter().map(|&b| b as u32).collect();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        spawn(
            Arc::new(Scripted(answer)),
            EngineSettings {
                max_concurrency: 1,
                max_queue: queue,
                decode_delay: Duration::ZERO,
                prefill_delay_per_token: Duration::ZERO,
            },
            metrics,
        )
        .expect("engine thread")
    }

    #[test]
    fn answers_and_honours_stop_strings() {
        let e = engine(4);
        let (j, mut rx) = job(vec![1, 2], &[]);
        e.submit(j).expect("queued");
        let (text, end) = collect(&mut rx);
        assert_eq!(text, "the quick");
        assert!(
            matches!(
                end,
                Some(Event::Finished {
                    reason: FinishReason::Stop,
                    completion_tokens: 9
                })
            ),
            "{end:?}"
        );
        let (j, mut rx) = job(vec![1, 2], &["e q"]);
        e.submit(j).expect("queued");
        assert_eq!(collect(&mut rx).0, "th");
    }

    #[test]
    fn a_panicking_request_fails_alone() {
        let e = engine(4);
        let (j, mut rx) = job(vec![999, 1], &[]);
        e.submit(j).expect("queued");
        let (_, end) = collect(&mut rx);
        assert!(
            matches!(&end, Some(Event::Failed(m)) if m.contains("scripted failure")),
            "{end:?}"
        );
        let (j, mut rx) = job(vec![1, 2], &[]);
        e.submit(j).expect("queued");
        assert_eq!(collect(&mut rx).0, "the quick");
    }

    #[test]
    fn held_back_text_adds_up() {
        let stops = vec!["END".to_string()];
        assert_eq!(next_delta("abcE", 0, &stops, false), ("abc".into(), false));
        assert_eq!(
            next_delta("abcEN", 3, &stops, false),
            (String::new(), false)
        );
        assert_eq!(
            next_delta("abcENX", 3, &stops, false),
            ("ENX".into(), false)
        );
        assert_eq!(
            next_delta("abcEND", 3, &stops, false),
            (String::new(), true)
        );
        assert_eq!(
            next_delta("ab\u{FFFD}", 0, &[], false),
            ("ab".into(), false)
        );
        assert_eq!(next_delta("abE", 0, &stops, true), ("abE".into(), false));
    }

    #[test]
    fn sampling_is_greedy_at_zero_and_seeded_otherwise() {
        let logits = [0.0, 5.0, 1.0, 4.9];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(sample(&logits, 0.0, 1.0, &mut rng), 1);
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample(&logits, 1.0, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(draw(7).contains(&3), "both likely tokens are drawn");
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // top_p small enough keeps only the best token.
        assert!((0..20).all(|_| sample(&logits, 1.0, 0.1, &mut rng) == 1));
    }
}
