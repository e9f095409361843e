use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Periodic resource checks: when a resource was last checked (on any replica, so replicas
/// check it once an interval between them) and what the check found.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        let columns =
            [timestamp_with_time_zone_null("checked_at"), string_null("check_status"), text_null("check_message")];
        for mut column in columns {
            manager.alter_table(Table::alter().table("resources").add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["check_message", "check_status", "checked_at"] {
            manager.alter_table(Table::alter().table("resources").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
