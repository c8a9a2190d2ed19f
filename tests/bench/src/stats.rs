//! Summaries of measured samples, and the time arithmetic the scenarios share.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// A sample set in milliseconds: nearest-rank percentiles.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * s.len() as f64).ceil() as usize;
            s[i.clamp(1, s.len()) - 1]
        };
        Summary {
            n: s.len(),
            min: s[0],
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: s[s.len() - 1],
            mean: s.iter().sum::<f64>() / s.len() as f64,
        }
    }
}

/// `later - earlier` in milliseconds; negative when `later` came first.
pub fn ms_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A figure for the table: three significant digits at most, two decimals for small ones.
pub fn fmt_ms(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0} ms")
    } else if v.abs() >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v);
        assert_eq!(
            (s.p50, s.p90, s.p99, s.max, s.min),
            (50.0, 90.0, 99.0, 100.0, 1.0)
        );
        assert_eq!(Summary::of(&[7.0]).p99, 7.0);
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).p50, 2.0);
        assert_eq!(Summary::of(&[]).n, 0);
    }

    #[test]
    fn signed_differences() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(ms_between(t, t + Duration::from_millis(5)), 5.0);
        assert_eq!(ms_between(t + Duration::from_millis(5), t), -5.0);
    }
}
