use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Rules are found by their claim's token on every worker pass (the claimed rules) and lease
/// renewal: without an index each of those read every rule ever made.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_index(super::index("resource_ips", &["lease_owner"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_resource_ips_lease_owner").table("resource_ips").to_owned()).await
    }
}
