//! Indexes for the `forget-sign-ins` job, which runs every scheduler round: it deletes
//! rows past their end and grants with no code or refresh token left. Without them each
//! round reads these tables whole (and probes the codes once per grant).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (index, table, column)
const INDEXES: [(&str, &str, &str); 7] = [
    ("ix_oauth_codes_grant", "oauth_codes", "grant_id"),
    ("ix_oauth_codes_expires", "oauth_codes", "expires_at"),
    (
        "ix_oauth_refresh_tokens_expires",
        "oauth_refresh_tokens",
        "expires_at",
    ),
    (
        "ix_member_login_codes_expires",
        "member_login_codes",
        "expires_at",
    ),
    (
        "ix_member_sessions_expires",
        "member_sessions",
        "expires_at",
    ),
    (
        "ix_member_sessions_last_seen",
        "member_sessions",
        "last_seen_at",
    ),
    (
        "ix_signin_request_counters_window",
        "signin_request_counters",
        "window_started_at",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, column) in INDEXES {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(Alias::new(table))
                    .col(Alias::new(column))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in INDEXES {
            m.drop_index(Index::drop().name(name).table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
