//! Outbound webhooks: subscribers' endpoints, the fan-out of outbox events to them, and
//! their delivery as Standard Webhooks.
//!
//! - **Endpoints** belong to the caller's programme and, for partner and bank clients,
//!   to their partner (the operator's have none). Each subscriber sees and manages only
//!   its own: another's id is a 404. Which events an endpoint may ask for and what of an
//!   event it receives is `coalition_domain::webhooks` (`partners_may_subscribe`,
//!   `view`).
//! - **Fan-out** ([`fan_out`]): outbox events not yet handed over (`delivered_at` empty)
//!   become one delivery row per enabled endpoint that subscribed to the type before the
//!   event happened and may hear it; the event is then marked handed over, in the same
//!   transaction. PostgreSQL workers take events with `FOR UPDATE SKIP LOCKED`; the
//!   unique (endpoint, message) makes a repeat harmless anyway.
//! - **Delivery** ([`deliver_due`]): a worker claims due deliveries with one UPDATE that
//!   moves them out of reach for a lease and counts the attempt (PostgreSQL: the rows
//!   are picked with `FOR UPDATE SKIP LOCKED`, so two replicas never claim the same one;
//!   SQLite has one writer), sends each outside any transaction, then records the answer
//!   only if the delivery is still under its claim (the claim's `lease_token`, which a
//!   later claim or a redelivery replaces). A worker that dies mid-send leaves the message
//!   to be claimed again when the lease ends: at least once. `webhook-id` is the outbox
//!   event's id on every attempt. A redelivery of a message under a live lease is refused
//!   (`delivery_in_flight`): it would reset the message under its sender's feet.
//! - **Purchases and refunds** write their outbox event only when the programme has an
//!   enabled endpoint that may hear it ([`Listeners`], kept in the terms snapshot and
//!   invalidated like partner terms), so the hot path writes nothing more when nobody
//!   listens; a new subscription reaches every process within a second.

use crate::error::{AppError, AppResult, FieldError, Validator};
use crate::pagination::{Page, PageRequest};
use crate::{terms, App, Caller, Scope};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use coalition_domain::webhooks::{
    self as rules, classify, next_attempt, parse_retry_after, partners_may_subscribe, view, Answer,
    Subscriber, EVENT_TYPES,
};
use coalition_store::entities::{outbox_event, webhook_delivery, webhook_endpoint};
use rand::RngCore;
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use uuid::Uuid;

/// How long a URL may be.
pub const MAX_URL_CHARS: usize = 2048;
/// The longest overlap of a rotated secret, in seconds (7 days).
pub const MAX_OVERLAP_SECONDS: i64 = 7 * 86_400;
/// The default overlap of a rotated secret: the previous one keeps signing an hour.
pub const DEFAULT_OVERLAP_SECONDS: i64 = 3600;
/// Events handed over per fan-out transaction.
const FAN_OUT_BATCH: u64 = 200;
/// Deliveries one worker claims at once (and sends concurrently).
const CLAIM_BATCH: i64 = 16;
/// How much of a failed answer's body the log keeps.
const EXCERPT_CHARS: usize = 200;

/// How this process delivers webhooks (from the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Plain `http://` and private, loopback or link-local addresses allowed: for tests
    /// and local set-ups only (`COALITION_WEBHOOKS_ALLOW_INSECURE`).
    pub allow_insecure: bool,
    /// How often `serve` looks for due deliveries; `None`: it does not deliver.
    pub interval: Option<std::time::Duration>,
    /// The most one delivery attempt may take, connection included.
    pub timeout: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allow_insecure: false,
            interval: Some(std::time::Duration::from_secs(1)),
            timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// The delivery side: settings and the HTTP client every attempt uses.
pub struct Webhooks {
    pub settings: Settings,
    http: reqwest::Client,
}

impl Webhooks {
    pub fn new(settings: Settings) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect could lead to an address the URL check never saw.
            .redirect(reqwest::redirect::Policy::none())
            // No egress proxy, whatever HTTPS_PROXY, HTTP_PROXY or ALL_PROXY say: a proxy
            // would resolve the name itself, past the public-address check below. A
            // deployment that must go through one needs a setting of its own (not built).
            .no_proxy()
            .user_agent(concat!("Coalition-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_insecure {
            // Names are resolved by a resolver that refuses non-public addresses, and the
            // connection goes to what it answered: no second look-up to rebind.
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let http = builder
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Self { settings, http })
    }
}

/// Resolves host names to public addresses only (`rules::is_public`).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() || found.iter().any(|a| !rules::is_public(a.ip())) {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to a private or reserved address").into();
                return Err(refused);
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Who listens: kept in the terms snapshot.

/// Which subscribers of a programme have an enabled endpoint for which event types.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    by_event: HashMap<String, (bool, HashSet<Uuid>)>,
}

