//! Adam (with L2 weight decay, as `torch.optim.Adam`), written over the variables of a
//! `VarStore` so that its moment estimates can be checkpointed: libtorch's optimiser behind
//! `tch::nn::Optimizer` does not expose them, and a restart would otherwise begin again from
//! zero moments.

use std::collections::HashMap;

use tch::{nn, Kind, Tensor};

use super::checkpoint::RestoreError;

/// The optimiser and its state: step count and first and second moments per variable.
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: i64,
    /// Trainable variables by name (sorted), with their moments.
    params: Vec<(String, Tensor, Tensor, Tensor)>,
}

impl Adam {
    /// Adam over the trainable variables of `vars` (batch-norm statistics are not trainable).
    pub fn new(vars: &nn::VarStore, lr: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor, Tensor, Tensor)> = vars
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| {
                let (m, v) = (t.zeros_like(), t.zeros_like());
                (name, t, m, v)
            })
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, step: 0, params }
    }

    /// Changes the step size of the following steps (a schedule's current rate).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Forgets the moments of rows `rows` of the variable `name` (rows whose weights were just
    /// replaced, so that their old gradient history does not steer the new weights).
    pub fn reset_rows(&mut self, name: &str, rows: &[i64]) {
        let _guard = tch::no_grad_guard();
        for (_, _, m, v) in self.params.iter_mut().filter(|(n, ..)| n == name) {
            for &row in rows {
                let _ = m.get(row).zero_();
                let _ = v.get(row).zero_();
            }
        }
    }

    /// Clears the gradients, back-propagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) {
        for (_, p, _, _) in &mut self.params {
            p.zero_grad();
        }
        loss.backward();
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2 = 1.0 - self.beta2.powi(self.step as i32);
        let (b1, b2, eps, wd, lr) = (self.beta1, self.beta2, self.eps, self.weight_decay, self.lr);
        for (_, p, m, v) in &mut self.params {
            let grad = p.grad();
            if !grad.defined() {
                continue;
            }
            let grad = if wd != 0.0 { grad + &*p * wd } else { grad };
            m.copy_(&(&*m * b1 + &grad * (1.0 - b1)));
            v.copy_(&(&*v * b2 + grad.square() * (1.0 - b2)));
            let denominator = (&*v / bias2).sqrt() + eps;
            let _ = p.g_sub_(&(&*m / denominator * (lr / bias1)));
        }
    }

    /// The state a checkpoint keeps: `adam.step`, `adam.m.<variable>` and `adam.v.<variable>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut tensors = vec![("adam.step".to_owned(), Tensor::from_slice(&[self.step]))];
        for (name, _, m, v) in &self.params {
            tensors.push((format!("adam.m.{name}"), m.detach().copy()));
            tensors.push((format!("adam.v.{name}"), v.detach().copy()));
        }
        tensors
    }

    /// Restores [`Adam::state`]. A checkpoint without it (written before the optimiser state was
    /// kept) leaves the moments at zero and says so; one with moments of other shapes is refused.
    pub fn restore(&mut self, tensors: &HashMap<&str, &Tensor>) -> Result<bool, RestoreError> {
        let Some(step) = tensors.get("adam.step") else {
            return Ok(false);
        };
        let mut found = Vec::with_capacity(self.params.len());
        for (name, p, _, _) in &self.params {
            let moment = |which: &str| {
                let key = format!("adam.{which}.{name}");
                let saved =
                    tensors.get(key.as_str()).copied().ok_or_else(|| RestoreError::Missing { name: key.clone() })?;
                RestoreError::check_shape(&key, p, saved)?;
                Ok::<_, RestoreError>(saved.shallow_clone())
            };
            found.push((moment("m")?, moment("v")?));
        }
        let _guard = tch::no_grad_guard();
        for ((_, p, m, v), (saved_m, saved_v)) in self.params.iter_mut().zip(found) {
            m.copy_(&saved_m.to_kind(Kind::Float).to(p.device()));
            v.copy_(&saved_v.to_kind(Kind::Float).to(p.device()));
        }
        self.step = step.int64_value(&[0]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same steps as libtorch's own Adam (weight decay included), to float precision.
    #[test]
    fn matches_libtorchs_adam() {
        let _lock = crate::rng_lock();
        tch::manual_seed(3);
        let make = || {
            let vars = nn::VarStore::new(tch::Device::Cpu);
            let linear = nn::linear(vars.root() / "fc", 4, 3, Default::default());
            (vars, linear)
        };
        let (ours_vars, ours_net) = make();
        let (torch_vars, torch_net) = make();
        let mut torch_vars = torch_vars;
        torch_vars.copy(&ours_vars).unwrap();
        let mut ours = Adam::new(&ours_vars, 0.01, 1e-3);
        let mut reference =
            nn::OptimizerConfig::build(nn::Adam { wd: 1e-3, ..Default::default() }, &torch_vars, 0.01).unwrap();
        let x = Tensor::randn([8, 4], (Kind::Float, tch::Device::Cpu));
        for _ in 0..5 {
            ours.backward_step(&x.apply(&ours_net).square().mean(Kind::Float));
            reference.backward_step(&x.apply(&torch_net).square().mean(Kind::Float));
        }
        let theirs = torch_vars.variables();
        for (name, t) in ours_vars.variables() {
            let diff = (&t - &theirs[&name]).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name} differs by {diff}");
        }
    }

    /// Moments survive a state round trip, so a restored optimiser takes the same next step.
    #[test]
    fn state_round_trips() {
        let _lock = crate::rng_lock();
        tch::manual_seed(4);
        let vars = nn::VarStore::new(tch::Device::Cpu);
        let net = nn::linear(vars.root() / "fc", 3, 2, Default::default());
        let mut adam = Adam::new(&vars, 0.01, 0.0);
        let x = Tensor::randn([5, 3], (Kind::Float, tch::Device::Cpu));
        for _ in 0..3 {
            adam.backward_step(&x.apply(&net).sum(Kind::Float));
        }
        let saved = adam.state();
        let mut map: HashMap<&str, &Tensor> = saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut fresh = Adam::new(&vars, 0.01, 0.0);
        assert!(fresh.restore(&map).unwrap());
        assert_eq!(fresh.step, 3);
        for ((_, _, m1, v1), (_, _, m2, v2)) in adam.params.iter().zip(&fresh.params) {
            assert!(m1.allclose(m2, 0.0, 0.0, false) && v1.allclose(v2, 0.0, 0.0, false));
        }
        let old: HashMap<&str, &Tensor> = HashMap::new();
        assert!(!Adam::new(&vars, 0.01, 0.0).restore(&old).unwrap(), "older checkpoints have no optimiser state");
        // A moment of another shape is refused, naming the tensor and both shapes.
        let wrong = Tensor::zeros([7], (Kind::Float, tch::Device::Cpu));
        map.insert("adam.v.fc.bias", &wrong);
        let error = Adam::new(&vars, 0.01, 0.0).restore(&map).unwrap_err().to_string();
        assert_eq!(error, "adam.v.fc.bias: shape [7] in the checkpoint, [2] here");
    }
}
