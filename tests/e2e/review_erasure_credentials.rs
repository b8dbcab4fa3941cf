//! What the review of erasure, API clients and odd bodies found: an erased member's
//! account came back to life through a replaced card, a refund, or a purchase, card
//! issue or registration racing the erasure; blocking a retired card was a 500; a second
//! rotation cut the secret the first promised to keep; array bodies and serde's Rust
//! names reached callers; phones had no length limit.

use crate::support::*;
use coalition_store::entities::{card, posting};
use reqwest::Method;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

async fn erase(t: &TestApp, prog: &Programme, member: &str) -> Resp {
    t.call(
        Method::DELETE,
        &format!("/v1/members/{member}"),
        Some(&prog.admin),
        None,
        None,
    )
    .await
}

/// The erased member's account holds nothing, by its row and by its postings, and no
/// card of hers may be used.
async fn assert_erased_for_good(t: &TestApp, member: &str) {
    let account = stored_account(&t.app.db, member).await;
    let posted: i64 = posting::Entity::find()
        .filter(posting::Column::AccountId.eq(account.id))
        .filter(posting::Column::AccountKind.eq("member"))
        .all(&t.app.db)
        .await
        .unwrap()
        .iter()
        .map(|p| p.amount)
        .sum();
    assert_eq!((account.balance, posted), (0, 0), "erased account {member}");
    let member_id: Uuid = member.parse().unwrap();
    let usable: Vec<String> = card::Entity::find()
        .filter(card::Column::MemberId.eq(member_id))
        .all(&t.app.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.status == "active" || c.status == "blocked")
        .map(|c| c.number)
        .collect();
    assert!(usable.is_empty(), "cards left usable: {usable:?}");
}

#[tokio::test]
async fn a_retired_card_can_be_neither_replaced_nor_blocked() {
    let t = spawn_app().await;
    let prog = t.programme("Retired").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "20.00", 0).await;
    erase(&t, &prog, &member).await.expect(204);
    for token in [&gym.token, &prog.admin] {
        t.post_moving(&format!("/v1/cards/{card}/replace"), token, json!({}))
            .await
            .expect_problem(409, "card_retired");
        t.post(&format!("/v1/cards/{card}/block"), token, json!({}))
            .await
            .expect_problem(409, "card_retired");
    }
    assert_erased_for_good(&t, &member).await;
}

#[tokio::test]
async fn a_refund_after_erasure_forfeits_what_it_gives_back() {
    let t = spawn_app().await;
    let prog = t.programme("Refund after erasure").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "125.00", 0).await;
    // A 10.00 bill, 1.00 of it paid with 100 points (0.01 a point).
    let paid_with_points = t.purchase(&gym, &card, "10.00", 100).await;
    erase(&t, &prog, &member).await.expect(204);
    let refund = t
        .post_moving(
            &format!(
                "/v1/purchases/{}/refunds",
                paid_with_points["id"].as_str().unwrap()
            ),
            &gym.token,
            json!({"amount": {"amount": "10.00", "currency": "EUR"}}),
        )
        .await
        .expect(201);
    assert_eq!(
        (&refund["points_returned"], &refund["balance"]),
        (&json!(100), &json!(0))
    );
    assert_eq!(t.points(&prog.admin, &member).await, 0);
    let history = t
        .get(&format!("/v1/members/{member}/transactions"), &prog.admin)
        .await
        .expect(200);
    assert!(history["data"].as_array().unwrap().len() >= 3);
    assert_erased_for_good(&t, &member).await;
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

