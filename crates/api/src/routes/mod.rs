//! One module per resource: its request and response types, its handlers and its
//! `router()`, registered together with their OpenAPI description (utoipa-axum).
//! This module holds what the resources share: money and breakdown bodies, and the
//! helpers that shape answers (created, stored for idempotent replay, replayed).

pub mod analytics;
pub mod bank;
pub mod campaigns;
pub mod cards;
pub mod classification;
pub mod clients;
pub mod imports;
pub mod me;
pub mod members;
pub mod oauth;
pub mod oidc;
pub mod partners;
pub mod purchases;
pub mod redemptions;
pub mod rules;
pub mod sales;
pub mod service;
pub mod settlements;
pub mod tiers;
pub mod webhooks;

use crate::problem::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use coalition_app::idempotency::StoredResponse;
use coalition_domain::money::{format_amount, Currency};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub type ApiResult<T> = Result<T, ApiError>;

/// Money travels as `{"amount": "12.50", "currency": "EUR"}` with the amount a string;
/// a JSON number there is refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyDto {
    /// Decimal string, e.g. "12.50". A JSON number is refused.
    #[schema(example = "12.50")]
    pub amount: String,
    #[schema(example = "EUR")]
    pub currency: String,
}

impl MoneyDto {
    pub fn new(amount: String, currency: &str) -> Self {
        Self {
            amount,
            currency: currency.to_owned(),
        }
    }
}

/// One line of "why these points". Lines add up to the points earned: fractions are
/// summed exactly and rounded down once per purchase, and shared out by largest remainder.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakdownLineDto {
    /// `base_rate`, `tier_multiplier`, or the earning rule's name.
    pub rule: String,
    /// The earning rule (absent for the base rate and the tier multiplier).
    pub rule_id: Option<uuid::Uuid>,
    /// The rule's version that gave the points: `GET /v1/rules/{rule_id}/versions/{rule_version}`.
    pub rule_version: Option<i32>,
    /// `base_rate`, `tier_multiplier`, or the rule's effect kind.
    pub kind: String,
    pub description: String,
    pub points: i64,
    /// Who pays for these points (absent on lines recorded before rules existed: the
    /// selling partner).
    pub funder: Option<rules::FunderDto>,
    /// The campaign that gave these points (lines of kind `campaign`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<uuid::Uuid>,
}

pub(crate) fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Renders an answer so it can be stored for idempotent replays.
pub(crate) fn stored<T: Serialize>(
    status: StatusCode,
    body: &T,
    location: Option<String>,
) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        body: serde_json::to_string(body).unwrap_or_default(),
        location,
    }
}

pub(crate) fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        stored.body,
    )
        .into_response();
    if let Some(value) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

pub(crate) fn money(amount: Decimal, currency: &str) -> MoneyDto {
    let shown = Currency::parse(currency)
        .map(|c| format_amount(amount, &c))
        .unwrap_or_else(|_| amount.to_string());
    MoneyDto::new(shown, currency)
}

pub(crate) fn stored_money(text: &str, currency: &str) -> MoneyDto {
    money(text.parse().unwrap_or_default(), currency)
}

pub(crate) fn breakdown(
    lines: &[coalition_domain::earning::BreakdownLine],
) -> Vec<BreakdownLineDto> {
    lines
        .iter()
        .map(|l| BreakdownLineDto {
            rule: l.rule.clone(),
            rule_id: l.rule_id,
            rule_version: l.rule_version,
            kind: if l.kind.is_empty() {
                l.rule.clone()
            } else {
                l.kind.clone()
            },
            description: l.description.clone(),
            points: l.points,
            funder: l.funder.as_ref().map(rules::funder_dto),
            campaign_id: l.campaign_id,
        })
        .collect()
}
