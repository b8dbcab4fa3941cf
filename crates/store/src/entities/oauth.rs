//! OAuth 2.0 authorization code + PKCE for members (see `app::oidc` and the migration
//! `m20261203_000500_oauth`).

pub mod oauth_redirect_uri {
    use sea_orm::entity::prelude::*;

    /// A redirect URI registered for a partner's client, compared byte for byte.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oauth_redirect_uris")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        /// `api_clients.id`.
        pub api_client_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub uri: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod oauth_grant {
    use sea_orm::entity::prelude::*;

    /// One sign-in of one member at one client: its code and every refresh token and
    /// access token that came of it belong to it, and die with it.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oauth_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub api_client_id: Uuid,
        pub member_id: Uuid,
        /// Space-separated, as granted (`openid member`).
        pub scope: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub nonce: Option<String>,
        /// When the member signed in (the ID token's `auth_time`).
        pub auth_time: DateTimeUtc,
        pub created_at: DateTimeUtc,
        /// Set when a code or refresh token was replayed: the whole grant is refused.
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod oauth_code {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oauth_codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub grant_id: Uuid,
        /// SHA-256 (hex) of the code; the code itself is never stored.
        #[sea_orm(unique)]
        pub code_hash: String,
        #[sea_orm(column_type = "Text")]
        pub redirect_uri: String,
        /// The PKCE S256 challenge (base64url of SHA-256 of the verifier).
        pub code_challenge: String,
        pub expires_at: DateTimeUtc,
        /// Set when exchanged; a second exchange revokes the grant.
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod oauth_refresh_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oauth_refresh_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub grant_id: Uuid,
        /// SHA-256 (hex) of the token; the token itself is never stored.
        #[sea_orm(unique)]
        pub token_hash: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        /// Set when rotated (used once); a second use revokes the grant.
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
