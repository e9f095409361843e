use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("agents")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("name"))
                    // The public lookup part of the credential; the secret part is only hashed.
                    .col(string("prefix"))
                    .col(string("secret_hash"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    // What the agent said in its last hello, and when it last spoke.
                    .col(string("hostname").default(""))
                    .col(string("version").default(""))
                    .col(timestamp_with_time_zone_null("last_seen_at"))
                    // Why the agent could not apply the last state it was sent (empty: it did).
                    .col(string("report_error").default(""))
                    .foreign_key(&mut super::cascade("agents", "organization_id", "organizations"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("agents", &["prefix"], true)).await?;
        manager.create_index(super::index("agents", &["organization_id", "name"], true)).await?;
        // What each agent last reported its firewall holds: one row per resource and address.
        manager
            .create_table(
                Table::create()
                    .table("host_elements")
                    .col(string("agent_id"))
                    .col(string("resource_id"))
                    .col(string("ip_address"))
                    .col(timestamp_with_time_zone("expires_at"))
                    // The sessions holding the address, separated by spaces.
                    .col(string("session_ids"))
                    .col(timestamp_with_time_zone("reported_at"))
                    .primary_key(Index::create().col("agent_id").col("resource_id").col("ip_address"))
                    .foreign_key(&mut super::cascade("host_elements", "agent_id", "agents"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("host_elements", &["resource_id", "ip_address"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["host_elements", "agents"]).await
    }
}
