//! Every operation of the served OpenAPI document, called by callers who may not see
//! programme A's resources, with A's real ids, numbers and references in the path and the
//! body. Walking the document (not a list kept here) means a new route is covered the
//! day it is added.
//!
//! The rule for a request that names A's resources is strict by default: the answer is
//! 404 `not_found`, or the 403 `insufficient_scope` the caller's scope gets anyway — the
//! same answer as for made-up ids, so not even existence shows — and the body carries
//! none of A's secrets. `VISIBLE` lists the exceptions today's rules make; an operation
//! it does not name (a new one included) gets the strict rule. Requests that name none
//! of A's resources (lists, creates) may succeed, but their answers carry no secret of A.
//! At the end A's own operator and partner make the same requests and must not get 404,
//! so the ids substituted are real and the strict answers above mean something; and an
//! exception in `VISIBLE` must really be visible, so the table stays today's rules.
//!
//! A new route whose path names a collection, or whose body names a resource, that the
//! matrix has no value of A for makes the test panic with what to add.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// Who calls, relative to programme A's member Ann and her cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// Programme B's operator.
    BAdmin,
    /// A partner of programme B.
    BPartner,
    /// A partner of programme A with no relation to Ann (a fresh one for each operation).
    Stranger,
    /// A partner of programme A that sold to Ann (so it may see her) but did not record
    /// A Gym's purchase (a fresh one for each operation).
    Neighbour,
}

/// What of A an answer may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    /// Ann's member id.
    MemberId,
    /// Ann's name and email.
    MemberContact,
    /// Ann's full card numbers.
    Card,
    /// A Gym's partner id, purchase, refund and receipt reference.
    OthersSales,
    /// A's earning rule: its id and name.
    Rules,
    /// A's campaign: its id and name.
    Campaigns,
    /// A's tier ladder: A's own partners may see it (a member's profile names the next
    /// tier up), another programme may not.
    Ladder,
    /// A's operator's webhook endpoint and its delivery log.
    Webhooks,
}

use Caller::*;
use Secret::*;

/// Today's exceptions to "not found for every foreign caller": operation, caller, what
/// the answer may show of A. Everything not listed is strict.
const VISIBLE: &[(&str, Caller, &[Secret])] = &[
    // Purchases accept any card of the programme (the coalition); the answer names the
    // card's member, whom the seller may then see.
    ("POST /v1/purchases", Stranger, &[Card, MemberId]),
    ("POST /v1/purchases", Neighbour, &[Card, MemberId]),
    // At the till the card is the credential: a quote and the balance inquiry show the
    // card's points, never whose card it is; a bearer card may be registered by anyone
    // shown it (Ann's card is registered already, and the answer says only that).
    ("POST /v1/purchases/quote", Stranger, &[Card]),
    ("POST /v1/purchases/quote", Neighbour, &[Card]),
    // A hold at the till takes any card of the programme, like a purchase; the answer
    // shows the card's last digits and points, never whose card it is. Only the partner
    // that made a hold sees, captures or voids it (strict below).
    ("POST /v1/redemptions", Stranger, &[]),
    ("POST /v1/redemptions", Neighbour, &[]),
    ("GET /v1/cards/{number}/balance", Stranger, &[]),
    ("GET /v1/cards/{number}/balance", Neighbour, &[]),
    ("POST /v1/cards/{number}/register", Stranger, &[Card]),
    ("POST /v1/cards/{number}/register", Neighbour, &[Card]),
    // A partner sees the members it sold to: their profile, balance and its own part of
    // their history — not their cards, which only the issuer and the enrolling partner
    // manage.
    (
        "GET /v1/members/{id}",
        Neighbour,
        &[MemberId, MemberContact],
    ),
    ("GET /v1/members/{id}/balance", Neighbour, &[MemberId]),
    ("GET /v1/members/{id}/transactions", Neighbour, &[MemberId]),
    ("GET /v1/members/{id}/tiers", Neighbour, &[MemberId]),
    // Every partner of the programme reads a settlement: only its own line, payments
    // and liability (none here: these partners came after it), never the others'.
    ("GET /v1/settlements/{id}", Stranger, &[]),
    ("GET /v1/settlements/{id}", Neighbour, &[]),
    ("GET /v1/settlements/{id}/statement.csv", Stranger, &[]),
    ("GET /v1/settlements/{id}/statement.csv", Neighbour, &[]),
    ("GET /v1/settlements/{id}/postings", Stranger, &[]),
    ("GET /v1/settlements/{id}/postings", Neighbour, &[]),
    // Her cards, to a partner that may see her: their last four digits only.
    ("GET /v1/members/{id}/cards", Neighbour, &[]),
    // A partner's own purchases show the card it was shown at its own till.
    ("GET /v1/purchases", Neighbour, &[Card]),
];

