//! Campaign results end to end: treatment against holdout with a Welch interval, the
//! points' cost at the funder's price, the verdict, the after-window; refusals.
//!
//! The groups come from a hash of campaign and member ids, so each test makes campaigns
//! over eight members until one splits them four and four (ending the others), then
//! reads each member's group from the API: the figures are then fixed and checked by hand.

use crate::support::*;
use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn in_days(days: i64) -> String {
    (Utc::now() + Duration::days(days)).to_rfc3339()
}

/// The member ids of one group, through the API (eight members fit on a page).
async fn group(t: &Client, admin: &str, id: &str, group: &str) -> Vec<String> {
    let page = t
        .get(
            &format!("/v1/campaigns/{id}/members?group={group}&limit=100"),
            admin,
        )
        .await
        .expect(200);
    assert!(page["next_cursor"].is_null());
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates the campaign (50 % holdout) until its members split four and four; the
/// campaigns that did not are ended (they reward nothing more). (campaign, treatment,
/// control).
async fn four_and_four(t: &Client, admin: &str, body: Value) -> (Value, Vec<String>, Vec<String>) {
    for _ in 0..60 {
        let c = t
            .post("/v1/campaigns", admin, body.clone())
            .await
            .expect(201);
        let id = c["id"].as_str().unwrap().to_owned();
        let treatment = group(t, admin, &id, "treatment").await;
        let control = group(t, admin, &id, "control").await;
        assert_eq!(treatment.len() + control.len(), 8);
        if treatment.len() == 4 {
            return (c, treatment, control);
        }
        t.post(&format!("/v1/campaigns/{id}/end"), admin, json!({}))
            .await
            .expect(200);
    }
    panic!("no four-and-four split in 60 campaigns");
}

async fn eight_members(t: &Client, at: &Partner, tag: &str) -> BTreeMap<String, String> {
    let mut cards = BTreeMap::new();
    for i in 0..8 {
        let (id, card) = t
            .member_with_card(at, &format!("{tag}{i}@example.org"))
            .await;
        cards.insert(id, card);
    }
    cards
}

fn amount(v: &Value) -> &str {
    v["amount"]
        .as_str()
        .unwrap_or_else(|| panic!("no amount in {v}"))
}

#[tokio::test]
async fn treated_members_who_buy_more_make_a_gain_and_the_after_window_shows_it_faded() {
    let t = spawn_app().await;
    let prog = t.programme("Results gain").await; // a point is worth 0.01
    let shop = t.partner(&prog, "Shop", "1").await;
    let cafe = t.partner(&prog, "Cafe", "1").await;
    let cards = eight_members(&t, &shop, "gain").await;
    // Before the campaign: outside its window.
    for card in cards.values() {
        t.purchase(&shop, card, "500.00", 0).await;
    }
    let ids: Vec<&String> = cards.keys().collect();
    let body = json!({
        "name": "Spring", "segment": {"kind": "members", "member_ids": ids},
        "reward": {"kind": "bonus", "value": "10"}, "funder": {"kind": "operator"},
        "budget_points": 100000, "ends_at": in_days(30), "holdout_percent": 50,
    });
    let (c, treated, control) = four_and_four(&t, &prog.admin, body).await;
    let id = c["id"].as_str().unwrap();
    // Treatment: 100 (60 at the shop, 40 at the cafe: revenue anywhere counts), 120,
    // 140, and 200 of which 40 refunded (160). Each purchase gets the bonus of 10.
    let card = |m: &String| cards[m].as_str();
    t.purchase(&shop, card(&treated[0]), "60.00", 0).await;
    t.purchase(&cafe, card(&treated[0]), "40.00", 0).await;
    t.purchase(&shop, card(&treated[1]), "120.00", 0).await;
    t.purchase(&shop, card(&treated[2]), "140.00", 0).await;
    let big = t.purchase(&shop, card(&treated[3]), "200.00", 0).await;
    t.post_moving(
        &format!("/v1/purchases/{}/refunds", big["id"].as_str().unwrap()),
        &shop.token,
        json!({"amount": {"amount": "40.00", "currency": "EUR"}}),
    )
    .await
    .expect(201);
    // Control: 40, 60, 80, 100.
    for (m, a) in control.iter().zip(["40.00", "60.00", "80.00", "100.00"]) {
        t.purchase(&shop, card(m), a, 0).await;
    }

    let path = format!("/v1/campaigns/{id}/results");
    let r = t.get(&path, &prog.admin).await.expect(200);
    assert_eq!(r["campaign_id"], id);
    assert_eq!(r["status"], "running");
    assert_eq!(r["revenue_at"], "programme");
    assert_eq!(r["window"]["from"], c["starts_at"]);
    assert_eq!(
        (&r["treatment"]["members"], &r["treatment"]["buyers"]),
        (&json!(4), &json!(4))
    );
    assert_eq!(amount(&r["treatment"]["revenue_per_member"]), "130.00");
    assert_eq!(
        (&r["control"]["members"], &r["control"]["buyers"]),
        (&json!(4), &json!(4))
    );
    assert_eq!(amount(&r["control"]["revenue_per_member"]), "70.00");
    // By hand: Σd² = 2000 in both groups (s² = 666.67), se = √(2 · 666.67 / 4) =
    // 18.257419, ν = 6, t(0.975, 6) = 2.446912: 60 ± 44.674294.
    let u = &r["uplift_per_member"];
    assert_eq!(
        (
            amount(&u["estimate"]),
            amount(&u["ci_low"]),
            amount(&u["ci_high"])
        ),
        ("60.00", "15.33", "104.67")
    );
    assert!((u["degrees_of_freedom"].as_f64().unwrap() - 6.0).abs() < 1e-9);
    assert_eq!(u["estimate"]["currency"], "EUR");
    assert_eq!(amount(&r["incremental_revenue"]), "240.00");
    // Five treated purchases × 10 points, at the operator's 0.01 a point.
    assert_eq!(r["points_given"], 50);
    assert_eq!(amount(&r["points_cost"]), "0.50");
    assert_eq!(amount(&r["net_effect"]), "239.50");
    // 4 × 15.325706 − 0.50 and 4 × 104.674294 − 0.50.
    assert_eq!(amount(&r["net_effect_ci_low"]), "60.80");
    assert_eq!(amount(&r["net_effect_ci_high"]), "418.20");
    assert_eq!(r["verdict"], "gain");
    assert!(r["after"].is_null());
    // While the campaign runs, an after-window has nothing to show yet.
    let early = t
        .get(&format!("{path}?after_days=7"), &prog.admin)
        .await
        .expect(200);
    assert!(early["after"].is_null());

    // The campaign ends; afterwards everybody buys 50.00: the effect is gone.
    let ended = t
        .post(&format!("/v1/campaigns/{id}/end"), &prog.admin, json!({}))
        .await
        .expect(200);
    for m in treated.iter().chain(&control) {
        t.purchase(&shop, card(m), "50.00", 0).await;
    }
    let r = t
        .get(&format!("{path}?after_days=7"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(r["status"], "ended");
    assert_eq!(r["window"]["to"], ended["ends_at"]);
    assert_eq!(amount(&r["treatment"]["revenue_per_member"]), "130.00");
    assert_eq!(amount(&r["uplift_per_member"]["estimate"]), "60.00");
    assert_eq!(r["points_given"], 50);
    assert_eq!(r["verdict"], "gain");
    let a = &r["after"];
    assert_eq!(a["window"]["from"], ended["ends_at"]);
    assert_eq!(amount(&a["treatment"]["revenue_per_member"]), "50.00");
    assert_eq!(amount(&a["control"]["revenue_per_member"]), "50.00");
    assert_eq!(a["treatment"]["buyers"], 4);
    // No spread at all: the interval is the estimate.
    let u = &a["uplift_per_member"];
    assert_eq!(
        (
            amount(&u["estimate"]),
            amount(&u["ci_low"]),
            amount(&u["ci_high"])
        ),
        ("0.00", "0.00", "0.00")
    );
    assert!(u["degrees_of_freedom"].is_null());
    assert_eq!(a["points_given"], 0);
    assert_eq!(amount(&a["points_cost"]), "0.00");
    assert_eq!(amount(&a["net_effect"]), "0.00");
    assert_eq!(a["verdict"], "inconclusive");
}

#[tokio::test]
async fn a_campaign_that_only_gives_points_away_is_a_loss() {
    let t = spawn_app().await;
    let prog = t.programme("Results loss").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let diet = t.partner(&prog, "Diet store", "1").await; // issues points at 0.012
    let cards = eight_members(&t, &shop, "loss").await;
    let ids: Vec<&String> = cards.keys().collect();
    let body = json!({
        "name": "Giveaway", "segment": {"kind": "members", "member_ids": ids},
        "reward": {"kind": "bonus", "value": "5000", "partner_ids": [diet.id]},
        "funder": {"kind": "partner", "partner_id": diet.id},
        "budget_points": 1000000, "ends_at": in_days(30), "holdout_percent": 50,
    });
    let (c, treated, control) = four_and_four(&t, &prog.admin, body).await;
    let id = c["id"].as_str().unwrap();
    let card = |m: &String| cards[m].as_str();
    // Both groups buy 40, 50, 60, 70 at the diet store, and 1000 at the shop, which
    // does not count: the reward is the diet store's only. After the first two treated
    // purchases the diet store's issue price goes from 0.012 to 0.018 a point.
    for group in [&treated, &control] {
        for (i, (m, a)) in group
            .iter()
            .zip(["40.00", "50.00", "60.00", "70.00"])
            .enumerate()
        {
            if group == &treated && i == 2 {
                t.call(
                    Method::PATCH,
                    &format!("/v1/partners/{}", diet.id),
                    Some(&prog.admin),
                    Some(json!({"issue_price_per_point": "0.018"})),
                    None,
                )
                .await
                .expect(200);
            }
            let bought = t.purchase(&diet, card(m), a, 0).await;
            let bonus = if group == &treated { 5000 } else { 0 };
            let base: i64 = a.trim_end_matches(".00").parse().unwrap(); // 1 a euro
            assert_eq!(bought["points_earned"].as_i64().unwrap(), bonus + base);
            t.purchase(&shop, card(m), "1000.00", 0).await;
        }
    }
    let r = t
        .get(&format!("/v1/campaigns/{id}/results"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(r["revenue_at"], "reward_partners");
    assert_eq!(r["partner_ids"], json!([diet.id]));
    assert_eq!(amount(&r["treatment"]["revenue_per_member"]), "55.00");
    assert_eq!(amount(&r["control"]["revenue_per_member"]), "55.00");
    // Σd² = 500 a group (s² = 166.67): se = √(2 · 166.67 / 4) = 9.128709, ν = 6,
    // half-width 2.446912 × 9.128709 = 22.337147.
    let u = &r["uplift_per_member"];
    assert_eq!(
        (
            amount(&u["estimate"]),
            amount(&u["ci_low"]),
            amount(&u["ci_high"])
        ),
        ("0.00", "-22.34", "22.34")
    );
    assert_eq!(amount(&r["incremental_revenue"]), "0.00");
    // 4 × 5000 points at the diet store's issue price in force at each purchase:
    // 2 × 5000 × 0.012 + 2 × 5000 × 0.018 = 120 + 180.
    assert_eq!(r["points_given"], 20000);
    assert_eq!(amount(&r["points_cost"]), "300.00");
    assert_eq!(amount(&r["net_effect"]), "-300.00");
    // 4 × ∓22.337147 − 300.
    assert_eq!(amount(&r["net_effect_ci_low"]), "-389.35");
    assert_eq!(amount(&r["net_effect_ci_high"]), "-210.65");
    assert_eq!(r["verdict"], "loss");
}

#[tokio::test]
async fn results_without_a_control_group_and_refusals() {
    let t = spawn_app().await;
    let prog = t.programme("Results refusals").await;
    let other = t.programme("Other results").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (ann, ann_card) = t.member_with_card(&shop, "ann@example.org").await;
    let (bob, bob_card) = t.member_with_card(&shop, "bob@example.org").await;
    // No holdout: nobody to compare with.
    let c = t
        .post(
            "/v1/campaigns",
            &prog.admin,
            json!({
                "name": "Everyone", "segment": {"kind": "members", "member_ids": [ann, bob]},
                "reward": {"kind": "bonus", "value": "10"}, "funder": {"kind": "operator"},
                "budget_points": 1000, "ends_at": in_days(30),
            }),
        )
        .await
        .expect(201);
    t.purchase(&shop, &ann_card, "10.00", 0).await;
    t.purchase(&shop, &bob_card, "30.00", 0).await;
    let path = format!("/v1/campaigns/{}/results", c["id"].as_str().unwrap());
    let r = t.get(&path, &prog.admin).await.expect(200);
    assert_eq!(r["treatment"]["members"], 2);
    assert_eq!(amount(&r["treatment"]["revenue_per_member"]), "20.00");
    assert_eq!(r["control"]["members"], 0);
    assert!(r["control"]["revenue_per_member"].is_null());
    assert!(r["uplift_per_member"].is_null());
    assert!(r["incremental_revenue"].is_null());
    assert!(r["net_effect"].is_null());
    assert_eq!(amount(&r["points_cost"]), "0.20");
    assert_eq!(r["verdict"], "inconclusive");

    t.get(&path, &other.admin)
        .await
        .expect_problem(404, "not_found");
    t.get(&path, &shop.token)
        .await
        .expect_problem(403, "insufficient_scope");
    for bad in ["0", "3651", "-1", "abc", "1.5", ""] {
        let problem = t
            .get(&format!("{path}?after_days={bad}"), &prog.admin)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(problem["errors"][0]["field"], "after_days", "{bad}");
    }
    t.get("/v1/campaigns/not-an-id/results", &prog.admin)
        .await
        .expect_problem(404, "not_found");
}
