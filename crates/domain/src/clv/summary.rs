//! Recency–frequency–monetary summaries of a transaction log, exactly as Python
//! `lifetimes`' `summary_data_from_transaction_data(freq='D', freq_multiplier=7)`:
//! purchases on one day are one transaction, times are in weeks of 7 days.

use std::collections::BTreeMap;

use chrono::NaiveDate;

/// The models' time unit is the week; durations are counted in whole days and divided by 7.
pub const DAYS_PER_WEEK: f64 = 7.0;

/// One customer's calibration-period summary. Times are kept in whole days (exact, and
/// usable as a grouping key); `recency()` and `age()` give the models' weeks.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerSummary {
    /// `x`: repeat purchase days, i.e. distinct purchase days − 1.
    pub frequency: u32,
    /// `t_x` in days: first purchase day to last purchase day.
    pub recency_days: i64,
    /// `T` in days: first purchase day to the calibration end day.
    pub age_days: i64,
    /// Mean of the repeat days' daily totals; 0 when there is no repeat day (the first
    /// purchase is left out: it is what made the customer, not a sign of their spend).
    pub monetary_value: f64,
}

impl CustomerSummary {
    /// `t_x` in weeks.
    pub fn recency(&self) -> f64 {
        self.recency_days as f64 / DAYS_PER_WEEK
    }

    /// `T` in weeks.
    pub fn age(&self) -> f64 {
        self.age_days as f64 / DAYS_PER_WEEK
    }
}

/// Summarises `(customer, day, amount)` purchases up to and including `end`.
///
/// Purchases after `end` are ignored, so a customer whose first purchase is after it
/// does not appear. The map is ordered by key so that results are reproducible.
pub fn summarise<K, I>(purchases: I, end: NaiveDate) -> BTreeMap<K, CustomerSummary>
where
    K: Ord,
    I: IntoIterator<Item = (K, NaiveDate, f64)>,
{
    let mut daily: BTreeMap<K, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for (customer, day, amount) in purchases {
        if day <= end {
            *daily.entry(customer).or_default().entry(day).or_insert(0.0) += amount;
        }
    }
    daily
        .into_iter()
        .map(|(customer, days)| (customer, summarise_days(&days, end)))
        .collect()
}

/// One customer's summary from their daily totals (non-empty, all on or before `end`).
fn summarise_days(days: &BTreeMap<NaiveDate, f64>, end: NaiveDate) -> CustomerSummary {
    let first = *days
        .keys()
        .next()
        .expect("a summarised customer has a purchase");
    let last = *days
        .keys()
        .next_back()
        .expect("a summarised customer has a purchase");
    let repeats = days.len() - 1;
    let repeat_total: f64 = days.values().skip(1).sum();
    CustomerSummary {
        frequency: repeats as u32,
        recency_days: (last - first).num_days(),
        age_days: (end - first).num_days(),
        monetary_value: if repeats == 0 {
            0.0
        } else {
            repeat_total / repeats as f64
        },
    }
}

/// Customers sharing one `(x, t_x, T)`: the BG/NBD likelihood depends on nothing else,
/// so a fit costs the number of distinct triples, not the number of customers.
/// Times are in weeks (any real value, so that published weekly data can be fitted too).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfGroup {
    pub frequency: u32,
    /// `t_x` in weeks.
    pub recency: f64,
    /// `T` in weeks.
    pub age: f64,
    pub count: u64,
}

/// Groups summaries by `(x, t_x, T)` — on the whole days, which are exact — ordered by
/// `x` then `t_x` then `T`.
pub fn group_by_rf<'a, I>(summaries: I) -> Vec<RfGroup>
where
    I: IntoIterator<Item = &'a CustomerSummary>,
{
    let mut counts: BTreeMap<(u32, i64, i64), u64> = BTreeMap::new();
    for s in summaries {
        *counts
            .entry((s.frequency, s.recency_days, s.age_days))
            .or_insert(0) += 1;
    }
    counts
        .into_iter()
        .map(|((frequency, recency_days, age_days), count)| RfGroup {
            frequency,
            recency: recency_days as f64 / DAYS_PER_WEEK,
            age: age_days as f64 / DAYS_PER_WEEK,
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn one_day_is_one_transaction_and_the_end_day_counts() {
        let end = day(2024, 1, 29);
        let purchases = vec![
            ("a", day(2024, 1, 1), 10.0),
            ("a", day(2024, 1, 1), 5.0), // same day: not a repeat
            ("a", day(2024, 1, 8), 20.0),
            ("a", day(2024, 1, 15), 4.0),
            ("a", day(2024, 1, 15), 6.0),
            ("a", day(2024, 1, 29), 1.0), // on the end day: counts
            ("a", day(2024, 2, 1), 99.0), // after the end: ignored
            ("b", day(2024, 1, 22), 7.0),
            ("c", day(2024, 1, 30), 3.0), // first purchase after the end: left out
        ];
        let s = summarise(purchases, end);
        assert_eq!(s.len(), 2);
        let a = &s["a"];
        assert_eq!((a.frequency, a.recency_days, a.age_days), (3, 28, 28));
        assert_eq!(a.recency(), 4.0);
        // Repeat days' totals 20, 10 and 1; the first day's 15 is left out.
        assert!((a.monetary_value - 31.0 / 3.0).abs() < 1e-12);
        let b = &s["b"];
        assert_eq!(
            (b.frequency, b.recency_days, b.age_days, b.monetary_value),
            (0, 0, 7, 0.0)
        );
    }

    #[test]
    fn grouping_counts_customers_per_triple() {
        let s = |frequency, recency_days, age_days| CustomerSummary {
            frequency,
            recency_days,
            age_days,
            monetary_value: 0.0,
        };
        let all = [s(0, 0, 10), s(1, 3, 10), s(0, 0, 10), s(1, 3, 12)];
        let groups = group_by_rf(&all);
        let g = |frequency, recency_days: i32, age_days: i32, count| RfGroup {
            frequency,
            recency: f64::from(recency_days) / 7.0,
            age: f64::from(age_days) / 7.0,
            count,
        };
        assert_eq!(groups, vec![g(0, 0, 10, 2), g(1, 3, 10, 1), g(1, 3, 12, 1)]);
    }
}
