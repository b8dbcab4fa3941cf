//! Earning rules: what an operator configures on top of each partner's base rate.
//!
//! A rule applies to a purchase when it is active, the purchase falls in its validity
//! window `[valid_from, valid_to)` and every condition it sets holds (an absent condition
//! holds). Times of day and days of week are UTC. Which matching rules apply, and how
//! their points are summed and rounded, is decided by `earning::price_purchase`.

use crate::tiers::TierTerms;
use crate::Points;
use chrono::{DateTime, Datelike, Timelike, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: Uuid,
    /// Starts at 1; every change makes a new version (old awards name the old one).
    pub version: i32,
    pub name: String,
    /// Higher first; ties by id.
    pub priority: i32,
    pub active: bool,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
    pub conditions: Conditions,
    pub effect: Effect,
    pub caps: Caps,
    /// A stackable rule applies together with the other matching stackable rules; an
    /// exclusive one applies alone when it is the first match, and is skipped otherwise.
    pub stackable: bool,
    pub funder: Funder,
    /// A campaign's reward, priced as a rule (`campaigns::as_rule`): it stacks on
    /// whatever the earning rules give, and its line names the campaign.
    #[serde(default)]
    pub campaign: bool,
}

/// All optional; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    pub partner_ids: Option<Vec<Uuid>>,
    pub partner_categories: Option<Vec<String>>,
    /// The purchase amount (before any discount) is at least this, in the programme's
    /// currency.
    pub min_amount: Option<Decimal>,
    /// The member's tier is one of these (a member without a tier matches none).
    pub tier_ids: Option<Vec<Uuid>>,
    /// `true`: only the member's first purchase ever at this partner. `false` or absent:
    /// no condition.
    pub first_purchase_at_partner: Option<bool>,
    /// ISO days, Monday = 1 … Sunday = 7, in UTC.
    pub days_of_week: Option<Vec<u8>>,
    pub hours: Option<Hours>,
    /// At least one of these is among the purchase's `categories`.
    pub purchase_categories: Option<Vec<String>>,
}

/// A half-open UTC time window `[from, to)` in minutes after midnight; `from > to` wraps
/// past midnight (22:00–06:00). `from == to` is refused when a rule is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hours {
    pub from_minute: u16,
    pub to_minute: u16,
}

impl Hours {
    /// Parses `"HH:MM"` (00:00–23:59) into minutes after midnight.
    pub fn parse_time(text: &str) -> Option<u16> {
        let (h, m) = text.split_once(':')?;
        let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    }

    pub fn format_time(minute: u16) -> String {
        format!("{:02}:{:02}", minute / 60, minute % 60)
    }

