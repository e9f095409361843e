use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Generated token signing keys, shared by every replica on the same database.
        manager
            .create_table(
                Table::create()
                    .table("signing_keys")
                    .col(string("id").primary_key())
                    .col(string("algorithm"))
                    .col(text("secret"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("retired_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["signing_keys"]).await
    }
}
