//! The signed-in pages, and the message pages (refusals, errors) every portal answer
//! may need. Each page reads through `coalition_app::me` for the session's member only:
//! ids in paths (a card) are looked up within her things, so another member's are 404.

use super::{
    append_cookie, csrf_ok, html, language, parse_form, secure_attribute, texts::texts, Chrome,
};
use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use coalition_app::me::{self, MemberPrincipal};
use coalition_app::member_sessions::{self, MemberSession};
use coalition_app::pagination::PageRequest;
use coalition_app::{App, AppError};
use coalition_store::entities::{partner, programme};
use coalition_store::sea_orm::EntityTrait;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

#[derive(Template)]
#[template(path = "portal/message.html")]
struct MessagePage<'a> {
    c: Chrome,
    heading: &'a str,
    text: &'a str,
    link: Option<&'a str>,
}

/// A page that says one thing (a refusal, an outcome).
pub(crate) fn message_page(
    headers: &HeaderMap,
    status: StatusCode,
    heading: &str,
    text: &str,
    link: Option<&str>,
) -> Response {
    let t = texts(language(headers));
    let page = MessagePage {
        c: Chrome::new(
            t,
            heading,
            "Coalition".into(),
            None,
            String::new(),
            false,
            "",
            "/portal",
        ),
        heading,
        text,
        link,
    };
    html(status, page.render())
}

/// The page for a failed use case: 404 for what is not hers, 400 for a malformed
/// request (a cursor not handed out), 409 for a refusal whose message is safe to show
/// (a replaced card), else a 500 that says nothing of the cause (which is logged).
pub(crate) fn error_page(headers: &HeaderMap, error: AppError) -> Response {
    let t = texts(language(headers));
    let link = Some("/portal");
    match error {
        AppError::NotFound(_) => message_page(
            headers,
            StatusCode::NOT_FOUND,
            t.not_found_title,
            t.not_found_text,
            link,
        ),
        AppError::Validation(_) => message_page(
            headers,
            StatusCode::BAD_REQUEST,
            t.not_found_title,
            t.not_found_text,
            link,
        ),
        AppError::Internal(_) => {
            tracing::error!(error = %error, "a portal page failed");
            message_page(
                headers,
                StatusCode::INTERNAL_SERVER_ERROR,
                t.error_title,
                t.error_text,
                link,
            )
        }
        other => message_page(
            headers,
            StatusCode::CONFLICT,
            t.refused_title,
            &other.to_string(),
            link,
        ),
    }
}

pub async fn not_found(request: Request) -> Response {
    let t = texts(language(request.headers()));
    message_page(
        request.headers(),
        StatusCode::NOT_FOUND,
        t.not_found_title,
        t.not_found_text,
        Some("/portal"),
    )
}

/// The session of a page request, or the answer to give instead (a 303 to the sign-in,
/// coming back to this page afterwards).
pub(crate) async fn signed_in(
    app: &App,
    headers: &HeaderMap,
    here: &str,
) -> Result<MemberSession, Response> {
    match super::session(app, headers).await? {
        Some(session) => Ok(session),
        None => Err(super::to_sign_in(here)),
    }
}

fn principal(session: &MemberSession) -> MemberPrincipal {
    MemberPrincipal {
        programme_id: session.programme_id,
        member_id: session.member_id,
    }
}

fn here(request: &Request) -> String {
    request
        .uri()
        .path_and_query()
        .map_or("/portal".to_owned(), |p| p.as_str().to_owned())
}

