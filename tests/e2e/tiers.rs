//! Tiers end to end: the ladder (CRUD, validation, isolation), the purchase that crosses
//! a threshold, refunds, requalification (twice, concurrently, from the CLI), floors set
//! by hand, the history and the outbox.

use crate::support::*;
use chrono::{Duration, Utc};
use coalition_store::entities::{outbox_event, programme, tier_history};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use uuid::Uuid;

fn tier_body(name: &str, rank: i64, spend: &str, discount: &str, multiplier: &str) -> Value {
    json!({
        "name": name, "rank": rank,
        "qualifying_spend": {"amount": spend, "currency": "EUR"},
        "discount_percent": discount, "earn_multiplier": multiplier,
    })
}

/// Basic (entry, 5 %), Gold (from 100.00, 15 %), VIP (from 1000.00, 25 %): their ids.
async fn ladder(t: &TestApp, p: &Programme) -> (String, String, String) {
    let mut ids = Vec::new();
    for (name, rank, spend, discount, multiplier) in [
        ("Basic", 1, "0", "5", "1"),
        ("Gold", 2, "100.00", "15", "1.5"),
        ("VIP", 3, "1000.00", "25", "2"),
    ] {
        let body = tier_body(name, rank, spend, discount, multiplier);
        let tier = t.post("/v1/tiers", &p.admin, body).await.expect(201);
        ids.push(tier["id"].as_str().unwrap().to_owned());
    }
    (ids[0].clone(), ids[1].clone(), ids[2].clone())
}

async fn member(t: &TestApp, admin: &str, id: &str) -> Value {
    t.get(&format!("/v1/members/{id}"), admin).await.expect(200)
}

fn tier_name(member: &Value) -> &str {
    member["tier"]["name"].as_str().unwrap_or("none")
}

