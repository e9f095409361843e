use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Webhooks and their deliveries. The audit trail is the outbox: every event is written in the
/// transaction of the change it records, and `dispatched_at` says whether the dispatcher has
/// turned it into deliveries yet. Events recorded before webhooks existed count as dispatched.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("audit_events")
                    .add_column(timestamp_with_time_zone_null("dispatched_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table("audit_events")
                    .value("dispatched_at", Expr::col("time"))
                    .and_where(Expr::col("dispatched_at").is_null())
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("audit_events", &["dispatched_at"], false)).await?;
        manager
            .create_table(
                Table::create()
                    .table("webhooks")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(text("url"))
                    .col(text("event_types"))
                    .col(string("description"))
                    .col(text("secret_sealed"))
                    .col(text_null("previous_secret_sealed"))
                    .col(timestamp_with_time_zone_null("previous_secret_expires_at"))
                    .col(timestamp_with_time_zone_null("disabled_at"))
                    .col(string_null("disabled_reason"))
                    .col(timestamp_with_time_zone_null("failing_since"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut super::cascade("webhooks", "organization_id", "organizations"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("webhooks", &["organization_id", "id"], false)).await?;
        manager
            .create_table(
                Table::create()
                    .table("webhook_deliveries")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("webhook_id"))
                    .col(string("event_id"))
                    .col(string("event_type"))
                    .col(text("payload"))
                    .col(string("status"))
                    .col(integer("attempts"))
                    .col(timestamp_with_time_zone("next_attempt_at"))
                    .col(timestamp_with_time_zone("give_up_at"))
                    .col(integer_null("last_response_code"))
                    .col(text_null("last_error"))
                    .col(string_null("lease_owner"))
                    .col(timestamp_with_time_zone_null("lease_expires_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("delivered_at"))
                    .foreign_key(&mut super::cascade("webhook_deliveries", "webhook_id", "webhooks"))
                    .to_owned(),
            )
            .await?;
        // One delivery per webhook and event, whoever fans the event out and however often.
        manager.create_index(super::index("webhook_deliveries", &["webhook_id", "event_id"], true)).await?;
        manager.create_index(super::index("webhook_deliveries", &["status", "next_attempt_at"], false)).await?;
        manager.create_index(super::index("webhook_deliveries", &["webhook_id", "id"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["webhook_deliveries", "webhooks"]).await?;
        manager
            .drop_index(Index::drop().name("ix_audit_events_dispatched_at").table("audit_events").to_owned())
            .await?;
        manager.alter_table(Table::alter().table("audit_events").drop_column("dispatched_at").to_owned()).await
    }
}
