//! RFC 9457 problem details with a stable machine `code` for every refusal. A 5xx never
//! shows internals: they are logged, and the caller gets a generic detail.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use coalition_app::{AppError, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The offending field, as a dotted path into the request (`amount.amount`).
    pub field: String,
    pub message: String,
}

/// An `application/problem+json` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `insufficient_points`.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// `duplicate_external_ref`: the purchase already recorded with this reference
    /// (`GET /v1/purchases/{purchase_id}`, or refund it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_id: Option<uuid::Uuid>,
    /// `invalid_import_row`: the line of the input (1 = the first line, header included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

#[derive(Debug)]
pub enum ApiError {
    App(AppError),
    MalformedJson(String),
    UnsupportedMediaType,
    PayloadTooLarge,
    MissingIdempotencyKey,
    InvalidIdempotencyKey,
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError::App(e)
    }
}

pub fn validation(errors: Vec<FieldError>) -> ApiError {
    ApiError::App(AppError::Validation(errors))
}

fn classify(err: &AppError) -> (StatusCode, &'static str, &'static str) {
    use AppError::*;
    match err {
        Validation(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "The request has invalid fields",
        ),
        NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found"),
        Unauthorized(_) => (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
        ),
        Forbidden(_) => (
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "Not allowed for this client",
        ),
        TokenRevoked => (
            StatusCode::UNAUTHORIZED,
            "token_revoked",
            "Access token revoked",
        ),
        LastOperatorClient => (
            StatusCode::CONFLICT,
            "last_operator_client",
            "Last operator client",
        ),
        RotationInProgress { .. } => (
            StatusCode::CONFLICT,
            "rotation_in_progress",
            "A rotation's overlap is running",
        ),
        InvalidClient => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        ),
        InvalidScope => (
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Scope not granted",
        ),
        InvalidGrant(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Authorization grant refused",
        ),
        MemberTokenRequired => (
            StatusCode::FORBIDDEN,
            "member_token_required",
            "A member token is required",
        ),
        RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Too many failed attempts",
        ),
        CardBlocked => (StatusCode::CONFLICT, "card_blocked", "The card is blocked"),
        CardReplaced => (
            StatusCode::CONFLICT,
            "card_replaced",
            "The card was replaced",
        ),
        CardRetired => (StatusCode::CONFLICT, "card_retired", "The card is retired"),
        CardAlreadyRegistered => (
            StatusCode::CONFLICT,
            "card_already_registered",
            "The card is already registered",
        ),
        MemberErased => (
            StatusCode::CONFLICT,
            "member_erased",
            "The member was erased",
        ),
        InsufficientPoints { .. } => (
            StatusCode::CONFLICT,
            "insufficient_points",
            "Not enough points",
        ),
        RedemptionExceedsAmount(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "redemption_exceeds_amount",
            "Points worth more than the purchase",
        ),
        BalanceLimit { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "balance_limit_exceeded",
            "Balance limit exceeded",
        ),
        AccountMerged => (
            StatusCode::CONFLICT,
            "concurrent_change",
            "Changed at the same time",
        ),
        ConcurrentImport => (
            StatusCode::CONFLICT,
            "concurrent_change",
            "Changed at the same time",
        ),
        ImportRow { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_import_row",
            "A row of the import is invalid",
        ),
        CannotFit(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_enough_data",
            "The model cannot be fitted on this data",
        ),
        CampaignStarted => (
            StatusCode::CONFLICT,
            "campaign_started",
            "The campaign has started",
        ),
        NoClvModel => (
            StatusCode::CONFLICT,
            "no_clv_model",
            "No CLV model fitted yet",
        ),
        RefundExceedsRemaining(_) => (
            StatusCode::CONFLICT,
            "refund_exceeds_remaining",
            "Refund above what is left",
        ),
        ImportedPurchaseNotRefundable => (
            StatusCode::CONFLICT,
            "imported_purchase_not_refundable",
            "Imported purchases cannot be refunded",
        ),
        HoldNotHeld { .. } => (
            StatusCode::CONFLICT,
            "hold_not_held",
            "The hold was captured or voided",
        ),
        HoldExpired => (StatusCode::CONFLICT, "hold_expired", "The hold expired"),
        HoldsPending => (
            StatusCode::CONFLICT,
            "holds_pending",
            "Points are held at a till",
        ),
        CurrencyMismatch { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency_mismatch",
            "Wrong currency",
        ),
        DuplicateExternalRef { .. } => (
            StatusCode::CONFLICT,
            "duplicate_external_ref",
            "Purchase already recorded",
        ),
        EmailTaken => (
            StatusCode::CONFLICT,
            "email_taken",
            "Email already enrolled",
        ),
        TierRankTaken(_) => (StatusCode::CONFLICT, "tier_rank_taken", "Tier rank taken"),
        SettlementOverlaps => (
            StatusCode::CONFLICT,
            "settlement_overlaps",
            "The period overlaps a settlement",
        ),
        SettlementPeriodOpen { .. } => (
            StatusCode::CONFLICT,
            "settlement_period_open",
            "Transactions of the period are still open",
        ),
        DeliveryInFlight { .. } => (
            StatusCode::CONFLICT,
            "delivery_in_flight",
            "The message is being sent",
        ),
        IdempotencyKeyReused => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency-Key reused",
        ),
        CardTokenTaken => (StatusCode::CONFLICT, "card_token_taken", "Card token taken"),
        MerchantIdTaken(_) => (
            StatusCode::CONFLICT,
            "merchant_id_taken",
            "Merchant id taken",
        ),
        PanNotAllowed(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "pan_not_allowed",
            "Payment card numbers are not accepted",
        ),
        InvalidSignature(_) => (
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "Webhook signature refused",
        ),
        EventIdReused(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "event_id_reused",
            "Event id reused",
        ),
        Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal server error",
        ),
    }
}