impl Listeners {
    /// Whether an event of `event_type` about `partner` (none: about no one partner)
    /// would reach an endpoint: the operator's, or that partner's.
    pub fn wants(&self, event_type: &str, partner: Option<Uuid>) -> bool {
        self.by_event
            .get(event_type)
            .is_some_and(|(operator, partners)| {
                *operator || partner.is_some_and(|p| partners.contains(&p))
            })
    }
}

/// The enabled endpoints' subscriptions of a programme (read with its terms).
pub(crate) async fn listeners(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
) -> AppResult<Listeners> {
    let rows: Vec<(Option<Uuid>, String)> = webhook_endpoint::Entity::find()
        .select_only()
        .column(webhook_endpoint::Column::PartnerId)
        .column(webhook_endpoint::Column::Events)
        .filter(webhook_endpoint::Column::ProgrammeId.eq(programme_id))
        .filter(webhook_endpoint::Column::Status.eq(ENABLED))
        .into_tuple()
        .all(db)
        .await?;
    let mut listeners = Listeners::default();
    for (partner, events) in rows {
        for event in parse_events(&events)? {
            let (operator, partners) = listeners.by_event.entry(event).or_default();
            match partner {
                None => *operator = true,
                Some(p) => {
                    partners.insert(p);
                }
            }
        }
    }
    Ok(listeners)
}

// ---------------------------------------------------------------------------------------
// Endpoints.

const ENABLED: &str = "enabled";
const DISABLED: &str = "disabled";
const PENDING: &str = "pending";
const DELIVERED: &str = "delivered";
const FAILED: &str = "failed";

/// An endpoint as its owner sees it (never its secret).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    /// Until when the previous secret signs too, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint with the secret just made: shown this once.
#[derive(Debug, Clone)]
pub struct WithSecret {
    pub endpoint: Endpoint,
    pub secret: String,
}

