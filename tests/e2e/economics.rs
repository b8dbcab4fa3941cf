//! The economics together, as the README's worked example describes them: a tier's
//! discount and multiplier price the purchase, a rule for one tier gives only to its
//! members, the crossing purchase is priced with the tier the member had before it, and
//! a purchase paid partly with points earns on what is left to pay.

use crate::support::*;
use serde_json::{json, Value};
use uuid::Uuid;

fn eur(amount: &str) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

fn tier(name: &str, rank: i64, spend: &str, discount: &str, multiplier: &str) -> Value {
    json!({"name": name, "rank": rank, "qualifying_spend": eur(spend),
           "discount_percent": discount, "earn_multiplier": multiplier})
}

/// (kind, points) of each breakdown line.
fn lines(answer: &Value) -> Vec<(String, i64)> {
    answer["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["points"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn tiers_and_rules_price_purchases_together() {
    let t = spawn_app().await;
    let p = t.programme("Coalition").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let diet = t.partner(&p, "Diet store", "1").await;
    t.post("/v1/tiers", &p.admin, tier("Basic", 1, "0", "5", "1"))
        .await
        .expect(201);
    let gold = t
        .post(
            "/v1/tiers",
            &p.admin,
            tier("Gold", 2, "100.00", "15", "1.5"),
        )
        .await
        .expect(201);
    // A rule may only name tiers of the programme.
    t.post(
        "/v1/rules",
        &p.admin,
        json!({"name": "Nobody's", "effect": {"kind": "bonus_points", "value": "5"},
               "conditions": {"tier_ids": [Uuid::new_v4()]}}),
    )
    .await
    .expect_problem(422, "validation_failed");
    t.post(
        "/v1/rules",
        &p.admin,
        json!({"name": "Gold welcome at the diet store", "effect": {"kind": "bonus_points", "value": "50"},
               "funder": {"kind": "operator"},
               "conditions": {"tier_ids": [gold["id"]], "partner_ids": [diet.id]}}),
    )
    .await
    .expect(201);
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;

    // Basic: 5 % off 100.00, earning 1 point per euro paid; this purchase reaches Gold's
    // 100.00 but is priced as Basic.
    let first = t.purchase(&gym, &card, "100.00", 0).await;
    assert_eq!(first["tier_discount"], eur("5.00"));
    assert_eq!(first["points_discount"], eur("0.00"));
    assert_eq!(first["discount"], eur("5.00"));
    assert_eq!(first["payable"], eur("95.00"));
    assert_eq!(first["points_earned"], 95);

    // Gold from the next purchase: 15 % off, ×1.5 on the base, and the Gold-only rule at
    // the diet store. 85 + 42.5 + 50 = 177.5, rounded down once to 177.
    let body = json!({"card_number": card, "amount": eur("100.00"), "external_ref": "d-1"});
    let quote = t
        .post("/v1/purchases/quote", &diet.token, body)
        .await
        .expect(200);
    let second = t.purchase(&diet, &card, "100.00", 0).await;
    for answer in [&quote, &second] {
        assert_eq!(answer["tier_discount"], eur("15.00"), "{answer}");
        assert_eq!(answer["payable"], eur("85.00"));
        assert_eq!(answer["points_earned"], 177);
        let expected = [
            ("base_rate", 85),
            ("tier_multiplier", 42),
            ("bonus_points", 50),
        ];
        let expected: Vec<(String, i64)> =
            expected.iter().map(|(k, p)| (k.to_string(), *p)).collect();
        assert_eq!(lines(answer), expected, "{answer}");
    }
    assert_eq!(
        lines(&quote),
        lines(&second),
        "the quote showed what the purchase did"
    );
    assert_eq!(
        second["breakdown"][2]["funder"]["kind"], "operator",
        "{second}"
    );
    assert_eq!(t.points(&gym.token, &member).await, 95 + 177);

    // Paying 100 points (1.00) at the gym: 15 % off 10.00 is 1.50, the points 1.00, so
    // 7.50 is paid and earns 7.50 × 1.5 = 11.25, rounded down: 11.
    let third = t.purchase(&gym, &card, "10.00", 100).await;
    assert_eq!(third["tier_discount"], eur("1.50"));
    assert_eq!(third["points_discount"], eur("1.00"));
    assert_eq!(third["discount"], eur("2.50"));
    assert_eq!(third["payable"], eur("7.50"));
    assert_eq!(third["points_earned"], 11);
    assert_eq!(third["points_redeemed"], 100);
    assert_eq!(t.points(&gym.token, &member).await, 95 + 177 - 100 + 11);
    assert_accounts_consistent(&t.app.db, p.id).await;
}
