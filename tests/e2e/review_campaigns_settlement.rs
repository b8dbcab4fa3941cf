//! What the review of campaigns and settlement found: treated members' purchases and
//! hold captures deadlocked (500) on PostgreSQL (purchases locked the campaign, then the
//! account; captures the other way round); postings committed after their period
//! was settled were never settled; a refund after a price change was priced at the new
//! price; a leap second made a period of no length and then a 500; partners saw the
//! whole programme's posting count.

use crate::settlement::{dec, line, settle};
use crate::support::*;
use chrono::{Duration, Utc};
use coalition_store::entities::posting;
use reqwest::Method;
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

#[tokio::test]
async fn treated_members_buying_and_capturing_at_once_never_deadlock() {
    let t = spawn_app().await;
    let prog = t.programme("Deadlock").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let mut members = vec![];
    for i in 0..6 {
        let (member, card) = t.member_with_card(&gym, &format!("d{i}@example.org")).await;
        t.purchase(&gym, &card, "50.00", 0).await;
        members.push((member, card));
    }
    let ids: Vec<&String> = members.iter().map(|(m, _)| m).collect();
    t.post(
        "/v1/campaigns",
        &prog.admin,
        json!({"name": "Everyone", "segment": {"kind": "members", "member_ids": ids},
               "reward": {"kind": "bonus", "value": "1"}, "funder": {"kind": "operator"},
               "budget_points": 100000, "ends_at": (Utc::now() + Duration::days(1)).to_rfc3339()}),
    )
    .await
    .expect(201);
    for round in 0..4 {
        let mut calls = vec![];
        for (i, (_, card)) in members.iter().enumerate() {
            let hold = t
                .post_moving(
                    "/v1/redemptions",
                    &gym.token,
                    json!({"card_number": card, "points": 1}),
                )
                .await
                .expect(201);
            let capture_path = format!("/v1/redemptions/{}/capture", hold["id"].as_str().unwrap());
            let capture_body = json!({"purchase": {"amount": {"amount": "3.00", "currency": "EUR"},
                                                   "external_ref": format!("cap-{round}-{i}")}});
            let shop_body = json!({"card_number": card, "amount": {"amount": "2.00", "currency": "EUR"},
                                   "external_ref": format!("shop-{round}-{i}")});
            let gym_body = json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"},
                                  "external_ref": format!("gym-{round}-{i}")});
            let (t, gym, shop) = (&t, &gym, &shop);
            calls.push(async move {
                tokio::join!(
                    t.post_moving(&capture_path, &gym.token, capture_body),
                    t.post_moving("/v1/purchases", &shop.token, shop_body),
                    t.post_moving("/v1/purchases", &gym.token, gym_body),
                )
            });
        }
        for (capture, at_shop, at_gym) in futures::future::join_all(calls).await {
            for r in [capture, at_shop, at_gym] {
                assert!(r.status.is_success(), "{} {}", r.status, r.body);
            }
        }
    }
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