fn endpoint(row: webhook_endpoint::Model) -> AppResult<Endpoint> {
    Ok(Endpoint {
        id: row.id,
        events: parse_events(&row.events)?,
        url: row.url,
        status: row.status,
        disabled_reason: row.disabled_reason,
        previous_secret_expires_at: row.previous_secret_expires_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn parse_events(text: &str) -> AppResult<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| AppError::Internal(format!("stored webhook events are corrupt: {e}")))
}

/// The subscriber the caller manages endpoints as.
fn owner(caller: &Caller) -> AppResult<Option<Uuid>> {
    caller.require(&[Scope::Admin, Scope::Partner, Scope::Bank])?;
    match caller.scope {
        Scope::Admin => Ok(None),
        _ => caller
            .partner_id
            .map(Some)
            .ok_or_else(|| AppError::Forbidden("this client is not bound to a partner".into())),
    }
}

/// A new `whsec_` secret: 32 random bytes, base64.
fn new_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Checks a subscription URL: `https://` with a host, no credentials, no fragment;
/// not an IP literal or `localhost` name that is private, unless insecure URLs are
/// allowed. Host names are resolved at delivery time, where private answers are refused.
pub fn check_url(v: &mut Validator, url: &str, allow_insecure: bool) -> String {
    let field = "url";
    if url.chars().count() > MAX_URL_CHARS {
        v.require(
            field,
            false,
            &format!("must be at most {MAX_URL_CHARS} characters"),
        );
        return url.to_owned();
    }
    // As the document's pattern says: a lower-case scheme, no spaces or control
    // characters (the URL parser would quietly drop tabs and newlines, or lower a scheme).
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.chars().any(|c| c.is_control() || c == ' ')
    {
        v.require(
            field,
            false,
            "must be an https:// URL without spaces or control characters",
        );
        return url.to_owned();
    }
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => {
            v.require(field, false, &format!("is not a URL: {e}"));
            return url.to_owned();
        }
    };
    // The limit holds for what is stored: the parsed URL, percent-encoded.
    if parsed.as_str().chars().count() > MAX_URL_CHARS {
        v.require(
            field,
            false,
            &format!("must be at most {MAX_URL_CHARS} characters once percent-encoded"),
        );
        return url.to_owned();
    }
    match parsed.scheme() {
        "https" => {}
        "http" if allow_insecure => {}
        "http" => v.require(field, false, "must be https:// (plain http is refused)"),
        _ => v.require(field, false, "must be an https:// URL"),
    }
    v.require(
        field,
        parsed.username().is_empty() && parsed.password().is_none(),
        "must not carry credentials",
    );
    v.require(
        field,
        parsed.fragment().is_none(),
        "must not have a fragment",
    );
    match parsed.host() {
        None => v.require(field, false, "must name a host"),
        Some(host) if !allow_insecure => {
            let private = match host {
                url::Host::Ipv4(ip) => !rules::is_public(IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => !rules::is_public(IpAddr::V6(ip)),
                url::Host::Domain(name) => {
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    name == "localhost" || name.ends_with(".localhost")
                }
            };
            v.require(
                field,
                !private,
                "must not point at a private, loopback or link-local address",
            );
        }
        Some(_) => {}
    }
    parsed.to_string()
}

fn check_events(v: &mut Validator, events: &[String], partner: Option<Uuid>) -> Vec<String> {
    let counted = !events.is_empty() && events.len() <= EVENT_TYPES.len() * 2;
    v.require(
        "events",
        counted,
        &format!("must list 1 to {} event types", EVENT_TYPES.len() * 2),
    );
    if !counted {
        // One error for a huge list, not one per entry.
        return Vec::new();
    }
    let mut kept = Vec::new();
    for event in events {
        if !EVENT_TYPES.contains(&event.as_str()) {
            v.require("events", false, &format!("'{event}' is not an event type"));
        } else if partner.is_some() && !partners_may_subscribe(event) {
            v.require(
                "events",
                false,
                &format!("{event} is delivered to the operator's endpoints only"),
            );
        } else if !kept.contains(event) {
            kept.push(event.clone());
        }
    }
    kept
}

pub async fn create(
    app: &App,
    caller: &Caller,
    url: &str,
    events: &[String],
) -> AppResult<WithSecret> {
    let partner = owner(caller)?;
    let mut v = Validator::default();
    let url = check_url(&mut v, url, app.webhooks.settings.allow_insecure);
    let events = check_events(&mut v, events, partner);
    v.finish()?;
    // The stored form is checked again: parsing decodes the host and drops dot segments
    // and soft hyphens, which can join digit groups the request's text kept apart.
    if coalition_domain::bank::contains_pan(&url) {
        return Err(AppError::PanNotAllowed(
            "url holds what looks like a payment card number (PAN) once normalised, which \
             is never accepted"
                .into(),
        ));
    }
    let now = now();
    let secret = new_secret();
    let row = webhook_endpoint::Model {
        id: Uuid::now_v7(),
        programme_id: caller.programme_id,
        partner_id: partner,
        url,
        events: serde_json::to_string(&events).map_err(|e| AppError::Internal(e.to_string()))?,
        secret: secret.clone(),
        previous_secret: None,
        previous_secret_expires_at: None,
        status: ENABLED.into(),
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    let txn = app.db.begin().await?;
    webhook_endpoint::Entity::insert(webhook_endpoint::ActiveModel::from(row.clone()))
        .exec_without_returning(&txn)
        .await?;
    let version = terms::bump(&txn, caller.programme_id).await?;
    txn.commit().await?;
    app.terms.changed(caller.programme_id, version);
    Ok(WithSecret {
        endpoint: endpoint(row)?,
        secret,
    })
}

/// The caller's own endpoint, or 404.
async fn own(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: Uuid,
) -> AppResult<webhook_endpoint::Model> {
    let partner = owner(caller)?;
    let mut query = webhook_endpoint::Entity::find_by_id(id)
        .filter(webhook_endpoint::Column::ProgrammeId.eq(caller.programme_id));
    query = match partner {
        None => query.filter(webhook_endpoint::Column::PartnerId.is_null()),
        Some(p) => query.filter(webhook_endpoint::Column::PartnerId.eq(p)),
    };
    query.one(db).await?.ok_or(AppError::NotFound("webhook"))
}

pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<Endpoint> {
    endpoint(own(&app.db, caller, id).await?)
}

/// The caller's endpoints, oldest first.
pub async fn list(app: &App, caller: &Caller, page: PageRequest) -> AppResult<Page<Endpoint>> {
    let partner = owner(caller)?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query = webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::ProgrammeId.eq(caller.programme_id));
    query = match partner {
        None => query.filter(webhook_endpoint::Column::PartnerId.is_null()),
        Some(p) => query.filter(webhook_endpoint::Column::PartnerId.eq(p)),
    };
    if let Some(after) = after {
        query = query.filter(webhook_endpoint::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(webhook_endpoint::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let rows = rows
        .into_iter()
        .map(endpoint)
        .collect::<AppResult<Vec<_>>>()?;
    Ok(page.page(rows, |e| e.id.to_string(), |e| e))
}

/// Deletes the endpoint and its delivery log; messages on their way to it stop.
pub async fn delete(app: &App, caller: &Caller, id: Uuid) -> AppResult<()> {
    let txn = app.db.begin().await?;
    let row = own(&txn, caller, id).await?;
    webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::EndpointId.eq(row.id))
        .exec(&txn)
        .await?;
    webhook_endpoint::Entity::delete_by_id(row.id)
        .exec(&txn)
        .await?;
    let version = terms::bump(&txn, caller.programme_id).await?;
    txn.commit().await?;
    app.terms.changed(caller.programme_id, version);
    Ok(())
}

/// A new secret, shown once; the previous one signs beside it for `overlap_seconds`.
pub async fn rotate_secret(
    app: &App,
    caller: &Caller,
    id: Uuid,
    overlap_seconds: Option<i64>,
) -> AppResult<WithSecret> {
    let overlap = overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
    if !(0..=MAX_OVERLAP_SECONDS).contains(&overlap) {
        return Err(AppError::Validation(vec![FieldError::new(
            "overlap_seconds",
            format!("must be between 0 and {MAX_OVERLAP_SECONDS}"),
        )]));
    }
    let txn = app.db.begin().await?;
    let row = own(&txn, caller, id).await?;
    let now = now();
    let secret = new_secret();
    let (previous, until) = if overlap > 0 {
        (
            Some(row.secret.clone()),
            Some(now + Duration::seconds(overlap)),
        )
    } else {
        (None, None)
    };
    webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::Secret,
            Expr::value(secret.clone()),
        )
        .col_expr(
            webhook_endpoint::Column::PreviousSecret,
            Expr::value(previous),
        )
        .col_expr(
            webhook_endpoint::Column::PreviousSecretExpiresAt,
            Expr::value(until),
        )
        .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(now))
        .filter(webhook_endpoint::Column::Id.eq(row.id))
        .exec(&txn)
        .await?;
    let changed = own(&txn, caller, id).await?;
    txn.commit().await?;
    Ok(WithSecret {
        endpoint: endpoint(changed)?,
        secret,
    })
}

/// Enables or disables the endpoint. Enabling resumes its pending messages (on their
/// schedule) and clears the reason it was disabled for.
pub async fn set_enabled(
    app: &App,
    caller: &Caller,
    id: Uuid,
    enabled: bool,
) -> AppResult<Endpoint> {
    let txn = app.db.begin().await?;
    let row = own(&txn, caller, id).await?;
    let reason = (!enabled).then(|| "disabled by its owner".to_owned());
    set_status(&txn, row.id, enabled, reason).await?;
    let version = terms::bump(&txn, caller.programme_id).await?;
    let changed = own(&txn, caller, id).await?;
    txn.commit().await?;
    app.terms.changed(caller.programme_id, version);
    endpoint(changed)
}

async fn set_status(
    db: &impl ConnectionTrait,
    id: Uuid,
    enabled: bool,
    reason: Option<String>,
) -> AppResult<()> {
    webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::Status,
            Expr::value(if enabled { ENABLED } else { DISABLED }),
        )
        .col_expr(
            webhook_endpoint::Column::DisabledReason,
            Expr::value(reason),
        )
        .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(now()))
        .filter(webhook_endpoint::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// The endpoint's delivery log, newest first.
pub async fn deliveries(
    app: &App,
    caller: &Caller,
    id: Uuid,
    page: PageRequest,
) -> AppResult<Page<webhook_delivery::Model>> {
    let row = own(&app.db, caller, id).await?;
    let before = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query =
        webhook_delivery::Entity::find().filter(webhook_delivery::Column::EndpointId.eq(row.id));
    if let Some(before) = before {
        query = query.filter(webhook_delivery::Column::Id.lt(before));
    }
    let rows = query
        .order_by_desc(webhook_delivery::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    Ok(page.page(rows, |d| d.id.to_string(), |d| d))
}

/// Sends the message again, from a fresh retry schedule (its `attempts` start over), with
/// the same `webhook-id`. A disabled endpoint's message waits until it is enabled. A
/// message a worker is sending right now (claimed, its lease running) is refused with
/// [`AppError::DeliveryInFlight`]; once the lease has run out (the worker died or hangs)
/// it may be reset, and that worker's answer, if it still comes, is not recorded.
pub async fn redeliver(
    app: &App,
    caller: &Caller,
    id: Uuid,
    delivery_id: Uuid,
) -> AppResult<webhook_delivery::Model> {
    let txn = app.db.begin().await?;
    let row = own(&txn, caller, id).await?;
    let found = webhook_delivery::Entity::find_by_id(delivery_id)
        .filter(webhook_delivery::Column::EndpointId.eq(row.id))
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("delivery"))?;
    let now = now();
    // Not under a live claim: no claim at all, or one whose lease has run out. Checked in
    // the UPDATE itself, so a claim committed since the read above is seen too.
    let reset = webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::Status, Expr::value(PENDING))
        .col_expr(webhook_delivery::Column::Attempts, Expr::value(0))
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(
            webhook_delivery::Column::LeaseToken,
            Expr::value(Option::<Uuid>::None),
        )
        .filter(webhook_delivery::Column::Id.eq(found.id))
        .filter(
            sea_orm::Condition::any()
                .add(webhook_delivery::Column::LeaseToken.is_null())
                .add(webhook_delivery::Column::NextAttemptAt.lte(now)),
        )
        .exec(&txn)
        .await?;
    if reset.rows_affected == 0 {
        let leased = webhook_delivery::Entity::find_by_id(found.id)
            .one(&txn)
            .await?
            .ok_or(AppError::NotFound("delivery"))?;
        return Err(AppError::DeliveryInFlight {
            lease_ends: leased.next_attempt_at.unwrap_or(now),
        });
    }
    let changed = webhook_delivery::Entity::find_by_id(found.id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("delivery"))?;
    txn.commit().await?;
    Ok(changed)
}

