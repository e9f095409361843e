//! Schema migrations, applied in name order. Each one only uses the schema builder, so the
//! same migration runs on SQLite and PostgreSQL, and each one can be undone.

use sea_orm_migration::prelude::*;

mod m20261122_000001_create_organizations;
mod m20261122_000002_create_users;
mod m20261122_000003_create_api_keys;
mod m20261122_000004_create_resources;
mod m20261122_000005_create_sessions;
mod m20261122_000006_create_login_sessions;
mod m20261122_000007_create_audit_events;
mod m20261122_000008_create_signing_keys;
mod m20261123_000009_create_resource_leases;
mod m20261123_000010_create_rate_limits;
mod m20261201_000011_operators_and_scopes;
mod m20261201_000012_emails_per_organization;
mod m20261201_000013_temporary_locks;
mod m20261201_000014_api_key_parents;
mod m20261202_000015_session_heartbeats;
mod m20261202_000016_address_changes;
mod m20261203_000017_resource_reconciles;
mod m20261203_000018_rule_claims;
mod m20261204_000019_webhooks;
mod m20261204_000020_expiry_warnings;
mod m20261204_000021_resource_checks;
mod m20261206_000022_webhook_owners;
mod m20261207_000023_single_sign_on;
mod m20261207_000024_agents;
mod m20261207_000024_approval_policies;
mod m20261207_000025_session_approvals;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_organizations::Migration),
            Box::new(m20261122_000002_create_users::Migration),
            Box::new(m20261122_000003_create_api_keys::Migration),
            Box::new(m20261122_000004_create_resources::Migration),
            Box::new(m20261122_000005_create_sessions::Migration),
            Box::new(m20261122_000006_create_login_sessions::Migration),
            Box::new(m20261122_000007_create_audit_events::Migration),
            Box::new(m20261122_000008_create_signing_keys::Migration),
            Box::new(m20261123_000009_create_resource_leases::Migration),
            Box::new(m20261123_000010_create_rate_limits::Migration),
            Box::new(m20261201_000011_operators_and_scopes::Migration),
            Box::new(m20261201_000012_emails_per_organization::Migration),
            Box::new(m20261201_000013_temporary_locks::Migration),
            Box::new(m20261201_000014_api_key_parents::Migration),
            Box::new(m20261202_000015_session_heartbeats::Migration),
            Box::new(m20261202_000016_address_changes::Migration),
            Box::new(m20261203_000017_resource_reconciles::Migration),
            Box::new(m20261203_000018_rule_claims::Migration),
            Box::new(m20261204_000019_webhooks::Migration),
            Box::new(m20261204_000020_expiry_warnings::Migration),
            Box::new(m20261204_000021_resource_checks::Migration),
            Box::new(m20261206_000022_webhook_owners::Migration),
            Box::new(m20261207_000023_single_sign_on::Migration),
            Box::new(m20261207_000024_agents::Migration),
            Box::new(m20261207_000024_approval_policies::Migration),
            Box::new(m20261207_000025_session_approvals::Migration),
        ]
    }
}

/// A foreign key from `table.column` to `target.id` that removes the row with its target.
fn cascade(table: &'static str, column: &'static str, target: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_{column}"))
        .from(table, column)
        .to(target, "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

/// An index named after its table and columns.
fn index(table: &'static str, columns: &[&'static str], unique: bool) -> IndexCreateStatement {
    let mut statement = Index::create();
    statement.name(format!("ix_{table}_{}", columns.join("_"))).table(table);
    for column in columns {
        statement.col(*column);
    }
    if unique {
        statement.unique();
    }
    statement.to_owned()
}

/// Drops tables in the given order (children before parents).
async fn drop_tables(manager: &SchemaManager<'_>, tables: &[&'static str]) -> Result<(), DbErr> {
    for table in tables {
        manager.drop_table(Table::drop().table(*table).to_owned()).await?;
    }
    Ok(())
}
