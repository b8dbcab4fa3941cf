use coalition_domain::Points;
use sea_orm::DbErr;

/// One offending input field, for `errors[]` in a validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl ToString) -> Self {
        Self {
            field: field.to_owned(),
            message: message.to_string(),
        }
    }
}

/// Everything a use case can refuse. The HTTP layer gives each a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The token's client was disabled, deleted or cut off after the token was issued.
    #[error("the access token's client was disabled, deleted or its tokens revoked")]
    TokenRevoked,
    #[error("the programme's last active operator client cannot be disabled or deleted")]
    LastOperatorClient,
    /// A rotation with an overlap while the previous rotation's overlap still runs.
    #[error("the secret rotated out last still gets tokens until {until}; rotate again after that, or with overlap_seconds 0 to cut every earlier secret now")]
    RotationInProgress {
        until: chrono::DateTime<chrono::Utc>,
    },
    #[error("client authentication failed")]
    InvalidClient,
    #[error("the requested scope is not granted to this client")]
    InvalidScope,
    /// An authorization code or refresh token that is unknown, expired, used, revoked,
    /// another client's, or whose PKCE verifier or redirect_uri does not match (RFC 6749
    /// §5.2 `invalid_grant`).
    #[error("{0}")]
    InvalidGrant(String),
    /// A partner's or the operator's token on a route that only a member token opens.
    #[error("this route needs a member access token (scope member), not a client's token")]
    MemberTokenRequired,
    #[error("too many failed attempts; retry in {retry_after_seconds} seconds")]
    RateLimited { retry_after_seconds: u64 },
    #[error("the card is blocked")]
    CardBlocked,
    /// Never names the new card: whoever holds the old one must not learn it.
    #[error("the card was replaced and can no longer be used")]
    CardReplaced,
    /// The card's member was erased: the card can do nothing any more.
    #[error("the card was retired when its member's data was erased")]
    CardRetired,
    #[error("the card is already registered to a member")]
    CardAlreadyRegistered,
    #[error("the member's personal data was erased")]
    MemberErased,
    #[error("the balance of {available} points does not cover {requested} points")]
    InsufficientPoints {
        available: Points,
        requested: Points,
    },
    #[error("{0}")]
    RedemptionExceedsAmount(String),
    #[error("the account would hold more than {max} points")]
    BalanceLimit { max: Points },
    /// The points account was merged into a member's by a registration that committed
    /// meanwhile; the operation is retried on the card's new account.
    #[error("the card moved to another account at the same time; retry")]
    AccountMerged,
    #[error("{0}")]
    RefundExceedsRemaining(String),
    /// An imported (historical) purchase: it was made on no card of the programme, and
    /// its points (if the import earned any) are not clawed back by a refund.
    #[error("the purchase was imported from history; imported purchases cannot be refunded")]
    ImportedPurchaseNotRefundable,
    /// A capture or void of a POS hold that was captured or voided already.
    #[error("the hold is {status}, no longer held")]
    HoldNotHeld { status: String },
    #[error("the hold expired; its points are free again")]
    HoldExpired,
    /// A bearer card whose points are reserved by a live hold is not registered (merged)
    /// until the hold is captured, voided or lapses.
    #[error("points of this card are held at a till; capture or void the hold first")]
    HoldsPending,
    #[error("the amount is in {got}, the programme runs in {expected}")]
    CurrencyMismatch { expected: String, got: String },
    /// Names the purchase already recorded (when it could be read), so a till that lost
    /// the first answer can find and refund it.
    #[error("a purchase with external_ref '{external_ref}' was already recorded by this partner")]
    DuplicateExternalRef {
        external_ref: String,
        purchase_id: Option<uuid::Uuid>,
    },
    #[error("a member with this email is already enrolled")]
    EmailTaken,
    #[error("the programme already has a tier of rank {0}")]
    TierRankTaken(i32),
    #[error("the campaign has started; only ending it is possible now")]
    CampaignStarted,
    /// The `at_risk` segment needs a fitted CLV model (`POST /v1/analytics/clv-models`).
    #[error("the programme has no CLV model yet: fit one with POST /v1/analytics/clv-models")]
    NoClvModel,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// A settlement period overlapping one already settled (and not the same period).
    #[error("the period overlaps a settlement of this programme")]
    SettlementOverlaps,
    #[error("the bank already has a card with this card_token")]
    CardTokenTaken,
    #[error("merchant id '{0}' belongs to another partner of the programme")]
    MerchantIdTaken(String),
    /// A value that looks like a payment card number (PAN), anywhere in a request.
    #[error("{0}")]
    PanNotAllowed(String),
    /// A bank event whose Standard Webhooks signature does not verify.
    #[error("{0}")]
    InvalidSignature(String),
    /// A bank event id already used with a different body.
    #[error("event id '{0}' was already delivered with a different body")]
    EventIdReused(String),
    #[error("{transactions} transactions that began before period_end are still open; retry in a moment")]
    SettlementPeriodOpen { transactions: i64 },
    /// A redelivery of a message a worker is sending right now (under a live lease).
    #[error(
        "the message is being sent right now; redeliver it after {lease_ends} if it did not arrive"
    )]
    DeliveryInFlight {
        lease_ends: chrono::DateTime<chrono::Utc>,
    },
    /// A row of an import that cannot be imported; nothing of the import was written.
    #[error("line {line}: {message}")]
    ImportRow { line: u64, message: String },
    /// Another import created some of the same members at the same moment.
    #[error("another import created some of these members at the same time; run the import again (what was imported is skipped)")]
    ConcurrentImport,
    /// The model cannot be fitted on this data (no purchases, or no maximum found).
    #[error("{0}")]
    CannotFit(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        AppError::Internal(format!("database: {err}"))
    }
}