/// Now, to the microsecond, as PostgreSQL keeps it.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

// ---------------------------------------------------------------------------------------
// Fan-out.

/// Hands over outbox events not yet handed over, a batch per transaction, until none is
/// left: one delivery per endpoint that hears each. Answers the events handed over.
pub async fn fan_out(app: &App) -> AppResult<u64> {
    let mut handed = 0;
    loop {
        let done = fan_out_batch(app).await?;
        handed += done;
        if done < FAN_OUT_BATCH {
            return Ok(handed);
        }
    }
}

async fn fan_out_batch(app: &App) -> AppResult<u64> {
    let txn = app.db.begin().await?;
    let events = outbox_event::Entity::find()
        .filter(outbox_event::Column::DeliveredAt.is_null())
        .order_by_asc(outbox_event::Column::CreatedAt)
        .limit(FAN_OUT_BATCH)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .all(&txn)
        .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let programmes: Vec<Uuid> = events
        .iter()
        .map(|e| e.programme_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let endpoints = webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::ProgrammeId.is_in(programmes))
        .filter(webhook_endpoint::Column::Status.eq(ENABLED))
        .all(&txn)
        .await?;
    let now = now();
    let mut deliveries = Vec::new();
    for event in &events {
        let data: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
        for e in endpoints
            .iter()
            .filter(|e| e.programme_id == event.programme_id)
        {
            // Only what happened after the subscription, to what it asked for and may hear.
            let wanted = parse_events(&e.events)?.contains(&event.event_type);
            if !wanted || e.created_at > event.created_at {
                continue;
            }
            if view(&event.event_type, &data, Subscriber::of(e.partner_id)).is_none() {
                continue;
            }
            deliveries.push(webhook_delivery::ActiveModel {
                id: Set(Uuid::now_v7()),
                programme_id: Set(event.programme_id),
                endpoint_id: Set(e.id),
                message_id: Set(event.id),
                event_type: Set(event.event_type.clone()),
                status: Set(PENDING.into()),
                attempts: Set(0),
                next_attempt_at: Set(Some(now)),
                last_attempt_at: Set(None),
                last_status_code: Set(None),
                last_error: Set(None),
                lease_token: Set(None),
                delivered_at: Set(None),
                created_at: Set(now),
            });
        }
    }
    for chunk in deliveries.chunks(500) {
        webhook_delivery::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([
                    webhook_delivery::Column::EndpointId,
                    webhook_delivery::Column::MessageId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    outbox_event::Entity::update_many()
        .col_expr(outbox_event::Column::DeliveredAt, Expr::value(now))
        .filter(outbox_event::Column::Id.is_in(ids))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(events.len() as u64)
}

// ---------------------------------------------------------------------------------------
// Delivery.

/// What a delivery round did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryReport {
    /// Outbox events handed over to deliveries.
    pub fanned_out: u64,
    pub delivered: u64,
    /// Failed attempts that will be tried again.
    pub retried: u64,
    /// Messages given up (attempts used up, or 410 Gone).
    pub failed: u64,
}

/// A claimed delivery: its claim's lease token fences its result.
#[derive(Debug)]
struct Claimed {
    id: Uuid,
    endpoint_id: Uuid,
    message_id: Uuid,
    attempts: i32,
    lease_token: Uuid,
}

/// One round: fan out, then claim and send due deliveries until none is due (a bounded
/// number of batches per round).
pub async fn deliver_due(app: &App, _now: DateTime<Utc>) -> AppResult<DeliveryReport> {
    let mut report = DeliveryReport {
        fanned_out: fan_out(app).await?,
        ..DeliveryReport::default()
    };
    for _ in 0..16 {
        let claimed = claim(app).await?;
        let count = claimed.len() as i64;
        let mut running = tokio::task::JoinSet::new();
        for c in claimed {
            let app = app.clone();
            running.spawn(async move { attempt(&app, c).await });
        }
        while let Some(done) = running.join_next().await {
            match done.map_err(|e| AppError::Internal(format!("a delivery's task: {e}")))? {
                Ok(Some(Answer::Delivered)) => report.delivered += 1,
                Ok(Some(Answer::Failed)) => report.retried += 1,
                Ok(Some(Answer::Gone)) => report.failed += 1,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "recording a webhook delivery failed"),
            }
        }
        if count < CLAIM_BATCH {
            break;
        }
    }
    Ok(report)
}

/// Claims up to [`CLAIM_BATCH`] due deliveries of enabled endpoints: each moves out of
/// reach until its lease ends, counts one more attempt and takes this claim's lease
/// token (one fresh token per claim statement), in one statement.
async fn claim(app: &App) -> AppResult<Vec<Claimed>> {
    let backend = app.db.get_database_backend();
    let now = now();
    let lease_end = now + lease(app);
    let lease_token = Uuid::new_v4();
    let skip_locked = if backend == DbBackend::Postgres {
        "FOR UPDATE OF d SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, last_attempt_at = $2, lease_token = $4 \
         WHERE id IN (SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
           WHERE d.status = 'pending' AND d.next_attempt_at <= $2 AND e.status = 'enabled' \
           ORDER BY d.next_attempt_at LIMIT $3 {skip_locked}) \
         AND status = 'pending' AND next_attempt_at <= $2 \
         RETURNING id, endpoint_id, message_id, attempts"
    );
    let rows = app
        .db
        .query_all(Statement::from_sql_and_values(
            backend,
            sql,
            [
                lease_end.into(),
                now.into(),
                CLAIM_BATCH.into(),
                lease_token.into(),
            ],
        ))
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Claimed {
                id: row.try_get("", "id")?,
                endpoint_id: row.try_get("", "endpoint_id")?,
                message_id: row.try_get("", "message_id")?,
                attempts: row.try_get("", "attempts")?,
                lease_token,
            })
        })
        .collect()
}

