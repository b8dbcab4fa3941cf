//! The HTTP face of Coalition: axum routers registered together with their OpenAPI
//! description (utoipa-axum), problem+json errors, and the service endpoints.

pub mod extract;
mod fields;
mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use coalition_app::App;
use utoipa::openapi::security::{
    ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Coalition", version = "1.0.0", description = "Coalition loyalty network: partners earn and redeem points on one shared card programme."),
    modifiers(&Security),
    tags(
        (name = "auth", description = "OAuth2 client credentials"),
        (name = "partners"), (name = "clients"), (name = "members"), (name = "cards"),
        (name = "purchases"), (name = "service", description = "Health and documentation")
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
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::new([Flow::ClientCredentials(
                ClientCredentials::new("/oauth/token", scopes),
            )])),
        );
    }
}

fn api_router() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::oauth::router())
        .merge(routes::partners::router())
        .merge(routes::clients::router())
        .merge(routes::members::router())
        .merge(routes::cards::router())
        .merge(routes::purchases::router())
        .merge(routes::service::router())
}

/// The routes and the OpenAPI document that describes them, completed with the answers
/// every route shares (openapi.rs).
fn routes_and_document() -> (Router<App>, utoipa::openapi::OpenApi) {
    let (routes, mut api) = api_router().split_for_parts();
    openapi::Complete.modify(&mut api);
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
        .fallback(routes::service::not_found)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .with_state(app)
}
