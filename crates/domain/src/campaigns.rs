//! Campaigns: a reward for a segment of members, paid by a funder, within a budget and
//! a window, with a holdout (control group) that gets nothing so the effect can be
//! measured. Which members a segment holds is a database question (`app::campaigns`);
//! here is what needs no I/O: who is held out, and the campaign as an earning rule, so
//! purchases price it with `earning::price_purchase` like every rule.

use crate::rules::{Caps, Conditions, Effect, EffectKind, Funder, Rule};
use crate::Points;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Treatment gets the reward; control gets nothing and is the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Treatment,
    Control,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Treatment => "treatment",
            Group::Control => "control",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Group::Treatment, Group::Control]
            .into_iter()
            .find(|g| g.as_str() == text)
    }
}

/// Holdout shares are in basis points: 100 % = 10 000.
pub const WHOLE: u64 = 10_000;

/// The member's group: the first 8 bytes of SHA-256(campaign id ‖ member id), as a
/// big-endian number mod 10 000, below the holdout in basis points → control. The same
/// member always lands in the same group of a campaign (whichever process assigns it),
/// and the groups of different campaigns are independent.
pub fn group_of(campaign_id: Uuid, member_id: Uuid, holdout_basis_points: u32) -> Group {
    let digest = Sha256::new()
        .chain_update(campaign_id.as_bytes())
        .chain_update(member_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    if u64::from_be_bytes(first) % WHOLE < u64::from(holdout_basis_points) {
        Group::Control
    } else {
        Group::Treatment
    }
}

/// What a treated member earns on a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardKind {
    /// `(value − 1) ×` the partner's base points.
    Multiplier,
    /// `value` points, fixed.
    Bonus,
}

impl RewardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RewardKind::Multiplier => "multiplier",
            RewardKind::Bonus => "bonus",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [RewardKind::Multiplier, RewardKind::Bonus]
            .into_iter()
            .find(|k| k.as_str() == text)
    }

    fn effect(self) -> EffectKind {
        match self {
            RewardKind::Multiplier => EffectKind::Multiplier,
            RewardKind::Bonus => EffectKind::BonusPoints,
        }
    }
}

