//! Everything before the load: a clean database, a release server process on it, a
//! programme with three partners, and the members with their cards.

use chrono::Utc;
use coalition_domain::card_number;
use coalition_store::entities::{card, member, member_partner, point_account};
use rand::Rng;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, EntityTrait, TransactionTrait};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Drops and creates `name` next to the database `admin_url` names; returns its URL.
/// Connections to it go without TLS — the server's and pgbench's alike: on loopback,
/// encryption would only add the same cost to both sides of the comparison.
pub async fn clean_database(admin_url: &str, name: &str) -> Result<String, Error> {
    let admin = Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    admin.close().await?;
    let (base, _) = admin_url
        .split_once('?')
        .map_or(admin_url, |(url, _)| url)
        .rsplit_once('/')
        .ok_or("--database-url must end with /database")?;
    Ok(format!("{base}/{name}?sslmode=disable"))
}

/// Drops the databases a run made, so runs leave nothing behind.
pub async fn drop_databases(admin_url: &str, names: &[&str]) -> Result<(), Error> {
    let admin = Database::connect(admin_url).await?;
    for name in names {
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
    }
    admin.close().await?;
    Ok(())
}

/// The `coalition serve` process under load; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub fn server_env(database_url: &str, redis_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("REDIS_URL", redis_url.to_owned()),
        (
            "COALITION_REDIS_PREFIX",
            format!("coalition-bench-{}:", Uuid::new_v4().simple()),
        ),
        ("COALITION_LOG", "warn".to_owned()),
        // The benchmark makes its own database; the server builds the schema.
        ("COALITION_MIGRATE_ON_START", "true".to_owned()),
    ]
}

pub async fn start_server(binary: &Path, env: &[(&str, String)]) -> Result<Server, Error> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(binary)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("COALITION_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        let ready = http
            .get(format!("{}/health/ready", server.base))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the server never became ready".into())
}

/// The programme as the load sees it.
pub struct Programme {
    pub id: Uuid,
    /// The operator's bearer token.
    pub admin: String,
    /// (partner id, bearer token) of each partner's POS client.
    pub partners: Vec<(Uuid, String)>,
}

/// A member the load works with.
#[derive(Clone)]
pub struct Member {
    pub id: Uuid,
    pub card: String,
}