    pub fn contains(&self, minute: u16) -> bool {
        if self.from_minute <= self.to_minute {
            (self.from_minute..self.to_minute).contains(&minute)
        } else {
            minute >= self.from_minute || minute < self.to_minute
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectKind {
    /// `value` points per unit of currency paid (`payable`).
    PointsPerUnit,
    /// `value` percent of `payable` back, as points at the programme's point value.
    CashbackPercent,
    /// `value` points, fixed.
    BonusPoints,
    /// Adds `(value − 1) ×` the partner's base points.
    Multiplier,
}

impl EffectKind {
    pub const ALL: [EffectKind; 4] = [
        EffectKind::PointsPerUnit,
        EffectKind::CashbackPercent,
        EffectKind::BonusPoints,
        EffectKind::Multiplier,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EffectKind::PointsPerUnit => "points_per_unit",
            EffectKind::CashbackPercent => "cashback_percent",
            EffectKind::BonusPoints => "bonus_points",
            EffectKind::Multiplier => "multiplier",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub kind: EffectKind,
    pub value: Decimal,
}

/// Upper bounds on the points of one rule: per purchase, and per member per UTC day and
/// per UTC calendar month (counted from the rule's recorded awards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    pub per_purchase: Option<Points>,
    pub per_member_day: Option<Points>,
    pub per_member_month: Option<Points>,
}

impl Caps {
    pub fn per_member(&self) -> bool {
        self.per_member_day.is_some() || self.per_member_month.is_some()
    }
}

/// Who pays for a rule's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "partner_id")]
pub enum Funder {
    /// The partner where the purchase happens (the default).
    SellingPartner,
    Partner(Uuid),
    Bank(Uuid),
    Operator,
}

/// The purchase as the conditions see it.
#[derive(Debug, Clone, Copy)]
pub struct Occasion<'a> {
    pub partner_id: Uuid,
    pub partner_category: &'a str,
    pub amount: Decimal,
    pub categories: &'a [String],
    pub at: DateTime<Utc>,
    pub tier: Option<&'a TierTerms>,
}

impl Rule {
    /// Active and inside `[valid_from, valid_to)` at `at`.
    pub fn in_force(&self, at: DateTime<Utc>) -> bool {
        self.active && self.valid_from <= at && self.valid_to.is_none_or(|to| at < to)
    }

    /// Whether every condition that needs no member history holds.
    pub fn matches_without_history(&self, o: &Occasion) -> bool {
        let c = &self.conditions;
        let within = |list: &Option<Vec<String>>, value: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|v| v == value))
        };
        self.in_force(o.at)
            && c.partner_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&o.partner_id))
            && within(&c.partner_categories, o.partner_category)
            && c.min_amount.is_none_or(|min| o.amount >= min)
            && c.tier_ids
                .as_ref()
                .is_none_or(|ids| o.tier.is_some_and(|t| ids.contains(&t.id)))
            && c.days_of_week
                .as_ref()
                .is_none_or(|days| days.contains(&(o.at.weekday().number_from_monday() as u8)))
            && c.hours
                .is_none_or(|h| h.contains((o.at.hour() * 60 + o.at.minute()) as u16))
            && c.purchase_categories
                .as_ref()
                .is_none_or(|wanted| wanted.iter().any(|w| o.categories.contains(w)))
    }

    /// Whether the rule holds for this purchase by this member.
    pub fn matches(&self, o: &Occasion, first_purchase_at_partner: bool) -> bool {
        let first_ok =
            self.conditions.first_purchase_at_partner != Some(true) || first_purchase_at_partner;
        first_ok && self.matches_without_history(o)
    }

    /// Whether evaluating the rule needs the member's history: a first-purchase
    /// condition, or a cap per member.
    pub fn needs_history(&self) -> bool {
        self.conditions.first_purchase_at_partner == Some(true) || self.caps.per_member()
    }
}

/// The rules that apply, in the order they are listed: matching rules by priority
/// (higher first, ties by id); the first one alone if it is exclusive, otherwise every
/// matching stackable rule (exclusive ones are skipped). A rule that is not `open` (its
/// caps are used up for this member) does not match: an exclusive promotion the member
/// has had its fill of must not keep blocking the other rules.
pub fn select<'r>(
    rules: &'r [Rule],
    occasion: &Occasion,
    first_purchase_at_partner: bool,
    open: impl Fn(&Rule) -> bool,
) -> Vec<&'r Rule> {
    let mut matching: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.matches(occasion, first_purchase_at_partner) && open(r))
        .collect();
    matching.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    match matching.first() {
        Some(first) if !first.stackable => vec![*first],
        _ => matching.into_iter().filter(|r| r.stackable).collect(),
    }
}

