//! Means, 95% confidence intervals and Welch's t-test for the interleaved re-profiling rounds.
//!
//! The rounds are few (3–10), so the quantiles come from Student's t, not the normal. They are the
//! standard table values; for a fractional Welch degree of freedom the next lower integer is used,
//! which only makes the test more cautious.

/// Two-sided 95% quantiles of Student's t (t₀.₉₇₅) for 1..=30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// One-sided 95% quantiles of Student's t (t₀.₉₅) for 1..=30 degrees of freedom.
const T_95: [f64; 30] = [
    6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771,
    1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711, 1.708, 1.706,
    1.703, 1.701, 1.699, 1.697,
];

fn quantile(table: &[f64; 30], beyond: f64, df: f64) -> f64 {
    if !df.is_finite() || df > 30.0 {
        return beyond;
    }
    // Rounding df down is conservative: fewer degrees of freedom, a larger quantile.
    let i = (df.floor() as usize).clamp(1, 30);
    table[i - 1]
}

/// Mean and 95% confidence interval of per-round figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of rounds.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one round).
    pub sd: f64,
    /// Lower end of the 95% interval.
    pub lo: f64,
    /// Upper end of the 95% interval.
    pub hi: f64,
}

impl Summary {
    /// Half the interval's width.
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

/// Summarizes `xs` (at least one figure; one figure has an unbounded interval).
pub fn summarize(xs: &[f64]) -> Summary {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return Summary {
            n,
            mean,
            sd: 0.0,
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
        };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let h = quantile(&T_975, 1.960, (n - 1) as f64) * sd / (n as f64).sqrt();
    Summary {
        n,
        mean,
        sd,
        lo: mean - h,
        hi: mean + h,
    }
}

/// Welch's t-test of "mean of `a` > mean of `b`" at one-sided 5%.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// The t statistic (infinite when both samples are constant and differ).
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Whether `a`'s mean is greater with 95% confidence.
    pub significant: bool,
}

/// Welch's t-test that `a`'s mean exceeds `b`'s (two rounds each at least).
pub fn welch_greater(a: &[f64], b: &[f64]) -> Welch {
    let (sa, sb) = (summarize(a), summarize(b));
    let (na, nb) = (sa.n as f64, sb.n as f64);
    let (va, vb) = (sa.sd.powi(2) / na, sb.sd.powi(2) / nb);
    let se = (va + vb).sqrt();
    let diff = sa.mean - sb.mean;
    if sa.n < 2 || sb.n < 2 {
        return Welch {
            t: f64::NAN,
            df: 0.0,
            significant: false,
        };
    }
    if se == 0.0 {
        // Constant figures (a share-only hook): the difference is exact.
        return Welch {
            t: if diff > 0.0 {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            },
            df: na + nb - 2.0,
            significant: diff > 0.0,
        };
    }
    let df = (va + vb).powi(2) / (va.powi(2) / (na - 1.0) + vb.powi(2) / (nb - 1.0));
    let t = diff / se;
    Welch {
        t,
        df,
        significant: t > quantile(&T_95, 1.645, df),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interval and test on figures worked by hand.
    #[test]
    fn interval_and_welch() {
        let s = summarize(&[10.0, 12.0, 14.0]);
        assert_eq!(s.mean, 12.0);
        assert!((s.sd - 2.0).abs() < 1e-12);
        // 4.303 × 2 / √3
        assert!((s.half_width() - 4.303 * 2.0 / 3f64.sqrt()).abs() < 1e-9);
        let w = welch_greater(&[20.0, 21.0, 22.0], &[10.0, 12.0, 14.0]);
        assert!(w.significant && w.t > 5.0, "{w:?}");
        let w = welch_greater(&[12.5, 11.0, 13.0], &[10.0, 12.0, 14.0]);
        assert!(!w.significant, "{w:?}");
        assert!(welch_greater(&[1.0, 1.0], &[0.5, 0.5]).significant);
        assert!(!welch_greater(&[0.5, 0.5], &[0.5, 0.5]).significant);
        assert!(!welch_greater(&[1.0], &[0.0]).significant);
        assert!(summarize(&[3.0]).hi.is_infinite());
    }
}