async fn history(t: &TestApp, token: &str, id: &str) -> Vec<Value> {
    t.get(&format!("/v1/members/{id}/tiers"), token)
        .await
        .expect(200)["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn effective(t: &TestApp, p: &Programme, member_id: &str) -> Option<String> {
    let id: Uuid = member_id.parse().unwrap();
    coalition_app::tiers::member_tier(&t.app, &t.app.db, p.id, Some(id), Utc::now())
        .await
        .unwrap()
        .map(|terms| terms.name)
}

async fn tier_events(t: &TestApp, p: &Programme) -> Vec<Value> {
    outbox_event::Entity::find()
        .filter(outbox_event::Column::ProgrammeId.eq(p.id))
        .filter(outbox_event::Column::EventType.eq("tier.changed"))
        .all(&t.app.db)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect()
}

async fn history_rows(t: &TestApp, p: &Programme, kind: &str) -> u64 {
    tier_history::Entity::find()
        .filter(tier_history::Column::ProgrammeId.eq(p.id))
        .filter(tier_history::Column::Kind.eq(kind))
        .count(&t.app.db)
        .await
        .unwrap()
}

async fn terms_version(t: &TestApp, p: &Programme) -> i64 {
    programme::Entity::find_by_id(p.id)
        .one(&t.app.db)
        .await
        .unwrap()
        .unwrap()
        .terms_version
}

#[tokio::test]
async fn the_ladder_is_managed_validated_and_kept_to_its_programme() {
    let t = spawn_app().await;
    let p = t.programme("Coalition").await;
    let other = t.programme("Other").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let before = terms_version(&t, &p).await;

    // Created out of order, listed by rank.
    let gold = t
        .post(
            "/v1/tiers",
            &p.admin,
            tier_body("Gold", 20, "500.00", "15", "1.5"),
        )
        .await;
    let location = gold.headers["location"].to_str().unwrap().to_owned();
    let gold = gold.expect(201);
    assert_eq!(
        location,
        format!("/v1/tiers/{}", gold["id"].as_str().unwrap())
    );
    assert_eq!(
        gold["qualifying_spend"],
        json!({"amount": "500.00", "currency": "EUR"})
    );
    assert_eq!(
        (
            gold["discount_percent"].as_str(),
            gold["earn_multiplier"].as_str()
        ),
        (Some("15"), Some("1.5"))
    );
    t.post("/v1/tiers", &p.admin, tier_body("Basic", 10, "0", "5", "1"))
        .await
        .expect(201);
    t.post(
        "/v1/tiers",
        &p.admin,
        tier_body("VIP", 30, "2000", "25.5", "2"),
    )
    .await
    .expect(201);
    let list = t.get("/v1/tiers", &p.admin).await.expect(200);
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Basic", "Gold", "VIP"]);
    let page = t.get("/v1/tiers?limit=2", &p.admin).await.expect(200);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = t
        .get(&format!("/v1/tiers?limit=2&cursor={cursor}"), &p.admin)
        .await
        .expect(200);
    assert_eq!(rest["data"][0]["name"], "VIP");
    assert!(
        terms_version(&t, &p).await >= before + 3,
        "every change bumps the terms"
    );

    // Read and change.
    let path = location;
    assert_eq!(t.get(&path, &p.admin).await.expect(200)["name"], "Gold");
    let version = terms_version(&t, &p).await;
    let patched = t
        .call(reqwest::Method::PATCH, &path, Some(&p.admin), Some(json!({"discount_percent": "12.5", "qualifying_spend": {"amount": "400", "currency": "EUR"}})), None)
        .await
        .expect(200);
    assert_eq!(patched["discount_percent"], "12.5");
    assert_eq!(patched["qualifying_spend"]["amount"], "400.00");
    assert_eq!(patched["name"], "Gold", "absent fields stay");
    assert_eq!(terms_version(&t, &p).await, version + 1);

    // A rank is the programme's once.
    t.post(
        "/v1/tiers",
        &p.admin,
        tier_body("Silver", 10, "100", "7", "1.2"),
    )
    .await
    .expect_problem(409, "tier_rank_taken");
    t.call(
        reqwest::Method::PATCH,
        &path,
        Some(&p.admin),
        Some(json!({"rank": 30})),
        None,
    )
    .await
    .expect_problem(409, "tier_rank_taken");
    // ...of this programme only.
    t.post(
        "/v1/tiers",
        &other.admin,
        tier_body("Their Basic", 10, "0", "5", "1"),
    )
    .await
    .expect(201);

    // Bad values: nothing written.
    for (field, body) in [
        ("discount_percent", tier_body("X", 40, "0", "100.5", "1")),
        ("discount_percent", tier_body("X", 40, "0", "-1", "1")),
        ("discount_percent", tier_body("X", 40, "0", "1.00001", "1")),
        ("earn_multiplier", tier_body("X", 40, "0", "5", "0.5")),
        ("earn_multiplier", tier_body("X", 40, "0", "5", "101")),
        (
            "qualifying_spend.amount",
            tier_body("X", 40, "-1", "5", "1"),
        ),
        (
            "qualifying_spend.amount",
            tier_body("X", 40, "1.005", "5", "1"),
        ),
        ("rank", tier_body("X", -1, "0", "5", "1")),
        ("name", tier_body(" ", 40, "0", "5", "1")),
    ] {
        let problem = t
            .post("/v1/tiers", &p.admin, body)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let mut usd = tier_body("X", 40, "0", "5", "1");
    usd["qualifying_spend"]["currency"] = json!("USD");
    t.post("/v1/tiers", &p.admin, usd)
        .await
        .expect_problem(422, "currency_mismatch");
    let list = t.get("/v1/tiers", &p.admin).await.expect(200);
    assert_eq!(list["data"].as_array().unwrap().len(), 3);

    // Admin only; another programme's tier is not found.
    t.get("/v1/tiers", &gym.token)
        .await
        .expect_problem(403, "insufficient_scope");
    t.get(&path, &other.admin)
        .await
        .expect_problem(404, "not_found");
    t.call(
        reqwest::Method::PATCH,
        &path,
        Some(&other.admin),
        Some(json!({"name": "Mine"})),
        None,
    )
    .await
    .expect_problem(404, "not_found");
    t.get("/v1/tiers/not-a-uuid", &p.admin)
        .await
        .expect_problem(404, "not_found");
    let theirs = t.get("/v1/tiers", &other.admin).await.expect(200);
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_purchase_that_crosses_a_threshold_upgrades_the_member_for_the_next_one() {
    let t = spawn_app().await;
    let p = t.programme("Coalition").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let shop = t.partner(&p, "Shop", "1").await;
    let stranger = t.partner(&p, "Stranger", "1").await;
    let (basic, gold, _vip) = ladder(&t, &p).await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;

    let profile = member(&t, &p.admin, &ann).await;
    assert_eq!(
        tier_name(&profile),
        "Basic",
        "the entry tier needs no spend"
    );
    assert_eq!(profile["tier_status"]["source"], "qualified");
    assert_eq!(profile["tier_status"]["next_tier"]["name"], "Gold");
    assert_eq!(
        profile["tier_status"]["spend_to_next_tier"]["amount"],
        "100.00"
    );

    t.purchase(&gym, &card, "60.00", 0).await;
    assert_eq!(effective(&t, &p, &ann).await.as_deref(), Some("Basic"));
    // Spend is counted across the coalition: the shop's purchase crosses Gold's 100.00.
    t.purchase(&shop, &card, "45.50", 0).await;
    assert_eq!(
        effective(&t, &p, &ann).await.as_deref(),
        Some("Gold"),
        "the next purchase is priced with the new tier"
    );
    let profile = member(&t, &p.admin, &ann).await;
    assert_eq!(tier_name(&profile), "Gold");
    let status = &profile["tier_status"];
    assert_eq!(status["qualified_tier"]["id"].as_str(), Some(gold.as_str()));
    assert_eq!(
        status["qualifying_spend"],
        json!({"amount": "105.50", "currency": "EUR"})
    );
    assert_eq!(status["next_tier"]["name"], "VIP");
    assert_eq!(status["spend_to_next_tier"]["amount"], "894.50");
    assert_eq!(profile["tier"]["discount_percent"], "15");

    // One history row, one event; the partners that sold to her see it, others do not.
    let rows = history(&t, &shop.token, &ann).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["kind"], "qualified");
    assert_eq!(rows[0]["from_tier"]["id"].as_str(), Some(basic.as_str()));
    assert_eq!(rows[0]["to_tier"]["id"].as_str(), Some(gold.as_str()));
    assert_eq!(rows[0]["effective_tier"]["name"], "Gold");
    t.get(&format!("/v1/members/{ann}/tiers"), &stranger.token)
        .await
        .expect_problem(404, "not_found");
    let events = tier_events(&t, &p).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["member_id"].as_str(), Some(ann.as_str()));
    assert_eq!(events[0]["kind"], "qualified");
    assert_eq!(events[0]["to_tier"]["name"], "Gold");

    // More spend within Gold changes nothing.
    t.purchase(&gym, &card, "10.00", 0).await;
    assert_eq!(history(&t, &p.admin, &ann).await.len(), 1);

    // A bearer card has no member, so no tier; its spend counts for nobody.
    let bearer = bearer_card(&t, &gym).await;
    t.purchase(&gym, &bearer, "5000.00", 0).await;
    let none = coalition_app::tiers::member_tier(&t.app, &t.app.db, p.id, None, Utc::now())
        .await
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(tier_events(&t, &p).await.len(), 1);
    assert_accounts_consistent(&t.app.db, p.id).await;
}

#[tokio::test]
async fn refunds_lower_qualifying_spend_and_only_requalification_downgrades() {
    let t = spawn_app().await;
    let p = t.programme("Coalition").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let _ = ladder(&t, &p).await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;
    let bought = t.purchase(&gym, &card, "120.00", 0).await;
    assert_eq!(tier_name(&member(&t, &p.admin, &ann).await), "Gold");

    t.post_moving(
        &format!("/v1/purchases/{}/refunds", bought["id"].as_str().unwrap()),
        &gym.token,
        json!({"amount": {"amount": "50.00", "currency": "EUR"}}),
    )
    .await
    .expect(201);
    let profile = member(&t, &p.admin, &ann).await;
    assert_eq!(
        profile["tier_status"]["qualifying_spend"]["amount"],
        "70.00"
    );
    assert_eq!(
        tier_name(&profile),
        "Gold",
        "a refund never downgrades by itself"
    );
    assert_eq!(history(&t, &p.admin, &ann).await.len(), 1);

    let report = coalition_app::tiers::requalify(&t.app.db, Utc::now())
        .await
        .unwrap();
    assert_eq!((report.downgraded, report.upgraded), (1, 0), "{report:?}");
    let profile = member(&t, &p.admin, &ann).await;
    assert_eq!(tier_name(&profile), "Basic");
    let rows = history(&t, &p.admin, &ann).await;
    assert_eq!(rows[0]["kind"], "requalified", "newest first");
    assert_eq!(
        (
            rows[0]["from_tier"]["name"].as_str(),
            rows[0]["to_tier"]["name"].as_str()
        ),
        (Some("Gold"), Some("Basic"))
    );
    assert_eq!(tier_events(&t, &p).await.len(), 2);

    // Spend that climbs back crosses the threshold again at the purchase.
    t.purchase(&gym, &card, "30.00", 0).await;
    assert_eq!(tier_name(&member(&t, &p.admin, &ann).await), "Gold");
    assert_accounts_consistent(&t.app.db, p.id).await;
}

#[tokio::test]
async fn spend_older_than_twelve_months_drops_out_at_requalification_once() {
    let t = spawn_app().await;
    let p = t.programme("Coalition").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let _ = ladder(&t, &p).await;
    let mut members = Vec::new();
    for i in 0..3 {
        let (id, card) = t.member_with_card(&gym, &format!("m{i}@example.org")).await;
        t.purchase(&gym, &card, "1500.00", 0).await;
        members.push(id);
    }
    // A recent small spender: Basic, nothing to change.
    let (quiet, quiet_card) = t.member_with_card(&gym, "quiet@example.org").await;
    t.purchase(&gym, &quiet_card, "10.00", 0).await;
    for id in &members {
        assert_eq!(tier_name(&member(&t, &p.admin, id).await), "VIP");
    }

    // Eleven months on, the spend still counts; a year and a day on it does not.
    let soon = Utc::now() + Duration::days(330);
    let report = coalition_app::tiers::requalify(&t.app.db, soon)
        .await
        .unwrap();
    assert_eq!(
        (report.upgraded, report.downgraded, report.members_checked),
        (0, 0, 0),
        "{report:?}"
    );
    let later = Utc::now() + Duration::days(367);
    let runs = (0..4).map(|_| coalition_app::tiers::requalify(&t.app.db, later));
    let reports = futures::future::join_all(runs).await;
    let downgraded: u64 = reports.iter().map(|r| r.as_ref().unwrap().downgraded).sum();
    assert_eq!(
        downgraded, 3,
        "each member once across concurrent runs: {reports:?}"
    );
    let again = coalition_app::tiers::requalify(&t.app.db, later)
        .await
        .unwrap();
    assert_eq!((again.downgraded, again.upgraded), (0, 0), "{again:?}");
    assert_eq!(history_rows(&t, &p, "requalified").await, 3);
    assert_eq!(
        tier_events(&t, &p).await.len(),
        3 + 3,
        "three upgrades, three downgrades"
    );
    for id in &members {
        let rows = history(&t, &p.admin, id).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0]["from_tier"]["name"].as_str(),
                rows[0]["to_tier"]["name"].as_str()
            ),
            (Some("VIP"), Some("Basic"))
        );
    }
    assert!(history(&t, &p.admin, &quiet).await.is_empty());
}

