//! Settlement arithmetic: a period's point flows per partner, priced at the prices in
//! force when the points were posted, become one statement line per partner; the
//! operator's line makes the nets sum to exactly zero; payment instructions clear the
//! nets; the points liability rolls forward per issuer.
//!
//! Rounding rule (the only one): a line's `amount_due` and `amount_owed` are each the
//! exact sum of points × price over the line's price periods, rounded ONCE to the
//! currency's minor unit, half away from zero. The operator's net is minus the sum of
//! the partners' rounded nets, so it absorbs every rounding difference and the total is
//! exactly zero by construction.

use crate::Points;
use rust_decimal::{Decimal, RoundingStrategy};
use std::cmp::Ordering;
use uuid::Uuid;

/// Points at one price: a partner's flow during one of its price periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricedPoints {
    pub points: Points,
    pub price: Decimal,
}

/// What one partner did in the period, as the ledger's postings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerActivity {
    pub partner_id: Uuid,
    /// Points that left its issued account (net of clawbacks), per issue price.
    pub issued: Vec<PricedPoints>,
    /// Of `issued`, the points it funded for purchases at other partners (campaigns,
    /// rules with a funder).
    pub funded: Points,
    /// Points that arrived on its redeemed account (net of returns), per redemption value.
    pub redeemed: Vec<PricedPoints>,
    /// Points it issued that expired in the period (attributed by [`roll_forward`]);
    /// shown only: breakage belongs to the operator.
    pub expired: Points,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub partner_id: Uuid,
    pub points_issued: Points,
    pub points_funded: Points,
    pub points_redeemed: Points,
    pub points_expired: Points,
    pub amount_due: Decimal,
    pub amount_owed: Decimal,
    /// `amount_owed - amount_due`; positive: the partner receives.
    pub net: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorLine {
    /// Breakage: points that expired in the period.
    pub points_expired: Points,
    /// Points the operator funded (its own rules and campaigns).
    pub points_funded: Points,
    /// What the operator's margin would be with exact (unrounded) amounts.
    pub margin: Decimal,
    /// `net - margin`: what rounding the partners' lines moved to the operator.
    pub rounding: Decimal,
    /// Minus the sum of the partners' nets.
    pub net: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub lines: Vec<Line>,
    pub operator: OperatorLine,
    pub payments: Vec<Payment>,
}

/// Who pays or receives money in a settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    Operator,
    Partner(Uuid),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub from: Party,
    pub to: Party,
    pub amount: Decimal,
}

/// The documented rounding rule: to `minor_units` decimals, half away from zero.
pub fn round_money(amount: Decimal, minor_units: u32) -> Decimal {
    unsigned_zero(
        amount.round_dp_with_strategy(minor_units, RoundingStrategy::MidpointAwayFromZero),
    )
}

/// A decimal zero keeps its sign ("-0.00"); amounts never show one.
fn unsigned_zero(amount: Decimal) -> Decimal {
    if amount.is_zero() {
        Decimal::ZERO
    } else {
        amount
    }
}

/// Σ points × price, exact.
pub fn exact_value(flows: &[PricedPoints]) -> Decimal {
    flows
        .iter()
        .map(|f| Decimal::from(f.points) * f.price)
        .sum()
}

fn total_points(flows: &[PricedPoints]) -> Points {
    flows.iter().map(|f| f.points).sum()
}

pub fn line(activity: &PartnerActivity, minor_units: u32) -> Line {
    let amount_due = round_money(exact_value(&activity.issued), minor_units);
    let amount_owed = round_money(exact_value(&activity.redeemed), minor_units);
    Line {
        partner_id: activity.partner_id,
        points_issued: total_points(&activity.issued),
        points_funded: activity.funded,
        points_redeemed: total_points(&activity.redeemed),
        points_expired: activity.expired,
        amount_due,
        amount_owed,
        net: unsigned_zero(amount_owed - amount_due),
    }
}

