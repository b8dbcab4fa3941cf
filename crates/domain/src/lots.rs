//! Points live in lots with an expiry date; spending consumes the oldest-expiring first.

use crate::Points;
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub id: Uuid,
    pub remaining: Points,
    pub expires_at: DateTime<Utc>,
}

/// How many points to take from which lot to consume `points`, soonest expiry first.
/// `None` when the lots hold fewer points than asked for.
pub fn plan_consumption(lots: &[Lot], points: Points) -> Option<Vec<(Uuid, Points)>> {
    let plan = plan_partial(lots, points);
    (plan.left == 0).then_some(plan.takes)
}

/// What to take from some of an account's lots, and what is still to take from others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialPlan {
    pub takes: Vec<(Uuid, Points)>,
    /// Points the given lots could not cover.
    pub left: Points,
}

/// Takes up to `points` from `lots`, soonest expiry first (ties by id).
///
/// The lots can be read in chunks: when each chunk holds the account's next live lots in
/// (expiry, id) order, planning chunk after chunk with what is left gives the same takes
/// as one plan over every lot, because something is left only when every lot of the
/// chunk was emptied — so the next chunk starts exactly where this one ended.
pub fn plan_partial(lots: &[Lot], points: Points) -> PartialPlan {
    let mut ordered: Vec<&Lot> = lots.iter().filter(|l| l.remaining > 0).collect();
    ordered.sort_by_key(|l| (l.expires_at, l.id));
    let mut left = points;
    let mut takes = Vec::new();
    for lot in ordered {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        takes.push((lot.id, take));
        left -= take;
    }
    PartialPlan { takes, left }
}

/// One "your points expire on D" reminder: sent `days_before` days before the expiry
/// day, and recorded on each lot it announced by raising the lot's reminder stage to
/// `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminder {
    pub stage: i32,
    pub days_before: i64,
}

/// The reminders, most urgent first: a lot first seen 5 days before its expiry gets the
/// 7-day reminder only, never a late 30-day one.
pub const REMINDERS: [Reminder; 2] = [
    Reminder {
        stage: 2,
        days_before: 7,
    },
    Reminder {
        stage: 1,
        days_before: 30,
    },
];

/// Every reminder stage a lot can be at: none yet, then each reminder's.
pub const REMINDER_STAGES: [i32; 3] = [0, 1, 2];

impl Reminder {
    /// Lots expiring before this moment are due for the reminder at `now`: it is sent on
    /// the UTC day `days_before` days before their expiry day, for every lot of that day
    /// at once (so one member hears once per day, not once per lot's time of day).
    pub fn due_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let today = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
        today + chrono::Duration::days(self.days_before + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    #[test]
    fn oldest_expiring_lot_is_spent_first() {
        let now = Utc::now();
        let soon = Lot {
            id: Uuid::new_v4(),
            remaining: 30,
            expires_at: now + Duration::days(5),
        };
        let late = Lot {
            id: Uuid::new_v4(),
            remaining: 100,
            expires_at: now + Duration::days(300),
        };
        let plan = plan_consumption(&[late.clone(), soon.clone()], 50).unwrap();
        assert_eq!(plan, vec![(soon.id, 30), (late.id, 20)]);
        assert_eq!(plan_consumption(&[late, soon], 131), None);
        assert_eq!(plan_consumption(&[], 0), Some(vec![]));
    }

    /// Plans the way the ledger reads lots: the next `chunk` live lots in (expiry, id)
    /// order, planned with what is left, until nothing is left or the lots run out.
    fn plan_in_chunks(lots: &[Lot], points: Points, chunk: usize) -> Option<Vec<(Uuid, Points)>> {
        let mut live: Vec<Lot> = lots.iter().filter(|l| l.remaining > 0).cloned().collect();
        live.sort_by_key(|l| (l.expires_at, l.id));
        let mut takes = Vec::new();
        let mut left = points;
        loop {
            let read: Vec<Lot> = live
                .iter()
                .filter(|l| l.remaining > 0)
                .take(chunk)
                .cloned()
                .collect();
            let plan = plan_partial(&read, left);
            for (id, take) in &plan.takes {
                let lot = live.iter_mut().find(|l| l.id == *id).expect("planned lot");
                lot.remaining -= take;
            }
            takes.extend(plan.takes);
            left = plan.left;
            if left == 0 {
                return Some(takes);
            }
            if read.len() < chunk {
                return None;
            }
        }
    }

    #[test]
    fn a_reminder_is_due_from_the_start_of_its_day_for_the_whole_expiry_day() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let thirty = REMINDERS[1];
        assert_eq!(thirty.days_before, 30);
        // At any time on 1 Nov, lots expiring on 1 Dec (any hour) are due, 2 Dec ones not.
        for now in ["2026-11-01T00:00:00Z", "2026-11-01T23:59:59Z"] {
            assert_eq!(thirty.due_before(at(now)), at("2026-12-02T00:00:00Z"));
        }
        let seven = REMINDERS[0];
        assert_eq!(
            seven.due_before(at("2026-11-01T12:00:00Z")),
            at("2026-11-09T00:00:00Z")
        );
        assert!(REMINDERS.iter().all(|r| REMINDER_STAGES.contains(&r.stage)));
    }

    fn lot() -> impl Strategy<Value = Lot> {
        // Few distinct expiries, so ties (broken by id) are common; some lots are empty.
        (any::<u128>(), 0..60i64, 0..5i64).prop_map(|(id, remaining, day)| Lot {
            id: Uuid::from_u128(id),
            remaining,
            expires_at: DateTime::<Utc>::UNIX_EPOCH + Duration::days(day),
        })
    }

    proptest! {
        #[test]
        fn planning_chunk_by_chunk_takes_what_one_plan_over_all_lots_takes(
            lots in proptest::collection::vec(lot(), 0..40),
            points in 0..1_500i64,
            chunk in 1..8usize,
        ) {
            prop_assert_eq!(plan_in_chunks(&lots, points, chunk), plan_consumption(&lots, points));
        }

        #[test]
        fn a_plan_takes_exactly_the_points_and_never_more_than_a_lot_holds(
            lots in proptest::collection::vec(lot(), 0..40),
            points in 0..1_500i64,
        ) {
            let plan = plan_partial(&lots, points);
            let taken: Points = plan.takes.iter().map(|(_, take)| take).sum();
            prop_assert_eq!(taken + plan.left, points);
            let held: Points = lots.iter().map(|l| l.remaining).sum();
            prop_assert_eq!(plan.left, (points - held).max(0));
            for (id, take) in &plan.takes {
                let lot = lots.iter().find(|l| l.id == *id).expect("planned lot");
                prop_assert!(*take > 0 && *take <= lot.remaining);
            }
        }
    }
}
