use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A session that changes address keeps its old rules until their replacements are applied:
/// each old rule names the new one that takes its place.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table("resource_ips").add_column(string_null("replaced_by")).to_owned())
            .await?;
        manager.create_index(super::index("resource_ips", &["replaced_by"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_resource_ips_replaced_by").table("resource_ips").to_owned()).await?;
        manager.alter_table(Table::alter().table("resource_ips").drop_column("replaced_by").to_owned()).await
    }
}
