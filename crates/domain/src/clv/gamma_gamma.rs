//! The Gamma-Gamma spend model (Fader, Hardie & Lee, "RFM and CLV: using iso-value
//! curves for customer base analysis", JMR 2005; Fader & Hardie's note "The Gamma-Gamma
//! model of monetary value", 2013): each transaction's value is Gamma(p, ν) with the
//! customer's ν ~ Gamma(q, γ). Conventions follow `lifetimes`' `GammaGammaFitter`
//! (log-parameters, no penalizer; its `v` is γ here).

use super::optimize::minimize;
use super::special::ln_gamma;
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

    /// Maximum-likelihood fit (mean negative log-likelihood over log-parameters from
    /// all-ones, as `lifetimes` does from log-parameters 0.1).
    pub fn fit(obs: &[SpendObservation]) -> Result<GammaGammaFit, ClvError> {
        if obs.is_empty() {
            return Err(ClvError::NoData);
        }
        let n = obs.len() as f64;
        let objective = |l: &[f64]| -Self::from_log(l).log_likelihood(obs) / n;
        let min = minimize(objective, &[vec![0.0; 3]], 1.0);
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
}
