//! Members through partners' apps: OAuth 2.0 authorization code + PKCE (`app::oidc`).
//!
//! `oauth_redirect_uris`: the exact redirect URIs a partner's client registered (unique
//! per client). `oauth_grants`: one sign-in of one member at one client; its code, its
//! refresh tokens and the access tokens they gave share its fate (`revoked_at`, set when
//! a code or a rotated refresh token is replayed). `oauth_codes` and
//! `oauth_refresh_tokens` keep SHA-256 hashes only (unique: the lookup is by hash); each
//! is used once, marked by a conditional `UPDATE … WHERE used_at IS NULL` so that two
//! racing exchanges cannot both win, on any number of processes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum OauthRedirectUris {
    Table,
    Id,
    ProgrammeId,
    ApiClientId,
    Uri,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OauthGrants {
    Table,
    Id,
    ProgrammeId,
    ApiClientId,
    MemberId,
    Scope,
    Nonce,
    AuthTime,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum OauthCodes {
    Table,
    Id,
    GrantId,
    CodeHash,
    RedirectUri,
    CodeChallenge,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum OauthRefreshTokens {
    Table,
    Id,
    GrantId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(OauthRedirectUris::Table)
                .col(uuid(OauthRedirectUris::Id).primary_key())
                .col(uuid(OauthRedirectUris::ProgrammeId))
                .col(uuid(OauthRedirectUris::ApiClientId))
                .col(text(OauthRedirectUris::Uri))
                .col(timestamp_with_time_zone(OauthRedirectUris::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_oauth_redirect_uris_client_uri")
                .table(OauthRedirectUris::Table)
                .col(OauthRedirectUris::ApiClientId)
                .col(OauthRedirectUris::Uri)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OauthGrants::Table)
                .col(uuid(OauthGrants::Id).primary_key())
                .col(uuid(OauthGrants::ProgrammeId))
                .col(uuid(OauthGrants::ApiClientId))
                .col(uuid(OauthGrants::MemberId))
                .col(string(OauthGrants::Scope))
                .col(text_null(OauthGrants::Nonce))
                .col(timestamp_with_time_zone(OauthGrants::AuthTime))
                .col(timestamp_with_time_zone(OauthGrants::CreatedAt))
                .col(timestamp_with_time_zone_null(OauthGrants::RevokedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_oauth_grants_member")
                .table(OauthGrants::Table)
                .col(OauthGrants::ProgrammeId)
                .col(OauthGrants::MemberId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OauthCodes::Table)
                .col(uuid(OauthCodes::Id).primary_key())
                .col(uuid(OauthCodes::GrantId))
                .col(string_len(OauthCodes::CodeHash, 64).unique_key())
                .col(text(OauthCodes::RedirectUri))
                .col(string_len(OauthCodes::CodeChallenge, 64))
                .col(timestamp_with_time_zone(OauthCodes::ExpiresAt))
                .col(timestamp_with_time_zone_null(OauthCodes::UsedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OauthRefreshTokens::Table)
                .col(uuid(OauthRefreshTokens::Id).primary_key())
                .col(uuid(OauthRefreshTokens::GrantId))
                .col(string_len(OauthRefreshTokens::TokenHash, 64).unique_key())
                .col(timestamp_with_time_zone(OauthRefreshTokens::CreatedAt))
                .col(timestamp_with_time_zone(OauthRefreshTokens::ExpiresAt))
                .col(timestamp_with_time_zone_null(OauthRefreshTokens::UsedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_oauth_refresh_tokens_grant")
                .table(OauthRefreshTokens::Table)
                .col(OauthRefreshTokens::GrantId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OauthRefreshTokens::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(OauthCodes::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(OauthGrants::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(OauthRedirectUris::Table).to_owned())
            .await
    }
}
