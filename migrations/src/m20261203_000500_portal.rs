//! The member portal's sign-in: one-time codes sent by e-mail, server-side sessions,
//! and the counters that rate-limit code requests. Every secret is stored hashed: a
//! code as HMAC-SHA-256 under its own salt, a session token as its SHA-256, a counter
//! key (an e-mail address or a source address) as its SHA-256.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum MemberLoginCodes {
    Table,
    Id,
    ProgrammeId,
    MemberId,
    Salt,
    CodeHash,
    Attempts,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum MemberSessions {
    Table,
    Id,
    TokenHash,
    ProgrammeId,
    MemberId,
    PartnerId,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum SigninRequestCounters {
    Table,
    KeyHash,
    WindowStartedAt,
    Requests,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(MemberLoginCodes::Table)
                .col(uuid(MemberLoginCodes::Id).primary_key())
                .col(uuid(MemberLoginCodes::ProgrammeId))
                .col(uuid(MemberLoginCodes::MemberId))
                .col(string_len(MemberLoginCodes::Salt, 64))
                .col(string_len(MemberLoginCodes::CodeHash, 64))
                .col(integer(MemberLoginCodes::Attempts).default(0))
                .col(timestamp_with_time_zone(MemberLoginCodes::CreatedAt))
                .col(timestamp_with_time_zone(MemberLoginCodes::ExpiresAt))
                .col(timestamp_with_time_zone_null(MemberLoginCodes::UsedAt))
                .to_owned(),
        )
        .await?;
        // One live code per member: a new request replaces the old one (and racing
        // requests cannot leave two codes that both work).
        m.create_index(
            Index::create()
                .name("ux_member_login_codes_member")
                .table(MemberLoginCodes::Table)
                .col(MemberLoginCodes::ProgrammeId)
                .col(MemberLoginCodes::MemberId)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(MemberSessions::Table)
                .col(uuid(MemberSessions::Id).primary_key())
                .col(string_len(MemberSessions::TokenHash, 64))
                .col(uuid(MemberSessions::ProgrammeId))
                .col(uuid(MemberSessions::MemberId))
                .col(uuid_null(MemberSessions::PartnerId))
                .col(timestamp_with_time_zone(MemberSessions::CreatedAt))
                .col(timestamp_with_time_zone(MemberSessions::LastSeenAt))
                .col(timestamp_with_time_zone(MemberSessions::ExpiresAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_member_sessions_token")
                .table(MemberSessions::Table)
                .col(MemberSessions::TokenHash)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_member_sessions_member")
                .table(MemberSessions::Table)
                .col(MemberSessions::ProgrammeId)
                .col(MemberSessions::MemberId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SigninRequestCounters::Table)
                .col(string_len(SigninRequestCounters::KeyHash, 64).primary_key())
                .col(timestamp_with_time_zone(
                    SigninRequestCounters::WindowStartedAt,
                ))
                .col(integer(SigninRequestCounters::Requests))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            MemberLoginCodes::Table.into_iden(),
            MemberSessions::Table.into_iden(),
            SigninRequestCounters::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
