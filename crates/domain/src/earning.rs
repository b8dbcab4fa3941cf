//! What a purchase costs and earns: the tier's discount, paying with points, the
//! partner's base rate, the tier's multiplier and the earning rules, in one pure function.
//!
//! # How a purchase is priced (`price_purchase`)
//!
//! 1. **Tier discount**: the member's tier takes `discount_percent` of the amount off the
//!    bill, rounded to the currency's minor unit half away from zero (2.345 → 2.35).
//! 2. **Points discount**: redeemed points are worth exactly `points × point_value`,
//!    which must be a whole number of minor units and at most `amount − tier_discount`.
//! 3. `discount = tier_discount + points_discount`; `payable = amount − discount`.
//!    Every point is earned on `payable`.
//! 4. **Lines**, each an exact decimal: the partner's base rate
//!    (`earn_points_per_unit × payable`); the tier's multiplier, `(m − 1) × base`; and
//!    the rules that apply (`rules::select`): `points_per_unit` (`v × payable`),
//!    `cashback_percent` (`payable × v / 100 / point_value`), `bonus_points` (`v`),
//!    `multiplier` (`(v − 1) × base`). A rule's value is then cut to its caps: per
//!    purchase, and per member what is left of the day's and the month's cap (UTC; what
//!    the rule already awarded the member, never below zero).
//!    Campaigns (`campaigns::CampaignTerms::as_rule`) come after the rules as lines of
//!    kind `campaign`, selected apart from them (they stack on an exclusive rule) and
//!    capped at what their budgets have left.
//! 5. **Rounding, once**: the total is the exact sum rounded down to whole points; the
//!    lines get whole points by the largest-remainder method (each its whole part, then
//!    one more point to the lines with the largest fractions, earlier lines first on a
//!    tie), so they add up to the total exactly. A line that ends at zero is left out.
//!
//! Points are never negative or fractional, and one purchase moves at most
//! `MAX_POINTS_PER_ENTRY`. The same inputs always give the same answer: a quote and the
//! purchase that follows it are priced by this function alike.

use crate::limits::MAX_POINTS_PER_ENTRY;
use crate::money::Currency;
use crate::rules::{self, EffectKind, Funder, Occasion, Rule};
use crate::tiers::TierTerms;
use crate::Points;
use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// One line of "why did I get these points": what gave how much, and who pays for it.
/// Fields added after the first release default, so older stored lines still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakdownLine {
    /// `base_rate`, `tier_multiplier`, or the rule's name.
    pub rule: String,
    /// The earning rule, for rule lines.
    #[serde(default)]
    pub rule_id: Option<Uuid>,
    /// The version of the rule that gave the points (see `GET /v1/rules/{id}/versions/{v}`).
    #[serde(default)]
    pub rule_version: Option<i32>,
    /// `base_rate`, `tier_multiplier`, or the rule's effect kind.
    #[serde(default)]
    pub kind: String,
    pub description: String,
    pub points: Points,
    /// Who pays for the points: a partner (the seller by default), a bank, the operator.
    #[serde(default)]
    pub funder: Option<Funder>,
    /// The campaign that gave the points, for campaign lines (kind `campaign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Uuid>,
}

/// The partner where the purchase happens, as pricing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seller {
    pub id: Uuid,
    pub name: String,
    pub category: String,
    /// Points earned per unit of currency paid: the partner's base rule.
    pub earn_points_per_unit: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseTerms {
    pub amount: Decimal,
    pub currency: Currency,
    /// Money value of one point, set by the programme.
    pub point_value: Decimal,
    pub seller: Seller,
    /// The purchase's category tags, for category rules.
    pub categories: Vec<String>,
    pub at: DateTime<Utc>,
    pub redeem_points: Points,
}

/// What pricing needs to know about the member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberFacts {
    pub tier: Option<TierTerms>,
    /// No purchase of this member at this partner exists yet.
    pub first_purchase_at_partner: bool,
    /// Points each rule already awarded the member today (UTC).
    pub awarded_today: BTreeMap<Uuid, Points>,
    /// Points each rule already awarded the member this calendar month (UTC).
    pub awarded_this_month: BTreeMap<Uuid, Points>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseOutcome {
    /// Money the member's tier takes off the bill.
    pub tier_discount: Decimal,
    /// Money the redeemed points take off the bill.
    pub points_discount: Decimal,
    /// `tier_discount + points_discount`.
    pub discount: Decimal,
    /// What the member still pays, and what earns points.
    pub payable: Decimal,
    pub points_redeemed: Points,
    pub points_earned: Points,
    pub breakdown: Vec<BreakdownLine>,
}

