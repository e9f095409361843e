use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Who is writing to a resource's firewall now: provider writes to one resource never
        // interleave, whichever replica makes them (GCP replaces whole source lists).
        manager
            .create_table(
                Table::create()
                    .table("resource_leases")
                    .col(string("resource_id").primary_key())
                    .col(string("holder"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .foreign_key(&mut super::cascade("resource_leases", "resource_id", "resources"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::drop_tables(manager, &["resource_leases"]).await
    }
}
