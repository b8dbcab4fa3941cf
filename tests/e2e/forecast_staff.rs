//! Sales analytics over HTTP: the weekly forecast with its backtest, and staff and store
//! effectiveness, on an imported hand-made history whose figures are known.

use crate::analytics::member_of;
use crate::imports::post_import;
use crate::support::*;
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use coalition_store::entities::{campaign, campaign_member};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::{json, Value};
use uuid::Uuid;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Ten weeks from Monday 2024-01-01. Each week k (0–9):
/// - the shop: `a` buys 60.00 on Monday at store S1 from staff ann, and a new customer
///   `n{k}` buys 40.00 on Wednesday at store S2 from bob — 100.00 a week;
/// - the cafe: `c` buys 10·(k+1) on Sunday at store CAFE (no staff) — except in week 9,
///   where `c` buys 80.00 and `n9` 20.00 (100.00 all the same).
///
/// Programme weekly sales: 110, 120, …, 200 (a straight line); the shop's: 100 flat; the
/// cafe's: 10, 20, …, 100.
fn history(shop: Uuid, cafe: Uuid) -> String {
    let mut csv = String::from("customer_ref,date,amount,partner_id,store_ref,staff_ref\n");
    let monday = day(2024, 1, 1);
    for k in 0..10i64 {
        let week = monday + Duration::weeks(k);
        csv += &format!("a,{week},60.00,{shop},S1,ann\n");
        csv += &format!("n{k},{},40.00,{shop},S2,bob\n", week + Duration::days(2));
        let sunday = week + Duration::days(6);
        if k < 9 {
            csv += &format!("c,{sunday},{}.00,{cafe},CAFE,\n", 10 * (k + 1));
        } else {
            csv += &format!("c,{sunday},80.00,{cafe},CAFE,\n");
            csv += &format!("n9,{sunday},20.00,{cafe},CAFE,\n");
        }
    }
    csv
}

fn week(start: &str, sales: &str) -> Value {
    json!({"start": start, "sales": sales})
}

/// The report's rows without their `partner_id` (asserted on its own).
fn refs(rows: &Value) -> Value {
    let strip = |r: &Value| {
        let mut r = r.clone();
        r.as_object_mut().map(|o| o.remove("partner_id"));
        r
    };
    match rows {
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        one => strip(one),
    }
}

fn row(
    reference: &str,
    sales: &str,
    purchases: i64,
    served: i64,
    enrolled: i64,
    returned: i64,
    share: &str,
    conversions: i64,
) -> Value {
    json!({
        "ref": reference, "sales": sales, "purchases": purchases, "members_served": served,
        "members_enrolled": enrolled, "members_returned": returned,
        "returned_within_90_days": share, "campaign_conversions": conversions,
    })
}

