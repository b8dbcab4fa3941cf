//! Bad input gets a problem+json answer with a stable code, and changes nothing.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn every_bad_purchase_is_refused_with_its_code_and_moves_nothing() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "30.00", 0).await;

    let purchase = |amount: Value, currency: &str, redeem: i64| json!({"card_number": card, "amount": {"amount": amount, "currency": currency}, "external_ref": "bad-1", "redeem_points": redeem});
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (
            purchase(json!("-5.00"), "EUR", 0),
            422,
            "validation_failed",
            Some("amount.amount"),
        ),
        (
            purchase(json!("0"), "EUR", 0),
            422,
            "validation_failed",
            Some("amount.amount"),
        ),
        (
            purchase(json!(12.5), "EUR", 0),
            422,
            "validation_failed",
            Some("amount.amount"),
        ),
        (
            purchase(json!("10.001"), "EUR", 0),
            422,
            "validation_failed",
            Some("amount.amount"),
        ),
        (
            purchase(json!("1e3"), "EUR", 0),
            422,
            "validation_failed",
            Some("amount.amount"),
        ),
        (
            purchase(json!("10.00"), "USD", 0),
            422,
            "currency_mismatch",
            None,
        ),
        (
            purchase(json!("10.00"), "EUR", -1),
            422,
            "validation_failed",
            Some("redeem_points"),
        ),
        (
            purchase(json!("10.00"), "EUR", 31),
            409,
            "insufficient_points",
            None,
        ),
        (
            purchase(json!("0.10"), "EUR", 30),
            422,
            "redemption_exceeds_amount",
            None,
        ),
        (
            json!({"card_number": "7000000000000005", "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "x"}),
            404,
            "not_found",
            None,
        ),
        // A typo the check digit catches is the till's mistake, not an unknown card.
        (
            json!({"card_number": "7000000000000000", "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "x"}),
            422,
            "validation_failed",
            Some("card_number"),
        ),
        (
            json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}}),
            422,
            "validation_failed",
            None,
        ),
        (
            json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "  "}),
            422,
            "validation_failed",
            Some("external_ref"),
        ),
        (
            json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "x", "surprise": 1}),
            422,
            "validation_failed",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let problem = t
            .post_moving("/v1/purchases", &gym.token, body.clone())
            .await
            .expect_problem(status, code);
        if let Some(field) = field {
            let fields: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert!(
                fields.contains(&field),
                "{body} should name {field}: {problem}"
            );
        }
    }

    let raw = |body: &'static str, content_type: &'static str| {
        t.http
            .post(format!("{}/v1/purchases", t.base))
            .bearer_auth(&gym.token)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .header("content-type", content_type)
            .body(body)
    };
    let malformed = raw("{\"card_number\": ", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["code"],
        "malformed_json"
    );
    let wrong_type = raw("card_number=1", "text/plain").send().await.unwrap();
    assert_eq!(wrong_type.status(), 415);
    let huge = format!("{{\"card_number\": \"{}\"}}", "9".repeat(100_000));
    let too_big = t
        .http
        .post(format!("{}/v1/purchases", t.base))
        .bearer_auth(&gym.token)
        .header("Idempotency-Key", "big")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert_eq!(
        too_big.json::<Value>().await.unwrap()["code"],
        "payload_too_large"
    );
    t.call(
        Method::POST,
        "/v1/purchases",
        Some(&gym.token),
        Some(purchase(json!("1.00"), "EUR", 0)),
        Some(&"k".repeat(300)),
    )
    .await
    .expect_problem(400, "idempotency_key_invalid");

    // Nothing moved: one purchase, thirty points.
    assert_eq!(t.points(&gym.token, &member).await, 30);
    let history = t
        .get(&format!("/v1/members/{member}/transactions"), &gym.token)
        .await
        .expect(200);
    assert_eq!(history["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_partners_members_and_lists_are_refused() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let bad_partner = json!({"name": "", "kind": "shop", "category": "x", "earn_points_per_unit": "-1", "issue_price_per_point": "abc", "redemption_value_per_point": 0.1});
    t.post("/v1/partners", &prog.admin, bad_partner)
        .await
        .expect_problem(422, "validation_failed");
    let bad_partner = json!({"name": "", "kind": "shop", "category": "x", "earn_points_per_unit": "-1", "issue_price_per_point": "abc", "redemption_value_per_point": "0.1"});
    let problem = t
        .post("/v1/partners", &prog.admin, bad_partner)
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "name",
        "kind",
        "earn_points_per_unit",
        "issue_price_per_point",
    ] {
        assert!(fields.contains(&f), "{f} missing in {problem}");
    }
    let gym = t.partner(&prog, "Gym", "1").await;
    t.post(
        "/v1/members",
        &gym.token,
        json!({"name": "A", "email": "not-an-email"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    t.post(
        "/v1/members",
        &gym.token,
        json!({"name": "A", "email": "a@example.org"}),
    )
    .await
    .expect(201);
    t.post(
        "/v1/members",
        &gym.token,
        json!({"name": "B", "email": "A@example.org"}),
    )
    .await
    .expect_problem(409, "email_taken");
    t.get("/v1/partners?limit=0", &prog.admin)
        .await
        .expect_problem(422, "validation_failed");
    t.get("/v1/partners?limit=101", &prog.admin)
        .await
        .expect_problem(422, "validation_failed");
    t.get("/v1/partners?cursor=nonsense", &prog.admin)
        .await
        .expect_problem(422, "validation_failed");
    t.get("/v1/members/not-a-uuid", &prog.admin)
        .await
        .expect_problem(404, "not_found");
    t.get("/v1/nothing-here", &prog.admin)
        .await
        .expect_problem(404, "not_found");

    // Pagination over partners: pages chain without gaps or repeats.
    for n in 0..4 {
        t.partner(&prog, &format!("P{n}"), "1").await;
    }
    let mut ids = Vec::new();
    let mut path = "/v1/partners?limit=2".to_owned();
    loop {
        let page = t.get(&path, &prog.admin).await.expect(200);
        ids.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/partners?limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (5, 5));
}

/// The server accepts what the OpenAPI document says it accepts and refuses the rest
/// with a problem, never a 500 (PostgreSQL cannot store a NUL character).
#[tokio::test]
async fn the_server_keeps_to_the_documented_field_rules() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "30.00", 0).await;

    // JSON Schema's integers include 1.0 and 1e0.
    for (n, redeem) in [json!(1.0), json!(1e0)].into_iter().enumerate() {
        let body = json!({"card_number": card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": format!("float-{n}"), "redeem_points": redeem});
        let answer = t
            .post_moving("/v1/purchases", &gym.token, body)
            .await
            .expect(201);
        assert_eq!(answer["points_redeemed"], 1);
    }

    let refused_field = |answer: Resp, field: &str| {
        let problem = answer.expect_problem(422, "validation_failed");
        assert!(
            problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field}: {problem}"
        );
    };
    // Lengths count what was sent (the document's maxLength), before trimming.
    let padded = format!(" {}", "a".repeat(200));
    refused_field(
        t.post(
            "/v1/members",
            &gym.token,
            json!({"name": padded, "email": "bob@example.org"}),
        )
        .await,
        "name",
    );
    for (name, email) in [
        ("Bob\u{0}", "bob@example.org"),
        ("Bob", "bob\u{0}@example.org"),
    ] {
        let field = if name.contains('\0') { "name" } else { "email" };
        refused_field(
            t.post(
                "/v1/members",
                &gym.token,
                json!({"name": name, "email": email}),
            )
            .await,
            field,
        );
    }
    for (field, value) in [("card_number", "7\u{0}"), ("external_ref", "r\u{0}")] {
        let mut body = json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "nul"});
        body[field] = json!(value);
        refused_field(
            t.post_moving("/v1/purchases", &gym.token, body).await,
            field,
        );
    }
    // Decimals: at most 28 characters; rates carry no sign.
    let too_long = format!("1{}", "0".repeat(28));
    for (field, value) in [
        ("earn_points_per_unit", too_long.as_str()),
        ("issue_price_per_point", "-0"),
    ] {
        let mut body = json!({"name": "Shop", "kind": "merchant", "category": "retail", "earn_points_per_unit": "1", "issue_price_per_point": "0.012", "redemption_value_per_point": "0.009"});
        body[field] = json!(value);
        refused_field(t.post("/v1/partners", &prog.admin, body).await, field);
    }
    // 30, then twice: 1 point paid, 4 earned on the 4.99 paid in money.
    assert_eq!(t.points(&gym.token, &member).await, 36);
}

/// A NUL character where the server looks something up is "not found", not a database
/// error (PostgreSQL refuses NUL in a query: these were 500s there).
#[tokio::test]
async fn a_nul_in_a_looked_up_name_is_not_found() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    t.get("/v1/cards/7%00", &prog.admin)
        .await
        .expect_problem(404, "not_found");
    let token = t
        .http
        .post(format!("{}/oauth/token", t.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=cl_%00&client_secret=x")
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 401);
    assert_eq!(
        token.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
}
