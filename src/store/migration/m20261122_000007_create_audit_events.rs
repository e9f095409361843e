use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("audit_events")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(timestamp_with_time_zone("time"))
                    .col(string("event_type"))
                    .col(string_null("actor_id"))
                    .col(string_null("actor_api_key_id"))
                    .col(string("target_type"))
                    .col(string("target_id"))
                    .col(text("details"))
                    .col(string_null("client_ip"))
                    .foreign_key(&mut super::cascade("audit_events", "organization_id", "organizations"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("audit_events", &["organization_id", "id"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["audit_events"]).await
    }
}
