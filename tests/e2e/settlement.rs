//! Settlement end to end: the seed scenario (gym, sports shop, diet store), statements
//! that tie to the ledger and sum to zero, payment instructions that clear them, periods
//! that cannot overlap, what a partner may read, prices in force at posting time, and
//! randomized ledgers checked against an independent computation.

use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use coalition_app::jobs;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

pub(crate) fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("decimal string expected: {v}"))
        .parse()
        .unwrap()
}

fn eur(amount: &str) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

pub(crate) async fn settle(
    t: &Client,
    token: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Resp {
    t.post(
        "/v1/settlements",
        token,
        json!({"period_start": start.to_rfc3339(), "period_end": end.to_rfc3339()}),
    )
    .await
}

/// A partner at its own prices (set before it posts anything).
async fn priced_partner(
    t: &TestApp,
    prog: &Programme,
    name: &str,
    earn: &str,
    issue: &str,
    redeem: &str,
) -> Partner {
    let p = t.partner(prog, name, earn).await;
    set_prices(t, prog, &p, issue, redeem).await;
    p
}

async fn set_prices(t: &TestApp, prog: &Programme, p: &Partner, issue: &str, redeem: &str) {
    t.call(
        Method::PATCH,
        &format!("/v1/partners/{}", p.id),
        Some(&prog.admin),
        Some(json!({"issue_price_per_point": issue, "redemption_value_per_point": redeem})),
        None,
    )
    .await
    .expect(200);
}

/// Bonus points at `at`, paid by `funder`: an earning rule with a funder, which the
/// ledger and settlement treat as a campaign (the seed test uses a real campaign).
async fn campaign(t: &TestApp, prog: &Programme, funder: &Partner, at: &Partner, bonus: i64) {
    t.post(
        "/v1/rules",
        &prog.admin,
        json!({"name": "Diet-store bonus paid by the gym",
               "effect": {"kind": "bonus_points", "value": bonus.to_string()},
               "conditions": {"partner_ids": [at.id]},
               "funder": {"kind": "partner", "partner_id": funder.id}}),
    )
    .await
    .expect(201);
}

pub(crate) fn line<'a>(s: &'a Value, partner: &Partner) -> &'a Value {
    s["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["partner_id"] == json!(partner.id))
        .unwrap_or_else(|| panic!("no line for {} in {s}", partner.id))
}

/// Every net, the operator's included, by party ("operator" or a partner id).
fn nets(s: &Value) -> BTreeMap<String, Decimal> {
    let mut nets: BTreeMap<String, Decimal> = s["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["partner_id"].as_str().unwrap().to_owned(),
                dec(&l["net"]["amount"]),
            )
        })
        .collect();
    nets.insert("operator".into(), dec(&s["operator"]["net"]["amount"]));
    nets
}

/// Σ nets = 0 exactly; each net = owed − due; the payments clear every net in at most
/// n − 1 transfers.
fn assert_sums_to_zero_and_clears(s: &Value) {
    for l in s["lines"].as_array().unwrap() {
        assert_eq!(
            dec(&l["net"]["amount"]),
            dec(&l["amount_owed"]["amount"]) - dec(&l["amount_due"]["amount"])
        );
    }
    let nets = nets(s);
    assert_eq!(
        nets.values().copied().sum::<Decimal>(),
        Decimal::ZERO,
        "{s}"
    );
    let payments = s["payments"].as_array().unwrap();
    let parties = nets.values().filter(|n| !n.is_zero()).count();
    assert!(payments.len() <= parties.saturating_sub(1), "{s}");
    let mut left = nets.clone();
    for p in payments {
        let amount = dec(&p["amount"]["amount"]);
        assert!(amount > Decimal::ZERO);
        *left.get_mut(p["from"].as_str().unwrap()).unwrap() += amount;
        *left.get_mut(p["to"].as_str().unwrap()).unwrap() -= amount;
    }
    assert!(left.values().all(|n| n.is_zero()), "not cleared: {left:?}");
}

