//! The store on every configured backend: migrations, error translation, exact round trips.

use crate::common::{TestDb, each_backend};
use portcullis::domain::{new_id, now};
use portcullis::store::entity::{StoredProvider, organization, resource, user};
use portcullis::store::{self, Migrator, StoreError, queries};
use sea_orm::ConnectionTrait;
use sea_orm_migration::MigratorTrait;
use std::collections::HashMap;

const TABLES: &[&str] = &[
    "organizations",
    "users",
    "api_keys",
    "resources",
    "resource_assignments",
    "sessions",
    "resource_ips",
    "login_sessions",
    "verification_codes",
    "audit_events",
    "signing_keys",
    "resource_leases",
    "rate_limits",
];

async fn table_exists(db: &sea_orm::DatabaseConnection, table: &str) -> bool {
    let sql = match db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => format!("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table}'"),
        _ => format!(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '{table}'"
        ),
    };
    db.query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql)).await.unwrap().is_some()
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    each_backend(|test_db: TestDb| async move {
        let db = test_db.connect().await;
        store::migrate(&db).await.unwrap();
        for table in TABLES {
            assert!(table_exists(&db, table).await, "{}: {table} after up", test_db.backend);
        }
        assert!(Migrator::get_pending_migrations(&db).await.unwrap().is_empty());
        Migrator::down(&db, None).await.unwrap();
        for table in TABLES {
            assert!(!table_exists(&db, table).await, "{}: {table} after down", test_db.backend);
        }
        store::migrate(&db).await.unwrap();
        assert!(table_exists(&db, "audit_events").await);
        // Running up again is a no-op.
        store::migrate(&db).await.unwrap();
    })
    .await;
}

/// A migrated database holding one organization.
async fn migrated_with_organization(test_db: &TestDb) -> (sea_orm::DatabaseConnection, organization::Model) {
    let db = test_db.connect().await;
    store::migrate(&db).await.unwrap();
    let organization = queries::organizations::insert(&db, organization_row("Acme")).await.unwrap();
    (db, organization)
}

fn organization_row(name: &str) -> organization::Model {
    let at = now();
    organization::Model {
        id: new_id(),
        name: name.into(),
        tier: portcullis::domain::Tier::Free,
        suspended: false,
        allow_private_addresses: false,
        created_at: at,
        updated_at: at,
        cloud_scopes: "{}".into(),
    }
}

fn user_row(organization_id: &str, email: &str) -> user::Model {
    user::Model::new_member(organization_id, email.into(), "Full Name".into(), portcullis::domain::Role::User, now())
}

fn resource_row(organization_id: &str) -> resource::Model {
    resource_row_named(organization_id, "bastion")
}

