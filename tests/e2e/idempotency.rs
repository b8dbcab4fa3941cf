//! Idempotency-Key: replays answer the first answer and move nothing.

use crate::support::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_replay_returns_the_first_answer_and_a_changed_body_is_refused() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    let body = json!({"card_number": card, "amount": {"amount": "42.00", "currency": "EUR"}, "external_ref": "i-1"});

    let first = t
        .call(
            Method::POST,
            "/v1/purchases",
            Some(&gym.token),
            Some(body.clone()),
            Some("key-1"),
        )
        .await;
    let first_location = first.headers.get("location").cloned();
    let first = first.expect(201);
    let again = t
        .call(
            Method::POST,
            "/v1/purchases",
            Some(&gym.token),
            Some(body.clone()),
            Some("key-1"),
        )
        .await;
    assert_eq!(again.headers.get("location").cloned(), first_location);
    assert_eq!(again.expect(201), first, "same status, same body");
    assert_eq!(
        t.points(&gym.token, &member).await,
        42,
        "the replay moved nothing"
    );

    let mut changed = body.clone();
    changed["amount"]["amount"] = json!("43.00");
    t.call(
        Method::POST,
        "/v1/purchases",
        Some(&gym.token),
        Some(changed),
        Some("key-1"),
    )
    .await
    .expect_problem(422, "idempotency_key_reused");
    // A different purchase that would succeed on its own is refused too, and moves nothing.
    let mut other = body.clone();
    other["external_ref"] = json!("i-other");
    t.call(
        Method::POST,
        "/v1/purchases",
        Some(&gym.token),
        Some(other),
        Some("key-1"),
    )
    .await
    .expect_problem(422, "idempotency_key_reused");
    assert_eq!(t.points(&gym.token, &member).await, 42);
    t.call(
        Method::POST,
        "/v1/purchases",
        Some(&gym.token),
        Some(body.clone()),
        None,
    )
    .await
    .expect_problem(400, "idempotency_key_missing");
    // The same external reference under a new key is a duplicate purchase, not a new one.
    t.call(
        Method::POST,
        "/v1/purchases",
        Some(&gym.token),
        Some(body),
        Some("key-2"),
    )
    .await
    .expect_problem(409, "duplicate_external_ref");
    assert_eq!(t.points(&gym.token, &member).await, 42);
}

#[tokio::test]
async fn concurrent_duplicates_of_one_key_record_one_purchase() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    let body = json!({"card_number": card, "amount": {"amount": "10.00", "currency": "EUR"}, "external_ref": "dup-1"});
    let tries = (0..10).map(|_| {
        t.call(
            Method::POST,
            "/v1/purchases",
            Some(&gym.token),
            Some(body.clone()),
            Some("same-key"),
        )
    });
    let answers = futures::future::join_all(tries).await;
    let first = answers[0].body.clone();
    for a in &answers {
        assert_eq!((a.status.as_u16(), &a.body), (201, &first));
    }
    assert_eq!(t.points(&gym.token, &member).await, 10);
}
