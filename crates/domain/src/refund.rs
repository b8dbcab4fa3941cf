//! Refunds give back proportionally: the points earned on the refunded part are clawed
//! back and the points spent on it are returned. Shares are computed on the cumulative
//! refunded amount, so a run of partial refunds adds up to exactly a full refund.

use crate::Points;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseRecord {
    pub amount: Decimal,
    pub already_refunded: Decimal,
    pub points_earned: Points,
    pub points_redeemed: Points,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundShare {
    /// Earned points this refund takes back (before any shortfall).
    pub clawback_due: Points,
    /// Spent points this refund gives back.
    pub points_returned: Points,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    #[error("refund amount must be greater than zero")]
    NotPositive,
    #[error("refund of {requested} exceeds the {remaining} left to refund on this purchase")]
    ExceedsRemaining {
        requested: Decimal,
        remaining: Decimal,
    },
    #[error("the refund's points cannot be computed within the ledger's limits")]
    OutOfRange,
}

/// ⌊points × part / whole⌋, exactly; `None` past `Decimal`'s range (the ledger's limits
/// keep real purchases far inside it).
pub fn share_of_points(points: Points, part: Decimal, whole: Decimal) -> Option<Points> {
    Decimal::from(points)
        .checked_mul(part)?
        .checked_div(whole)?
        .floor()
        .to_i64()
}

pub fn refund_share(
    purchase: &PurchaseRecord,
    amount: Decimal,
) -> Result<RefundShare, RefundError> {
    if amount <= Decimal::ZERO {
        return Err(RefundError::NotPositive);
    }
    let remaining = purchase.amount - purchase.already_refunded;
    if amount > remaining {
        return Err(RefundError::ExceedsRemaining {
            requested: amount,
            remaining,
        });
    }
    let before = purchase.already_refunded;
    let after = before + amount;
    let cumulative = |points| -> Result<Points, RefundError> {
        let share =
            |part| share_of_points(points, part, purchase.amount).ok_or(RefundError::OutOfRange);
        Ok(share(after)? - share(before)?)
    };
    Ok(RefundShare {
        clawback_due: cumulative(purchase.points_earned)?,
        points_returned: cumulative(purchase.points_redeemed)?,
    })
}

/// Splits `total` points over `weights` in proportion, in whole points that add up to
/// `total` exactly (largest remainder; the earlier weight first on a tie). Used to give
/// clawed-back points back to the accounts that funded them. All zero weights: the first
/// takes everything.
pub fn split_proportionally(total: Points, weights: &[Points]) -> Vec<Points> {
    let sum: i128 = weights.iter().map(|w| i128::from((*w).max(0))).sum();
    if weights.is_empty() {
        return vec![];
    }
    if sum == 0 {
        let mut shares = vec![0; weights.len()];
        shares[0] = total;
        return shares;
    }
    let exact: Vec<(i128, i128)> = weights
        .iter()
        .map(|w| {
            let n = i128::from(total) * i128::from((*w).max(0));
            (n / sum, n % sum)
        })
        .collect();
    let mut shares: Vec<Points> = exact.iter().map(|(q, _)| *q as Points).collect();
    let left = total - shares.iter().sum::<Points>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| exact[*b].1.cmp(&exact[*a].1).then(a.cmp(b)));
    for i in order.into_iter().take(left.max(0) as usize) {
        shares[i] += 1;
    }
    shares
}

