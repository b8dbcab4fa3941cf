//! The classic customer classifications, pure: the Lorenz curve and the Pareto (top 20 %)
//! share, ABC by cumulative share of sales, XYZ by the coefficient of variation of
//! monthly spend, and the RFM score map.
//!
//! Sales are integers in minor units of the currency (exact); shares are `Decimal`s
//! rounded half away from zero to [`SHARE_DP`] places. Only the coefficient of variation
//! ends in a floating-point square root.

use rust_decimal::{Decimal, RoundingStrategy};

/// Decimal places of every share (`0.1234` = 12.34 %).
pub const SHARE_DP: u32 = 4;

/// Points of the Lorenz curve: every 5 % of members, 0 % to 100 % (21 points).
pub const LORENZ_STEPS: i64 = 20;

/// `num / den` rounded to [`SHARE_DP`] places (0 when `den` is not positive).
pub fn share(num: i128, den: i128) -> Decimal {
    if den <= 0 {
        return Decimal::ZERO;
    }
    let (n, d) = (
        Decimal::from_i128_with_scale(num, 0),
        Decimal::from_i128_with_scale(den, 0),
    );
    (n / d).round_dp_with_strategy(SHARE_DP, RoundingStrategy::MidpointAwayFromZero)
}

/// One point of the Lorenz curve: the poorest `members_share` of the members made
/// `sales_share` of the sales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LorenzPoint {
    /// 0.00, 0.05, …, 1.00.
    pub members_share: Decimal,
    pub sales_share: Decimal,
}

/// The Lorenz curve of members' sales, `sorted_asc` smallest first, at every 5 % of the
/// members. Between two members the curve is the straight line (the usual piecewise
/// linear curve through (i/n, cumulative share of the i smallest)): at `k × n / 20`
/// members, `i` whole members plus the fraction `f` of the next one,
/// `(cum_i + f × sales_{i+1}) / total`, computed exactly, then rounded. With no members,
/// or no positive total, every `sales_share` is 0.
pub fn lorenz_curve(sorted_asc: &[i64]) -> Vec<LorenzPoint> {
    let n = sorted_asc.len() as i64;
    let total: i128 = sorted_asc.iter().map(|&s| i128::from(s)).sum();
    let mut prefix = Vec::with_capacity(sorted_asc.len() + 1);
    prefix.push(0i128);
    for &s in sorted_asc {
        prefix.push(prefix.last().copied().unwrap_or(0) + i128::from(s));
    }
    (0..=LORENZ_STEPS)
        .map(|k| {
            let members_share = Decimal::new(k * 5, 2);
            let sales_share = if n == 0 || total <= 0 {
                Decimal::ZERO
            } else {
                // k·n/20 members = i + rem/20.
                let x = k * n;
                let (i, rem) = ((x / LORENZ_STEPS) as usize, x % LORENZ_STEPS);
                let next = if rem > 0 {
                    i128::from(sorted_asc[i])
                } else {
                    0
                };
                share(
                    i128::from(LORENZ_STEPS) * prefix[i] + i128::from(rem) * next,
                    i128::from(LORENZ_STEPS) * total,
                )
            };
            LorenzPoint {
                members_share,
                sales_share,
            }
        })
        .collect()
}

/// How many members "the top `percent` %" of `n` members is: `ceil(n × percent / 100)`
/// (one member of four is the top 20 %; so is one of five; two of six).
pub fn top_count(n: usize, percent: u32) -> usize {
    (n * percent as usize).div_ceil(100)
}

/// The share of sales made by the top 20 % of members ([`top_count`]), `sorted_asc`
/// smallest first.
pub fn top_20_share(sorted_asc: &[i64]) -> Decimal {
    let total: i128 = sorted_asc.iter().map(|&s| i128::from(s)).sum();
    let top = top_count(sorted_asc.len(), 20);
    let top_sales: i128 = sorted_asc
        .iter()
        .rev()
        .take(top)
        .map(|&s| i128::from(s))
        .sum();
    share(top_sales, total)
}

/// ABC class by cumulative share of sales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Abc {
    A,
    B,
    C,
}

/// XYZ class by the regularity of monthly spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Xyz {
    X,
    Y,
    Z,
}

impl Abc {
    pub const ALL: [Abc; 3] = [Abc::A, Abc::B, Abc::C];
    pub fn as_str(self) -> &'static str {
        match self {
            Abc::A => "A",
            Abc::B => "B",
            Abc::C => "C",
        }
    }
}

impl Xyz {
    pub const ALL: [Xyz; 3] = [Xyz::X, Xyz::Y, Xyz::Z];
    pub fn as_str(self) -> &'static str {
        match self {
            Xyz::X => "X",
            Xyz::Y => "Y",
            Xyz::Z => "Z",
        }
    }
}

