use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("users")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("email"))
                    .col(string("full_name"))
                    .col(string("role"))
                    .col(boolean("disabled"))
                    .col(boolean("locked"))
                    .col(integer("failed_login_count"))
                    .col(string_null("password_hash"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut super::cascade("users", "organization_id", "organizations"))
                    .to_owned(),
            )
            .await?;
        // Made per organization by m20261201_000012.
        manager.create_index(super::index("users", &["email"], true)).await?;
        manager.create_index(super::index("users", &["organization_id", "id"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["users"]).await
    }
}