impl PurchaseOutcome {
    /// Points of each rule line, for the caps of later purchases.
    pub fn rule_awards(&self) -> impl Iterator<Item = (Uuid, Points)> + '_ {
        self.breakdown
            .iter()
            .filter_map(|l| l.rule_id.map(|id| (id, l.points)))
    }
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
    #[error("{points} points are worth {value}, more than the {amount} left to pay")]
    RedemptionExceedsAmount {
        points: Points,
        value: Decimal,
        amount: Decimal,
    },
    #[error("one purchase may move at most {} points", MAX_POINTS_PER_ENTRY)]
    TooManyPoints,
}

/// One line before rounding.
struct ExactLine {
    line: BreakdownLine,
    exact: Decimal,
}

/// Prices a purchase (see the module documentation for the rules it follows).
pub fn price_purchase(
    terms: &PurchaseTerms,
    member: &MemberFacts,
    rules: &[Rule],
) -> Result<PurchaseOutcome, EarningError> {
    let tier_discount = tier_discount(terms, member.tier.as_ref());
    let points_discount = points_discount(terms, terms.amount - tier_discount)?;
    let discount = tier_discount + points_discount;
    let payable = terms.amount - discount;
    let base = mul(payable, terms.seller.earn_points_per_unit)?;
    let seller = Funder::Partner(terms.seller.id);
    let mut lines = vec![ExactLine {
        exact: base,
        line: line(
            "base_rate",
            "base_rate",
            format!(
                "{} points per {} on {} {} paid at {}",
                terms.seller.earn_points_per_unit.normalize(),
                terms.currency,
                payable,
                terms.currency,
                terms.seller.name
            ),
            seller,
        ),
    }];
    if let Some(tier) = &member.tier {
        let extra = mul(tier.earn_multiplier - Decimal::ONE, base)?.max(Decimal::ZERO);
        lines.push(ExactLine {
            exact: extra,
            line: line(
                "tier_multiplier",
                "tier_multiplier",
                format!(
                    "{} tier: ×{} the base rate",
                    tier.name,
                    tier.earn_multiplier.normalize()
                ),
                seller,
            ),
        });
    }
    let occasion = Occasion {
        partner_id: terms.seller.id,
        partner_category: &terms.seller.category,
        amount: terms.amount,
        categories: &terms.categories,
        at: terms.at,
        tier: member.tier.as_ref(),
    };
    let open = |rule: &Rule| cap_left(rule, member) > Decimal::ZERO;
    let first = member.first_purchase_at_partner;
    let rule_open = |r: &Rule| !r.campaign && open(r);
    for rule in rules::select(rules, &occasion, first, rule_open) {
        lines.push(rule_line(rule, terms, payable, base, member)?);
    }
    // Campaigns stack on the rules: an exclusive rule does not switch a campaign off.
    let campaign_open = |r: &Rule| r.campaign && open(r);
    for campaign in rules::select(rules, &occasion, first, campaign_open) {
        lines.push(rule_line(campaign, terms, payable, base, member)?);
    }
    let (points_earned, breakdown) = round_once(lines)?;
    Ok(PurchaseOutcome {
        tier_discount,
        points_discount,
        discount,
        payable,
        points_redeemed: terms.redeem_points,
        points_earned,
        breakdown,
    })
}

fn line(rule: &str, kind: &str, description: String, funder: Funder) -> BreakdownLine {
    BreakdownLine {
        rule: rule.to_owned(),
        rule_id: None,
        rule_version: None,
        kind: kind.to_owned(),
        description,
        points: 0,
        funder: Some(funder),
        campaign_id: None,
    }
}

fn mul(a: Decimal, b: Decimal) -> Result<Decimal, EarningError> {
    a.checked_mul(b).ok_or(EarningError::TooManyPoints)
}