fn resource_row_named(organization_id: &str, name: &str) -> resource::Model {
    let at = now();
    resource::Model {
        id: new_id(),
        organization_id: organization_id.into(),
        name: name.into(),
        description: String::new(),
        provider_kind: portcullis::domain::ProviderKind::Memory,
        provider_config: StoredProvider::from_text(r#"{"kind":"memory","latency_ms":0,"fail_addresses":[]}"#.into()),
        created_at: at,
        updated_at: at,
        reconciled_at: None,
        checked_at: None,
        check_status: None,
        check_message: None,
        approval: None,
    }
}

#[tokio::test]
async fn database_errors_are_translated_where_they_arise() {
    each_backend(|test_db: TestDb| async move {
        let (db, org) = migrated_with_organization(&test_db).await;
        queries::users::insert(&db, user_row(&org.id, "a@example.com")).await.unwrap();

        let duplicate = queries::users::insert(&db, user_row(&org.id, "a@example.com")).await.unwrap_err();
        assert!(matches!(duplicate, StoreError::AlreadyExists(_)), "{}: {duplicate:?}", test_db.backend);

        let orphan = queries::users::insert(&db, user_row(&new_id(), "b@example.com")).await.unwrap_err();
        assert!(matches!(orphan, StoreError::MissingReference(_)), "{}: {orphan:?}", test_db.backend);

        let missing = queries::users::get(&db, &org.id, &new_id()).await.unwrap_err();
        assert!(matches!(missing, StoreError::NotFound));
    })
    .await;
}

#[tokio::test]
async fn rows_round_trip_exactly() {
    each_backend(|test_db: TestDb| async move {
        let db = test_db.connect().await;
        store::migrate(&db).await.unwrap();
        let written = queries::organizations::insert(&db, organization_row("Zoë & Co — ünïcode")).await.unwrap();
        let read = queries::organizations::get(&db, &written.id).await.unwrap();
        assert_eq!(read, written, "{}: timestamps and text come back as written", test_db.backend);
        assert_eq!(queries::organizations::count(&db).await.unwrap(), 1);
    })
    .await;
}

/// Replicas take turns on a resource: a lease is exclusive until it expires or is released.
#[tokio::test]
async fn resource_leases_are_exclusive_until_expired_or_released() {
    use portcullis::store::queries::resource_leases::{acquire, release};
    each_backend(|test_db: TestDb| async move {
        let (db, organization) = migrated_with_organization(&test_db).await;
        let resource = queries::resources::insert(&db, resource_row(&organization.id)).await.unwrap();
        let (id, at) = (resource.id.as_str(), now());
        let later = |secs: i64| at + chrono::TimeDelta::seconds(secs);
        assert!(acquire(&db, id, "replica-a", at, later(30)).await.unwrap(), "a free lease is taken");
        assert!(!acquire(&db, id, "replica-b", at, later(30)).await.unwrap(), "a held lease is not");
        assert!(acquire(&db, id, "replica-a", at, later(60)).await.unwrap(), "its holder renews it");
        release(&db, id, "replica-b").await.unwrap();
        assert!(!acquire(&db, id, "replica-b", later(59), later(90)).await.unwrap(), "only the holder releases");
        assert!(acquire(&db, id, "replica-b", later(61), later(90)).await.unwrap(), "an expired lease is taken over");
        release(&db, id, "replica-b").await.unwrap();
        assert!(acquire(&db, id, "replica-a", later(62), later(90)).await.unwrap(), "a released lease is free");
    })
    .await;
}

/// Replicas share the reconciler's work: a resource one of them reconciled is not claimed
/// again until its interval has passed, the never reconciled come first, and each replica is
/// offered only resources of the providers it was built with.
#[tokio::test]
async fn a_reconcile_claimed_by_one_replica_counts_for_all() {
    use portcullis::store::queries::resources::{Round, claim, least_recently};
    each_backend(|test_db: TestDb| async move {
        let (db, organization) = migrated_with_organization(&test_db).await;
        let first = queries::resources::insert(&db, resource_row(&organization.id)).await.unwrap();
        let second = resource_row_named(&organization.id, "jump");
        let second = queries::resources::insert(&db, second).await.unwrap();
        let at = now();
        let later = |secs: i64| at + chrono::TimeDelta::seconds(secs);
        let order = async |db: &sea_orm::DatabaseConnection| -> Vec<String> {
            least_recently(db, Round::Reconcile, &[portcullis::domain::ProviderKind::Memory], 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert!(
            claim(&db, Round::Reconcile, &first.id, at, later(-60)).await.unwrap(),
            "{}: never reconciled",
            test_db.backend
        );
        // Another replica that read it as due a moment ago finds it taken.
        assert!(!claim(&db, Round::Reconcile, &first.id, later(1), later(-59)).await.unwrap(), "{}", test_db.backend);
        assert_eq!(order(&db).await, vec![second.id.clone(), first.id.clone()], "the never reconciled first");
        assert!(claim(&db, Round::Reconcile, &second.id, later(2), later(-58)).await.unwrap());
        assert_eq!(order(&db).await, vec![first.id.clone(), second.id.clone()], "then the least recently");
        // An interval on, it is due again, for whichever replica comes first.
        assert!(claim(&db, Round::Reconcile, &first.id, later(61), later(1)).await.unwrap(), "{}", test_db.backend);
        assert!(
            least_recently(
                &db,
                Round::Reconcile,
                &[portcullis::domain::ProviderKind::Aws, portcullis::domain::ProviderKind::Gcp],
                10
            )
            .await
            .unwrap()
            .is_empty(),
            "memory only"
        );
    })
    .await;
}

/// Checks take turns like reconciles, apart from them; a finding about a firewall reconfigured
/// while it was checked is dropped, and saving answers the status it replaced.
#[tokio::test]
async fn resource_checks_take_turns_apart_from_reconciles_and_a_stale_finding_is_dropped() {
    use portcullis::store::queries::resources::{Round, claim, least_recently, save_check};
    each_backend(|test_db: TestDb| async move {
        let (db, organization) = migrated_with_organization(&test_db).await;
        let first = queries::resources::insert(&db, resource_row(&organization.id)).await.unwrap();
        let second = queries::resources::insert(&db, resource_row_named(&organization.id, "jump")).await.unwrap();
        let at = now();
        assert!(claim(&db, Round::Reconcile, &second.id, at, at).await.unwrap());
        assert!(claim(&db, Round::Check, &first.id, at, at).await.unwrap(), "{}: its own turn", test_db.backend);
        let order = least_recently(&db, Round::Check, &[portcullis::domain::ProviderKind::Memory], 10).await.unwrap();
        assert_eq!(order.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [second.id.as_str(), first.id.as_str()]);

        let saved = save_check(&db, &first.id, &first.provider_config, "ACCESS_DENIED", "no").await.unwrap();
        assert_eq!(saved, Some(None), "{}: nothing checked before", test_db.backend);
        let saved = save_check(&db, &first.id, &first.provider_config, "OK", "fine").await.unwrap();
        assert_eq!(saved, Some(Some("ACCESS_DENIED".into())));
        let elsewhere = StoredProvider::from_text(r#"{"kind":"memory","latency_ms":5}"#.into());
        let stale = save_check(&db, &first.id, &elsewhere, "OK", "x").await.unwrap();
        assert_eq!(stale, None, "{}: about another firewall", test_db.backend);
        let stored = queries::resources::get_by_id(&db, &first.id).await.unwrap();
        assert_eq!((stored.check_status.as_deref(), stored.check_message.as_deref()), (Some("OK"), Some("fine")));
    })
    .await;
}

#[tokio::test]
async fn racing_failed_logins_are_all_counted_and_lock_once() {
    use portcullis::store::queries::users::{count_failed_login, lock};
    each_backend(|test_db: TestDb| async move {
        let (db, organization) = migrated_with_organization(&test_db).await;
        let user = queries::users::insert(&db, user_row(&organization.id, "ada@example.com")).await.unwrap();
        let failures = (0..20).map(|_| {
            let (db, id) = (db.clone(), user.id.clone());
            tokio::spawn(async move { count_failed_login(&db, &id, now()).await.unwrap().failed_login_count })
        });
        let mut counts: Vec<i32> = futures::future::join_all(failures).await.into_iter().map(Result::unwrap).collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=20).collect::<Vec<_>>(), "{}: every failure counted once", test_db.backend);

        let until = now() + chrono::TimeDelta::minutes(15);
        assert!(lock(&db, &user.id, now(), until).await.unwrap(), "the first lock locks");
        assert!(!lock(&db, &user.id, now(), until).await.unwrap(), "a second one finds it locked");
        let locked = queries::users::get_any(&db, &user.id).await.unwrap();
        assert!(locked.is_locked(now()) && !locked.is_locked(until), "{}: locked until then", test_db.backend);
        assert_eq!((locked.lockouts, locked.failed_login_count), (1, 0), "the lockout is counted, failures start over");
        assert!(lock(&db, &user.id, until, until + chrono::TimeDelta::minutes(30)).await.unwrap(), "over: locks again");
    })
    .await;
}

/// A session of `user_id` in `status` until `expires_at`, started now.
fn session_row(
    organization_id: &str,
    user_id: &str,
    status: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> portcullis::store::entity::session::Model {
    let at = now();
    portcullis::store::entity::session::Model {
        id: new_id(),
        organization_id: organization_id.into(),
        user_id: user_id.into(),
        ipv4_address: Some("203.0.113.1".into()),
        ipv6_address: None,
        status: status.parse().expect("a session status"),
        started_at: at,
        expires_at,
        ended_at: None,
        ended_reason: None,
        revision: 1,
        live_ipv4_key: None,
        live_ipv6_key: None,
        created_at: at,
        updated_at: at,
        heartbeat_seconds: None,
        heartbeat_due_at: None,
        expiry_warned_for: None,
        approval: None,
        justification: None,
        ticket: None,
    }
}

/// The expiry scheduler sleeps until the first end of any live session, whatever its status:
/// its expiry or its heartbeat, whichever comes first; ended sessions do not count.
#[tokio::test]
async fn the_next_expiry_is_the_first_end_of_any_live_session() {
    use portcullis::store::entity::session;
    use portcullis::store::queries::sessions::{insert_all, next_expiry};
    each_backend(|test_db: TestDb| async move {
        let (db, organization) = migrated_with_organization(&test_db).await;
        let user = queries::users::insert(&db, user_row(&organization.id, "a@example.com")).await.unwrap();
        assert_eq!(next_expiry(&db).await.unwrap(), None, "{}: nothing live", test_db.backend);
        let at = now();
        let hours = |hours: i64| at + chrono::TimeDelta::hours(hours);
        let row = |status: &str, expires_at| session_row(&organization.id, &user.id, status, expires_at);
        let ended = row("EXPIRED", hours(-1));
        let pending = row("PENDING", hours(4));
        let active = row("ACTIVE", hours(3));
        let partial = session::Model { heartbeat_due_at: Some(hours(5)), ..row("PARTIAL", hours(6)) };
        insert_all(&db, vec![ended, pending, active, partial], vec![]).await.unwrap();
        let next = next_expiry(&db).await.unwrap().map(|next| next.timestamp_millis());
        assert_eq!(next, Some(hours(3).timestamp_millis()), "{}: the active one's expiry", test_db.backend);
        let beating = session::Model { heartbeat_due_at: Some(hours(2)), ..row("PENDING", hours(7)) };
        insert_all(&db, vec![beating], vec![]).await.unwrap();
        let next = next_expiry(&db).await.unwrap().map(|next| next.timestamp_millis());
        assert_eq!(next, Some(hours(2).timestamp_millis()), "{}: a heartbeat due sooner", test_db.backend);
    })
    .await;
}

/// The worker saves what it did to claimed rules (rows it read in the same transaction) in one
/// statement: only rules whose lease is still its own, and only the columns it works on.
#[tokio::test]
async fn claimed_rules_are_saved_only_under_their_lease() {
    use portcullis::store::entity::resource_ip;
    use portcullis::store::queries::sessions;
    each_backend(|test_db: TestDb| async move {
        let (db, organization) = migrated_with_organization(&test_db).await;
        let user = queries::users::insert(&db, user_row(&organization.id, "a@example.com")).await.unwrap();
        let resource = queries::resources::insert(&db, resource_row(&organization.id)).await.unwrap();
        let at = now();
        let session = session_row(&organization.id, &user.id, "PENDING", at + chrono::TimeDelta::hours(1));
        let rule = |address: &str, lease_owner: &str| resource_ip::Model {
            lease_owner: Some(lease_owner.into()),
            lease_expires_at: Some(at + chrono::TimeDelta::seconds(30)),
            ..rule_row(&session, &resource, address, "PENDING", at)
        };
        let (mine, theirs) = (rule("203.0.113.1", "claim-a"), rule("203.0.113.2", "claim-b"));
        sessions::insert_all(&db, vec![session.clone()], vec![mine.clone(), theirs.clone()]).await.unwrap();
        let applied = |rule: &resource_ip::Model| resource_ip::Model {
            status: portcullis::domain::ResourceIpStatus::Applied,
            provider_rule_id: Some(format!("rule-{}", rule.ip_address)),
            applied_at: Some(at),
            lease_owner: None,
            lease_expires_at: None,
            // Not the worker's to write: stays as stored.
            resource_name: "renamed".into(),
            ..rule.clone()
        };
        let saved = sessions::save_claimed_rules(&db, "claim-a", vec![applied(&mine), applied(&theirs)]).await.unwrap();
        assert_eq!(saved.into_iter().collect::<Vec<_>>(), std::slice::from_ref(&mine.id), "{}", test_db.backend);
        let stored = sessions::rules_of(&db, &session.id).await.unwrap();
        let find = |id: &str| stored.iter().find(|row| row.id == id).unwrap().clone();
        assert_eq!(find(&mine.id), resource_ip::Model { resource_name: mine.resource_name.clone(), ..applied(&mine) });
        assert_eq!(find(&theirs.id), theirs, "another claim's rule is untouched");
        let none = sessions::save_claimed_rules(&db, "claim-a", vec![applied(&theirs)]).await.unwrap();
        assert!(none.is_empty());
    })
    .await;
}

/// A rule of `session` for `address` on `resource` in `status`, due at `next_attempt_at`, unclaimed.
fn rule_row(
    session: &portcullis::store::entity::session::Model,
    resource: &resource::Model,
    address: &str,
    status: &str,
    next_attempt_at: chrono::DateTime<chrono::Utc>,
) -> portcullis::store::entity::resource_ip::Model {
    portcullis::store::entity::resource_ip::Model {
        id: new_id(),
        session_id: session.id.clone(),
        organization_id: session.organization_id.clone(),
        resource_id: resource.id.clone(),
        resource_name: resource.name.clone(),
        ip_version: 4,
        ip_address: address.into(),
        status: status.parse().expect("a rule status"),
        provider_rule_id: None,
        applied_at: None,
        removed_at: None,
        error_message: None,
        attempts: 0,
        lease_owner: None,
        lease_expires_at: None,
        next_attempt_at,
        created_at: session.created_at,
        updated_at: session.created_at,
        replaced_by: None,
    }
}

/// The metrics page's deployment-wide figures: sessions and rules by status, and the rules due
/// for a provider call now with the longest wait among them (a rule due later is not behind).
#[tokio::test]
async fn the_metrics_figures_count_sessions_rules_and_due_work() {
    use portcullis::store::queries::sessions;
    each_backend(|test_db: TestDb| async move {
        let (db, organization) = migrated_with_organization(&test_db).await;
        let user = queries::users::insert(&db, user_row(&organization.id, "a@example.com")).await.unwrap();
        let resource = queries::resources::insert(&db, resource_row(&organization.id)).await.unwrap();
        let at = now();
        assert_eq!(sessions::due_backlog(&db, at).await.unwrap(), (0, None), "{}: nothing due", test_db.backend);
        let seconds = |seconds: i64| at + chrono::TimeDelta::seconds(seconds);
        let active = session_row(&organization.id, &user.id, "ACTIVE", seconds(3600));
        let pending = session_row(&organization.id, &user.id, "PENDING", seconds(3600));
        let ended = session_row(&organization.id, &user.id, "EXPIRED", seconds(-60));
        let rules = vec![
            rule_row(&active, &resource, "203.0.113.1", "APPLIED", seconds(-300)),
            rule_row(&pending, &resource, "203.0.113.2", "PENDING", seconds(-20)),
            rule_row(&pending, &resource, "203.0.113.3", "PENDING", seconds(30)),
            rule_row(&ended, &resource, "203.0.113.4", "REMOVING", seconds(-5)),
        ];
        sessions::insert_all(&db, vec![active, pending, ended], rules).await.unwrap();

        use portcullis::domain::{ResourceIpStatus as R, SessionStatus as S};
        let by_status: HashMap<S, i64> = sessions::count_by_status(&db).await.unwrap().into_iter().collect();
        assert_eq!(by_status, HashMap::from([(S::Active, 1), (S::Expired, 1), (S::Pending, 1)]), "{}", test_db.backend);
        let rules: HashMap<R, i64> = sessions::count_rules_by_status(&db).await.unwrap().into_iter().collect();
        assert_eq!(rules, HashMap::from([(R::Applied, 1), (R::Pending, 2), (R::Removing, 1)]), "{}", test_db.backend);
        let (due, oldest) = sessions::due_backlog(&db, at).await.unwrap();
        assert_eq!(due, 2, "{}: the pending and the removing rule due by now", test_db.backend);
        assert_eq!(oldest.map(|oldest| oldest.timestamp_millis()), Some(seconds(-20).timestamp_millis()));
    })
    .await;
}
