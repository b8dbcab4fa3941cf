//! The signed-in pages, and the message pages (refusals, errors) every portal answer
//! may need.

use super::{html, language, texts::texts, Chrome};
use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use coalition_app::member_sessions::MemberSession;
use coalition_app::{App, AppError};

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
        c: Chrome::new(t, heading, "Coalition".into(), None, String::new(), false, "", "/portal"),
        heading,
        text,
        link,
    };
    html(status, page.render())
}

/// The page for a failed use case: a 404 for what is not hers, else a 500 that says
/// nothing of the cause (which is logged).
pub(crate) fn error_page(headers: &HeaderMap, error: AppError) -> Response {
    let t = texts(language(headers));
    match error {
        AppError::NotFound(_) => message_page(
            headers,
            StatusCode::NOT_FOUND,
            t.not_found_title,
            t.not_found_text,
            Some("/portal"),
        ),
        other => {
            tracing::error!(error = %other, "a portal page failed");
            message_page(
                headers,
                StatusCode::INTERNAL_SERVER_ERROR,
                t.error_title,
                t.error_text,
                Some("/portal"),
            )
        }
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
pub(crate) async fn signed_in(app: &App, headers: &HeaderMap, here: &str) -> Result<MemberSession, Response> {
    match super::session(app, headers).await? {
        Some(session) => Ok(session),
        None => Err(super::to_sign_in(here)),
    }
}

pub async fn home(State(app): State<App>, request: Request) -> Response {
    let headers = request.headers().clone();
    let here = request.uri().path_and_query().map_or("/portal".to_owned(), |p| p.as_str().to_owned());
    let session = match signed_in(&app, &headers, &here).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let t = texts(language(&headers));
    message_page(&headers, StatusCode::OK, t.home_title, &session.member_id.to_string(), None)
}

pub async fn history(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn partners(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn offers(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn cards(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn block_confirm(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn block(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn profile(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn marketing(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn erase_confirm(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
pub async fn erase(state: State<App>, request: Request) -> Response {
    home(state, request).await
}