impl From<coalition_domain::LedgerError> for AppError {
    fn from(err: coalition_domain::LedgerError) -> Self {
        AppError::Internal(format!("ledger: {err}"))
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// Collects field errors so a request hears about all its mistakes at once.
#[derive(Default)]
pub struct Validator(Vec<FieldError>);

impl Validator {
    pub fn check<T, E: ToString>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|e| self.0.push(FieldError::new(field, e)))
            .ok()
    }

    pub fn require(&mut self, field: &str, ok: bool, message: &str) {
        if !ok {
            self.0.push(FieldError::new(field, message));
        }
    }

    /// A timestamp must not be a leap second (`23:59:60`): chrono reads one, but
    /// PostgreSQL stores it as the next second, so stored periods would not be as sent.
    pub fn instant(&mut self, field: &str, at: Option<chrono::DateTime<chrono::Utc>>) {
        use chrono::Timelike;
        if at.is_some_and(|at| at.nanosecond() >= 1_000_000_000) {
            self.0
                .push(FieldError::new(field, "must not be a leap second (:60)"));
        }
    }

    pub fn finish(self) -> AppResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.0))
        }
    }
}

/// A required free-text field: not longer than `max` characters as sent, not only white
/// space, no control characters anywhere (PostgreSQL cannot store NUL where SQLite keeps
/// it, and both must answer alike; no name or reference needs a control character, and
/// they corrupt logs and CSV exports); kept trimmed. The OpenAPI document states this
/// rule as a pattern (crates/api/src/fields.rs), so keep the two together.
pub fn text_field(v: &mut Validator, field: &str, value: &str, max: usize) -> String {
    let trimmed = value.trim();
    v.require(field, !trimmed.is_empty(), "must not be empty");
    v.require(
        field,
        value.chars().count() <= max,
        &format!("must be at most {max} characters"),
    );
    v.require(
        field,
        !value.chars().any(char::is_control),
        "must not contain control characters",
    );
    trimmed.to_owned()
}
