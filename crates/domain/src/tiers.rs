//! Tiers: a ladder per programme that members climb by spending across the coalition.

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
