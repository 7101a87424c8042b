//! Data folders written by earlier releases (issue 12): an outbox of each
//! schema version and a secrets store of the previous release, committed
//! under tests/fixtures/ (pueue keeps such fixtures for its state files),
//! are opened, migrated and used by today's code. A new migration without a
//! fixture of the schema it leaves behind fails here.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use pos_connector::intake::{self, sale::Sale};
#[cfg(unix)]
use pos_connector::quickbooks::oauth::ConnectionStore;
#[cfg(unix)]
use pos_connector::secret::{StoredToken, Vault};
use pos_connector::store::{CacheKind, Enqueued, ListFilter, Outbox, Stage, StepResult, DB_FILE};
#[cfg(unix)]
use secrecy::{ExposeSecret, SecretString};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A copy of a fixture folder's files in a fresh data folder (a fixture is
/// never opened in place: opening migrates).
fn data_folder(dir: &Path, files: &[(PathBuf, &str)]) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (from, to) in files {
        std::fs::copy(from, data.join(to)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        for (_, to) in files {
            std::fs::set_permissions(data.join(to), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
    }
    data
}

/// The schema version a new outbox gets: the newest there is.
fn newest_schema() -> i64 {
    let dir = tempfile::tempdir().unwrap();
    Outbox::open(dir.path()).unwrap().schema_version().unwrap()
}

#[test]
fn every_schema_version_has_a_fixture() {
    for v in 1..=newest_schema() {
        let f = fixtures().join(format!("outbox/outbox-v{v}.sqlite3"));
        assert!(
            f.exists(),
            "{} is missing: a new migration needs the outbox it leaves behind as a fixture \
             (tests/fixtures/outbox/make.py writes it)",
            f.display()
        );
    }
}

#[test]
fn an_outbox_of_each_schema_version_is_migrated_and_used() {
    let newest = newest_schema();
    for v in 1..=newest {
        let dir = tempfile::tempdir().unwrap();
        let fixture = fixtures().join(format!("outbox/outbox-v{v}.sqlite3"));
        let data = data_folder(dir.path(), &[(fixture, DB_FILE)]);
        let mut o = Outbox::open(&data).unwrap_or_else(|e| panic!("v{v}: {e}"));
        assert_eq!(o.schema_version().unwrap(), newest, "v{v} migrated");
        let jobs = o.list(&ListFilter::default()).unwrap();
        let job = |n: &str| {
            jobs.iter()
                .find(|j| j.invoice_number == n)
                .unwrap_or_else(|| panic!("v{v}: {n} kept: {jobs:?}"))
                .clone()
        };
        assert_eq!(jobs.len(), 6, "v{v}: every job kept");
        // Newest first, as `queue list` shows them.
        let states: Vec<(&str, &str, &str)> = jobs
            .iter()
            .rev()
            .map(|j| {
                (
                    j.invoice_number.as_str(),
                    j.state.as_str(),
                    j.stage.as_str(),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                ("OLD-Q1", "queued", "queued"),
                ("OLD-R1", "retrying", "queued"),
                ("OLD-C1", "created", "created"),
                ("OLD-S1", "created", "created"),
                ("OLD-P1", "parked", "queued"),
                ("OLD-D1", "done", "done"),
            ],
            "v{v}"
        );
        // The sales read back as today's `Sale`, and are the same sale:
        // dropping one again is a duplicate, not a conflict.
        for j in &jobs {
            let sale: Sale = serde_json::from_str(&j.sale_json)
                .unwrap_or_else(|e| panic!("v{v} {}: {e}", j.invoice_number));
            assert_eq!(
                sale.content_hash(),
                j.content_hash,
                "v{v} {}",
                j.invoice_number
            );
        }
        let r1: Sale = serde_json::from_str(&job("OLD-R1").sale_json).unwrap();
        assert_eq!(r1.customer_name, "مطعم الياسمين");
        assert!(matches!(
            o.enqueue(&intake::new_job(&r1, "inbox:again.csv"), Utc::now())
                .unwrap(),
            Enqueued::Duplicate(_)
        ));

        // v4's migration: a create under way may have reached the backend;
        // a submit under way is checked before it is sent again.
        assert!(job("OLD-R1").lost_create, "v{v}");
        assert!(!job("OLD-Q1").lost_create, "v{v}");
        let attempt = o.unsettled_submit(102).unwrap();
        assert!(attempt.is_some(), "v{v}: the submit in flight is recorded");
        assert_eq!(job("OLD-C1").submit_errors, 0);
        assert_eq!(o.max_seen_id().unwrap(), 103, "v{v}");

        // v2: QuickBooks pushes and the uuid (none before v2).
        let c1 = job("OLD-C1");
        let d1 = job("OLD-D1");
        if v >= 2 {
            assert_eq!(c1.qbo.as_ref().unwrap().state, "pending", "v{v}");
            assert_eq!(d1.qbo.as_ref().unwrap().qbo_id.as_deref(), Some("146"));
            assert!(d1.uuid.is_some());
        } else {
            assert!(c1.qbo.is_none() && d1.uuid.is_none(), "v{v}");
        }
        // v3: the QuickBooks cache (empty before v3).
        let cache = o.qbo_cache_state().unwrap();
        let customers = o
            .qbo_cache_counts()
            .unwrap()
            .get(&CacheKind::Customer)
            .copied()
            .unwrap_or(0);
        if v >= 3 {
            assert_eq!(cache.realm.as_deref(), Some("9130350000000001"), "v{v}");
            assert_eq!(customers, 1, "v{v}");
        } else {
            assert_eq!((cache.realm, customers), (None, 0), "v{v}");
        }

        // Used: the worker's query, a step, a release, a new sale.
        let now = Utc.with_ymd_and_hms(2025, 6, 30, 9, 20, 0).unwrap();
        let due: Vec<String> = o
            .due(now, 10, &[], false)
            .unwrap()
            .into_iter()
            .map(|j| j.invoice_number)
            .collect();
        assert_eq!(due, ["OLD-Q1", "OLD-C1", "OLD-S1"], "v{v}");
        let q1 = job("OLD-Q1");
        o.begin_step(q1.id, "create").unwrap();
        let created = o
            .record_step(
                q1.id,
                Stage::Created,
                &StepResult {
                    laravel_id: Some(104),
                    uuid: Some("5e0c6a3b-29a1-4d7e-9d38-0b4a1c2d3e4f".into()),
                    ..StepResult::default()
                },
                "backend id 104",
                now,
            )
            .unwrap();
        assert_eq!(
            (created.stage, created.laravel_id),
            (Stage::Created, Some(104))
        );
        assert_eq!(o.max_seen_id().unwrap(), 104);
        let released = o.retry_now(job("OLD-P1").id, now).unwrap().unwrap();
        assert_eq!(released.state, "queued", "v{v}");
        let events = o.events(q1.id).unwrap();
        assert!(
            events.len() >= 2,
            "v{v}: the old log and the new step: {events:?}"
        );
        let new = Sale {
            invoice_number: "NEW-1".into(),
            ..r1.clone()
        };
        assert!(matches!(
            o.enqueue(&intake::new_job(&new, "http"), now).unwrap(),
            Enqueued::New(_)
        ));
        drop(o);
        // Opened again: nothing to migrate, everything kept.
        let o = Outbox::open(&data).unwrap();
        assert_eq!(o.list(&ListFilter::default()).unwrap().len(), 7, "v{v}");
    }
}

/// The secrets store (`secret.key` + `secrets.bin`) as the release before
/// the RustCrypto upgrade (chacha20poly1305 0.10, rand 0.9) wrote it: the
/// password, the backend's token and the QuickBooks connection are read,
/// and a write by today's release keeps them.
#[cfg(unix)]
#[test]
fn a_secrets_store_of_the_previous_release_is_read_and_updated() {
    let dir = tempfile::tempdir().unwrap();
    let old = fixtures().join("secrets-0.1.0");
    let data = data_folder(
        dir.path(),
        &[
            (old.join("secret.key"), "secret.key"),
            (old.join("secrets.bin"), "secrets.bin"),
        ],
    );
    let vault = Vault::new(&data);
    let password = vault.password().unwrap().expect("the stored password");
    assert_eq!(password.expose_secret(), "Till-Passw0rd-2025");
    let laravel = vault
        .token("laravel")
        .unwrap()
        .expect("the backend's token");
    assert_eq!(
        laravel.secret.expose_secret(),
        "41|sanctum-token-from-the-previous-release"
    );
    assert_eq!(
        laravel.obtained_at,
        Utc.with_ymd_and_hms(2025, 6, 30, 9, 15, 0).unwrap()
    );
    let qbo = ConnectionStore::new(&data)
        .load()
        .unwrap()
        .expect("the QuickBooks connection");
    assert_eq!(qbo.token.realm_id, "9130350000000001");
    assert_eq!(qbo.token.refresh.expose_secret(), "AB11-old-refresh-token");
    assert_eq!(qbo.client_id, "ABsandboxClientId");
    assert!(qbo.last_refresh.as_ref().is_some_and(|r| r.ok));

    // Today's release writes the store (a new token); the old entries stay.
    let now = Utc::now();
    vault
        .save_token(
            "laravel",
            &StoredToken {
                secret: SecretString::from("42|a-new-token"),
                expires_at: now + chrono::Duration::hours(24),
                obtained_at: now,
                refresh: None,
                meta: Default::default(),
            },
        )
        .unwrap();
    let again = Vault::new(&data);
    assert_eq!(
        again
            .token("laravel")
            .unwrap()
            .unwrap()
            .secret
            .expose_secret(),
        "42|a-new-token"
    );
    assert_eq!(
        again.password().unwrap().unwrap().expose_secret(),
        "Till-Passw0rd-2025"
    );
    let qbo = ConnectionStore::new(&data).load().unwrap().unwrap();
    assert_eq!(qbo.token.access.expose_secret(), "eyJ-old-access-token");
}