/// A campaign as purchases price it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignTerms {
    pub id: Uuid,
    pub name: String,
    pub reward: RewardKind,
    pub value: Decimal,
    /// Only purchases at these partners earn the reward; `None`: at every partner.
    pub partner_ids: Option<Vec<Uuid>>,
    pub funder: Funder,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl CampaignTerms {
    /// Running at `at`: inside `[starts_at, ends_at)`.
    pub fn running(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && at < self.ends_at
    }

    /// Whether a purchase at `partner_id` at `at` may earn the reward (for a treated
    /// member, budget left).
    pub fn applies(&self, partner_id: Uuid, at: DateTime<Utc>) -> bool {
        self.running(at)
            && self
                .partner_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&partner_id))
    }

    /// The campaign as an earning rule for one purchase of a treated member: never more
    /// points than `budget_left`.
    pub fn as_rule(&self, budget_left: Points) -> Rule {
        Rule {
            id: self.id,
            version: 1,
            name: self.name.clone(),
            priority: 0,
            active: true,
            valid_from: self.starts_at,
            valid_to: Some(self.ends_at),
            conditions: Conditions {
                partner_ids: self.partner_ids.clone(),
                ..Conditions::default()
            },
            effect: Effect {
                kind: self.reward.effect(),
                value: self.value,
            },
            caps: Caps {
                per_purchase: Some(budget_left.max(0)),
                ..Caps::default()
            },
            stackable: true,
            funder: self.funder,
            campaign: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::earning::{price_purchase, MemberFacts, PurchaseTerms, Seller};
    use crate::money::Currency;
    use chrono::TimeZone;

    #[test]
    fn the_group_is_deterministic_and_the_holdout_share_is_close_to_the_percentage() {
        let campaign = Uuid::from_u128(42);
        let members: Vec<Uuid> = (0..20_000u128).map(|i| Uuid::from_u128(i * 7919)).collect();
        for m in &members[..100] {
            assert_eq!(group_of(campaign, *m, 2_000), group_of(campaign, *m, 2_000));
        }
        let control = members
            .iter()
            .filter(|m| group_of(campaign, **m, 2_000) == Group::Control)
            .count();
        assert!(
            (3_800..=4_200).contains(&control),
            "{control} of 20000 at 20 %"
        );
        assert!(members
            .iter()
            .all(|m| group_of(campaign, *m, 0) == Group::Treatment));
        assert!(members
            .iter()
            .all(|m| group_of(campaign, *m, 10_000) == Group::Control));
        // Another campaign splits the same members differently.
        let other = Uuid::from_u128(43);
        let moved = members
            .iter()
            .filter(|m| group_of(campaign, **m, 5_000) != group_of(other, **m, 5_000))
            .count();
        assert!(moved > 5_000, "independent splits: {moved}");
    }

    fn campaign(reward: RewardKind, value: &str) -> CampaignTerms {
        CampaignTerms {
            id: Uuid::from_u128(9),
            name: "Win-back".into(),
            reward,
            value: value.parse().unwrap(),
            partner_ids: None,
            funder: Funder::Operator,
            starts_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            ends_at: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    fn purchase(seller: Uuid) -> PurchaseTerms {
        PurchaseTerms {
            amount: Decimal::from(30),
            currency: Currency::parse("EUR").unwrap(),
            point_value: "0.01".parse().unwrap(),
            seller: Seller {
                id: seller,
                name: "Diet store".into(),
                category: "food".into(),
                earn_points_per_unit: Decimal::ONE,
            },
            categories: vec![],
            at: Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap(),
            redeem_points: 0,
        }
    }

    #[test]
    fn a_campaign_line_names_the_campaign_its_funder_and_stays_within_the_budget() {
        let seller = Uuid::from_u128(5);
        let double = campaign(RewardKind::Multiplier, "2");
        let out = price_purchase(
            &purchase(seller),
            &MemberFacts::default(),
            &[double.as_rule(1000)],
        )
        .unwrap();
        assert_eq!(out.points_earned, 60);
        let line = &out.breakdown[1];
        assert_eq!(
            (
                line.kind.as_str(),
                line.campaign_id,
                line.rule_id,
                line.points
            ),
            ("campaign", Some(double.id), None, 30)
        );
        assert_eq!(line.funder, Some(Funder::Operator));
        let short = price_purchase(
            &purchase(seller),
            &MemberFacts::default(),
            &[double.as_rule(7)],
        )
        .unwrap();
        assert_eq!(
            short.points_earned, 37,
            "only the 7 points left of the budget"
        );
        let spent = price_purchase(
            &purchase(seller),
            &MemberFacts::default(),
            &[double.as_rule(0)],
        )
        .unwrap();
        assert_eq!(
            spent.breakdown.len(),
            1,
            "an exhausted budget gives no line"
        );
        let bonus = campaign(RewardKind::Bonus, "25");
        let out = price_purchase(
            &purchase(seller),
            &MemberFacts::default(),
            &[bonus.as_rule(100)],
        )
        .unwrap();
        assert_eq!(out.points_earned, 55);
    }

    #[test]
    fn a_campaign_stacks_on_an_exclusive_rule_and_keeps_to_its_partners_and_window() {
        let seller = Uuid::from_u128(5);
        let mut exclusive = campaign(RewardKind::Bonus, "10").as_rule(100);
        (exclusive.id, exclusive.campaign, exclusive.stackable) =
            (Uuid::from_u128(1), false, false);
        exclusive.caps = Caps::default();
        let mut at_gym = campaign(RewardKind::Bonus, "25");
        let both = [exclusive.clone(), at_gym.as_rule(100)];
        let out = price_purchase(&purchase(seller), &MemberFacts::default(), &both).unwrap();
        assert_eq!(out.points_earned, 30 + 10 + 25);
        at_gym.partner_ids = Some(vec![Uuid::from_u128(6)]);
        assert!(!at_gym.applies(seller, purchase(seller).at));
        let out = price_purchase(
            &purchase(seller),
            &MemberFacts::default(),
            &[at_gym.as_rule(100)],
        )
        .unwrap();
        assert_eq!(out.points_earned, 30);
        at_gym.partner_ids = None;
        at_gym.ends_at = purchase(seller).at;
        assert!(!at_gym.running(purchase(seller).at), "the end is exclusive");
    }
}
