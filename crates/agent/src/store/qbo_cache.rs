//! The local copy of the connected QuickBooks company's customers,
//! vendors, items and invoices (`qbo_cache`), and the facts about it
//! (`qbo_cache_state`: the company, the last full and incremental refresh,
//! the last failure).
//!
//! Why in the outbox's database: it is already opened once per agent, on
//! its own thread, with WAL and fsyncs; a second file would need a second
//! lock and a second migration story for no gain.
//!
//! A full load never replaces a good copy with half of one: its pages go
//! to `qbo_cache_staging` (one short transaction per page, so the outbox
//! thread is never held for long and memory stays bounded), and the swap
//! into `qbo_cache` is a single transaction at the end. Rows are plain
//! columns for what is searched and shown, plus the entity's raw JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, OptionalExtension, Transaction};
use rust_decimal::Decimal;
use serde::Serialize;

use super::{stamp, Outbox, StoreError};

/// The entities kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum CacheKind {
    Customer,
    Vendor,
    Item,
    Invoice,
}

impl CacheKind {
    pub(crate) const ALL: [CacheKind; 4] = [
        CacheKind::Customer,
        CacheKind::Vendor,
        CacheKind::Item,
        CacheKind::Invoice,
    ];

    /// As stored in the `entity` column.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheKind::Customer => "customer",
            CacheKind::Vendor => "vendor",
            CacheKind::Item => "item",
            CacheKind::Invoice => "invoice",
        }
    }

    /// As the API and the status name them: "customers", "items"...
    pub(crate) fn plural(self) -> &'static str {
        match self {
            CacheKind::Customer => "customers",
            CacheKind::Vendor => "vendors",
            CacheKind::Item => "items",
            CacheKind::Invoice => "invoices",
        }
    }

    pub(crate) fn from_plural(name: &str) -> Option<CacheKind> {
        CacheKind::ALL.into_iter().find(|k| k.plural() == name)
    }

    fn parse(s: &str) -> Option<CacheKind> {
        CacheKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One cached entity. Which fields are set depends on the kind: parties
/// (customers, vendors) have `name` (DisplayName), `company_name` and
/// `email`; items `name`, `sku`, `description`, `item_type` and
/// `unit_price`; invoices `name` (DocNumber), `customer_name`, `total_amt`
/// and `txn_date`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CacheRow {
    pub(crate) kind: CacheKind,
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) company_name: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) sku: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) item_type: Option<String>,
    pub(crate) unit_price: Option<Decimal>,
    pub(crate) customer_name: Option<String>,
    pub(crate) total_amt: Option<Decimal>,
    pub(crate) txn_date: Option<String>,
    pub(crate) active: bool,
    pub(crate) sync_token: Option<String>,
    pub(crate) updated_at: Option<DateTime<Utc>>,
    /// The entity as QuickBooks sent it. Empty when read for the search
    /// indexes, which never need it.
    pub(crate) raw: String,
}

impl CacheRow {
    /// A row with only its identity set (the converter fills the rest).
    pub(crate) fn new(kind: CacheKind, id: impl Into<String>) -> CacheRow {
        CacheRow {
            kind,
            id: id.into(),
            name: None,
            company_name: None,
            email: None,
            sku: None,
            description: None,
            item_type: None,
            unit_price: None,
            customer_name: None,
            total_amt: None,
            txn_date: None,
            active: true,
            sync_token: None,
            updated_at: None,
            raw: String::new(),
        }
    }
}

/// What is known about the copy as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheState {
    /// The company (realmId) the rows belong to.
    pub realm: Option<String>,
    /// When the last successful refresh started: everything changed before
    /// it is in the copy, so the next change data capture asks from here.
    pub(crate) synced_from: Option<DateTime<Utc>>,
    pub(crate) last_full_at: Option<DateTime<Utc>>,
    pub(crate) last_incremental_at: Option<DateTime<Utc>>,
    pub(crate) last_attempt_at: Option<DateTime<Utc>>,
    /// Why the last refresh failed; cleared by a success.
    pub(crate) last_error: Option<String>,
}

