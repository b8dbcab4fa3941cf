//! Historical purchases in (`coalition_app::imports`): the operator posts a partner's
//! history as text, in the CDNOW format or as CSV.

use super::*;
use crate::extract::{form_urldecode, Auth};
use crate::problem::{problem_response, validation, Problem};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use coalition_app::imports::{self, Format, MAX_HTTP_IMPORT_BYTES};
use coalition_app::{App, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ImportParams {
    /// The partner the purchases were made at (rows of a CSV may name another partner
    /// of the programme in a `partner_id` column).
    pub partner_id: Uuid,
    /// `csv` (default): a header `customer_ref,date,amount` (+ optional `partner_id`,
    /// `store_ref`, `staff_ref`), dates `YYYY-MM-DD`, no quoted fields; `cdnow`:
    /// whitespace-separated `customer_id date(YYYYMMDD) cds dollars`.
    #[param(schema_with = crate::fields::import_format)]
    pub format: Option<String>,
    /// `true`: the purchases earn points at the standing earning rules in force on
    /// their historical day (the partner's base rate and the rules whose validity window
    /// holds that day; no campaigns, no tier, no rule with a first-purchase condition or
    /// a per-member cap), posted now as journal entries; the points expire counting from
    /// the import. `false` (default): they earn none.
    pub earn: Option<bool>,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResponse {
    /// Purchase rows read (header and blank lines not counted).
    pub rows: u64,
    /// Purchases written by this import.
    pub imported: u64,
    /// Rows imported before (same partner, same row content): skipped.
    pub skipped: u64,
    /// Members created, found by none of their customer references.
    pub members_created: u64,
    /// Points the purchases imported now earned (0 unless `earn=true`).
    pub points_earned: i64,
}

fn query_value(query: Option<&str>, name: &str) -> Option<Option<String>> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_urldecode(k.as_bytes()).as_deref() == Some(name))
                .then(|| form_urldecode(v.as_bytes()))
        })
}

/// Import dated historical purchases (admin). Members are found, or created, by their
/// customer reference (`external_ref`, never an erased member's: an erased customer's
/// rows make a new member); purchases keep their historical day and earn no points unless
/// `earn=true`. Imported purchases cannot be refunded. The whole body is checked first: a bad row answers 422 `invalid_import_row`
/// with its `line`, and nothing is imported. Rows imported before (by any earlier import
/// of the same rows for the same partner) are skipped, so a failed or repeated import
/// can simply be sent again.
#[utoipa::path(post, path = "/v1/imports/purchases", tag = "imports", security(("bearer" = [])), params(ImportParams),
    request_body(content = String, content_type = "text/csv", description = "the rows, in the `format` named"),
    responses((status = 200, body = ImportResponse, description = "imported (counts)"),
        (status = 404, body = Problem, description = "not_found: `partner_id` is not a partner of the programme"),
        (status = 409, body = Problem, description = "concurrent_change: another import created the same members at the same moment; send it again"),
        (status = 413, body = Problem, description = "payload_too_large: the body is over 16 MiB (use `coalition import purchases`)"),
        (status = 415, body = Problem, description = "unsupported_media_type: the body is not sent as text/csv (or text/plain)"),
        (status = 422, body = Problem, description = "invalid_import_row: a row cannot be imported (`line` names it; nothing was imported); validation_failed: `partner_id`, `format` or `earn` missing or invalid; balance_limit_exceeded: with `earn=true`, a member's points would pass the balance limit (that batch is not written)")))]
pub async fn import_purchases(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
    request: Request,
) -> ApiResult<Response> {
    caller.require(&[coalition_app::Scope::Admin])?;
    let partner_id = match query_value(query.as_deref(), "partner_id") {
        Some(Some(text)) => Uuid::parse_str(&text).ok(),
        _ => None,
    }
    .ok_or_else(|| validation(vec![FieldError::new("partner_id", "must be a UUID")]))?;
    let format = match query_value(query.as_deref(), "format") {
        None => Some(Format::Csv),
        Some(text) => text.as_deref().and_then(Format::parse),
    }
    .ok_or_else(|| validation(vec![FieldError::new("format", "must be csv or cdnow")]))?;
    let earn = match query_value(query.as_deref(), "earn") {
        None => Some(false),
        Some(text) => match text.as_deref() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        },
    }
    .ok_or_else(|| validation(vec![FieldError::new("earn", "must be true or false")]))?;
    let is_text = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("text/csv") || m.eq_ignore_ascii_case("text/plain")
        });
    if !is_text {
        return Ok(problem_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the rows as text/csv".into(),
            vec![],
        ));
    }
    let Ok(bytes) = Bytes::from_request(request, &app).await else {
        return Ok(problem_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
            format!("imports over HTTP are limited to {MAX_HTTP_IMPORT_BYTES} bytes; use `coalition import purchases` for larger files"),
            vec![],
        ));
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Err(coalition_app::AppError::ImportRow {
            line: 1 + bytes
                .iter()
                .take(
                    std::str::from_utf8(&bytes)
                        .err()
                        .map_or(0, |e| e.valid_up_to()),
                )
                .filter(|b| **b == b'\n')
                .count() as u64,
            message: "not UTF-8 text".into(),
        }
        .into());
    };
    let report = imports::import_as(&app, &caller, partner_id, format, text, earn).await?;
    Ok(Json(ImportResponse {
        rows: report.rows,
        imported: report.imported,
        skipped: report.skipped,
        members_created: report.members_created,
        points_earned: report.points_earned,
    })
    .into_response())
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(import_purchases))
        .layer(DefaultBodyLimit::max(MAX_HTTP_IMPORT_BYTES))
}