/// How long a claimed delivery is out of other workers' reach: longer than an attempt
/// can take, so only a worker that died lets it go back.
fn lease(app: &App) -> Duration {
    Duration::from_std(app.webhooks.settings.timeout).unwrap_or(Duration::seconds(10))
        + Duration::seconds(20)
}

/// What one attempt got back.
struct Outcome {
    status: Option<u16>,
    retry_after: Option<i64>,
    error: Option<String>,
}

/// Sends one claimed delivery and records what came of it. `None`: nothing recorded
/// (the endpoint or the delivery went, or another worker took it over).
async fn attempt(app: &App, c: Claimed) -> AppResult<Option<Answer>> {
    let Some(endpoint) = webhook_endpoint::Entity::find_by_id(c.endpoint_id)
        .one(&app.db)
        .await?
    else {
        return Ok(None);
    };
    let event = outbox_event::Entity::find_by_id(c.message_id)
        .one(&app.db)
        .await?;
    let data = event
        .as_ref()
        .and_then(|e| serde_json::from_str::<Value>(&e.payload).ok())
        .and_then(|data| {
            let event = event.as_ref()?;
            view(
                &event.event_type,
                &data,
                Subscriber::of(endpoint.partner_id),
            )
        });
    let outcome = match (event, data) {
        (Some(event), Some(data)) => send(app, &endpoint, &event, data).await,
        _ => Outcome {
            status: None,
            retry_after: None,
            error: Some("the event is gone or not for this endpoint".into()),
        },
    };
    record(app, &endpoint, &c, outcome).await
}