impl CacheState {
    /// When the copy was last brought up to date, by either kind of refresh.
    pub(crate) fn last_success_at(&self) -> Option<DateTime<Utc>> {
        self.last_full_at.max(self.last_incremental_at)
    }
}

/// The state a successful refresh leaves.
#[derive(Debug, Clone)]
pub(crate) struct CacheSynced {
    pub(crate) realm: String,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: DateTime<Utc>,
    pub(crate) full: bool,
}

/// What applying a change set did to one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct CacheApplied {
    pub(crate) upserted: u64,
    pub(crate) deleted: u64,
}

/// What applying a change set did: counts per kind, and the rows written
/// and removed (what the search indexes must learn).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CacheChanges {
    pub(crate) counts: BTreeMap<CacheKind, CacheApplied>,
    pub(crate) upserted: Vec<CacheRow>,
    pub(crate) deleted: Vec<(CacheKind, String)>,
}

const COLUMNS: &str = "entity, qbo_id, name, company_name, email, sku, description, item_type, \
     unit_price, customer_name, total_amt, txn_date, active, sync_token, updated_ms, raw_json";

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A row's values in `COLUMNS` order, for the statements that write one.
fn row_params(r: &CacheRow) -> Vec<Box<dyn rusqlite::ToSql + '_>> {
    vec![
        Box::new(r.kind.as_str()),
        Box::new(&r.id),
        Box::new(&r.name),
        Box::new(&r.company_name),
        Box::new(&r.email),
        Box::new(&r.sku),
        Box::new(&r.description),
        Box::new(&r.item_type),
        Box::new(r.unit_price.map(|d| d.to_string())),
        Box::new(&r.customer_name),
        Box::new(r.total_amt.map(|d| d.to_string())),
        Box::new(&r.txn_date),
        Box::new(r.active),
        Box::new(&r.sync_token),
        Box::new(r.updated_at.map(|t| t.timestamp_millis())),
        Box::new(&r.raw),
    ]
}

fn insert_row(tx: &Transaction<'_>, table: &str, verb: &str, r: &CacheRow) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "{verb} INTO {table} ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    ))?
    .execute(rusqlite::params_from_iter(row_params(r)))?;
    Ok(())
}

/// Inserts or replaces one row, unless the stored one is as new: change
/// data capture is asked with an overlap (the same version comes twice),
/// and a push may have stored a fresher copy than a page read a moment
/// earlier. SyncToken grows by one with every change of an entity, so it
/// orders versions exactly. Returns whether the row was written.
fn upsert_row(tx: &Transaction<'_>, r: &CacheRow) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(&format!(
            "INSERT INTO qbo_cache ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (entity, qbo_id) DO UPDATE SET
                name = excluded.name, company_name = excluded.company_name, email = excluded.email,
                sku = excluded.sku, description = excluded.description, item_type = excluded.item_type,
                unit_price = excluded.unit_price, customer_name = excluded.customer_name,
                total_amt = excluded.total_amt, txn_date = excluded.txn_date, active = excluded.active,
                sync_token = excluded.sync_token, updated_ms = excluded.updated_ms,
                raw_json = excluded.raw_json
             WHERE COALESCE(CAST(excluded.sync_token AS INTEGER), -1)
                   > COALESCE(CAST(qbo_cache.sync_token AS INTEGER), -1)"
        ))?
        .execute(rusqlite::params_from_iter(row_params(r)))?;
    Ok(n > 0)
}

fn record_success(tx: &Transaction<'_>, s: &CacheSynced) -> rusqlite::Result<()> {
    let col = if s.full {
        "last_full_at"
    } else {
        "last_incremental_at"
    };
    tx.execute(
        &format!(
            "UPDATE qbo_cache_state SET realm = ?1, synced_from = ?2, {col} = ?3,
                last_attempt_at = ?3, last_error = NULL WHERE id = 1"
        ),
        params![s.realm, stamp(s.started_at), stamp(s.finished_at)],
    )?;
    Ok(())
}

fn dec_col(s: Option<String>) -> Option<Decimal> {
    s.and_then(|s| s.parse().ok())
}