/// The statement of a period: a line per partner (in partner id order), the operator's
/// line taking breakage, operator-funded points, the margin and all rounding, and the
/// payments that clear it.
pub fn statement(
    activity: &[PartnerActivity],
    breakage: Points,
    operator_funded: Points,
    minor_units: u32,
) -> Statement {
    let mut lines: Vec<Line> = activity.iter().map(|a| line(a, minor_units)).collect();
    lines.sort_by_key(|l| l.partner_id);
    let net = unsigned_zero(-lines.iter().map(|l| l.net).sum::<Decimal>());
    let margin = unsigned_zero(
        -activity
            .iter()
            .map(|a| exact_value(&a.redeemed) - exact_value(&a.issued))
            .sum::<Decimal>(),
    );
    let operator = OperatorLine {
        points_expired: breakage,
        points_funded: operator_funded,
        margin,
        rounding: unsigned_zero(net - margin),
        net,
    };
    let mut nets: Vec<(Party, Decimal)> = lines
        .iter()
        .map(|l| (Party::Partner(l.partner_id), l.net))
        .collect();
    nets.push((Party::Operator, operator.net));
    Statement {
        payments: payments(&nets),
        lines,
        operator,
    }
}

/// Transfers that clear `nets` (which sum to zero): the largest debtor pays the largest
/// creditor the smaller of the two amounts, until nothing is left. Each transfer clears
/// at least one party and the last clears two, so n parties with a non-zero net need at
/// most n − 1 transfers. Ties go by party, so the answer is deterministic.
pub fn payments(nets: &[(Party, Decimal)]) -> Vec<Payment> {
    let mut open: Vec<(Party, Decimal)> =
        nets.iter().copied().filter(|(_, n)| !n.is_zero()).collect();
    let mut out = Vec::new();
    loop {
        let debtor = largest(&open, |n| -n);
        let creditor = largest(&open, |n| n);
        let (Some(d), Some(c)) = (debtor, creditor) else {
            return out;
        };
        let amount = (-open[d].1).min(open[c].1);
        out.push(Payment {
            from: open[d].0,
            to: open[c].0,
            amount,
        });
        open[d].1 += amount;
        open[c].1 -= amount;
        open.retain(|(_, n)| !n.is_zero());
    }
}

/// The index of the entry with the largest positive `key(net)`, ties to the lower party.
fn largest(open: &[(Party, Decimal)], key: impl Fn(Decimal) -> Decimal) -> Option<usize> {
    open.iter()
        .enumerate()
        .filter(|(_, (_, n))| key(*n) > Decimal::ZERO)
        .max_by(|(_, a), (_, b)| match key(a.1).cmp(&key(b.1)) {
            Ordering::Equal => b.0.cmp(&a.0),
            other => other,
        })
        .map(|(i, _)| i)
}