#[tokio::test]
async fn requalification_from_the_cli_and_in_process_at_once_changes_each_member_once() {
    let database_url = fresh_database_url().await;
    let t = spawn_app_with_settings(&[("DATABASE_URL", &database_url)]).await;
    let p = t.programme("Coalition").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let _ = ladder(&t, &p).await;
    let mut members = Vec::new();
    for i in 0..4 {
        let (id, card) = t.member_with_card(&gym, &format!("m{i}@example.org")).await;
        t.purchase(&gym, &card, "200.00", 0).await;
        members.push(id);
    }
    let later = Utc::now() + Duration::days(400);
    let mut env = vec![("DATABASE_URL", database_url.clone())];
    if let Some(redis) = test_redis_url() {
        env.push(("REDIS_URL", redis));
    }
    let cli = tokio::task::spawn_blocking({
        let env = env.clone();
        move || {
            coalition(&env)
                .args(["jobs", "requalify", "--now", &later.to_rfc3339()])
                .output()
                .expect("coalition jobs requalify")
        }
    });
    let here = coalition_app::tiers::requalify(&t.app.db, later)
        .await
        .unwrap();
    let out = cli.await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).expect("one JSON report on stdout");
    let cli_downgraded = printed["downgraded"].as_u64().unwrap();
    assert_eq!(here.downgraded + cli_downgraded, 4, "{here:?} {printed}");
    assert_eq!(history_rows(&t, &p, "requalified").await, 4);
    for id in &members {
        assert_eq!(tier_name(&member(&t, &p.admin, id).await), "Basic");
    }
}

