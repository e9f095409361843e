use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A session bound to its client: it ends when no watch of its owner has been open for
/// `heartbeat_seconds`, that is once `heartbeat_due_at` passes.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [integer_null("heartbeat_seconds"), timestamp_with_time_zone_null("heartbeat_due_at")] {
            manager.alter_table(Table::alter().table("sessions").add_column(column).to_owned()).await?;
        }
        manager.create_index(super::index("sessions", &["status", "heartbeat_due_at"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_sessions_status_heartbeat_due_at").table("sessions").to_owned())
            .await?;
        for column in ["heartbeat_seconds", "heartbeat_due_at"] {
            manager.alter_table(Table::alter().table("sessions").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
