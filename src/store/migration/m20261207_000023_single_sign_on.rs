use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Single sign-on: each organization's identity providers, the link from a provider's subject
/// to a user (with the groups it last reported and its sealed refresh token), the logins in
/// flight between StartSsoLogin and the provider's callback, and which assignments a group
/// mapping made (those it may take back; an admin's own are never touched).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("identity_providers")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("display_name"))
                    .col(text("issuer_url"))
                    .col(text("client_id"))
                    .col(text_null("client_secret_sealed"))
                    .col(text("scopes"))
                    .col(string("groups_claim"))
                    .col(text("allowed_email_domains"))
                    .col(text("group_mappings"))
                    .col(boolean("jit_users"))
                    .col(boolean("sso_required"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut super::cascade("identity_providers", "organization_id", "organizations"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("identity_providers", &["organization_id", "id"], false)).await?;
        manager
            .create_table(
                Table::create()
                    .table("user_identities")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("user_id"))
                    .col(string("identity_provider_id"))
                    .col(string("subject"))
                    .col(text("groups"))
                    .col(string_null("mapped_role"))
                    .col(text_null("refresh_token_sealed"))
                    .col(timestamp_with_time_zone("checked_at"))
                    .col(timestamp_with_time_zone_null("check_failing_since"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut super::cascade("user_identities", "user_id", "users"))
                    .foreign_key(&mut super::cascade("user_identities", "identity_provider_id", "identity_providers"))
                    .to_owned(),
            )
            .await?;
        // A provider's subject is one user, and a user has one subject at each provider.
        manager.create_index(super::index("user_identities", &["identity_provider_id", "subject"], true)).await?;
        manager.create_index(super::index("user_identities", &["identity_provider_id", "user_id"], true)).await?;
        manager.create_index(super::index("user_identities", &["user_id"], false)).await?;
        manager.create_index(super::index("user_identities", &["checked_at"], false)).await?;
        manager
            .create_table(
                Table::create()
                    .table("sso_logins")
                    .col(string("id").primary_key())
                    .col(string("organization_id"))
                    .col(string("identity_provider_id"))
                    .col(string("poll_secret_hash"))
                    .col(string("state_hash"))
                    .col(text("nonce"))
                    .col(text("pkce_verifier_sealed"))
                    .col(string("client_ip"))
                    .col(text("user_agent"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("returned_at"))
                    .col(string_null("login_session_id"))
                    .col(string_null("failure_reason"))
                    .col(text_null("failure_message"))
                    .col(timestamp_with_time_zone_null("delivered_at"))
                    .foreign_key(&mut super::cascade("sso_logins", "identity_provider_id", "identity_providers"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(super::index("sso_logins", &["state_hash"], true)).await?;
        manager.create_index(super::index("sso_logins", &["expires_at"], false)).await?;
        manager
            .alter_table(Table::alter().table("resource_assignments").add_column(string_null("mapped_by")).to_owned())
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("resource_assignments").drop_column("mapped_by").to_owned()).await?;
        super::drop_tables(manager, &["sso_logins", "user_identities", "identity_providers"]).await
    }
}
