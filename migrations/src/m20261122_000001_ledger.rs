//! The ledger foundation: programmes, clients, partners, members, cards, the journal,
//! point lots, purchases, refunds and idempotency records.
//!
//! Money and rates are stored as canonical decimal text: sea-orm binds `Decimal` as a
//! REAL on SQLite and loses digits, and one exact representation on both backends keeps
//! the entities backend-independent. Postings and partner accounts carry no foreign keys
//! to hot rows (see ARCHITECTURE.md); integrity is kept in code and tested.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Programmes { Table, Id, Name, Currency, PointValue, PointExpiryDays, CreatedAt }
#[derive(DeriveIden)]
enum Settings { Table, Key, Value }
#[derive(DeriveIden)]
enum Partners { Table, Id, ProgrammeId, Name, Kind, Category, EarnPointsPerUnit, IssuePricePerPoint, RedemptionValuePerPoint, CreatedAt }
#[derive(DeriveIden)]
enum ApiClients { Table, Id, ProgrammeId, ClientId, SecretHash, Name, PartnerId, Scope, CreatedAt }
#[derive(DeriveIden)]
enum Members { Table, Id, ProgrammeId, AccountId, Name, Email, Phone, ConsentMarketing, ConsentDataSharing, EnrolledByPartnerId, ErasedAt, CreatedAt }
#[derive(DeriveIden)]
enum MemberPartners { Table, MemberId, PartnerId, ProgrammeId, CreatedAt }
#[derive(DeriveIden)]
enum PointAccounts { Table, Id, ProgrammeId, MemberId, Balance, Version, CreatedAt }
#[derive(DeriveIden)]
enum Cards { Table, Id, ProgrammeId, Number, AccountId, MemberId, Kind, Status, IssuedByPartnerId, ReplacedByNumber, CreatedAt }
#[derive(DeriveIden)]
enum JournalEntries { Table, Id, ProgrammeId, Kind, Reason, PartnerId, PurchaseId, RefundId, Breakdown, CreatedAt }
#[derive(DeriveIden)]
enum Postings { Table, Seq, EntryId, ProgrammeId, AccountKind, AccountId, Amount, CreatedAt }
#[derive(DeriveIden)]
enum PointLots { Table, Id, ProgrammeId, AccountId, EntryId, PointsInitial, PointsRemaining, ExpiresAt, CreatedAt }
#[derive(DeriveIden)]
enum Purchases { Table, Id, ProgrammeId, PartnerId, AccountId, CardNumber, ExternalRef, StoreRef, StaffRef, Amount, Currency, Discount, PointsEarned, PointsRedeemed, RefundedAmount, PointsClawedBack, PointsReturned, EntryId, CreatedAt }
#[derive(DeriveIden)]
enum Refunds { Table, Id, ProgrammeId, PurchaseId, PartnerId, Amount, PointsClawedBack, PointsReturned, PointsShortfall, EntryId, CreatedAt }
#[derive(DeriveIden)]
enum IdempotencyKeys { Table, ClientId, Key, RequestHash, StatusCode, ResponseBody, Location, CreatedAt }