/// A cell of the ABC/XYZ matrix, `AX` … `CZ`.
pub fn parse_class(text: &str) -> Option<(Abc, Xyz)> {
    let mut chars = text.chars();
    let abc = match chars.next()? {
        'A' => Abc::A,
        'B' => Abc::B,
        'C' => Abc::C,
        _ => return None,
    };
    let xyz = match chars.next()? {
        'X' => Xyz::X,
        'Y' => Xyz::Y,
        'Z' => Xyz::Z,
        _ => return None,
    };
    chars.next().is_none().then_some((abc, xyz))
}

/// Thresholds in percent: ABC `a` < `b` (cumulative share of sales), XYZ `x` < `y`
/// (coefficient of variation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub a: Decimal,
    pub b: Decimal,
    pub x: Decimal,
    pub y: Decimal,
}

impl Default for Thresholds {
    /// a = 80, b = 95, x = 10, y = 25.
    fn default() -> Self {
        Thresholds {
            a: Decimal::from(80),
            b: Decimal::from(95),
            x: Decimal::from(10),
            y: Decimal::from(25),
        }
    }
}

impl Thresholds {
    /// The fields that break `0 < a < b < 100` and `0 < x < y`.
    pub fn invalid_fields(&self) -> Vec<(&'static str, &'static str)> {
        let mut bad = Vec::new();
        let hundred = Decimal::ONE_HUNDRED;
        if !(self.a > Decimal::ZERO && self.a < hundred) {
            bad.push(("a", "must be above 0 and below 100"));
        }
        if !(self.b > Decimal::ZERO && self.b < hundred) {
            bad.push(("b", "must be above 0 and below 100"));
        } else if self.b <= self.a {
            bad.push(("b", "must be above a"));
        }
        if self.x <= Decimal::ZERO {
            bad.push(("x", "must be above 0"));
        }
        if self.y <= self.x {
            bad.push(("y", "must be above x"));
        }
        bad
    }

    /// The XYZ class of a coefficient of variation (none: no positive mean) — X when
    /// `cv ≤ x %`, Y when `cv ≤ y %`, Z above (and without a mean).
    pub fn xyz(&self, cv: Option<f64>) -> Xyz {
        use rust_decimal::prelude::ToPrimitive;
        let pct = |d: Decimal| d.to_f64().unwrap_or(f64::INFINITY) / 100.0;
        match cv {
            Some(cv) if cv <= pct(self.x) => Xyz::X,
            Some(cv) if cv <= pct(self.y) => Xyz::Y,
            _ => Xyz::Z,
        }
    }
}

/// ABC classes of members' sales sorted largest first (ties by member id, done by the
/// caller). The boundary rule: a member is A while the cumulative share of the members
/// before her is below `a` % (so the first member is always A, and the member who
/// crosses `a` % is still A), B while it is below `b` %, C from there on. Computed
/// exactly (`100 × before < a × total`). With no positive total every member is C.
pub fn abc_classes(sorted_desc: &[i64], t: &Thresholds) -> Vec<Abc> {
    let total: i128 = sorted_desc.iter().map(|&s| i128::from(s)).sum();
    let total = Decimal::from_i128_with_scale(total, 0);
    let mut before = Decimal::ZERO;
    sorted_desc
        .iter()
        .map(|&s| {
            let pct = before * Decimal::ONE_HUNDRED;
            let class = if pct < t.a * total {
                Abc::A
            } else if pct < t.b * total {
                Abc::B
            } else {
                Abc::C
            };
            before += Decimal::from(s);
            class
        })
        .collect()
}

/// Coefficient of variation (population standard deviation / mean) of monthly totals,
/// from their sum, sum of squares and the number of months (months without purchases
/// count as 0): `sqrt(months × sum_sq − sum²) / sum`, the integer part exact. None when
/// the mean is not positive.
pub fn cv_from_sums(sum: i64, sum_sq: i128, months: i64) -> Option<f64> {
    if sum <= 0 || months <= 0 {
        return None;
    }
    let spread = (i128::from(months) * sum_sq - i128::from(sum) * i128::from(sum)).max(0);
    Some((spread as f64).sqrt() / sum as f64)
}

/// [`cv_from_sums`] of the monthly totals themselves.
pub fn cv(monthly: &[i64]) -> Option<f64> {
    let sum = monthly.iter().sum();
    let sum_sq = monthly.iter().map(|&v| i128::from(v) * i128::from(v)).sum();
    cv_from_sums(sum, sum_sq, monthly.len() as i64)
}

/// RFM segment names, from the usual R × FM grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RfmSegment {
    Champions,
    Loyal,
    PotentialLoyalists,
    New,
    Promising,
    NeedAttention,
    AboutToSleep,
    AtRisk,
    CannotLose,
    Hibernating,
    Lost,
}

