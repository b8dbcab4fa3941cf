//! Campaigns end to end: create/list/get/patch/end and validation, each segment kind,
//! the reward in the breakdown posted from the funder's account, the holdout (recorded
//! and rewarded with nothing, its share on 10 000 members), the budget under 50
//! concurrent purchases (two server processes on PostgreSQL), win-back reminders.

use crate::support::*;
use chrono::{Duration, Utc};
use coalition_store::entities::{
    campaign_member, member, outbox_event, posting, purchase, tier_spend_day,
};
use reqwest::Method;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use uuid::Uuid;

fn in_days(days: i64) -> String {
    (Utc::now() + Duration::days(days)).to_rfc3339()
}

/// A campaign body: every member listed, bonus 10 from the operator, 0 % holdout.
fn body(members: &[&str]) -> Value {
    json!({
        "name": "Spring", "segment": {"kind": "members", "member_ids": members},
        "reward": {"kind": "bonus", "value": "10"}, "funder": {"kind": "operator"},
        "budget_points": 100000, "ends_at": in_days(30),
    })
}

fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

async fn create(t: &Client, admin: &str, body: Value) -> Value {
    t.post("/v1/campaigns", admin, body).await.expect(201)
}

async fn patch(t: &Client, token: &str, path: &str, body: Value) -> Resp {
    t.call(Method::PATCH, path, Some(token), Some(body), None)
        .await
}

