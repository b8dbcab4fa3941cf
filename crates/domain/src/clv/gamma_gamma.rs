//! The Gamma-Gamma spend model (Fader, Hardie & Lee, "RFM and CLV: using iso-value
//! curves for customer base analysis", JMR 2005; Fader & Hardie's note "The Gamma-Gamma
//! model of monetary value", 2013): each transaction's value is Gamma(p, ν) with the
//! customer's ν ~ Gamma(q, γ). Conventions follow `lifetimes`' `GammaGammaFitter`
//! (log-parameters, no penalizer; its `v` is γ here).

use super::optimize::{bfgs, minimize};
use super::special::{digamma, ln_gamma};
use super::summary::CustomerSummary;
use super::ClvError;

/// Gamma-Gamma parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

/// A customer's spend evidence: `x` repeat transactions of mean value `mean_value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpendObservation {
    pub frequency: u32,
    pub mean_value: f64,
}

/// A maximum-likelihood fit, as for BG/NBD.
#[derive(Debug, Clone, PartialEq)]
pub struct GammaGammaFit {
    pub params: GammaGamma,
    pub log_likelihood: f64,
    pub evaluations: usize,
}

/// The customers the model can be fitted on: those with a repeat purchase (x > 0) and a
/// positive mean repeat value (the likelihood has ln m; `lifetimes` refuses m ≤ 0).
/// Sorted by x, which lets the likelihood share its Γ-terms between customers.
pub fn spend_observations<'a, I>(summaries: I) -> Vec<SpendObservation>
where
    I: IntoIterator<Item = &'a CustomerSummary>,
{
    let mut obs: Vec<SpendObservation> = summaries
        .into_iter()
        .filter(|s| s.frequency > 0 && s.monetary_value > 0.0)
        .map(|s| SpendObservation {
            frequency: s.frequency,
            mean_value: s.monetary_value,
        })
        .collect();
    obs.sort_by(|a, b| {
        a.frequency
            .cmp(&b.frequency)
            .then(a.mean_value.total_cmp(&b.mean_value))
    });
    obs
}

