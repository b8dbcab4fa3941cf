//! Regression tests for what a second hostile review broke after the first review's
//! fixes: each test names the hole it guards. They run on both backends; the races
//! bite on PostgreSQL, where requests really run at the same time.

use crate::support::*;
use serde_json::{json, Value};

/// The issuer of a bearer card that another partner registered may still block and
/// replace it, but — as with `GET` — it is not told whose card it became: the block and
/// replace answers used to carry the member's id.
#[tokio::test]
async fn blocking_or_replacing_a_card_never_names_a_member_the_partner_may_not_see() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let bob = enrol(&t, &gym, "bob@example.org").await;

    let first = bearer_card(&t, &shop).await;
    register(&t, &gym, &first, &bob).await.expect(200);
    let replaced = t
        .post_moving(
            &format!("/v1/cards/{first}/replace"),
            &shop.token,
            json!({}),
        )
        .await
        .expect(201);
    assert_eq!(replaced["member_id"], Value::Null, "{replaced}");
    let new_number = replaced["number"].as_str().unwrap();
    let blocked = t
        .post(
            &format!("/v1/cards/{new_number}/block"),
            &shop.token,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(blocked["member_id"], Value::Null, "{blocked}");
    assert_eq!(blocked["status"], "blocked");

    // The partner that registered the card, and the operator, still see whose it is.
    let seen = t
        .get(&format!("/v1/cards/{new_number}"), &gym.token)
        .await
        .expect(200);
    assert_eq!(seen["member_id"], json!(bob));
    let seen = t
        .get(&format!("/v1/cards/{new_number}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(seen["member_id"], json!(bob));
}

/// E-mail addresses are text too: control characters are refused, NUL included, on both
/// backends alike (PostgreSQL answered 500 for a NUL, SQLite stored it).
#[tokio::test]
async fn control_characters_in_an_email_are_refused_on_both_backends() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    for email in [
        "a\u{0}b@example.org",
        "a\u{7}b@example.org",
        "ab@exa\u{1b}mple.org",
    ] {
        let refused = t
            .post(
                "/v1/members",
                &gym.token,
                json!({"name": "Bob", "email": email}),
            )
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], "email", "{refused}");
    }
    enrol(&t, &gym, "ab@example.org").await;
}

/// Partial refunds of one purchase sent at the same time all fit in what is left, so all
/// of them are recorded: the purchase used to be read before its account was locked, and
/// every refund but the first failed its compare-and-set with `refund_exceeds_remaining`.
#[tokio::test]
async fn concurrent_partial_refunds_that_fit_are_all_recorded() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (bob, card) = t.member_with_card(&gym, "bob@example.org").await;
    let bought = t.purchase(&gym, &card, "100.00", 0).await;
    let id = bought["id"].as_str().unwrap().to_owned();

    let path = format!("/v1/purchases/{id}/refunds");
    let refunds = (0..8).map(|_| {
        t.post_moving(
            &path,
            &gym.token,
            json!({"amount": {"amount": "10.00", "currency": "EUR"}}),
        )
    });
    for answer in futures::future::join_all(refunds).await {
        answer.expect(201);
    }
    let detail = t
        .get(&format!("/v1/purchases/{id}"), &gym.token)
        .await
        .expect(200);
    assert_eq!(detail["refunds"].as_array().unwrap().len(), 8, "{detail}");
    assert_eq!(t.points(&gym.token, &bob).await, 20);
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

/// A card number in a path is looked up as text: a NUL in it (`%00`) reached
/// PostgreSQL, which refused the query (500), where SQLite answered 404. A card number is
/// digits, so anything else names no card, on every card route and both backends.
#[tokio::test]
async fn card_numbers_that_are_not_digits_name_no_card() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (bob, card) = t.member_with_card(&gym, "bob@example.org").await;
    for number in ["%00", &format!("{card}%00"), "12%0A", "%20%20"] {
        t.get(&format!("/v1/cards/{number}"), &gym.token)
            .await
            .expect_problem(404, "not_found");
        t.get(&format!("/v1/cards/{number}/balance"), &gym.token)
            .await
            .expect_problem(404, "not_found");
        t.post(&format!("/v1/cards/{number}/block"), &gym.token, json!({}))
            .await
            .expect_problem(404, "not_found");
        t.post_moving(
            &format!("/v1/cards/{number}/replace"),
            &gym.token,
            json!({}),
        )
        .await
        .expect_problem(404, "not_found");
        let body = json!({"member_id": bob});
        t.post_moving(&format!("/v1/cards/{number}/register"), &gym.token, body)
            .await
            .expect_problem(404, "not_found");
    }
    // The card itself is still there and usable.
    t.get(&format!("/v1/cards/{card}/balance"), &gym.token)
        .await
        .expect(200);
}

/// Every refusal is problem+json: a path segment that is not UTF-8 once decoded (`%FF`)
/// used to get axum's plain-text 400.
#[tokio::test]
async fn path_segments_that_are_not_utf8_get_a_problem_not_plain_text() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    for path in [
        "/v1/cards/%FF",
        "/v1/cards/%FF/balance",
        "/v1/members/%FF",
        "/v1/members/%FF/balance",
        "/v1/members/%FF/transactions",
        "/v1/purchases/%FF",
        "/v1/partners/%C0%AF",
    ] {
        t.get(path, &gym.token)
            .await
            .expect_problem(404, "not_found");
    }
    t.post_moving("/v1/purchases/%FF/refunds", &gym.token, json!({}))
        .await
        .expect_problem(404, "not_found");
}