/// The member ids of one group, through the paginated API.
async fn group(t: &Client, admin: &str, campaign: &Value, group: &str) -> BTreeSet<String> {
    let id = campaign["id"].as_str().unwrap();
    let mut found = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/campaigns/{id}/members?group={group}&limit=100");
        if let Some(c) = &cursor {
            path += &format!("&cursor={c}");
        }
        let page = t.get(&path, admin).await.expect(200);
        for m in page["data"].as_array().unwrap() {
            assert_eq!(m["group"], group);
            assert!(m["assigned_at"].is_string());
            found.insert(m["member_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return found,
        }
    }
}

/// Moves the member's purchases (and the days their spend counts on) `days` back.
async fn backdate(db: &sea_orm::DatabaseConnection, member_id: &str, days: i64) {
    let account = stored_account(db, member_id).await.id;
    let then = Utc::now() - Duration::days(days);
    purchase::Entity::update_many()
        .col_expr(purchase::Column::CreatedAt, Expr::value(then))
        .filter(purchase::Column::AccountId.eq(account))
        .exec(db)
        .await
        .unwrap();
    let member: Uuid = member_id.parse().unwrap();
    tier_spend_day::Entity::update_many()
        .col_expr(tier_spend_day::Column::Day, Expr::value(then.date_naive()))
        .filter(tier_spend_day::Column::MemberId.eq(member))
        .exec(db)
        .await
        .unwrap();
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The campaign lines of a purchase: (campaign_id, points, funder kind).
fn campaign_lines(purchase: &Value) -> Vec<(String, i64, String)> {
    purchase["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "campaign")
        .map(|l| {
            (
                l["campaign_id"].as_str().unwrap().to_owned(),
                l["points"].as_i64().unwrap(),
                l["funder"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn campaigns_are_created_listed_read_changed_before_start_and_ended() {
    let t = spawn_app().await;
    let prog = t.programme("Campaigns").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (ann, _) = t.member_with_card(&gym, "ann@example.org").await;
    let later = with(
        body(&[&ann]),
        json!({"starts_at": in_days(2), "holdout_percent": 10}),
    );
    let resp = t.post("/v1/campaigns", &prog.admin, later).await;
    let location = resp.headers["location"].to_str().unwrap().to_owned();
    let created = resp.expect(201);
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/campaigns/{id}"));
    assert_eq!(
        (
            created["status"].as_str(),
            created["holdout_percent"].as_i64()
        ),
        (Some("scheduled"), Some(10))
    );
    assert_eq!(created["budget_used"], 0);
    let listed = t
        .get("/v1/campaigns?limit=1", &prog.admin)
        .await
        .expect(200);
    assert_eq!(listed["data"][0]["id"], id);
    let read = t.get(&location, &prog.admin).await.expect(200);
    assert_eq!(read["segment"]["member_ids"][0], ann.as_str());
    // Not started: every field may change, and nobody is assigned yet.
    let changed = patch(
        &t,
        &prog.admin,
        &location,
        json!({"name": "Summer", "reward": {"kind": "multiplier", "value": "2"}}),
    )
    .await
    .expect(200);
    assert_eq!(
        (
            changed["name"].as_str(),
            changed["reward"]["value"].as_str()
        ),
        (Some("Summer"), Some("2"))
    );
    assert!(group(&t, &prog.admin, &created, "treatment")
        .await
        .is_empty());
    // Starting it now assigns the segment at once; then it is frozen.
    let started = patch(
        &t,
        &prog.admin,
        &location,
        json!({"starts_at": in_days(-1)}),
    )
    .await
    .expect(200);
    assert_eq!(started["status"], "running");
    let assigned = group(&t, &prog.admin, &created, "treatment").await.len()
        + group(&t, &prog.admin, &created, "control").await.len();
    assert_eq!(assigned, 1);
    patch(&t, &prog.admin, &location, json!({"name": "Autumn"}))
        .await
        .expect_problem(409, "campaign_started");
    let end = format!("{location}/end");
    let ended = t.post(&end, &prog.admin, json!({})).await.expect(200);
    assert_eq!(ended["status"], "ended");
    let again = t.post(&end, &prog.admin, json!({})).await.expect(200);
    assert_eq!(
        again["ends_at"], ended["ends_at"],
        "ending twice changes nothing"
    );

    // Another programme's campaign does not exist for this one; partners may not see any.
    let other = t.programme("Other").await;
    t.get(&location, &other.admin)
        .await
        .expect_problem(404, "not_found");
    t.post(&end, &other.admin, json!({}))
        .await
        .expect_problem(404, "not_found");
    let members = format!("{location}/members");
    t.get(&members, &other.admin)
        .await
        .expect_problem(404, "not_found");
    assert_eq!(t.get(&location, &gym.token).await.status, 403);
    assert_eq!(
        t.post("/v1/campaigns", &gym.token, body(&[&ann]))
            .await
            .status,
        403
    );
    t.get(&format!("{members}?group=both"), &prog.admin)
        .await
        .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn bad_campaigns_are_refused_with_every_field_named_and_nothing_written() {
    let t = spawn_app().await;
    let prog = t.programme("Campaigns").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (ann, _) = t.member_with_card(&gym, "ann@example.org").await;
    let other = t.programme("Other").await;
    let stranger = t.partner(&other, "Elsewhere", "1").await;
    let (foreign_member, _) = t.member_with_card(&stranger, "bob@example.org").await;
    let fields = |answer: Value| -> BTreeSet<String> {
        answer["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    };
    let bad = with(
        body(&[&ann]),
        json!({
            "starts_at": in_days(5), "ends_at": in_days(4), "budget_points": 0,
            "holdout_percent": 101,
            "reward": {"kind": "bonus", "value": "1.5", "partner_ids": [stranger.id]},
            "funder": {"kind": "bank", "partner_id": gym.id},
            "segment": {"kind": "members", "member_ids": [foreign_member]},
        }),
    );
    let refused = t
        .post("/v1/campaigns", &prog.admin, bad)
        .await
        .expect_problem(422, "validation_failed");
    let expected: BTreeSet<String> = [
        "ends_at",
        "budget_points",
        "holdout_percent",
        "reward.value",
        "reward.partner_ids",
        "funder.partner_id",
        "segment.member_ids",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(fields(refused), expected);
    let segments = [
        (
            json!({"kind": "tier", "tier_id": Uuid::new_v4()}),
            "segment.tier_id",
        ),
        (json!({"kind": "lapsed"}), "segment.days"),
        (
            json!({"kind": "cross_sell", "buys_at": gym.id, "never_at": gym.id}),
            "segment.never_at",
        ),
        (
            json!({"kind": "partner_members", "partner_id": stranger.id}),
            "segment.partner_id",
        ),
        (
            json!({"kind": "spend_band", "window_days": 30}),
            "segment.min_spend",
        ),
        (json!({"kind": "nobody"}), "segment.kind"),
        (
            json!({"kind": "lapsed", "days": 30, "member_ids": []}),
            "segment.member_ids",
        ),
    ];
    for (segment, field) in segments {
        let refused = t
            .post(
                "/v1/campaigns",
                &prog.admin,
                with(body(&[&ann]), json!({"segment": segment})),
            )
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            fields(refused.clone()).contains(field),
            "{field}: {refused}"
        );
    }
    let reminder_without_lapse = with(body(&[&ann]), json!({"reminder": true}));
    let refused = t
        .post("/v1/campaigns", &prog.admin, reminder_without_lapse)
        .await
        .expect_problem(422, "validation_failed");
    assert!(fields(refused).contains("reminder"));
    // The computed segments need their own fields (tests/e2e/classics.rs assigns them).
    for (segment, field) in [
        (json!({"kind": "at_risk"}), "segment.p_alive_below"),
        (
            json!({"kind": "at_risk", "p_alive_below": 1.0}),
            "segment.p_alive_below",
        ),
        (json!({"kind": "rfm"}), "segment.segments"),
        (
            json!({"kind": "rfm", "segments": ["champions", "vips"]}),
            "segment.segments",
        ),
        (
            json!({"kind": "rfm", "segments": ["lost"], "days": 3}),
            "segment.days",
        ),
    ] {
        let refused = t
            .post(
                "/v1/campaigns",
                &prog.admin,
                with(body(&[&ann]), json!({"segment": segment})),
            )
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            fields(refused.clone()).contains(field),
            "{field}: {refused}"
        );
    }
    // No CLV model fitted yet: at_risk cannot be evaluated.
    t.post(
        "/v1/campaigns",
        &prog.admin,
        with(
            body(&[&ann]),
            json!({"segment": {"kind": "at_risk", "p_alive_below": 0.3}}),
        ),
    )
    .await
    .expect_problem(409, "no_clv_model");
    let none = t.get("/v1/campaigns", &prog.admin).await.expect(200);
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
}

/// The seed's story: gym → sports shop → diet store, and who each segment selects.
#[tokio::test]
async fn each_segment_kind_selects_exactly_its_members() {
    let t = spawn_app().await;
    let prog = t.programme("Segments").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Sports shop", "1").await;
    let diet = t.partner(&prog, "Diet store", "1").await;
    for (name, rank, spend) in [("Bronze", 1, "0.00"), ("Gold", 2, "50.00")] {
        let tier = json!({"name": name, "rank": rank,
            "qualifying_spend": {"amount": spend, "currency": "EUR"},
            "discount_percent": "0", "earn_multiplier": "1"});
        t.post("/v1/tiers", &prog.admin, tier).await.expect(201);
    }
    let tiers = t.get("/v1/tiers", &prog.admin).await.expect(200);
    let tier_id = |name: &str| {
        let all = tiers["data"].as_array().unwrap();
        all.iter().find(|t| t["name"] == name).unwrap()["id"].clone()
    };
    // ann: gym only, long ago. bea: gym and shop, 40.00. cat: shop only, 100.00 (Gold).
    // dan: enrolled at the diet store, never bought. eve: erased; bought at the gym.
    let (ann, ann_card) = t.member_with_card(&gym, "ann@example.org").await;
    let (bea, bea_card) = t.member_with_card(&gym, "bea@example.org").await;
    let (cat, cat_card) = t.member_with_card(&gym, "cat@example.org").await;
    let (dan, _) = t.member_with_card(&diet, "dan@example.org").await;
    let (eve, eve_card) = t.member_with_card(&gym, "eve@example.org").await;
    t.purchase(&gym, &ann_card, "10.00", 0).await;
    t.purchase(&gym, &bea_card, "10.00", 0).await;
    t.purchase(&shop, &bea_card, "30.00", 0).await;
    t.purchase(&shop, &cat_card, "100.00", 0).await;
    t.purchase(&gym, &eve_card, "10.00", 0).await;
    t.call(
        Method::DELETE,
        &format!("/v1/members/{eve}"),
        Some(&prog.admin),
        None,
        None,
    )
    .await
    .expect(204);
    backdate(&t.app.db, &ann, 60).await;

    let eur = |a: &str| json!({"amount": a, "currency": "EUR"});
    let cases = [
        (json!({"kind": "lapsed", "days": 30}), set(&[&ann])),
        (
            json!({"kind": "cross_sell", "buys_at": gym.id, "never_at": shop.id}),
            set(&[&ann]),
        ),
        (
            json!({"kind": "cross_sell", "buys_at": shop.id, "never_at": gym.id}),
            set(&[&cat]),
        ),
        (
            json!({"kind": "spend_band", "window_days": 30, "min_spend": eur("20.00"), "max_spend": eur("50.00")}),
            set(&[&bea]),
        ),
        (
            json!({"kind": "spend_band", "window_days": 30, "min_spend": eur("5.00")}),
            set(&[&bea, &cat]),
        ),
        (
            json!({"kind": "spend_band", "window_days": 90, "min_spend": eur("5.00")}),
            set(&[&ann, &bea, &cat]),
        ),
        (json!({"kind": "lapsed", "days": 90}), BTreeSet::new()),
        (
            json!({"kind": "partner_members", "partner_id": diet.id}),
            set(&[&dan]),
        ),
        (
            json!({"kind": "partner_members", "partner_id": shop.id}),
            set(&[&bea, &cat]),
        ),
        (
            json!({"kind": "members", "member_ids": [ann, dan]}),
            set(&[&ann, &dan]),
        ),
        (
            json!({"kind": "tier", "tier_id": tier_id("Gold")}),
            set(&[&cat]),
        ),
        (
            json!({"kind": "tier", "tier_id": tier_id("Bronze")}),
            set(&[&ann, &bea, &dan]),
        ),
    ];
    for (segment, expected) in cases {
        let c = create(
            &t,
            &prog.admin,
            with(body(&[&ann]), json!({"segment": segment.clone()})),
        )
        .await;
        let treated = group(&t, &prog.admin, &c, "treatment").await;
        assert_eq!(treated, expected, "{segment}");
        assert!(group(&t, &prog.admin, &c, "control").await.is_empty());
    }
}

#[tokio::test]
async fn treated_members_earn_the_reward_from_the_funder_and_the_holdout_gets_nothing() {
    let t = spawn_app().await;
    let prog = t.programme("Rewards").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let diet = t.partner(&prog, "Diet store", "1").await;
    let mut members = Vec::new();
    for i in 0..24 {
        members.push(t.member_with_card(&gym, &format!("m{i}@example.org")).await);
    }
    let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
    let double = create(
        &t,
        &prog.admin,
        with(
            body(&ids),
            json!({"reward": {"kind": "multiplier", "value": "2", "partner_ids": [diet.id]},
                   "holdout_percent": 50}),
        ),
    )
    .await;
    let bonus = create(
        &t,
        &prog.admin,
        with(
            body(&ids[..2]),
            json!({"funder": {"kind": "partner", "partner_id": gym.id}}),
        ),
    )
    .await;
    let control = group(&t, &prog.admin, &double, "control").await;
    let treatment = group(&t, &prog.admin, &double, "treatment").await;
    assert!(
        !control.is_empty() && !treatment.is_empty(),
        "24 members split in two"
    );
    assert_eq!(control.len() + treatment.len(), 24);
    let double_id = double["id"].as_str().unwrap().to_owned();
    let bonus_id = bonus["id"].as_str().unwrap().to_owned();
    let mut operator_points = 0;
    for (i, (member_id, card)) in members.iter().enumerate() {
        let at_diet = t.purchase(&diet, card, "30.00", 0).await;
        let at_gym = t.purchase(&gym, card, "30.00", 0).await;
        let mut expected_diet = vec![];
        if treatment.contains(member_id) {
            expected_diet.push((double_id.clone(), 30, "operator".to_owned()));
            operator_points += 30;
        }
        let expected_bonus = if i < 2 {
            vec![(bonus_id.clone(), 10, "partner".to_owned())]
        } else {
            vec![]
        };
        expected_diet.extend(expected_bonus.clone());
        assert_eq!(
            campaign_lines(&at_diet),
            expected_diet,
            "member {i} at the diet store"
        );
        assert_eq!(
            campaign_lines(&at_gym),
            expected_bonus,
            "member {i} at the gym: no ×2"
        );
        let earned = at_diet["points_earned"].as_i64().unwrap();
        let lines: i64 = campaign_lines(&at_diet).iter().map(|l| l.1).sum();
        assert_eq!(earned, 30 + lines);
    }
    // The operator's funding account paid exactly the treated members' doubles.
    let funded: i64 = posting::Entity::find()
        .filter(posting::Column::AccountKind.eq("operator_funding"))
        .filter(posting::Column::AccountId.eq(prog.id))
        .all(&t.app.db)
        .await
        .unwrap()
        .iter()
        .map(|p| -p.amount)
        .sum();
    assert_eq!(funded, operator_points);
    let read = t
        .get(&format!("/v1/campaigns/{double_id}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(read["budget_used"], operator_points);
}

#[tokio::test]
async fn the_holdout_share_is_within_two_percent_of_the_setting_on_ten_thousand_members() {
    let t = spawn_app().await;
    let prog = t.programme("Holdout").await;
    let entry = json!({"name": "Basic", "rank": 1,
        "qualifying_spend": {"amount": "0.00", "currency": "EUR"},
        "discount_percent": "0", "earn_multiplier": "1"});
    let basic = t.post("/v1/tiers", &prog.admin, entry).await.expect(201);
    let now = Utc::now();
    for _ in 0..10 {
        let rows = (0..1000).map(|_| member::ActiveModel {
            id: sea_orm::Set(Uuid::now_v7()),
            programme_id: sea_orm::Set(prog.id),
            account_id: sea_orm::Set(Uuid::now_v7()),
            name: sea_orm::Set(None),
            email: sea_orm::Set(None),
            phone: sea_orm::Set(None),
            consent_marketing: sea_orm::Set(false),
            consent_data_sharing: sea_orm::Set(false),
            enrolled_by_partner_id: sea_orm::Set(None),
            erased_at: sea_orm::Set(None),
            created_at: sea_orm::Set(now),
            tier_id: sea_orm::Set(None),
            floor_tier_id: sea_orm::Set(None),
            floor_reason: sea_orm::Set(None),
            floor_ends_at: sea_orm::Set(None),
            external_ref: sea_orm::Set(None),
        });
        member::Entity::insert_many(rows)
            .exec_without_returning(&t.app.db)
            .await
            .unwrap();
    }
    let c = create(
        &t,
        &prog.admin,
        with(
            body(&[]),
            json!({"segment": {"kind": "tier", "tier_id": basic["id"]}, "holdout_percent": 20}),
        ),
    )
    .await;
    let id: Uuid = c["id"].as_str().unwrap().parse().unwrap();
    let count = |g: &'static str| {
        campaign_member::Entity::find()
            .filter(campaign_member::Column::CampaignId.eq(id))
            .filter(campaign_member::Column::Group.eq(g))
            .count(&t.app.db)
    };
    let (control, treatment) = (
        count("control").await.unwrap(),
        count("treatment").await.unwrap(),
    );
    assert_eq!(control + treatment, 10_000, "every member assigned once");
    assert!(
        (1_800..=2_200).contains(&control),
        "{control} of 10000 held out at 20 %"
    );
    assert_eq!(
        group(&t, &prog.admin, &c, "control").await.len() as u64,
        control
    );
    // The job finds nobody left to assign.
    let report = coalition_app::jobs::run(&t.app, "campaigns", Utc::now())
        .await
        .unwrap();
    assert_eq!(report["assigned"], 0);
}

/// 50 purchases at once by 10 treated members, 70 bonus points each, a budget of 1000:
/// exactly 1000 are awarded (14 full bonuses and the 20 left). On PostgreSQL through two
/// server processes (the budget is guarded in the database), on SQLite through one.
#[tokio::test]
async fn the_budget_is_never_exceeded_under_fifty_concurrent_purchases() {
    let mut processes = Vec::new();
    let mut in_process = None;
    let (clients, prog) = match (backend_name(), test_redis_url()) {
        ("postgres", Some(redis_url)) => {
            let database_url = fresh_database_url().await;
            let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
            let env = server_env(&database_url, &redis_url, &prefix);
            processes.push(start_server(&env).await);
            processes.push(start_server(&env).await);
            let clients: Vec<Client> = processes.iter().map(|p| spawn_client(&p.base)).collect();
            let prog = create_programme(&env, &clients[0]).await;
            (clients, prog)
        }
        _ => {
            let t = spawn_app().await;
            let prog = t.programme("Budget").await;
            let client = spawn_client(&t.base);
            in_process = Some(t);
            (vec![client], prog)
        }
    };
    let c0 = &clients[0];
    let shop = c0.partner(&prog, "Shop", "0").await;
    let mut members = Vec::new();
    for i in 0..10 {
        members.push(
            c0.member_with_card(&shop, &format!("b{i}@example.org"))
                .await,
        );
    }
    let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
    let c = create(
        c0,
        &prog.admin,
        with(
            body(&ids),
            json!({"reward": {"kind": "bonus", "value": "70"}, "budget_points": 1000}),
        ),
    )
    .await;
    // Every process prices with the new campaign within a second.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let buys = (0..50).map(|i| {
        let client = &clients[i % clients.len()];
        let card = members[i % members.len()].1.clone();
        let token = shop.token.clone();
        async move {
            let body = json!({"card_number": card, "amount": {"amount": "10.00", "currency": "EUR"},
                              "external_ref": Uuid::new_v4().to_string()});
            let answer = client
                .post_moving("/v1/purchases", &token, body)
                .await
                .expect(201);
            campaign_lines(&answer).iter().map(|l| l.1).sum::<i64>()
        }
    });
    let awarded: Vec<i64> = futures::future::join_all(buys).await;
    assert_eq!(
        awarded.iter().sum::<i64>(),
        1000,
        "the budget of 1000 holds"
    );
    assert_eq!(awarded.iter().filter(|p| **p == 70).count(), 14);
    assert_eq!(awarded.iter().filter(|p| **p == 20).count(), 1);
    let path = format!("/v1/campaigns/{}", c["id"].as_str().unwrap());
    assert_eq!(
        c0.get(&path, &prog.admin).await.expect(200)["budget_used"],
        1000
    );
    let mut total = 0;
    for (member_id, _) in &members {
        total += c0.points(&shop.token, member_id).await;
    }
    assert_eq!(total, 1000, "members hold exactly what the budget gave");
    drop(in_process);
}

#[tokio::test]
async fn win_back_reminders_go_once_to_each_treated_lapsed_member_also_when_they_lapse_later() {
    let t = spawn_app().await;
    let prog = t.programme("Win-back").await;
    let diet = t.partner(&prog, "Diet store", "1").await;
    let mut members = Vec::new();
    for i in 0..6 {
        let (id, card) = t
            .member_with_card(&diet, &format!("w{i}@example.org"))
            .await;
        t.purchase(&diet, &card, "10.00", 0).await;
        members.push(id);
    }
    for m in &members[..4] {
        backdate(&t.app.db, m, 90).await;
    }
    let c = create(
        &t,
        &prog.admin,
        with(
            body(&[]),
            json!({"segment": {"kind": "lapsed", "days": 60}, "reminder": true,
                   "holdout_percent": 50,
                   "reward": {"kind": "multiplier", "value": "2", "partner_ids": [diet.id]}}),
        ),
    )
    .await;
    let reminders = || async {
        outbox_event::Entity::find()
            .filter(outbox_event::Column::EventType.eq("campaign.reminder"))
            .filter(outbox_event::Column::ProgrammeId.eq(prog.id))
            .all(&t.app.db)
            .await
            .unwrap()
            .into_iter()
            .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap())
            .collect::<Vec<_>>()
    };
    let reminded = |events: Vec<Value>| -> Vec<String> {
        let mut ids: Vec<String> = events
            .iter()
            .map(|e| e["member_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let treated = group(&t, &prog.admin, &c, "treatment").await;
    let control = group(&t, &prog.admin, &c, "control").await;
    assert_eq!(treated.len() + control.len(), 4, "the four lapsed members");
    let first = reminders().await;
    assert_eq!(
        reminded(first.clone()),
        treated.iter().cloned().collect::<Vec<_>>()
    );
    if let Some(e) = first.first() {
        assert_eq!(e["campaign_id"], c["id"]);
        assert!(e["message"].as_str().unwrap().starts_with("We miss you"));
    }
    // The job runs again (twice): nobody is assigned or reminded twice. Two members
    // lapse meanwhile: they enter the segment, and are assigned and reminded once.
    for m in &members[4..] {
        backdate(&t.app.db, m, 90).await;
    }
    for _ in 0..2 {
        coalition_app::jobs::run(&t.app, "campaigns", Utc::now())
            .await
            .unwrap();
    }
    let treated = group(&t, &prog.admin, &c, "treatment").await;
    let control = group(&t, &prog.admin, &c, "control").await;
    assert_eq!(treated.len() + control.len(), 6);
    assert_eq!(
        reminded(reminders().await),
        treated.iter().cloned().collect::<Vec<_>>(),
        "one reminder per treated member, none for control"
    );
}

/// A refund claws campaign points back from the campaign's funder, like rule points; the
/// budget counts what was awarded and is not given back.
#[tokio::test]
async fn a_refund_claws_campaign_points_back_from_the_funder_and_keeps_the_budget_spent() {
    use coalition_domain::AccountKind;
    let t = spawn_app().await;
    let prog = t.programme("Refunds").await;
    let diet = t.partner(&prog, "Diet store", "1").await;
    let (ann, card) = t.member_with_card(&diet, "ann@example.org").await;
    let c = create(
        &t,
        &prog.admin,
        with(
            body(&[&ann]),
            json!({"reward": {"kind": "multiplier", "value": "3"}}),
        ),
    )
    .await;
    let bought = t.purchase(&diet, &card, "20.00", 0).await;
    assert_eq!(bought["points_earned"], 60);
    let funded =
        || coalition_app::ledger::posted_balance(&t.app.db, AccountKind::OperatorFunding, prog.id);
    assert_eq!(funded().await.unwrap(), -40);
    let refund = t
        .post_moving(
            &format!("/v1/purchases/{}/refunds", bought["id"].as_str().unwrap()),
            &diet.token,
            json!({"amount": {"amount": "20.00", "currency": "EUR"}}),
        )
        .await
        .expect(201);
    assert_eq!(refund["points_clawed_back"], 60);
    assert_eq!(funded().await.unwrap(), 0, "the operator got its 40 back");
    assert_eq!(t.points(&diet.token, &ann).await, 0);
    let path = format!("/v1/campaigns/{}", c["id"].as_str().unwrap());
    assert_eq!(
        t.get(&path, &prog.admin).await.expect(200)["budget_used"],
        40
    );
}

/// A POS hold captured as a purchase is priced like any purchase: the treated member
/// earns the campaign's reward on what is left to pay, counted against the budget.
#[tokio::test]
async fn a_hold_captured_as_a_purchase_earns_the_campaign_reward_within_the_budget() {
    let t = spawn_app().await;
    let prog = t.programme("Holds").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (ann, card) = t.member_with_card(&shop, "ann@example.org").await;
    t.purchase(&shop, &card, "10.00", 0).await;
    let c = create(
        &t,
        &prog.admin,
        with(
            body(&[&ann]),
            json!({"reward": {"kind": "bonus", "value": "50"}, "budget_points": 30}),
        ),
    )
    .await;
    let held = t
        .post_moving(
            "/v1/redemptions",
            &shop.token,
            json!({"card_number": card, "points": 10}),
        )
        .await
        .expect(201);
    let purchase = json!({"purchase": {"amount": {"amount": "20.00", "currency": "EUR"},
                                       "external_ref": "till-1"}});
    let captured = t
        .post_moving(
            &format!("/v1/redemptions/{}/capture", held["id"].as_str().unwrap()),
            &shop.token,
            purchase,
        )
        .await
        .expect(200);
    let lines = campaign_lines(&captured["purchase"]);
    assert_eq!(
        lines,
        vec![(
            c["id"].as_str().unwrap().to_owned(),
            30,
            "operator".to_owned()
        )],
        "the bonus of 50 cut to the budget of 30"
    );
    let path = format!("/v1/campaigns/{}", c["id"].as_str().unwrap());
    assert_eq!(
        t.get(&path, &prog.admin).await.expect(200)["budget_used"],
        30
    );
    let next = t.purchase(&shop, &card, "10.00", 0).await;
    assert!(campaign_lines(&next).is_empty(), "the budget is spent");
}
