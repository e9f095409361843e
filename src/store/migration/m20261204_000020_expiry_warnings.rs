use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Expiry warnings: `expiry_warned_for` is the end a session's warning was sent for (an
/// extension moves the end, so the next warning is due again), and users may turn the mail off.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("sessions")
                    .add_column(timestamp_with_time_zone_null("expiry_warned_for"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table("users").add_column(boolean("expiry_emails").default(true)).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("users").drop_column("expiry_emails").to_owned()).await?;
        manager.alter_table(Table::alter().table("sessions").drop_column("expiry_warned_for").to_owned()).await
    }
}
