use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("resources")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("name"))
                    .col(text("description"))
                    .col(string("provider_kind"))
                    .col(text("provider_config"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut super::cascade("resources", "organization_id", "organizations"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("resources", &["organization_id", "name"], true)).await?;
        manager
            .create_table(
                Table::create()
                    .table("resource_assignments")
                    .col(string("resource_id"))
                    .col(string("user_id"))
                    .col(string("organization_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("resource_id").col("user_id"))
                    .foreign_key(&mut super::cascade("resource_assignments", "resource_id", "resources"))
                    .foreign_key(&mut super::cascade("resource_assignments", "user_id", "users"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("resource_assignments", &["user_id"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["resource_assignments", "resources"]).await
    }
}
