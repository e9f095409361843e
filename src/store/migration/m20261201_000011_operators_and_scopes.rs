use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What organizations made before scopes existed keep: they were all single-tenant installs'.
const EXISTING_SCOPES: &str = r#"{"unrestricted":true}"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("organizations")
                    .add_column(text("cloud_scopes").default(EXISTING_SCOPES))
                    .to_owned(),
            )
            .await?;
        // Platform operator keys: bound to no organization (only their hash is kept).
        manager
            .create_table(
                Table::create()
                    .table("operator_keys")
                    .col(string("id").primary_key())
                    .col(string("name"))
                    .col(string("prefix"))
                    .col(string("secret_hash"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("operator_keys", &["prefix"], true)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["operator_keys"]).await?;
        manager.alter_table(Table::alter().table("organizations").drop_column("cloud_scopes").to_owned()).await
    }
}
