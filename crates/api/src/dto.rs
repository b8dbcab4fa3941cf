//! Request and response bodies of the public contract (see API.md). Money travels as
//! `{"amount": "12.50", "currency": "EUR"}` with the amount a string; a JSON number there
//! is refused.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPartnerRequest {
    pub name: String,
    /// `merchant` or `bank`.
    pub kind: String,
    pub category: String,
    /// Points per unit of currency, decimal string.
    #[schema(example = "1")]
    pub earn_points_per_unit: String,
    /// What the partner pays the programme per point it issues, decimal string.
    #[schema(example = "0.012")]
    pub issue_price_per_point: String,
    /// What the programme pays the partner per point it honours, decimal string.
    #[schema(example = "0.009")]
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
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerList {
    pub data: Vec<PartnerResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientRequest {
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMemberRequest {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    #[serde(default)]
    pub consent_marketing: bool,
    #[serde(default)]
    pub consent_data_sharing: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberResponse {
    pub id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub consent_marketing: bool,
    pub consent_data_sharing: bool,
    /// The member's tier; tiers come with the tier ladder.
    pub tier: Option<String>,
    pub points: i64,
    pub erased: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCardRequest {
    /// The member for a registered card; omit for a bearer card.
    pub member_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCardRequest {
    pub member_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CardResponse {
    pub id: Uuid,
    pub number: String,
    /// `registered` or `bearer`.
    pub kind: String,
    /// `active`, `blocked` or `replaced`.
    pub status: String,
    pub member_id: Option<Uuid>,
    pub replaced_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredCardResponse {
    pub card: CardResponse,
    /// Points that moved from the bearer card to the member.
    pub points_moved: i64,
    /// The member's points after the move.
    pub balance: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExpiringPoints {
    pub points: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceResponse {
    pub member_id: Uuid,
    pub points: i64,
    /// Money value of the points at the programme's point value.
    pub value: MoneyDto,
    /// Lots expiring within 30 days, soonest first.
    pub expiring_soon: Vec<ExpiringPoints>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakdownLineDto {
    /// The rule, e.g. `base_rate`.
    pub rule: String,
    pub description: String,
    pub points: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionResponse {
    pub entry_id: Uuid,
    /// `earned`, `redeemed`, `returned`, `clawed_back`, `card_transfer_in`, `card_transfer_out`.
    pub kind: String,
    /// Signed change of the member's points.
    pub points: i64,
    pub reason: String,
    pub partner_id: Option<Uuid>,
    pub purchase_id: Option<Uuid>,
    pub refund_id: Option<Uuid>,
    pub breakdown: Vec<BreakdownLineDto>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionList {
    pub data: Vec<TransactionResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    pub card_number: String,
    pub amount: MoneyDto,
    /// The partner's own reference (receipt number); unique per partner.
    pub external_ref: String,
    /// Points to pay with; they are worth the programme's point value each.
    pub redeem_points: Option<i64>,
    pub store_ref: Option<String>,
    pub staff_ref: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteResponse {
    pub card_number: String,
    pub member_id: Option<Uuid>,
    pub amount: MoneyDto,
    pub discount: MoneyDto,
    /// What the member still pays after the points discount.
    pub payable: MoneyDto,
    pub points_earned: i64,
    pub points_redeemed: i64,
    pub breakdown: Vec<BreakdownLineDto>,
    /// The member's points after the purchase.
    pub balance: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseResponse {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub card_number: String,
    pub member_id: Option<Uuid>,
    pub external_ref: String,
    pub amount: MoneyDto,
    pub discount: MoneyDto,
    pub payable: MoneyDto,
    pub points_earned: i64,
    pub points_redeemed: i64,
    pub breakdown: Vec<BreakdownLineDto>,
    pub balance: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseDetail {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub card_number: String,
    pub external_ref: String,
    pub store_ref: Option<String>,
    pub staff_ref: Option<String>,
    pub amount: MoneyDto,
    pub discount: MoneyDto,
    pub refunded: MoneyDto,
    pub points_earned: i64,
    pub points_redeemed: i64,
    pub points_clawed_back: i64,
    pub points_returned: i64,
    pub refunds: Vec<RefundResponse>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The part of the purchase amount refunded (at most what is left).
    pub amount: MoneyDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundResponse {
    pub id: Uuid,
    pub purchase_id: Uuid,
    pub amount: MoneyDto,
    /// Earned points taken back.
    pub points_clawed_back: i64,
    /// Spent points given back.
    pub points_returned: i64,
    /// Earned points that could not be taken back because the member had spent them.
    pub points_shortfall: i64,
    /// The member's points after the refund (absent when listed on a purchase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    /// RFC 6749 §5.2 error code.
    pub error: String,
    pub error_description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub database: String,
    /// `ok`, `degraded`, or `not_configured`.
    pub cache: String,
}
