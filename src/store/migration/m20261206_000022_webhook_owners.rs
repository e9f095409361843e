use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Who owns each webhook: the user (and the API key, if one was used) who last set where it
/// posts and what. Its events are those its owner may still read, checked when they are
/// delivered. Existing webhooks take their owner from their latest `webhook.created` or
/// `webhook.updated` audit event.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for mut column in [string_null("owner_user_id"), string_null("owner_api_key_id")] {
            manager.alter_table(Table::alter().table("webhooks").add_column(&mut column).to_owned()).await?;
        }
        for (column, actor) in [("owner_user_id", "actor_id"), ("owner_api_key_id", "actor_api_key_id")] {
            let creation = Query::select()
                .column(actor)
                .from("audit_events")
                .and_where(Expr::col(("audit_events", "event_type")).is_in(["webhook.created", "webhook.updated"]))
                .and_where(Expr::col(("audit_events", "target_id")).equals(("webhooks", "id")))
                .order_by(("audit_events", "time"), Order::Desc)
                .limit(1)
                .to_owned();
            manager
                .exec_stmt(
                    Query::update()
                        .table("webhooks")
                        .value(column, Expr::SubQuery(None, Box::new(creation.into())))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["owner_api_key_id", "owner_user_id"] {
            manager.alter_table(Table::alter().table("webhooks").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
