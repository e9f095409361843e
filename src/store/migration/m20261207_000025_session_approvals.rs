use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Where each session's approval stands (JSON: approvals needed, the duration to grant, the
/// deadline, every decision), and what its requester said it is for.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for mut column in [text_null("approval"), text_null("justification"), text_null("ticket")] {
            manager.alter_table(Table::alter().table("sessions").add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["ticket", "justification", "approval"] {
            manager.alter_table(Table::alter().table("sessions").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
