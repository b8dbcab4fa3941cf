//! `PATCH /v1/partners/{id}`: a partner's rates change, and every server process prices
//! purchases with the new ones within a second.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

async fn patch(t: &Client, partner_id: Uuid, token: &str, body: Value) -> Resp {
    let path = format!("/v1/partners/{partner_id}");
    t.call(Method::PATCH, &path, Some(token), Some(body), None)
        .await
}

#[tokio::test]
async fn a_changed_rate_prices_the_next_purchase_and_the_quote() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    assert_eq!(
        t.purchase(&gym, &card, "10.00", 0).await["points_earned"],
        10
    );

    let changed = patch(
        &t,
        gym.id,
        &prog.admin,
        json!({"earn_points_per_unit": "3", "category": "fitness"}),
    )
    .await
    .expect(200);
    assert_eq!(changed["earn_points_per_unit"], "3");
    assert_eq!(changed["category"], "fitness");
    assert_eq!(changed["name"], "Gym", "absent fields stay");
    assert_eq!(changed["issue_price_per_point"], "0.012");

    let body = json!({"card_number": card, "amount": {"amount": "10.00", "currency": "EUR"}, "external_ref": "q"});
    let quote = t
        .post("/v1/purchases/quote", &gym.token, body)
        .await
        .expect(200);
    assert_eq!(quote["points_earned"], 30);
    assert_eq!(
        t.purchase(&gym, &card, "10.00", 0).await["points_earned"],
        30
    );
    assert_eq!(t.points(&gym.token, &member).await, 40);
    let read = t
        .get(&format!("/v1/partners/{}", gym.id), &prog.admin)
        .await;
    assert_eq!(read.expect(200)["earn_points_per_unit"], "3");
}

#[tokio::test]
async fn a_bad_change_is_refused_whole_and_changes_nothing() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let other = t.programme("Other").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (_, card) = t.member_with_card(&gym, "ann@example.org").await;

    // One bad field refuses the whole change: the good one is not applied either.
    let refused = patch(
        &t,
        gym.id,
        &prog.admin,
        json!({"earn_points_per_unit": "5", "issue_price_per_point": "-1"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert!(
        refused.to_string().contains("issue_price_per_point"),
        "{refused}"
    );
    patch(&t, gym.id, &prog.admin, json!({"kind": "bank"}))
        .await
        .expect_problem(422, "validation_failed");
    patch(&t, gym.id, &prog.admin, json!({"name": "   "}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        t.purchase(&gym, &card, "10.00", 0).await["points_earned"],
        10
    );

    // Another programme's operator, and the partner itself, may not change it.
    patch(
        &t,
        gym.id,
        &other.admin,
        json!({"earn_points_per_unit": "9"}),
    )
    .await
    .expect_problem(404, "not_found");
    patch(&t, gym.id, &gym.token, json!({"earn_points_per_unit": "9"}))
        .await
        .expect_problem(403, "insufficient_scope");
    patch(&t, Uuid::new_v4(), &prog.admin, json!({"name": "X"}))
        .await
        .expect_problem(404, "not_found");

    // An empty change is no change.
    let same = patch(&t, gym.id, &prog.admin, json!({})).await.expect(200);
    assert_eq!(same["earn_points_per_unit"], "1");
    assert_eq!(
        t.purchase(&gym, &card, "10.00", 0).await["points_earned"],
        10
    );
}

/// Two processes on one database: a rate changed through one prices the other's
/// purchases within a second, though the other holds the old terms in memory.
#[tokio::test]
async fn a_rate_changed_through_one_process_prices_purchases_through_the_other() {
    let Some(two) = two_processes().await else {
        return;
    };
    let (ta, tb, prog) = (&two.a, &two.b, &two.programme);
    let gym = ta.partner(prog, "Gym", "1").await;
    let (_, card) = ta.member_with_card(&gym, "ann@example.org").await;
    // Process b reads the gym's terms and keeps them.
    assert_eq!(
        tb.purchase(&gym, &card, "10.00", 0).await["points_earned"],
        10
    );

    for (round, rate) in ["4", "2", "7"].into_iter().enumerate() {
        patch(
            &ta,
            gym.id,
            &prog.admin,
            json!({"earn_points_per_unit": rate}),
        )
        .await
        .expect(200);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let earned = tb.purchase(&gym, &card, "10.00", 0).await["points_earned"].clone();
        let expected = 10 * rate.parse::<i64>().unwrap();
        assert_eq!(
            earned, expected,
            "round {round}: process b still prices at the old rate"
        );
    }
}