/// The page frame for a signed-in member: branded by the partner she came through, else
/// named after the programme.
async fn chrome(
    app: &App,
    headers: &HeaderMap,
    session: &MemberSession,
    title: fn(&'static super::texts::Texts) -> &'static str,
    current: &'static str,
    here: &str,
) -> Result<Chrome, AppError> {
    let t = texts(language(headers));
    let partner_name = match session.partner_id {
        Some(id) => partner::Entity::find_by_id(id)
            .one(&app.db)
            .await?
            .map(|p| p.name),
        None => None,
    };
    let brand = match partner_name {
        Some(name) => name,
        None => programme::Entity::find_by_id(session.programme_id)
            .one(&app.db)
            .await?
            .map_or_else(|| "Coalition".to_owned(), |p| p.name),
    };
    Ok(Chrome::new(
        t,
        title(t),
        brand,
        session.partner_id,
        session.csrf_token.clone(),
        true,
        current,
        here,
    ))
}

/// Runs a page: the session (or a 303 to the sign-in), then `render`; a failed use case
/// becomes its error page.
macro_rules! page {
    ($app:expr, $request:expr, |$session:ident, $headers:ident, $here:ident, $query:ident| $body:expr) => {{
        // Everything needed from the request is taken before the first await: a
        // request's body is not Sync, so no borrow of it may live across one.
        let $headers = $request.headers().clone();
        let $here = here(&$request);
        #[allow(unused_variables)]
        let $query = parse_form($request.uri().query().unwrap_or("").as_bytes());
        drop($request);
        let $session = match signed_in(&$app, &$headers, &$here).await {
            Ok(session) => session,
            Err(response) => return response,
        };
        let outcome: Result<Response, AppError> = async { $body }.await;
        outcome.unwrap_or_else(|e| error_page(&$headers, e))
    }};
}

fn date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

struct NextTier {
    name: String,
    missing: String,
    threshold: String,
}

struct ExpiringRow {
    points: i64,
    date: String,
}

#[derive(Template)]
#[template(path = "portal/home.html")]
struct HomePage {
    c: Chrome,
    member_name: Option<String>,
    points: i64,
    value: String,
    currency: String,
    tier: Option<String>,
    spend: String,
    next_tier: Option<NextTier>,
    expiring: Vec<ExpiringRow>,
}

/// `/portal`: points and their value, tier and the way to the next, points expiring in
/// the next 30 days.
pub async fn home(State(app): State<App>, request: Request) -> Response {
    page!(app, request, |session, headers, here, query| {
        let overview = me::overview(&app, &principal(&session)).await?;
        let c = chrome(&app, &headers, &session, |t| t.home_title, "home", &here).await?;
        let standing = overview.tier;
        let spend = standing.qualifying_spend.round_dp(2);
        let page = HomePage {
            c,
            member_name: overview.profile.name.clone(),
            points: overview.balance.points,
            value: overview.balance.value.clone(),
            currency: overview.balance.currency.clone(),
            tier: standing
                .effective
                .as_ref()
                .map(|(tier, _)| tier.name.clone()),
            spend: spend.to_string(),
            next_tier: standing.next.as_ref().map(|(tier, missing)| NextTier {
                name: tier.name.clone(),
                missing: missing.round_dp(2).to_string(),
                threshold: (spend + missing.round_dp(2)).to_string(),
            }),
            expiring: overview
                .balance
                .expiring_soon
                .iter()
                .map(|lot| ExpiringRow {
                    points: lot.points,
                    date: date(lot.expires_at),
                })
                .collect(),
        };
        Ok(html(StatusCode::OK, page.render()))
    })
}

struct HistoryRow {
    kind: &'static str,
    label: &'static str,
    when: String,
    date: String,
    partner: String,
    points: String,
    breakdown: Vec<(String, i64)>,
    refund_of: Option<String>,
    refund_short: String,
    anchor: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/history.html")]
struct HistoryPage {
    c: Chrome,
    rows: Vec<HistoryRow>,
    has_previous: bool,
    next_href: Option<String>,
}

/// `/portal/history?cursor=…&limit=…`: every movement, newest first, paged; each award
/// with its "why" (the rules and campaigns behind it), each refund linked to its
/// purchase.
pub async fn history(State(app): State<App>, request: Request) -> Response {
    page!(app, request, |session, headers, here, query| {
        let limit = match query.get("limit") {
            None => None,
            Some(text) => Some(
                text.parse::<i64>()
                    .map_err(|_| AppError::Validation(vec![]))?,
            ),
        };
        let cursor = query.get("cursor").cloned();
        let page_request = PageRequest::new(limit, cursor.clone())?;
        let who = principal(&session);
        let lines = me::history(&app, &who, page_request).await?;
        let names = me::partner_names(&app, &who).await?;
        let t = texts(language(&headers));
        let mut anchored = HashSet::new();
        let rows = lines
            .data
            .iter()
            .map(|item| {
                let purchase = item.purchase_id.map(|p| p.to_string());
                let is_refund = item.refund_id.is_some();
                let anchor = match (&purchase, is_refund) {
                    (Some(p), false) if anchored.insert(p.clone()) => Some(format!("purchase-{p}")),
                    _ => None,
                };
                let refund_of = if is_refund { purchase.clone() } else { None };
                HistoryRow {
                    kind: item.kind,
                    label: t.movement(item.kind),
                    when: item.created_at.to_rfc3339(),
                    date: date(item.created_at),
                    partner: item
                        .partner_id
                        .and_then(|p| names.get(&p).cloned())
                        .unwrap_or_default(),
                    points: if item.points > 0 {
                        format!("+{}", item.points)
                    } else {
                        item.points.to_string()
                    },
                    breakdown: item
                        .breakdown
                        .iter()
                        .map(|l| (l.description.clone(), l.points))
                        .collect(),
                    refund_short: refund_of
                        .as_deref()
                        .map(|p| p[..8].to_owned())
                        .unwrap_or_default(),
                    refund_of,
                    anchor,
                }
            })
            .collect();
        let limit_part = limit.map(|l| format!("&limit={l}")).unwrap_or_default();
        let page = HistoryPage {
            c: chrome(
                &app,
                &headers,
                &session,
                |t| t.history_title,
                "history",
                &here,
            )
            .await?,
            rows,
            has_previous: cursor.is_some_and(|c| !c.is_empty()),
            next_href: lines.next_cursor.map(|next| {
                format!(
                    "/portal/history?cursor={}{limit_part}",
                    super::url_encode(&next)
                )
            }),
        };
        Ok(html(StatusCode::OK, page.render()))
    })
}

struct PartnerRow {
    id: Uuid,
    name: String,
    category: String,
    earn: String,
    spend: String,
}

#[derive(Template)]
#[template(path = "portal/partners.html")]
struct PartnersPage {
    c: Chrome,
    partners: Vec<PartnerRow>,
    currency: String,
}

/// `/portal/partners`: where to earn and where to spend, with the rates.
pub async fn partners(State(app): State<App>, request: Request) -> Response {
    page!(app, request, |session, headers, here, query| {
        let who = principal(&session);
        let list = me::partners(&app, &who).await?;
        let currency = coalition_app::programmes::load(&app, session.programme_id)
            .await?
            .currency
            .to_string();
        let page = PartnersPage {
            c: chrome(
                &app,
                &headers,
                &session,
                |t| t.partners_title,
                "partners",
                &here,
            )
            .await?,
            partners: list
                .into_iter()
                .map(|p| PartnerRow {
                    id: p.id,
                    name: p.name,
                    category: p.category,
                    earn: p.earn_points_per_unit.normalize().to_string(),
                    spend: p.redemption_value_per_point.normalize().to_string(),
                })
                .collect(),
            currency,
        };
        Ok(html(StatusCode::OK, page.render()))
    })
}

struct OfferRow {
    id: Uuid,
    name: String,
    reward: String,
    where_: String,
    until: String,
}

#[derive(Template)]
#[template(path = "portal/offers.html")]
struct OffersPage {
    c: Chrome,
    offers: Vec<OfferRow>,
}

/// `/portal/offers`: campaigns she is in the treatment group of (a control group is
/// never read, so never shown).
pub async fn offers(State(app): State<App>, request: Request) -> Response {
    page!(app, request, |session, headers, here, query| {
        let who = principal(&session);
        let list = me::offers(&app, &who).await?;
        let names = me::partner_names(&app, &who).await?;
        let t = texts(language(&headers));
        let offers = list
            .into_iter()
            .map(|o| {
                let reward = match o.reward_kind.as_str() {
                    "multiplier" => {
                        format!("×{} {}", o.reward_value.normalize(), t.offer_multiplier)
                    }
                    _ => format!("+{} {}", o.reward_value.normalize(), t.offer_bonus),
                };
                let where_ = match &o.partner_ids {
                    None => t.everywhere.to_owned(),
                    Some(ids) => {
                        let list: Vec<String> =
                            ids.iter().filter_map(|id| names.get(id).cloned()).collect();
                        format!("{} {}", t.at_partners, list.join(", "))
                    }
                };
                OfferRow {
                    id: o.campaign_id,
                    name: o.name,
                    reward,
                    where_,
                    until: date(o.ends_at),
                }
            })
            .collect();
        let page = OffersPage {
            c: chrome(
                &app,
                &headers,
                &session,
                |t| t.offers_title,
                "offers",
                &here,
            )
            .await?,
            offers,
        };
        Ok(html(StatusCode::OK, page.render()))
    })
}

struct CardRow {
    id: Uuid,
    kind: &'static str,
    last4: String,
    status: String,
    status_label: &'static str,
    issuer: Option<String>,
    can_block: bool,
}

#[derive(Template)]
#[template(path = "portal/cards.html")]
struct CardsPage {
    c: Chrome,
    cards: Vec<CardRow>,
    blocked: bool,
}

fn card_rows(
    t: &'static super::texts::Texts,
    cards: Vec<me::MemberCard>,
    names: &HashMap<Uuid, String>,
) -> Vec<CardRow> {
    cards
        .into_iter()
        .map(|card| CardRow {
            id: card.id,
            kind: if card.kind == me::CO_BRANDED {
                t.co_branded
            } else {
                t.loyalty_card
            },
            last4: card.last4,
            status_label: t.card_status(&card.status),
            can_block: card.status == "active",
            status: card.status,
            issuer: card.issuer_partner_id.and_then(|p| names.get(&p).cloned()),
        })
        .collect()
}

/// `/portal/cards`: her cards (every one by its last 4 digits only), a block link for
/// each active one.
pub async fn cards(State(app): State<App>, request: Request) -> Response {
    page!(app, request, |session, headers, here, query| {
        let who = principal(&session);
        let list = me::cards(&app, &who).await?;
        let names = me::partner_names(&app, &who).await?;
        let t = texts(language(&headers));
        let page = CardsPage {
            c: chrome(&app, &headers, &session, |t| t.cards_title, "cards", &here).await?,
            cards: card_rows(t, list, &names),
            blocked: query.get("blocked").is_some(),
        };
        Ok(html(StatusCode::OK, page.render()))
    })
}

#[derive(Template)]
#[template(path = "portal/block.html")]
struct BlockPage {
    c: Chrome,
    card_id: Uuid,
    kind: &'static str,
    last4: String,
}

fn card_id(text: &str) -> Result<Uuid, AppError> {
    text.parse().map_err(|_| AppError::NotFound("card"))
}

/// `GET /portal/cards/{id}/block`: the confirmation step.
pub async fn block_confirm(
    State(app): State<App>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    page!(app, request, |session, headers, here, query| {
        let id = card_id(&id)?;
        let who = principal(&session);
        let t = texts(language(&headers));
        let card = me::cards(&app, &who)
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or(AppError::NotFound("card"))?;
        let page = BlockPage {
            c: chrome(
                &app,
                &headers,
                &session,
                |t| t.block_confirm_title,
                "cards",
                &here,
            )
            .await?,
            card_id: card.id,
            kind: if card.kind == me::CO_BRANDED {
                t.co_branded
            } else {
                t.loyalty_card
            },
            last4: card.last4,
        };
        Ok(html(StatusCode::OK, page.render()))
    })
}

/// Reads a form body and checks its CSRF token against the session's; `Err` is the
/// answer to give (403).
async fn checked_form(
    request: Request,
    headers: &HeaderMap,
    session: &MemberSession,
) -> Result<HashMap<String, String>, Response> {
    let body = axum::body::to_bytes(request.into_body(), crate::extract::MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let fields = parse_form(&body);
    if !csrf_ok(
        headers,
        Some(&session.csrf_token),
        fields.get("csrf").map(String::as_str),
    ) {
        let t = texts(language(headers));
        return Err(message_page(
            headers,
            StatusCode::FORBIDDEN,
            t.csrf_title,
            t.csrf_text,
            None,
        ));
    }
    Ok(fields)
}

/// `POST /portal/cards/{id}/block` (`csrf`): blocks the card, back to the cards.
pub async fn block(State(app): State<App>, Path(id): Path<String>, request: Request) -> Response {
    let headers = request.headers().clone();
    let session = match signed_in(&app, &headers, "/portal/cards").await {
        Ok(session) => session,
        Err(response) => return response,
    };
    if let Err(response) = checked_form(request, &headers, &session).await {
        return response;
    }
    let outcome = async {
        let id = card_id(&id)?;
        me::block_card(&app, &principal(&session), id).await
    }
    .await;
    match outcome {
        Ok(_) => Redirect::to("/portal/cards?blocked=1").into_response(),
        Err(e) => error_page(&headers, e),
    }
}

#[derive(Template)]
#[template(path = "portal/profile.html")]
struct ProfilePage {
    c: Chrome,
    name: String,
    email: String,
    phone: String,
    since: String,
    marketing: bool,
    saved: bool,
}

/// `/portal/profile`: contact data, marketing consent, sign out, erase.
pub async fn profile(State(app): State<App>, request: Request) -> Response {
    page!(app, request, |session, headers, here, query| {
        let profile = me::profile(&app, &principal(&session)).await?;
        let page = ProfilePage {
            c: chrome(
                &app,
                &headers,
                &session,
                |t| t.profile_title,
                "profile",
                &here,
            )
            .await?,
            name: profile.name.unwrap_or_default(),
            email: profile.email.unwrap_or_default(),
            phone: profile.phone.unwrap_or_default(),
            since: date(profile.member_since),
            marketing: profile.consent_marketing,
            saved: query.get("saved").is_some(),
        };
        Ok(html(StatusCode::OK, page.render()))
    })
}

/// `POST /portal/profile/marketing` (`csrf`, `marketing` = `on` | `off`).
pub async fn marketing(State(app): State<App>, request: Request) -> Response {
    let headers = request.headers().clone();
    let session = match signed_in(&app, &headers, "/portal/profile").await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let fields = match checked_form(request, &headers, &session).await {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let consent = match fields.get("marketing").map(String::as_str) {
        Some("on") => true,
        Some("off") => false,
        _ => return error_page(&headers, AppError::Validation(vec![])),
    };
    match me::set_marketing_consent(&app, &principal(&session), consent).await {
        Ok(_) => Redirect::to("/portal/profile?saved=1").into_response(),
        Err(e) => error_page(&headers, e),
    }
}

#[derive(Template)]
#[template(path = "portal/erase.html")]
struct ErasePage {
    c: Chrome,
}

/// `GET /portal/profile/erase`: the confirmation step.
pub async fn erase_confirm(State(app): State<App>, request: Request) -> Response {
    page!(app, request, |session, headers, here, query| {
        let page = ErasePage {
            c: chrome(
                &app,
                &headers,
                &session,
                |t| t.erase_confirm_title,
                "profile",
                &here,
            )
            .await?,
        };
        Ok(html(StatusCode::OK, page.render()))
    })
}

/// `POST /portal/profile/erase` (`csrf`, `confirm=yes`): the same erasure as the
/// operator's, which ends every session of hers; the cookie is cleared.
pub async fn erase(State(app): State<App>, request: Request) -> Response {
    let headers = request.headers().clone();
    let session = match signed_in(&app, &headers, "/portal/profile").await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let fields = match checked_form(request, &headers, &session).await {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    if fields.get("confirm").map(String::as_str) != Some("yes") {
        return Redirect::to("/portal/profile/erase").into_response();
    }
    let who = principal(&session);
    if let Err(e) = me::erase(&app, &who).await {
        return error_page(&headers, e);
    }
    let t = texts(language(&headers));
    let mut response = message_page(
        &headers,
        StatusCode::OK,
        t.erased_title,
        t.erased_text,
        None,
    );
    let value = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        member_sessions::COOKIE,
        secure_attribute(&app, &headers)
    );
    append_cookie(&mut response, &value);
    response
}
