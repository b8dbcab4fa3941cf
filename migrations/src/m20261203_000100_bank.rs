//! The bank: co-branded cards, the secrets that sign its events, the events themselves
//! and the card transactions they build up (`app::bank`), and the merchant ids (MIDs)
//! that tell which coalition partner sold.
//!
//! - `partners.merchant_ids` (JSON text) is what partner answers show and what the
//!   terms snapshot matches MIDs with; `partner_merchant_ids` is the guard that a MID
//!   names one partner of a programme (primary key `(programme_id, merchant_id)`).
//! - `bank_cards`: the bank's token, BIN, last four and expiry month — never a PAN —
//!   and the member's points account the card earns into. A bank's token names one card
//!   (`ux_bank_cards_token`).
//! - `bank_signing_secrets`: kept as issued (the server must compute HMACs with them);
//!   `revoked_at` ends one.
//! - `bank_events`: one row per event id and bank (`ux_bank_events_event`): the unique
//!   constraint is what makes a second delivery move nothing. It keeps the answer given,
//!   for duplicates.
//! - `bank_transactions`: what was seen of one card transaction (`transaction_id`) and
//!   what it did; `pending_points` is summed per account into the balance's pending
//!   points (`ix_bank_transactions_pending`), and the lapse job finds authorizations
//!   through `ix_bank_transactions_lapse`. Ids of partners and accounts carry no foreign
//!   keys (hot rows, as in the ledger).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Partners {
    Table,
    MerchantIds,
}

#[derive(DeriveIden)]
enum PartnerMerchantIds {
    Table,
    ProgrammeId,
    MerchantId,
    PartnerId,
}

#[derive(DeriveIden)]
enum BankCards {
    Table,
    Id,
    ProgrammeId,
    BankPartnerId,
    MemberId,
    AccountId,
    CardToken,
    Bin,
    Last4,
    ExpiryMonth,
    Status,
    ReplacedById,
    CreatedAt,
}

