//! Medians and percentiles.

/// Summary of one series of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// Summarises `v` (nearest-rank percentiles).
    pub fn of(v: &[f64]) -> Stats {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| -> f64 {
            if s.is_empty() {
                return f64::NAN;
            }
            let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
            s[rank - 1]
        };
        Stats {
            n: s.len(),
            median: pick(0.5),
            p90: pick(0.9),
            min: pick(0.0),
            max: pick(1.0),
        }
    }
}
