//! The whole story: earn at the gym, spend at the sports shop and the diet store,
//! refund at the gym; bearer cards, blocking and replacing.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn earn_at_one_partner_spend_at_another_refund_at_the_first() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Sports Shop", "2").await;
    let diet = t.partner(&prog, "Diet Store", "0.5").await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;

    let at_gym = t.purchase(&gym, &card, "200.00", 0).await;
    assert_eq!(
        (at_gym["points_earned"].as_i64(), at_gym["balance"].as_i64()),
        (Some(200), Some(200))
    );
    assert_eq!(at_gym["breakdown"][0]["rule"], "base_rate");
    assert_eq!(at_gym["breakdown"][0]["points"], 200);

    // Paying part with points at the sports shop: 150 points are worth 1.50, and only the
    // remaining 48.50 earns (2 points per EUR).
    let at_shop = t.purchase(&shop, &card, "50.00", 150).await;
    assert_eq!(
        at_shop["discount"],
        json!({"amount": "1.50", "currency": "EUR"})
    );
    assert_eq!(at_shop["payable"]["amount"], "48.50");
    assert_eq!(
        (
            at_shop["points_redeemed"].as_i64(),
            at_shop["points_earned"].as_i64()
        ),
        (Some(150), Some(97))
    );
    assert_eq!(at_shop["balance"], 147);

    // A quote at the diet store moves nothing and predicts the purchase exactly.
    let ask = json!({"card_number": card, "amount": {"amount": "30.00", "currency": "EUR"}, "external_ref": "d-1", "redeem_points": 47});
    let quote = t
        .post("/v1/purchases/quote", &diet.token, ask.clone())
        .await
        .expect(200);
    assert_eq!(t.points(&gym.token, &ann).await, 147);
    let at_diet = t
        .post_moving("/v1/purchases", &diet.token, ask)
        .await
        .expect(201);
    for field in [
        "discount",
        "payable",
        "points_earned",
        "points_redeemed",
        "balance",
        "breakdown",
    ] {
        assert_eq!(quote[field], at_diet[field], "{field}");
    }
    assert_eq!(at_diet["balance"], 114);

    // Refunds at the gym claw back proportionally; the second one finds the points spent:
    // the balance stops at zero and the shortfall is recorded, never new points.
    let p1 = at_gym["id"].as_str().unwrap();
    let half = t
        .post_moving(
            &format!("/v1/purchases/{p1}/refunds"),
            &gym.token,
            json!({"amount": {"amount": "100.00", "currency": "EUR"}}),
        )
        .await;
    assert!(half.headers.get("location").is_some());
    let half = half.expect(201);
    assert_eq!(
        (
            half["points_clawed_back"].as_i64(),
            half["points_shortfall"].as_i64(),
            half["balance"].as_i64()
        ),
        (Some(100), Some(0), Some(14))
    );
    let rest = t
        .post_moving(
            &format!("/v1/purchases/{p1}/refunds"),
            &gym.token,
            json!({"amount": {"amount": "100.00", "currency": "EUR"}}),
        )
        .await
        .expect(201);
    assert_eq!(
        (
            rest["points_clawed_back"].as_i64(),
            rest["points_shortfall"].as_i64(),
            rest["balance"].as_i64()
        ),
        (Some(14), Some(86), Some(0))
    );
    t.post_moving(
        &format!("/v1/purchases/{p1}/refunds"),
        &gym.token,
        json!({"amount": {"amount": "0.01", "currency": "EUR"}}),
    )
    .await
    .expect_problem(409, "refund_exceeds_remaining");
    // Only the partner that recorded a purchase can refund it.
    t.post_moving(
        &format!("/v1/purchases/{p1}/refunds"),
        &shop.token,
        json!({"amount": {"amount": "1.00", "currency": "EUR"}}),
    )
    .await
    .expect_problem(404, "not_found");
    let detail = t
        .get(&format!("/v1/purchases/{p1}"), &gym.token)
        .await
        .expect(200);
    assert_eq!(
        (
            detail["refunded"]["amount"].as_str(),
            detail["refunds"].as_array().unwrap().len()
        ),
        (Some("200.00"), 2)
    );

    // Refunding the sports shop purchase gives back the spent points proportionally.
    let p2 = at_shop["id"].as_str().unwrap();
    let back = t
        .post_moving(
            &format!("/v1/purchases/{p2}/refunds"),
            &shop.token,
            json!({"amount": {"amount": "50.00", "currency": "EUR"}}),
        )
        .await
        .expect(201);
    assert_eq!(
        (
            back["points_returned"].as_i64(),
            back["points_clawed_back"].as_i64()
        ),
        (Some(150), Some(97))
    );
    assert_eq!(
        t.points(&gym.token, &ann).await,
        150 - 97,
        "the balance was zero before this refund"
    );

    // History: newest first, each line with its reason; pages chain to the full list.
    let mut seen = Vec::new();
    let mut lines_by_partner = Vec::new();
    let mut path = format!("/v1/members/{ann}/transactions?limit=3");
    loop {
        let page = t.get(&path, &prog.admin).await.expect(200);
        for item in page["data"].as_array().unwrap() {
            assert!(!item["reason"].as_str().unwrap().is_empty());
            seen.push((
                item["kind"].as_str().unwrap().to_owned(),
                item["points"].as_i64().unwrap(),
            ));
            lines_by_partner.push((item["partner_id"].clone(), item["entry_id"].clone()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/members/{ann}/transactions?limit=3&cursor={c}"),
            None => break,
        }
    }
    let expected = [
        ("clawed_back", -97),
        ("returned", 150),
        ("clawed_back", -14),
        ("clawed_back", -100),
        ("earned", 14),
        ("redeemed", -47),
        ("earned", 97),
        ("redeemed", -150),
        ("earned", 200),
    ];
    let expected: Vec<(String, i64)> = expected.iter().map(|(k, p)| (k.to_string(), *p)).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        seen.iter().map(|(_, p)| p).sum::<i64>(),
        t.points(&gym.token, &ann).await
    );
    // A partner's view holds only its own purchases and refunds.
    for partner in [&gym, &shop] {
        let own = t
            .get(&format!("/v1/members/{ann}/transactions"), &partner.token)
            .await
            .expect(200);
        let own: Vec<_> = own["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["partner_id"].clone(), i["entry_id"].clone()))
            .collect();
        let expected: Vec<_> = lines_by_partner
            .iter()
            .filter(|(p, _)| p.as_str() == Some(partner.id.to_string().as_str()))
            .cloned()
            .collect();
        assert!(!own.is_empty());
        assert_eq!(own, expected);
    }
}

#[tokio::test]
async fn bearer_cards_register_later_and_cards_block_and_replace() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (ann, ann_card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &ann_card, "10.00", 0).await;

    let bearer = t.post("/v1/cards", &gym.token, json!({})).await.expect(201);
    assert_eq!(
        (bearer["kind"].as_str(), bearer["member_id"].as_str()),
        (Some("bearer"), None)
    );
    let bearer = bearer["number"].as_str().unwrap().to_owned();
    assert_eq!(t.purchase(&gym, &bearer, "55.00", 0).await["balance"], 55);

    let registered = t
        .post_moving(
            &format!("/v1/cards/{bearer}/register"),
            &gym.token,
            json!({"member_id": ann}),
        )
        .await
        .expect(200);
    assert_eq!(
        (
            registered["points_moved"].as_i64(),
            registered["balance"].as_i64()
        ),
        (Some(55), Some(65))
    );
    assert_eq!(registered["card"]["member_id"], ann.as_str());
    t.post_moving(
        &format!("/v1/cards/{bearer}/register"),
        &gym.token,
        json!({"member_id": ann}),
    )
    .await
    .expect_problem(409, "card_already_registered");
    // Either card now spends from the one balance.
    assert_eq!(t.purchase(&gym, &bearer, "1.00", 60).await["balance"], 5);

    let blocked = t
        .post(
            &format!("/v1/cards/{ann_card}/block"),
            &gym.token,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(blocked["status"], "blocked");
    let spend = json!({"card_number": ann_card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": "b-1"});
    t.post_moving("/v1/purchases", &gym.token, spend)
        .await
        .expect_problem(409, "card_blocked");

    let replaced = t
        .post_moving(
            &format!("/v1/cards/{ann_card}/replace"),
            &gym.token,
            json!({}),
        )
        .await;
    assert!(replaced.headers.get("location").is_some());
    let new_card = replaced.expect(201)["number"].as_str().unwrap().to_owned();
    let old = t
        .get(&format!("/v1/cards/{ann_card}"), &gym.token)
        .await
        .expect(200);
    assert_eq!(old["status"], "replaced");
    assert!(
        !old.to_string().contains(&new_card),
        "the old card never names the new one: {old}"
    );
    let spend_old = json!({"card_number": ann_card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": "b-2"});
    let refused = t
        .post_moving("/v1/purchases", &gym.token, spend_old)
        .await
        .expect_problem(409, "card_replaced");
    assert!(!refused.to_string().contains(&new_card), "{refused}");
    assert_eq!(
        t.purchase(&gym, &new_card, "1.00", 5).await["balance"],
        0,
        "the new card carries the balance"
    );

    // Erasure keeps the numbers, drops the personal data.
    t.call(
        reqwest::Method::DELETE,
        &format!("/v1/members/{ann}"),
        Some(&prog.admin),
        None,
        None,
    )
    .await
    .expect(204);
    let erased = t
        .get(&format!("/v1/members/{ann}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(
        (
            erased["name"].as_str(),
            erased["email"].as_str(),
            erased["erased"].as_bool()
        ),
        (None, None, Some(true))
    );
    assert_eq!(erased["points"], 0);
}
