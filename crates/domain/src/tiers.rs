//! Tiers: a ladder per programme that members climb by spending across the coalition.
//!
//! The rules, all pure (the app crate does the I/O):
//! - a member qualifies for the highest-ranked tier whose `qualifying_spend` is at most
//!   their spend over the rolling window (the 12 months up to and including today, UTC
//!   days), net of refunds; a tier that needs no spend is the entry tier everyone has;
//! - the effective tier is the higher-ranked of the qualified tier and a floor set by
//!   hand, while the floor lives (`now < ends_at`);
//! - spend is counted in the currency's minor units (integers: exact, summable in SQL).

use chrono::{DateTime, Months, NaiveDate, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

/// What a member's tier changes about a purchase: a discount off the bill and a
/// multiplier on the points the partner's base rate earns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierTerms {
    pub id: Uuid,
    pub name: String,
    pub rank: i32,
    /// Percent of the amount taken off the bill, e.g. 15 for 15 %.
    pub discount_percent: Decimal,
    /// Multiplies the base rate's points, e.g. 1.5.
    pub earn_multiplier: Decimal,
}

/// The highest earn multiplier a tier may have.
pub const MAX_EARN_MULTIPLIER: i64 = 100;
/// The highest qualifying spend, in currency units (10^12): any sum of a year's
/// purchases in minor units stays far inside `i64`.
pub const MAX_QUALIFYING_SPEND_UNITS: i64 = 1_000_000_000_000;
/// Ranks run from 0 to this.
pub const MAX_RANK: i32 = 10_000;
/// Decimal places a discount percent or a multiplier may have.
pub const MAX_TERM_DECIMALS: u32 = 4;

/// A tier of the ladder: its terms and what it takes to qualify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub terms: TierTerms,
    /// Spend over the window that qualifies, in minor units.
    pub qualifying_spend: i64,
}

/// A programme's tiers, lowest rank first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ladder(Vec<Tier>);

impl Ladder {
    pub fn new(mut tiers: Vec<Tier>) -> Self {
        tiers.sort_by_key(|t| t.terms.rank);
        Self(tiers)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.0
    }

    pub fn get(&self, id: Uuid) -> Option<&Tier> {
        self.0.iter().find(|t| t.terms.id == id)
    }

    /// The highest-ranked tier that `spend` (minor units) qualifies for.
    pub fn qualified_for(&self, spend: i64) -> Option<&Tier> {
        self.0.iter().rev().find(|t| t.qualifying_spend <= spend)
    }

    /// The tier everyone has without spending (one needing no spend), if any.
    pub fn entry(&self) -> Option<&Tier> {
        self.qualified_for(0)
    }

    /// The qualified tier a stored id stands for: no id (or one no longer on the ladder)
    /// is the entry tier.
    pub fn qualified(&self, stored: Option<Uuid>) -> Option<&Tier> {
        stored.and_then(|id| self.get(id)).or_else(|| self.entry())
    }

    /// The next tier above `rank` (above nothing: the lowest), if any.
    pub fn next_above(&self, rank: Option<i32>) -> Option<&Tier> {
        self.0
            .iter()
            .find(|t| rank.is_none_or(|r| t.terms.rank > r))
    }
}