/// Whether pricing this purchase needs the member's history: some rule whose other
/// conditions hold has a first-purchase condition or a cap per member. When none does,
/// the purchase can be priced and written without reading (or locking) the member.
pub fn needs_history(rules: &[Rule], occasion: &Occasion) -> bool {
    rules
        .iter()
        .any(|r| r.needs_history() && r.matches_without_history(occasion))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn rule(kind: EffectKind, value: &str) -> Rule {
        Rule {
            id: Uuid::now_v7(),
            version: 1,
            name: "r".into(),
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

    fn occasion(at: DateTime<Utc>, categories: &[String]) -> Occasion<'_> {
        Occasion {
            partner_id: Uuid::nil(),
            partner_category: "sports",
            amount: Decimal::from(100),
            categories,
            at,
            tier: None,
        }
    }

    // 2026-11-25 is a Wednesday (ISO 3).
    fn wednesday(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, h, m, 0).unwrap()
    }

    #[test]
    fn hours_are_half_open_and_may_wrap_midnight() {
        let day = Hours {
            from_minute: 9 * 60,
            to_minute: 17 * 60,
        };
        assert!(day.contains(9 * 60) && day.contains(17 * 60 - 1) && !day.contains(17 * 60));
        let night = Hours {
            from_minute: 22 * 60,
            to_minute: 6 * 60,
        };
        assert!(night.contains(23 * 60) && night.contains(0) && night.contains(6 * 60 - 1));
        assert!(!night.contains(6 * 60) && !night.contains(12 * 60));
        assert_eq!(Hours::parse_time("07:05"), Some(425));
        for bad in ["24:00", "7:05", "07:60", "0705", "07:5a"] {
            assert_eq!(Hours::parse_time(bad), None, "{bad}");
        }
        assert_eq!(Hours::format_time(425), "07:05");
    }

    #[test]
    fn each_condition_must_hold() {
        let cats = vec!["protein".to_string()];
        let o = occasion(wednesday(10, 0), &cats);
        let mut r = rule(EffectKind::BonusPoints, "10");
        assert!(r.matches(&o, false));
        r.conditions.days_of_week = Some(vec![1, 2]);
        assert!(!r.matches(&o, false));
        r.conditions.days_of_week = Some(vec![3]);
        assert!(r.matches(&o, false));
        r.conditions.hours = Some(Hours {
            from_minute: 11 * 60,
            to_minute: 12 * 60,
        });
        assert!(!r.matches(&o, false));
        r.conditions.hours = None;
        r.conditions.purchase_categories = Some(vec!["shoes".into(), "protein".into()]);
        assert!(r.matches(&o, false));
        r.conditions.purchase_categories = Some(vec!["shoes".into()]);
        assert!(!r.matches(&o, false));
        r.conditions.purchase_categories = None;
        r.conditions.min_amount = Some(Decimal::from(101));
        assert!(!r.matches(&o, false));
        r.conditions.min_amount = Some(Decimal::from(100));
        assert!(r.matches(&o, false));
        r.conditions.partner_categories = Some(vec!["food".into()]);
        assert!(!r.matches(&o, false));
        r.conditions.partner_categories = Some(vec!["sports".into()]);
        r.conditions.partner_ids = Some(vec![Uuid::now_v7()]);
        assert!(!r.matches(&o, false));
        r.conditions.partner_ids = Some(vec![Uuid::nil()]);
        r.conditions.first_purchase_at_partner = Some(true);
        assert!(!r.matches(&o, false) && r.matches(&o, true));
        r.conditions.tier_ids = Some(vec![Uuid::nil()]);
        assert!(!r.matches(&o, true), "no tier matches no tier condition");
        let gold = TierTerms {
            id: Uuid::nil(),
            name: "Gold".into(),
            rank: 2,
            discount_percent: Decimal::from(10),
            earn_multiplier: Decimal::ONE,
        };
        let with_tier = Occasion {
            tier: Some(&gold),
            ..o
        };
        assert!(r.matches(&with_tier, true));
    }

    #[test]
    fn validity_window_is_half_open_and_inactive_rules_never_match() {
        let cats = vec![];
        let mut r = rule(EffectKind::BonusPoints, "1");
        r.valid_from = wednesday(10, 0);
        r.valid_to = Some(wednesday(11, 0));
        assert!(!r.matches(&occasion(wednesday(9, 59), &cats), false));
        assert!(r.matches(&occasion(wednesday(10, 0), &cats), false));
        assert!(!r.matches(&occasion(wednesday(11, 0), &cats), false));
        r.active = false;
        assert!(!r.matches(&occasion(wednesday(10, 30), &cats), false));
    }

    #[test]
    fn the_first_exclusive_match_applies_alone_otherwise_exclusives_are_skipped() {
        let cats = vec![];
        let o = occasion(wednesday(10, 0), &cats);
        let mut a = rule(EffectKind::BonusPoints, "1");
        let mut b = rule(EffectKind::BonusPoints, "2");
        let mut c = rule(EffectKind::BonusPoints, "3");
        (a.priority, b.priority, c.priority) = (5, 9, 1);
        b.stackable = false;
        let rules = vec![a.clone(), b.clone(), c.clone()];
        let ids = |s: Vec<&Rule>| s.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(select(&rules, &o, false, |_| true)), vec![b.id]);
        b.priority = 3;
        let rules = vec![a.clone(), b.clone(), c.clone()];
        assert_eq!(ids(select(&rules, &o, false, |_| true)), vec![a.id, c.id]);
        c.priority = 5; // tie with a: by id, a was made first
        let rules = vec![c.clone(), a.clone()];
        assert_eq!(ids(select(&rules, &o, false, |_| true)), vec![a.id, c.id]);
    }
}
