//! Test harness: a real server on a random port over a fresh database per test —
//! SQLite by default, PostgreSQL when TEST_DATABASE_URL names one, with Redis when
//! TEST_REDIS_URL is set.

pub mod oidc;
#[allow(unused_imports)]
pub use oidc::member_token;

use coalition_app::App;
use coalition_server::config::Config;
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Driving the member portal's pages with cookies kept by hand.
pub mod portal;
/// A loopback SMTP server that keeps what it receives (sign-in codes).
pub mod smtp;

/// An HTTP client of one server, with helpers for the calls tests make.
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

pub fn spawn_client(base: &str) -> Client {
    Client {
        base: base.to_owned(),
        http: reqwest::Client::new(),
    }
}

/// A server in this test process, with its storage at hand.
pub struct TestApp {
    pub client: Client,
    pub app: App,
    /// Where this server's cached balances live in Redis, when it uses Redis.
    pub redis_prefix: Option<String>,
}

impl std::ops::Deref for TestApp {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.body
        );
        self.body
    }
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Value {
        assert_eq!(
            (self.status.as_u16(), self.code()),
            (status, code),
            "unexpected answer: {}",
            self.body
        );
        let content_type = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(content_type, "application/problem+json");
        for field in ["type", "title", "status", "detail", "code"] {
            assert!(
                self.body.get(field).is_some(),
                "problem without {field}: {}",
                self.body
            );
        }
        self.body
    }
}

/// A fresh, empty database on the backend under test.
pub async fn fresh_database_url() -> String {
    match std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(base) if base.starts_with("postgres") => {
            let admin = Database::connect(&base)
                .await
                .unwrap_or_else(|e| panic!("TEST_DATABASE_URL {base} is unreachable: {e}"));
            let name = format!("coalition_test_{}", Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let (prefix, _) = base
                .rsplit_once('/')
                .expect("TEST_DATABASE_URL ends with /database");
            format!("{prefix}/{name}")
        }
        Some(other) => panic!("TEST_DATABASE_URL must be a postgres:// URL, got {other}"),
        None => {
            let path =
                std::env::temp_dir().join(format!("coalition-test-{}.db", Uuid::new_v4().simple()));
            format!("sqlite://{}?mode=rwc", path.display())
        }
    }
}

pub fn backend_name() -> &'static str {
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres")) {
        "postgres"
    } else {
        "sqlite"
    }
}

/// The Redis of the backend under test, if any.
pub fn test_redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_redis(test_redis_url()).await
}

/// A server whose cache is the Redis at `redis_url` (in-process cache when `None`).
pub async fn spawn_app_with_redis(redis_url: Option<String>) -> TestApp {
    spawn_app_with(redis_url, &[]).await
}

/// A server on the backend under test with these settings besides.
pub async fn spawn_app_with_settings(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_with(test_redis_url(), extra).await
}

async fn spawn_app_with(redis_url: Option<String>, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = HashMap::new();
    settings.insert("DATABASE_URL".to_owned(), fresh_database_url().await);
    let redis_prefix = redis_url.map(|url| {
        let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
        settings.insert("REDIS_URL".to_owned(), url);
        settings.insert("COALITION_REDIS_PREFIX".to_owned(), prefix.clone());
        prefix
    });
    settings.insert("COALITION_DB_MAX_CONNECTIONS".to_owned(), "60".to_owned());
    // Tests run the jobs when and as of when they choose (`coalition_app::jobs`).
    settings.insert("COALITION_JOBS_INTERVAL_SECONDS".to_owned(), "0".to_owned());
    // Webhooks are delivered only where a test asks for it (`webhooks.rs`).
    settings.insert("COALITION_WEBHOOKS_INTERVAL_MS".to_owned(), "0".to_owned());
    // Every test starts on a fresh database, PostgreSQL included.
    settings.insert("COALITION_MIGRATE_ON_START".to_owned(), "true".to_owned());
    // Bound first: the server's public URL (the OpenID issuer) is its real address.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().unwrap());
    settings.insert("COALITION_PUBLIC_URL".to_owned(), base.clone());
    for (name, value) in extra {
        settings.insert((*name).to_owned(), (*value).to_owned());
    }
    let config = Config::from_map(&settings).expect("test config");
    let app = coalition_server::build_app(&config)
        .await
        .expect("build app");
    let served = app.clone();
    tokio::spawn(async move {
        let jobs = config.jobs_interval;
        coalition_server::serve(served, listener, jobs, std::future::pending()).await
    });
    TestApp {
        client: spawn_client(&base),
        app,
        redis_prefix,
    }
}

