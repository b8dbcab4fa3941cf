//! The HTTP face of Coalition: axum routers registered together with their OpenAPI
//! description (utoipa-axum), problem+json errors, and the service endpoints.

pub mod extract;
mod fields;
mod metrics;
pub mod observe;
pub mod openapi;
pub mod pan;
/// The member portal's server-rendered pages (not part of the OpenAPI document).
pub mod portal;
pub mod problem;
pub mod routes;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::Response;
use axum::Router;
use coalition_app::App;
use std::any::Any;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{
    AuthorizationCode, ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes,
    SecurityScheme,
};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Coalition", version = "1.0.0", description = "Coalition loyalty network: partners earn and redeem points on one shared card programme."),
    modifiers(&Security),
    tags(
        (name = "auth", description = "OAuth2: client credentials for partners and operators; authorization code + PKCE, refresh tokens and OpenID Connect for members through partners' apps"),
        (name = "partners"), (name = "clients"), (name = "members"), (name = "me", description = "A member's own data, with a member access token (scope member)"), (name = "cards"),
        (name = "purchases"), (name = "redemptions", description = "POS holds: points reserved at the till, then captured or voided"),
        (name = "tiers", description = "The tier ladder and members' tiers"),
        (name = "campaigns", description = "Targeted rewards with a budget, a funder and a holdout"),
        (name = "settlements", description = "Clearing between partners for a closed period, and the points liability"),
        (name = "webhooks", description = "Outbound webhooks: Standard Webhooks signed event deliveries, with a delivery log"),
        (name = "bank", description = "Co-branded cards and signed card events (bank-scope clients of a bank partner only)"),
        (name = "imports", description = "Historical purchases in"),
        (name = "analytics", description = "Customer-base models: who is slipping away, what each member is worth"),
        (name = "service", description = "Health and documentation")
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let scopes = Scopes::from_iter([
            ("admin", "programme operator"),
            ("partner", "a merchant's own operations"),
            ("bank", "co-brand issuer operations"),
        ]);
        let member_scopes = Scopes::from_iter([
            ("openid", "an ID token naming the member"),
            ("member", "the member's own data (/v1/me)"),
        ]);
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::new([
                Flow::ClientCredentials(ClientCredentials::new("/oauth/token", scopes)),
                Flow::AuthorizationCode(AuthorizationCode::new(
                    "/oauth/authorize",
                    "/oauth/token",
                    member_scopes,
                )),
            ])),
        );
    }
}

fn api_router() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::oauth::router())
        .merge(routes::oidc::router())
        .merge(routes::partners::router())
        .merge(routes::clients::router())
        .merge(routes::members::router())
        .merge(routes::me::router())
        .merge(routes::cards::router())
        .merge(routes::purchases::router())
        .merge(routes::redemptions::router())
        .merge(routes::rules::router())
        .merge(routes::tiers::router())
        .merge(routes::campaigns::router())
        .merge(routes::settlements::router())
        .merge(routes::webhooks::router())
        .merge(routes::bank::router())
        .merge(routes::imports::router())
        .merge(routes::analytics::router())
        .merge(routes::sales::router())
        .merge(routes::classification::router())
        .merge(routes::service::router())
}

/// The routes and the OpenAPI document that describes them, completed with the answers
/// every route shares (openapi.rs).
fn routes_and_document() -> (Router<App>, utoipa::openapi::OpenApi) {
    let (routes, mut api) = api_router().split_for_parts();
    openapi::Complete.modify(&mut api);
    // Bodies whose fields are all optional may be left out (`extract::OptionalJsonBody`).
    for (path, item) in api.paths.paths.iter_mut() {
        if path == "/v1/webhooks/{id}/rotate-secret" {
            if let Some(body) = item.post.as_mut().and_then(|op| op.request_body.as_mut()) {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
    (routes, api)
}

/// The OpenAPI document, exactly as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_document().1
}

pub fn router(app: App) -> Router {
    let (routes, api) = routes_and_document();
    routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .merge(portal::router())
        .fallback(routes::service::not_found)
        .method_not_allowed_fallback(routes::service::method_not_allowed)
        .layer(middleware::from_fn(pan::guard))
        .layer(middleware::from_fn(observe::remember_route))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(catch_panic())
        .layer(middleware::from_fn(observe::observe))
        .with_state(app)
}

/// Outermost: a panic anywhere in a request's handling answers a problem+json 500 and
/// the connection lives on (without it hyper drops the connection).
fn catch_panic() -> CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> Response> {
    CatchPanicLayer::custom(problem::panic_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_problem_500_that_does_not_quote_the_panic() {
        async fn boom() -> &'static str {
            panic!("parsing `{}` went wrong", "cs_hunter2")
        }
        let router = Router::new()
            .route("/boom", axum::routing::get(boom))
            .layer(catch_panic());
        let request = Request::get("/boom").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "internal_error");
        assert_eq!(problem["status"], 500);
        assert!(!String::from_utf8_lossy(&body).contains("cs_hunter2"));
    }
}
