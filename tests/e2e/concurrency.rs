//! The balance guard holds under concurrent spending.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn fifty_simultaneous_redemptions_against_a_balance_for_ten() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "1000.00", 0).await;
    assert_eq!(t.points(&gym.token, &member).await, 1000);

    // Each pays a 1.00 bill entirely with 100 points, so nothing is earned back.
    let attempts = (0..50).map(|i| {
        let body = json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": format!("c-{i}"), "redeem_points": 100});
        let (t, token) = (&t, gym.token.clone());
        async move { t.post_moving("/v1/purchases", &token, body).await }
    });
    let answers = futures::future::join_all(attempts).await;
    let ok = answers.iter().filter(|r| r.status == 201).count();
    let refused = answers
        .iter()
        .filter(|r| r.status == 409 && r.code() == "insufficient_points")
        .count();
    let other: Vec<_> = answers
        .iter()
        .filter(|r| r.status != 201 && r.code() != "insufficient_points")
        .map(|r| r.body.clone())
        .collect();
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!((ok, refused), (10, 40));
    assert_eq!(t.points(&gym.token, &member).await, 0);
    let history = t
        .get(
            &format!("/v1/members/{member}/transactions?limit=100"),
            &gym.token,
        )
        .await
        .expect(200);
    let redeemed: i64 = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "redeemed")
        .map(|i| i["points"].as_i64().unwrap())
        .sum();
    assert_eq!(redeemed, -1000);
}