/// A programme with its operator token.
#[allow(dead_code)]
pub struct Programme {
    pub id: Uuid,
    pub admin: String,
    pub client_id: String,
    pub client_secret: String,
}

pub struct Partner {
    pub id: Uuid,
    pub token: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Client {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body), None)
            .await
    }

    /// A point-moving POST with a fresh Idempotency-Key.
    pub async fn post_moving(&self, path: &str, token: &str, body: Value) -> Resp {
        let key = Uuid::new_v4().to_string();
        self.call(Method::POST, path, Some(token), Some(body), Some(&key))
            .await
    }

    /// The OpenAPI document the server serves at `/openapi.json`.
    pub async fn served_openapi(&self) -> Value {
        self.http
            .get(format!("{}/openapi.json", self.base))
            .send()
            .await
            .expect("openapi.json")
            .json()
            .await
            .expect("openapi.json is JSON")
    }

    /// `GET /health/ready` as JSON.
    pub async fn ready(&self) -> Value {
        self.http
            .get(format!("{}/health/ready", self.base))
            .send()
            .await
            .expect("health/ready")
            .json()
            .await
            .expect("health/ready answers JSON")
    }

    pub async fn token(&self, client_id: &str, client_secret: &str) -> String {
        let res = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .basic_auth(client_id, Some(client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token request");
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn partner(&self, programme: &Programme, name: &str, earn: &str) -> Partner {
        let body = json!({
            "name": name, "kind": "merchant", "category": "retail",
            "earn_points_per_unit": earn, "issue_price_per_point": "0.012", "redemption_value_per_point": "0.009"
        });
        let partner = self
            .post("/v1/partners", &programme.admin, body)
            .await
            .expect(201);
        let id: Uuid = partner["id"].as_str().unwrap().parse().unwrap();
        let client = self
            .post(
                "/v1/clients",
                &programme.admin,
                json!({"name": format!("{name} POS"), "partner_id": id}),
            )
            .await
            .expect(201);
        let (client_id, client_secret) = (
            client["client_id"].as_str().unwrap().to_owned(),
            client["client_secret"].as_str().unwrap().to_owned(),
        );
        let token = self.token(&client_id, &client_secret).await;
        Partner {
            id,
            token,
            client_id,
            client_secret,
        }
    }

    /// Enrols a member through `partner` and issues a registered card: (member id, card number).
    pub async fn member_with_card(&self, partner: &Partner, email: &str) -> (String, String) {
        let member = self
            .post(
                "/v1/members",
                &partner.token,
                json!({"name": "Member", "email": email}),
            )
            .await
            .expect(201);
        let id = member["id"].as_str().unwrap().to_owned();
        let card = self
            .post("/v1/cards", &partner.token, json!({"member_id": id}))
            .await
            .expect(201);
        (id, card["number"].as_str().unwrap().to_owned())
    }

    pub async fn purchase(
        &self,
        partner: &Partner,
        card: &str,
        amount: &str,
        redeem: i64,
    ) -> Value {
        let body = json!({"card_number": card, "amount": {"amount": amount, "currency": "EUR"}, "external_ref": Uuid::new_v4().to_string(), "redeem_points": redeem});
        self.post_moving("/v1/purchases", &partner.token, body)
            .await
            .expect(201)
    }

    pub async fn points(&self, token: &str, member_id: &str) -> i64 {
        self.get(&format!("/v1/members/{member_id}/balance"), token)
            .await
            .expect(200)["points"]
            .as_i64()
            .unwrap()
    }
}

impl TestApp {
    pub async fn programme(&self, name: &str) -> Programme {
        self.programme_with_point_value(name, "0.01").await
    }
}

/// A member's points account as the database holds it.
pub struct StoredAccount {
    pub id: Uuid,
    pub balance: i64,
    pub version: i64,
}

pub async fn stored_account(db: &sea_orm::DatabaseConnection, member_id: &str) -> StoredAccount {
    use coalition_store::entities::{member, point_account};
    use sea_orm::EntityTrait;
    let member_id: Uuid = member_id.parse().expect("member id");
    let member = member::Entity::find_by_id(member_id)
        .one(db)
        .await
        .unwrap()
        .expect("member row");
    let account = point_account::Entity::find_by_id(member.account_id)
        .one(db)
        .await
        .unwrap()
        .expect("account row");
    StoredAccount {
        id: account.id,
        balance: account.balance,
        version: account.version,
    }
}

/// What Redis holds for an account, read directly: (version, points of the cached view).
pub async fn redis_entry(
    redis_url: &str,
    prefix: &str,
    account_id: Uuid,
) -> Option<(i64, Option<i64>)> {
    let client = redis::Client::open(redis_url).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis reachable");
    let (version, body): (Option<i64>, Option<String>) = redis::cmd("HMGET")
        .arg(format!("{prefix}balance:{account_id}"))
        .arg("v")
        .arg("b")
        .query_async(&mut con)
        .await
        .expect("HMGET");
    let points = body.map(|b| {
        let view: Value = serde_json::from_str(&b).expect("cached view is JSON");
        view["points"].as_i64().expect("cached points")
    });
    version.map(|v| (v, points))
}

/// Reads one counter of `/metrics`.
pub async fn metric(t: &Client, name: &str) -> u64 {
    let text = t
        .http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
}

impl TestApp {
    /// A programme whose points are worth `point_value` each.
    pub async fn programme_with_point_value(&self, name: &str, point_value: &str) -> Programme {
        self.programme_with_terms(name, point_value, 730).await
    }

    /// A programme made through the use case (not the CLI), with its operator token.
    pub async fn programme_with_terms(
        &self,
        name: &str,
        point_value: &str,
        point_expiry_days: i32,
    ) -> Programme {
        let input = coalition_app::programmes::NewProgramme {
            name: name.into(),
            currency: "EUR".into(),
            point_value: point_value.into(),
            point_expiry_days,
        };
        let created = coalition_app::programmes::create(&self.app.db, input)
            .await
            .expect("create programme");
        let admin = self
            .token(&created.operator.client_id, &created.operator.client_secret)
            .await;
        Programme {
            id: created.programme_id,
            admin,
            client_id: created.operator.client_id,
            client_secret: created.operator.client_secret,
        }
    }
}

/// A purchase's card is on a live account — where a refund finds the points — which is
/// the account the purchase was made on, or the member's that one was merged into.
pub fn assert_refund_reaches_the_points(
    p: &coalition_store::entities::purchase::Model,
    card: &coalition_store::entities::card::Model,
    accounts: &[coalition_store::entities::point_account::Model],
) {
    let account_of = |id| accounts.iter().find(|a| a.id == id).unwrap();
    let now = account_of(card.account_id);
    assert_eq!(
        now.merged_into_account_id, None,
        "purchase {}: its card is on a merged account",
        p.id
    );
    let then = account_of(p.account_id);
    assert!(
        then.id == now.id || then.merged_into_account_id == Some(now.id),
        "purchase {}: its points are not where its card is",
        p.id
    );
}

/// What must hold for every points account of a programme, read straight from the
/// database: its lots hold exactly its balance, points always sit behind a usable card,
/// and every purchase's points are where its card is.
pub async fn assert_accounts_consistent(db: &sea_orm::DatabaseConnection, programme_id: Uuid) {
    use coalition_store::entities::{bank_card, card, point_account, point_lot, purchase};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    // A co-branded bank card is a card of its member's account too.
    let bank_cards = bank_card::Entity::find()
        .filter(bank_card::Column::ProgrammeId.eq(programme_id))
        .all(db)
        .await
        .unwrap();
    let accounts = point_account::Entity::find()
        .filter(point_account::Column::ProgrammeId.eq(programme_id))
        .all(db)
        .await
        .unwrap();
    let cards = card::Entity::find()
        .filter(card::Column::ProgrammeId.eq(programme_id))
        .all(db)
        .await
        .unwrap();
    for a in &accounts {
        let lots: i64 = point_lot::Entity::find()
            .filter(point_lot::Column::AccountId.eq(a.id))
            .all(db)
            .await
            .unwrap()
            .iter()
            .map(|l| l.points_remaining)
            .sum();
        assert_eq!(lots, a.balance, "lots of account {} hold its balance", a.id);
        let usable = cards
            .iter()
            .filter(|c| c.account_id == a.id && c.status != "replaced")
            .count()
            + bank_cards
                .iter()
                .filter(|c| c.account_id == a.id && c.status != "replaced")
                .count();
        // A member imported with her history (`imports`) has points before any card:
        // hers as soon as a card is issued to her.
        let never_carded = a.member_id.is_some()
            && a.closed_at.is_none()
            && !cards.iter().any(|c| c.account_id == a.id)
            && !bank_cards.iter().any(|c| c.account_id == a.id);
        assert!(
            a.balance == 0 || usable > 0 || never_carded,
            "account {} holds {} points and no usable card",
            a.id,
            a.balance
        );
    }
    let purchases = purchase::Entity::find()
        .filter(purchase::Column::ProgrammeId.eq(programme_id))
        .all(db)
        .await
        .unwrap();
    // Imported purchases have no card and cannot be refunded.
    for p in purchases.into_iter().filter(|p| p.occurred_at.is_none()) {
        let card = cards.iter().find(|c| c.number == p.card_number).unwrap();
        assert_refund_reaches_the_points(&p, card, &accounts);
    }
}

/// A `coalition serve` process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with this environment only, migrating on start as tests want (they start
/// on fresh databases) unless `env` says otherwise.
pub fn coalition(env: &[(&str, String)]) -> Command {
    let mut command = bare_coalition(env);
    if !env
        .iter()
        .any(|(name, _)| *name == "COALITION_MIGRATE_ON_START")
    {
        command.env("COALITION_MIGRATE_ON_START", "true");
    }
    command
}

/// The binary with exactly this environment: the defaults a deployment gets.
pub fn bare_coalition(env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coalition-under-test"));
    command.env_clear().env("COALITION_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start_server(env: &[(&str, String)]) -> ServerProcess {
    start_serving(coalition(env)).await
}

/// A `coalition serve` process whose log (stderr) goes to `log`.
pub async fn start_server_logging_to(env: &[(&str, String)], log: Stdio) -> ServerProcess {
    start_serving_logging_to(coalition(env), log).await
}

/// `command` (the binary, its environment and working directory set) serving on a free
/// port, once ready.
pub async fn start_serving(command: Command) -> ServerProcess {
    start_serving_logging_to(command, Stdio::inherit()).await
}

async fn start_serving_logging_to(mut command: Command, log: Stdio) -> ServerProcess {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = command
        .env("COALITION_ADDR", &addr)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start coalition serve");
    let server = ServerProcess {
        child,
        base: format!("http://{addr}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        let ready = http
            .get(format!("{}/health/ready", server.base))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("coalition serve on {addr} never became ready");
}

/// The environment of a `coalition serve` process on `database_url` that caches in
/// `redis_url` under `prefix`.
pub fn server_env(
    database_url: &str,
    redis_url: &str,
    prefix: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("REDIS_URL", redis_url.to_owned()),
        ("COALITION_REDIS_PREFIX", prefix.to_owned()),
        ("COALITION_DB_MAX_CONNECTIONS", "20".to_owned()),
        ("COALITION_JOBS_INTERVAL_SECONDS", "0".to_owned()),
        ("COALITION_WEBHOOKS_INTERVAL_MS", "0".to_owned()),
    ]
}

/// A programme made with `coalition programme create`, with an operator token from `server`.
pub async fn create_programme(env: &[(&str, String)], server: &Client) -> Programme {
    let created = coalition(env)
        .args(["programme", "create", "--name", "Coalition"])
        .args(["--currency", "EUR", "--point-value", "0.01"])
        .output()
        .expect("programme create");
    assert!(created.status.success(), "{created:?}");
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let admin = server
        .token(
            created["client_id"].as_str().unwrap(),
            created["client_secret"].as_str().unwrap(),
        )
        .await;
    Programme {
        id: created["programme_id"].as_str().unwrap().parse().unwrap(),
        admin,
        client_id: String::new(),
        client_secret: String::new(),
    }
}

/// A TCP proxy to Redis that can refuse and drop every connection.
pub struct CuttableProxy {
    pub addr: String,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CuttableProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (cut2, links2) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().unwrap().push(link);
            }
        });
        Self { addr, cut, links }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// The test Redis behind a cuttable proxy; `None` (said on stderr) without TEST_REDIS_URL.
pub async fn proxied_redis() -> Option<(String, CuttableProxy)> {
    let Some(redis_url) = test_redis_url() else {
        eprintln!("needs TEST_REDIS_URL: runs in the PostgreSQL + Redis pass of .ci/run");
        return None;
    };
    let upstream = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = CuttableProxy::start(upstream).await;
    Some((redis_url, proxy))
}

/// Waits up to 5 s for readiness to report the cache `ok` again.
pub async fn cache_comes_back(t: &Client) -> bool {
    for _ in 0..50 {
        if t.ready().await["cache"] == "ok" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Enrols a member through `partner`: its id.
pub async fn enrol(t: &Client, partner: &Partner, email: &str) -> String {
    t.post(
        "/v1/members",
        &partner.token,
        json!({"name": "Bob", "email": email}),
    )
    .await
    .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Issues a bearer card through `partner`: its number.
pub async fn bearer_card(t: &Client, partner: &Partner) -> String {
    t.post("/v1/cards", &partner.token, json!({}))
        .await
        .expect(201)["number"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Registers a bearer card to a member through `partner`.
pub async fn register(t: &Client, partner: &Partner, card: &str, member: &str) -> Resp {
    t.post_moving(
        &format!("/v1/cards/{card}/register"),
        &partner.token,
        json!({"member_id": member}),
    )
    .await
}

/// Two `coalition serve` processes on one fresh PostgreSQL database and one Redis, and
/// a programme made through the first; `None` outside the PostgreSQL + Redis pass.
pub struct TwoProcesses {
    pub a: Client,
    pub b: Client,
    pub programme: Programme,
    _servers: (ServerProcess, ServerProcess),
}

pub async fn two_processes() -> Option<TwoProcesses> {
    let (Some(redis_url), "postgres") = (test_redis_url(), backend_name()) else {
        eprintln!("needs PostgreSQL and Redis: runs in the PostgreSQL + Redis pass of .ci/run");
        return None;
    };
    let database_url = fresh_database_url().await;
    let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
    let env = server_env(&database_url, &redis_url, &prefix);
    let first = start_server(&env).await;
    let second = start_server(&env).await;
    let (a, b) = (spawn_client(&first.base), spawn_client(&second.base));
    let programme = create_programme(&env, &a).await;
    Some(TwoProcesses {
        a,
        b,
        programme,
        _servers: (first, second),
    })
}

/// A random word of 32 letters: unique like a UUID, but with no digit run the API could
/// take for a payment card number (refused wherever it appears) — for made-up client ids,
/// names and addresses sent in requests.
pub fn random_letters() -> String {
    Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .map(|c| c.to_digit(10).map_or(c, |d| (b'g' + d as u8) as char))
        .collect()
}
