//! What a purchase earns and what paying with points discounts.

use crate::money::Currency;
use crate::Points;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
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
    #[error("{points} points are worth {value}, more than the purchase amount {amount}")]
    RedemptionExceedsAmount {
        points: Points,
        value: Decimal,
        amount: Decimal,
    },
    #[error("the points this purchase would earn do not fit in a point balance")]
    TooManyPoints,
}

/// Prices a purchase: points redeemed become a discount (rounded down to the currency's
/// minor unit, so the programme never pays out more than the points are worth), and only
/// the remainder earns, rounded down to whole points.
pub fn price_purchase(terms: &PurchaseTerms) -> Result<PurchaseOutcome, EarningError> {
    if terms.redeem_points < 0 {
        return Err(EarningError::NegativeRedemption);
    }
    let exact_value = Decimal::from(terms.redeem_points)
        .checked_mul(terms.point_value)
        .ok_or(EarningError::TooManyPoints)?;
    let discount =
        exact_value.round_dp_with_strategy(terms.currency.minor_units(), RoundingStrategy::ToZero);
    if discount > terms.amount {
        return Err(EarningError::RedemptionExceedsAmount {
            points: terms.redeem_points,
            value: discount,
            amount: terms.amount,
        });
    }
    let payable = terms.amount - discount;
    let base = payable
        .checked_mul(terms.earn_points_per_unit)
        .and_then(|p| p.floor().to_i64())
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
        points_redeemed: terms.redeem_points,
        points_earned: base,
        breakdown,
    })
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

    proptest! {
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
