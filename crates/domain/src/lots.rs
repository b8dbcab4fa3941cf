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
    let mut ordered: Vec<&Lot> = lots.iter().filter(|l| l.remaining > 0).collect();
    ordered.sort_by_key(|l| (l.expires_at, l.id));
    let mut left = points;
    let mut plan = Vec::new();
    for lot in ordered {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        plan.push((lot.id, take));
        left -= take;
    }
    (left == 0).then_some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

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
}
