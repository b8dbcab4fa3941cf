//! API clients (admin): credentials for operators and partners' tills.

use super::*;
use crate::extract::{Auth, JsonBody};
use crate::problem::Problem;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use coalition_app::clients;
use coalition_app::App;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Create an API client (admin). The secret is shown once.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", security(("bearer" = [])), request_body = NewClientRequest,
    responses((status = 201, body = ClientResponse), (status = 404, body = Problem, description = "unknown partner"), (status = 422, body = Problem)))]
pub async fn create_client(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewClientRequest>,
) -> ApiResult<Response> {
    let input = clients::NewClient {
        name: body.value.name,
        partner_id: body.value.partner_id,
    };
    let c = clients::create(&app, &caller, input).await?;
    let body = ClientResponse {
        id: c.id,
        client_id: c.client_id,
        client_secret: c.client_secret,
        name: c.name,
        partner_id: c.partner_id,
        scope: c.scope.as_str().into(),
    };
    // No Location: a client cannot be read back (its secret is shown once, here), so
    // there is no URL to point to.
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientRequest {
    #[schema(schema_with = crate::fields::name)]
    pub name: String,
    /// The partner this client acts for; omit for an operator client.
    pub partner_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientResponse {
    pub id: Uuid,
    pub client_id: String,
    /// Shown once; only a hash is stored.
    pub client_secret: String,
    pub name: String,
    pub partner_id: Option<Uuid>,
    pub scope: String,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(create_client))
}