impl Outbox {
    /// The QuickBooks cache's saved state: company, sync point, last refreshes, last error.
    pub fn qbo_cache_state(&self) -> Result<CacheState, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT realm, synced_from, last_full_at, last_incremental_at, last_attempt_at,
                        last_error
                 FROM qbo_cache_state WHERE id = 1",
                [],
                |r| {
                    Ok(CacheState {
                        realm: r.get(0)?,
                        synced_from: parse_ts(r.get(1)?),
                        last_full_at: parse_ts(r.get(2)?),
                        last_incremental_at: parse_ts(r.get(3)?),
                        last_attempt_at: parse_ts(r.get(4)?),
                        last_error: r.get(5)?,
                    })
                },
            )
            .optional()?;
        Ok(row.unwrap_or_default())
    }

    /// Empties the copy and forgets its history: the company changed (or
    /// is not known). `realm` is recorded as the one the copy is for.
    pub(crate) fn qbo_cache_wipe(&mut self, realm: Option<&str>) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM qbo_cache", [])?;
        tx.execute("DELETE FROM qbo_cache_staging", [])?;
        tx.execute(
            "UPDATE qbo_cache_state SET realm = ?1, synced_from = NULL, last_full_at = NULL,
                last_incremental_at = NULL, last_error = NULL WHERE id = 1",
            params![realm],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Starts a full load of `kinds`: drops whatever an interrupted load
    /// left in the staging table.
    pub(crate) fn qbo_cache_stage_begin(&mut self, kinds: &[CacheKind]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for k in kinds {
            tx.execute(
                "DELETE FROM qbo_cache_staging WHERE entity = ?1",
                params![k.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// One page of a full load, into the staging table (one transaction).
    pub(crate) fn qbo_cache_stage(&mut self, rows: &[CacheRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for r in rows {
            // A page boundary may repeat a row: the later copy wins.
            insert_row(&tx, "qbo_cache_staging", "INSERT OR REPLACE", r)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Ends a full load of `kinds`: their staged rows replace their rows in
    /// one transaction, with the state (`synced`) when the load was of
    /// everything. Returns the number of rows now held per kind.
    pub(crate) fn qbo_cache_swap(
        &mut self,
        kinds: &[CacheKind],
        synced: Option<&CacheSynced>,
    ) -> Result<BTreeMap<CacheKind, u64>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut counts = BTreeMap::new();
        for k in kinds {
            tx.execute(
                "DELETE FROM qbo_cache WHERE entity = ?1",
                params![k.as_str()],
            )?;
            let n = tx.execute(
                &format!(
                    "INSERT INTO qbo_cache ({COLUMNS}) SELECT {COLUMNS} FROM qbo_cache_staging
                     WHERE entity = ?1"
                ),
                params![k.as_str()],
            )?;
            tx.execute(
                "DELETE FROM qbo_cache_staging WHERE entity = ?1",
                params![k.as_str()],
            )?;
            counts.insert(*k, n as u64);
        }
        if let Some(s) = synced {
            record_success(&tx, s)?;
        }
        tx.commit()?;
        Ok(counts)
    }

    /// A change set (change data capture) in one transaction, with the
    /// state it leaves. Rows older than the ones held are skipped.
    pub(crate) fn qbo_cache_apply(
        &mut self,
        upserts: Vec<CacheRow>,
        deletions: Vec<(CacheKind, String)>,
        synced: &CacheSynced,
    ) -> Result<CacheChanges, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = CacheChanges::default();
        for r in upserts {
            if upsert_row(&tx, &r)? {
                out.counts.entry(r.kind).or_default().upserted += 1;
                out.upserted.push(r);
            }
        }
        for (k, id) in deletions {
            let n = tx.execute(
                "DELETE FROM qbo_cache WHERE entity = ?1 AND qbo_id = ?2",
                params![k.as_str(), id],
            )?;
            if n > 0 {
                out.counts.entry(k).or_default().deleted += n as u64;
                out.deleted.push((k, id));
            }
        }
        record_success(&tx, synced)?;
        tx.commit()?;
        Ok(out)
    }

    /// One entity learnt outside a refresh (a push found or created it).
    /// Returns false when a newer copy was already held.
    pub(crate) fn qbo_cache_put(&mut self, row: &CacheRow) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let changed = upsert_row(&tx, row)?;
        tx.commit()?;
        Ok(changed)
    }

    /// Drops one entity (QuickBooks said the reference is no longer valid).
    pub(crate) fn qbo_cache_delete(
        &mut self,
        kind: CacheKind,
        id: &str,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM qbo_cache WHERE entity = ?1 AND qbo_id = ?2",
            params![kind.as_str(), id],
        )?;
        Ok(n > 0)
    }

    /// A refresh failed: when and why (the copy itself is kept).
    pub(crate) fn qbo_cache_failed(
        &mut self,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE qbo_cache_state SET last_attempt_at = ?1, last_error = ?2 WHERE id = 1",
            params![stamp(at), error],
        )?;
        Ok(())
    }

    /// Rows held per kind, every kind listed.
    pub fn qbo_cache_counts(&self) -> Result<BTreeMap<CacheKind, u64>, StoreError> {
        let mut out: BTreeMap<CacheKind, u64> = CacheKind::ALL.iter().map(|k| (*k, 0)).collect();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT entity, COUNT(*) FROM qbo_cache GROUP BY entity")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (e, n) = row?;
            if let Some(k) = CacheKind::parse(&e) {
                out.insert(k, n as u64);
            }
        }
        Ok(out)
    }

    /// Every row of `kind` without its raw JSON: what the search indexes
    /// are built from.
    pub(crate) fn qbo_cache_rows(&self, kind: CacheKind) -> Result<Vec<CacheRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT qbo_id, name, company_name, email, sku, description, item_type, unit_price,
                    customer_name, total_amt, txn_date, active, sync_token, updated_ms
             FROM qbo_cache WHERE entity = ?1",
        )?;
        let rows = stmt.query_map(params![kind.as_str()], |r| {
            Ok(CacheRow {
                kind,
                id: r.get(0)?,
                name: r.get(1)?,
                company_name: r.get(2)?,
                email: r.get(3)?,
                sku: r.get(4)?,
                description: r.get(5)?,
                item_type: r.get(6)?,
                unit_price: dec_col(r.get(7)?),
                customer_name: r.get(8)?,
                total_amt: dec_col(r.get(9)?),
                txn_date: r.get(10)?,
                active: r.get(11)?,
                sync_token: r.get(12)?,
                updated_at: r
                    .get::<_, Option<i64>>(13)?
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
                raw: String::new(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The raw JSON of up to `limit` rows of `kind`, most recently changed
    /// first.
    pub(crate) fn qbo_cache_raw(
        &self,
        kind: CacheKind,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT raw_json FROM qbo_cache WHERE entity = ?1
             ORDER BY updated_ms DESC, CAST(qbo_id AS INTEGER) DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![kind.as_str(), limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn customer(id: &str, name: &str, sync: &str) -> CacheRow {
        CacheRow {
            name: Some(name.into()),
            sync_token: Some(sync.into()),
            updated_at: Some(at(sync.parse::<i64>().unwrap())),
            raw: format!("{{\"Id\":\"{id}\",\"DisplayName\":\"{name}\"}}"),
            ..CacheRow::new(CacheKind::Customer, id)
        }
    }

    fn synced(full: bool, s: i64) -> CacheSynced {
        CacheSynced {
            realm: "R1".into(),
            started_at: at(s),
            finished_at: at(s + 1),
            full,
        }
    }

    #[test]
    fn a_load_replaces_the_copy_only_when_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.qbo_cache_state().unwrap(), CacheState::default());
        o.qbo_cache_stage_begin(&[CacheKind::Customer]).unwrap();
        o.qbo_cache_stage(&[customer("1", "A", "0"), customer("2", "B", "0")])
            .unwrap();
        o.qbo_cache_swap(&[CacheKind::Customer], Some(&synced(true, 0)))
            .unwrap();
        assert_eq!(o.qbo_cache_counts().unwrap()[&CacheKind::Customer], 2);

        // A second load that stops half way leaves the copy as it was...
        o.qbo_cache_stage_begin(&[CacheKind::Customer]).unwrap();
        o.qbo_cache_stage(&[customer("3", "C", "0")]).unwrap();
        assert_eq!(o.qbo_cache_counts().unwrap()[&CacheKind::Customer], 2);
        // ...and the next load starts from a clean staging table.
        o.qbo_cache_stage_begin(&[CacheKind::Customer]).unwrap();
        o.qbo_cache_stage(&[customer("4", "D", "0")]).unwrap();
        let counts = o
            .qbo_cache_swap(&[CacheKind::Customer], Some(&synced(true, 10)))
            .unwrap();
        assert_eq!(counts[&CacheKind::Customer], 1);
        let rows = o.qbo_cache_rows(CacheKind::Customer).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "4");
        assert!(
            rows[0].raw.is_empty(),
            "the index does not need the raw JSON"
        );
        let st = o.qbo_cache_state().unwrap();
        assert_eq!(st.realm.as_deref(), Some("R1"));
        assert_eq!(st.synced_from, Some(at(10)));
        assert_eq!(st.last_full_at, Some(at(11)));
        assert_eq!(st.last_success_at(), Some(at(11)));
    }

    #[test]
    fn changes_keep_the_newest_version_and_deletions_apply() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        o.qbo_cache_stage_begin(&CacheKind::ALL).unwrap();
        o.qbo_cache_stage(&[customer("1", "A", "3"), customer("2", "B", "0")])
            .unwrap();
        o.qbo_cache_swap(&CacheKind::ALL, Some(&synced(true, 0)))
            .unwrap();
        let applied = o
            .qbo_cache_apply(
                // An older copy of 1 (the overlap), a newer one of 2, a new 5.
                vec![
                    customer("1", "A old", "2"),
                    customer("2", "B new", "1"),
                    customer("5", "E", "0"),
                ],
                vec![
                    (CacheKind::Customer, "1".into()),
                    (CacheKind::Item, "9".into()),
                ],
                &synced(false, 20),
            )
            .unwrap();
        assert_eq!(
            applied.counts[&CacheKind::Customer],
            CacheApplied {
                upserted: 2,
                deleted: 1
            }
        );
        let written: Vec<&str> = applied.upserted.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(written, vec!["2", "5"]);
        assert_eq!(
            applied.deleted,
            vec![(CacheKind::Customer, "1".to_string())]
        );
        let mut names: Vec<String> = o
            .qbo_cache_rows(CacheKind::Customer)
            .unwrap()
            .into_iter()
            .map(|r| r.name.unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["B new", "E"]);
        // Newest change first.
        let raw = o.qbo_cache_raw(CacheKind::Customer, 10).unwrap();
        assert!(raw[0].contains("B new"), "{raw:?}");
        let st = o.qbo_cache_state().unwrap();
        assert_eq!(st.last_incremental_at, Some(at(21)));
        assert_eq!(st.synced_from, Some(at(20)));

        assert!(!o.qbo_cache_put(&customer("2", "B older", "0")).unwrap());
        assert!(
            !o.qbo_cache_put(&customer("2", "B new", "1")).unwrap(),
            "the same version again"
        );
        assert!(o.qbo_cache_put(&customer("7", "G", "0")).unwrap());
        assert!(o.qbo_cache_delete(CacheKind::Customer, "7").unwrap());
        assert!(!o.qbo_cache_delete(CacheKind::Customer, "7").unwrap());

        o.qbo_cache_failed(at(30), "QuickBooks down").unwrap();
        let st = o.qbo_cache_state().unwrap();
        assert_eq!(st.last_error.as_deref(), Some("QuickBooks down"));
        assert_eq!(
            st.synced_from,
            Some(at(20)),
            "a failure keeps the copy's base"
        );

        o.qbo_cache_wipe(Some("R2")).unwrap();
        assert_eq!(o.qbo_cache_counts().unwrap()[&CacheKind::Customer], 0);
        let st = o.qbo_cache_state().unwrap();
        assert_eq!((st.realm.as_deref(), st.synced_from), (Some("R2"), None));
    }
}
