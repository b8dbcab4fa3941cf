//! Customer-base models over HTTP: fit on an imported synthetic history, a member's value,
//! the at-risk list.

use crate::imports::post_import;
use crate::support::*;
use chrono::{Duration, NaiveDate};
use serde_json::{json, Value};

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

pub(crate) const END: &str = "2025-06-30";

/// 60 customers with their own rhythms, half of whom stop; plus `lapsed` (weekly for 20
/// weeks, then silent for over a year) and `steady` (weekly to the end).
pub(crate) fn history() -> String {
    let end = day(2025, 6, 30);
    let mut csv = String::from("customer_ref,date,amount\n");
    let mut buy = |who: &str, from: NaiveDate, every: i64, times: i64, amount: &str| {
        for k in 0..times {
            let d = from + Duration::days(k * every);
            if d <= end {
                csv.push_str(&format!("{who},{d},{amount}\n"));
            }
        }
    };
    for i in 0..60i64 {
        let from = day(2024, 1, 1) + Duration::days(i * 3);
        let every = 7 + (i % 5) * 7;
        let times = if i % 2 == 0 { 3 + i % 7 } else { 200 };
        buy(
            &format!("c{i}"),
            from,
            every,
            times,
            &format!("{}.50", 10 + i % 7),
        );
    }
    buy("lapsed", day(2024, 1, 1), 7, 20, "40.00");
    buy("steady", day(2024, 1, 1), 7, 200, "15.00");
    csv
}

pub(crate) async fn member_of(t: &TestApp, programme: uuid::Uuid, external_ref: &str) -> String {
    use coalition_store::entities::member;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    member::Entity::find()
        .filter(member::Column::ProgrammeId.eq(programme))
        .filter(member::Column::ExternalRef.eq(external_ref))
        .one(&t.app.db)
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string()
}

fn is_money(v: &Value) -> bool {
    let a = v["amount"].as_str().unwrap_or("");
    v["currency"] == "EUR" && a.split_once('.').is_some_and(|(_, cents)| cents.len() == 2)
}

#[tokio::test]
async fn a_fitted_model_tells_the_lapsed_from_the_steady() {
    let t = spawn_app().await;
    let prog = t.programme("Retention").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    // Before any model: nothing to list.
    t.get("/v1/analytics/at-risk", &prog.admin)
        .await
        .expect_problem(404, "not_found");
    let (status, report) = post_import(&t, &prog.admin, shop.id, "csv", &history()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["members_created"], 62);

    let model = t
        .post(
            "/v1/analytics/clv-models",
            &prog.admin,
            json!({"calibration_end": END}),
        )
        .await
        .expect(201);
    assert_eq!(model["members"], 62);
    assert_eq!(model["calibration_end"], END);
    for p in ["r", "alpha", "a", "b"] {
        assert!(model["bgnbd"][p].as_f64().unwrap() > 0.0, "{model}");
    }
    assert!(model["gamma_gamma"]["p"].as_f64().unwrap() > 0.0, "{model}");
    let id = model["id"].as_str().unwrap();
    let again = t
        .get(&format!("/v1/analytics/clv-models/{id}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(again, model);

    let lapsed = member_of(&t, prog.id, "lapsed").await;
    let steady = member_of(&t, prog.id, "steady").await;
    let clv = |member: String| {
        let t = &t;
        let admin = prog.admin.clone();
        async move {
            t.get(
                &format!("/v1/members/{member}/clv?model_id={id}&weeks=26"),
                &admin,
            )
            .await
            .expect(200)
        }
    };
    let l = clv(lapsed.clone()).await;
    let s = clv(steady.clone()).await;
    assert_eq!(
        (l["frequency"].clone(), l["weeks"].clone()),
        (json!(19), json!(26))
    );
    assert!(l["p_alive"].as_f64().unwrap() < 0.1, "{l}");
    assert!(s["p_alive"].as_f64().unwrap() > 0.8, "{s}");
    assert!(
        s["expected_purchases"].as_f64().unwrap()
            > 10.0 * l["expected_purchases"].as_f64().unwrap(),
        "{s} {l}"
    );
    for field in [
        "total_spend",
        "expected_value_per_purchase",
        "expected_spend",
        "clv",
    ] {
        assert!(is_money(&s[field]), "{field}: {s}");
    }
    assert_eq!(l["total_spend"]["amount"], "800.00");
    // The latest model is the default.
    let latest = t
        .get(&format!("/v1/members/{steady}/clv"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(latest["model_id"], model["id"]);
    assert_eq!(latest["weeks"], 52);

    // At risk: the lapsed member is, the steady one is not; most valuable first, paged.
    let mut seen: Vec<Value> = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/analytics/at-risk?p_alive_below=0.3&limit=7".to_owned(),
            Some(c) => format!("/v1/analytics/at-risk?p_alive_below=0.3&limit=7&cursor={c}"),
        };
        let page = t.get(&path, &prog.admin).await.expect(200);
        seen.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(seen.len() > 7, "{}", seen.len());
    let ids: Vec<&str> = seen
        .iter()
        .map(|m| m["member_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&lapsed.as_str()));
    assert!(!ids.contains(&steady.as_str()));
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "pages overlap");
    assert!(seen.iter().all(|m| m["p_alive"].as_f64().unwrap() < 0.3));
    let totals: Vec<f64> = seen
        .iter()
        .map(|m| {
            m["total_spend"]["amount"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "{totals:?}");
    // A threshold of 0 lists no one.
    let none = t
        .get("/v1/analytics/at-risk?p_alive_below=0", &prog.admin)
        .await
        .expect(200);
    assert_eq!(none["data"], json!([]));
}

#[tokio::test]
async fn analytics_refuse_partners_bad_dates_and_bad_parameters() {
    let t = spawn_app().await;
    let prog = t.programme("Retention refusals").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    t.post(
        "/v1/analytics/clv-models",
        &shop.token,
        json!({"calibration_end": END}),
    )
    .await
    .expect_problem(403, "insufficient_scope");
    t.post(
        "/v1/analytics/clv-models",
        &prog.admin,
        json!({"calibration_end": "2999-01-01"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    // No purchases yet.
    t.post(
        "/v1/analytics/clv-models",
        &prog.admin,
        json!({"calibration_end": END}),
    )
    .await
    .expect_problem(422, "not_enough_data");
    t.post(
        "/v1/analytics/clv-models",
        &prog.admin,
        json!({"calibration_end": END, "partner_id": uuid::Uuid::now_v7()}),
    )
    .await
    .expect_problem(404, "not_found");
    t.get("/v1/analytics/at-risk?p_alive_below=2", &prog.admin)
        .await
        .expect_problem(422, "validation_failed");
    t.get("/v1/analytics/at-risk", &shop.token)
        .await
        .expect_problem(403, "insufficient_scope");
}

#[tokio::test]
async fn a_history_that_only_begins_on_the_calibration_end_is_not_fitted() {
    let t = spawn_app().await;
    let prog = t.programme("Day one").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let csv = "customer_ref,date,amount\na,2024-01-05,10\nb,2024-01-05,20\n";
    let (status, _) = crate::imports::post_import(&t, &prog.admin, shop.id, "csv", csv).await;
    assert_eq!(status, 200);
    t.post(
        "/v1/analytics/clv-models",
        &prog.admin,
        json!({"calibration_end": "2024-01-05"}),
    )
    .await
    .expect_problem(422, "not_enough_data");
}