/// The higher-ranked of two tiers.
pub fn higher<'a>(a: Option<&'a Tier>, b: Option<&'a Tier>) -> Option<&'a Tier> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.terms.rank > a.terms.rank { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Whether `to` ranks above `from` (any tier ranks above none).
pub fn ranks_above(to: Option<&Tier>, from: Option<&Tier>) -> bool {
    match (to, from) {
        (Some(to), Some(from)) => to.terms.rank > from.terms.rank,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A tier set by hand until `ends_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    pub tier_id: Uuid,
    pub ends_at: DateTime<Utc>,
}

impl Floor {
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        now < self.ends_at
    }
}

/// Where the effective tier comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Qualified by spend (or the entry tier).
    Qualified,
    /// A live floor set by hand, above the qualified tier.
    Floor,
}

/// The effective tier: the higher of the qualified tier and a live floor (the qualified
/// tier wins a tie: the floor adds nothing then).
pub fn effective<'a>(
    ladder: &'a Ladder,
    qualified: Option<Uuid>,
    floor: Option<Floor>,
    now: DateTime<Utc>,
) -> Option<(&'a Tier, Source)> {
    let qualified = ladder.qualified(qualified);
    let floor = floor
        .filter(|f| f.live(now))
        .and_then(|f| ladder.get(f.tier_id));
    if ranks_above(floor, qualified) {
        floor.map(|f| (f, Source::Floor))
    } else {
        qualified.map(|q| (q, Source::Qualified))
    }
}

/// The first UTC day of the rolling 12-month window that ends with `today`: the same day
/// a year earlier is out, the day after it is in (so 2026-11-25 counts 2025-11-26 on).
pub fn window_start(today: NaiveDate) -> NaiveDate {
    let year_ago = today
        .checked_sub_months(Months::new(12))
        .unwrap_or(NaiveDate::MIN);
    year_ago.succ_opt().unwrap_or(year_ago)
}

/// An amount in minor units (`12.50` EUR → 1250); `None` if it has finer digits than the
/// currency allows or does not fit.
pub fn to_minor(amount: Decimal, minor_units: u32) -> Option<i64> {
    let scaled = amount.checked_mul(Decimal::from(10i64.checked_pow(minor_units)?))?;
    if scaled.fract() != Decimal::ZERO {
        return None;
    }
    i64::try_from(scaled).ok()
}

/// Minor units back to an amount (1250 → `12.50` for two decimals).
pub fn from_minor(minor: i64, minor_units: u32) -> Decimal {
    Decimal::new(minor, minor_units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tier(rank: i32, spend: i64) -> Tier {
        Tier {
            terms: TierTerms {
                id: Uuid::from_u128(rank as u128 + 1),
                name: format!("T{rank}"),
                rank,
                discount_percent: Decimal::ZERO,
                earn_multiplier: Decimal::ONE,
            },
            qualifying_spend: spend,
        }
    }

    fn ladder() -> Ladder {
        Ladder::new(vec![tier(3, 100_000), tier(1, 0), tier(2, 50_000)])
    }

    #[test]
    fn spend_qualifies_for_the_highest_tier_it_reaches() {
        let l = ladder();
        let rank = |spend| l.qualified_for(spend).map(|t| t.terms.rank);
        assert_eq!(rank(0), Some(1));
        assert_eq!(rank(49_999), Some(1));
        assert_eq!(rank(50_000), Some(2));
        assert_eq!(rank(1_000_000), Some(3));
        assert_eq!(rank(-5), None, "refunds past zero qualify for nothing");
        let no_entry = Ladder::new(vec![tier(1, 10)]);
        assert_eq!(no_entry.entry(), None);
        assert_eq!(no_entry.qualified(None), None);
    }

    #[test]
    fn a_live_floor_lifts_the_tier_until_it_ends() {
        let l = ladder();
        let now = Utc::now();
        let floor = Floor {
            tier_id: tier(3, 0).terms.id,
            ends_at: now + chrono::Duration::days(1),
        };
        let silver = Some(tier(2, 0).terms.id);
        let (t, source) = effective(&l, silver, Some(floor), now).unwrap();
        assert_eq!((t.terms.rank, source), (3, Source::Floor));
        let later = floor.ends_at;
        let (t, source) = effective(&l, silver, Some(floor), later).unwrap();
        assert_eq!((t.terms.rank, source), (2, Source::Qualified));
        let low_floor = Floor {
            tier_id: tier(1, 0).terms.id,
            ..floor
        };
        let (t, source) = effective(&l, silver, Some(low_floor), now).unwrap();
        assert_eq!((t.terms.rank, source), (2, Source::Qualified));
        let (t, _) = effective(&l, None, None, now).unwrap();
        assert_eq!(t.terms.rank, 1, "no qualified tier: the entry tier");
    }

    #[test]
    fn the_window_is_twelve_months_ending_today() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(window_start(d("2026-11-25")), d("2025-11-26"));
        assert_eq!(window_start(d("2024-02-29")), d("2023-03-01"));
        assert_eq!(window_start(d("2026-03-31")), d("2025-04-01"));
    }

    #[test]
    fn minor_units_are_exact() {
        assert_eq!(to_minor("12.50".parse().unwrap(), 2), Some(1250));
        assert_eq!(to_minor("7".parse().unwrap(), 0), Some(7));
        assert_eq!(to_minor("0.001".parse().unwrap(), 3), Some(1));
        assert_eq!(to_minor("0.001".parse().unwrap(), 2), None);
        assert_eq!(from_minor(1250, 2).to_string(), "12.50");
    }

    proptest! {
        #[test]
        fn qualification_is_monotonic_in_spend(
            thresholds in proptest::collection::vec(0i64..1_000_000, 0..6),
            a in -1_000i64..2_000_000,
            b in -1_000i64..2_000_000,
        ) {
            let l = Ladder::new(thresholds.iter().enumerate().map(|(i, s)| tier(i as i32, *s)).collect());
            let (low, high) = (a.min(b), a.max(b));
            let rank = |s| l.qualified_for(s).map(|t| t.terms.rank);
            // More spend never qualifies for a lower tier.
            prop_assert!(rank(high) >= rank(low));
            // The tier qualified for is reached, and no higher-ranked tier is.
            if let Some(t) = l.qualified_for(high) {
                prop_assert!(t.qualifying_spend <= high);
                prop_assert!(l.tiers().iter().filter(|o| o.terms.rank > t.terms.rank).all(|o| o.qualifying_spend > high));
            } else {
                prop_assert!(l.tiers().iter().all(|o| o.qualifying_spend > high));
            }
        }

        #[test]
        fn the_effective_tier_is_never_below_the_qualified_one(
            thresholds in proptest::collection::vec(0i64..1_000, 1..6),
            spend in 0i64..2_000,
            floor_index in 0usize..6,
            live in any::<bool>(),
        ) {
            let l = Ladder::new(thresholds.iter().enumerate().map(|(i, s)| tier(i as i32, *s)).collect());
            let now = Utc::now();
            let qualified = l.qualified_for(spend).map(|t| t.terms.id);
            let floor_tier = &l.tiers()[floor_index % l.tiers().len()];
            let floor = Floor {
                tier_id: floor_tier.terms.id,
                ends_at: if live { now + chrono::Duration::hours(1) } else { now },
            };
            let got = effective(&l, qualified, Some(floor), now).map(|(t, _)| t.terms.rank);
            let q = l.qualified(qualified).map(|t| t.terms.rank);
            prop_assert!(got >= q);
            if live {
                prop_assert!(got >= Some(floor_tier.terms.rank));
            } else {
                prop_assert_eq!(got, q);
            }
        }

        #[test]
        fn minor_units_round_trip(minor in -1_000_000_000_000i64..1_000_000_000_000, units in 0u32..4) {
            prop_assert_eq!(to_minor(from_minor(minor, units), units), Some(minor));
        }
    }
}
