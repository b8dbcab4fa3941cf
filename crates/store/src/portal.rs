//! Entities of the member portal's sign-in (migration `m20261203_000500_portal`).

pub mod member_login_code {
    use sea_orm::entity::prelude::*;

    /// The one live sign-in code of a member (a new request replaces it).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "member_login_codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub programme_id: Uuid,
        pub member_id: Uuid,
        /// Hex of 16 random bytes, the HMAC key of this code.
        pub salt: String,
        /// Hex of HMAC-SHA-256(salt, code).
        pub code_hash: String,
        /// Tries so far, right or wrong; none is checked once it reaches the limit.
        pub attempts: i32,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod member_session {
    use sea_orm::entity::prelude::*;

    /// Also the JSON of a session kept in Redis (`crate::sessions`).
    #[derive(
        Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize,
    )]
    #[sea_orm(table_name = "member_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Hex of the SHA-256 of the cookie's token; the token itself is never stored.
        pub token_hash: String,
        pub programme_id: Uuid,
        pub member_id: Uuid,
        /// The partner whose link the member came through (branding only).
        pub partner_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
        pub last_seen_at: DateTimeUtc,
        /// The absolute end, however active the session is.
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signin_request_counter {
    use sea_orm::entity::prelude::*;

    /// Code requests per key (an address or a source) in a fixed window.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signin_request_counters")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_hash: String,
        pub window_started_at: DateTimeUtc,
        pub requests: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
