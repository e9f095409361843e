use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// When any replica last compared a resource's firewall with its rules, so one replica's
/// reconcile counts for all and the least recently reconciled go first.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table("resources").add_column(timestamp_with_time_zone_null("reconciled_at")).to_owned(),
            )
            .await?;
        manager.create_index(super::index("resources", &["reconciled_at"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_resources_reconciled_at").table("resources").to_owned()).await?;
        manager.alter_table(Table::alter().table("resources").drop_column("reconciled_at").to_owned()).await
    }
}