#[tokio::test]
async fn a_manual_floor_lifts_the_tier_until_it_ends() {
    let t = spawn_app().await;
    let p = t.programme("Coalition").await;
    let other = t.programme("Other").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let (basic, gold, vip) = ladder(&t, &p).await;
    let (their_basic, _, _) = ladder(&t, &other).await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "150.00", 0).await; // Gold
    let path = format!("/v1/members/{ann}/tier");
    let ends_at = Utc::now() + Duration::milliseconds(1500);
    let floor = json!({"tier_id": vip, "reason": "Goodwill after a complaint", "ends_at": ends_at});

    // Refusals first: nothing is written by them.
    t.post(&path, &gym.token, floor.clone())
        .await
        .expect_problem(403, "insufficient_scope");
    t.post(&path, &other.admin, floor.clone())
        .await
        .expect_problem(404, "not_found");
    let mut foreign = floor.clone();
    foreign["tier_id"] = json!(their_basic);
    t.post(&path, &p.admin, foreign)
        .await
        .expect_problem(404, "not_found");
    let mut past = floor.clone();
    past["ends_at"] = json!(Utc::now() - Duration::hours(1));
    t.post(&path, &p.admin, past)
        .await
        .expect_problem(422, "validation_failed");
    let mut no_reason = floor.clone();
    no_reason["reason"] = json!("");
    t.post(&path, &p.admin, no_reason)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(history(&t, &p.admin, &ann).await.len(), 1);

    let status = t.post(&path, &p.admin, floor).await.expect(200);
    assert_eq!(status["tier"]["name"], "VIP");
    assert_eq!(status["source"], "floor");
    assert_eq!(status["qualified_tier"]["name"], "Gold");
    assert_eq!(status["floor"]["reason"], "Goodwill after a complaint");
    assert_eq!(effective(&t, &p, &ann).await.as_deref(), Some("VIP"));
    let rows = history(&t, &p.admin, &ann).await;
    assert_eq!(rows[0]["kind"], "manual");
    assert_eq!(
        (
            rows[0]["from_tier"]["name"].as_str(),
            rows[0]["to_tier"]["name"].as_str()
        ),
        (Some("Gold"), Some("VIP"))
    );

    // The floor ends by itself: the member is back on the qualified tier.
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let profile = member(&t, &p.admin, &ann).await;
    assert_eq!(tier_name(&profile), "Gold");
    assert_eq!(profile["tier_status"]["floor"], Value::Null);
    assert_eq!(effective(&t, &p, &ann).await.as_deref(), Some("Gold"));
    // Requalification records that it ended, once.
    let report = coalition_app::tiers::requalify(&t.app.db, Utc::now())
        .await
        .unwrap();
    assert_eq!(report.floors_ended, 1, "{report:?}");
    let again = coalition_app::tiers::requalify(&t.app.db, Utc::now())
        .await
        .unwrap();
    assert_eq!(again.floors_ended, 0, "{again:?}");
    let rows = history(&t, &p.admin, &ann).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["kind"], "floor_ended");
    assert_eq!(
        (
            rows[0]["from_tier"]["name"].as_str(),
            rows[0]["to_tier"]["name"].as_str()
        ),
        (Some("VIP"), Some("Gold"))
    );
    assert_eq!(rows[0]["reason"], "Goodwill after a complaint");
    assert_eq!(tier_events(&t, &p).await.len(), 3);

    // A floor below the qualified tier changes nothing about the effective tier.
    let low =
        json!({"tier_id": basic, "reason": "Mistake", "ends_at": Utc::now() + Duration::days(3)});
    let status = t.post(&path, &p.admin, low).await.expect(200);
    assert_eq!(
        (status["tier"]["id"].as_str(), status["source"].as_str()),
        (Some(gold.as_str()), Some("qualified"))
    );
}

