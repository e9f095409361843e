use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Hits per key in the current fixed window, shared by every replica.
        manager
            .create_table(
                Table::create()
                    .table("rate_limits")
                    .col(string("key").primary_key())
                    .col(timestamp_with_time_zone("window_start"))
                    .col(integer("hits"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["rate_limits"]).await
    }
}