/// The message's body: `{"type", "timestamp", "data"}`, the same on every attempt.
pub fn body(event: &outbox_event::Model, data: Value) -> String {
    json!({
        "type": event.event_type,
        "timestamp": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": data,
    })
    .to_string()
}

/// `webhook-signature`: `v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>` with the
/// current secret, and with the previous one too while a rotation's overlap lasts.
pub fn signature(
    secrets: &[&str],
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> AppResult<String> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let signer = standardwebhooks::Webhook::new(secret)
            .map_err(|_| AppError::Internal("a stored webhook secret is corrupt".into()))?;
        let signed = signer
            .sign(message_id, timestamp, body.as_bytes())
            .map_err(|e| AppError::Internal(format!("signing a webhook: {e}")))?;
        signatures.push(signed);
    }
    Ok(signatures.join(" "))
}

async fn send(
    app: &App,
    endpoint: &webhook_endpoint::Model,
    event: &outbox_event::Model,
    data: Value,
) -> Outcome {
    let failed = |error: String| Outcome {
        status: None,
        retry_after: None,
        error: Some(error),
    };
    let url = match reqwest::Url::parse(&endpoint.url) {
        Ok(url) => url,
        Err(e) => return failed(format!("bad URL: {e}")),
    };
    if !app.webhooks.settings.allow_insecure {
        // IP literals do not go through the resolver: checked here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if literal.is_some_and(|ip| !rules::is_public(ip)) || url.scheme() != "https" {
            return failed("refused: not https, or a private address".into());
        }
    }
    let body = body(event, data);
    let message_id = event.id.to_string();
    let timestamp = Utc::now().timestamp();
    let mut secrets = vec![endpoint.secret.as_str()];
    if let (Some(previous), Some(until)) = (
        &endpoint.previous_secret,
        endpoint.previous_secret_expires_at,
    ) {
        if until > Utc::now() {
            secrets.push(previous);
        }
    }
    let signature = match signature(&secrets, &message_id, timestamp, &body) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let sent = app
        .webhooks
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Err(e) => failed(excerpt(&describe(&e))),
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            let error = if response.status().is_success() {
                None
            } else {
                // A short excerpt of the answer, read only that far.
                let mut response = response;
                let first = response.chunk().await.ok().flatten().unwrap_or_default();
                Some(excerpt(&String::from_utf8_lossy(&first)))
            };
            Outcome {
                status: Some(status),
                retry_after,
                error,
            }
        }
    }
}