#[tokio::test]
async fn a_refund_reverses_at_the_prices_of_the_purchase_it_refunds() {
    let t = spawn_app().await;
    let start = Utc::now() - Duration::seconds(1);
    let prog = t.programme("Reversal prices").await;
    let shop = t.partner(&prog, "Shop", "100").await;
    let (_, card) = t.member_with_card(&shop, "ann@example.org").await;
    let partner_path = format!("/v1/partners/{}", shop.id);
    let patch_prices = |issue: &str| {
        t.call(
            Method::PATCH,
            &partner_path,
            Some(&prog.admin),
            Some(json!({"issue_price_per_point": issue})),
            None,
        )
    };
    patch_prices("0.01").await.expect(200);
    let bought = t.purchase(&shop, &card, "30.00", 0).await;
    assert_eq!(bought["points_earned"], 3000);
    let middle = Utc::now();
    let first = settle(&t, &prog.admin, start, middle).await.expect(201);
    assert_eq!(
        dec(&line(&first, &shop)["amount_due"]["amount"]),
        Decimal::new(3000, 2)
    );

    patch_prices("0.05").await.expect(200);
    t.post_moving(
        &format!("/v1/purchases/{}/refunds", bought["id"].as_str().unwrap()),
        &shop.token,
        json!({"amount": {"amount": "30.00", "currency": "EUR"}}),
    )
    .await
    .expect(201);
    let second = settle(&t, &prog.admin, middle, Utc::now())
        .await
        .expect(201);
    let reversal = line(&second, &shop);
    assert_eq!(reversal["points_issued"], -3000);
    // Priced at 0.01, as charged: across both periods the refunded purchase cost 0.
    assert_eq!(
        dec(&reversal["amount_due"]["amount"]),
        Decimal::new(-3000, 2)
    );
    let postings = t
        .get(
            &format!(
                "/v1/settlements/{}/postings?partner_id={}",
                second["id"].as_str().unwrap(),
                shop.id
            ),
            &prog.admin,
        )
        .await
        .expect(200);
    let issued = postings["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["account_kind"] == "partner_issued")
        .unwrap();
    assert_eq!(
        (&issued["entry_kind"], &issued["price_per_point"]),
        (&json!("refund"), &json!("0.01"))
    );
    assert!(issued["priced_at"].as_str().unwrap() < issued["created_at"].as_str().unwrap());
}

#[tokio::test]
async fn leap_seconds_are_refused_and_partners_see_no_programme_totals() {
    let t = spawn_app().await;
    let prog = t.programme("Leap").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let leap = t
        .post(
            "/v1/settlements",
            &prog.admin,
            json!({"period_start": "2016-12-31T23:59:60Z", "period_end": "2017-01-01T00:00:00Z"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(leap["errors"][0]["field"], "period_start");
    let refused = t
        .post(
            "/v1/campaigns",
            &prog.admin,
            json!({"name": "Leap", "segment": {"kind": "members", "member_ids": [uuid::Uuid::new_v4()]},
                   "reward": {"kind": "bonus", "value": "1"}, "funder": {"kind": "operator"},
                   "budget_points": 10, "ends_at": "2030-06-30T23:59:60Z"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert!(
        refused["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "ends_at"),
        "{refused}"
    );
    // The period right after the refused one settles (it used to be a 500).
    let (_, card) = t.member_with_card(&gym, "ann@example.org").await;
    let start = Utc::now();
    t.purchase(&gym, &card, "10.00", 0).await;
    let settled = settle(&t, &prog.admin, start, Utc::now()).await.expect(201);
    assert!(settled["postings"].as_i64().unwrap() > 0);
    let seen = t
        .get(
            &format!("/v1/settlements/{}", settled["id"].as_str().unwrap()),
            &gym.token,
        )
        .await
        .expect(200);
    assert_eq!(seen["postings"], Value::Null, "{seen}");
    assert_eq!(seen["lines"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn settling_up_to_now_while_purchases_run_leaves_no_posting_unsettled() {
    let t = spawn_app().await;
    let prog = t.programme("Late postings").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let mut cards = vec![];
    for i in 0..4 {
        cards.push(
            t.member_with_card(&shop, &format!("l{i}@example.org"))
                .await
                .1,
        );
    }
    let first_start = Utc::now() - Duration::seconds(1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (t_ref, stop_ref, shop_ref) = (&*t, &stop, &shop);
    let buyers = futures::future::join_all(cards.iter().map(|card| async move {
        let mut bought = 0;
        while !stop_ref.load(std::sync::atomic::Ordering::Relaxed) {
            let body = json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"},
                              "external_ref": uuid::Uuid::new_v4().to_string()});
            t_ref
                .post_moving("/v1/purchases", &shop_ref.token, body)
                .await
                .expect(201);
            bought += 1;
        }
        bought
    }));
    let settler = async {
        let (mut start, mut issued) = (first_start, 0i64);
        for _ in 0..25 {
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            let end = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
            let s = settle(&t, &prog.admin, start, end).await.expect(201);
            issued += s["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["points_issued"].as_i64().unwrap())
                .sum::<i64>();
            start = end;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (start, issued)
    };
    let (bought, (last_end, settled_issued)) = tokio::join!(buyers, settler);
    assert!(bought.iter().sum::<i32>() > 0);
    let posted_before_end: i64 = posting::Entity::find()
        .filter(posting::Column::ProgrammeId.eq(prog.id))
        .filter(posting::Column::AccountKind.eq("partner_issued"))
        .filter(posting::Column::CreatedAt.lt(last_end))
        .all(&t.app.db)
        .await
        .unwrap()
        .iter()
        .map(|p| -p.amount)
        .sum();
    assert_eq!(settled_issued, posted_before_end);
}
