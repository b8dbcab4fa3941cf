//! The classics over HTTP on a small hand-made history with known answers: Pareto and
//! the Lorenz curve (whole programme and one partner), the ABC/XYZ matrix and its members,
//! RFM scores and segments, the `rfm` and `at_risk` campaign segments, paging, another
//! programme seeing nothing, bad parameters.
//!
//! Six customers, the first quarter of 2025 (amounts in EUR; Shop unless said):
//!
//! | who | purchases | Q1 sales | months | RFM (365 days to 2025-03-31) |
//! |---|---|---|---|---|
//! | m1 | 2024-12-31 50, Jan 10 100, Feb 10 100, Mar 10 100, Apr 1 50 | 300 | 100/100/100 | last Mar 10, 4 days, 350 |
//! | m2 | Jan 15 50, Feb 15 60, Mar 15 40 | 150 | 50/60/40 | last Mar 15, 3 days, 150 |
//! | m3 | Jan 5 90 | 90 | 90/0/0 | last Jan 5, 1 day, 90 |
//! | m4 | Feb 20 40, Mar 20 40 | 80 | 0/40/40 | last Mar 20, 2 days, 80 |
//! | m5 | Cafe: Jan 25 12, Jan 26 8, Feb 25 20, Mar 24 10, Mar 25 10 | 60 | 20/20/20 | last Mar 25, 5 days, 60 |
//! | m6 | Cafe: Mar 23–27 2 a day, Mar 28 5; Shop: Mar 28 5 | 20 | 0/0/20 | last Mar 28, 6 days, 20 |

use crate::analytics::{history as clv_history, member_of, END};
use crate::imports::post_import;
use crate::support::*;
use chrono::{Duration, NaiveDate, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use uuid::Uuid;

const AS_OF: &str = "2025-03-31";
const Q1: &str = "from=2025-01-01&to=2025-03-31";

/// (who, partner: true = Cafe, day, amount)
fn purchases() -> Vec<(&'static str, bool, &'static str, &'static str)> {
    let mut p = vec![
        ("m1", false, "2024-12-31", "50.00"),
        ("m1", false, "2025-01-10", "100.00"),
        ("m1", false, "2025-02-10", "100.00"),
        ("m1", false, "2025-03-10", "100.00"),
        ("m1", false, "2025-04-01", "50.00"),
        ("m2", false, "2025-01-15", "50.00"),
        ("m2", false, "2025-02-15", "60.00"),
        ("m2", false, "2025-03-15", "40.00"),
        ("m3", false, "2025-01-05", "90.00"),
        ("m4", false, "2025-02-20", "40.00"),
        ("m4", false, "2025-03-20", "40.00"),
        ("m5", true, "2025-01-25", "12.00"),
        ("m5", true, "2025-01-26", "8.00"),
        ("m5", true, "2025-02-25", "20.00"),
        ("m5", true, "2025-03-24", "10.00"),
        ("m5", true, "2025-03-25", "10.00"),
        ("m6", true, "2025-03-28", "5.00"),
        ("m6", false, "2025-03-28", "5.00"),
    ];
    for d in 23..=27 {
        let day: &'static str = Box::leak(format!("2025-03-{d}").into_boxed_str());
        p.push(("m6", true, day, "2.00"));
    }
    p
}

/// The two partners' CSVs, every day moved `shift` days later (days after today left out).
fn csvs(shift: i64) -> (String, String) {
    let today = Utc::now().date_naive();
    let (mut shop, mut cafe) = (
        String::from("customer_ref,date,amount\n"),
        String::from("customer_ref,date,amount\n"),
    );
    for (who, at_cafe, day, amount) in purchases() {
        let d = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap() + Duration::days(shift);
        if d > today {
            continue;
        }
        let line = format!("{who},{d},{amount}\n");
        if at_cafe {
            cafe.push_str(&line);
        } else {
            shop.push_str(&line);
        }
    }
    (shop, cafe)
}

struct Setup {
    prog: Programme,
    shop: Partner,
    cafe: Partner,
    /// external ref → member id
    ids: std::collections::HashMap<String, String>,
}

async fn setup(t: &TestApp, name: &str, shift: i64) -> Setup {
    let prog = t.programme(name).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let cafe = t.partner(&prog, "Cafe", "1").await;
    let (shop_csv, cafe_csv) = csvs(shift);
    for (partner, csv) in [(&shop, shop_csv), (&cafe, cafe_csv)] {
        let (status, report) = post_import(t, &prog.admin, partner.id, "csv", &csv).await;
        assert_eq!(status, 200, "{report}");
    }
    let mut ids = std::collections::HashMap::new();
    for who in ["m1", "m2", "m3", "m4", "m5", "m6"] {
        ids.insert(who.to_owned(), member_of(t, prog.id, who).await);
    }
    Setup {
        prog,
        shop,
        cafe,
        ids,
    }
}

/// Every page of a list (`path` has a query already), checking pages do not overlap.
async fn all_pages(t: &Client, token: &str, path: &str, limit: u32) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut p = format!("{path}&limit={limit}");
        if let Some(c) = &cursor {
            p += &format!("&cursor={c}");
        }
        let page = t.get(&p, token).await.expect(200);
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit as usize);
        seen.extend(data.iter().cloned());
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 100);
    }
    seen
}

