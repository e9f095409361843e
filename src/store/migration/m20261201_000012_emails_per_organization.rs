use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// An address is unique within its organization, not across the service: an admin adding a user
/// must not learn that the address already belongs to someone in another organization.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_users_email").table("users").to_owned()).await?;
        manager.create_index(super::index("users", &["organization_id", "email"], true)).await?;
        // Logins start from an address alone.
        manager.create_index(super::index("users", &["email"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_users_email").table("users").to_owned()).await?;
        manager.drop_index(Index::drop().name("ix_users_organization_id_email").table("users").to_owned()).await?;
        manager.create_index(super::index("users", &["email"], true)).await
    }
}
