//! AdamW over accumulated gradients, and the warm-up + cosine learning-rate schedule.
//!
//! candle's `AdamW` takes a `GradStore`, which also holds the gradient of every intermediate
//! tensor of the step; keeping one alive across gradient-accumulation micro-batches would keep
//! all activations' gradients too. This one takes just the parameters' gradients.

use candle_core::{Result, Tensor, Var};

pub struct AdamW {
    params: Vec<Var>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    step: i32,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    pub fn new(params: Vec<Var>, weight_decay: f64) -> Result<Self> {
        let first = params
            .iter()
            .map(|p| p.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let second = first.clone();
        Ok(Self {
            params,
            first,
            second,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to `params[i]` (`None`: no update).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step);
        let bias2 = 1.0 - self.beta2.powi(self.step);
        for (i, param) in self.params.iter().enumerate() {
            let Some(g) = grads.get(i).and_then(|g| g.as_ref()) else {
                continue;
            };
            let m = ((&self.first[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.second[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bias1)? / ((&v / bias2)?.sqrt()? + self.eps)?)?;
            let decayed = (param.as_tensor() * (1.0 - lr * self.weight_decay))?;
            param.set(&(decayed - (update * lr)?)?)?;
            self.first[i] = m;
            self.second[i] = v;
        }
        Ok(())
    }
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter().flatten() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to 0 at `total`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
}

impl Schedule {
    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let decay_steps = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / decay_steps as f64).min(1.0);
        self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = Schedule {
            peak: 1.0,
            warmup: 4,
            total: 20,
        };
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        assert_eq!(s.lr(4), 1.0);
        assert!((s.lr(12) - 0.5).abs() < 1e-12);
        assert!(s.lr(19) < 0.02);
        assert!((1..20).all(|i| i <= 4 || s.lr(i) <= s.lr(i - 1)));
    }

    #[test]
    fn adamw_first_step_moves_each_weight_by_lr_against_the_gradient() -> Result<()> {
        let p = Var::new(&[1.0f32, -1.0], &Device::Cpu)?;
        let mut opt = AdamW::new(vec![p.clone()], 0.0)?;
        let g = Tensor::new(&[0.5f32, -2.0], &Device::Cpu)?;
        opt.step(&[Some(g)], 0.1)?;
        let v = p.as_tensor().to_vec1::<f32>()?;
        assert!(
            (v[0] - 0.9).abs() < 1e-5 && (v[1] + 0.9).abs() < 1e-5,
            "{v:?}"
        );
        Ok(())
    }

    #[test]
    fn clipping_bounds_the_global_norm() -> Result<()> {
        let mut grads = vec![
            Some(Tensor::new(&[3.0f32], &Device::Cpu)?),
            None,
            Some(Tensor::new(&[4.0f32], &Device::Cpu)?),
        ];
        let before = clip_grad_norm(&mut grads, 1.0)?;
        assert!((before - 5.0).abs() < 1e-6);
        let after = clip_grad_norm(&mut grads, 0.0)?;
        assert!((after - 1.0).abs() < 1e-4, "{after}");
        Ok(())
    }
}
