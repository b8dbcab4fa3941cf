//! What a purchase earns and what paying with points discounts.

use crate::limits::MAX_POINTS_PER_ENTRY;
use crate::money::Currency;
use crate::Points;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One line of "why did I get these points": the rule, what it applied to, and how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakdownLine {
    pub rule: String,
    pub description: String,
    pub points: Points,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseTerms {
    pub amount: Decimal,
    pub currency: Currency,
    /// Money value of one point, set by the programme.
    pub point_value: Decimal,
    /// Points earned per unit of currency at this partner.
    pub earn_points_per_unit: Decimal,
    pub redeem_points: Points,
    pub partner_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseOutcome {
    /// Money taken off the bill by the redeemed points.
    pub discount: Decimal,
    /// What the member still pays, and what earns points.
    pub payable: Decimal,
    pub points_redeemed: Points,
    pub points_earned: Points,
    pub breakdown: Vec<BreakdownLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EarningError {
    #[error("redeem_points must not be negative")]
    NegativeRedemption,
    #[error(
        "{points} points are worth {value}, which is not a whole number of the currency's \
         smallest unit; redeem a multiple of {step} points"
    )]
    RedemptionNotWholeMinorUnits {
        points: Points,
        value: Decimal,
        step: Points,
    },
    #[error("{points} points are worth {value}, more than the purchase amount {amount}")]
    RedemptionExceedsAmount {
        points: Points,
        value: Decimal,
        amount: Decimal,
    },
    #[error("one purchase may move at most {} points", MAX_POINTS_PER_ENTRY)]
    TooManyPoints,
}

/// Prices a purchase: points redeemed become a discount worth exactly what the points
/// are worth — a number of points whose value is not a whole number of the currency's
/// minor unit is refused, so no point is ever taken for less than its value — and only
/// the remainder earns, rounded down to whole points.
pub fn price_purchase(terms: &PurchaseTerms) -> Result<PurchaseOutcome, EarningError> {
    let points = terms.redeem_points;
    if points < 0 {
        return Err(EarningError::NegativeRedemption);
    }
    if points > MAX_POINTS_PER_ENTRY {
        return Err(EarningError::TooManyPoints);
    }
    let discount = Decimal::from(points)
        .checked_mul(terms.point_value)
        .ok_or(EarningError::TooManyPoints)?;
    let minor_units = terms.currency.minor_units();
    if discount.normalize().scale() > minor_units {
        return Err(EarningError::RedemptionNotWholeMinorUnits {
            points,
            value: discount.normalize(),
            step: redemption_step(terms.point_value, minor_units),
        });
    }
    if discount > terms.amount {
        return Err(EarningError::RedemptionExceedsAmount {
            points,
            value: discount,
            amount: terms.amount,
        });
    }
    let payable = terms.amount - discount;
    let base = payable
        .checked_mul(terms.earn_points_per_unit)
        .and_then(|p| p.floor().to_i64())
        .filter(|p| *p <= MAX_POINTS_PER_ENTRY)
        .ok_or(EarningError::TooManyPoints)?;
    let mut breakdown = Vec::new();
    if base > 0 {
        breakdown.push(BreakdownLine {
            rule: "base_rate".into(),
            description: format!(
                "{} points per {} on {} {} paid at {}",
                terms.earn_points_per_unit.normalize(),
                terms.currency,
                payable,
                terms.currency,
                terms.partner_name
            ),
            points: base,
        });
    }
    Ok(PurchaseOutcome {
        discount,
        payable,
        points_redeemed: points,
        points_earned: base,
        breakdown,
    })
}

/// The smallest number of points worth a whole number of minor units: with a point value
/// of n / 10^s and m minor-unit digits, k points qualify exactly when 10^s divides
/// k * n * 10^m, so the step is 10^s / gcd(n * 10^m, 10^s).
pub fn redemption_step(point_value: Decimal, minor_units: u32) -> Points {
    let value = point_value.normalize();
    let scale = value.scale();
    if scale <= minor_units {
        return 1;
    }
    let numerator = value.mantissa().unsigned_abs();
    let whole = 10u128.pow(scale);
    let gcd = |mut a: u128, mut b: u128| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    numerator
        .checked_mul(10u128.pow(minor_units))
        .map(|scaled| whole / gcd(scaled, whole))
        .and_then(|step| Points::try_from(step).ok())
        .unwrap_or(Points::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn terms(amount: &str, rate: &str, redeem: Points) -> PurchaseTerms {
        PurchaseTerms {
            amount: amount.parse().unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            point_value: "0.01".parse().unwrap(),
            earn_points_per_unit: rate.parse().unwrap(),
            redeem_points: redeem,
            partner_name: "Gym".into(),
        }
    }

    #[test]
    fn cashback_five_percent_on_5000_earns_250_worth() {
        // 5% cashback at a point value of 0.01 is 5 points per unit.
        let out = price_purchase(&terms("5000", "5", 0)).unwrap();
        assert_eq!(out.points_earned, 25_000);
        assert_eq!(
            Decimal::from(out.points_earned) * Decimal::new(1, 2),
            Decimal::from(250)
        );
        assert_eq!(out.breakdown.len(), 1);
        assert_eq!(out.breakdown[0].points, 25_000);
    }

    #[test]
    fn paying_with_points_earns_on_the_remainder_only() {
        let out = price_purchase(&terms("100.00", "1", 2_000)).unwrap();
        assert_eq!(out.discount, Decimal::new(2000, 2));
        assert_eq!(out.payable, Decimal::new(8000, 2));
        assert_eq!(out.points_earned, 80);
    }

    #[test]
    fn redeeming_more_than_the_bill_is_refused() {
        assert!(matches!(
            price_purchase(&terms("10.00", "1", 1_001)),
            Err(EarningError::RedemptionExceedsAmount { .. })
        ));
        assert!(price_purchase(&terms("10.00", "1", 1_000)).is_ok());
    }

    #[test]
    fn fractions_of_points_are_not_awarded() {
        assert_eq!(
            price_purchase(&terms("9.99", "1", 0))
                .unwrap()
                .points_earned,
            9
        );
        assert!(price_purchase(&terms("0.50", "1", 0))
            .unwrap()
            .breakdown
            .is_empty());
    }

    fn with_point_value(point_value: &str, redeem: Points) -> PurchaseTerms {
        PurchaseTerms {
            point_value: point_value.parse().unwrap(),
            ..terms("100.00", "1", redeem)
        }
    }

    #[test]
    fn points_not_worth_whole_cents_are_refused_not_taken_for_nothing() {
        // 9 points at 0.001 are worth 0.009: nothing a till can give, so nothing is taken.
        assert_eq!(
            price_purchase(&with_point_value("0.001", 9)),
            Err(EarningError::RedemptionNotWholeMinorUnits {
                points: 9,
                value: "0.009".parse().unwrap(),
                step: 10
            })
        );
        let out = price_purchase(&with_point_value("0.001", 10)).unwrap();
        assert_eq!(
            (out.points_redeemed, out.discount),
            (10, "0.01".parse().unwrap())
        );
        assert_eq!(redemption_step("0.007".parse().unwrap(), 2), 10);
        assert_eq!(redemption_step("0.0025".parse().unwrap(), 2), 4);
        assert_eq!(redemption_step("0.01".parse().unwrap(), 2), 1);
        assert_eq!(redemption_step("0.5".parse().unwrap(), 0), 2);
    }

    #[test]
    fn huge_purchases_are_refused_not_overflowed() {
        assert_eq!(
            price_purchase(&terms("1000000000000000.00", "1", 0)),
            Err(EarningError::TooManyPoints)
        );
        assert_eq!(
            price_purchase(&terms("100", "1", i64::MAX)),
            Err(EarningError::TooManyPoints)
        );
        let max = Decimal::from(crate::limits::MAX_PURCHASE_UNITS);
        let out = price_purchase(&PurchaseTerms {
            amount: max,
            ..terms("1", "1000", 0)
        })
        .unwrap();
        assert_eq!(out.points_earned, MAX_POINTS_PER_ENTRY);
    }

    proptest! {
        /// Every accepted redemption takes points worth exactly the discount.
        #[test]
        fn a_redemption_takes_exactly_what_it_discounts(
            value_milli in 1i64..100, redeem in 0i64..100_000, cents in 1i64..10_000_000,
        ) {
            let t = PurchaseTerms {
                amount: Decimal::new(cents, 2),
                point_value: Decimal::new(value_milli, 3),
                ..terms("1", "1", redeem)
            };
            if let Ok(out) = price_purchase(&t) {
                prop_assert_eq!(out.discount, Decimal::from(out.points_redeemed) * t.point_value);
                prop_assert!(out.discount.normalize().scale() <= 2);
            } else if let Err(EarningError::RedemptionNotWholeMinorUnits { step, .. }) = price_purchase(&t) {
                prop_assert!(redeem % step != 0);
            }
        }

        #[test]
        fn discount_and_remainder_add_up_to_the_amount(cents in 1i64..10_000_000, redeem in 0i64..1_000_000) {
            let amount = Decimal::new(cents, 2);
            let t = PurchaseTerms { amount, ..terms("1", "1.5", redeem) };
            if let Ok(out) = price_purchase(&t) {
                prop_assert_eq!(out.discount + out.payable, amount);
                prop_assert!(out.discount <= Decimal::from(redeem) * Decimal::new(1, 2));
                prop_assert!(out.points_earned >= 0);
                prop_assert_eq!(out.breakdown.iter().map(|l| l.points).sum::<i64>(), out.points_earned);
            }
        }
    }
}