pub async fn create_programme(
    binary: &Path,
    env: &[(&str, String)],
    server: &Server,
) -> Result<Programme, Error> {
    let out = Command::new(binary)
        .args(["programme", "create", "--name", "Bench coalition"])
        .args(["--currency", "EUR", "--point-value", "0.01"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    if !out.status.success() {
        return Err(format!("programme create: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let created: Value = serde_json::from_slice(&out.stdout)?;
    let http = reqwest::Client::new();
    let admin = token(&http, &server.base, &created).await?;
    let mut partners = Vec::new();
    for (name, category, earn) in [
        ("City Gym", "gym", "1"),
        ("Peak Sports", "sports", "2"),
        ("Green Diet", "diet", "1.5"),
    ] {
        let partner = post(
            &http,
            &server.base,
            "/v1/partners",
            &admin,
            json!({"name": name, "kind": "merchant", "category": category,
                   "earn_points_per_unit": earn, "issue_price_per_point": "0.012",
                   "redemption_value_per_point": "0.009"}),
        )
        .await?;
        let id: Uuid = partner["id"].as_str().ok_or("partner id")?.parse()?;
        let client = post(
            &http,
            &server.base,
            "/v1/clients",
            &admin,
            json!({"name": format!("{name} POS"), "partner_id": id}),
        )
        .await?;
        partners.push((id, token(&http, &server.base, &client).await?));
    }
    Ok(Programme {
        admin,
        id: created["programme_id"]
            .as_str()
            .ok_or("programme id")?
            .parse()?,
        partners,
    })
}

/// A programme that uses the economics: a three-tier ladder (so every purchase reads the
/// member's tier and counts its spend) and three earning rules — cashback at the gym, a
/// category bonus and a daily-capped bonus at the diet store (caps read the member's
/// awards under the account lock).
pub async fn configure_economics(server: &Server, programme: &Programme) -> Result<(), Error> {
    let http = reqwest::Client::new();
    let eur = |amount: &str| json!({"amount": amount, "currency": "EUR"});
    for (name, rank, spend, discount, multiplier) in [
        ("Basic", 1, "0", "5", "1"),
        ("Gold", 2, "500.00", "10", "1.25"),
        ("VIP", 3, "5000.00", "20", "1.5"),
    ] {
        let body = json!({"name": name, "rank": rank, "qualifying_spend": eur(spend),
                          "discount_percent": discount, "earn_multiplier": multiplier});
        post(&http, &server.base, "/v1/tiers", &programme.admin, body).await?;
    }
    let (gym, diet) = (programme.partners[0].0, programme.partners[2].0);
    let rules = [
        json!({"name": "Gym cashback", "effect": {"kind": "cashback_percent", "value": "2"},
               "conditions": {"partner_ids": [gym]}}),
        json!({"name": "Protein week", "effect": {"kind": "multiplier", "value": "2"},
               "conditions": {"purchase_categories": ["protein"]}}),
        json!({"name": "Diet store daily bonus", "effect": {"kind": "bonus_points", "value": "20"},
               "conditions": {"partner_ids": [diet]}, "caps": {"per_member_day": 40}}),
    ];
    for rule in rules {
        post(&http, &server.base, "/v1/rules", &programme.admin, rule).await?;
    }
    Ok(())
}

pub(crate) async fn token(
    http: &reqwest::Client,
    base: &str,
    client: &Value,
) -> Result<String, Error> {
    let res = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(
            client["client_id"].as_str().unwrap_or_default(),
            client["client_secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .error_for_status()?;
    let body: Value = res.json().await?;
    Ok(body["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_owned())
}

pub(crate) async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    body: Value,
) -> Result<Value, Error> {
    let res = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    if !status.is_success() {
        return Err(format!("POST {path}: {status} {body}").into());
    }
    Ok(body)
}

/// Writes `count` members, each with a points account, a registered card and a link to
/// every partner, straight into the database in batches: enrolment is not what is
/// measured, and 200,000 enrolment calls would take longer than the measurements.
pub async fn seed_members(
    database_url: &str,
    programme: &Programme,
    count: usize,
) -> Result<Vec<Member>, Error> {
    let db = Database::connect(database_url).await?;
    let mut members = Vec::with_capacity(count);
    let mut rng = rand::thread_rng();
    let mut start = 0;
    while start < count {
        let batch = (count - start).min(1000);
        let seeded: Vec<Seeded> = (start..start + batch)
            .map(|i| Seeded::new(programme, i, rng.gen()))
            .collect();
        insert_batch(&db, programme, &seeded).await?;
        members.extend(seeded.iter().map(|s| Member {
            id: s.member_id,
            card: s.card.clone(),
        }));
        start += batch;
    }
    db.execute_unprepared("ANALYZE").await?;
    db.close().await?;
    Ok(members)
}

pub(crate) struct Seeded {
    pub(crate) member_id: Uuid,
    pub(crate) account_id: Uuid,
    pub(crate) card: String,
    pub(crate) enrolled_by: Uuid,
    pub(crate) email: String,
}

impl Seeded {
    pub(crate) fn new(programme: &Programme, i: usize, random: u64) -> Self {
        Self {
            member_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            card: card_number::from_random_digits(random),
            enrolled_by: programme.partners[i % programme.partners.len()].0,
            email: format!("member{i}@bench.example.org"),
        }
    }
}

pub(crate) async fn insert_batch(
    db: &DatabaseConnection,
    programme: &Programme,
    seeded: &[Seeded],
) -> Result<(), Error> {
    let now = Utc::now();
    let txn = db.begin().await?;
    point_account::Entity::insert_many(seeded.iter().map(|s| {
        point_account::ActiveModel::from(point_account::Model {
            id: s.account_id,
            programme_id: programme.id,
            member_id: Some(s.member_id),
            balance: 0,
            version: 0,
            merged_into_account_id: None,
            held: 0,
            created_at: now,
            closed_at: None,
        })
    }))
    .exec_without_returning(&txn)
    .await?;
    member::Entity::insert_many(seeded.iter().map(|s| {
        member::ActiveModel::from(member::Model {
            id: s.member_id,
            programme_id: programme.id,
            account_id: s.account_id,
            name: Some("Bench Member".to_owned()),
            email: Some(s.email.clone()),
            phone: None,
            consent_marketing: false,
            consent_data_sharing: false,
            enrolled_by_partner_id: Some(s.enrolled_by),
            erased_at: None,
            created_at: now,
            tier_id: None,
            floor_tier_id: None,
            floor_reason: None,
            floor_ends_at: None,
            external_ref: None,
        })
    }))
    .exec_without_returning(&txn)
    .await?;
    card::Entity::insert_many(seeded.iter().map(|s| {
        card::ActiveModel::from(card::Model {
            id: Uuid::now_v7(),
            programme_id: programme.id,
            number: s.card.clone(),
            account_id: s.account_id,
            member_id: Some(s.member_id),
            kind: "registered".to_owned(),
            status: "active".to_owned(),
            issued_by_partner_id: Some(s.enrolled_by),
            replaced_by_number: None,
            created_at: now,
        })
    }))
    .exec_without_returning(&txn)
    .await?;
    let links = seeded.iter().flat_map(|s| {
        programme.partners.iter().map(move |(partner_id, _)| {
            member_partner::ActiveModel::from(member_partner::Model {
                member_id: s.member_id,
                partner_id: *partner_id,
                programme_id: programme.id,
                created_at: now,
            })
        })
    });
    member_partner::Entity::insert_many(links)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}