/// A transport error's chain, for the log (it never contains the secret or the body).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What is kept of a receiver's answer or an error: never a card number, which a
/// receiver may well echo ("unknown card 4111…"); such text is not kept at all.
fn excerpt(text: &str) -> String {
    let kept: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(EXCERPT_CHARS)
        .collect();
    if coalition_domain::bank::contains_pan(text) || coalition_domain::bank::contains_pan(&kept) {
        return "(withheld: the text held what looks like a payment card number)".into();
    }
    kept
}

/// Records an attempt's outcome, if the delivery is still under the claim it was sent
/// under: a later claim (the lease ran out) or a redelivery replaced or cleared the
/// token, and what they wrote stands.
async fn record(
    app: &App,
    endpoint: &webhook_endpoint::Model,
    c: &Claimed,
    outcome: Outcome,
) -> AppResult<Option<Answer>> {
    let at = now();
    let answer = classify(outcome.status);
    let next = match answer {
        Answer::Delivered | Answer::Gone => None,
        Answer::Failed => next_attempt(c.attempts, at, outcome.retry_after),
    };
    let status = match (answer, next) {
        (Answer::Delivered, _) => DELIVERED,
        (Answer::Failed, Some(_)) => PENDING,
        _ => FAILED,
    };
    let txn = app.db.begin().await?;
    let mut update = webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::Status, Expr::value(status))
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(next))
        .col_expr(
            webhook_delivery::Column::LastStatusCode,
            Expr::value(outcome.status.map(i32::from)),
        )
        .col_expr(
            webhook_delivery::Column::LastError,
            Expr::value(outcome.error),
        )
        .col_expr(
            webhook_delivery::Column::LeaseToken,
            Expr::value(Option::<Uuid>::None),
        );
    if answer == Answer::Delivered {
        update = update.col_expr(webhook_delivery::Column::DeliveredAt, Expr::value(at));
    }
    let changed = update
        .filter(webhook_delivery::Column::Id.eq(c.id))
        .filter(webhook_delivery::Column::Status.eq(PENDING))
        .filter(webhook_delivery::Column::LeaseToken.eq(c.lease_token))
        .exec(&txn)
        .await?;
    if changed.rows_affected == 0 {
        return Ok(None);
    }
    // 410 disables at once; a message given up disables the endpoint that failed it for
    // a day and more.
    let disable = match (answer, next) {
        (Answer::Gone, _) => Some("the receiver answered 410 Gone".to_owned()),
        (Answer::Failed, None) => Some(format!(
            "message {} failed {} attempts",
            c.message_id, c.attempts
        )),
        _ => None,
    };
    let version = match &disable {
        Some(reason) => {
            set_status(&txn, endpoint.id, false, Some(reason.clone())).await?;
            Some(terms::bump(&txn, endpoint.programme_id).await?)
        }
        None => None,
    };
    txn.commit().await?;
    if let Some(version) = version {
        app.terms.changed(endpoint.programme_id, version);
        tracing::warn!(endpoint_id = %endpoint.id, reason = disable.as_deref().unwrap_or(""), "webhook endpoint disabled");
    }
    let counted = match (answer, next) {
        (Answer::Delivered, _) => crate::metrics::WebhookOutcome::Delivered,
        (Answer::Failed, Some(_)) => crate::metrics::WebhookOutcome::Retried,
        _ => crate::metrics::WebhookOutcome::Failed,
    };
    crate::metrics::webhook_attempted(counted);
    Ok(Some(match (answer, next) {
        (Answer::Failed, None) => Answer::Gone,
        _ => answer,
    }))
}

// ---------------------------------------------------------------------------------------
// The worker inside `serve`.

/// The delivery loop of a server: a round every `interval` until stopped. Rounds are
/// short (claims are small batches), and several replicas may run them at once.
pub struct Deliverer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

pub fn spawn_deliverer(app: App, interval: std::time::Duration) -> Deliverer {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopped.changed() => return,
            }
            tokio::select! {
                done = deliver_due(&app, Utc::now()) => match done {
                    Ok(report) if report != DeliveryReport::default() => {
                        tracing::debug!(?report, "webhook round")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "webhook round failed"),
                },
                _ = stopped.changed() => return,
            }
        }
    });
    Deliverer { stop, task }
}