impl GammaGamma {
    /// Total log-likelihood of the observations (the density of the mean m̄ given x):
    /// Γ(px+q)/(Γ(px)Γ(q)) · γ^q · m̄^(px−1) · x^(px) / (xm̄+γ)^(px+q).
    pub fn log_likelihood(&self, obs: &[SpendObservation]) -> f64 {
        let (p, q, gamma) = (self.p, self.q, self.gamma);
        // Γ-terms depend on x alone: computed once per run of equal x.
        let mut cache: Option<(u32, f64)> = None;
        let mut total = 0.0;
        for o in obs {
            let x = f64::from(o.frequency);
            let gamma_terms = match cache {
                Some((cx, t)) if cx == o.frequency => t,
                _ => {
                    let t = ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q);
                    cache = Some((o.frequency, t));
                    t
                }
            };
            let m = o.mean_value;
            total += gamma_terms + q * gamma.ln() + (p * x - 1.0) * m.ln() + p * x * x.ln()
                - (p * x + q) * (x * m + gamma).ln();
        }
        total
    }

    /// E[M | x, m̄]: a weighted mean of the population mean γp/(q−1) and the customer's
    /// own mean, the weight on their own growing with x (FHL 2005, eq. 4). Needs q > 1.
    pub fn conditional_expected_average_value(&self, x: u32, mean_value: f64) -> f64 {
        let px = self.p * f64::from(x);
        let own_weight = px / (px + self.q - 1.0);
        let population_mean = self.gamma * self.p / (self.q - 1.0);
        (1.0 - own_weight) * population_mean + own_weight * mean_value
    }

    /// The log-likelihood and its gradient with respect to the log-parameters
    /// (ln p, ln q, ln γ). With u = xm̄ + γ:
    /// ∂/∂p = x [ψ(px+q) − ψ(px) + ln m̄ + ln x − ln u],
    /// ∂/∂q = ψ(px+q) − ψ(q) + ln γ − ln u,
    /// ∂/∂γ = q/γ − (px+q)/u;
    /// each times its parameter for the log-parameter. The Γ- and ψ-terms depend on x
    /// alone and are computed once per distinct x; per observation it costs one ln.
    fn gradient(&self, data: &ByFrequency) -> (f64, [f64; 3]) {
        let (p, q, gamma) = (self.p, self.q, self.gamma);
        let (ln_gamma_q, psi_q, ln_g) = (ln_gamma(q), digamma(q), gamma.ln());
        let mut total = 0.0;
        let mut grad = [0.0; 3];
        for run in &data.runs {
            let (x, n) = (run.x, run.count);
            let px = p * x;
            let psi_pxq = digamma(px + q);
            total += n * (ln_gamma(px + q) - ln_gamma(px) - ln_gamma_q + q * ln_g + px * run.ln_x)
                + (px - 1.0) * run.sum_ln_mean;
            grad[0] += x * (n * (psi_pxq - digamma(px) + run.ln_x) + run.sum_ln_mean);
            grad[1] += n * (psi_pxq - psi_q + ln_g);
            grad[2] += n * q / gamma;
            for &xm in &data.x_times_mean[run.start..run.end] {
                let u = xm + gamma;
                let ln_u = u.ln();
                total -= (px + q) * ln_u;
                grad[0] -= x * ln_u;
                grad[1] -= ln_u;
                grad[2] -= (px + q) / u;
            }
        }
        (total, [grad[0] * p, grad[1] * q, grad[2] * gamma])
    }

    /// Maximum-likelihood fit, minimising the mean negative log-likelihood over
    /// log-parameters (as `lifetimes` does): BFGS on the analytic gradient from all
    /// parameters 1; Nelder–Mead should it not converge.
    pub fn fit(obs: &[SpendObservation]) -> Result<GammaGammaFit, ClvError> {
        if obs.is_empty() {
            return Err(ClvError::NoData);
        }
        let n = obs.len() as f64;
        let data = ByFrequency::new(obs);
        let with_gradient = |l: &[f64]| {
            let (ll, gradient) = Self::from_log(l).gradient(&data);
            (-ll / n, gradient.iter().map(|g| -g / n).collect())
        };
        let min = match bfgs(with_gradient, &[0.0; 3], 1e-7) {
            Ok(min) => min,
            // Nelder–Mead from where BFGS got to (or from the start if it got nowhere).
            Err(reached) => {
                let objective = |l: &[f64]| -Self::from_log(l).log_likelihood(obs) / n;
                let start = if reached.value.is_finite() {
                    reached.point
                } else {
                    vec![0.0; 3]
                };
                minimize(objective, &[start], 1.0)
            }
        };
        if !min.value.is_finite() {
            return Err(ClvError::NoConvergence);
        }
        Ok(GammaGammaFit {
            params: Self::from_log(&min.point),
            log_likelihood: -min.value * n,
            evaluations: min.evaluations,
        })
    }

    fn from_log(l: &[f64]) -> Self {
        GammaGamma {
            p: l[0].exp(),
            q: l[1].exp(),
            gamma: l[2].exp(),
        }
    }
}

/// The observations as runs of equal x: per run its count, Σ ln m̄ and ln x, and each
/// observation's x·m̄ (what the likelihood needs per observation).
struct ByFrequency {
    runs: Vec<Run>,
    x_times_mean: Vec<f64>,
}

struct Run {
    x: f64,
    ln_x: f64,
    count: f64,
    sum_ln_mean: f64,
    start: usize,
    end: usize,
}