#[tokio::test]
async fn the_forecast_follows_known_weekly_sales_and_backtests_them() {
    let t = spawn_app().await;
    let prog = t.programme("Forecast").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let cafe = t.partner(&prog, "Cafe", "1").await;
    let (status, report) =
        post_import(&t, &prog.admin, shop.id, "csv", &history(shop.id, cafe.id)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["imported"], 31, "{report}");

    // The programme: 110, 120, …, 200 — a straight line, which Holt's trend (undamped)
    // continues: 210, 220, …; the backtest refits on 8 weeks and forecasts the last 2
    // (min(12, 10/4)) exactly.
    let f = t
        .get("/v1/analytics/forecast", &prog.admin)
        .await
        .expect(200);
    assert_eq!(f["method"], "holt_damped_trend", "{f}");
    assert_eq!(f["parameters"]["phi"], 1.0, "{f}");
    assert_eq!(f["currency"], "EUR");
    assert_eq!(f["partner_id"], Value::Null);
    let history = f["history"].as_array().unwrap();
    assert_eq!(history.len(), 10);
    assert_eq!(history[0], week("2024-01-01", "110.00"));
    assert_eq!(history[9], week("2024-03-04", "200.00"));
    let weeks = f["weeks"].as_array().unwrap();
    assert_eq!(weeks.len(), 12);
    assert_eq!(weeks[0], week("2024-03-11", "210.00"));
    assert_eq!(weeks[1], week("2024-03-18", "220.00"));
    assert_eq!(weeks[11], week("2024-05-27", "320.00"));
    assert_eq!(f["backtest_mape"], "0.00");
    assert_eq!(
        f["backtest"],
        json!({"training_weeks": 8, "holdout_weeks": 2, "scored_weeks": 2, "zero_weeks_excluded": 0})
    );
    assert!(f["reason"].as_str().unwrap().contains("two years"), "{f}");

    // The shop alone sells 100.00 every week: a level, forecast flat.
    let s = t
        .get(
            &format!("/v1/analytics/forecast?partner_id={}&weeks=3", shop.id),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(s["method"], "simple_exponential_smoothing", "{s}");
    assert_eq!(s["partner_id"], json!(shop.id));
    assert_eq!(
        s["weeks"],
        json!([
            week("2024-03-11", "100.00"),
            week("2024-03-18", "100.00"),
            week("2024-03-25", "100.00")
        ])
    );
    assert_eq!(s["backtest_mape"], "0.00");
    assert_eq!(s["backtest"]["holdout_weeks"], 2);
    // The cafe: 10, 20, …, 100.
    let c = t
        .get(
            &format!("/v1/analytics/forecast?partner_id={}&weeks=1", cafe.id),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(c["weeks"], json!([week("2024-03-11", "110.00")]), "{c}");
    assert_eq!(c["backtest"]["holdout_weeks"], 1);

    // A week without sales in the held-out tail is left out of the MAPE, and says so:
    // a third partner sells 50.00 in weeks 0–7 and 9 and nothing in week 8.
    let deli = t.partner(&prog, "Deli", "1").await;
    let mut csv = String::from("customer_ref,date,amount\n");
    for k in [0i64, 1, 2, 3, 4, 5, 6, 7, 9] {
        csv += &format!("d,{},50.00\n", day(2024, 1, 2) + Duration::weeks(k));
    }
    let (status, _) = post_import(&t, &prog.admin, deli.id, "csv", &csv).await;
    assert_eq!(status, 200);
    let d = t
        .get(
            &format!("/v1/analytics/forecast?partner_id={}&weeks=2", deli.id),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(d["history"][8], week("2024-02-26", "0.00"), "{d}");
    assert_eq!(
        d["backtest"],
        json!({"training_weeks": 8, "holdout_weeks": 2, "scored_weeks": 1, "zero_weeks_excluded": 1}),
        "{d}"
    );
    assert!(d["backtest_mape"].is_string(), "{d}");

    // Another programme sees none of it.
    let other = t.programme("Other").await;
    t.get("/v1/analytics/forecast", &other.admin)
        .await
        .expect_problem(422, "not_enough_data");
    t.get(
        &format!("/v1/analytics/forecast?partner_id={}", shop.id),
        &other.admin,
    )
    .await
    .expect_problem(404, "not_found");
    // Seven Mondays are six whole weeks (the data ends on the last Monday): too few.
    let other_shop = t.partner(&other, "Shop", "1").await;
    let mut short = String::from("customer_ref,date,amount\n");
    for k in 0..7i64 {
        short += &format!("x,{},10.00\n", day(2024, 1, 1) + Duration::weeks(k));
    }
    assert_eq!(
        post_import(&t, &other.admin, other_shop.id, "csv", &short)
            .await
            .0,
        200
    );
    let problem = t
        .get("/v1/analytics/forecast", &other.admin)
        .await
        .expect_problem(422, "not_enough_data");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("6 complete weeks"),
        "{problem}"
    );

    // Bad parameters, and partners may not look.
    for bad in ["weeks=0", "weeks=53", "weeks=x", "partner_id=nope"] {
        let p = t
            .get(&format!("/v1/analytics/forecast?{bad}"), &prog.admin)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(
            p["errors"][0]["field"],
            bad.split('=').next().unwrap(),
            "{p}"
        );
    }
    t.get("/v1/analytics/forecast", &shop.token)
        .await
        .expect_problem(403, "insufficient_scope");
}

#[tokio::test]
async fn staff_and_stores_are_ranked_with_exact_figures() {
    let t = spawn_app().await;
    let prog = t.programme("Staff").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let cafe = t.partner(&prog, "Cafe", "1").await;
    let (status, report) =
        post_import(&t, &prog.admin, shop.id, "csv", &history(shop.id, cafe.id)).await;
    assert_eq!(status, 200, "{report}");

    // A campaign that ran from 2024-02-19 to 2024-03-05 (end excluded), `a` and `n8` in
    // its treatment group, `n7` in its control group.
    let (a, n7, n8) = (
        member_of(&t, prog.id, "a").await.parse::<Uuid>().unwrap(),
        member_of(&t, prog.id, "n7").await.parse::<Uuid>().unwrap(),
        member_of(&t, prog.id, "n8").await.parse::<Uuid>().unwrap(),
    );
    let body = json!({
        "name": "Winter", "segment": {"kind": "members", "member_ids": [a, n7, n8]},
        "reward": {"kind": "bonus", "value": "10"}, "funder": {"kind": "operator"},
        "budget_points": 1000, "starts_at": (Utc::now() + Duration::days(10)).to_rfc3339(),
        "ends_at": (Utc::now() + Duration::days(20)).to_rfc3339(),
    });
    let created = t.post("/v1/campaigns", &prog.admin, body).await.expect(201);
    let campaign_id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    campaign::Entity::update_many()
        .col_expr(
            campaign::Column::StartsAt,
            Expr::value(Utc.with_ymd_and_hms(2024, 2, 19, 0, 0, 0).unwrap()),
        )
        .col_expr(
            campaign::Column::EndsAt,
            Expr::value(Utc.with_ymd_and_hms(2024, 3, 5, 0, 0, 0).unwrap()),
        )
        .filter(campaign::Column::Id.eq(campaign_id))
        .exec(&t.app.db)
        .await
        .unwrap();
    campaign_member::Entity::delete_many()
        .filter(campaign_member::Column::CampaignId.eq(campaign_id))
        .exec(&t.app.db)
        .await
        .unwrap();
    for (m, group) in [(a, "treatment"), (n7, "control"), (n8, "treatment")] {
        campaign_member::ActiveModel {
            campaign_id: Set(campaign_id),
            member_id: Set(m),
            programme_id: Set(prog.id),
            group: Set(group.to_owned()),
            assigned_at: Set(Utc::now()),
        }
        .insert(&t.app.db)
        .await
        .unwrap();
    }

    // The ten weeks. ann served `a` (enrolled: her first purchase ever; back a week
    // later), 3 of whose purchases fell in the campaign (02-19, 02-26, 03-04). bob served
    // ten new customers, one of whom (`n9`) came back four days later at the cafe; `n8`'s
    // purchase was in the campaign, `n7` is control. The cafe served `c` (enrolled, back
    // every week) and `n9` (enrolled by bob, not back).
    let all = t
        .get(
            "/v1/analytics/staff?from=2024-01-01&to=2024-03-10",
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(all["currency"], "EUR");
    assert_eq!(
        (all["from"].clone(), all["to"].clone()),
        (json!("2024-01-01"), json!("2024-03-10"))
    );
    assert_eq!(
        refs(&all["staff"]),
        json!([
            row("ann", "600.00", 10, 1, 1, 1, "1.0000", 3),
            row("bob", "400.00", 10, 10, 10, 1, "0.1000", 1),
        ])
    );
    assert_eq!(all["staff_total"], 2);
    // Each line names the partner whose till sent the reference.
    assert_eq!(all["stores"][1]["ref"], "CAFE");
    assert_eq!(all["stores"][1]["partner_id"], cafe.id.to_string());
    assert_eq!(
        refs(&all["stores"]),
        json!([
            row("S1", "600.00", 10, 1, 1, 1, "1.0000", 3),
            row("CAFE", "550.00", 11, 2, 1, 1, "0.5000", 0),
            row("S2", "400.00", 10, 10, 10, 1, "0.1000", 1),
        ])
    );
    assert_eq!(all["stores_total"], 3);

    // From week 5 on: `a` enrolled before it; bob's five customers are new.
    let late = t
        .get(
            "/v1/analytics/staff?from=2024-02-05&to=2024-03-10&limit=1",
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(
        refs(&late["staff"]),
        json!([row("ann", "300.00", 5, 1, 0, 1, "1.0000", 3)])
    );
    assert_eq!(late["staff_total"], 2);
    // The cafe leads now: 60 + 70 + 80 + 90 + 100.
    assert_eq!(
        refs(&late["stores"]),
        json!([row("CAFE", "400.00", 6, 2, 0, 1, "0.5000", 0)])
    );
    let late_all = t
        .get(
            "/v1/analytics/staff?from=2024-02-05&to=2024-03-10",
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(
        refs(&late_all["staff"][1]),
        row("bob", "200.00", 5, 5, 5, 1, "0.2000", 1)
    );

    // A live purchase today, partly refunded: net 30.00; ann's, a new member's first.
    let (_, card) = t.member_with_card(&shop, "live@example.org").await;
    let body = json!({"card_number": card, "amount": {"amount": "50.00", "currency": "EUR"},
        "external_ref": "till-1", "store_ref": "S1", "staff_ref": "ann"});
    let bought = t
        .post_moving("/v1/purchases", &shop.token, body)
        .await
        .expect(201);
    t.post_moving(
        &format!("/v1/purchases/{}/refunds", bought["id"].as_str().unwrap()),
        &shop.token,
        json!({"amount": {"amount": "20.00", "currency": "EUR"}}),
    )
    .await
    .expect(201);
    let today = t.get("/v1/analytics/staff", &prog.admin).await.expect(200);
    let now = Utc::now().date_naive();
    assert_eq!(today["to"], json!(now.to_string()));
    assert_eq!(
        today["from"],
        json!((now - Duration::days(364)).to_string())
    );
    assert_eq!(
        refs(&today["staff"]),
        json!([row("ann", "30.00", 1, 1, 1, 0, "0.0000", 0)])
    );

    // Another programme sees nothing.
    let other = t.programme("Other").await;
    let none = t
        .get(
            "/v1/analytics/staff?from=2024-01-01&to=2024-03-10",
            &other.admin,
        )
        .await
        .expect(200);
    assert_eq!(
        (
            none["staff"].clone(),
            none["stores"].clone(),
            none["staff_total"].clone()
        ),
        (json!([]), json!([]), json!(0))
    );

    // Bad parameters.
    for (bad, field) in [
        ("from=2024-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2024-03-02&to=2024-03-01", "from"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
    ] {
        let p = t
            .get(&format!("/v1/analytics/staff?{bad}"), &prog.admin)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(p["errors"][0]["field"], field, "{bad}: {p}");
    }
    t.get("/v1/analytics/staff", &shop.token)
        .await
        .expect_problem(403, "insufficient_scope");
}
