//! Learning-rate schedules by epoch ([`LrSchedule`]), shared by the training stages: the rate of
//! an epoch depends only on its number, so a resumed run follows the same schedule.

base::choices! {
    /// How the learning rate changes over the epochs of a run.
    #[derive(Default)]
    pub enum LrSchedule("learning-rate schedule") {
        /// The same rate every epoch (Keras' default; the tutorial).
        #[default]
        Constant = "constant",
        /// Half a cosine from the base rate down towards zero over the run:
        /// `lr·(1 + cos(π·(e-1)/E))/2` for epoch `e` of `E`.
        Cosine = "cosine",
    }
}

impl LrSchedule {
    /// The learning rate of 1-based `epoch` of `epochs` for base rate `base`.
    pub fn rate(self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let e = epoch.saturating_sub(1).min(epochs) as f64;
                let t = e / epochs.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_keeps_the_rate() {
        for e in 1..=5 {
            assert_eq!(LrSchedule::Constant.rate(1e-3, e, 5), 1e-3);
        }
    }

    #[test]
    fn cosine_starts_at_the_base_and_falls_to_near_zero() {
        let s = LrSchedule::Cosine;
        assert_eq!(s.rate(0.1, 1, 100), 0.1);
        assert!((s.rate(0.1, 51, 100) - 0.05).abs() < 1e-12);
        let last = s.rate(0.1, 100, 100);
        assert!(last > 0.0 && last < 1e-4, "{last}");
        let rates: Vec<f64> = (1..=100).map(|e| s.rate(0.1, e, 100)).collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn names_round_trip() {
        for s in [LrSchedule::Constant, LrSchedule::Cosine] {
            assert_eq!(s.name().parse::<LrSchedule>().unwrap(), s);
        }
        assert!("step".parse::<LrSchedule>().is_err());
    }
}
