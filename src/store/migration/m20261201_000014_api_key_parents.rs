use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A key created with a key is its child: it expires no later than its parent and is revoked
/// with it.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("api_keys").add_column(string_null("parent_id")).to_owned()).await?;
        manager.create_index(super::index("api_keys", &["parent_id"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_api_keys_parent_id").table("api_keys").to_owned()).await?;
        manager.alter_table(Table::alter().table("api_keys").drop_column("parent_id").to_owned()).await
    }
}
