//! Privacy: erasure retires the member's cards and forfeits her points with a journal
//! entry; contact data of a member who did not consent to sharing stays with the
//! partner that enrolled her.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn erasure_retires_the_cards_voids_holds_and_forfeits_the_points_to_breakage() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    let (_, other_card) = t.member_with_card(&gym, "bob@example.org").await;
    t.purchase(&gym, &card, "50.00", 0).await;
    t.purchase(&gym, &other_card, "30.00", 0).await;
    let held = t
        .post_moving(
            "/v1/redemptions",
            &gym.token,
            json!({"card_number": card, "points": 20}),
        )
        .await
        .expect(201);
    assert_eq!(t.points(&prog.admin, &member).await, 50);

    let member_path = format!("/v1/members/{member}");
    let erase = || t.call(Method::DELETE, &member_path, Some(&prog.admin), None, None);
    erase().await.expect(204);

    let body = json!({"card_number": card, "amount": {"amount": "10.00", "currency": "EUR"}, "external_ref": "after", "redeem_points": 0});
    t.post_moving("/v1/purchases", &gym.token, body)
        .await
        .expect_problem(409, "card_retired");
    t.post_moving(
        "/v1/redemptions",
        &gym.token,
        json!({"card_number": card, "points": 1}),
    )
    .await
    .expect_problem(409, "card_retired");
    t.get(&format!("/v1/cards/{card}/balance"), &gym.token)
        .await
        .expect_problem(409, "card_retired");
    t.post_moving(
        &format!("/v1/redemptions/{}/capture", held["id"].as_str().unwrap()),
        &gym.token,
        json!({}),
    )
    .await
    .expect_problem(409, "hold_not_held");
    t.call(
        Method::POST,
        &format!("/v1/cards/{card}/unblock"),
        Some(&prog.admin),
        None,
        None,
    )
    .await
    .expect_problem(409, "card_retired");

    let erased = t
        .get(&format!("/v1/members/{member}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(
        (
            &erased["erased"],
            &erased["name"],
            &erased["email"],
            &erased["points"]
        ),
        (&json!(true), &Value::Null, &Value::Null, &json!(0))
    );
    let cards = t
        .get(&format!("/v1/members/{member}/cards"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(cards["data"][0]["status"], "retired");
    let history = t
        .get(&format!("/v1/members/{member}/transactions"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(history["data"][0]["kind"], "forfeited");
    assert_eq!(history["data"][0]["points"], -50);
    assert_eq!(
        crate::expiry::breakage(&t.app.db, prog.id).await,
        50,
        "her points went to the operator's breakage, nothing else did"
    );
    assert_accounts_consistent(&t.app.db, prog.id).await;
    // Erasing again changes nothing; the other member keeps her points.
    erase().await.expect(204);
    assert_eq!(crate::expiry::breakage(&t.app.db, prog.id).await, 50);
    t.purchase(&gym, &other_card, "10.00", 0).await;
}

#[tokio::test]
async fn contact_data_without_consent_stays_with_the_enrolling_partner() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let enrolled = t
        .post(
            "/v1/members",
            &gym.token,
            json!({"name": "Ann", "email": "ann@example.org", "phone": "+49 30 1234567", "consent_data_sharing": false}),
        )
        .await
        .expect(201);
    let member = enrolled["id"].as_str().unwrap().to_owned();
    let card = t
        .post("/v1/cards", &gym.token, json!({"member_id": member}))
        .await
        .expect(201)["number"]
        .as_str()
        .unwrap()
        .to_owned();
    t.purchase(&shop, &card, "5.00", 0).await;
    let path = format!("/v1/members/{member}");

    let contact = |v: &Value| (v["name"].clone(), v["email"].clone(), v["phone"].clone());
    let full = (
        json!("Ann"),
        json!("ann@example.org"),
        json!("+49 30 1234567"),
    );
    let none = (Value::Null, Value::Null, Value::Null);
    assert_eq!(contact(&t.get(&path, &gym.token).await.expect(200)), full);
    assert_eq!(contact(&t.get(&path, &prog.admin).await.expect(200)), full);
    let seen_by_shop = t.get(&path, &shop.token).await.expect(200);
    assert_eq!(contact(&seen_by_shop), none);
    assert_eq!(
        seen_by_shop["points"], 5,
        "the shop still sees what it needs"
    );

    // She agrees to sharing: the shop sees her contact data.
    t.call(
        Method::PATCH,
        &path,
        Some(&gym.token),
        Some(json!({"consent_data_sharing": true})),
        None,
    )
    .await
    .expect(200);
    assert_eq!(contact(&t.get(&path, &shop.token).await.expect(200)), full);
    // And withdraws it again.
    t.call(
        Method::PATCH,
        &path,
        Some(&prog.admin),
        Some(json!({"consent_data_sharing": false})),
        None,
    )
    .await
    .expect(200);
    assert_eq!(contact(&t.get(&path, &shop.token).await.expect(200)), none);
}

/// Purchases on her card while she is erased: each is recorded or refused as retired,
/// and every point earned is either still on her account or in the breakage — none is
/// created or lost, and the ledger stays consistent.
#[tokio::test]
async fn purchases_racing_an_erasure_neither_create_nor_lose_points() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "40.00", 0).await;
    let member_path = format!("/v1/members/{member}");
    let purchases = (0..8).map(|n| {
        let body = json!({"card_number": card, "amount": {"amount": "10.00", "currency": "EUR"}, "external_ref": format!("race-{n}"), "redeem_points": 0});
        let (t, gym) = (&t, &gym);
        async move { t.post_moving("/v1/purchases", &gym.token, body).await }
    });
    let erasure = t.call(Method::DELETE, &member_path, Some(&prog.admin), None, None);
    let (answers, erased) = tokio::join!(futures::future::join_all(purchases), erasure);
    erased.expect(204);
    let mut earned = 40;
    for answer in answers {
        match answer.status.as_u16() {
            201 => earned += answer.body["points_earned"].as_i64().unwrap(),
            _ => {
                answer.expect_problem(409, "card_retired");
            }
        }
    }
    let left = stored_account(&t.app.db, &member).await.balance;
    let forfeited = crate::expiry::breakage(&t.app.db, prog.id).await;
    assert_eq!(
        left + forfeited,
        earned,
        "left {left}, forfeited {forfeited}"
    );
    assert_accounts_consistent(&t.app.db, prog.id).await;
}