fn refs(s: &Setup, rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            let id = r["member_id"].as_str().unwrap();
            s.ids
                .iter()
                .find(|(_, v)| v.as_str() == id)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| format!("stranger {id}"))
        })
        .collect()
}

fn point(curve: &Value, members_share: &str) -> String {
    curve
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["members_share"] == members_share)
        .unwrap_or_else(|| panic!("no point at {members_share}: {curve}"))["sales_share"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn pareto_and_abc_xyz_on_a_known_history() {
    let t = spawn_app().await;
    let s = setup(&t, "Classics", 0).await;
    let admin = &s.prog.admin;

    // Pareto over Q1: sales 20, 60, 80, 90, 150, 300 (700). The top 20 % of six members
    // is ceil(1.2) = 2: 450 / 700.
    let p = t
        .get(&format!("/v1/analytics/pareto?{Q1}"), admin)
        .await
        .expect(200);
    assert_eq!(p["members"], 6, "{p}");
    assert_eq!(p["sales"], json!({"amount": "700.00", "currency": "EUR"}));
    assert_eq!(p["top_20_share"], "0.6429");
    assert_eq!(p["from"], "2025-01-01");
    assert_eq!(p["to"], "2025-03-31");
    let curve = &p["curve"];
    assert_eq!(curve.as_array().unwrap().len(), 21);
    assert_eq!(
        curve[0],
        json!({"members_share": "0.00", "sales_share": "0.0000"})
    );
    // 5 %: 0.3 of the smallest (20) = 6 / 700; 25 %: 20 + half of 60 = 50 / 700;
    // 50 %: 160 / 700; 80 %: 20 + 60 + 80 + 90 + 0.8 × 150 = 370 / 700.
    assert_eq!(point(curve, "0.05"), "0.0086");
    assert_eq!(point(curve, "0.25"), "0.0714");
    assert_eq!(point(curve, "0.50"), "0.2286");
    assert_eq!(point(curve, "0.80"), "0.5286");
    assert_eq!(point(curve, "1.00"), "1.0000");

    // The Cafe only: m6 15, m5 60 (75); the top 20 % of two is one member, 60 / 75.
    let cafe = t
        .get(
            &format!("/v1/analytics/pareto?{Q1}&partner_id={}", s.cafe.id),
            admin,
        )
        .await
        .expect(200);
    assert_eq!(cafe["members"], 2, "{cafe}");
    assert_eq!(cafe["sales"]["amount"], "75.00");
    assert_eq!(cafe["top_20_share"], "0.8000");
    assert_eq!(point(&cafe["curve"], "0.50"), "0.2000");
    assert_eq!(cafe["partner_id"], json!(s.cafe.id));
    // Only the last day: m6's 10.
    let day = t
        .get("/v1/analytics/pareto?from=2025-03-28&to=2025-03-28", admin)
        .await
        .expect(200);
    assert_eq!(
        (day["members"].clone(), day["sales"]["amount"].clone()),
        (json!(1), json!("10.00"))
    );

    // ABC (80/95): before = 0, 300, 450, 540, 620, 680 of 700 → A A A A B C.
    // XYZ over 3 months: m1 100/100/100 cv 0 X; m2 50/60/40 cv 0.163 Y; m3 90/0/0 cv 1.41
    // Z; m4 0/40/40 cv 0.71 Z; m5 20/20/20 X; m6 0/0/20 Z.
    let m = t
        .get(&format!("/v1/analytics/abc-xyz?{Q1}"), admin)
        .await
        .expect(200);
    assert_eq!(m["months"], 3);
    assert_eq!(m["members"], 6);
    assert_eq!(
        m["thresholds"],
        json!({"a": 80.0, "b": 95.0, "x": 10.0, "y": 25.0})
    );
    let cell = |m: &Value, c: &str| {
        (
            m["matrix"][c]["members"].as_u64().unwrap(),
            m["matrix"][c]["sales"]["amount"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    let expected = [
        ("AX", 1, "300.00"),
        ("AY", 1, "150.00"),
        ("AZ", 2, "170.00"),
        ("BX", 1, "60.00"),
        ("BY", 0, "0.00"),
        ("BZ", 0, "0.00"),
        ("CX", 0, "0.00"),
        ("CY", 0, "0.00"),
        ("CZ", 1, "20.00"),
    ];
    for (c, members, sales) in expected {
        assert_eq!(cell(&m, c), (members, sales.to_owned()), "{c}: {m}");
    }
    // Other thresholds: a 40, b 60 → A B C C C C; x 10, y 20.
    let m2 = t
        .get(
            &format!("/v1/analytics/abc-xyz?{Q1}&a=40&b=60&x=10&y=20"),
            admin,
        )
        .await
        .expect(200);
    assert_eq!(cell(&m2, "AX"), (1, "300.00".into()));
    assert_eq!(cell(&m2, "BY"), (1, "150.00".into()));
    assert_eq!(cell(&m2, "CX"), (1, "60.00".into()));
    assert_eq!(cell(&m2, "CZ"), (3, "190.00".into()));

    // A cell's members: m3 then m4 (largest first), with share and cv.
    let az = t
        .get(
            &format!("/v1/analytics/abc-xyz/members?{Q1}&class=AZ"),
            admin,
        )
        .await
        .expect(200);
    assert_eq!(az["class"], "AZ");
    assert_eq!(refs(&s, az["data"].as_array().unwrap()), ["m3", "m4"]);
    let m3 = &az["data"][0];
    assert_eq!(m3["external_ref"], "m3");
    assert_eq!(m3["sales"]["amount"], "90.00");
    assert_eq!(m3["share"], "0.1286");
    assert_eq!(
        (m3["abc"].as_str(), m3["xyz"].as_str()),
        (Some("A"), Some("Z"))
    );
    assert!(
        (m3["cv"].as_f64().unwrap() - 2f64.sqrt()).abs() < 1e-9,
        "{m3}"
    );
    assert!(az["next_cursor"].is_null());
    let ay = t
        .get(
            &format!("/v1/analytics/abc-xyz/members?{Q1}&class=AY"),
            admin,
        )
        .await
        .expect(200);
    assert_eq!(refs(&s, ay["data"].as_array().unwrap()), ["m2"]);
    assert!((ay["data"][0]["cv"].as_f64().unwrap() - 600f64.sqrt() / 150.0).abs() < 1e-9);
    // Every member, two a page, by sales.
    let everyone = all_pages(&t, admin, &format!("/v1/analytics/abc-xyz/members?{Q1}"), 2).await;
    assert_eq!(refs(&s, &everyone), ["m1", "m2", "m3", "m4", "m5", "m6"]);
    let classes: Vec<String> = everyone
        .iter()
        .map(|m| {
            format!(
                "{}{}",
                m["abc"].as_str().unwrap(),
                m["xyz"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(classes, ["AX", "AY", "AZ", "AZ", "BX", "CZ"]);

    // Another programme sees nothing of this one; this one's partner is not its partner.
    let other = t.programme("Elsewhere").await;
    let none = t
        .get(&format!("/v1/analytics/pareto?{Q1}"), &other.admin)
        .await
        .expect(200);
    assert_eq!(none["members"], 0);
    assert_eq!(none["sales"]["amount"], "0.00");
    assert_eq!(none["top_20_share"], "0.0000");
    t.get(
        &format!("/v1/analytics/pareto?{Q1}&partner_id={}", s.shop.id),
        &other.admin,
    )
    .await
    .expect_problem(404, "not_found");
    let none = t
        .get(&format!("/v1/analytics/abc-xyz?{Q1}"), &other.admin)
        .await
        .expect(200);
    assert_eq!(none["members"], 0);
    let none = t
        .get(&format!("/v1/analytics/abc-xyz/members?{Q1}"), &other.admin)
        .await
        .expect(200);
    assert_eq!(none["data"], json!([]));
    let none = t
        .get(&format!("/v1/analytics/rfm?as_of={AS_OF}"), &other.admin)
        .await
        .expect(200);
    assert_eq!(none["data"], json!([]));
    // Partners are not admins.
    t.get(&format!("/v1/analytics/pareto?{Q1}"), &s.shop.token)
        .await
        .expect_problem(403, "insufficient_scope");
}

#[tokio::test]
async fn rfm_scores_segments_and_pages() {
    let t = spawn_app().await;
    let s = setup(&t, "RFM", 0).await;
    let admin = &s.prog.admin;
    // Six members in quintiles (NTILE(5): the lowest bucket holds two).
    // Recency by last day: m3, m1 | m2 | m4 | m5 | m6 → 1 1 2 3 4 5.
    // Frequency by days: m3 (1), m4 (2) | m2 (3) | m1 (4) | m5 (5) | m6 (6).
    // Monetary by sales: m6 (20), m5 (60) | m4 (80) | m3 (90) | m2 (150) | m1 (350).
    // FM = round-half-up((F + M) / 2); the R × FM grid names the segment.
    let expected = [
        // who, r, f, m, recency_days, days, sales, segment
        ("m1", 1, 3, 5, 21, 4, "350.00", "at_risk"),
        ("m2", 2, 2, 4, 16, 3, "150.00", "at_risk"),
        ("m3", 1, 1, 3, 85, 1, "90.00", "hibernating"),
        ("m4", 3, 1, 2, 11, 2, "80.00", "about_to_sleep"),
        ("m5", 4, 4, 1, 6, 5, "60.00", "potential_loyalists"),
        ("m6", 5, 5, 1, 3, 6, "20.00", "potential_loyalists"),
    ];
    let rows = all_pages(&t, admin, &format!("/v1/analytics/rfm?as_of={AS_OF}"), 4).await;
    assert_eq!(refs(&s, &rows), ["m1", "m2", "m3", "m4", "m5", "m6"]);
    for (row, (who, r, f, m, recency_days, days, sales, segment)) in rows.iter().zip(expected) {
        assert_eq!(row["external_ref"], who);
        assert_eq!(
            (
                row["recency"].clone(),
                row["frequency"].clone(),
                row["monetary"].clone()
            ),
            (json!(r), json!(f), json!(m)),
            "{who}: {row}"
        );
        assert_eq!(row["recency_days"], recency_days, "{who}");
        assert_eq!(row["purchase_days"], days, "{who}");
        assert_eq!(row["sales"]["amount"], sales, "{who}");
        assert_eq!(row["segment"], segment, "{who}");
    }
    let at_risk = t
        .get(
            &format!("/v1/analytics/rfm?as_of={AS_OF}&segment=at_risk"),
            admin,
        )
        .await
        .expect(200);
    assert_eq!(at_risk["segment"], "at_risk");
    assert_eq!(refs(&s, at_risk["data"].as_array().unwrap()), ["m1", "m2"]);
    // Paged one by one within a segment.
    let loyalists = all_pages(
        &t,
        admin,
        &format!("/v1/analytics/rfm?as_of={AS_OF}&segment=potential_loyalists"),
        1,
    )
    .await;
    assert_eq!(refs(&s, &loyalists), ["m5", "m6"]);
    // A year later only m1's April purchase is in the window: one member, every score 1
    // (a single row is the lowest quintile), R 1 FM 1 → lost.
    let later = t
        .get("/v1/analytics/rfm?as_of=2026-03-31", admin)
        .await
        .expect(200);
    assert_eq!(refs(&s, later["data"].as_array().unwrap()), ["m1"]);
    assert_eq!(later["data"][0]["segment"], "lost");
    assert_eq!(later["data"][0]["sales"]["amount"], "50.00");
}

#[tokio::test]
async fn classics_refuse_bad_parameters() {
    let t = spawn_app().await;
    let prog = t.programme("Classics refusals").await;
    let bad = [
        ("/v1/analytics/pareto?from=2025-13-01", "from"),
        ("/v1/analytics/pareto?from=2025-03-01&to=2025-02-01", "from"),
        ("/v1/analytics/pareto?from=2000-01-01&to=2025-02-01", "from"),
        ("/v1/analytics/pareto?partner_id=shop", "partner_id"),
        ("/v1/analytics/abc-xyz?a=95&b=80", "b"),
        ("/v1/analytics/abc-xyz?a=0", "a"),
        ("/v1/analytics/abc-xyz?b=100", "b"),
        ("/v1/analytics/abc-xyz?x=0", "x"),
        ("/v1/analytics/abc-xyz?x=30", "y"),
        ("/v1/analytics/abc-xyz?a=lots", "a"),
        ("/v1/analytics/abc-xyz/members?class=AQ", "class"),
        ("/v1/analytics/abc-xyz/members?cursor=nonsense", "cursor"),
        ("/v1/analytics/abc-xyz/members?limit=0", "limit"),
        ("/v1/analytics/rfm?segment=vips", "segment"),
        ("/v1/analytics/rfm?as_of=yesterday", "as_of"),
        ("/v1/analytics/rfm?cursor=12", "cursor"),
    ];
    for (path, field) in bad {
        let problem = t
            .get(path, &prog.admin)
            .await
            .expect_problem(422, "validation_failed");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{path}: {problem}");
    }
    t.get(
        &format!("/v1/analytics/pareto?partner_id={}", Uuid::now_v7()),
        &prog.admin,
    )
    .await
    .expect_problem(404, "not_found");
}

fn campaign(segment: Value) -> Value {
    json!({
        "name": "Classics", "segment": segment,
        "reward": {"kind": "bonus", "value": "10"}, "funder": {"kind": "operator"},
        "budget_points": 100000,
        "ends_at": (Utc::now() + Duration::days(30)).to_rfc3339(),
    })
}

/// The members of a campaign (both groups), through the paged API.
async fn campaign_members(t: &Client, admin: &str, campaign: &Value) -> BTreeSet<String> {
    let id = campaign["id"].as_str().unwrap();
    all_pages(
        t,
        admin,
        &format!("/v1/campaigns/{id}/members?group=treatment"),
        3,
    )
    .await
    .iter()
    .chain(
        all_pages(
            t,
            admin,
            &format!("/v1/campaigns/{id}/members?group=control"),
            3,
        )
        .await
        .iter(),
    )
    .map(|m| m["member_id"].as_str().unwrap().to_owned())
    .collect()
}

#[tokio::test]
async fn rfm_and_at_risk_campaign_segments_assign_their_members() {
    let t = spawn_app().await;
    // The history moved so that 2025-03-31 is today: the segments are as of today.
    let shift =
        (Utc::now().date_naive() - NaiveDate::from_ymd_opt(2025, 3, 31).unwrap()).num_days();
    let s = setup(&t, "RFM campaign", shift).await;
    let admin = &s.prog.admin;
    let today = t.get("/v1/analytics/rfm", admin).await.expect(200);
    assert_eq!(
        refs(&s, today["data"].as_array().unwrap()),
        ["m1", "m2", "m3", "m4", "m5", "m6"]
    );
    let c = t
        .post(
            "/v1/campaigns",
            admin,
            campaign(json!({"kind": "rfm", "segments": ["hibernating", "at_risk"]})),
        )
        .await
        .expect(201);
    // Stored in the map's order.
    assert_eq!(c["segment"]["segments"], json!(["at_risk", "hibernating"]));
    let expected: BTreeSet<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|w| s.ids[*w].clone())
        .collect();
    assert_eq!(campaign_members(&t, admin, &c).await, expected);
    // The job's next round assigns nobody twice.
    let report = coalition_app::jobs::run(&t.app, "campaigns", Utc::now())
        .await
        .unwrap();
    assert_eq!(report["assigned"], 0, "{report}");
    assert_eq!(campaign_members(&t, admin, &c).await, expected);

    // at_risk: the programme's latest CLV model's parameters decide, on the day of assignment.
    let prog = t.programme("At-risk campaign").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (status, report) = post_import(&t, &prog.admin, shop.id, "csv", &clv_history()).await;
    assert_eq!(status, 200, "{report}");
    t.post(
        "/v1/campaigns",
        &prog.admin,
        campaign(json!({"kind": "at_risk", "p_alive_below": 0.3})),
    )
    .await
    .expect_problem(409, "no_clv_model");
    t.post(
        "/v1/analytics/clv-models",
        &prog.admin,
        json!({"calibration_end": END}),
    )
    .await
    .expect(201);
    let c = t
        .post(
            "/v1/campaigns",
            &prog.admin,
            campaign(json!({"kind": "at_risk", "p_alive_below": 0.3})),
        )
        .await
        .expect(201);
    assert_eq!(c["segment"]["p_alive_below"], 0.3);
    let listed: BTreeSet<String> = all_pages(
        &t,
        &prog.admin,
        "/v1/analytics/at-risk?p_alive_below=0.3",
        50,
    )
    .await
    .iter()
    .map(|m| m["member_id"].as_str().unwrap().to_owned())
    .collect();
    let assigned = campaign_members(&t, &prog.admin, &c).await;
    assert!(listed.len() > 7, "{}", listed.len());
    // The list judges as of the model's calibration end; the campaign as of the day it
    // assigns (today, long after this history ends): whoever was slipping away then and
    // bought nothing since still is, and others (the steady buyer, silent since) joined.
    assert!(assigned.is_superset(&listed), "{assigned:?} ⊉ {listed:?}");
    assert!(assigned.contains(&member_of(&t, prog.id, "lapsed").await));
    assert!(!listed.contains(&member_of(&t, prog.id, "steady").await));
}

/// Timings at about a million purchases (ignored: run by hand with `--ignored
/// --nocapture`): 30,000 imported members, each purchase then copied back week by week
/// (47 weeks, about 70 % of them kept at random) by SQL.
#[tokio::test]
#[ignore]
async fn classics_at_a_million_purchases() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let t = spawn_app().await;
    let prog = t.programme("Million").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let mut csv = String::from("customer_ref,date,amount\n");
    for i in 0..30_000u32 {
        csv.push_str(&format!(
            "c{i},2025-06-30,{}.{:02}\n",
            (i * 37) % 200 + 1,
            i % 100
        ));
    }
    let started = std::time::Instant::now();
    let (status, report) = post_import(&t, &prog.admin, shop.id, "csv", &csv).await;
    assert_eq!(status, 200, "{report}");
    eprintln!("import of 30,000: {:?}", started.elapsed());
    let db = &t.app.db;
    let backend = db.get_database_backend();
    let started = std::time::Instant::now();
    for k in 1..=47 {
        let sql = match backend {
            DbBackend::Postgres => format!(
                "INSERT INTO purchases (id, programme_id, partner_id, account_id, card_number, external_ref, store_ref, staff_ref, amount, currency, discount, points_earned, points_redeemed, refunded_amount, points_clawed_back, points_returned, entry_id, created_at, occurred_at) \
                 SELECT gen_random_uuid(), programme_id, partner_id, account_id, card_number, external_ref || '-{k}', store_ref, staff_ref, amount, currency, discount, points_earned, points_redeemed, refunded_amount, points_clawed_back, points_returned, entry_id, created_at, occurred_at - make_interval(days => {d}) \
                 FROM purchases WHERE programme_id = '{p}' AND external_ref NOT LIKE '%-%' AND random() < 0.7",
                d = 7 * k,
                p = prog.id
            ),
            _ => format!(
                "INSERT INTO purchases (id, programme_id, partner_id, account_id, card_number, external_ref, store_ref, staff_ref, amount, currency, discount, points_earned, points_redeemed, refunded_amount, points_clawed_back, points_returned, entry_id, created_at, occurred_at) \
                 SELECT randomblob(16), programme_id, partner_id, account_id, card_number, external_ref || '-{k}', store_ref, staff_ref, amount, currency, discount, points_earned, points_redeemed, refunded_amount, points_clawed_back, points_returned, entry_id, created_at, strftime('%Y-%m-%d %H:%M:%S+00:00', occurred_at, '-{d} days') \
                 FROM purchases WHERE programme_id = ? AND external_ref NOT LIKE '%-%' AND abs(random()) % 10 < 7",
                d = 7 * k
            ),
        };
        let values: Vec<sea_orm::Value> = match backend {
            DbBackend::Postgres => vec![],
            _ => vec![prog.id.into()],
        };
        db.execute(Statement::from_sql_and_values(backend, sql, values))
            .await
            .unwrap();
    }
    let count = db
        .query_one(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM purchases",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    eprintln!("{count} purchases written in {:?}", started.elapsed());
    for path in [
        "/v1/analytics/pareto?from=2024-07-01&to=2025-06-30".to_owned(),
        format!(
            "/v1/analytics/pareto?from=2024-07-01&to=2025-06-30&partner_id={}",
            shop.id
        ),
        "/v1/analytics/abc-xyz?from=2024-07-01&to=2025-06-30".to_owned(),
        "/v1/analytics/abc-xyz/members?from=2024-07-01&to=2025-06-30&class=AX&limit=20".to_owned(),
        "/v1/analytics/rfm?as_of=2025-06-30&limit=20".to_owned(),
        "/v1/analytics/rfm?as_of=2025-06-30&segment=champions&limit=20".to_owned(),
    ] {
        let started = std::time::Instant::now();
        let answer = t.get(&path, &prog.admin).await.expect(200);
        let summary = answer
            .get("members")
            .cloned()
            .unwrap_or_else(|| json!(answer["data"].as_array().map(|d| d.len())));
        eprintln!("{path}: {:?} ({summary})", started.elapsed());
    }
}
