use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Failed logins lock an account for a while (growing with each lockout), never for good: a
/// stranger who can guess at codes can slow a login down but not shut its owner out.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table("users").add_column(timestamp_with_time_zone_null("locked_until")).to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table("users").add_column(integer("lockouts").default(0)).to_owned())
            .await?;
        // Accounts locked for good until now: locked for the longest while instead.
        let until = chrono::Utc::now() + chrono::TimeDelta::hours(24);
        manager
            .exec_stmt(
                Query::update()
                    .table("users")
                    .value("locked_until", until)
                    .value("lockouts", 1)
                    .and_where(Expr::col("locked").eq(true))
                    .to_owned(),
            )
            .await?;
        manager.alter_table(Table::alter().table("users").drop_column("locked").to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table("users").add_column(boolean("locked").default(false)).to_owned())
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table("users")
                    .value("locked", true)
                    .and_where(Expr::col("locked_until").is_not_null())
                    .to_owned(),
            )
            .await?;
        for column in ["locked_until", "lockouts"] {
            manager.alter_table(Table::alter().table("users").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
