use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("sessions")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("user_id"))
                    .col(string_null("ipv4_address"))
                    .col(string_null("ipv6_address"))
                    .col(string("status"))
                    .col(timestamp_with_time_zone("started_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("ended_at"))
                    .col(string_null("ended_reason"))
                    .col(big_integer("revision"))
                    // "user|address" while the session is live, NULL afterwards: a unique index on
                    // these enforces one live session per user and address on every backend.
                    .col(string_null("live_ipv4_key"))
                    .col(string_null("live_ipv6_key"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut super::cascade("sessions", "organization_id", "organizations"))
                    .foreign_key(&mut super::cascade("sessions", "user_id", "users"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("sessions", &["organization_id", "id"], false)).await?;
        manager.create_index(super::index("sessions", &["user_id", "status"], false)).await?;
        manager.create_index(super::index("sessions", &["status", "expires_at"], false)).await?;
        manager.create_index(super::index("sessions", &["live_ipv4_key"], true)).await?;
        manager.create_index(super::index("sessions", &["live_ipv6_key"], true)).await?;
        manager
            .create_table(
                Table::create()
                    .table("resource_ips")
                    .col(string("id").primary_key())
                    .col(string("session_id"))
                    .col(string("organization_id"))
                    .col(string("resource_id"))
                    .col(string("resource_name"))
                    .col(small_integer("ip_version"))
                    .col(string("ip_address"))
                    .col(string("status"))
                    .col(string_null("provider_rule_id"))
                    .col(timestamp_with_time_zone_null("applied_at"))
                    .col(timestamp_with_time_zone_null("removed_at"))
                    .col(text_null("error_message"))
                    .col(integer("attempts"))
                    // Work claims: a worker owns the row until lease_expires_at, so replicas never
                    // call the provider twice for the same row at once.
                    .col(string_null("lease_owner"))
                    .col(timestamp_with_time_zone_null("lease_expires_at"))
                    .col(timestamp_with_time_zone("next_attempt_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut super::cascade("resource_ips", "session_id", "sessions"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("resource_ips", &["session_id"], false)).await?;
        manager.create_index(super::index("resource_ips", &["resource_id", "ip_address", "status"], false)).await?;
        manager.create_index(super::index("resource_ips", &["status", "next_attempt_at"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["resource_ips", "sessions"]).await
    }
}