#[tokio::test]
async fn purchases_card_issues_and_registrations_racing_an_erasure_leave_her_nothing() {
    let t = spawn_app().await;
    let prog = t.programme("Erasure races").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    for round in 0..8 {
        let (member, card) = t
            .member_with_card(&gym, &format!("m{round}@example.org"))
            .await;
        t.purchase(&gym, &card, "100.00", 0).await;
        let bearer = bearer_card(&t, &gym).await;
        t.purchase(&gym, &bearer, "30.00", 0).await;
        let purchase = json!({"card_number": card, "amount": {"amount": "50.00", "currency": "EUR"},
                              "external_ref": format!("race-{round}")});
        let (erased, bought, registered, issued) = tokio::join!(
            erase(&t, &prog, &member),
            t.post_moving("/v1/purchases", &gym.token, purchase),
            register(&t, &gym, &bearer, &member),
            t.post("/v1/cards", &gym.token, json!({"member_id": member})),
        );
        assert_eq!(erased.status, 204);
        // Each either finished before the erasure (and was swept up by it) or was
        // refused for it; none is a server error.
        for (what, r) in [
            ("purchase", &bought),
            ("registration", &registered),
            ("issue", &issued),
        ] {
            assert!(
                r.status.is_success() || r.status == 409,
                "{what}: {} {}",
                r.status,
                r.body
            );
        }
        assert_erased_for_good(&t, &member).await;
    }
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

#[tokio::test]
async fn one_rotation_overlap_runs_at_a_time_and_never_cuts_a_promised_secret() {
    let t = spawn_app().await;
    let prog = t.programme("Rotation").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let clients = t.get("/v1/clients", &prog.admin).await.expect(200);
    let id = clients["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == gym.client_id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/clients/{id}/rotate-secret");
    let rotate = |overlap: i64| t.post(&path, &prog.admin, json!({"overlap_seconds": overlap}));
    // Eight rotations at once: one wins, the others are told why; both secrets work.
    let answers = futures::future::join_all((0..8).map(|_| rotate(3600))).await;
    let won: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for refused in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(refused.code(), "rotation_in_progress", "{}", refused.body);
    }
    let second = won[0].body["client_secret"].as_str().unwrap().to_owned();
    t.token(&gym.client_id, &gym.client_secret).await;
    t.token(&gym.client_id, &second).await;
    // Again while the overlap runs: refused, and the first secret still works.
    rotate(600)
        .await
        .expect_problem(409, "rotation_in_progress");
    t.token(&gym.client_id, &gym.client_secret).await;
    // Cutting everything at once is always allowed.
    let cut = rotate(0).await.expect(200);
    let third = cut["client_secret"].as_str().unwrap();
    t.token(&gym.client_id, third).await;
    for dead in [&gym.client_secret, &second] {
        let status = reqwest::Client::new()
            .post(format!("{}/oauth/token", t.base))
            .basic_auth(&gym.client_id, Some(dead))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
}

#[tokio::test]
async fn bodies_must_be_objects_and_refusals_name_no_rust_types() {
    let t = spawn_app().await;
    let prog = t.programme("Bodies").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, _) = t.member_with_card(&gym, "ann@example.org").await;
    let member_path = format!("/v1/members/{member}");
    for body in [json!([]), json!(["Ann"]), json!("Ann"), json!(7)] {
        let refused = t
            .call(
                Method::PATCH,
                &member_path,
                Some(&gym.token),
                Some(body),
                None,
            )
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], "body", "{refused}");
    }
    let refused = t
        .call(
            Method::PATCH,
            &member_path,
            Some(&gym.token),
            Some(json!({"consent_marketing": 5})),
            None,
        )
        .await
        .expect_problem(422, "validation_failed");
    let said = refused.to_string();
    assert!(
        !said.contains("struct") && !said.contains("Request"),
        "{said}"
    );
    let clients = t.get("/v1/clients", &prog.admin).await.expect(200);
    let id = clients["data"][0]["id"].as_str().unwrap().to_owned();
    let refused = t
        .post(
            &format!("/v1/clients/{id}/rotate-secret"),
            &prog.admin,
            json!({"overlap_seconds": "5"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expected an integer"),
        "{refused}"
    );
    let long_phone = format!("+{}", "1".repeat(40));
    t.call(
        Method::PATCH,
        &member_path,
        Some(&gym.token),
        Some(json!({"phone": long_phone})),
        None,
    )
    .await
    .expect_problem(422, "validation_failed");
}