/// The postings behind a partner's line, every page.
async fn all_postings(t: &TestApp, token: &str, id: &str, partner: Uuid) -> Vec<Value> {
    let mut out = vec![];
    let mut cursor = String::new();
    loop {
        let page = t
            .get(
                &format!("/v1/settlements/{id}/postings?partner_id={partner}&limit=3{cursor}"),
                token,
            )
            .await
            .expect(200);
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

fn round(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// The line equals its postings × the prices they were settled at, rounded once.
async fn assert_line_ties_to_postings(t: &TestApp, token: &str, s: &Value, partner: Uuid) {
    let id = s["id"].as_str().unwrap();
    let postings = all_postings(t, token, id, partner).await;
    let sum = |kind: &str| {
        postings.iter().filter(|p| p["account_kind"] == kind).fold(
            (0i64, Decimal::ZERO),
            |(n, v), p| {
                let points = p["points"].as_i64().unwrap();
                (
                    n + points,
                    v + Decimal::from(points) * dec(&p["price_per_point"]),
                )
            },
        )
    };
    let (issued, due) = sum("partner_issued");
    let (redeemed, owed) = sum("partner_redeemed");
    let l = s["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["partner_id"] == json!(partner))
        .unwrap();
    assert_eq!(l["points_issued"], -issued);
    assert_eq!(l["points_redeemed"], redeemed);
    assert_eq!(dec(&l["amount_due"]["amount"]), round(-due));
    assert_eq!(dec(&l["amount_owed"]["amount"]), round(owed));
}

async fn expire_everything(t: &TestApp) -> i64 {
    let later = Utc::now() + Duration::days(800);
    jobs::expire_points(&t.app, later).await.unwrap().points
}

#[tokio::test]
async fn the_seed_scenario_settles_who_owes_whom_ties_to_the_ledger_and_clears() {
    let t = spawn_app().await;
    let start = Utc::now();
    let prog = t.programme("Seed settlement").await;
    let gym = priced_partner(&t, &prog, "Gym", "0", "0.011", "0.009").await;
    let shop = priced_partner(&t, &prog, "Sports shop", "1", "0.012", "0.0095").await;
    let diet = priced_partner(&t, &prog, "Diet store", "1", "0.012", "0.009").await;
    t.post(
        "/v1/rules",
        &prog.admin,
        json!({"name": "Gym cashback", "effect": {"kind": "cashback_percent", "value": "5"},
               "conditions": {"partner_ids": [gym.id]}}),
    )
    .await
    .expect(201);
    let (member, card) = t.member_with_card(&gym, "seed@example.org").await;
    // The seed's cross-shopping campaign: 500 bonus points at the diet store, paid by
    // the gym, for its member (no holdout).
    t.post(
        "/v1/campaigns",
        &prog.admin,
        json!({"name": "Gym members: 500 at the diet store",
               "segment": {"kind": "members", "member_ids": [member]},
               "reward": {"kind": "bonus", "value": "500", "partner_ids": [diet.id]},
               "funder": {"kind": "partner", "partner_id": gym.id},
               "budget_points": 10000,
               "ends_at": (Utc::now() + Duration::days(30)).to_rfc3339()}),
    )
    .await
    .expect(201);

    // 5 % of 5000 at 0.01 a point: 25,000 points, worth 250.00.
    assert_eq!(
        t.purchase(&gym, &card, "5000.00", 0).await["points_earned"],
        25_000
    );
    // All spent at the sports shop: 250.00 off 300.00; the 50.00 paid earns 50.
    let spent = t.purchase(&shop, &card, "300.00", 25_000).await;
    assert_eq!(
        (
            spent["points_redeemed"].as_i64(),
            spent["points_earned"].as_i64()
        ),
        (Some(25_000), Some(50))
    );
    // At the diet store: 10 of its own and the gym's 500 campaign bonus.
    let diet_purchase = t.purchase(&diet, &card, "10.00", 0).await;
    assert_eq!(diet_purchase["points_earned"], 510);
    let campaign_line = diet_purchase["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "campaign")
        .expect("the campaign's line in the breakdown");
    assert_eq!(
        (
            &campaign_line["points"],
            &campaign_line["funder"]["partner_id"]
        ),
        (&json!(500), &json!(gym.id))
    );
    // What is left expires: breakage.
    assert_eq!(expire_everything(&t).await, 560);
    assert_eq!(t.points(&prog.admin, &member).await, 0);
    let end = Utc::now();

    let answer = settle(&t, &prog.admin, start, end).await;
    let location = answer.headers["location"].to_str().unwrap().to_owned();
    let s = answer.expect(201);
    assert_eq!(
        location,
        format!("/v1/settlements/{}", s["id"].as_str().unwrap())
    );
    assert_eq!(s["currency"], "EUR");
    // Gym: 25,000 + 500 funded at 0.011 = 280.50 due.
    let g = line(&s, &gym);
    assert_eq!(
        (
            &g["points_issued"],
            &g["points_funded"],
            &g["points_redeemed"]
        ),
        (&json!(25_500), &json!(500), &json!(0))
    );
    assert_eq!(g["amount_due"], eur("280.50"));
    assert_eq!(g["amount_owed"], eur("0.00"));
    assert_eq!(g["net"], eur("-280.50"));
    // Shop: 50 issued at 0.012 = 0.60 due; 25,000 honoured at 0.0095 = 237.50 owed.
    let sh = line(&s, &shop);
    assert_eq!(
        (&sh["points_issued"], &sh["points_redeemed"]),
        (&json!(50), &json!(25_000))
    );
    assert_eq!(sh["amount_due"], eur("0.60"));
    assert_eq!(sh["amount_owed"], eur("237.50"));
    assert_eq!(sh["net"], eur("236.90"));
    // Diet store: its own 10 at 0.012 = 0.12; the bonus is on the gym's line.
    let d = line(&s, &diet);
    assert_eq!(
        (&d["points_issued"], &d["points_funded"]),
        (&json!(10), &json!(0))
    );
    assert_eq!(d["net"], eur("-0.12"));
    // The operator: 280.50 + 0.12 − 236.90, with the 560 points of breakage.
    assert_eq!(s["operator"]["net"], eur("43.72"));
    assert_eq!(s["operator"]["points_expired"], 560);
    assert_eq!(s["lines"].as_array().unwrap().len(), 3);
    assert_sums_to_zero_and_clears(&s);
    // Largest debtor to largest creditor: the gym pays the shop, then the operator.
    assert_eq!(
        s["payments"],
        json!([
            {"from": gym.id.to_string(), "to": shop.id.to_string(), "amount": eur("236.90")},
            {"from": gym.id.to_string(), "to": "operator", "amount": eur("43.60")},
            {"from": diet.id.to_string(), "to": "operator", "amount": eur("0.12")},
        ])
    );
    for p in [&gym, &shop, &diet] {
        assert_line_ties_to_postings(&t, &prog.admin, &s, p.id).await;
        assert_line_ties_to_postings(&t, &p.token, &s, p.id).await;
    }
    // Liability: 25,560 issued, 25,000 redeemed and 560 expired; nothing outstanding.
    let liability = s["liability"].as_array().unwrap();
    let total = |f: &str| {
        liability
            .iter()
            .map(|l| l[f].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(
        (
            total("opening_points"),
            total("issued"),
            total("redeemed"),
            total("expired"),
            total("closing_points")
        ),
        (0, 25_560, 25_000, 560, 0)
    );
    let gym_liability = liability
        .iter()
        .find(|l| l["partner_id"] == json!(gym.id))
        .unwrap();
    // 25,000 × 25,500 / 25,560 = 24,941.3 redeemed (largest remainder), the rest expired.
    assert_eq!(
        (&gym_liability["redeemed"], &gym_liability["expired"]),
        (&json!(24_941), &json!(559))
    );
    assert_eq!(g["points_expired"], 559);

    // Reading it again answers the same, and so does settling the same period again.
    let read = t.get(&location, &prog.admin).await.expect(200);
    assert_eq!(read, s);
    let again = settle(&t, &prog.admin, start, end).await.expect(200);
    assert_eq!(again, s);
    let listed = t.get("/v1/settlements", &prog.admin).await.expect(200);
    assert_eq!(listed["data"], json!([s.clone()]));
}

#[tokio::test]
async fn overlapping_periods_are_refused_and_bad_periods_are_validation_errors() {
    let t = spawn_app().await;
    let prog = t.programme("Periods").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (_, card) = t.member_with_card(&gym, "p@example.org").await;
    let t0 = Utc::now();
    t.purchase(&gym, &card, "10.00", 0).await;
    let t1 = Utc::now();
    t.purchase(&gym, &card, "20.00", 0).await;
    let t2 = Utc::now();

    let first = settle(&t, &prog.admin, t0, t1).await.expect(201);
    assert_eq!(line(&first, &gym)["points_issued"], 10);
    for (a, b) in [
        (t0, t2),
        (t0 - Duration::hours(1), t1),
        (t0 + Duration::milliseconds(1), t1),
    ] {
        settle(&t, &prog.admin, a, b)
            .await
            .expect_problem(409, "settlement_overlaps");
    }
    // The next period, adjacent, is fine and opens at the first one's closing.
    let second = settle(&t, &prog.admin, t1, t2).await.expect(201);
    assert_eq!(line(&second, &gym)["points_issued"], 20);
    assert_eq!(second["liability"][0]["opening_points"], 10);
    assert_eq!(second["liability"][0]["closing_points"], 30);

    let future = Utc::now() + Duration::hours(1);
    let refused = settle(&t, &prog.admin, t2, future)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(refused["errors"][0]["field"], "period_end");
    settle(&t, &prog.admin, t1, t0)
        .await
        .expect_problem(422, "validation_failed");
    // A partner cannot run one.
    settle(&t, &gym.token, t2, Utc::now())
        .await
        .expect_problem(403, "insufficient_scope");
}

#[tokio::test]
async fn concurrent_runs_of_overlapping_periods_make_one_settlement() {
    let t = spawn_app().await;
    let prog = t.programme("Race").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (_, card) = t.member_with_card(&gym, "r@example.org").await;
    let t0 = Utc::now();
    t.purchase(&gym, &card, "10.00", 0).await;
    let t1 = Utc::now();
    let runs = (0..6).map(|i| {
        let end = t1 - Duration::microseconds(i % 2);
        settle(&t, &prog.admin, t0, end)
    });
    let answers = futures::future::join_all(runs).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 201, 409].contains(s)),
        "{statuses:?}"
    );
    let listed = t.get("/v1/settlements", &prog.admin).await.expect(200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_partner_reads_only_its_own_line_and_other_ids_are_404() {
    let t = spawn_app().await;
    let start = Utc::now();
    let prog = t.programme("Reading").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (_, card) = t.member_with_card(&gym, "x@example.org").await;
    t.purchase(&gym, &card, "100.00", 0).await;
    t.purchase(&shop, &card, "50.00", 60).await;
    let s = settle(&t, &prog.admin, start, Utc::now()).await.expect(201);
    let id = s["id"].as_str().unwrap();

    let seen = t
        .get(&format!("/v1/settlements/{id}"), &gym.token)
        .await
        .expect(200);
    assert_eq!(seen["lines"], json!([line(&s, &gym)]));
    assert_eq!(seen["operator"]["net"], eur("0.00"));
    assert!(seen["liability"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["partner_id"] == json!(gym.id)));
    assert!(seen["payments"].as_array().unwrap().iter().all(|p| {
        p["from"] == json!(gym.id.to_string()) || p["to"] == json!(gym.id.to_string())
    }));
    // Another partner's postings: 404.
    t.get(
        &format!("/v1/settlements/{id}/postings?partner_id={}", shop.id),
        &gym.token,
    )
    .await
    .expect_problem(404, "not_found");
    // CSV: the partner's own line only; the operator gets every line and its own.
    let csv = |token: &str| {
        let url = format!("{}/v1/settlements/{id}/statement.csv", t.base);
        let http = t.http.clone();
        let token = token.to_owned();
        async move {
            let res = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(res.status(), 200);
            assert!(res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv"));
            res.text().await.unwrap()
        }
    };
    let mine = csv(&gym.token).await;
    assert_eq!(mine.lines().count(), 2, "{mine}");
    assert!(mine.contains(&gym.id.to_string()) && !mine.contains(&shop.id.to_string()));
    assert!(!mine.contains("operator"));
    let all = csv(&prog.admin).await;
    assert_eq!(all.lines().count(), 4, "{all}");
    let row = all
        .lines()
        .find(|l| l.contains(&gym.id.to_string()))
        .unwrap();
    assert!(row.ends_with(",100,0,0,0,1.20,0.00,-1.20"), "{row}");
    let operator = all.lines().find(|l| l.contains(",operator,")).unwrap();
    assert!(
        operator.ends_with(&format!(
            ",0,0,0,0,0.00,0.00,{}",
            s["operator"]["net"]["amount"].as_str().unwrap()
        )),
        "{operator}"
    );

    // Another programme's operator and partner: 404 everywhere.
    let other = t.programme("Other").await;
    let stranger = t.partner(&other, "Stranger", "1").await;
    for token in [&other.admin, &stranger.token] {
        for path in [
            format!("/v1/settlements/{id}"),
            format!("/v1/settlements/{id}/statement.csv"),
            format!("/v1/settlements/{id}/postings"),
        ] {
            let r = t.get(&path, token).await;
            assert_eq!(r.status, 404, "{path}");
        }
    }
    // The operator naming another programme's partner: 404 too.
    t.get(
        &format!("/v1/settlements/{id}/postings?partner_id={}", stranger.id),
        &prog.admin,
    )
    .await
    .expect_problem(404, "not_found");
    let list = t.get("/v1/settlements", &other.admin).await.expect(200);
    assert_eq!(list["data"], json!([]));
    t.get(
        &format!("/v1/settlements/{id}/postings?partner_id=nope"),
        &prog.admin,
    )
    .await
    .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn points_are_priced_at_the_price_in_force_when_they_were_posted() {
    let t = spawn_app().await;
    let start = Utc::now();
    let prog = t.programme("Prices").await;
    let gym = priced_partner(&t, &prog, "Gym", "1", "0.010", "0.010").await;
    let (_, card) = t.member_with_card(&gym, "m@example.org").await;
    t.purchase(&gym, &card, "100.00", 0).await;
    set_prices(&t, &prog, &gym, "0.020", "0.005").await;
    t.purchase(&gym, &card, "30.00", 40).await;
    let s = settle(&t, &prog.admin, start, Utc::now()).await.expect(201);
    let g = line(&s, &gym);
    // 100 at 0.010 and then (30 − 0.40 = 29.60 →) 29 at 0.020; 40 honoured at 0.005.
    assert_eq!(g["points_issued"], 129);
    assert_eq!(g["amount_due"], eur("1.58"));
    assert_eq!(g["amount_owed"], eur("0.20"));
    assert_line_ties_to_postings(&t, &prog.admin, &s, gym.id).await;
    // A later price change leaves the stored settlement as it was.
    set_prices(&t, &prog, &gym, "0.5", "0.5").await;
    let read = t
        .get(
            &format!("/v1/settlements/{}", s["id"].as_str().unwrap()),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(read, s);
}

/// Prices a partner had, and when each stopped (the test's own record).
struct PriceBook {
    /// (in force until, issue, redeem), oldest first; the last has no end.
    periods: Vec<(Option<DateTime<Utc>>, Decimal, Decimal)>,
}

impl PriceBook {
    fn at(&self, when: DateTime<Utc>) -> (Decimal, Decimal) {
        let p = self
            .periods
            .iter()
            .find(|(until, _, _)| until.is_none_or(|u| when < u))
            .unwrap();
        (p.1, p.2)
    }
}

fn random_price(rng: &mut impl Rng) -> Decimal {
    Decimal::new(rng.gen_range(1..200), rng.gen_range(3..6))
}

#[tokio::test]
async fn random_ledgers_settle_to_zero_with_each_line_its_postings_times_prices() {
    for seed in 0..3u64 {
        random_ledger(seed).await;
    }
}

async fn random_ledger(seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t = spawn_app().await;
    let start = Utc::now();
    let prog = t.programme("Random").await;
    let mut partners = vec![];
    let mut books = vec![];
    for i in 0..3 {
        let (issue, redeem) = (random_price(&mut rng), random_price(&mut rng));
        let p = t
            .partner(&prog, &format!("P{i}"), &rng.gen_range(0..3).to_string())
            .await;
        set_prices(&t, &prog, &p, &issue.to_string(), &redeem.to_string()).await;
        partners.push(p);
        books.push(PriceBook {
            periods: vec![(None, issue, redeem)],
        });
    }
    campaign(&t, &prog, &partners[0], &partners[1], rng.gen_range(1..50)).await;
    let (member, card) = t
        .member_with_card(&partners[0], &format!("r{seed}@example.org"))
        .await;
    let mut purchases: Vec<(usize, String, i64)> = vec![];
    for _ in 0..14 {
        let at = rng.gen_range(0..3);
        match rng.gen_range(0..10) {
            0 => {
                let (issue, redeem) = (random_price(&mut rng), random_price(&mut rng));
                set_prices(
                    &t,
                    &prog,
                    &partners[at],
                    &issue.to_string(),
                    &redeem.to_string(),
                )
                .await;
                let book = &mut books[at];
                book.periods.last_mut().unwrap().0 = Some(Utc::now());
                book.periods.push((None, issue, redeem));
            }
            1 | 2 if !purchases.is_empty() => {
                let i = rng.gen_range(0..purchases.len());
                let (p, id, cents) = purchases.swap_remove(i);
                let refund = rng.gen_range(1..=cents);
                let amount = Decimal::new(refund, 2).to_string();
                t.post_moving(
                    &format!("/v1/purchases/{id}/refunds"),
                    &partners[p].token,
                    json!({"amount": eur(&amount)}),
                )
                .await
                .expect(201);
            }
            _ => {
                let cents = rng.gen_range(100..20_000);
                let balance = t.points(&prog.admin, &member).await;
                let redeem = if rng.gen_bool(0.5) {
                    rng.gen_range(0..=balance.min(cents))
                } else {
                    0
                };
                let amount = Decimal::new(cents, 2).to_string();
                let bought = t.purchase(&partners[at], &card, &amount, redeem).await;
                purchases.push((at, bought["id"].as_str().unwrap().to_owned(), cents));
            }
        }
    }
    let expired = if rng.gen_bool(0.7) {
        expire_everything(&t).await
    } else {
        0
    };
    let s = settle(&t, &prog.admin, start, Utc::now()).await.expect(201);
    assert_sums_to_zero_and_clears(&s);
    assert_eq!(s["operator"]["points_expired"], expired);
    let id = s["id"].as_str().unwrap();
    let mut issued_total = 0;
    let mut redeemed_total = 0;
    for (p, book) in partners.iter().zip(&books) {
        let postings = all_postings(&t, &prog.admin, id, p.id).await;
        let (mut issued, mut due, mut redeemed, mut owed) =
            (0i64, Decimal::ZERO, 0i64, Decimal::ZERO);
        for posting in &postings {
            let when: DateTime<Utc> = posting["created_at"].as_str().unwrap().parse().unwrap();
            let (issue, redeem) = book.at(when);
            let points = posting["points"].as_i64().unwrap();
            match posting["account_kind"].as_str().unwrap() {
                "partner_issued" => {
                    assert_eq!(dec(&posting["price_per_point"]), issue);
                    issued -= points;
                    due -= Decimal::from(points) * issue;
                }
                "partner_redeemed" => {
                    assert_eq!(dec(&posting["price_per_point"]), redeem);
                    redeemed += points;
                    owed += Decimal::from(points) * redeem;
                }
                other => panic!("{other} on a partner's line"),
            }
        }
        issued_total += issued;
        redeemed_total += redeemed;
        let found = s["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["partner_id"] == json!(p.id));
        let Some(l) = found else {
            assert!(postings.is_empty());
            continue;
        };
        assert_eq!(
            (l["points_issued"].as_i64(), l["points_redeemed"].as_i64()),
            (Some(issued), Some(redeemed))
        );
        assert_eq!(dec(&l["amount_due"]["amount"]), round(due), "seed {seed}");
        assert_eq!(dec(&l["amount_owed"]["amount"]), round(owed), "seed {seed}");
    }
    // The ledger ties: what was issued less what was redeemed and expired is what the
    // member holds, and what the liability says is outstanding.
    let balance = t.points(&prog.admin, &member).await;
    assert_eq!(
        issued_total - redeemed_total - expired,
        balance,
        "seed {seed}"
    );
    let closing: i64 = s["liability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["closing_points"].as_i64().unwrap())
        .sum();
    assert_eq!(closing, balance, "seed {seed}");
}

#[tokio::test]
async fn two_server_processes_settling_overlapping_periods_make_one_settlement() {
    let Some(two) = two_processes().await else {
        return;
    };
    let admin = &two.programme.admin;
    let start = Utc::now() - Duration::hours(1);
    let runs = (0..8).map(|i| {
        let server = if i % 2 == 0 { &two.a } else { &two.b };
        let end = Utc::now() - Duration::seconds(i % 3);
        server.post(
            "/v1/settlements",
            admin,
            json!({"period_start": start.to_rfc3339(), "period_end": end.to_rfc3339()}),
        )
    });
    let answers = futures::future::join_all(runs).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 201, 409].contains(s)),
        "{statuses:?}"
    );
    let listed = two.a.get("/v1/settlements", admin).await.expect(200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_cli_settles_a_period_prints_json_and_refuses_overlaps() {
    let env = [("DATABASE_URL", fresh_database_url().await)];
    let created = coalition(&env)
        .args(["programme", "create", "--name", "CLI", "--currency", "EUR"])
        .args(["--point-value", "0.01"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let programme = created["programme_id"].as_str().unwrap().to_owned();
    let to = Utc::now();
    let from = to - Duration::days(1);
    let run = |from: DateTime<Utc>, to: DateTime<Utc>| {
        coalition(&env)
            .args(["settle", "--programme-id", &programme])
            .args(["--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()])
            .output()
            .unwrap()
    };
    let first = run(from, to);
    assert!(first.status.success(), "{first:?}");
    // Not a terminal: no progress on stderr (only the line naming the database every
    // command writes), the settlement alone on stdout.
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr
            .lines()
            .all(|l| l.starts_with("coalition: database ")),
        "{first:?}"
    );
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["programme_id"], json!(programme));
    assert_eq!(
        (first["lines"].clone(), first["postings"].clone()),
        (json!([]), json!(0))
    );
    let again: Value = serde_json::from_slice(&run(from, to).stdout).unwrap();
    assert_eq!(again, first);
    let overlap = run(from + Duration::hours(1), to);
    assert!(!overlap.status.success());
    assert!(String::from_utf8_lossy(&overlap.stderr).contains("overlaps"));
    let future = run(to, Utc::now() + Duration::hours(1));
    assert!(!future.status.success());
    assert!(String::from_utf8_lossy(&future.stderr).contains("period_end"));
}