fn may_show(operation: &str, caller: Caller) -> Option<&'static [Secret]> {
    VISIBLE
        .iter()
        .find(|(op, c, _)| *op == operation && *c == caller)
        .map(|(_, _, shown)| *shown)
}

/// A's resources as they appear in requests, by what names them.
struct Targets {
    member: String,
    partner: String,
    purchase: String,
    card: String,
    /// A POS hold A Gym made on Ann's card.
    redemption: String,
    rule: String,
    tier: String,
    campaign: String,
    /// A settlement of A's activity.
    settlement: String,
    /// A Gym's API client (its `id`).
    client: String,
    /// A's operator's webhook endpoint, and one of its deliveries.
    webhook: String,
    delivery: String,
    /// A CLV model fitted on A's purchases.
    clv_model: String,
}

impl Targets {
    /// Made-up values of the same kinds, which name nothing anywhere.
    fn decoys() -> Self {
        Targets {
            member: Uuid::new_v4().to_string(),
            partner: Uuid::new_v4().to_string(),
            purchase: Uuid::new_v4().to_string(),
            card: coalition_domain::card_number::from_random_digits(rand::random()),
            redemption: Uuid::new_v4().to_string(),
            rule: Uuid::new_v4().to_string(),
            tier: Uuid::new_v4().to_string(),
            campaign: Uuid::new_v4().to_string(),
            settlement: Uuid::new_v4().to_string(),
            client: Uuid::new_v4().to_string(),
            webhook: Uuid::new_v4().to_string(),
            delivery: Uuid::new_v4().to_string(),
            clv_model: Uuid::new_v4().to_string(),
        }
    }

    /// The value for a path parameter, by the collection it follows (`/v1/members/{id}`).
    fn for_path(&self, path: &str, param: &str) -> String {
        let collection = path
            .split('/')
            .take_while(|s| *s != format!("{{{param}}}"))
            .last()
            .unwrap_or("");
        match collection {
            "members" => self.member.clone(),
            "partners" => self.partner.clone(),
            "purchases" => self.purchase.clone(),
            "cards" => self.card.clone(),
            "redemptions" => self.redemption.clone(),
            "rules" => self.rule.clone(),
            // A rule's versions are numbered from 1: the rule in the path decides.
            "versions" => "1".to_owned(),
            "tiers" => self.tier.clone(),
            "campaigns" => self.campaign.clone(),
            "settlements" => self.settlement.clone(),
            "clients" => self.client.clone(),
            "webhooks" => self.webhook.clone(),
            "deliveries" => self.delivery.clone(),
            // The bank's routes answer 403 to every caller here (none is a bank client)
            // whatever the id; the bank tests cover their tenancy.
            "signing-secrets" => self.client.clone(),
            "clv-models" => self.clv_model.clone(),
            _ => panic!(
                "{path}: no value of A for {{{param}}} after /{collection}/: add one to the matrix"
            ),
        }
    }

    /// The value for a body property that names a resource, if it names one.
    fn for_property(&self, name: &str) -> Option<String> {
        match name {
            "member_id" => Some(self.member.clone()),
            "partner_id" => Some(self.partner.clone()),
            "purchase_id" => Some(self.purchase.clone()),
            "card_number" => Some(self.card.clone()),
            "tier_id" => Some(self.tier.clone()),
            _ => None,
        }
    }
}

/// One operation of the document.
struct Operation {
    method: Method,
    path: String,
    spec: Value,
}

impl Operation {
    fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether the request names a resource: a path parameter, or a body property that
    /// `Targets::for_property` fills.
    fn names_a_resource(&self, doc: &Value) -> bool {
        let decoys = Targets::decoys();
        self.path.contains('{')
            || self
                .body(doc, &decoys)
                .as_object()
                .is_some_and(|body| body.keys().any(|k| decoys.for_property(k).is_some()))
    }

    fn url(&self, targets: &Targets) -> String {
        let mut url = self.path.clone();
        while let Some(start) = url.find('{') {
            let end = url[start..].find('}').expect("closing brace") + start;
            let param = url[start + 1..end].to_owned();
            url.replace_range(start..=end, &targets.for_path(&self.path, &param));
        }
        url
    }