impl RfmSegment {
    pub const ALL: [RfmSegment; 11] = [
        RfmSegment::Champions,
        RfmSegment::Loyal,
        RfmSegment::PotentialLoyalists,
        RfmSegment::New,
        RfmSegment::Promising,
        RfmSegment::NeedAttention,
        RfmSegment::AboutToSleep,
        RfmSegment::AtRisk,
        RfmSegment::CannotLose,
        RfmSegment::Hibernating,
        RfmSegment::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RfmSegment::Champions => "champions",
            RfmSegment::Loyal => "loyal",
            RfmSegment::PotentialLoyalists => "potential_loyalists",
            RfmSegment::New => "new",
            RfmSegment::Promising => "promising",
            RfmSegment::NeedAttention => "need_attention",
            RfmSegment::AboutToSleep => "about_to_sleep",
            RfmSegment::AtRisk => "at_risk",
            RfmSegment::CannotLose => "cannot_lose",
            RfmSegment::Hibernating => "hibernating",
            RfmSegment::Lost => "lost",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The FM score: the mean of the frequency and monetary scores, rounded half up
/// (`(f + m + 1) / 2` in integers).
pub fn fm_score(frequency: u8, monetary: u8) -> u8 {
    (frequency + monetary).div_ceil(2)
}

/// The R × FM map (scores 1–5, 5 best):
///
/// | R \ FM | 1 | 2 | 3 | 4 | 5 |
/// |---|---|---|---|---|---|
/// | 5 | new | potential_loyalists | potential_loyalists | champions | champions |
/// | 4 | promising | potential_loyalists | potential_loyalists | loyal | loyal |
/// | 3 | about_to_sleep | about_to_sleep | need_attention | loyal | loyal |
/// | 2 | hibernating | hibernating | at_risk | at_risk | cannot_lose |
/// | 1 | lost | hibernating | at_risk | at_risk | cannot_lose |
pub fn rfm_segment(recency: u8, fm: u8) -> RfmSegment {
    use RfmSegment::*;
    match (recency, fm) {
        (1, 1) => Lost,
        (1..=2, 1..=2) => Hibernating,
        (1..=2, 3..=4) => AtRisk,
        (1..=2, _) => CannotLose,
        (3, 1..=2) => AboutToSleep,
        (3, 3) => NeedAttention,
        (3..=4, 4..=5) => Loyal,
        (4, 1) => Promising,
        (5, 1) => New,
        (4..=5, 2..=3) => PotentialLoyalists,
        _ => Champions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn lorenz_of_five_members_hand_computed() {
        // Sales 1, 2, 3, 4, 10 (total 20). At 5 % of members: 0.25 members of the
        // smallest (1) = 0.25 / 20 = 0.0125; at 20 %: the first member, 1/20 = 0.05; at
        // 50 %: 1 + 2 + half of 3 = 4.5 / 20 = 0.225; at 80 %: 10/20 = 0.5.
        let curve = lorenz_curve(&[1, 2, 3, 4, 10]);
        assert_eq!(curve.len(), 21);
        let at = |k: usize| (curve[k].members_share, curve[k].sales_share);
        assert_eq!(at(0), (d("0"), d("0")));
        assert_eq!(at(1), (d("0.05"), d("0.0125")));
        assert_eq!(at(4), (d("0.20"), d("0.05")));
        assert_eq!(at(10), (d("0.50"), d("0.225")));
        assert_eq!(at(16), (d("0.80"), d("0.5")));
        assert_eq!(at(20), (d("1.00"), d("1")));
        // Top 20 % of five members is one member: 10 / 20.
        assert_eq!(top_20_share(&[1, 2, 3, 4, 10]), d("0.5"));
    }

    #[test]
    fn top_twenty_percent_rounds_up() {
        assert_eq!(top_count(1, 20), 1);
        assert_eq!(top_count(4, 20), 1);
        assert_eq!(top_count(5, 20), 1);
        assert_eq!(top_count(6, 20), 2);
        assert_eq!(top_count(10, 20), 2);
        assert_eq!(top_count(0, 20), 0);
        // Six members: the top two (30 + 20) of 100.
        assert_eq!(top_20_share(&[5, 10, 15, 20, 20, 30]), d("0.5"));
        // Thirds round half away from zero at 4 places: 1/3.
        assert_eq!(top_20_share(&[1, 1, 1]), d("0.3333"));
        assert_eq!(top_20_share(&[]), d("0"));
    }

    #[test]
    fn abc_boundaries_are_the_share_before_the_member() {
        // 50, 30, 15, 5 of 100: before = 0, 50, 80, 95.
        let t = Thresholds::default();
        assert_eq!(
            abc_classes(&[50, 30, 15, 5], &t),
            vec![Abc::A, Abc::A, Abc::B, Abc::C]
        );
        // One member holding everything is A.
        assert_eq!(abc_classes(&[7], &t), vec![Abc::A]);
        // 79.99 % before is still A.
        assert_eq!(
            abc_classes(&[7999, 1, 2000], &t),
            vec![Abc::A, Abc::A, Abc::B]
        );
        assert_eq!(abc_classes(&[0, 0], &t), vec![Abc::C, Abc::C]);
    }

    #[test]
    fn cv_hand_computed() {
        // 10, 10, 10: no variation.
        assert_eq!(cv(&[10, 10, 10]), Some(0.0));
        // 0, 20 over two months: mean 10, std 10, cv 1.
        assert_eq!(cv(&[0, 20]), Some(1.0));
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, population std 2, cv 0.4.
        assert!((cv(&[2, 4, 4, 4, 5, 5, 7, 9]).unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(cv(&[0, 0]), None);
        assert_eq!(cv_from_sums(30, 300, 3), Some(0.0));
        let t = Thresholds::default();
        assert_eq!(t.xyz(Some(0.1)), Xyz::X);
        assert_eq!(t.xyz(Some(0.2)), Xyz::Y);
        assert_eq!(t.xyz(Some(0.25)), Xyz::Y);
        assert_eq!(t.xyz(Some(0.4)), Xyz::Z);
        assert_eq!(t.xyz(None), Xyz::Z);
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(Thresholds::default().invalid_fields().is_empty());
        let bad = Thresholds {
            a: d("95"),
            b: d("80"),
            x: d("0"),
            y: d("0"),
        };
        let fields: Vec<&str> = bad.invalid_fields().iter().map(|f| f.0).collect();
        assert_eq!(fields, vec!["b", "x", "y"]);
        assert_eq!(parse_class("AX"), Some((Abc::A, Xyz::X)));
        assert_eq!(parse_class("CZ"), Some((Abc::C, Xyz::Z)));
        assert_eq!(parse_class("XA"), None);
        assert_eq!(parse_class("AXX"), None);
    }

    #[test]
    fn rfm_map_covers_the_grid() {
        use RfmSegment::*;
        let grid = [
            // FM 1..5 for R = 5, 4, 3, 2, 1.
            [
                New,
                PotentialLoyalists,
                PotentialLoyalists,
                Champions,
                Champions,
            ],
            [
                Promising,
                PotentialLoyalists,
                PotentialLoyalists,
                Loyal,
                Loyal,
            ],
            [AboutToSleep, AboutToSleep, NeedAttention, Loyal, Loyal],
            [Hibernating, Hibernating, AtRisk, AtRisk, CannotLose],
            [Lost, Hibernating, AtRisk, AtRisk, CannotLose],
        ];
        for (row, r) in grid.iter().zip([5u8, 4, 3, 2, 1]) {
            for (fm, expected) in (1u8..=5).zip(row) {
                assert_eq!(rfm_segment(r, fm), *expected, "R {r} FM {fm}");
            }
        }
        // Every name is reached.
        for s in RfmSegment::ALL {
            assert!(grid.iter().flatten().any(|g| *g == s), "{s:?}");
            assert_eq!(RfmSegment::parse(s.as_str()), Some(s));
        }
        assert_eq!(fm_score(5, 4), 5);
        assert_eq!(fm_score(1, 2), 2);
        assert_eq!(fm_score(3, 3), 3);
        assert_eq!(fm_score(1, 1), 1);
    }

    proptest! {
        #[test]
        fn lorenz_is_monotone_below_the_diagonal_and_ends_at_one(
            mut sales in proptest::collection::vec(0i64..1_000_000, 1..200)
        ) {
            prop_assume!(sales.iter().any(|&s| s > 0));
            sales.sort_unstable();
            let curve = lorenz_curve(&sales);
            prop_assert_eq!(curve.len(), 21);
            prop_assert_eq!(curve[0].sales_share, Decimal::ZERO);
            prop_assert_eq!(curve[20].sales_share, Decimal::ONE);
            for w in curve.windows(2) {
                prop_assert!(w[0].sales_share <= w[1].sales_share);
            }
            for p in &curve {
                // Below the line of equality (up to the rounding).
                prop_assert!(p.sales_share <= p.members_share + Decimal::new(1, 4));
            }
            let top = top_20_share(&sales);
            prop_assert!(top >= Decimal::new(2, 1) - Decimal::new(1, 4));
            prop_assert!(top <= Decimal::ONE);
            let classes = abc_classes(&sales.iter().rev().copied().collect::<Vec<_>>(), &Thresholds::default());
            prop_assert_eq!(classes[0], Abc::A);
            for w in classes.windows(2) {
                prop_assert!(w[0] <= w[1]);
            }
        }
    }
}
