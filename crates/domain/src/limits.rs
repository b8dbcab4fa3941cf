//! Upper bounds on what one request may move and what one account may hold. They are
//! checked before anything is written and are far above any real till: they exist so
//! that every product of points and money stays inside `Decimal`'s 28 digits and every
//! sum of points inside `i64`, whatever a caller sends.

use crate::Points;
use rust_decimal::Decimal;

/// The largest amount of one purchase, in currency units (10^9).
pub const MAX_PURCHASE_UNITS: i64 = 1_000_000_000;
/// The most points one journal entry may move (10^12).
pub const MAX_POINTS_PER_ENTRY: Points = 1_000_000_000_000;
/// The most points one account may hold (10^15).
pub const MAX_BALANCE: Points = 1_000_000_000_000_000;
/// The largest rate or price (points per unit, money per point): with `MAX_BALANCE`
/// points a balance's value still fits `Decimal` many times over.
pub const MAX_RATE: i64 = 1_000_000;
/// The longest life of a point, in days (100 years): dates stay far inside chrono's range.
pub const MAX_POINT_EXPIRY_DAYS: i32 = 36_500;

pub fn max_purchase_amount() -> Decimal {
    Decimal::from(MAX_PURCHASE_UNITS)
}