/// Who issued points for the liability: a partner (or bank), or the operator for the
/// points it funded.
pub type Issuer = Option<Uuid>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuerFlow {
    pub issuer: Issuer,
    pub opening: Points,
    pub issued: Points,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiabilityRow {
    pub issuer: Issuer,
    pub opening_points: Points,
    pub issued: Points,
    pub redeemed: Points,
    pub expired: Points,
    pub closing_points: Points,
}

/// The points-liability roll-forward per issuer. Points are fungible in a member's
/// account, so the period's redemptions (net of returns) are attributed to issuers pro
/// rata to what each had outstanding (opening + issued), and expiries pro rata to what
/// each had left after that; both by largest remainder (ties to the earlier issuer), so
/// the totals tie exactly: Σ closing = Σ opening + Σ issued − redeemed − expired.
pub fn roll_forward(flows: &[IssuerFlow], redeemed: Points, expired: Points) -> Vec<LiabilityRow> {
    let available: Vec<i128> = flows
        .iter()
        .map(|f| (f.opening as i128 + f.issued as i128).max(0))
        .collect();
    let redeemed_by = share_out(redeemed, &available);
    let left: Vec<i128> = available
        .iter()
        .zip(&redeemed_by)
        .map(|(a, r)| (a - *r as i128).max(0))
        .collect();
    let expired_by = share_out(expired, &left);
    flows
        .iter()
        .zip(redeemed_by.iter().zip(&expired_by))
        .map(|(f, (&r, &e))| LiabilityRow {
            issuer: f.issuer,
            opening_points: f.opening,
            issued: f.issued,
            redeemed: r,
            expired: e,
            closing_points: f.opening + f.issued - r - e,
        })
        .collect()
}

/// Splits `total` in proportion to `weights` by largest remainder. With no weight at
/// all, every issuer weighs the same (the total must still land somewhere to tie).
fn share_out(total: Points, weights: &[i128]) -> Vec<Points> {
    if weights.is_empty() {
        return vec![];
    }
    let equal = vec![1i128; weights.len()];
    let weights = if weights.iter().sum::<i128>() == 0 {
        &equal[..]
    } else {
        weights
    };
    let sum: i128 = weights.iter().sum();
    let magnitude = (total as i128).abs();
    let mut shares: Vec<i128> = weights.iter().map(|w| magnitude * w / sum).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(magnitude * weights[i] % sum), i));
    let short = magnitude - shares.iter().sum::<i128>();
    for &i in order.iter().take(short as usize) {
        shares[i] += 1;
    }
    let sign = if total < 0 { -1 } else { 1 };
    shares.into_iter().map(|s| (s * sign) as Points).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uuid(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn price(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn the_seed_scenario_prices_and_clears() {
        // Gym issues 250 points at 0.012 and funds 20 at the diet store; the sports shop
        // honours 200 at 0.009; 30 expire.
        let gym = PartnerActivity {
            partner_id: uuid(1),
            issued: vec![PricedPoints {
                points: 270,
                price: price("0.012"),
            }],
            funded: 20,
            redeemed: vec![],
            expired: 30,
        };
        let shop = PartnerActivity {
            partner_id: uuid(2),
            issued: vec![],
            funded: 0,
            redeemed: vec![PricedPoints {
                points: 200,
                price: price("0.009"),
            }],
            expired: 0,
        };
        let s = statement(&[gym, shop], 30, 0, 2);
        assert_eq!(s.lines[0].amount_due, price("3.24"));
        assert_eq!(s.lines[0].net, price("-3.24"));
        assert_eq!(s.lines[1].amount_owed, price("1.80"));
        assert_eq!(s.operator.net, price("1.44"));
        assert_eq!(s.operator.rounding, Decimal::ZERO);
        assert_eq!(
            s.payments,
            vec![
                Payment {
                    from: Party::Partner(uuid(1)),
                    to: Party::Partner(uuid(2)),
                    amount: price("1.80")
                },
                Payment {
                    from: Party::Partner(uuid(1)),
                    to: Party::Operator,
                    amount: price("1.44")
                },
            ]
        );
    }

    #[test]
    fn rounding_is_half_away_from_zero_once_per_line_and_the_operator_absorbs_it() {
        let a = PartnerActivity {
            partner_id: uuid(1),
            issued: vec![
                PricedPoints {
                    points: 1,
                    price: price("0.0025"),
                },
                PricedPoints {
                    points: 1,
                    price: price("0.0025"),
                },
            ],
            funded: 0,
            redeemed: vec![PricedPoints {
                points: -1,
                price: price("0.005"),
            }],
            expired: 0,
        };
        let l = line(&a, 2);
        // 0.0050 rounds to 0.01 once; rounding each period first would give 0.00.
        assert_eq!(l.amount_due, price("0.01"));
        assert_eq!(l.amount_owed, price("-0.01"));
        let s = statement(&[a], 0, 0, 2);
        assert_eq!(s.operator.net, price("0.02"));
        assert_eq!(s.operator.margin, price("0.010"));
        assert_eq!(s.operator.rounding, price("0.010"));
    }

    #[test]
    fn roll_forward_attributes_pro_rata_by_largest_remainder() {
        let flows = [
            IssuerFlow {
                issuer: Some(uuid(1)),
                opening: 0,
                issued: 2,
            },
            IssuerFlow {
                issuer: Some(uuid(2)),
                opening: 1,
                issued: 0,
            },
        ];
        let rows = roll_forward(&flows, 2, 1);
        assert_eq!(
            rows.iter()
                .map(|r| (r.redeemed, r.expired, r.closing_points))
                .collect::<Vec<_>>(),
            vec![(1, 1, 0), (1, 0, 0)]
        );
    }

    fn activity() -> impl Strategy<Value = PartnerActivity> {
        let priced = || {
            prop::collection::vec(
                (-5_000i64..100_000, 0u32..100_000, 0u32..6).prop_map(|(points, m, scale)| {
                    PricedPoints {
                        points,
                        price: Decimal::new(m as i64, scale),
                    }
                }),
                0..4,
            )
        };
        (any::<[u8; 16]>(), priced(), priced(), 0i64..1_000).prop_map(
            |(id, issued, redeemed, funded)| PartnerActivity {
                partner_id: Uuid::from_bytes(id),
                issued,
                funded,
                redeemed,
                expired: 0,
            },
        )
    }

    proptest! {
        #[test]
        fn nets_sum_to_exactly_zero_and_each_line_is_its_points_times_prices(
            parties in prop::collection::vec(activity(), 0..8),
            minor in 0u32..4,
        ) {
            let s = statement(&parties, 0, 0, minor);
            let total: Decimal = s.lines.iter().map(|l| l.net).sum::<Decimal>() + s.operator.net;
            prop_assert_eq!(total, Decimal::ZERO);
            let signed_zero = |d: Decimal| d.is_zero() && d.is_sign_negative();
            prop_assert!(!signed_zero(s.operator.net) && !signed_zero(s.operator.margin) && !signed_zero(s.operator.rounding));
            for l in &s.lines {
                prop_assert!(!signed_zero(l.net) && !signed_zero(l.amount_due) && !signed_zero(l.amount_owed));
            }
            for a in &parties {
                let l = s.lines.iter().find(|l| l.partner_id == a.partner_id).unwrap();
                let due: Decimal = a.issued.iter().map(|f| Decimal::from(f.points) * f.price).sum();
                let owed: Decimal = a.redeemed.iter().map(|f| Decimal::from(f.points) * f.price).sum();
                prop_assert_eq!(l.amount_due, due.round_dp_with_strategy(minor, RoundingStrategy::MidpointAwayFromZero));
                prop_assert_eq!(l.amount_owed, owed.round_dp_with_strategy(minor, RoundingStrategy::MidpointAwayFromZero));
                prop_assert!((l.amount_due - due).abs() * Decimal::from(10i64.pow(minor)) <= Decimal::new(5, 1));
                prop_assert_eq!(l.net, l.amount_owed - l.amount_due);
            }
        }

        #[test]
        fn payments_clear_every_net_with_at_most_n_minus_one_transfers(
            amounts in prop::collection::vec(-1_000_000i64..1_000_000, 0..12),
        ) {
            let mut nets: Vec<(Party, Decimal)> = amounts.iter().enumerate()
                .map(|(i, a)| (Party::Partner(Uuid::from_u128(i as u128 + 1)), Decimal::new(*a, 2)))
                .collect();
            let operator = -nets.iter().map(|(_, n)| *n).sum::<Decimal>();
            nets.push((Party::Operator, operator));
            let paid = payments(&nets);
            let parties = nets.iter().filter(|(_, n)| !n.is_zero()).count();
            prop_assert!(paid.len() <= parties.saturating_sub(1));
            for (party, net) in &nets {
                let received: Decimal = paid.iter().filter(|p| p.to == *party).map(|p| p.amount).sum();
                let paid_out: Decimal = paid.iter().filter(|p| p.from == *party).map(|p| p.amount).sum();
                prop_assert_eq!(received - paid_out, *net);
            }
            prop_assert!(paid.iter().all(|p| p.amount > Decimal::ZERO && p.from != p.to));
        }

        #[test]
        fn roll_forward_ties_exactly(
            flows in prop::collection::vec((0i64..10_000, -100i64..10_000), 0..6),
            redeem_share in 0u32..=100,
            expire_share in 0u32..=100,
        ) {
            let flows: Vec<IssuerFlow> = flows.iter().enumerate().map(|(i, (o, n))| IssuerFlow {
                issuer: Some(Uuid::from_u128(i as u128)), opening: *o, issued: *n,
            }).collect();
            let outstanding: i64 = flows.iter().map(|f| (f.opening + f.issued).max(0)).sum();
            let redeemed = outstanding * redeem_share as i64 / 100;
            let expired = (outstanding - redeemed) * expire_share as i64 / 100;
            let rows = roll_forward(&flows, redeemed, expired);
            prop_assert_eq!(rows.iter().map(|r| r.redeemed).sum::<i64>(), if flows.is_empty() { 0 } else { redeemed });
            prop_assert_eq!(rows.iter().map(|r| r.expired).sum::<i64>(), if flows.is_empty() { 0 } else { expired });
            for r in &rows {
                prop_assert_eq!(r.closing_points, r.opening_points + r.issued - r.redeemed - r.expired);
                prop_assert!(r.redeemed >= 0 && r.expired >= 0);
                prop_assert!(r.closing_points >= 0 || r.opening_points + r.issued < 0);
            }
        }
    }
}