impl Deliverer {
    /// Stops it; an attempt in flight is abandoned (its lease lets another take it).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

// ---------------------------------------------------------------------------------------
// Events of the purchase path.

/// `purchase.recorded`'s data.
pub(crate) fn purchase_event(
    row: &coalition_store::entities::purchase::Model,
    member_id: Option<Uuid>,
) -> Value {
    json!({
        "purchase_id": row.id,
        "partner_id": row.partner_id,
        "member_id": member_id,
        "external_ref": row.external_ref,
        "store_ref": row.store_ref,
        "staff_ref": row.staff_ref,
        "amount": {"amount": row.amount, "currency": row.currency},
        "discount": {"amount": row.discount, "currency": row.currency},
        "points_earned": row.points_earned,
        "points_redeemed": row.points_redeemed,
        "created_at": row.created_at,
    })
}

/// `refund.recorded`'s data.
pub(crate) fn refund_event(
    row: &coalition_store::entities::refund::Model,
    member_id: Option<Uuid>,
    currency: &str,
) -> Value {
    json!({
        "refund_id": row.id,
        "purchase_id": row.purchase_id,
        "partner_id": row.partner_id,
        "member_id": member_id,
        "amount": {"amount": row.amount, "currency": currency},
        "points_clawed_back": row.points_clawed_back,
        "points_returned": row.points_returned,
        "points_shortfall": row.points_shortfall,
        "created_at": row.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_signs_as_the_spec_says() {
        // From the Standard Webhooks specification's reference libraries.
        let signed = signature(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn urls_must_be_https_to_public_hosts_unless_insecure_is_allowed() {
        let refused = |url: &str, insecure: bool| {
            let mut v = Validator::default();
            check_url(&mut v, url, insecure);
            v.finish().is_err()
        };
        assert!(!refused("https://hooks.example.com/coalition", false));
        for bad in [
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://10.0.0.8/x",
            "https://169.254.169.254/latest",
            "https://localhost:8443/x",
            "https://user:pw@hooks.example.com/x",
            "ftp://hooks.example.com/x",
            "HTTPS://hooks.example.com/x",
            "https://hooks.example.com/a\tb",
            " https://hooks.example.com/x",
            "https://hooks.example.com/\u{85}",
            "not a url",
        ] {
            assert!(refused(bad, false), "{bad} must be refused");
        }
        assert!(!refused("http://127.0.0.1:9000/hook", true));
        assert!(refused("ftp://127.0.0.1/x", true));
    }

    #[test]
    fn the_url_limit_holds_for_the_stored_percent_encoded_url() {
        let refused = |url: &str| {
            let mut v = Validator::default();
            check_url(&mut v, url, false);
            v.finish().is_err()
        };
        let base = "https://hooks.example.com/";
        let fits = format!("{base}{}", "a".repeat(MAX_URL_CHARS - base.len()));
        assert!(!refused(&fits));
        // 1,000 characters as sent, 6,000 and more once each é is %C3%A9.
        let encoded = format!("{base}{}", "é".repeat(1000));
        assert!(encoded.chars().count() <= MAX_URL_CHARS);
        assert!(refused(&encoded), "the stored URL would be over the limit");
    }

    /// A proxy named in the environment is not used: it would resolve the name itself,
    /// past the public-address check. The "proxy" here is a listener that notes whether
    /// anyone connected.
    #[tokio::test]
    async fn deliveries_ignore_a_proxy_named_in_the_environment() {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        for name in [
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "https_proxy",
            "http_proxy",
            "all_proxy",
        ] {
            std::env::set_var(name, &proxy_url);
        }
        let built = Webhooks::new(Settings {
            timeout: std::time::Duration::from_secs(2),
            ..Settings::default()
        });
        for name in [
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "https_proxy",
            "http_proxy",
            "all_proxy",
        ] {
            std::env::remove_var(name);
        }
        let webhooks = built.unwrap();
        let sent = webhooks
            .http
            .post("https://hooks.coalition-test.invalid/x")
            .body("{}")
            .send();
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(3), proxy.accept());
        let (sent, accepted) = tokio::join!(sent, accepted);
        assert!(sent.is_err(), "nothing answers that name");
        assert!(accepted.is_err(), "the proxy was used");
    }

    #[test]
    fn listeners_know_who_hears_what() {
        let gym = Uuid::new_v4();
        let mut l = Listeners::default();
        assert!(!l.wants(rules::PURCHASE_RECORDED, Some(gym)));
        l.by_event
            .entry(rules::PURCHASE_RECORDED.into())
            .or_default()
            .1
            .insert(gym);
        assert!(l.wants(rules::PURCHASE_RECORDED, Some(gym)));
        assert!(!l.wants(rules::PURCHASE_RECORDED, Some(Uuid::new_v4())));
        assert!(!l.wants(rules::REFUND_RECORDED, Some(gym)));
        l.by_event
            .entry(rules::REFUND_RECORDED.into())
            .or_default()
            .0 = true;
        assert!(l.wants(rules::REFUND_RECORDED, Some(Uuid::new_v4())));
    }
}