impl ByFrequency {
    fn new(obs: &[SpendObservation]) -> Self {
        let mut sorted = obs.to_vec();
        sorted.sort_by_key(|o| o.frequency);
        let x_times_mean = sorted
            .iter()
            .map(|o| f64::from(o.frequency) * o.mean_value)
            .collect();
        let mut runs: Vec<Run> = Vec::new();
        for (i, o) in sorted.iter().enumerate() {
            let x = f64::from(o.frequency);
            match runs.last_mut() {
                Some(run) if run.x == x => {
                    run.count += 1.0;
                    run.sum_ln_mean += o.mean_value.ln();
                    run.end = i + 1;
                }
                _ => runs.push(Run {
                    x,
                    ln_x: x.ln(),
                    count: 1.0,
                    sum_ln_mean: o.mean_value.ln(),
                    start: i,
                    end: i + 1,
                }),
            }
        }
        ByFrequency { runs, x_times_mean }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_conditional_expected_spend() {
        // FHL (2005) CDNOW estimates; a customer with 2 repeats averaging $22.35.
        let gg = GammaGamma {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        let e = gg.conditional_expected_average_value(2, 22.35);
        assert!((e - 24.66).abs() < 5e-3, "{e}");
    }

    #[test]
    fn observations_keep_only_repeaters_with_positive_spend() {
        let s = |frequency, monetary_value| CustomerSummary {
            frequency,
            recency_days: 0,
            age_days: 10,
            monetary_value,
        };
        let all = [s(0, 0.0), s(2, 10.0), s(1, 0.0), s(1, 5.0)];
        let obs = spend_observations(&all);
        assert_eq!(
            obs,
            vec![
                SpendObservation {
                    frequency: 1,
                    mean_value: 5.0
                },
                SpendObservation {
                    frequency: 2,
                    mean_value: 10.0
                }
            ]
        );
    }

    #[test]
    fn the_analytic_gradient_matches_finite_differences() {
        let obs = [
            (1, 12.5),
            (1, 40.0),
            (2, 22.35),
            (2, 9.99),
            (5, 31.2),
            (14, 17.0),
        ]
        .map(|(frequency, mean_value)| SpendObservation {
            frequency,
            mean_value,
        });
        let data = ByFrequency::new(&obs);
        let at = [1.6, 1.1, 2.5];
        let (ll, gradient) = GammaGamma::from_log(&at).gradient(&data);
        let direct = GammaGamma::from_log(&at).log_likelihood(&obs);
        assert!((ll - direct).abs() < 1e-9 * direct.abs(), "{ll} {direct}");
        for i in 0..3 {
            let h = 1e-6;
            let (mut up, mut down) = (at, at);
            up[i] += h;
            down[i] -= h;
            let numeric = (GammaGamma::from_log(&up).log_likelihood(&obs)
                - GammaGamma::from_log(&down).log_likelihood(&obs))
                / (2.0 * h);
            assert!(
                (gradient[i] - numeric).abs() < 1e-5 * (1.0 + numeric.abs()),
                "{i}: analytic {} numeric {numeric}",
                gradient[i]
            );
        }
    }

    #[test]
    fn spend_without_heterogeneity_ends_within_the_budget() {
        // Means of x uniform draws from one distribution for everyone: the likelihood's
        // maximum is at q, γ → ∞ (no customer spends more than another on average).
        let mut state: u64 = 7;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let obs: Vec<SpendObservation> = (0..2000)
            .map(|i| {
                let x = 1 + i % 12;
                let mean = (0..x).map(|_| 5.0 + 195.0 * uniform()).sum::<f64>() / f64::from(x);
                SpendObservation {
                    frequency: x,
                    mean_value: mean,
                }
            })
            .collect();
        let fit = GammaGamma::fit(&obs).unwrap();
        assert!(fit.evaluations <= 6_000, "{}", fit.evaluations);
        // Whatever the point on the ridge, the expected spend is the population's.
        let e = fit.params.conditional_expected_average_value(3, 180.0);
        assert!((90.0..=120.0).contains(&e), "{e} {:?}", fit.params);
    }
}