/// The tier's percent of the amount, rounded half away from zero to the minor unit.
fn tier_discount(terms: &PurchaseTerms, tier: Option<&TierTerms>) -> Decimal {
    let Some(tier) = tier else {
        return Decimal::ZERO;
    };
    let percent = tier
        .discount_percent
        .clamp(Decimal::ZERO, Decimal::ONE_HUNDRED);
    (terms.amount * percent / Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(
            terms.currency.minor_units(),
            RoundingStrategy::MidpointAwayFromZero,
        )
        .min(terms.amount)
}

/// Redeemed points are worth exactly what they discount, a whole number of minor units,
/// and no more than what is left to pay.
fn points_discount(terms: &PurchaseTerms, left: Decimal) -> Result<Decimal, EarningError> {
    let points = terms.redeem_points;
    if points < 0 {
        return Err(EarningError::NegativeRedemption);
    }
    if points > MAX_POINTS_PER_ENTRY {
        return Err(EarningError::TooManyPoints);
    }
    let value = mul(Decimal::from(points), terms.point_value)?;
    let minor_units = terms.currency.minor_units();
    if value.normalize().scale() > minor_units {
        return Err(EarningError::RedemptionNotWholeMinorUnits {
            points,
            value: value.normalize(),
            step: redemption_step(terms.point_value, minor_units),
        });
    }
    if value > left {
        return Err(EarningError::RedemptionExceedsAmount {
            points,
            value,
            amount: left,
        });
    }
    Ok(value)
}

/// A rule's exact points, cut to its caps.
fn rule_line(
    rule: &Rule,
    terms: &PurchaseTerms,
    payable: Decimal,
    base: Decimal,
    member: &MemberFacts,
) -> Result<ExactLine, EarningError> {
    let v = rule.effect.value;
    let c = &terms.currency;
    let (value, what) = match rule.effect.kind {
        EffectKind::PointsPerUnit => (
            mul(v, payable)?,
            format!("{} points per {c} on {payable} {c}", v.normalize()),
        ),
        EffectKind::CashbackPercent => (
            mul(payable, v)?
                .checked_div(Decimal::ONE_HUNDRED * terms.point_value)
                .ok_or(EarningError::TooManyPoints)?,
            format!(
                "{} % cashback on {payable} {c}, at {} {c} a point",
                v.normalize(),
                terms.point_value.normalize()
            ),
        ),
        EffectKind::BonusPoints => (v, format!("{} bonus points", v.normalize())),
        EffectKind::Multiplier => (
            mul(v - Decimal::ONE, base)?,
            format!("×{} the base rate", v.normalize()),
        ),
    };
    let value = value.max(Decimal::ZERO);
    let capped = value.min(cap_left(rule, member));
    let mut description = if rule.campaign {
        format!("{} (campaign): {what}", rule.name)
    } else {
        format!("{} (rule v{}): {what}", rule.name, rule.version)
    };
    if capped < value {
        description += &format!(", capped at {}", capped.normalize());
    }
    let funder = match rule.funder {
        Funder::SellingPartner => Funder::Partner(terms.seller.id),
        other => other,
    };
    let mut l = line(&rule.name, rule.effect.kind.as_str(), description, funder);
    if rule.campaign {
        l.kind = "campaign".into();
        l.campaign_id = Some(rule.id);
    } else {
        l.rule_id = Some(rule.id);
        l.rule_version = Some(rule.version);
    }
    Ok(ExactLine {
        line: l,
        exact: capped,
    })
}

/// The most points the rule may still give on this purchase (its caps, less what it
/// already awarded the member; never below zero).
fn cap_left(rule: &Rule, member: &MemberFacts) -> Decimal {
    let left = |cap: Option<Points>, awarded: &BTreeMap<Uuid, Points>| {
        cap.map(|cap| (cap - awarded.get(&rule.id).copied().unwrap_or(0)).max(0))
    };
    [
        rule.caps.per_purchase,
        left(rule.caps.per_member_day, &member.awarded_today),
        left(rule.caps.per_member_month, &member.awarded_this_month),
    ]
    .into_iter()
    .flatten()
    .min()
    .map_or(Decimal::MAX, Decimal::from)
}

/// Rounds the exact sum down once and shares it among the lines by largest remainder.
fn round_once(lines: Vec<ExactLine>) -> Result<(Points, Vec<BreakdownLine>), EarningError> {
    let exact: Vec<Decimal> = lines.iter().map(|l| l.exact).collect();
    let total = exact
        .iter()
        .try_fold(Decimal::ZERO, |acc, x| acc.checked_add(*x))
        .ok_or(EarningError::TooManyPoints)?;
    if total > Decimal::from(MAX_POINTS_PER_ENTRY) {
        return Err(EarningError::TooManyPoints);
    }
    let shares = largest_remainder(&exact);
    let breakdown = lines
        .into_iter()
        .zip(&shares)
        .filter(|(_, points)| **points > 0)
        .map(|(l, points)| BreakdownLine {
            points: *points,
            ..l.line
        })
        .collect();
    Ok((shares.iter().sum(), breakdown))
}

/// Whole shares of non-negative exact values that add up to their sum rounded down: each
/// gets its whole part, and the points left go one each to the largest fractions (the
/// earlier value first on a tie). A whole value never gets more than itself.
pub fn largest_remainder(exact: &[Decimal]) -> Vec<Points> {
    let total: Decimal = exact.iter().sum();
    let mut shares: Vec<Points> = exact
        .iter()
        .map(|x| x.floor().to_i64().unwrap_or(0))
        .collect();
    let left = total.floor().to_i64().unwrap_or(0) - shares.iter().sum::<Points>();
    let mut by_fraction: Vec<usize> = (0..exact.len()).collect();
    by_fraction.sort_by(|a, b| exact[*b].fract().cmp(&exact[*a].fract()).then(a.cmp(b)));
    for i in by_fraction.into_iter().take(left.max(0) as usize) {
        shares[i] += 1;
    }
    shares
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
    use crate::rules::{Caps, Conditions, Effect};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn seller(rate: &str) -> Seller {
        Seller {
            id: Uuid::from_u128(7),
            name: "Gym".into(),
            category: "sports".into(),
            earn_points_per_unit: rate.parse().unwrap(),
        }
    }

    fn terms(amount: &str, rate: &str, redeem: Points) -> PurchaseTerms {
        PurchaseTerms {
            amount: amount.parse().unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            point_value: "0.01".parse().unwrap(),
            seller: seller(rate),
            categories: vec![],
            at: Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap(),
            redeem_points: redeem,
        }
    }

    fn plain(t: &PurchaseTerms) -> Result<PurchaseOutcome, EarningError> {
        price_purchase(t, &MemberFacts::default(), &[])
    }

    fn rule(kind: EffectKind, value: &str) -> Rule {
        Rule {
            id: Uuid::now_v7(),
            version: 1,
            name: "rule".into(),
            priority: 0,
            active: true,
            valid_from: Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap(),
            valid_to: None,
            conditions: Conditions::default(),
            effect: Effect {
                kind,
                value: value.parse().unwrap(),
            },
            caps: Caps::default(),
            stackable: true,
            funder: Funder::SellingPartner,
            campaign: false,
        }
    }

    fn gold(discount: &str, multiplier: &str) -> TierTerms {
        TierTerms {
            id: Uuid::from_u128(1),
            name: "Gold".into(),
            rank: 2,
            discount_percent: discount.parse().unwrap(),
            earn_multiplier: multiplier.parse().unwrap(),
        }
    }

    #[test]
    fn the_seed_cashback_five_percent_on_5000_earns_250_worth_of_points() {
        // No base rate: the rule alone gives 5000 × 5 % = 250, at 0.01 a point.
        let cashback = rule(EffectKind::CashbackPercent, "5");
        let out = price_purchase(
            &terms("5000", "0", 0),
            &MemberFacts::default(),
            std::slice::from_ref(&cashback),
        )
        .unwrap();
        assert_eq!(out.points_earned, 25_000);
        assert_eq!(
            Decimal::from(out.points_earned) * Decimal::new(1, 2),
            Decimal::from(250)
        );
        assert_eq!(out.breakdown.len(), 1);
        let l = &out.breakdown[0];
        assert_eq!(
            (l.rule_id, l.rule_version, l.kind.as_str(), l.points),
            (Some(cashback.id), Some(1), "cashback_percent", 25_000)
        );
        assert_eq!(l.funder, Some(Funder::Partner(Uuid::from_u128(7))));
    }

    #[test]
    fn paying_with_points_earns_on_the_remainder_only() {
        let out = plain(&terms("100.00", "1", 2_000)).unwrap();
        assert_eq!(out.points_discount, Decimal::new(2000, 2));
        assert_eq!(out.discount, Decimal::new(2000, 2));
        assert_eq!(out.tier_discount, Decimal::ZERO);
        assert_eq!(out.payable, Decimal::new(8000, 2));
        assert_eq!(out.points_earned, 80);
        assert_eq!(out.breakdown[0].kind, "base_rate");
        assert_eq!(out.breakdown[0].rule_id, None);
    }

    #[test]
    fn the_tier_discounts_first_and_multiplies_the_base() {
        let member = MemberFacts {
            tier: Some(gold("15", "1.5")),
            ..Default::default()
        };
        // 15 % of 33.33 = 4.9995 → 5.00 (half away from zero).
        let out = price_purchase(&terms("33.33", "1", 0), &member, &[]).unwrap();
        assert_eq!(out.tier_discount, "5.00".parse().unwrap());
        assert_eq!(out.payable, "28.33".parse().unwrap());
        // Base 28.33 + tier 14.165 = 42.495 → 42, shared 28 + 14.
        assert_eq!(out.points_earned, 42);
        let kinds: Vec<(&str, Points)> = out
            .breakdown
            .iter()
            .map(|l| (l.kind.as_str(), l.points))
            .collect();
        assert_eq!(kinds, vec![("base_rate", 28), ("tier_multiplier", 14)]);
        // Points may pay for at most what is left after the tier discount.
        assert!(matches!(
            price_purchase(&terms("100.00", "1", 8_501), &member, &[]),
            Err(EarningError::RedemptionExceedsAmount { .. })
        ));
        let all = price_purchase(&terms("100.00", "1", 8_500), &member, &[]).unwrap();
        assert_eq!(
            (all.discount, all.payable),
            (Decimal::from(100), Decimal::ZERO)
        );
    }

    #[test]
    fn each_effect_gives_what_it_says() {
        let t = terms("20.00", "2", 0);
        let m = MemberFacts::default();
        let earned = |r: Rule| price_purchase(&t, &m, &[r]).unwrap().points_earned;
        assert_eq!(earned(rule(EffectKind::PointsPerUnit, "0.5")), 40 + 10);
        assert_eq!(earned(rule(EffectKind::CashbackPercent, "10")), 40 + 200);
        assert_eq!(earned(rule(EffectKind::BonusPoints, "500")), 40 + 500);
        assert_eq!(earned(rule(EffectKind::Multiplier, "3")), 40 + 80);
        assert_eq!(earned(rule(EffectKind::Multiplier, "1")), 40);
    }

    #[test]
    fn fractions_are_summed_exactly_and_rounded_down_once() {
        // Base 0.6 + 0.7 per unit on 0.60 (0.42) + a bonus of 0.42 = 1.44: one point,
        // though each line alone would round down to nothing; it goes to the largest
        // fraction, the base.
        let t = terms("0.60", "1", 0);
        let a = rule(EffectKind::PointsPerUnit, "0.7");
        let b = rule(EffectKind::BonusPoints, "0.42");
        let out = price_purchase(&t, &MemberFacts::default(), &[a, b]).unwrap();
        assert_eq!(out.points_earned, 1);
        assert_eq!(out.breakdown.len(), 1);
        assert_eq!(out.breakdown[0].kind, "base_rate");
        assert_eq!(
            largest_remainder(&[Decimal::new(6, 1), Decimal::new(7, 1), Decimal::new(7, 1)]),
            vec![0, 1, 1]
        );
        assert_eq!(
            largest_remainder(&[Decimal::new(5, 1), Decimal::new(5, 1)]),
            vec![1, 0]
        );
    }

    #[test]
    fn caps_cut_a_rule_to_what_is_left_of_them() {
        let t = terms("100.00", "0", 0);
        let mut r = rule(EffectKind::BonusPoints, "1000");
        r.caps = Caps {
            per_purchase: Some(600),
            per_member_day: Some(900),
            per_member_month: Some(5_000),
        };
        let mut m = MemberFacts::default();
        let earned = |m: &MemberFacts| price_purchase(&t, m, &[r.clone()]).unwrap().points_earned;
        assert_eq!(earned(&m), 600);
        m.awarded_today.insert(r.id, 500);
        assert_eq!(earned(&m), 400);
        m.awarded_today.insert(r.id, 1_200);
        assert_eq!(earned(&m), 0, "an overrun cap gives nothing, never less");
        m.awarded_today.clear();
        m.awarded_this_month.insert(r.id, 4_800);
        assert_eq!(earned(&m), 200);
        let out = price_purchase(&t, &m, &[r.clone()]).unwrap();
        assert!(out.breakdown[0].description.contains("capped at 200"));
    }

    #[test]
    fn an_exclusive_rule_whose_cap_is_used_up_no_longer_blocks_the_others() {
        let t = terms("100.00", "0", 0);
        let mut exclusive = rule(EffectKind::BonusPoints, "300");
        exclusive.stackable = false;
        exclusive.priority = 10;
        exclusive.caps.per_member_day = Some(300);
        let stackable = rule(EffectKind::BonusPoints, "20");
        let rules = [exclusive.clone(), stackable.clone()];
        let mut m = MemberFacts::default();
        let out = price_purchase(&t, &m, &rules).unwrap();
        assert_eq!(out.points_earned, 300, "the exclusive rule alone");
        m.awarded_today.insert(exclusive.id, 300);
        let out = price_purchase(&t, &m, &rules).unwrap();
        assert_eq!(out.points_earned, 20, "its fill had, the others apply");
        assert_eq!(out.breakdown[0].rule_id, Some(stackable.id));
    }

    #[test]
    fn first_purchase_bonus_only_on_the_first_purchase() {
        let mut r = rule(EffectKind::BonusPoints, "100");
        r.conditions.first_purchase_at_partner = Some(true);
        let t = terms("10.00", "1", 0);
        let first = MemberFacts {
            first_purchase_at_partner: true,
            ..Default::default()
        };
        assert_eq!(
            price_purchase(&t, &first, &[r.clone()])
                .unwrap()
                .points_earned,
            110
        );
        assert_eq!(
            price_purchase(&t, &MemberFacts::default(), &[r])
                .unwrap()
                .points_earned,
            10
        );
    }

    #[test]
    fn redeeming_more_than_the_bill_is_refused() {
        assert!(matches!(
            plain(&terms("10.00", "1", 1_001)),
            Err(EarningError::RedemptionExceedsAmount { .. })
        ));
        assert!(plain(&terms("10.00", "1", 1_000)).is_ok());
    }

    #[test]
    fn fractions_of_points_are_not_awarded() {
        assert_eq!(plain(&terms("9.99", "1", 0)).unwrap().points_earned, 9);
        assert!(plain(&terms("0.50", "1", 0)).unwrap().breakdown.is_empty());
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
            plain(&with_point_value("0.001", 9)),
            Err(EarningError::RedemptionNotWholeMinorUnits {
                points: 9,
                value: "0.009".parse().unwrap(),
                step: 10
            })
        );
        let out = plain(&with_point_value("0.001", 10)).unwrap();
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
            plain(&terms("1000000000000000.00", "1", 0)),
            Err(EarningError::TooManyPoints)
        );
        assert_eq!(
            plain(&terms("100", "1", i64::MAX)),
            Err(EarningError::TooManyPoints)
        );
        let max = Decimal::from(crate::limits::MAX_PURCHASE_UNITS);
        let out = plain(&PurchaseTerms {
            amount: max,
            ..terms("1", "1000", 0)
        })
        .unwrap();
        assert_eq!(out.points_earned, MAX_POINTS_PER_ENTRY);
        let tiny_point = PurchaseTerms {
            point_value: "0.0000000000000000000001".parse().unwrap(),
            ..terms("1000000", "0", 0)
        };
        let cashback = rule(EffectKind::CashbackPercent, "100");
        assert_eq!(
            price_purchase(&tiny_point, &MemberFacts::default(), &[cashback]),
            Err(EarningError::TooManyPoints)
        );
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            0usize..4,
            0i64..100_000,
            -3i32..3,
            any::<bool>(),
            proptest::option::of(0i64..5_000),
            proptest::option::of(0i64..5_000),
            any::<bool>(),
        )
            .prop_map(
                |(kind, milli, priority, stackable, per_purchase, per_day, first)| {
                    let mut r = rule(EffectKind::ALL[kind], "0");
                    r.effect.value = match r.effect.kind {
                        EffectKind::Multiplier => Decimal::ONE + Decimal::new(milli % 5_000, 3),
                        EffectKind::CashbackPercent => Decimal::new(milli % 100_000, 3),
                        _ => Decimal::new(milli, 3),
                    };
                    r.priority = priority;
                    r.stackable = stackable;
                    r.caps.per_purchase = per_purchase;
                    r.caps.per_member_day = per_day;
                    r.conditions.first_purchase_at_partner = first.then_some(true);
                    r
                },
            )
    }

    fn arb_member(rules: &[Rule]) -> impl Strategy<Value = MemberFacts> {
        let ids: Vec<Uuid> = rules.iter().map(|r| r.id).collect();
        (
            any::<bool>(),
            proptest::collection::vec(0i64..6_000, ids.len()),
            proptest::option::of((0i64..30_00, 100i64..300)),
        )
            .prop_map(move |(first, awarded, tier)| MemberFacts {
                tier: tier.map(|(discount, mult)| {
                    gold(
                        &Decimal::new(discount, 2).to_string(),
                        &Decimal::new(mult, 2).to_string(),
                    )
                }),
                first_purchase_at_partner: first,
                awarded_today: ids.iter().copied().zip(awarded.iter().copied()).collect(),
                awarded_this_month: BTreeMap::new(),
            })
    }

    fn arb_case() -> impl Strategy<Value = (PurchaseTerms, MemberFacts, Vec<Rule>)> {
        (
            proptest::collection::vec(arb_rule(), 0..5),
            1i64..100_000_000,
            0i64..50_000,
            0i64..5_000,
        )
            .prop_flat_map(|(rules, cents, redeem, rate_milli)| {
                let mut t = terms("1", "1", redeem);
                t.amount = Decimal::new(cents, 2);
                t.seller.earn_points_per_unit = Decimal::new(rate_milli, 3);
                (Just(t), arb_member(&rules), Just(rules))
            })
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
            match plain(&t) {
                Ok(out) => {
                    prop_assert_eq!(out.points_discount, Decimal::from(out.points_redeemed) * t.point_value);
                    prop_assert!(out.discount.normalize().scale() <= 2);
                }
                Err(EarningError::RedemptionNotWholeMinorUnits { step, .. }) => prop_assert!(redeem % step != 0),
                Err(_) => {}
            }
        }

        /// Points are whole and never negative, the lines add up to the total, the total
        /// is the exact sum rounded down, the money adds up, and caps hold.
        #[test]
        fn pricing_is_whole_non_negative_and_adds_up((t, m, rules) in arb_case()) {
            let Ok(out) = price_purchase(&t, &m, &rules) else { return Ok(()); };
            prop_assert!(out.points_earned >= 0);
            prop_assert!(out.breakdown.iter().all(|l| l.points > 0));
            prop_assert_eq!(out.breakdown.iter().map(|l| l.points).sum::<i64>(), out.points_earned);
            prop_assert_eq!(out.discount, out.tier_discount + out.points_discount);
            prop_assert_eq!(out.discount + out.payable, t.amount);
            prop_assert!(out.payable >= Decimal::ZERO);
            prop_assert!(out.tier_discount.normalize().scale() <= 2);
            for (rule_id, points) in out.rule_awards() {
                let r = rules.iter().find(|r| r.id == rule_id).unwrap();
                if let Some(cap) = r.caps.per_purchase {
                    prop_assert!(points <= cap);
                }
                if let Some(cap) = r.caps.per_member_day {
                    let before = m.awarded_today.get(&rule_id).copied().unwrap_or(0);
                    prop_assert!(points <= (cap - before).max(0));
                }
            }
            prop_assert!(out.points_earned <= MAX_POINTS_PER_ENTRY);
        }

        /// The same inputs give the same answer, whatever order the rules come in.
        #[test]
        fn pricing_is_deterministic((t, m, rules) in arb_case()) {
            let mut reversed = rules.clone();
            reversed.reverse();
            prop_assert_eq!(price_purchase(&t, &m, &rules), price_purchase(&t, &m, &rules));
            prop_assert_eq!(price_purchase(&t, &m, &rules), price_purchase(&t, &m, &reversed));
        }
    }
}
