//! Partners of the programme (admin).

use super::*;
use crate::extract::{list_params, path_id, Auth, JsonBody, ListParams, PathText};
use crate::problem::Problem;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::partners;
use coalition_app::App;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

fn partner_response(p: partners::Partner) -> PartnerResponse {
    PartnerResponse {
        id: p.id,
        name: p.name,
        kind: p.kind.as_str().into(),
        category: p.category,
        earn_points_per_unit: p.earn_points_per_unit.to_string(),
        issue_price_per_point: p.issue_price_per_point.to_string(),
        redemption_value_per_point: p.redemption_value_per_point.to_string(),
        merchant_ids: p.merchant_ids,
        created_at: p.created_at,
    }
}

/// Add a partner (admin).
#[utoipa::path(post, path = "/v1/partners", tag = "partners", security(("bearer" = [])), request_body = NewPartnerRequest,
    responses((status = 201, body = PartnerResponse), (status = 422, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn create_partner(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewPartnerRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let input = partners::NewPartner {
        name: b.name,
        kind: b.kind,
        category: b.category,
        earn_points_per_unit: b.earn_points_per_unit,
        issue_price_per_point: b.issue_price_per_point,
        redemption_value_per_point: b.redemption_value_per_point,
    };
    let partner = partners::create(&app, &caller, input).await?;
    Ok(created(
        format!("/v1/partners/{}", partner.id),
        partner_response(partner),
    ))
}

/// List the programme's partners (admin).
#[utoipa::path(get, path = "/v1/partners", tag = "partners", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = PartnerList), (status = 422, body = Problem)))]
pub async fn list_partners(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<PartnerList>> {
    let page = partners::list(&app, &caller, list_params(query.as_deref())?).await?;
    Ok(Json(PartnerList {
        data: page.data.into_iter().map(partner_response).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One partner (admin; a partner may read itself).
#[utoipa::path(get, path = "/v1/partners/{id}", tag = "partners", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = PartnerResponse), (status = 404, body = Problem)))]
pub async fn get_partner(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<PartnerResponse>> {
    let partner = partners::get(&app, &caller, path_id(&id, "partner")?).await?;
    Ok(Json(partner_response(partner)))
}

/// Change a partner's name, category, rates or prices (admin). Absent fields stay as
/// they are; `kind` cannot change. Every server process prices purchases with the new
/// terms within one second.
#[utoipa::path(patch, path = "/v1/partners/{id}", tag = "partners", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = PartnerChangeRequest,
    responses((status = 200, body = PartnerResponse), (status = 404, body = Problem), (status = 422, body = Problem),
        (status = 409, body = Problem, description = "merchant_id_taken: another partner of the programme has one of the merchant ids"),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn update_partner(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<PartnerChangeRequest>,
) -> ApiResult<Json<PartnerResponse>> {
    let id = path_id(&id, "partner")?;
    let b = body.value;
    let change = partners::PartnerChange {
        name: b.name,
        category: b.category,
        earn_points_per_unit: b.earn_points_per_unit,
        issue_price_per_point: b.issue_price_per_point,
        redemption_value_per_point: b.redemption_value_per_point,
        merchant_ids: b.merchant_ids,
    };
    let partner = partners::update(&app, &caller, id, change).await?;
    Ok(Json(partner_response(partner)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerChangeRequest {
    #[schema(schema_with = crate::fields::optional_name)]
    pub name: Option<String>,
    #[schema(schema_with = crate::fields::optional_category)]
    pub category: Option<String>,
    /// Points per unit of currency, decimal string.
    #[schema(schema_with = crate::fields::optional_rate)]
    pub earn_points_per_unit: Option<String>,
    #[schema(schema_with = crate::fields::optional_rate)]
    pub issue_price_per_point: Option<String>,
    #[schema(schema_with = crate::fields::optional_rate)]
    pub redemption_value_per_point: Option<String>,
    /// The card-network merchant ids the bank sees for this partner (replaces the list).
    #[schema(schema_with = crate::fields::merchant_ids)]
    pub merchant_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPartnerRequest {
    #[schema(schema_with = crate::fields::name)]
    pub name: String,
    /// `merchant` or `bank`.
    #[schema(schema_with = crate::fields::partner_kind)]
    pub kind: String,
    #[schema(schema_with = crate::fields::category)]
    pub category: String,
    /// Points per unit of currency, decimal string.
    #[schema(schema_with = crate::fields::rate)]
    pub earn_points_per_unit: String,
    /// What the partner pays the programme per point it issues, decimal string.
    #[schema(schema_with = crate::fields::rate)]
    pub issue_price_per_point: String,
    /// What the programme pays the partner per point it honours, decimal string.
    #[schema(schema_with = crate::fields::rate)]
    pub redemption_value_per_point: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerResponse {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub category: String,
    pub earn_points_per_unit: String,
    pub issue_price_per_point: String,
    pub redemption_value_per_point: String,
    /// The card-network merchant ids (MIDs) of this partner: a co-branded card's
    /// purchase there earns at this partner.
    pub merchant_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerList {
    pub data: Vec<PartnerResponse>,
    pub next_cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_partner, list_partners))
        .routes(routes!(get_partner, update_partner))
}
