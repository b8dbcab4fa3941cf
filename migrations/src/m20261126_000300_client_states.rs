//! API clients get a life after creation: disabled, re-enabled, rotated, deleted.
//!
//! `api_clients.status` (`active` or `disabled`) and `generation` (bumped when a
//! client's existing tokens must stop working: disable, enable, rotation without overlap)
//! are checked on every request from memory; `programmes.credentials_version` is bumped
//! with every such change, and each process polls it (like `terms_version`) to drop what
//! it holds. `previous_secret_hash` keeps the secret a rotation replaced, accepted until
//! `previous_secret_expires_at`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Programmes {
    Table,
    CredentialsVersion,
}

#[derive(DeriveIden)]
enum ApiClients {
    Table,
    Status,
    Generation,
    PreviousSecretHash,
    PreviousSecretExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Programmes::Table)
                .add_column(big_integer(Programmes::CredentialsVersion).default(0))
                .to_owned(),
        )
        .await?;
        // SQLite alters one column per statement.
        let columns = [
            string(ApiClients::Status).default("active").to_owned(),
            big_integer(ApiClients::Generation).default(0).to_owned(),
            text_null(ApiClients::PreviousSecretHash).to_owned(),
            timestamp_with_time_zone_null(ApiClients::PreviousSecretExpiresAt).to_owned(),
        ];
        for mut column in columns {
            m.alter_table(
                Table::alter()
                    .table(ApiClients::Table)
                    .add_column(&mut column)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ApiClients::PreviousSecretExpiresAt,
            ApiClients::PreviousSecretHash,
            ApiClients::Generation,
            ApiClients::Status,
        ] {
            m.alter_table(
                Table::alter()
                    .table(ApiClients::Table)
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table(Programmes::Table)
                .drop_column(Programmes::CredentialsVersion)
                .to_owned(),
        )
        .await
    }
}
