//! Two programmes on one deployment: every id of the other programme is a 404, and a
//! partner sees only the members and purchases it may see.

use crate::support::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn another_programmes_ids_answer_not_found_and_leak_nothing() {
    let t = spawn_app().await;
    let a = t.programme("A").await;
    let b = t.programme("B").await;
    let a_gym = t.partner(&a, "A Gym", "1").await;
    let b_gym = t.partner(&b, "B Gym", "1").await;
    let (a_member, a_card) = t.member_with_card(&a_gym, "ann@example.org").await;
    let a_purchase = t.purchase(&a_gym, &a_card, "20.00", 0).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same email may be enrolled in another programme.
    t.member_with_card(&b_gym, "ann@example.org").await;

    for token in [&b.admin, &b_gym.token] {
        for path in [
            format!("/v1/partners/{}", a_gym.id),
            format!("/v1/members/{a_member}"),
            format!("/v1/members/{a_member}/balance"),
            format!("/v1/members/{a_member}/transactions"),
            format!("/v1/cards/{a_card}"),
            format!("/v1/purchases/{a_purchase}"),
        ] {
            t.get(&path, token).await.expect_problem(404, "not_found");
        }
        t.post("/v1/cards", token, json!({"member_id": a_member}))
            .await
            .expect_problem(404, "not_found");
        t.post(&format!("/v1/cards/{a_card}/block"), token, json!({}))
            .await
            .expect_problem(404, "not_found");
        t.post_moving(&format!("/v1/cards/{a_card}/replace"), token, json!({}))
            .await
            .expect_problem(404, "not_found");
    }
    t.post(
        "/v1/clients",
        &b.admin,
        json!({"name": "x", "partner_id": a_gym.id}),
    )
    .await
    .expect_problem(404, "not_found");
    t.call(
        Method::DELETE,
        &format!("/v1/members/{a_member}"),
        Some(&b.admin),
        None,
        None,
    )
    .await
    .expect_problem(404, "not_found");
    let buy = json!({"card_number": a_card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": "x-1"});
    t.post_moving("/v1/purchases", &b_gym.token, buy)
        .await
        .expect_problem(404, "not_found");
    t.post_moving(
        &format!("/v1/purchases/{a_purchase}/refunds"),
        &b_gym.token,
        json!({"amount": {"amount": "5.00", "currency": "EUR"}}),
    )
    .await
    .expect_problem(404, "not_found");
    let b_list = t.get("/v1/partners", &b.admin).await.expect(200);
    assert_eq!(
        b_list["data"].as_array().unwrap().len(),
        1,
        "B sees only its own partner"
    );

    // Within programme A, a second partner does not see Ann until she buys there.
    let a_shop = t.partner(&a, "A Shop", "1").await;
    t.get(&format!("/v1/members/{a_member}/balance"), &a_shop.token)
        .await
        .expect_problem(404, "not_found");
    t.get(&format!("/v1/purchases/{a_purchase}"), &a_shop.token)
        .await
        .expect_problem(404, "not_found");
    t.purchase(&a_shop, &a_card, "1.00", 0).await;
    assert_eq!(t.points(&a_shop.token, &a_member).await, 21);
    // Nothing of A moved through all of this.
    assert_eq!(t.points(&a.admin, &a_member).await, 21);
}