#[derive(DeriveIden)]
enum BankSigningSecrets {
    Table,
    Id,
    ProgrammeId,
    BankPartnerId,
    Secret,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum BankEvents {
    Table,
    Id,
    ProgrammeId,
    BankPartnerId,
    EventId,
    EventType,
    TransactionId,
    RequestHash,
    Response,
    CreatedAt,
}

#[derive(DeriveIden)]
enum BankTransactions {
    Table,
    Id,
    ProgrammeId,
    BankPartnerId,
    TransactionId,
    CardId,
    AccountId,
    Currency,
    AuthorizedPoints,
    ClearedAmount,
    ClearedPoints,
    ClearedPartnerId,
    EarnEntryId,
    Funders,
    RefundedAmount,
    Reversed,
    Lapsed,
    LapsesAt,
    PendingPoints,
    PointsPosted,
    PointsClawedBack,
    PointsShortfall,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Partners::Table)
                .add_column(text(Partners::MerchantIds).default("[]"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(PartnerMerchantIds::Table)
                .col(uuid(PartnerMerchantIds::ProgrammeId))
                .col(text(PartnerMerchantIds::MerchantId))
                .col(uuid(PartnerMerchantIds::PartnerId))
                .primary_key(
                    Index::create()
                        .col(PartnerMerchantIds::ProgrammeId)
                        .col(PartnerMerchantIds::MerchantId),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(BankCards::Table)
                .col(uuid(BankCards::Id).primary_key())
                .col(uuid(BankCards::ProgrammeId))
                .col(uuid(BankCards::BankPartnerId))
                .col(uuid(BankCards::MemberId))
                .col(uuid(BankCards::AccountId))
                .col(text(BankCards::CardToken))
                .col(string_len(BankCards::Bin, 8))
                .col(string_len(BankCards::Last4, 4))
                .col(string_len(BankCards::ExpiryMonth, 7))
                .col(string_len(BankCards::Status, 16))
                .col(uuid_null(BankCards::ReplacedById))
                .col(timestamp_with_time_zone(BankCards::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_bank_cards_token")
                .table(BankCards::Table)
                .col(BankCards::ProgrammeId)
                .col(BankCards::BankPartnerId)
                .col(BankCards::CardToken)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_bank_cards_member")
                .table(BankCards::Table)
                .col(BankCards::ProgrammeId)
                .col(BankCards::MemberId)
                .col(BankCards::Id)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(BankSigningSecrets::Table)
                .col(uuid(BankSigningSecrets::Id).primary_key())
                .col(uuid(BankSigningSecrets::ProgrammeId))
                .col(uuid(BankSigningSecrets::BankPartnerId))
                .col(text(BankSigningSecrets::Secret))
                .col(timestamp_with_time_zone(BankSigningSecrets::CreatedAt))
                .col(timestamp_with_time_zone_null(BankSigningSecrets::RevokedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_bank_signing_secrets_bank")
                .table(BankSigningSecrets::Table)
                .col(BankSigningSecrets::BankPartnerId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(BankEvents::Table)
                .col(uuid(BankEvents::Id).primary_key())
                .col(uuid(BankEvents::ProgrammeId))
                .col(uuid(BankEvents::BankPartnerId))
                .col(text(BankEvents::EventId))
                .col(string_len(BankEvents::EventType, 16))
                .col(text(BankEvents::TransactionId))
                .col(string_len(BankEvents::RequestHash, 64))
                .col(text(BankEvents::Response))
                .col(timestamp_with_time_zone(BankEvents::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_bank_events_event")
                .table(BankEvents::Table)
                .col(BankEvents::ProgrammeId)
                .col(BankEvents::BankPartnerId)
                .col(BankEvents::EventId)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(BankTransactions::Table)
                .col(uuid(BankTransactions::Id).primary_key())
                .col(uuid(BankTransactions::ProgrammeId))
                .col(uuid(BankTransactions::BankPartnerId))
                .col(text(BankTransactions::TransactionId))
                .col(uuid(BankTransactions::CardId))
                .col(uuid(BankTransactions::AccountId))
                .col(string_len(BankTransactions::Currency, 3))
                .col(big_integer_null(BankTransactions::AuthorizedPoints))
                .col(text_null(BankTransactions::ClearedAmount))
                .col(big_integer_null(BankTransactions::ClearedPoints))
                .col(uuid_null(BankTransactions::ClearedPartnerId))
                .col(uuid_null(BankTransactions::EarnEntryId))
                .col(text(BankTransactions::Funders).default("[]"))
                .col(text(BankTransactions::RefundedAmount).default("0"))
                .col(boolean(BankTransactions::Reversed).default(false))
                .col(boolean(BankTransactions::Lapsed).default(false))
                .col(timestamp_with_time_zone_null(BankTransactions::LapsesAt))
                .col(big_integer(BankTransactions::PendingPoints).default(0))
                .col(big_integer(BankTransactions::PointsPosted).default(0))
                .col(big_integer(BankTransactions::PointsClawedBack).default(0))
                .col(big_integer(BankTransactions::PointsShortfall).default(0))
                .col(timestamp_with_time_zone(BankTransactions::CreatedAt))
                .col(timestamp_with_time_zone(BankTransactions::UpdatedAt))
                .check(Expr::col(BankTransactions::PendingPoints).gte(0))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_bank_transactions_id")
                .table(BankTransactions::Table)
                .col(BankTransactions::ProgrammeId)
                .col(BankTransactions::BankPartnerId)
                .col(BankTransactions::TransactionId)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_bank_transactions_pending")
                .table(BankTransactions::Table)
                .col(BankTransactions::AccountId)
                .col(BankTransactions::PendingPoints)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_bank_transactions_lapse")
                .table(BankTransactions::Table)
                .col(BankTransactions::LapsesAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            BankTransactions::Table.into_iden(),
            BankEvents::Table.into_iden(),
            BankSigningSecrets::Table.into_iden(),
            BankCards::Table.into_iden(),
            PartnerMerchantIds::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        m.alter_table(
            Table::alter()
                .table(Partners::Table)
                .drop_column(Partners::MerchantIds)
                .to_owned(),
        )
        .await
    }
}