    fn has_header(&self, name: &str) -> bool {
        self.spec["parameters"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["in"] == "header" && p["name"].as_str() == Some(name))
        })
    }

    /// A plausible JSON body (Null when the operation takes none, or not as JSON).
    fn body(&self, doc: &Value, targets: &Targets) -> Value {
        let schema = &self.spec["requestBody"]["content"]["application/json"]["schema"];
        if schema.is_null() {
            return Value::Null;
        }
        plausible(doc, schema, targets, "body")
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => resolve(
            doc,
            doc.pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling {r}")),
        ),
        None => schema,
    }
}

/// A value the schema accepts: A's values for properties that name resources, and for
/// the rest their documented example, or the first allowed value, or something plain.
fn plausible(doc: &Value, schema: &Value, targets: &Targets, name: &str) -> Value {
    let schema = resolve(doc, schema);
    if let Some(value) = targets.for_property(name) {
        return json!(value);
    }
    if let Some(example) = schema["examples"].get(0).or(schema.get("example")) {
        return example.clone();
    }
    if let Some(first) = schema["enum"].get(0) {
        return first.clone();
    }
    let ty = match &schema["type"] {
        Value::Array(types) => types.iter().find(|t| *t != "null").cloned(),
        other => Some(other.clone()),
    };
    match ty.as_ref().and_then(Value::as_str) {
        Some("object") => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut body = serde_json::Map::new();
            for (prop, prop_schema) in schema["properties"].as_object().into_iter().flatten() {
                if required.contains(&prop.as_str()) || targets.for_property(prop).is_some() {
                    body.insert(prop.clone(), plausible(doc, prop_schema, targets, prop));
                }
            }
            Value::Object(body)
        }
        Some("string") => {
            assert_ne!(
                schema["format"], "uuid",
                "{name} is an id the matrix has no value of A for: add it to Targets::for_property"
            );
            // Letters only: a digit run of a random id could look like a card number (PAN),
            // which the API refuses before anything else.
            json!(format!("matrix-{}", random_letters()))
        }
        Some("integer") => json!(schema["minimum"].as_i64().unwrap_or(0)),
        Some("boolean") => json!(false),
        // An empty list is a valid value of every list field (redirect_uris).
        Some("array") => json!([]),
        other => panic!("{name}: no plausible value for type {other:?}"),
    }
}

/// The operations of the document, in its order.
fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "patch", "delete"] {
            if let Some(spec) = item.get(method) {
                ops.push(Operation {
                    method: method.to_uppercase().parse().unwrap(),
                    path: path.clone(),
                    spec: spec.clone(),
                });
            }
        }
    }
    ops
}

struct Answer {
    status: u16,
    code: String,
    text: String,
}

async fn call(t: &TestApp, doc: &Value, op: &Operation, token: &str, targets: &Targets) -> Answer {
    let body = op.body(doc, targets);
    let key = Uuid::new_v4().to_string();
    let r = t
        .call(
            op.method.clone(),
            &op.url(targets),
            Some(token),
            (!body.is_null()).then_some(body),
            op.has_header("Idempotency-Key").then_some(key.as_str()),
        )
        .await;
    Answer {
        status: r.status.as_u16(),
        code: r.code().to_owned(),
        text: r.body.to_string(),
    }
}

/// Programme A's resources and what of them is secret, by kind.
struct WorldA {
    admin: String,
    gym: Partner,
    targets: Targets,
    /// Ann's second card: neighbours buy with it, so the targeted one may be blocked.
    other_card: String,
    secrets: Vec<(Secret, String)>,
}

