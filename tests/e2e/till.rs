//! What a till and an integrator reach for first: finding a purchase by its reference
//! after a lost answer, a duplicate that names the purchase, member profile changes, a
//! member's cards, unblocking, check-digit typos as validation errors, 405 problems.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

fn purchase_body(card: &str, external_ref: &str) -> Value {
    json!({"card_number": card, "amount": {"amount": "20.00", "currency": "EUR"}, "external_ref": external_ref, "redeem_points": 0})
}

async fn post_with_key(t: &Client, token: &str, key: &str, body: Value) -> Resp {
    t.call(
        Method::POST,
        "/v1/purchases",
        Some(token),
        Some(body),
        Some(key),
    )
    .await
}

fn refs(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A card number whose check digit is wrong.
fn typo(card: &str) -> String {
    let last = card.as_bytes()[15] - b'0';
    format!("{}{}", &card[..15], (last + 1) % 10)
}

#[tokio::test]
async fn a_till_that_lost_the_answer_finds_its_purchase_and_a_duplicate_names_it() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let other = t.programme("Other").await;
    let (_, card) = t.member_with_card(&gym, "ann@example.org").await;

    let first = post_with_key(&t, &gym.token, "till-1", purchase_body(&card, "receipt 7"))
        .await
        .expect(201);
    let id = first["id"].as_str().unwrap().to_owned();
    // The same request again is the first answer, not a conflict.
    let replay = post_with_key(&t, &gym.token, "till-1", purchase_body(&card, "receipt 7"))
        .await
        .expect(201);
    assert_eq!(replay["id"], first["id"]);
    // Another key with the same reference: a conflict naming the purchase.
    let conflict = post_with_key(&t, &gym.token, "till-2", purchase_body(&card, "receipt 7"))
        .await
        .expect_problem(409, "duplicate_external_ref");
    assert_eq!(conflict["purchase_id"], json!(id));
    // The shop may use the same reference for its own purchase.
    t.post_moving(
        "/v1/purchases",
        &shop.token,
        purchase_body(&card, "receipt 7"),
    )
    .await
    .expect(201);

    let found = t
        .get("/v1/purchases?external_ref=receipt+7", &gym.token)
        .await
        .expect(200);
    assert_eq!(refs(&found), vec![id.clone()]);
    assert_eq!(found["data"][0]["external_ref"], "receipt 7");
    assert!(found["next_cursor"].is_null());
    let escaped = t
        .get("/v1/purchases?external_ref=receipt%207", &gym.token)
        .await
        .expect(200);
    assert_eq!(refs(&escaped), vec![id.clone()]);
    // The shop sees only its own, even when it names the gym.
    let shops = t
        .get("/v1/purchases?external_ref=receipt+7", &shop.token)
        .await
        .expect(200);
    assert_eq!(shops["data"].as_array().unwrap().len(), 1);
    assert_ne!(refs(&shops), vec![id.clone()]);
    let named = t
        .get(
            &format!("/v1/purchases?external_ref=receipt+7&partner_id={}", gym.id),
            &shop.token,
        )
        .await
        .expect(200);
    assert!(named["data"].as_array().unwrap().is_empty());
    // The operator sees both, or one partner's with partner_id.
    let all = t
        .get("/v1/purchases?external_ref=receipt+7", &prog.admin)
        .await
        .expect(200);
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let gyms = t
        .get(
            &format!("/v1/purchases?external_ref=receipt+7&partner_id={}", gym.id),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(refs(&gyms), vec![id.clone()]);
    let foreign = t
        .get("/v1/purchases?external_ref=receipt+7", &other.admin)
        .await
        .expect(200);
    assert!(foreign["data"].as_array().unwrap().is_empty());
    // The purchase found can be refunded.
    t.post_moving(
        &format!("/v1/purchases/{id}/refunds"),
        &gym.token,
        json!({"amount": {"amount": "20.00", "currency": "EUR"}}),
    )
    .await
    .expect(201);
    let refunded = t
        .get("/v1/purchases?external_ref=receipt+7", &gym.token)
        .await
        .expect(200);
    assert_eq!(refunded["data"][0]["refunds"].as_array().unwrap().len(), 1);

    for bad in [
        "external_ref=",
        "external_ref=%20",
        "partner_id=nope",
        "limit=101",
    ] {
        t.get(&format!("/v1/purchases?{bad}"), &gym.token)
            .await
            .expect_problem(422, "validation_failed");
    }
    // Pages walk every purchase once.
    let page = t
        .get("/v1/purchases?limit=1", &prog.admin)
        .await
        .expect(200);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = t
        .get(
            &format!("/v1/purchases?limit=1&cursor={cursor}"),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_ne!(refs(&page), refs(&next));
}

#[tokio::test]
async fn a_card_number_failing_its_check_digit_is_a_validation_error() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (_, card) = t.member_with_card(&gym, "ann@example.org").await;
    let bad = typo(&card);

    let refused = t
        .post_moving("/v1/purchases", &gym.token, purchase_body(&bad, "r-1"))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(refused["errors"][0]["field"], "card_number");
    let refused = t
        .post_moving(
            "/v1/redemptions",
            &gym.token,
            json!({"card_number": bad, "points": 1}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(refused["errors"][0]["field"], "card_number");
    for path in [
        format!("/v1/cards/{bad}"),
        format!("/v1/cards/{bad}/balance"),
        "/v1/cards/12345".to_owned(),
    ] {
        let refused = t
            .get(&path, &gym.token)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], "number", "{path}");
    }
    // A well-formed number that is nobody's card is still unknown. (It keeps our leading
    // 7: a Luhn-valid number of another prefix looks like a payment card number and is
    // refused as `pan_not_allowed`, see the bank tests.)
    let mut body = card[..15].to_owned().into_bytes();
    body[1] = if body[1] == b'9' { b'1' } else { body[1] + 1 };
    let body = String::from_utf8(body).unwrap();
    let unknown = (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|candidate| luhn_ok(candidate))
        .unwrap();
    t.get(&format!("/v1/cards/{unknown}"), &gym.token)
        .await
        .expect_problem(404, "not_found");
}

fn luhn_ok(number: &str) -> bool {
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[tokio::test]
async fn a_wrong_method_is_a_problem_with_allow_and_no_detail_names_internals() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let wrong = t
        .call(Method::PUT, "/v1/purchases", Some(&prog.admin), None, None)
        .await;
    let allow = wrong
        .headers
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    wrong.expect_problem(405, "method_not_allowed");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    for token in ["garbage", "a.b.c", &format!("{}x", prog.admin)] {
        let refused = t
            .get("/v1/clients", token)
            .await
            .expect_problem(401, "unauthorized");
        let detail = refused["detail"].as_str().unwrap();
        assert!(
            !detail.chars().any(|c| c.is_ascii_uppercase()),
            "an internal name in the detail: {detail}"
        );
    }
}

#[tokio::test]
async fn a_blocked_card_is_unblocked_by_the_operator_but_a_replaced_one_is_not() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (_, card) = t.member_with_card(&gym, "ann@example.org").await;
    let unblock = |number: String, token: String| {
        let t = &t;
        async move {
            t.call(
                Method::POST,
                &format!("/v1/cards/{number}/unblock"),
                Some(&token),
                None,
                None,
            )
            .await
        }
    };
    t.call(
        Method::POST,
        &format!("/v1/cards/{card}/block"),
        Some(&gym.token),
        None,
        None,
    )
    .await
    .expect(200);
    t.post_moving("/v1/purchases", &gym.token, purchase_body(&card, "r-1"))
        .await
        .expect_problem(409, "card_blocked");
    unblock(card.clone(), gym.token.clone())
        .await
        .expect_problem(403, "insufficient_scope");
    let active = unblock(card.clone(), prog.admin.clone()).await.expect(200);
    assert_eq!(active["status"], "active");
    // Unblocking an active card changes nothing.
    unblock(card.clone(), prog.admin.clone()).await.expect(200);
    t.post_moving("/v1/purchases", &gym.token, purchase_body(&card, "r-1"))
        .await
        .expect(201);

    let key = Uuid::new_v4().to_string();
    t.call(
        Method::POST,
        &format!("/v1/cards/{card}/replace"),
        Some(&gym.token),
        None,
        Some(&key),
    )
    .await
    .expect(201);
    unblock(card.clone(), prog.admin.clone())
        .await
        .expect_problem(409, "card_replaced");
    let other = t.programme("Other").await;
    unblock(card.clone(), other.admin.clone())
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn a_member_profile_and_consents_change_by_the_enrolling_partner_or_the_operator() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.member_with_card(&gym, "bob@example.org").await;
    let path = format!("/v1/members/{member}");
    let patch = |token: String, body: Value| {
        let (t, path) = (&t, path.clone());
        async move {
            t.call(Method::PATCH, &path, Some(&token), Some(body), None)
                .await
        }
    };

    let changed = patch(
        gym.token.clone(),
        json!({"name": "Ann Smith", "email": " Ann.Smith@Example.org ", "phone": "+49 30 1234567", "consent_marketing": true}),
    )
    .await
    .expect(200);
    assert_eq!(
        (
            &changed["name"],
            &changed["email"],
            &changed["phone"],
            &changed["consent_marketing"]
        ),
        (
            &json!("Ann Smith"),
            &json!("ann.smith@example.org"),
            &json!("+49 30 1234567"),
            &json!(true)
        )
    );
    // Absent fields stay; an empty phone removes it.
    let cleared = patch(prog.admin.clone(), json!({"phone": ""}))
        .await
        .expect(200);
    assert_eq!(
        (&cleared["name"], &cleared["phone"]),
        (&json!("Ann Smith"), &Value::Null)
    );
    patch(gym.token.clone(), json!({"email": "bob@example.org"}))
        .await
        .expect_problem(409, "email_taken");
    let invalid = patch(gym.token.clone(), json!({"email": "nope", "name": " "}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(invalid["errors"].as_array().unwrap().len(), 2);
    patch(gym.token.clone(), json!({"tier": "gold"}))
        .await
        .expect_problem(422, "validation_failed");
    // The shop sold to her (it may see her) but did not enrol her: not its to change.
    t.purchase(&shop, &card, "5.00", 0).await;
    patch(shop.token.clone(), json!({"name": "Mallory"}))
        .await
        .expect_problem(404, "not_found");
    let other = t.programme("Other").await;
    patch(other.admin.clone(), json!({"name": "Mallory"}))
        .await
        .expect_problem(404, "not_found");
    let unchanged = t.get(&path, &prog.admin).await.expect(200);
    assert_eq!(unchanged["name"], "Ann Smith");

    t.call(Method::DELETE, &path, Some(&prog.admin), None, None)
        .await
        .expect(204);
    patch(prog.admin.clone(), json!({"name": "Ann"}))
        .await
        .expect_problem(409, "member_erased");
}

#[tokio::test]
async fn a_members_cards_are_listed_masked_for_partners_that_do_not_manage_them() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let stranger = t.partner(&prog, "Stranger", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    let second = t
        .post("/v1/cards", &gym.token, json!({"member_id": member}))
        .await
        .expect(201)["number"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/members/{member}/cards");

    for token in [&gym.token, &prog.admin] {
        let listed = t.get(&path, token).await.expect(200);
        let numbers: Vec<&Value> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["number"])
            .collect();
        assert_eq!(numbers, vec![&json!(card), &json!(second)]);
        assert_eq!(listed["data"][0]["number_masked"], false);
        assert_eq!(listed["data"][0]["status"], "active");
        assert_eq!(listed["data"][0]["kind"], "registered");
    }
    t.get(&path, &shop.token)
        .await
        .expect_problem(404, "not_found");
    t.purchase(&shop, &card, "5.00", 0).await;
    let masked = t.get(&path, &shop.token).await.expect(200);
    let text = masked.to_string();
    assert!(!text.contains(&card) && !text.contains(&second), "{text}");
    assert_eq!(
        masked["data"][0]["number"],
        json!(format!("…{}", &card[12..]))
    );
    assert_eq!(masked["data"][0]["number_masked"], true);
    t.get(&path, &stranger.token)
        .await
        .expect_problem(404, "not_found");
    let page = t
        .get(&format!("{path}?limit=1"), &gym.token)
        .await
        .expect(200);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
}
