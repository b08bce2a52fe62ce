//! Learning-rate schedules with linear warm-up, matching transformers' `get_scheduler`:
//! during warm-up the rate rises linearly from 0 to the peak over `warmup_steps`; after it,
//! `constant` stays at the peak, `linear` falls linearly to 0 at `total_steps`, and `cosine` follows
//! half a cosine from the peak to 0 at `total_steps`.

use serde::{Deserialize, Serialize};

/// The shape of the schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Cosine,
    Linear,
    Constant,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cosine" => Ok(Self::Cosine),
            "linear" => Ok(Self::Linear),
            "constant" | "constant_with_warmup" => Ok(Self::Constant),
            other => Err(format!(
                "unknown lr_scheduler_type `{other}`: use cosine, linear or constant"
            )),
        }
    }
}

/// A schedule over a known number of optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LrSchedule {
    /// `warmup_steps` wins over `warmup_ratio` when both are given (as in transformers).
    pub fn new(
        kind: ScheduleKind,
        peak: f64,
        total_steps: u64,
        warmup_steps: Option<u64>,
        warmup_ratio: f64,
    ) -> Self {
        let warmup_steps =
            warmup_steps.unwrap_or_else(|| (warmup_ratio * total_steps as f64).ceil() as u64);
        Self {
            kind,
            peak,
            warmup_steps,
            total_steps,
        }
    }

    /// The rate used for optimiser step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / decay_steps).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.peak,
            ScheduleKind::Linear => self.peak * (1.0 - progress).max(0.0),
            ScheduleKind::Cosine => {
                self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_then_cosine_to_zero() {
        // 10 steps, 2 of warm-up, peak 1e-4: transformers gives 0, 5e-5, then cosine over 8 steps.
        let s = LrSchedule::new(ScheduleKind::Cosine, 1e-4, 10, Some(2), 0.0);
        assert!(close(s.lr(0), 0.0));
        assert!(close(s.lr(1), 5e-5));
        assert!(close(s.lr(2), 1e-4));
        // Halfway through the decay (step 6 of 2..10): 0.5 * (1 + cos(pi/2)) = 0.5.
        assert!(close(s.lr(6), 5e-5));
        assert!(close(s.lr(10), 0.0));
    }

    #[test]
    fn linear_and_constant() {
        let s = LrSchedule::new(ScheduleKind::Linear, 2.0, 4, None, 0.0);
        assert_eq!(
            [s.lr(0), s.lr(1), s.lr(2), s.lr(3), s.lr(4)],
            [2.0, 1.5, 1.0, 0.5, 0.0]
        );
        let s = LrSchedule::new(ScheduleKind::Constant, 3.0, 100, None, 0.1);
        assert_eq!(s.warmup_steps, 10);
        assert!(close(s.lr(5), 1.5));
        assert_eq!(s.lr(50), 3.0);
    }

    #[test]
    fn names_parse_like_ms_swift() {
        assert_eq!("cosine".parse::<ScheduleKind>(), Ok(ScheduleKind::Cosine));
        assert!("cosne"
            .parse::<ScheduleKind>()
            .unwrap_err()
            .contains("cosine, linear or constant"));
    }
}