/// The clawback actually taken when the member may have spent the points meanwhile: a
/// balance never goes below zero, and what cannot be taken is the shortfall, recorded
/// (never silently forgiven into new points). Returned points count first. `spendable`
/// is the member's points before the refund less those reserved by POS holds: a
/// clawback never takes points a till was promised.
pub fn clawback_within_balance(
    spendable: Points,
    returned: Points,
    due: Points,
) -> (Points, Points) {
    let available = spendable + returned;
    let taken = due.min(available).max(0);
    (taken, due - taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clawbacks_split_by_what_each_funder_gave() {
        assert_eq!(split_proportionally(10, &[30, 70]), vec![3, 7]);
        assert_eq!(split_proportionally(1, &[50, 50]), vec![1, 0]);
        assert_eq!(split_proportionally(5, &[0, 0]), vec![5, 0]);
        assert_eq!(split_proportionally(7, &[1, 1, 1]), vec![3, 2, 2]);
    }

    proptest! {
        #[test]
        fn a_split_adds_up_and_stays_within_each_weight(
            weights in proptest::collection::vec(0i64..1_000_000, 1..6), part in 0u32..=100,
        ) {
            let whole: i64 = weights.iter().sum();
            let total = whole * i64::from(part) / 100;
            let shares = split_proportionally(total, &weights);
            prop_assert_eq!(shares.iter().sum::<i64>(), total);
            for (s, w) in shares.iter().zip(&weights) {
                prop_assert!(*s >= 0 && (whole == 0 || *s <= *w));
            }
        }
    }

    fn purchase(amount: i64, earned: Points, redeemed: Points) -> PurchaseRecord {
        PurchaseRecord {
            amount: Decimal::new(amount, 2),
            already_refunded: Decimal::ZERO,
            points_earned: earned,
            points_redeemed: redeemed,
        }
    }

    #[test]
    fn half_refund_takes_half() {
        let share = refund_share(&purchase(10_000, 80, 2_000), Decimal::new(5_000, 2)).unwrap();
        assert_eq!(
            share,
            RefundShare {
                clawback_due: 40,
                points_returned: 1_000
            }
        );
    }

    #[test]
    fn refund_cannot_exceed_what_is_left() {
        let mut p = purchase(10_000, 100, 0);
        p.already_refunded = Decimal::new(9_000, 2);
        assert!(matches!(
            refund_share(&p, Decimal::new(1_001, 2)),
            Err(RefundError::ExceedsRemaining { .. })
        ));
        assert!(refund_share(&p, Decimal::new(1_000, 2)).is_ok());
        assert_eq!(
            refund_share(&p, Decimal::ZERO),
            Err(RefundError::NotPositive)
        );
    }

    #[test]
    fn a_refund_of_a_huge_purchase_is_an_error_not_a_panic() {
        let p = PurchaseRecord {
            amount: "1000000000000000.00".parse().unwrap(),
            already_refunded: Decimal::ZERO,
            points_earned: 1_000_000_000_000_000,
            points_redeemed: 0,
        };
        assert_eq!(refund_share(&p, p.amount), Err(RefundError::OutOfRange));
        let p = PurchaseRecord {
            amount: "1000000000.00".parse().unwrap(),
            points_earned: crate::limits::MAX_POINTS_PER_ENTRY,
            ..p
        };
        assert_eq!(
            refund_share(&p, p.amount).unwrap().clawback_due,
            crate::limits::MAX_POINTS_PER_ENTRY
        );
    }

    #[test]
    fn shortfall_when_points_were_spent() {
        assert_eq!(clawback_within_balance(30, 0, 100), (30, 70));
        assert_eq!(clawback_within_balance(30, 50, 100), (80, 20));
        assert_eq!(clawback_within_balance(500, 0, 100), (100, 0));
    }

    proptest! {
        /// However a purchase is cut into partial refunds, the parts add up to the whole:
        /// never more than was given, never twice, exactly all on a full refund.
        #[test]
        fn partial_refunds_add_up_to_a_full_one(
            cents in 1i64..1_000_000,
            earned in 0i64..1_000_000,
            redeemed in 0i64..1_000_000,
            cuts in proptest::collection::vec(1u32..100, 1..8),
        ) {
            let mut p = purchase(cents, earned, redeemed);
            let (mut clawed, mut returned) = (0, 0);
            for cut in cuts {
                let remaining = p.amount - p.already_refunded;
                let part = (remaining * Decimal::from(cut) / Decimal::from(100)).round_dp(2);
                if part <= Decimal::ZERO { continue; }
                let s = refund_share(&p, part).unwrap();
                prop_assert!(s.clawback_due >= 0 && s.points_returned >= 0);
                clawed += s.clawback_due;
                returned += s.points_returned;
                p.already_refunded += part;
                prop_assert!(clawed <= earned && returned <= redeemed);
            }
            let rest = p.amount - p.already_refunded;
            if rest > Decimal::ZERO {
                let s = refund_share(&p, rest).unwrap();
                clawed += s.clawback_due;
                returned += s.points_returned;
            }
            prop_assert_eq!(clawed, earned);
            prop_assert_eq!(returned, redeemed);
        }
    }
}
