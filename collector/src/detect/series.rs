//! The detector's input: one service's per-bucket sample counts and its functions' counts.

use serde::{Deserialize, Serialize};

use super::{DetectError, Metric};

/// One service's profile over a window of equal time buckets, with the series of its functions.
///
/// Bucket `i` covers `[start_unix_s + i * bucket_secs, start_unix_s + (i + 1) * bucket_secs)`.
/// Every per-bucket vector has the same length as `samples`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSeries {
    /// The service's name, as in the samples' metadata.
    pub service: String,
    /// Start of bucket 0, seconds since the Unix epoch.
    pub start_unix_s: i64,
    /// Length of one bucket in seconds (60 for one-minute buckets).
    pub bucket_secs: u32,
    /// The profilers' sampling frequency in Hz (19 by default), used to turn samples into CPU cores.
    pub frequency_hz: f64,
    /// `n`: the service's total samples per bucket.
    pub samples: Vec<u32>,
    /// The service's energy per bucket in joules; empty, or `None` for a bucket, where not measured.
    #[serde(default)]
    pub energy_joules: Vec<Option<f64>>,
    /// The functions to test.
    pub functions: Vec<FunctionSeries>,
}

/// One function's sample counts within its service, per bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSeries {
    /// The function's symbol name; unique within the service.
    pub function: String,
    /// Its source file, where the symbolizer knew it.
    #[serde(default)]
    pub file: Option<String>,
    /// Functions seen directly calling this one (names of other series of the same service).
    ///
    /// This is the call-path information the cost-shift filter and the grouping use; leave it empty
    /// where unknown (then neither can relate this function to others).
    #[serde(default)]
    pub callers: Vec<String>,
    /// `k_total`: samples whose stack contains the function.
    pub k_total: Vec<u32>,
    /// `k_self`: samples where the function is the leaf.
    pub k_self: Vec<u32>,
}

impl ServiceSeries {
    /// Checks lengths and that no count exceeds the service's samples.
    pub(crate) fn validate(&self) -> Result<(), DetectError> {
        if self.bucket_secs == 0 {
            return Err(DetectError::InvalidParameter {
                what: "bucket_secs must be positive",
            });
        }
        if !(self.frequency_hz > 0.0 && self.frequency_hz.is_finite()) {
            return Err(DetectError::InvalidParameter {
                what: "frequency_hz must be positive",
            });
        }
        let len = self.samples.len();
        if !self.energy_joules.is_empty() && self.energy_joules.len() != len {
            return Err(DetectError::LengthMismatch {
                series: "energy_joules".to_owned(),
                expected: len,
                found: self.energy_joules.len(),
            });
        }
        for f in &self.functions {
            for (what, v) in [("k_total", &f.k_total), ("k_self", &f.k_self)] {
                if v.len() != len {
                    return Err(DetectError::LengthMismatch {
                        series: format!("{}.{what}", f.function),
                        expected: len,
                        found: v.len(),
                    });
                }
            }
            let bad =
                (0..len).find(|&i| f.k_total[i] > self.samples[i] || f.k_self[i] > f.k_total[i]);
            if let Some(bucket) = bad {
                return Err(DetectError::CountExceedsTotal {
                    function: f.function.clone(),
                    bucket,
                });
            }
        }
        Ok(())
    }
}

/// Prefix sums of the service's samples, shared by all its functions' tests.
///
/// `x` is the bucket index; the step test centres it on the split point.
pub(crate) struct BaseSums {
    /// Σ n.
    pub(crate) n: Vec<f64>,
    /// Σ n·x.
    pub(crate) nx: Vec<f64>,
    /// Σ n·x².
    pub(crate) nxx: Vec<f64>,
    /// Number of buckets with n > 0 (residual degrees of freedom).
    pub(crate) m: Vec<f64>,
}

impl BaseSums {
    pub(crate) fn new(samples: &[u32]) -> Self {
        let len = samples.len() + 1;
        let (mut n, mut nx, mut nxx, mut m) = (
            Vec::with_capacity(len),
            Vec::with_capacity(len),
            Vec::with_capacity(len),
            Vec::with_capacity(len),
        );
        let (mut a, mut b, mut c, mut d) = (0.0, 0.0, 0.0, 0.0);
        n.push(a);
        nx.push(b);
        nxx.push(c);
        m.push(d);
        for (i, &s) in samples.iter().enumerate() {
            let (s, x) = (f64::from(s), i as f64);
            a += s;
            b += s * x;
            c += s * x * x;
            d += if s > 0.0 { 1.0 } else { 0.0 };
            n.push(a);
            nx.push(b);
            nxx.push(c);
            m.push(d);
        }
        Self { n, nx, nxx, m }
    }

    pub(crate) fn len(&self) -> usize {
        self.n.len() - 1
    }
}

/// Prefix sums of one function's counts (one metric) against its service's samples.
pub(crate) struct CountSums {
    /// Σ k.
    pub(crate) k: Vec<f64>,
    /// Σ k·x.
    pub(crate) kx: Vec<f64>,
    /// Σ k²/n: the weighted sum of squared shares, for the residual sum of squares.
    pub(crate) kkn: Vec<f64>,
}

impl CountSums {
    pub(crate) fn new(counts: impl Iterator<Item = f64>, samples: &[u32]) -> Self {
        let len = samples.len() + 1;
        let (mut k, mut kx, mut kkn) = (
            Vec::with_capacity(len),
            Vec::with_capacity(len),
            Vec::with_capacity(len),
        );
        let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
        k.push(a);
        kx.push(b);
        kkn.push(c);
        for (i, (v, &s)) in counts.zip(samples).enumerate() {
            a += v;
            b += v * i as f64;
            if s > 0 {
                c += v * v / f64::from(s);
            }
            k.push(a);
            kx.push(b);
            kkn.push(c);
        }
        Self { k, kx, kkn }
    }
}

/// Both metrics' prefix sums of one function.
pub(crate) struct FnSums {
    pub(crate) total: CountSums,
    /// `None` where the self counts equal the total counts (a leaf-only function): no second test.
    pub(crate) self_: Option<CountSums>,
}

impl FnSums {
    pub(crate) fn new(f: &FunctionSeries, samples: &[u32]) -> Self {
        let total = CountSums::new(f.k_total.iter().map(|&v| f64::from(v)), samples);
        let self_ = (f.k_self != f.k_total)
            .then(|| CountSums::new(f.k_self.iter().map(|&v| f64::from(v)), samples));
        Self { total, self_ }
    }

    pub(crate) fn get(&self, metric: Metric) -> &CountSums {
        match metric {
            Metric::Total => &self.total,
            Metric::SelfShare => self.self_.as_ref().unwrap_or(&self.total),
        }
    }
}