async fn world_a(t: &TestApp, programme: &Programme) -> WorldA {
    let began = chrono::Utc::now();
    let gym = t.partner(programme, "A Gym", "1").await;
    let tag = random_letters();
    let (name, email) = (format!("Annabel {tag}"), format!("ann.{tag}@example.org"));
    let ann = t
        .post(
            "/v1/members",
            &gym.token,
            json!({"name": name, "email": email}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut cards = Vec::new();
    for _ in 0..2 {
        let card = t
            .post("/v1/cards", &gym.token, json!({"member_id": ann}))
            .await
            .expect(201);
        cards.push(card["number"].as_str().unwrap().to_owned());
    }
    let receipt = format!("receipt-{tag}");
    let purchase = t
        .post_moving(
            "/v1/purchases",
            &gym.token,
            json!({"card_number": cards[0], "amount": {"amount": "40.00", "currency": "EUR"}, "external_ref": receipt}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refund = t
        .post_moving(
            &format!("/v1/purchases/{purchase}/refunds"),
            &gym.token,
            json!({"amount": {"amount": "5.00", "currency": "EUR"}}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let redemption = t
        .post_moving(
            "/v1/redemptions",
            &gym.token,
            json!({"card_number": cards[0], "points": 1}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A rule of A that none of the other callers' purchases match (it names A Gym), so
    // no answer they get may name it.
    let rule_name = format!("Gym rule {tag}");
    let rule = t
        .post(
            "/v1/rules",
            &programme.admin,
            json!({"name": rule_name, "effect": {"kind": "bonus_points", "value": "5"},
                   "conditions": {"partner_ids": [gym.id]}}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tier = t
        .post(
            "/v1/tiers",
            &programme.admin,
            json!({"name": format!("A Gold {tag}"), "rank": 5000, "qualifying_spend": {"amount": "100.00", "currency": "EUR"},
                "discount_percent": "15", "earn_multiplier": "1.5"}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A campaign of A for Ann, rewarding only at A Gym: no other caller's purchase shows it.
    let campaign_name = format!("Gym campaign {tag}");
    let campaign = t
        .post(
            "/v1/campaigns",
            &programme.admin,
            json!({"name": campaign_name, "segment": {"kind": "members", "member_ids": [ann]},
                   "reward": {"kind": "bonus", "value": "5", "partner_ids": [gym.id]},
                   "funder": {"kind": "operator"}, "budget_points": 1000,
                   "ends_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339()}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A's operator's webhook, subscribed before the settlement so that its event is
    // handed over to it (delivery is off in tests: nothing is sent).
    let webhook = t
        .post(
            "/v1/webhooks",
            &programme.admin,
            json!({"url": format!("https://hooks.example.com/{tag}"), "events": ["settlement.completed"]}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let settlement = t
        .post(
            "/v1/settlements",
            &programme.admin,
            json!({"period_start": began.to_rfc3339(), "period_end": chrono::Utc::now().to_rfc3339()}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    coalition_app::webhooks::fan_out(&t.app).await.unwrap();
    let delivery = t
        .get(
            &format!("/v1/webhooks/{webhook}/deliveries"),
            &programme.admin,
        )
        .await
        .expect(200)["data"][0]["id"]
        .as_str()
        .expect("the settlement's delivery")
        .to_owned();
    let clients = t
        .get("/v1/clients?limit=100", &programme.admin)
        .await
        .expect(200);
    let client = clients["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == gym.client_id)
        .expect("A Gym's client is listed")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A model of A's customer base (stored as a fit would: A has too few members to fit).
    let clv_model = Uuid::now_v7();
    {
        use coalition_store::entities::clv_model as m;
        use sea_orm::EntityTrait;
        let row = m::Model {
            id: clv_model,
            programme_id: programme.id,
            partner_id: None,
            calibration_end: chrono::Utc::now().date_naive(),
            currency: "EUR".into(),
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
            bgnbd_log_likelihood: -9582.4,
            p: Some(6.25),
            q: Some(3.74),
            gamma: Some(15.44),
            gamma_gamma_log_likelihood: Some(-100.0),
            members: 1,
            repeat_members: 0,
            fit_millis: 1,
            fitted_at: chrono::Utc::now(),
        };
        m::Entity::insert(m::ActiveModel::from(row))
            .exec_without_returning(&t.app.db)
            .await
            .unwrap();
    }
    let clv_model = clv_model.to_string();
    let secrets = vec![
        (Campaigns, campaign.clone()),
        (Campaigns, campaign_name),
        (OthersSales, client.clone()),
        (Rules, rule.clone()),
        (Rules, rule_name),
        (MemberId, ann.clone()),
        (MemberContact, name),
        (MemberContact, email),
        (Card, cards[0].clone()),
        (Card, cards[1].clone()),
        (OthersSales, gym.id.to_string()),
        (OthersSales, purchase.clone()),
        (OthersSales, refund),
        (OthersSales, receipt),
        (OthersSales, redemption.clone()),
        (Ladder, tier.clone()),
        (Webhooks, webhook.clone()),
        (Webhooks, delivery.clone()),
    ];
    WorldA {
        admin: programme.admin.clone(),
        targets: Targets {
            member: ann,
            partner: gym.id.to_string(),
            purchase,
            card: cards[0].clone(),
            redemption,
            rule,
            tier,
            campaign,
            settlement,
            client,
            webhook,
            delivery,
            clv_model,
        },
        gym,
        other_card: cards[1].clone(),
        secrets,
    }
}

/// Programme B with a little of everything, so its lists are not empty.
async fn world_b(t: &TestApp, programme: &Programme) -> Partner {
    let gym = t.partner(programme, "B Gym", "1").await;
    let (_, card) = t
        .member_with_card(&gym, &format!("bea.{}@example.org", random_letters()))
        .await;
    let purchase = t.purchase(&gym, &card, "30.00", 0).await;
    t.post_moving(
        &format!("/v1/purchases/{}/refunds", purchase["id"].as_str().unwrap()),
        &gym.token,
        json!({"amount": {"amount": "1.00", "currency": "EUR"}}),
    )
    .await
    .expect(201);
    gym
}

/// The token of `caller`, set up afresh where the caller is a partner of A.
async fn token_of(
    t: &TestApp,
    caller: Caller,
    a: &WorldA,
    prog_a: &Programme,
    b_admin: &str,
    b_partner: &str,
) -> String {
    match caller {
        BAdmin => b_admin.to_owned(),
        BPartner => b_partner.to_owned(),
        Stranger => t.partner(prog_a, "A Stranger", "1").await.token,
        Neighbour => {
            let neighbour = t.partner(prog_a, "A Neighbour", "1").await;
            t.purchase(&neighbour, &a.other_card, "1.00", 0).await;
            neighbour.token
        }
    }
}

fn leaked<'a>(text: &str, secrets: &'a [(Secret, String)], shown: &[Secret]) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|(kind, value)| !shown.contains(kind) && text.contains(value.as_str()))
        .map(|(_, value)| value.as_str())
        .collect()
}

#[tokio::test]
async fn no_operation_shows_a_programmes_resources_to_callers_who_may_not_see_them() {
    let t = spawn_app().await;
    let doc = t.served_openapi().await;
    let prog_a = t.programme("A").await;
    let prog_b = t.programme("B").await;
    let a = world_a(&t, &prog_a).await;
    let b_partner = world_b(&t, &prog_b).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 20, "the document lists the operations");

    let mut failures = Vec::new();
    for caller in [BAdmin, BPartner, Stranger, Neighbour] {
        for op in &ops {
            let label = op.label();
            let token = token_of(&t, caller, &a, &prog_a, &prog_b.admin, &b_partner.token).await;
            let answer = call(&t, &doc, op, &token, &a.targets).await;
            let mut shown = may_show(&label, caller).unwrap_or(&[]).to_vec();
            if matches!(caller, Stranger | Neighbour) {
                shown.push(Ladder);
            }
            let leaks = leaked(&answer.text, &a.secrets, &shown);
            if !leaks.is_empty() {
                failures.push(format!(
                    "{label} as {caller:?}: {} shows {leaks:?}: {}",
                    answer.status, answer.text
                ));
            }
            if may_show(&label, caller).is_some() && answer.status == 404 {
                failures.push(format!(
                    "{label} as {caller:?}: VISIBLE says it may see A's resource, but it is not \
                     found: if the rule changed, take it out of VISIBLE: {}",
                    answer.text
                ));
            }
            let strict = op.names_a_resource(&doc) && may_show(&label, caller).is_none();
            if !strict {
                continue;
            }
            let decoy = call(&t, &doc, op, &token, &Targets::decoys()).await;
            let refused = matches!(
                (answer.status, answer.code.as_str()),
                (404, "not_found")
                    | (403, "insufficient_scope")
                    // `/v1/me/...` refuses every client's token before reading an id.
                    | (403, "member_token_required")
            );
            if !refused || (answer.status, &answer.code) != (decoy.status, &decoy.code) {
                failures.push(format!(
                    "{label} as {caller:?}: {} {} for A's ids but {} {} for made-up ones: {}",
                    answer.status, answer.code, decoy.status, decoy.code, answer.text
                ));
            }
        }
    }

    // The same requests from A itself find what they name: the matrix targets real things.
    for op in ops.iter().filter(|op| op.names_a_resource(&doc)) {
        let mut found = false;
        for token in [&a.admin, &a.gym.token] {
            found |= call(&t, &doc, op, token, &a.targets).await.status != 404;
        }
        if !found {
            failures.push(format!("{}: A's own callers get 404 too", op.label()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
