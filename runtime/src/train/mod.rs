//! `hybrid-runtime train`: LoRA supervised fine-tuning on JSONL chat examples.
//!
//! The run: load and validate the dataset (tokenized with the model's ChatML template, loss on
//! assistant tokens only) → seeded split into train / held-out eval → LoRA on a float base →
//! AdamW with warm-up + cosine schedule and gradient accumulation → periodic eval with early
//! stopping (the best eval-loss weights are kept) → PEFT adapter + report written to a temporary
//! directory and renamed to `<output>/<revision>` only when complete.

pub mod cli;
pub mod dataset;
mod error;
pub mod optim;
pub mod report;
pub mod spec;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, Device, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

pub use error::TrainError;
pub use report::{Progress, TrainReport, TrainResult};
pub use spec::{BaseFormat, Method, TrainSpec};

use crate::chat::ChatTemplate;
use crate::lora::{DropoutRng, LoraInit, peft};
use crate::model::{BaseWeights, Llama};
use dataset::Example;

/// Name of the report file written next to the adapter.
pub const REPORT_FILE: &str = "train-report.json";

/// A base model located and inspected, before its weights are loaded: enough to tokenize and
/// validate a dataset (which fails fast on bad data) and to compute the revision.
pub struct BaseModelSource {
    pub path: PathBuf,
    pub format: BaseFormat,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// sha256 of the GGUF file, or of the safetensors files' digests in name order.
    pub digest: String,
    pub name: String,
}

fn base_path(spec: &TrainSpec) -> Result<PathBuf, TrainError> {
    let raw = spec.base_model.clone().unwrap_or_default();
    if let Some(path) = raw.strip_prefix("file://") {
        return Ok(PathBuf::from(path));
    }
    if raw.contains("://") {
        return Err(TrainError::InvalidConfig(format!(
            "base model `{raw}`: only local paths and file:// URIs are supported; mount the model into the Job"
        )));
    }
    Ok(PathBuf::from(raw))
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).map_err(|e| e.to_string())?;
    Ok(hex::encode(h.finalize()))
}

