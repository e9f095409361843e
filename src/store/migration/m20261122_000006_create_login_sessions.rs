use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("login_sessions")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("user_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("active_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(integer("idle_timeout_minutes"))
                    .col(string("ip"))
                    .col(text("user_agent"))
                    .col(string("authenticators"))
                    .col(timestamp_with_time_zone_null("closed_at"))
                    .foreign_key(&mut super::cascade("login_sessions", "user_id", "users"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("login_sessions", &["user_id", "id"], false)).await?;
        manager
            .create_table(
                Table::create()
                    .table("verification_codes")
                    .col(string("id").primary_key())
                    // Null for unknown emails: the code is still recorded so answers look alike.
                    .col(string_null("user_id"))
                    .col(string("email"))
                    .col(string("code_hash"))
                    .col(integer("failed_attempts"))
                    .col(string("client_ip"))
                    .col(string("authenticators"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("consumed_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("verification_codes", &["email", "created_at"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["verification_codes", "login_sessions"]).await
    }
}
