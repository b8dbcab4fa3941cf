//! `/v1/me/...` with a member access token from a partner's app (authorization code +
//! PKCE): the member's own data only, never anyone else's, and the token opens nothing
//! but `/v1/me`.

use crate::support::oidc::{member_token, spawn_app_with_mail};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_member_token_shows_her_own_points_history_cards_and_tier_and_nothing_else() {
    let (t, sink) = spawn_app_with_mail().await;
    let programme = t.programme("Me").await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    for (name, rank, spend) in [("Basic", 10, "0.00"), ("Gold", 20, "100.00")] {
        let body = json!({"name": name, "rank": rank, "qualifying_spend": {"amount": spend, "currency": "EUR"}, "discount_percent": "0", "earn_multiplier": "1"});
        t.post("/v1/tiers", &programme.admin, body)
            .await
            .expect(201);
    }
    let (ann, ann_card) = t.member_with_card(&gym, "ann@example.org").await;
    let (bob, bob_card) = t.member_with_card(&gym, "bob@example.org").await;
    t.purchase(&gym, &ann_card, "42.00", 0).await;
    t.purchase(&gym, &bob_card, "10.00", 0).await;

    let token = member_token(&t, &sink, &programme, &gym, "ann@example.org").await;

    let me = t.get("/v1/me", &token).await.expect(200);
    assert_eq!(me["id"], ann.as_str());
    assert_eq!(me["email"], "ann@example.org");
    assert_eq!(me["points"], 42);
    assert_eq!(me["value"], json!({"amount": "0.42", "currency": "EUR"}));

    let balance = t.get("/v1/me/balance", &token).await.expect(200);
    assert_eq!(balance["member_id"], ann.as_str());
    assert_eq!(balance["points"], 42);

    let history = t
        .get("/v1/me/transactions?limit=10", &token)
        .await
        .expect(200);
    let lines = history["data"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{history}");
    assert_eq!(lines[0]["kind"], "earned");
    assert_eq!(lines[0]["points"], 42);
    assert_eq!(lines[0]["breakdown"][0]["kind"], "base_rate");

    let tier = t.get("/v1/me/tier", &token).await.expect(200);
    assert_eq!(tier["qualifying_spend"]["amount"], "42.00", "{tier}");
    assert_eq!(tier["tier"]["name"], "Basic", "{tier}");
    assert_eq!(tier["next_tier"]["name"], "Gold", "{tier}");
    assert_eq!(tier["spend_to_next_tier"]["amount"], "58.00", "{tier}");
    assert_eq!(me["tier"]["name"], "Basic");

    let partners = t.get("/v1/me/partners", &token).await.expect(200);
    assert_eq!(partners["data"][0]["name"], "Iron Gym");
    assert_eq!(
        t.get("/v1/me/offers", &token).await.expect(200)["data"],
        json!([])
    );

    // Her card by its last four digits only; the full number is nowhere in the answer.
    let cards = t.get("/v1/me/cards", &token).await.expect(200);
    let text = cards.to_string();
    assert!(!text.contains(&ann_card), "{text}");
    assert_eq!(cards["data"][0]["last4"], &ann_card[ann_card.len() - 4..]);
    assert_eq!(cards["data"][0]["kind"], "loyalty");
    let card_id = cards["data"][0]["id"].as_str().unwrap().to_owned();

    // Bob's card is not hers to block: not found. Her own is blocked, and the till
    // refuses it from then on.
    let bob_cards = t
        .get(&format!("/v1/members/{bob}/cards"), &programme.admin)
        .await
        .expect(200);
    let bob_card_id = bob_cards["data"][0]["id"].as_str().unwrap();
    t.post(
        &format!("/v1/me/cards/{bob_card_id}/block"),
        &token,
        json!({}),
    )
    .await
    .expect_problem(404, "not_found");
    let blocked = t
        .post(&format!("/v1/me/cards/{card_id}/block"), &token, json!({}))
        .await
        .expect(200);
    assert_eq!(blocked["status"], "blocked");
    let body = json!({"card_number": ann_card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": "after-block"});
    t.post_moving("/v1/purchases", &gym.token, body)
        .await
        .expect_problem(409, "card_blocked");
    assert_eq!(
        t.points(&programme.admin, &bob).await,
        10,
        "Bob's card still works"
    );

    // Marketing consent, on and off.
    let changed = t
        .call(
            Method::PATCH,
            "/v1/me",
            Some(&token),
            Some(json!({"consent_marketing": true})),
            None,
        )
        .await
        .expect(200);
    assert_eq!(changed["consent_marketing"], true);
    t.call(
        Method::PATCH,
        "/v1/me",
        Some(&token),
        Some(json!({"consent_marketing": "yes"})),
        None,
    )
    .await
    .expect_problem(422, "validation_failed");

    // The member token opens no operator or partner route, not even about herself.
    for path in [
        format!("/v1/members/{ann}"),
        format!("/v1/members/{ann}/balance"),
        "/v1/partners".to_owned(),
        "/v1/campaigns".to_owned(),
    ] {
        let status = t.get(&path, &token).await.status.as_u16();
        assert!(status == 401 || status == 403, "{path}: {status}");
    }
    // And partner or operator tokens do not open /v1/me.
    for other in [&gym.token, &programme.admin] {
        let status = t.get("/v1/me", other).await.status.as_u16();
        assert!(status == 401 || status == 403, "{status}");
    }

    // Once her data is erased, her token opens nothing.
    t.call(
        Method::DELETE,
        &format!("/v1/members/{ann}"),
        Some(&programme.admin),
        None,
        None,
    )
    .await
    .expect(204);
    assert_eq!(t.get("/v1/me", &token).await.status.as_u16(), 401);
}
