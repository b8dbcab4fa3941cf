//! API clients: credentials for operators and partners' tills. The operator manages
//! every client of its programme; a partner's token sees its partner's clients and may
//! rotate their secrets.

use super::*;
use crate::extract::{list_params, path_id, Auth, JsonBody, ListParams, PathText};
use crate::problem::Problem;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use chrono::{DateTime, Utc};
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
        redirect_uris: body.value.redirect_uris.unwrap_or_default(),
    };
    let c = clients::create(&app, &caller, input).await?;
    let body = ClientResponse {
        id: c.id,
        client_id: c.client_id,
        client_secret: c.client_secret,
        name: c.name,
        partner_id: c.partner_id,
        scope: c.scope.as_str().into(),
        redirect_uris: c.redirect_uris,
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
    /// A partner's app that signs members in (OAuth 2.0 authorization code + PKCE):
    /// where `/oauth/authorize` may send the member back, compared exactly. Absolute
    /// https URLs (plain http only on localhost or a loopback address), no fragment, at
    /// most 10. Partner clients only.
    #[schema(max_items = 10)]
    pub redirect_uris: Option<Vec<String>>,
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
    pub redirect_uris: Vec<String>,
}

/// The programme's API clients (admin: all; a partner: its own partner's). Secrets and
/// their hashes are never shown.
#[utoipa::path(get, path = "/v1/clients", tag = "clients", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = ClientList), (status = 422, body = Problem)))]
pub async fn list_clients(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ClientList>> {
    let page = clients::list(&app, &caller, list_params(query.as_deref())?).await?;
    Ok(Json(ClientList {
        data: page.data.into_iter().map(client_info).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One API client (admin; a partner: its own partner's, else 404).
#[utoipa::path(get, path = "/v1/clients/{id}", tag = "clients", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ClientInfoResponse), (status = 404, body = Problem)))]
pub async fn get_client(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<ClientInfoResponse>> {
    let client = clients::get(&app, &caller, path_id(&id, "client")?).await?;
    Ok(Json(client_info(client)))
}

/// Delete an API client (admin). Its secret gets no token and its tokens stop working
/// on every server process within a second.
#[utoipa::path(delete, path = "/v1/clients/{id}", tag = "clients", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "last_operator_client: the programme's last active operator client")))]
pub async fn delete_client(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<StatusCode> {
    clients::delete(&app, &caller, path_id(&id, "client")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a client's secret (admin; a partner: its own partner's clients). The new
/// secret is shown once. The old one still gets tokens for `overlap_seconds` (default
/// 3600); 0 cuts it at once, together with every token already issued to the client.
/// One overlap runs at a time: rotating with an overlap while the last one runs is a
/// 409 (a second rotation would cut the secret the first promised to keep).
#[utoipa::path(post, path = "/v1/clients/{id}/rotate-secret", tag = "clients", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = RotateSecretRequest,
    responses((status = 200, body = RotatedSecretResponse), (status = 404, body = Problem), (status = 422, body = Problem),
        (status = 409, body = Problem, description = "rotation_in_progress: the previous rotation's overlap is still running")))]
pub async fn rotate_secret(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<RotateSecretRequest>,
) -> ApiResult<Response> {
    let id = path_id(&id, "client")?;
    let (client, secret) =
        clients::rotate_secret(&app, &caller, id, body.value.overlap_seconds).await?;
    let body = RotatedSecretResponse {
        client: client_info(client),
        client_secret: secret,
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Disable a client (admin): it gets no token, and its existing tokens stop working on
/// every server process within a second. Disabling a disabled client changes nothing.
#[utoipa::path(post, path = "/v1/clients/{id}/disable", tag = "clients", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ClientInfoResponse), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "last_operator_client: the programme's last active operator client")))]
pub async fn disable_client(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<ClientInfoResponse>> {
    let client = clients::disable(&app, &caller, path_id(&id, "client")?).await?;
    Ok(Json(client_info(client)))
}

/// Enable a disabled client (admin). Its secret gets tokens again; tokens issued before
/// it was disabled stay dead.
#[utoipa::path(post, path = "/v1/clients/{id}/enable", tag = "clients", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ClientInfoResponse), (status = 404, body = Problem)))]
pub async fn enable_client(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<ClientInfoResponse>> {
    let client = clients::enable(&app, &caller, path_id(&id, "client")?).await?;
    Ok(Json(client_info(client)))
}

fn client_info(c: clients::ClientInfo) -> ClientInfoResponse {
    ClientInfoResponse {
        id: c.id,
        client_id: c.client_id,
        name: c.name,
        partner_id: c.partner_id,
        scope: c.scope,
        status: c.status,
        created_at: c.created_at,
        previous_secret_valid_until: c.previous_secret_valid_until,
        redirect_uris: c.redirect_uris,
    }
}

/// Replace a partner client's redirect URIs (admin): the whole list, as for
/// `POST /v1/clients`; an empty list stops the client from signing members in.
#[utoipa::path(put, path = "/v1/clients/{id}/redirect-uris", tag = "clients", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = RedirectUrisRequest,
    responses((status = 200, body = ClientInfoResponse), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn set_redirect_uris(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<RedirectUrisRequest>,
) -> ApiResult<Json<ClientInfoResponse>> {
    let id = path_id(&id, "client")?;
    let client = clients::set_redirect_uris(&app, &caller, id, body.value.redirect_uris).await?;
    Ok(Json(client_info(client)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectUrisRequest {
    #[schema(max_items = 10)]
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// Seconds the replaced secret still gets tokens, 0–604800 (default 3600).
    #[schema(minimum = 0, maximum = 604800)]
    pub overlap_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientInfoResponse {
    pub id: Uuid,
    pub client_id: String,
    pub name: String,
    pub partner_id: Option<Uuid>,
    /// `admin`, `partner` or `bank`.
    pub scope: String,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// While a rotated-out secret still gets tokens: until when.
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    /// Where the client's app may receive members' authorization codes.
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecretResponse {
    pub client: ClientInfoResponse,
    /// The new secret, shown once; only a hash is stored.
    pub client_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    pub data: Vec<ClientInfoResponse>,
    pub next_cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_client, list_clients))
        .routes(routes!(get_client, delete_client))
        .routes(routes!(rotate_secret))
        .routes(routes!(disable_client))
        .routes(routes!(enable_client))
        .routes(routes!(set_redirect_uris))
}