#[tokio::test]
async fn spend_before_the_ladder_existed_counts_and_requalification_upgrades_on_it() {
    // On PostgreSQL these purchases take the one-statement path (no tiers yet), which
    // records the spend as the step-by-step path does.
    let t = spawn_app().await;
    let p = t.programme("Coalition").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "100.00", 0).await;
    t.purchase(&gym, &card, "50.25", 0).await;
    let before = member(&t, &p.admin, &ann).await;
    assert_eq!(before["tier"], Value::Null, "no ladder, no tier");
    assert_eq!(before["tier_status"]["qualifying_spend"]["amount"], "0.00");

    let (_, gold, _) = ladder(&t, &p).await;
    let profile = member(&t, &p.admin, &ann).await;
    assert_eq!(
        profile["tier_status"]["qualifying_spend"]["amount"],
        "150.25"
    );
    assert_eq!(
        tier_name(&profile),
        "Basic",
        "qualifying spend alone moves nobody"
    );
    assert_eq!(
        profile["tier_status"]["spend_to_next_tier"]["amount"],
        "0.00"
    );

    let report = coalition_app::tiers::requalify(&t.app.db, Utc::now())
        .await
        .unwrap();
    assert_eq!((report.upgraded, report.downgraded), (1, 0), "{report:?}");
    let profile = member(&t, &p.admin, &ann).await;
    assert_eq!(profile["tier"]["id"].as_str(), Some(gold.as_str()));
    assert_eq!(history(&t, &p.admin, &ann).await[0]["kind"], "requalified");
}

