//! Customer-lifetime-value models for retention analytics, pure: summaries of a purchase
//! log, the BG/NBD model of how many more purchases a member will make, the Gamma-Gamma
//! model of how much they spend each time, and their product, the CLV.
//!
//! Amounts are `f64` here: these are statistical estimates fitted by maximum likelihood,
//! not money that is booked (money stays `Decimal` elsewhere). Time is in weeks. The
//! conventions are those of the Python `lifetimes` package (0.11), so that fits can be
//! checked against it; `tests/clv_cdnow.rs` does so on the CDNOW data set.

mod bgnbd;
mod gamma_gamma;
mod optimize;
mod special;
mod summary;

pub use bgnbd::{BgNbd, BgNbdFit};
pub use gamma_gamma::{spend_observations, GammaGamma, GammaGammaFit, SpendObservation};
pub use special::{ln_gamma, ln_hyp2f1};
pub use summary::{group_by_rf, summarise, CustomerSummary, RfGroup, DAYS_PER_WEEK};

/// Why a fit gave no parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClvError {
    #[error("no customers to fit on")]
    NoData,
    #[error("the likelihood is not finite anywhere the search went")]
    NoConvergence,
}

/// Weeks in a month, as `lifetimes`' `customer_lifetime_value` uses for weekly models.
pub const WEEKS_PER_MONTH: f64 = 4.345;

/// Expected value of a customer's purchases over the next `months` months, discounted.
///
/// As `lifetimes`' `customer_lifetime_value(…, time=months, discount_rate, freq='W')`:
/// for each month i = 1..=months, the purchases expected in that month (BG/NBD's
/// conditional expectation at i months minus at i − 1 months, a month being 4.345
/// weeks) times the expected spend per purchase (Gamma-Gamma's E[M | x, m̄]), divided
/// by (1 + `monthly_discount_rate`)^i — each month's value is discounted as if it came
/// at the month's end. `monthly_discount_rate` is per month (0.01 = 1 %/month ≈ 12.7 %/year).
pub fn customer_lifetime_value(
    bg: &BgNbd,
    gg: &GammaGamma,
    customer: &CustomerSummary,
    months: u32,
    monthly_discount_rate: f64,
) -> f64 {
    let (x, t_x, t) = (customer.frequency, customer.recency(), customer.age());
    let spend = gg.conditional_expected_average_value(x, customer.monetary_value);
    let mut value = 0.0;
    let mut purchases_so_far = 0.0;
    for month in 1..=months {
        let purchases =
            bg.conditional_expected_purchases(f64::from(month) * WEEKS_PER_MONTH, x, t_x, t);
        value += spend * (purchases - purchases_so_far)
            / (1.0 + monthly_discount_rate).powi(month as i32);
        purchases_so_far = purchases;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clv_without_discount_is_spend_times_purchases() {
        let bg = BgNbd {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        let gg = GammaGamma {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        let c = CustomerSummary {
            frequency: 2,
            recency_days: 213,
            age_days: 272,
            monetary_value: 22.35,
        };
        let undiscounted = customer_lifetime_value(&bg, &gg, &c, 12, 0.0);
        let expected = gg.conditional_expected_average_value(2, 22.35)
            * bg.conditional_expected_purchases(12.0 * WEEKS_PER_MONTH, 2, c.recency(), c.age());
        assert!((undiscounted - expected).abs() < 1e-9);
        let discounted = customer_lifetime_value(&bg, &gg, &c, 12, 0.01);
        assert!(discounted < undiscounted && discounted > undiscounted / 1.01f64.powi(12));
    }
}