pub fn problem_response(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: String,
    errors: Vec<FieldProblem>,
) -> Response {
    let body = Problem {
        type_: format!("/problems/{code}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail,
        code: code.to_owned(),
        errors,
        purchase_id: None,
        line: None,
    };
    problem_body_response(status, body)
}

fn problem_body_response(status: StatusCode, body: Problem) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The answer to a request whose handler panicked (tower-http's `CatchPanicLayer`). The
/// panic's message is neither shown nor logged here: it can quote request data, such as
/// a credential being parsed. The server's panic hook logs where it happened.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    problem_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal server error",
        "Something went wrong on our side.".into(),
        vec![],
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::App(err) => {
                let (status, code, title) = classify(&err);
                let detail = if let AppError::Internal(inner) = &err {
                    tracing::error!(error = %inner, "internal error");
                    "Something went wrong on our side; nothing was changed.".to_owned()
                } else {
                    err.to_string()
                };
                let retry_after = match &err {
                    AppError::RateLimited {
                        retry_after_seconds,
                    } => Some(*retry_after_seconds),
                    _ => None,
                };
                let purchase_id = match &err {
                    AppError::DuplicateExternalRef { purchase_id, .. } => *purchase_id,
                    _ => None,
                };
                let line = match &err {
                    AppError::ImportRow { line, .. } => Some(*line),
                    _ => None,
                };
                let errors = match err {
                    AppError::Validation(fields) => fields
                        .into_iter()
                        .map(|f| FieldProblem {
                            field: f.field,
                            message: f.message,
                        })
                        .collect(),
                    _ => vec![],
                };
                let body = Problem {
                    type_: format!("/problems/{code}"),
                    title: title.to_owned(),
                    status: status.as_u16(),
                    detail,
                    code: code.to_owned(),
                    errors,
                    purchase_id,
                    line,
                };
                let mut response = problem_body_response(status, body);
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
                }
                response
            }
            ApiError::MalformedJson(detail) => problem_response(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "Malformed JSON",
                detail,
                vec![],
            ),
            ApiError::UnsupportedMediaType => problem_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "send the body as application/json".into(),
                vec![],
            ),
            ApiError::PayloadTooLarge => problem_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                format!(
                    "request bodies are limited to {} bytes",
                    crate::extract::MAX_BODY_BYTES
                ),
                vec![],
            ),
            ApiError::MissingIdempotencyKey => problem_response(
                StatusCode::BAD_REQUEST,
                "idempotency_key_missing",
                "Idempotency-Key required",
                "point-moving requests need an Idempotency-Key header".into(),
                vec![],
            ),
            ApiError::InvalidIdempotencyKey => problem_response(
                StatusCode::BAD_REQUEST,
                "idempotency_key_invalid",
                "Invalid Idempotency-Key",
                "the Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                vec![],
            ),
        }
    }
}