impl BaseModelSource {
    pub fn open(spec: &TrainSpec) -> Result<Self, TrainError> {
        let path = base_path(spec)?;
        let unreadable = |detail: String| TrainError::BaseModelUnreadable {
            path: path.clone(),
            detail,
        };
        let format = match spec.base_format {
            Some(f) => f,
            None if path.is_dir() => BaseFormat::Safetensors,
            None => BaseFormat::Gguf,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (tokenizer, template, digest) = match format {
            BaseFormat::Gguf => {
                let mut file = std::fs::File::open(&path).map_err(|e| unreadable(e.to_string()))?;
                let content = candle_core::quantized::gguf_file::Content::read(&mut file)
                    .map_err(|e| unreadable(format!("not a GGUF file: {e}")))?;
                let tokenizer =
                    crate::tokenizer::from_gguf_content(&content).map_err(unreadable)?;
                let template = content
                    .metadata
                    .get("tokenizer.chat_template")
                    .and_then(|v| v.to_string().ok())
                    .map(|t| ChatTemplate::from_jinja(t))
                    .unwrap_or_default();
                (tokenizer, template, sha256_file(&path).map_err(unreadable)?)
            }
            BaseFormat::Safetensors => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                    .map_err(|e| unreadable(e.to_string()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                    .collect();
                files.sort();
                let mut h = Sha256::new();
                for f in &files {
                    h.update(sha256_file(f).map_err(unreadable)?.as_bytes());
                }
                let tokenizer = Tokenizer::from_file(path.join("tokenizer.json"))
                    .map_err(|e| unreadable(format!("tokenizer.json: {e}")))?;
                let template = std::fs::read_to_string(path.join("tokenizer_config.json"))
                    .ok()
                    .and_then(|raw| serde_json::from_str::<serde_json::Value>(&raw).ok())
                    .and_then(|v| {
                        v.get("chat_template")
                            .and_then(|t| t.as_str())
                            .map(ChatTemplate::from_jinja)
                    })
                    .unwrap_or_default();
                (tokenizer, template, hex::encode(h.finalize()))
            }
        };
        Ok(Self {
            path,
            format,
            tokenizer,
            template,
            digest,
            name,
        })
    }

    /// Loads the weights for training: f32 everywhere for `lora`; for `qlora`, quantized in the
    /// layers no gradient has to cross (GGUF only; a safetensors base has nothing to keep
    /// quantized).
    pub fn load_model(&self, method: Method, device: &Device) -> Result<Llama, TrainError> {
        let unreadable = |e: candle_core::Error| TrainError::BaseModelUnreadable {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        match self.format {
            BaseFormat::Gguf => {
                let weights = match method {
                    Method::Lora => BaseWeights::Float32,
                    Method::Qlora => BaseWeights::QuantizedWhereFrozen,
                };
                Llama::from_gguf(&self.path, weights, device).map_err(unreadable)
            }
            BaseFormat::Safetensors => {
                Llama::from_safetensors_dir(&self.path, device).map_err(unreadable)
            }
        }
    }
}

/// A padded micro-batch and the flat positions whose next token is a training target.
struct Batch {
    ids: Tensor,
    /// Index into the flattened `(batch·seq)` hidden states of each predicting position.
    positions: Tensor,
    /// The token each of those positions must predict.
    labels: Tensor,
    targets: usize,
    tokens: usize,
}

fn make_batch(examples: &[&Example], pad_id: u32, device: &Device) -> candle_core::Result<Batch> {
    let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(examples.len() * t);
    let mut positions = Vec::new();
    let mut labels = Vec::new();
    let mut tokens = 0;
    for (row, ex) in examples.iter().enumerate() {
        tokens += ex.ids.len();
        ids.extend_from_slice(&ex.ids);
        ids.extend(std::iter::repeat_n(pad_id, t - ex.ids.len()));
        for p in 1..ex.ids.len() {
            if ex.targets[p] {
                positions.push((row * t + p - 1) as u32);
                labels.push(ex.ids[p]);
            }
        }
    }
    let targets = positions.len();
    Ok(Batch {
        ids: Tensor::from_vec(ids, (examples.len(), t), device)?,
        positions: Tensor::from_vec(positions, targets, device)?,
        labels: Tensor::from_vec(labels, (targets, 1), device)?,
        targets,
        tokens,
    })
}

/// Sum over the batch's target tokens of `-log p(label)`.
fn summed_loss(
    model: &Llama,
    batch: &Batch,
    dropout: Option<&DropoutRng>,
) -> candle_core::Result<Tensor> {
    let hidden = model.forward_hidden(&batch.ids, dropout)?;
    let d = hidden.dim(D::Minus1)?;
    let picked = hidden.reshape(((), d))?.index_select(&batch.positions, 0)?;
    let logp = candle_nn::ops::log_softmax(&model.logits(&picked)?, D::Minus1)?;
    logp.gather(&batch.labels, 1)?.sum_all()?.neg()
}

/// Mean token loss over `examples`, without dropout.
pub fn eval_loss(
    model: &Llama,
    examples: &[Example],
    batch_size: usize,
    pad_id: u32,
) -> candle_core::Result<f64> {
    let mut total = 0.0;
    let mut count = 0usize;
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = make_batch(&refs, pad_id, model.device())?;
        if batch.targets == 0 {
            continue;
        }
        total += summed_loss(model, &batch, None)?
            .detach()
            .to_scalar::<f32>()? as f64;
        count += batch.targets;
    }
    Ok(if count == 0 {
        f64::NAN
    } else {
        total / count as f64
    })
}

fn lora_vars(model: &Llama) -> Vec<Var> {
    model
        .lora_branches()
        .into_iter()
        .flat_map(|(_, _, b)| [b.a.clone(), b.b.clone()])
        .collect()
}

fn snapshot(vars: &[Var]) -> candle_core::Result<Vec<Tensor>> {
    vars.iter().map(|v| v.as_tensor().copy()).collect()
}

/// Trains per `spec` and publishes `<output>/<revision>`. Returns the result the Job reports.
pub fn run(spec: &TrainSpec) -> Result<TrainResult, TrainError> {
    spec.validate().map_err(TrainError::InvalidConfig)?;
    let started = Instant::now();
    let placement = crate::device::select(spec.device, "--device")?;
    crate::device::log_placement("train", spec.device, &placement);
    let device = placement.device.clone();
    let mut progress = report::ProgressWriter::new(spec.progress_path.clone());
    progress.phase("loading");
    let base = BaseModelSource::open(spec)?;
    let opts = dataset::LoadOptions {
        tokenizer: &base.tokenizer,
        template: &base.template,
        max_seq_len: spec.max_seq_len,
        skip_overlong: spec.skip_overlong,
    };
    let (examples, data_stats) = dataset::load(&spec.datasets, &opts)?;
    let revision = spec.revision(&data_stats.file_digests, &base.digest);
    let final_dir = spec.output_dir.join(&revision);
    if let Some(done) = report::existing_result(&final_dir)? {
        tracing::info!(%revision, "revision already trained; reporting the stored result");
        return Ok(done);
    }
    let (train_set, eval_set) = dataset::split(examples, spec.eval_fraction, spec.seed);
    if data_stats.skipped_overlong > 0 {
        tracing::warn!(
            skipped = data_stats.skipped_overlong,
            max = spec.max_seq_len,
            "skipped examples longer than max sequence length"
        );
    }

    let settings = spec.lora_settings();
    let mut model = base.load_model(spec.method, &device)?;
    let mut init = LoraInit::new(spec.seed);
    model.attach_lora(&settings, &mut |len, fan_in| init.uniform(len, fan_in))?;
    let vars = lora_vars(&model);
    let trainable: usize = vars.iter().map(|v| v.elem_count()).sum();
    let pad_id = base.tokenizer.token_to_id(crate::chat::IM_END).unwrap_or(0);

    let per_step = spec.batch_size * spec.gradient_accumulation;
    let steps_per_epoch = train_set.len().div_ceil(per_step);
    let total_steps = spec.max_steps.unwrap_or(steps_per_epoch * spec.epochs);
    let schedule = optim::Schedule {
        peak: spec.learning_rate,
        warmup: (total_steps as f64 * spec.warmup_ratio).ceil() as usize,
        total: total_steps,
    };
    let eval_every = spec
        .eval_every
        .unwrap_or_else(|| total_steps.div_ceil(5).max(1));
    let mut optimizer = optim::AdamW::new(vars.clone(), spec.weight_decay)?;
    let dropout = DropoutRng::new(spec.seed.wrapping_add(1));
    let mut order_rng = ChaCha8Rng::seed_from_u64(spec.seed.wrapping_add(2));
    tracing::info!(
        %revision, train = train_set.len(), eval = eval_set.len(), trainable, total_steps,
        "training LoRA r={} alpha={} on {}",
        settings.rank,
        settings.alpha,
        settings.target_modules.iter().map(|m| m.hf_name()).collect::<Vec<_>>().join(",")
    );

    let mut rep = TrainReport::new(
        &revision,
        spec,
        &data_stats,
        train_set.len(),
        eval_set.len(),
        trainable,
    );
    if !eval_set.is_empty() {
        let initial = eval_loss(&model, &eval_set, spec.batch_size, pad_id)?;
        tracing::info!("eval loss before training {initial:.4}");
        rep.initial_eval_loss = Some(initial);
    }
    let mut best: Option<(f64, Vec<Tensor>)> = None;
    let mut evals_without_gain = 0usize;
    let mut queue: Vec<usize> = Vec::new();
    let mut train_secs = 0.0f64;
    let mut train_tokens = 0usize;
    progress.phase("training");

    for step in 0..total_steps {
        let step_started = Instant::now();
        let mut micro: Vec<Vec<&Example>> = Vec::with_capacity(spec.gradient_accumulation);
        for _ in 0..spec.gradient_accumulation {
            if queue.is_empty() {
                queue = (0..train_set.len()).collect();
                queue.shuffle(&mut order_rng);
                queue.reverse();
            }
            let take = spec.batch_size.min(queue.len());
            micro.push(
                (0..take)
                    .filter_map(|_| queue.pop())
                    .map(|i| &train_set[i])
                    .collect(),
            );
        }
        let batches = micro
            .iter()
            .map(|m| make_batch(m, pad_id, &device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let step_targets: usize = batches.iter().map(|b| b.targets).sum::<usize>().max(1);
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut loss = 0.0f64;
        let mut tokens = 0usize;
        for batch in batches.iter().filter(|b| b.targets > 0) {
            let l = (summed_loss(&model, batch, Some(&dropout))? / step_targets as f64)?;
            loss += l.to_scalar::<f32>()? as f64;
            tokens += batch.tokens;
            let store = l.backward()?;
            for (slot, var) in grads.iter_mut().zip(&vars) {
                if let Some(g) = store.get(var) {
                    *slot = Some(match slot.take() {
                        Some(acc) => (acc + g)?,
                        None => g.clone(),
                    });
                }
            }
        }
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: step + 1,
                loss,
            });
        }
        let grad_norm = optim::clip_grad_norm(&mut grads, spec.max_grad_norm)?;
        let lr = schedule.lr(step);
        optimizer.step(&grads, lr)?;
        let secs = step_started.elapsed().as_secs_f64();
        train_secs += secs;
        train_tokens += tokens;
        let eta = train_secs / (step + 1) as f64 * (total_steps - step - 1) as f64;
        rep.push_step(step + 1, loss, lr, grad_norm, tokens, secs);
        progress.step(step + 1, total_steps, loss, eta);
        tracing::info!(
            "step {}/{} loss {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s eta {:.0}s",
            step + 1,
            total_steps,
            loss,
            lr,
            grad_norm,
            tokens as f64 / secs,
            eta
        );

        let last = step + 1 == total_steps;
        if !eval_set.is_empty() && ((step + 1).is_multiple_of(eval_every) || last) {
            progress.phase("evaluating");
            let el = eval_loss(&model, &eval_set, spec.batch_size, pad_id)?;
            rep.push_eval(step + 1, el);
            tracing::info!("step {} eval loss {:.4}", step + 1, el);
            progress.phase("training");
            if best.as_ref().is_none_or(|(b, _)| el < *b) {
                best = Some((el, snapshot(&vars)?));
                evals_without_gain = 0;
            } else {
                evals_without_gain += 1;
                if spec.early_stopping_patience > 0
                    && evals_without_gain >= spec.early_stopping_patience
                {
                    tracing::info!(
                        "eval loss has not improved for {evals_without_gain} evaluations; stopping early"
                    );
                    rep.stopped_early = true;
                    break;
                }
            }
        }
    }

    let eval_loss_kept = match best {
        Some((loss, weights)) => {
            for (var, w) in vars.iter().zip(weights) {
                var.set(&w)?;
            }
            Some(loss)
        }
        None => None,
    };
    rep.finish(
        eval_loss_kept,
        train_tokens,
        train_secs,
        started.elapsed().as_secs_f64(),
    );
    progress.phase("publishing");
    let result = publish(spec, &model, &base.name, &rep, &final_dir)?;
    progress.phase("done");
    Ok(result)
}

/// Writes adapter and report into a temporary sibling of `final_dir` and renames it into place,
/// so a reader never sees a partial revision.
fn publish(
    spec: &TrainSpec,
    model: &Llama,
    base_name: &str,
    rep: &TrainReport,
    final_dir: &Path,
) -> Result<TrainResult, TrainError> {
    std::fs::create_dir_all(&spec.output_dir)
        .map_err(|e| TrainError::output(&spec.output_dir, e))?;
    let tmp = spec
        .output_dir
        .join(format!(".{}.partial-{}", rep.revision, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::output(&tmp, e))?;
    let written = (|| {
        peft::save(model, &spec.lora_settings(), base_name, &tmp)
            .map_err(|e| TrainError::output(&tmp, e))?;
        let json = serde_json::to_string_pretty(rep).map_err(|e| TrainError::output(&tmp, e))?;
        std::fs::write(tmp.join(REPORT_FILE), json + "\n")
            .map_err(|e| TrainError::output(&tmp, e))?;
        std::fs::rename(&tmp, final_dir).map_err(|e| TrainError::output(final_dir, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another run of the same revision may have published first; its result is identical.
        if let Some(done) = report::existing_result(final_dir)? {
            return Ok(done);
        }
        return Err(e);
    }
    Ok(rep.result(final_dir))
}

/// The training loss of one batch of examples, exposed for tests and diagnostics.
pub fn batch_loss(model: &Llama, examples: &[Example], pad_id: u32) -> candle_core::Result<Tensor> {
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = make_batch(&refs, pad_id, model.device())?;
    summed_loss(model, &batch, None)? / batch.targets.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_pad_and_pick_only_assistant_targets() -> candle_core::Result<()> {
        let a = Example {
            ids: vec![10, 11, 12],
            targets: vec![false, false, true],
        };
        let b = Example {
            ids: vec![20, 21],
            targets: vec![false, true],
        };
        let batch = make_batch(&[&a, &b], 0, &Device::Cpu)?;
        assert_eq!(
            batch.ids.to_vec2::<u32>()?,
            vec![vec![10, 11, 12], vec![20, 21, 0]]
        );
        // Row 0 position 1 predicts 12; row 1 position 0 (flat 3) predicts 21.
        assert_eq!(batch.positions.to_vec1::<u32>()?, vec![1, 3]);
        assert_eq!(batch.labels.flatten_all()?.to_vec1::<u32>()?, vec![12, 21]);
        assert_eq!((batch.targets, batch.tokens), (2, 5));
        Ok(())
    }
}