/// For each member, the qualified tier's history is one unbroken chain (each change
/// starts where the one before ended, starting from the entry tier) ending at the tier
/// stored now: no change was made twice or on a stale reading.
async fn assert_history_chains(t: &TestApp, p: &Programme, member_id: &str, entry: &str) {
    let mut rows = Vec::new();
    let mut path = format!("/v1/members/{member_id}/tiers?limit=100");
    loop {
        let page = t.get(&path, &p.admin).await.expect(200);
        rows.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/members/{member_id}/tiers?limit=100&cursor={c}"),
            None => break,
        }
    }
    rows.reverse();
    let mut at = entry.to_owned();
    for row in rows
        .iter()
        .filter(|r| r["kind"] != "manual" && r["kind"] != "floor_ended")
    {
        let id = |side: &str| row[side]["id"].as_str().unwrap_or("none").to_owned();
        assert_eq!(id("from_tier"), at, "broken chain at {row}");
        assert_ne!(id("to_tier"), at, "a change to the same tier: {row}");
        at = id("to_tier");
    }
    let stored = member(t, &p.admin, member_id).await["tier_status"]["qualified_tier"]["id"]
        .as_str()
        .unwrap_or("none")
        .to_owned();
    assert_eq!(stored, at, "the history ends at the stored tier");
}

#[tokio::test]
async fn purchases_refunds_and_requalification_racing_keep_one_consistent_history() {
    let t = spawn_app().await;
    let p = t.programme("Coalition").await;
    let gym = t.partner(&p, "Gym", "1").await;
    let (basic, _, _) = ladder(&t, &p).await;
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(t.member_with_card(&gym, &format!("m{i}@example.org")).await);
    }
    let shoppers = members.iter().map(|(_, card)| {
        let (t, gym) = (&t, &gym);
        async move {
            for round in 0..6 {
                let bought = t.purchase(gym, card, "400.00", 0).await;
                if round % 2 == 1 {
                    let refund = json!({"amount": {"amount": "400.00", "currency": "EUR"}});
                    let path = format!("/v1/purchases/{}/refunds", bought["id"].as_str().unwrap());
                    t.post_moving(&path, &gym.token, refund).await.expect(201);
                }
            }
        }
    });
    let jobs = (0..3).map(|_| async {
        for _ in 0..5 {
            coalition_app::tiers::requalify(&t.app.db, Utc::now())
                .await
                .unwrap();
        }
    });
    tokio::join!(
        futures::future::join_all(shoppers),
        futures::future::join_all(jobs)
    );
    // 3 × 400.00 stays: VIP (from 1000.00) once requalified.
    coalition_app::tiers::requalify(&t.app.db, Utc::now())
        .await
        .unwrap();
    for (id, _) in &members {
        let profile = member(&t, &p.admin, id).await;
        assert_eq!(
            profile["tier_status"]["qualifying_spend"]["amount"],
            "1200.00"
        );
        assert_eq!(tier_name(&profile), "VIP");
        assert_history_chains(&t, &p, id, &basic).await;
    }
    let events = tier_events(&t, &p).await.len() as u64;
    let rows = tier_history::Entity::find()
        .filter(tier_history::Column::ProgrammeId.eq(p.id))
        .count(&t.app.db)
        .await
        .unwrap();
    assert_eq!(events, rows, "one outbox event per history row");
    assert_accounts_consistent(&t.app.db, p.id).await;
}
