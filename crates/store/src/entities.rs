//! sea-orm entities, one module a table (see migrations/ for the schema and why).

pub mod programme {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "programmes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub currency: String,
        pub point_value: String,
        pub point_expiry_days: i32,
        pub created_at: DateTimeUtc,
        /// Bumped with every change to partner terms, rules or tiers (see `app::terms`).
        pub terms_version: i64,
        /// Bumped with every change to a client's status or generation (see
        /// `app::credentials`).
        pub credentials_version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod setting {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        #[sea_orm(column_type = "Text")]
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod partner {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "partners")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub name: String,
        pub kind: String,
        pub category: String,
        pub earn_points_per_unit: String,
        pub issue_price_per_point: String,
        pub redemption_value_per_point: String,
        pub created_at: DateTimeUtc,
        /// The card-network merchant ids (MIDs) of this partner, as JSON text.
        #[sea_orm(column_type = "Text")]
        pub merchant_ids: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_client {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_clients")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub client_id: String,
        pub secret_hash: String,
        pub name: String,
        pub partner_id: Option<Uuid>,
        pub scope: String,
        pub created_at: DateTimeUtc,
        /// `active` or `disabled`.
        pub status: String,
        /// A token carries the generation it was issued under; another one is refused.
        pub generation: i64,
        /// The secret a rotation replaced, accepted until `previous_secret_expires_at`.
        pub previous_secret_hash: Option<String>,
        pub previous_secret_expires_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub account_id: Uuid,
        pub name: Option<String>,
        pub email: Option<String>,
        pub phone: Option<String>,
        pub consent_marketing: bool,
        pub consent_data_sharing: bool,
        pub enrolled_by_partner_id: Option<Uuid>,
        pub erased_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        /// The tier qualified for by spend (see `app::tiers`); NULL: none.
        pub tier_id: Option<Uuid>,
        /// A tier set by hand, effective (if higher) until `floor_ends_at`.
        pub floor_tier_id: Option<Uuid>,
        #[sea_orm(column_type = "Text", nullable)]
        pub floor_reason: Option<String>,
        pub floor_ends_at: Option<DateTimeUtc>,
        /// The customer number an import knows the member by (unique per programme).
        pub external_ref: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod member_partner {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "member_partners")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub member_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub partner_id: Uuid,
        pub programme_id: Uuid,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod point_account {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "point_accounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub member_id: Option<Uuid>,
        pub balance: i64,
        pub version: i64,
        /// Set when a registration moved this (bearer) account's points to a member's.
        pub merged_into_account_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
        /// Points reserved by the account's live POS holds: `balance - held` is spendable.
        pub held: i64,
        /// Set when the member's data was erased: the account takes no more points.
        pub closed_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod card {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cards")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub number: String,
        pub account_id: Uuid,
        pub member_id: Option<Uuid>,
        pub kind: String,
        pub status: String,
        pub issued_by_partner_id: Option<Uuid>,
        pub replaced_by_number: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod journal_entry {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "journal_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub kind: String,
        pub reason: String,
        pub partner_id: Option<Uuid>,
        pub purchase_id: Option<Uuid>,
        pub refund_id: Option<Uuid>,
        #[sea_orm(column_type = "Text")]
        pub breakdown: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod posting {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "postings")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub entry_id: Uuid,
        pub programme_id: Uuid,
        pub account_kind: String,
        pub account_id: Uuid,
        pub amount: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod point_lot {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "point_lots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub account_id: Uuid,
        pub entry_id: Uuid,
        pub points_initial: i64,
        pub points_remaining: i64,
        pub expires_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        /// Expiry reminders the lot has had: 0 none, 1 the 30-day one, 2 the 7-day one.
        pub reminder_stage: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod purchase {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "purchases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub partner_id: Uuid,
        pub account_id: Uuid,
        pub card_number: String,
        pub external_ref: String,
        pub store_ref: Option<String>,
        pub staff_ref: Option<String>,
        pub amount: String,
        pub currency: String,
        pub discount: String,
        pub points_earned: i64,
        pub points_redeemed: i64,
        pub refunded_amount: String,
        pub points_clawed_back: i64,
        pub points_returned: i64,
        pub entry_id: Uuid,
        pub created_at: DateTimeUtc,
        /// When an imported purchase happened (its historical day); NULL: at `created_at`.
        pub occurred_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refund {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refunds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub purchase_id: Uuid,
        pub partner_id: Uuid,
        pub amount: String,
        pub points_clawed_back: i64,
        pub points_returned: i64,
        pub points_shortfall: i64,
        pub entry_id: Uuid,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub client_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub request_hash: String,
        pub status_code: i32,
        #[sea_orm(column_type = "Text")]
        pub response_body: String,
        pub location: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub event_type: String,
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        pub created_at: DateTimeUtc,
        pub delivered_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod hold {
    use sea_orm::entity::prelude::*;

    /// A POS hold: points reserved at a partner's till (see `app::holds`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "holds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub partner_id: Uuid,
        pub account_id: Uuid,
        pub card_number: String,
        pub points: i64,
        /// `held`, `captured`, `voided` or `expired`.
        pub status: String,
        pub expires_at: DateTimeUtc,
        /// The purchase a capture recorded, when the points paid for one.
        pub purchase_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
        pub resolved_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rule {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub version: i32,
        pub active: bool,
        /// The domain's `Rule`, as JSON.
        #[sea_orm(column_type = "Text")]
        pub definition: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rule_version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rule_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub rule_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        pub programme_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub definition: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rule_award {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rule_awards")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub rule_id: Uuid,
        pub rule_version: i32,
        pub account_id: Uuid,
        pub entry_id: Uuid,
        pub points: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tier {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tiers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub name: String,
        pub rank: i32,
        /// In minor units of the programme's currency.
        pub qualifying_spend: i64,
        pub discount_percent: String,
        pub earn_multiplier: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tier_history {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tier_history")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub member_id: Uuid,
        pub kind: String,
        pub from_tier_id: Option<Uuid>,
        pub to_tier_id: Option<Uuid>,
        pub effective_tier_id: Option<Uuid>,
        #[sea_orm(column_type = "Text", nullable)]
        pub reason: Option<String>,
        pub ends_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tier_spend_day {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tier_spend_days")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub member_id: Uuid,
        /// A UTC day.
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: Date,
        pub programme_id: Uuid,
        /// Spend that day in minor units, net of refunds of that day's purchases.
        pub amount: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod campaign {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "campaigns")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub name: String,
        /// Segment, reward, funder and reminder as JSON (`app::campaigns::Definition`).
        #[sea_orm(column_type = "Text")]
        pub definition: String,
        pub starts_at: DateTimeUtc,
        pub ends_at: DateTimeUtc,
        /// The control group's share: 100 % = 10 000.
        pub holdout_basis_points: i32,
        pub budget_points: i64,
        /// Points awarded so far; never above `budget_points`.
        pub budget_used: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod campaign_member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "campaign_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub campaign_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub member_id: Uuid,
        pub programme_id: Uuid,
        /// `treatment` or `control`.
        pub group: String,
        pub assigned_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod partner_price {
    use sea_orm::entity::prelude::*;

    /// A partner's prices from `valid_from` until the next row's `valid_from`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "partner_prices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub partner_id: Uuid,
        pub valid_from: DateTimeUtc,
        pub issue_price_per_point: String,
        pub redemption_value_per_point: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod settlement {
    use sea_orm::entity::prelude::*;

    /// A settlement run, its statement stored whole as JSON (`app::settlements`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "settlements")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub period_start: DateTimeUtc,
        pub period_end: DateTimeUtc,
        pub currency: String,
        #[sea_orm(column_type = "Text")]
        pub document: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod partner_merchant_id {
    use sea_orm::entity::prelude::*;

    /// A MID names one partner per programme (the primary key is the guard).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "partner_merchant_ids")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub programme_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
        pub merchant_id: String,
        pub partner_id: Uuid,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod bank_card {
    use sea_orm::entity::prelude::*;

    /// A co-branded card (see `app::bank`): token, BIN, last four — never a PAN.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "bank_cards")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub bank_partner_id: Uuid,
        pub member_id: Uuid,
        pub account_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub card_token: String,
        pub bin: String,
        pub last4: String,
        pub expiry_month: String,
        /// `active`, `blocked` or `replaced`.
        pub status: String,
        pub replaced_by_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod bank_signing_secret {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "bank_signing_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub bank_partner_id: Uuid,
        /// `whsec_…`: needed as it is to verify signatures; never logged.
        #[sea_orm(column_type = "Text")]
        pub secret: String,
        pub created_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
    }

    /// Never prints the secret (a `{:?}` in a log line must not leak it).
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("BankSigningSecret")
                .field("id", &self.id)
                .field("bank_partner_id", &self.bank_partner_id)
                .field("revoked_at", &self.revoked_at)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod bank_event {
    use sea_orm::entity::prelude::*;

    /// One bank event, once (`ux_bank_events_event`), with the answer it got.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "bank_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub bank_partner_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub event_id: String,
        pub event_type: String,
        #[sea_orm(column_type = "Text")]
        pub transaction_id: String,
        pub request_hash: String,
        #[sea_orm(column_type = "Text")]
        pub response: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod bank_transaction {
    use sea_orm::entity::prelude::*;

    /// What was seen of one card transaction and what it did (see `app::bank`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "bank_transactions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub bank_partner_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub transaction_id: String,
        pub card_id: Uuid,
        pub account_id: Uuid,
        pub currency: String,
        pub authorized_points: Option<i64>,
        pub cleared_amount: Option<String>,
        pub cleared_points: Option<i64>,
        /// The partner the clearing was priced at (the bank itself off the coalition).
        pub cleared_partner_id: Option<Uuid>,
        pub earn_entry_id: Option<Uuid>,
        /// JSON: each funder of the posted points, what it gave and what came back.
        #[sea_orm(column_type = "Text")]
        pub funders: String,
        pub refunded_amount: String,
        pub reversed: bool,
        pub lapsed: bool,
        pub lapses_at: Option<DateTimeUtc>,
        pub pending_points: i64,
        pub points_posted: i64,
        pub points_clawed_back: i64,
        pub points_shortfall: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod webhook_endpoint {
    use sea_orm::entity::prelude::*;

    /// A subscriber's webhook endpoint (see `app::webhooks`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_endpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        /// Empty for the operator's endpoints.
        pub partner_id: Option<Uuid>,
        #[sea_orm(column_type = "Text")]
        pub url: String,
        /// The event types, a JSON array of strings.
        #[sea_orm(column_type = "Text")]
        pub events: String,
        /// `whsec_…`: never shown after creation or rotation, never logged.
        #[sea_orm(column_type = "Text")]
        pub secret: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub previous_secret: Option<String>,
        pub previous_secret_expires_at: Option<DateTimeUtc>,
        /// `enabled` or `disabled`.
        pub status: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub disabled_reason: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod webhook_delivery {
    use sea_orm::entity::prelude::*;

    /// One message (an outbox event) for one endpoint, and how its delivery goes.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub endpoint_id: Uuid,
        /// The outbox event's id: the `webhook-id` header on every attempt.
        pub message_id: Uuid,
        pub event_type: String,
        /// `pending`, `delivered` or `failed`.
        pub status: String,
        pub attempts: i32,
        pub next_attempt_at: Option<DateTimeUtc>,
        pub last_attempt_at: Option<DateTimeUtc>,
        pub last_status_code: Option<i32>,
        #[sea_orm(column_type = "Text", nullable)]
        pub last_error: Option<String>,
        /// The claim a worker is sending under (`next_attempt_at` is then its lease's
        /// end); empty when no worker holds the message.
        pub lease_token: Option<Uuid>,
        pub delivered_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod clv_model {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "clv_models")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub partner_id: Option<Uuid>,
        pub calibration_end: Date,
        pub currency: String,
        pub r: f64,
        pub alpha: f64,
        pub a: f64,
        pub b: f64,
        pub bgnbd_log_likelihood: f64,
        pub p: Option<f64>,
        pub q: Option<f64>,
        pub gamma: Option<f64>,
        pub gamma_gamma_log_likelihood: Option<f64>,
        pub members: i64,
        pub repeat_members: i64,
        pub fit_millis: i64,
        pub fitted_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod oauth;
pub use oauth::{oauth_code, oauth_grant, oauth_redirect_uri, oauth_refresh_token};
