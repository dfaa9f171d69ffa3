//! How the training step's weights change with the steps (`[train.schedule]`): the ramp-up of
//! the consistency and of the unlabelled head's terms, and the decay of the learning rate.

use crate::config::ScheduleConfig;

/// Consistency ramp-up `w(t) = exp(−5 (1 − t/T)²)`, rising from about 0.007 to 1 at `t = T`.
pub fn rampup(step: u64, rampup_steps: u64) -> f64 {
    if rampup_steps == 0 {
        return 1.0;
    }
    let t = (step as f64 / rampup_steps as f64).min(1.0);
    (-5.0 * (1.0 - t).powi(2)).exp()
}

/// Weight of the unlabelled head's terms at `step`: with `bce_rampup` they ramp up like the
/// consistency, so clusters form once features do.
pub fn unlabelled_weight(schedule: &ScheduleConfig, step: u64) -> f64 {
    if schedule.bce_rampup {
        rampup(step, schedule.rampup_steps)
    } else {
        1.0
    }
}

/// The learning rate at `step` when it decays (`lr_decay_steps` above 0): `base` falling to 0
/// along a half cosine, then 0. `None` when it does not decay (it stays at `base`).
pub fn decayed_learning_rate(base: f64, schedule: &ScheduleConfig, step: u64) -> Option<f64> {
    let steps = schedule.lr_decay_steps;
    (steps > 0).then(|| {
        let progress = step.min(steps) as f64 / steps as f64;
        base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rampup_rises_from_near_zero_to_one() {
        assert!(rampup(0, 100) < 0.01);
        assert!(rampup(50, 100) > rampup(10, 100));
        assert_eq!(rampup(100, 100), 1.0);
        assert_eq!(rampup(1000, 100), 1.0);
    }

    #[test]
    fn the_learning_rate_falls_along_a_half_cosine() {
        let schedule = ScheduleConfig { lr_decay_steps: 4, ..Default::default() };
        let rates: Vec<f64> = (0..6).map(|step| decayed_learning_rate(1.0, &schedule, step).unwrap()).collect();
        assert_eq!(rates[0], 1.0);
        assert!((rates[2] - 0.5).abs() < 1e-12);
        assert!(rates[4..].iter().all(|&r| r.abs() < 1e-12), "{rates:?}");
        let constant = ScheduleConfig { lr_decay_steps: 0, ..Default::default() };
        assert_eq!(decayed_learning_rate(1.0, &constant, 3), None);
    }
}