fn created_at<T: IntoIden>(col: T) -> ColumnDef {
    timestamp_with_time_zone(col)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create().table(Programmes::Table)
                .col(uuid(Programmes::Id).primary_key())
                .col(string(Programmes::Name))
                .col(string_len(Programmes::Currency, 3))
                .col(string(Programmes::PointValue))
                .col(integer(Programmes::PointExpiryDays))
                .col(created_at(Programmes::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_table(
            Table::create().table(Settings::Table)
                .col(string(Settings::Key).primary_key())
                .col(text(Settings::Value))
                .to_owned(),
        ).await?;
        m.create_table(
            Table::create().table(Partners::Table)
                .col(uuid(Partners::Id).primary_key())
                .col(uuid(Partners::ProgrammeId))
                .col(string(Partners::Name))
                .col(string(Partners::Kind))
                .col(string(Partners::Category))
                .col(string(Partners::EarnPointsPerUnit))
                .col(string(Partners::IssuePricePerPoint))
                .col(string(Partners::RedemptionValuePerPoint))
                .col(created_at(Partners::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_index(Index::create().name("ix_partners_programme").table(Partners::Table).col(Partners::ProgrammeId).col(Partners::CreatedAt).to_owned()).await?;
        m.create_table(
            Table::create().table(ApiClients::Table)
                .col(uuid(ApiClients::Id).primary_key())
                .col(uuid(ApiClients::ProgrammeId))
                .col(string(ApiClients::ClientId).unique_key())
                .col(string(ApiClients::SecretHash))
                .col(string(ApiClients::Name))
                .col(uuid_null(ApiClients::PartnerId))
                .col(string(ApiClients::Scope))
                .col(created_at(ApiClients::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_table(
            Table::create().table(Members::Table)
                .col(uuid(Members::Id).primary_key())
                .col(uuid(Members::ProgrammeId))
                .col(uuid(Members::AccountId))
                .col(string_null(Members::Name))
                .col(string_null(Members::Email))
                .col(string_null(Members::Phone))
                .col(boolean(Members::ConsentMarketing))
                .col(boolean(Members::ConsentDataSharing))
                .col(uuid_null(Members::EnrolledByPartnerId))
                .col(timestamp_with_time_zone_null(Members::ErasedAt))
                .col(created_at(Members::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_index(Index::create().name("ux_members_programme_email").table(Members::Table).col(Members::ProgrammeId).col(Members::Email).unique().to_owned()).await?;
        m.create_table(
            Table::create().table(MemberPartners::Table)
                .col(uuid(MemberPartners::MemberId))
                .col(uuid(MemberPartners::PartnerId))
                .col(uuid(MemberPartners::ProgrammeId))
                .col(created_at(MemberPartners::CreatedAt))
                .primary_key(Index::create().col(MemberPartners::MemberId).col(MemberPartners::PartnerId))
                .to_owned(),
        ).await?;
        m.create_table(
            Table::create().table(PointAccounts::Table)
                .col(uuid(PointAccounts::Id).primary_key())
                .col(uuid(PointAccounts::ProgrammeId))
                .col(uuid_null(PointAccounts::MemberId))
                .col(big_integer(PointAccounts::Balance).check(Expr::col(PointAccounts::Balance).gte(0)))
                .col(big_integer(PointAccounts::Version))
                .col(created_at(PointAccounts::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_table(
            Table::create().table(Cards::Table)
                .col(uuid(Cards::Id).primary_key())
                .col(uuid(Cards::ProgrammeId))
                .col(string_len(Cards::Number, 32).unique_key())
                .col(uuid(Cards::AccountId))
                .col(uuid_null(Cards::MemberId))
                .col(string(Cards::Kind))
                .col(string(Cards::Status))
                .col(uuid_null(Cards::IssuedByPartnerId))
                .col(string_len_null(Cards::ReplacedByNumber, 32))
                .col(created_at(Cards::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_index(Index::create().name("ix_cards_account").table(Cards::Table).col(Cards::AccountId).to_owned()).await?;
        m.create_table(
            Table::create().table(JournalEntries::Table)
                .col(uuid(JournalEntries::Id).primary_key())
                .col(uuid(JournalEntries::ProgrammeId))
                .col(string(JournalEntries::Kind))
                .col(string(JournalEntries::Reason))
                .col(uuid_null(JournalEntries::PartnerId))
                .col(uuid_null(JournalEntries::PurchaseId))
                .col(uuid_null(JournalEntries::RefundId))
                .col(text(JournalEntries::Breakdown))
                .col(created_at(JournalEntries::CreatedAt))
                .to_owned(),
        ).await?;
        let seq = if m.get_database_backend() == sea_orm_migration::sea_orm::DatabaseBackend::Sqlite {
            // SQLite only auto-increments an INTEGER PRIMARY KEY (which is 64-bit there).
            integer(Postings::Seq).auto_increment().primary_key().to_owned()
        } else {
            big_integer(Postings::Seq).auto_increment().primary_key().to_owned()
        };
        m.create_table(
            Table::create().table(Postings::Table)
                .col(seq)
                .col(uuid(Postings::EntryId))
                .col(uuid(Postings::ProgrammeId))
                .col(string(Postings::AccountKind))
                .col(uuid(Postings::AccountId))
                .col(big_integer(Postings::Amount))
                .col(created_at(Postings::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_index(Index::create().name("ix_postings_account").table(Postings::Table).col(Postings::AccountKind).col(Postings::AccountId).col(Postings::Seq).to_owned()).await?;
        m.create_index(Index::create().name("ix_postings_entry").table(Postings::Table).col(Postings::EntryId).to_owned()).await?;
        m.create_table(
            Table::create().table(PointLots::Table)
                .col(uuid(PointLots::Id).primary_key())
                .col(uuid(PointLots::ProgrammeId))
                .col(uuid(PointLots::AccountId))
                .col(uuid(PointLots::EntryId))
                .col(big_integer(PointLots::PointsInitial))
                .col(big_integer(PointLots::PointsRemaining).check(Expr::col(PointLots::PointsRemaining).gte(0)))
                .col(timestamp_with_time_zone(PointLots::ExpiresAt))
                .col(created_at(PointLots::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_index(Index::create().name("ix_lots_account_expiry").table(PointLots::Table).col(PointLots::AccountId).col(PointLots::ExpiresAt).to_owned()).await?;
        m.create_table(
            Table::create().table(Purchases::Table)
                .col(uuid(Purchases::Id).primary_key())
                .col(uuid(Purchases::ProgrammeId))
                .col(uuid(Purchases::PartnerId))
                .col(uuid(Purchases::AccountId))
                .col(string_len(Purchases::CardNumber, 32))
                .col(string(Purchases::ExternalRef))
                .col(string_null(Purchases::StoreRef))
                .col(string_null(Purchases::StaffRef))
                .col(string(Purchases::Amount))
                .col(string_len(Purchases::Currency, 3))
                .col(string(Purchases::Discount))
                .col(big_integer(Purchases::PointsEarned))
                .col(big_integer(Purchases::PointsRedeemed))
                .col(string(Purchases::RefundedAmount))
                .col(big_integer(Purchases::PointsClawedBack))
                .col(big_integer(Purchases::PointsReturned))
                .col(uuid(Purchases::EntryId))
                .col(created_at(Purchases::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_index(Index::create().name("ux_purchases_partner_ref").table(Purchases::Table).col(Purchases::PartnerId).col(Purchases::ExternalRef).unique().to_owned()).await?;
        m.create_table(
            Table::create().table(Refunds::Table)
                .col(uuid(Refunds::Id).primary_key())
                .col(uuid(Refunds::ProgrammeId))
                .col(uuid(Refunds::PurchaseId))
                .col(uuid(Refunds::PartnerId))
                .col(string(Refunds::Amount))
                .col(big_integer(Refunds::PointsClawedBack))
                .col(big_integer(Refunds::PointsReturned))
                .col(big_integer(Refunds::PointsShortfall))
                .col(uuid(Refunds::EntryId))
                .col(created_at(Refunds::CreatedAt))
                .to_owned(),
        ).await?;
        m.create_index(Index::create().name("ix_refunds_purchase").table(Refunds::Table).col(Refunds::PurchaseId).to_owned()).await?;
        m.create_table(
            Table::create().table(IdempotencyKeys::Table)
                .col(string(IdempotencyKeys::ClientId))
                .col(string(IdempotencyKeys::Key))
                .col(string(IdempotencyKeys::RequestHash))
                .col(integer(IdempotencyKeys::StatusCode))
                .col(text(IdempotencyKeys::ResponseBody))
                .col(string_null(IdempotencyKeys::Location))
                .col(created_at(IdempotencyKeys::CreatedAt))
                .primary_key(Index::create().col(IdempotencyKeys::ClientId).col(IdempotencyKeys::Key))
                .to_owned(),
        ).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(), Refunds::Table.into_iden(), Purchases::Table.into_iden(),
            PointLots::Table.into_iden(), Postings::Table.into_iden(), JournalEntries::Table.into_iden(),
            Cards::Table.into_iden(), PointAccounts::Table.into_iden(), MemberPartners::Table.into_iden(),
            Members::Table.into_iden(), ApiClients::Table.into_iden(), Partners::Table.into_iden(),
            Settings::Table.into_iden(), Programmes::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
