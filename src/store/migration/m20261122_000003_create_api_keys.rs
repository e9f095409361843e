use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("api_keys")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("user_id"))
                    .col(string("name"))
                    // The public lookup part of the key; the secret part is only hashed.
                    .col(string("prefix"))
                    .col(string("secret_hash"))
                    .col(string("permissions"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("last_used_at"))
                    .col(timestamp_with_time_zone_null("expires_at"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    .foreign_key(&mut super::cascade("api_keys", "organization_id", "organizations"))
                    .foreign_key(&mut super::cascade("api_keys", "user_id", "users"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("api_keys", &["prefix"], true)).await?;
        manager.create_index(super::index("api_keys", &["user_id", "id"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["api_keys"]).await
    }
}
