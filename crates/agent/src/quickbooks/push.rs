//! The push: each sale that reached `quickbooks.push_after` becomes one
//! QuickBooks invoice, exactly once.
//!
//! Exactly once rests on three things, because any answer can be lost:
//! the invoice's `DocNumber` is the sale's invoice number and is looked up
//! before every create (QuickBooks' duplicate check is a company setting,
//! so it cannot be relied on alone); every create carries a `requestid`
//! derived from the job, so a retry or a replay after a token refresh gets
//! the original answer instead of a second invoice; and a 6140 "duplicate
//! document number" is taken as "already there" and its Id recorded.
//!
//! Customers and items are found by name (and SKU) and created when
//! missing, with their own derived `requestid`s; what was resolved is
//! remembered for the life of the process to spare requests. With a
//! [`QboCache`] ([`Pusher::with_cache`]) they are looked up there first,
//! and what the push finds or creates goes into it at once. A remembered
//! or cached Id can go stale (merged, deleted or made inactive in
//! QuickBooks): when QuickBooks refuses an invoice for an invalid or
//! inactive reference (2500, 610) that came from memory, that entry is
//! dropped and the invoice built again from queries, once.
//!
//! The [`Pusher`] drains the outbox's QuickBooks track: one invoice at a
//! time when a few are waiting, batch requests of up to 30 when more are.
//! It never charges a job for QuickBooks being unavailable: a throttled or
//! disconnected QuickBooks makes pushes wait (`waiting`), transient errors
//! back off (`retrying`), and only what a person must fix is parked.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::cache::QboCache;
use super::client::{request_id, QboClient};
use super::error::QboError;
use super::model::{
    BatchItemRequest, BatchOutcome, BatchRequest, Customer, EmailAddress, Entity, Invoice, Item,
    Line, Query, Ref, SalesItemLineDetail, BATCH_MAX,
};
use crate::backoff::{Backoff, Jitter};
use crate::clock::Clock;
use crate::config::{PushAfter, QuickbooksConfig};
use crate::intake::sale::{Sale, SaleLine};
use crate::store::{CacheKind, Job, OutboxHandle, QboUpdate, Stage};

/// How long a stop waits for the push in hand.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// QuickBooks' limits on names and numbers.
const DOC_NUMBER_MAX: usize = 21;
const ITEM_NAME_MAX: usize = 100;
const DISPLAY_NAME_MAX: usize = 500;
const PRIVATE_NOTE_MAX: usize = 4000;

/// How the push behaves; from `quickbooks.*`.
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub(crate) push_after: PushAfter,
    pub(crate) income_account_id: Option<String>,
    pub(crate) item_id: Option<String>,
    pub(crate) tax_code: Option<String>,
    pub(crate) global_tax_calculation: Option<String>,
    /// More due pushes than this go out in batches.
    pub(crate) batch_threshold: usize,
    /// Backoff of a push that failed transiently.
    pub(crate) backoff: Backoff,
    /// Without news, the outbox is looked at this often.
    pub(crate) idle_poll: Duration,
}

impl PushSettings {
    /// `poll`: how often the outbox is looked at without news (the
    /// config's `sync_interval`, within 1 s to 60 s).
    pub fn from_config(
        qb: &QuickbooksConfig,
        max_backoff: Duration,
        poll: Duration,
    ) -> PushSettings {
        PushSettings {
            push_after: qb.push_after,
            income_account_id: qb.income_account_id.clone(),
            item_id: qb.item_id.clone(),
            tax_code: qb.tax_code.clone(),
            global_tax_calculation: qb.global_tax_calculation.clone(),
            batch_threshold: qb.batch_threshold,
            backoff: Backoff::new(
                Duration::from_secs(5).min(max_backoff),
                max_backoff,
                Jitter::Up,
            ),
            idle_poll: poll.clamp(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }

    /// The outbox stage from which a job is due for QuickBooks.
    pub(crate) fn due_stage(&self) -> Stage {
        match self.push_after {
            PushAfter::Created => Stage::Created,
            PushAfter::Submitted => Stage::Submitted,
        }
    }
}

/// What one push came to.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum PushOutcome {
    /// In QuickBooks as this Id; `existed`: it was already there.
    Pushed { qbo_id: String, existed: bool },
    /// Failed transiently; tried again after a backoff.
    Retry(String),
    /// Held without blame (throttled, reconnect needed).
    Waiting(String),
    /// A person must act.
    Parked(String),
}

/// Where a customer's or item's Id came from: only one from memory (the
/// process's or the cache's) can be stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Remembered,
    Cache,
    QuickBooks,
}

/// A customer or item an invoice refers to.
#[derive(Debug, Clone)]
struct Used {
    kind: CacheKind,
    /// Its key in the process's memory (the cleaned name).
    key: String,
    id: String,
    source: Source,
}

/// Why resolving or creating failed, sorted for the outbox.
enum Failure {
    Qbo(QboError),
    Park(String),
}

impl From<QboError> for Failure {
    fn from(e: QboError) -> Self {
        Failure::Qbo(e)
    }
}

/// The worker draining the QuickBooks track. Cheap to clone.
#[derive(Clone)]
pub struct Pusher {
    inner: Arc<Inner>,
}

struct Inner {
    outbox: OutboxHandle,
    client: QboClient,
    settings: PushSettings,
    clock: Arc<dyn Clock>,
    wake: Notify,
    customers: Mutex<HashMap<String, String>>,
    items: Mutex<HashMap<String, String>>,
    /// "Reconnect needed" was logged (once per episode, not per job).
    held_logged: AtomicBool,
    /// The service is stopping: no new push is started.
    stopping: AtomicBool,
    cache: OnceLock<QboCache>,
}

impl Pusher {
    /// A pusher of the outbox's QuickBooks track through `client`.
    pub fn new(
        outbox: OutboxHandle,
        client: QboClient,
        settings: PushSettings,
        clock: Arc<dyn Clock>,
    ) -> Pusher {
        Pusher {
            inner: Arc::new(Inner {
                outbox,
                client,
                settings,
                clock,
                wake: Notify::new(),
                customers: Mutex::new(HashMap::new()),
                items: Mutex::new(HashMap::new()),
                held_logged: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                cache: OnceLock::new(),
            }),
        }
    }

    /// Resolves customers and items from `cache` first (fewer queries,
    /// fewer 429s) and keeps what the push finds or creates in it.
    pub fn with_cache(self, cache: QboCache) -> Pusher {
        if self.inner.cache.set(cache).is_err() {
            tracing::warn!(
                backend = "quickbooks",
                "the pusher already has a cache; the second one is ignored"
            );
        }
        self
    }

    fn cache(&self) -> Option<&QboCache> {
        self.inner.cache.get()
    }

    /// The QuickBooks client the pushes go through.
    pub fn client(&self) -> &QboClient {
        &self.inner.client
    }

    /// News for the pusher (a job reached the push point, a retry).
    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Pushes until `shutdown` completes.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let me = &self.inner;
        tokio::pin!(shutdown);
        me.stopping.store(false, Ordering::Relaxed);
        tracing::info!(
            push_after = me.settings.push_after.as_str(),
            "QuickBooks pusher started"
        );
        loop {
            // A stop lets the push in hand finish (within a bound: it may
            // be waiting out a 429's pause) but starts no other: with a
            // small share of the company, 30 due pushes can take minutes.
            let step = self.step();
            tokio::pin!(step);
            let wait = tokio::select! {
                wait = &mut step => wait,
                _ = &mut shutdown => {
                    me.stopping.store(true, Ordering::Relaxed);
                    if tokio::time::timeout(STOP_GRACE, step).await.is_err() {
                        tracing::info!(backend = "quickbooks", "a push was still waiting at the stop; it is taken up at the next start (its DocNumber is checked first)");
                    }
                    break;
                }
            };
            let Some(wait) = wait else { continue };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = me.wake.notified() => {}
                _ = tokio::time::sleep_until(wait) => {}
            }
        }
        tracing::info!("QuickBooks pusher stopped");
    }

    /// Does what is due now; returns when to look again (`None`: at once).
    async fn step(&self) -> Option<Instant> {
        let me = &self.inner;
        let poll = Instant::now() + me.settings.idle_poll;
        if let Some(why) = me.client.keeper().needs_person() {
            if !me.held_logged.swap(true, Ordering::Relaxed) {
                tracing::error!(backend = "quickbooks", reason = %why, "QuickBooks pushes are on hold until this is fixed (`pos-connector qbo status`); sales still flow to the backend and nothing is dropped");
            }
            self.hold_due(&why).await;
            return Some(Instant::now() + Duration::from_secs(30).min(me.settings.idle_poll));
        }
        if me.held_logged.swap(false, Ordering::Relaxed) {
            let now = me.clock.now();
            let released = me
                .outbox
                .call(move |o| o.qbo_release_waiting(now))
                .await
                .unwrap_or_default();
            tracing::info!(
                backend = "quickbooks",
                released,
                "QuickBooks connection restored; pushing again"
            );
        }
        if let Some(until) = me.client.limiter().paused_until() {
            return Some(until);
        }
        let now = me.clock.now();
        let due = match me
            .outbox
            .call(move |o| o.qbo_due(now, BATCH_MAX, &[]))
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox's QuickBooks track; retrying shortly");
                return Some(Instant::now() + Duration::from_secs(5));
            }
        };
        if due.is_empty() {
            let next = me.outbox.call(|o| o.qbo_next_due_at()).await.ok().flatten();
            return Some(match next {
                Some(at) => {
                    let wait = (at - me.clock.now()).to_std().unwrap_or_default();
                    (Instant::now() + wait).min(poll)
                }
                None => poll,
            });
        }
        if due.len() > me.settings.batch_threshold {
            self.push_batch(due).await;
        } else {
            for job in due {
                if me.stopping.load(Ordering::Relaxed) {
                    break;
                }
                let outcome = self.push_one(&job).await;
                if matches!(outcome, PushOutcome::Waiting(_)) {
                    break;
                }
            }
        }
        None
    }

    /// While a person must act (reconnect), the pushes that come due are
    /// marked waiting with the reason, uncharged, so `queue show` and the
    /// status page say why they wait (whoever met the dead grant first:
    /// a push, the cache or a command). Released when the hold lifts.
    async fn hold_due(&self, why: &str) {
        let me = &self.inner;
        let now = me.clock.now();
        let due = match me
            .outbox
            .call(move |o| o.qbo_due(now, BATCH_MAX, &[]))
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox's QuickBooks track; retrying shortly");
                return;
            }
        };
        let held: Vec<(Job, PushOutcome)> = due
            .into_iter()
            .filter(|j| j.qbo.as_ref().is_some_and(|q| q.state != "waiting"))
            .map(|j| (j, PushOutcome::Waiting(why.to_string())))
            .collect();
        if !held.is_empty() {
            self.record_all(&held).await;
        }
    }

    /// Pushes one job now and records the outcome.
    pub async fn push_one(&self, job: &Job) -> PushOutcome {
        let outcome = match self.try_push(job).await {
            Ok(o) => o,
            Err(f) => self.sort(f),
        };
        self.record(job, &outcome).await;
        outcome
    }

    async fn try_push(&self, job: &Job) -> Result<PushOutcome, Failure> {
        let sale = sale_of(job)?;
        if let Some(id) = self.existing_invoice(&sale.invoice_number).await? {
            return Ok(PushOutcome::Pushed {
                qbo_id: id,
                existed: true,
            });
        }
        self.create_invoice(job, &sale, false).await
    }

    /// Builds the invoice and creates it. When QuickBooks refuses it for a
    /// stale remembered reference, that entry is forgotten and the invoice
    /// built and created once more (`again`: that second time, whose
    /// `requestid` differs, since the first one's answer is replayed).
    async fn create_invoice(
        &self,
        job: &Job,
        sale: &Sale,
        mut again: bool,
    ) -> Result<PushOutcome, Failure> {
        loop {
            let (invoice, used) = self.build_invoice(job, sale).await?;
            let mut key = format!("{}\0{}", job.invoice_number, job.content_hash);
            if again {
                key.push_str("\0re-resolved");
            }
            match self
                .inner
                .client
                .create::<Invoice>(Entity::Invoice, &invoice, &request_id("inv", &key))
                .await
            {
                Ok(created) => {
                    return Ok(PushOutcome::Pushed {
                        qbo_id: created.id.unwrap_or_default(),
                        existed: false,
                    })
                }
                Err(QboError::DuplicateDocument { existing_id, .. }) => {
                    return self
                        .resolve_duplicate(&sale.invoice_number, existing_id)
                        .await
                }
                Err(e) if !again && self.drop_stale(&e, &used).await => again = true,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// If `e` is QuickBooks refusing a reference (2500 invalid, 610 not
    /// found or inactive) that came from memory, forgets it (all such
    /// references of the invoice when the fault does not say which) and
    /// says so.
    async fn drop_stale(&self, e: &QboError, used: &[Used]) -> bool {
        let QboError::Validation {
            code,
            message,
            detail,
            element,
            ..
        } = e
        else {
            return false;
        };
        if !matches!(code.trim_start_matches('0'), "2500" | "610") {
            return false;
        }
        let remembered: Vec<&Used> = used
            .iter()
            .filter(|u| u.source != Source::QuickBooks)
            .collect();
        let text = format!(
            "{message} {} {}",
            detail.as_deref().unwrap_or_default(),
            element.as_deref().unwrap_or_default()
        );
        let element = element.as_deref().unwrap_or_default();
        let of_kind = |u: &&Used| match u.kind {
            CacheKind::Customer => !element.contains("ItemRef"),
            _ => !element.contains("CustomerRef"),
        };
        let named: Vec<&Used> = remembered
            .iter()
            .copied()
            .filter(of_kind)
            .filter(|u| text.contains(&format!("Id={}", u.id)))
            .collect();
        let stale = if named.is_empty() {
            remembered.into_iter().filter(of_kind).collect()
        } else {
            named
        };
        if stale.is_empty() {
            return false;
        }
        for u in stale {
            tracing::info!(backend = "quickbooks", entity = u.kind.as_str(), id = %u.id, code = %code, "QuickBooks refused a remembered reference; it is looked up again");
            let memo = match u.kind {
                CacheKind::Customer => &self.inner.customers,
                _ => &self.inner.items,
            };
            memo.lock().expect("cache").remove(&u.key);
            if let Some(cache) = self.cache() {
                cache.forget(u.kind, &u.id).await;
            }
        }
        true
    }

    /// A 6140: the invoice is there already; its Id from the fault's
    /// detail, or by looking it up.
    async fn resolve_duplicate(
        &self,
        number: &str,
        existing_id: Option<String>,
    ) -> Result<PushOutcome, Failure> {
        let id = match existing_id {
            Some(id) => Some(id),
            None => self.existing_invoice(number).await?,
        };
        match id {
            Some(qbo_id) => Ok(PushOutcome::Pushed {
                qbo_id,
                existed: true,
            }),
            None => Err(Failure::Park(format!(
                "QuickBooks says DocNumber {number} is already used (6140), but no invoice with it can \
                 be found: it may be another kind of transaction; check in QuickBooks, then \
                 `pos-connector queue retry {number}`"
            ))),
        }
    }

    async fn existing_invoice(&self, number: &str) -> Result<Option<String>, Failure> {
        let q = Query::select(Entity::Invoice)
            .where_eq("DocNumber", number)
            .build();
        let found = self
            .inner
            .client
            .query::<Invoice>(Entity::Invoice, &q)
            .await?;
        Ok(found.items.into_iter().find_map(|i| i.id))
    }

    /// The QuickBooks invoice for a sale, customers and items resolved (and
    /// where their Ids came from).
    async fn build_invoice(&self, job: &Job, sale: &Sale) -> Result<(Invoice, Vec<Used>), Failure> {
        let s = &self.inner.settings;
        if sale.invoice_number.chars().count() > DOC_NUMBER_MAX {
            return Err(Failure::Park(format!(
                "invoice number {} is longer than QuickBooks' {DOC_NUMBER_MAX} characters for a \
                 DocNumber; it cannot be pushed as it is (enter it in QuickBooks by hand)",
                sale.invoice_number
            )));
        }
        let customer = self.customer_id(&sale.customer_name).await?;
        let mut lines = Vec::with_capacity(sale.lines.len());
        let mut used = Vec::with_capacity(sale.lines.len() + 1);
        for line in &sale.lines {
            let item = self.item_id(line).await?;
            lines.push(sale_line(line, item.id.clone(), s.tax_code.as_deref()));
            used.push(item);
        }
        let customer_id = customer.id.clone();
        used.push(customer);
        // The sale's own date; else the day it reached the outbox.
        let day = sale
            .date
            .clone()
            .unwrap_or_else(|| job.created_at.chars().take(10).collect());
        let mut invoice = Invoice {
            doc_number: Some(sale.invoice_number.clone()),
            txn_date: chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").ok(),
            customer_ref: Some(Ref {
                value: customer_id,
                name: None,
            }),
            line: lines,
            private_note: Some(private_note(job)),
            global_tax_calculation: s.global_tax_calculation.clone(),
            ..Default::default()
        };
        if let Some(email) = &sale.customer_email {
            invoice.bill_email = Some(EmailAddress {
                address: Some(email.clone()),
                ..Default::default()
            });
        }
        Ok((invoice, used))
    }

    /// The customer's Id: remembered, in the cache (active), found by
    /// DisplayName, or created.
    async fn customer_id(&self, name: &str) -> Result<Used, Failure> {
        let me = &self.inner;
        let name = clean_name(name, DISPLAY_NAME_MAX);
        let used = |id: String, source| Used {
            kind: CacheKind::Customer,
            key: name.clone(),
            id,
            source,
        };
        if let Some(id) = me.customers.lock().expect("cache").get(&name) {
            return Ok(used(id.clone(), Source::Remembered));
        }
        if let Some(id) = self.cache().and_then(|c| c.find_customer(&name)) {
            return Ok(used(id, Source::Cache));
        }
        let q = Query::select(Entity::Customer)
            .where_eq("DisplayName", &name)
            .build();
        let found = me.client.query::<Customer>(Entity::Customer, &q).await?;
        let id = match found.items.into_iter().find(|c| c.id.is_some()) {
            Some(c) => {
                self.remember(CacheKind::Customer, &c).await;
                c.id.unwrap_or_default()
            }
            None => {
                let new = Customer {
                    display_name: Some(name.clone()),
                    ..Default::default()
                };
                match me
                    .client
                    .create::<Customer>(Entity::Customer, &new, &request_id("cus", &name))
                    .await
                {
                    Ok(c) => {
                        self.remember(CacheKind::Customer, &c).await;
                        c.id.unwrap_or_default()
                    }
                    Err(QboError::DuplicateName { .. }) => self.clashing_customer(&name).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        me.customers
            .lock()
            .expect("cache")
            .insert(name.clone(), id.clone());
        Ok(used(id, Source::QuickBooks))
    }

    /// Keeps what QuickBooks answered in the cache, if there is one.
    async fn remember(&self, kind: CacheKind, entity: &impl serde::Serialize) {
        if let Some(cache) = self.cache() {
            if let Ok(v) = serde_json::to_value(entity) {
                cache.remember(kind, &v).await;
            }
        }
    }

    /// After a 6240: the name is taken, by an inactive customer or by a
    /// vendor or employee.
    async fn clashing_customer(&self, name: &str) -> Result<String, Failure> {
        let q = Query::select(Entity::Customer)
            .where_eq("DisplayName", name)
            .where_bool_in_active_both()
            .build();
        let found = self
            .inner
            .client
            .query::<Customer>(Entity::Customer, &q)
            .await?;
        match found.items.into_iter().next() {
            Some(c) if c.active != Some(false) => Ok(c.id.unwrap_or_default()),
            Some(c) => Err(Failure::Park(format!(
                "customer \"{name}\" exists in QuickBooks but is inactive (Id {}): make it active in \
                 QuickBooks, then `pos-connector queue retry --all-parked`",
                c.id.unwrap_or_default()
            ))),
            None => Err(Failure::Park(format!(
                "the name \"{name}\" is used by a vendor or employee in QuickBooks (6240), so no \
                 customer can have it: rename one of them, then `pos-connector queue retry --all-parked`"
            ))),
        }
    }

    /// A line's item: the configured generic one, or remembered, or in
    /// the cache (active, by Name then SKU), or found by Name (then SKU),
    /// or created as a Service item.
    async fn item_id(&self, line: &SaleLine) -> Result<Used, Failure> {
        let me = &self.inner;
        let name = clean_name(&item_name(line), ITEM_NAME_MAX).replace(':', "-");
        let used = |id: String, source| Used {
            kind: CacheKind::Item,
            key: name.clone(),
            id,
            source,
        };
        if let Some(id) = &me.settings.item_id {
            // Configured: a person's choice, never "stale".
            return Ok(used(id.clone(), Source::QuickBooks));
        }
        if let Some(id) = me.items.lock().expect("cache").get(&name) {
            return Ok(used(id.clone(), Source::Remembered));
        }
        let sku = line.sku.as_deref().map(str::trim).filter(|s| !s.is_empty());
        if let Some(id) = self.cache().and_then(|c| c.find_item(&name, sku)) {
            return Ok(used(id, Source::Cache));
        }
        let by_name = Query::select(Entity::Item).where_eq("Name", &name).build();
        let mut found = me.client.query::<Item>(Entity::Item, &by_name).await?;
        if found.items.is_empty() {
            if let Some(sku) = line.sku.as_deref().filter(|s| !s.trim().is_empty()) {
                let by_sku = Query::select(Entity::Item)
                    .where_eq("Sku", sku.trim())
                    .build();
                found = me.client.query::<Item>(Entity::Item, &by_sku).await?;
            }
        }
        let id = match found.items.into_iter().find(|i| i.id.is_some()) {
            Some(i) => {
                self.remember(CacheKind::Item, &i).await;
                i.id.unwrap_or_default()
            }
            None => self.create_item(&name, line).await?,
        };
        me.items
            .lock()
            .expect("cache")
            .insert(name.clone(), id.clone());
        Ok(used(id, Source::QuickBooks))
    }

    async fn create_item(&self, name: &str, line: &SaleLine) -> Result<String, Failure> {
        let me = &self.inner;
        let Some(account) = &me.settings.income_account_id else {
            return Err(Failure::Park(format!(
                "product \"{name}\" is not in QuickBooks and cannot be created: set \
                 quickbooks.income_account_id (the Income account for new items) or \
                 quickbooks.item_id (one generic item), or add the item in QuickBooks; then \
                 `pos-connector queue retry --all-parked`"
            )));
        };
        let new = Item {
            name: Some(name.to_string()),
            item_type: Some("Service".into()),
            sku: line.sku.clone().filter(|s| !s.trim().is_empty()),
            income_account_ref: Some(Ref {
                value: account.clone(),
                name: None,
            }),
            ..Default::default()
        };
        match me
            .client
            .create::<Item>(Entity::Item, &new, &request_id("itm", name))
            .await
        {
            Ok(i) => {
                self.remember(CacheKind::Item, &i).await;
                Ok(i.id.unwrap_or_default())
            }
            Err(QboError::DuplicateName { .. }) => {
                let q = Query::select(Entity::Item)
                    .where_eq("Name", name)
                    .where_bool_in_active_both()
                    .build();
                let found = me.client.query::<Item>(Entity::Item, &q).await?;
                match found.items.into_iter().next() {
                    Some(i) if i.active != Some(false) => Ok(i.id.unwrap_or_default()),
                    Some(i) => Err(Failure::Park(format!(
                        "item \"{name}\" exists in QuickBooks but is inactive (Id {}): make it \
                         active, then `pos-connector queue retry --all-parked`",
                        i.id.unwrap_or_default()
                    ))),
                    None => Err(Failure::Park(format!(
                        "QuickBooks says the item name \"{name}\" is taken (6240) but no item has \
                         it; rename the clashing entry in QuickBooks, then `pos-connector queue \
                         retry --all-parked`"
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Up to 30 jobs: existing invoices found with one query, the rest
    /// created in one batch request; the outcomes recorded in one
    /// transaction.
    pub async fn push_batch(&self, jobs: Vec<Job>) -> Vec<(Job, PushOutcome)> {
        let outcomes = self.batch_outcomes(jobs).await;
        self.record_all(&outcomes).await;
        outcomes
    }

    async fn batch_outcomes(&self, jobs: Vec<Job>) -> Vec<(Job, PushOutcome)> {
        let mut done: Vec<(Job, PushOutcome)> = Vec::new();
        let mut sales = Vec::new();
        for job in jobs.into_iter().take(BATCH_MAX) {
            match sale_of(&job) {
                Ok(s) => sales.push((job, s)),
                Err(f) => done.push((job, self.sort(f))),
            }
        }
        if sales.is_empty() {
            return done;
        }
        // One query for every number: which are in QuickBooks already?
        let numbers: Vec<&str> = sales
            .iter()
            .map(|(_, s)| s.invoice_number.as_str())
            .collect();
        let q = Query::select(Entity::Invoice)
            .where_in("DocNumber", &numbers)
            .max(1000)
            .build();
        let existing: HashMap<String, String> = match self
            .inner
            .client
            .query::<Invoice>(Entity::Invoice, &q)
            .await
        {
            Ok(found) => found
                .items
                .into_iter()
                .filter_map(|i| Some((i.doc_number?, i.id?)))
                .collect(),
            Err(e) => {
                let o = self.sort(Failure::Qbo(e));
                done.extend(sales.into_iter().map(|(j, _)| (j, o.clone())));
                return done;
            }
        };
        let mut items = Vec::new();
        let mut in_batch: Vec<(Job, Sale, Vec<Used>)> = Vec::new();
        let mut sales = sales.into_iter();
        for (job, sale) in sales.by_ref() {
            if let Some(id) = existing.get(&sale.invoice_number) {
                let o = PushOutcome::Pushed {
                    qbo_id: id.clone(),
                    existed: true,
                };
                done.push((job, o));
                continue;
            }
            match self.build_invoice(&job, &sale).await {
                Ok((inv, used)) => {
                    items.push(BatchItemRequest::create_invoice(job.id.to_string(), &inv));
                    in_batch.push((job, sale, used));
                }
                Err(f) => {
                    let o = self.sort(f);
                    let stop = matches!(o, PushOutcome::Waiting(_));
                    done.push((job, o.clone()));
                    if stop {
                        // Throttled or disconnected: the rest waits too.
                        done.extend(sales.by_ref().map(|(j, _)| (j, o.clone())));
                        done.extend(in_batch.drain(..).map(|(j, _, _)| (j, o.clone())));
                        return done;
                    }
                }
            }
        }
        if items.is_empty() {
            return done;
        }
        let key: Vec<String> = in_batch
            .iter()
            .map(|(j, _, _)| format!("{}\0{}", j.invoice_number, j.content_hash))
            .collect();
        let rid = request_id("bat", &key.join("\n"));
        let answers = match self.inner.client.batch(&BatchRequest { items }, &rid).await {
            Ok(a) => a,
            Err(e) => {
                let o = self.sort(Failure::Qbo(e));
                done.extend(in_batch.into_iter().map(|(j, _, _)| (j, o.clone())));
                return done;
            }
        };
        let mut by_bid: HashMap<String, BatchOutcome> =
            answers.into_iter().map(|a| (a.bid, a.outcome)).collect();
        for (job, sale, used) in in_batch {
            let outcome = match by_bid.remove(&job.id.to_string()) {
                Some(BatchOutcome::Entity(v)) => match v.get("Id").and_then(Value::as_str) {
                    Some(id) => PushOutcome::Pushed {
                        qbo_id: id.to_string(),
                        existed: false,
                    },
                    None => PushOutcome::Retry("the batch answer has no invoice Id".into()),
                },
                Some(BatchOutcome::Fault(f)) => match QboError::from_fault(&f, None) {
                    QboError::DuplicateDocument { existing_id, .. } => {
                        match self
                            .resolve_duplicate(&sale.invoice_number, existing_id)
                            .await
                        {
                            Ok(o) => o,
                            Err(f) => self.sort(f),
                        }
                    }
                    // A stale remembered reference: forgotten, and this
                    // invoice created alone, its references looked up again.
                    e if self.drop_stale(&e, &used).await => {
                        match self.create_invoice(&job, &sale, true).await {
                            Ok(o) => o,
                            Err(f) => self.sort(f),
                        }
                    }
                    e => self.sort(Failure::Qbo(e)),
                },
                Some(BatchOutcome::Query(_)) | None => {
                    PushOutcome::Retry("the batch answer did not mention this invoice".into())
                }
            };
            done.push((job, outcome));
        }
        done
    }

    /// Sorts a failure: wait (not the job's fault), retry, or park.
    fn sort(&self, f: Failure) -> PushOutcome {
        match f {
            Failure::Park(why) => PushOutcome::Parked(why),
            Failure::Qbo(e) => match e {
                QboError::SignIn {
                    needs_person: true, ..
                } => PushOutcome::Waiting(e.to_string()),
                QboError::Throttled { .. } => PushOutcome::Waiting(e.to_string()),
                e if e.is_transient() => PushOutcome::Retry(e.to_string()),
                QboError::Auth { .. } => PushOutcome::Retry(e.to_string()),
                e => PushOutcome::Parked(format!(
                    "{e}; fix it in QuickBooks or the config, then `pos-connector queue retry --all-parked`"
                )),
            },
        }
    }

    async fn record(&self, job: &Job, outcome: &PushOutcome) {
        self.record_all(&[(job.clone(), outcome.clone())]).await;
    }

    /// Logs and records outcomes, in one outbox transaction.
    async fn record_all(&self, outcomes: &[(Job, PushOutcome)]) {
        if outcomes.is_empty() {
            return;
        }
        let me = &self.inner;
        let now = me.clock.now();
        let updates: Vec<QboUpdate> = outcomes
            .iter()
            .map(|(job, outcome)| self.update_for(job, outcome, now))
            .collect();
        if let Err(e) = me.outbox.call(move |o| o.qbo_record(&updates, now)).await {
            tracing::error!(error = %e, pushes = outcomes.len(), "cannot record QuickBooks pushes in the outbox; they will be checked again");
        }
    }

    fn update_for(&self, job: &Job, outcome: &PushOutcome, now: DateTime<Utc>) -> QboUpdate {
        let id = job.id;
        let number = &job.invoice_number;
        match outcome.clone() {
            PushOutcome::Pushed { qbo_id, existed } => {
                let detail = if existed {
                    format!("already in QuickBooks as invoice Id {qbo_id}; not created again")
                } else {
                    format!("created in QuickBooks as invoice Id {qbo_id}")
                };
                tracing::info!(invoice = %number, qbo_id = %qbo_id, existed, "pushed to QuickBooks");
                QboUpdate::Pushed { id, qbo_id, detail }
            }
            PushOutcome::Retry(error) => {
                let attempts = job.qbo.as_ref().map_or(0, |p| p.attempts);
                let wait = self.inner.settings.backoff.after(attempts + 1);
                let next_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                tracing::warn!(invoice = %number, error = %error, retry_in_secs = wait.as_secs(), "QuickBooks push failed; will retry");
                QboUpdate::Retry { id, error, next_at }
            }
            PushOutcome::Waiting(reason) => QboUpdate::Waiting {
                id,
                reason,
                next_at: self.resume_at(now),
            },
            PushOutcome::Parked(reason) => {
                tracing::error!(invoice = %number, reason = %reason, "QuickBooks push parked: a person must act");
                QboUpdate::Parked { id, reason }
            }
        }
    }

    /// When a held push is looked at again: after the throttle pause, or
    /// in a minute (a reconnect wakes the pusher through the keeper).
    fn resume_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let wait = match self.inner.client.limiter().paused_until() {
            Some(until) => until.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(60),
        };
        now + chrono::Duration::from_std(wait).unwrap_or_default()
    }
}

fn sale_of(job: &Job) -> Result<Sale, Failure> {
    serde_json::from_str(&job.sale_json).map_err(|e| {
        Failure::Park(format!(
            "the stored sale cannot be read ({e}); re-send the sale"
        ))
    })
}

/// One sale line as an invoice line: the Laravel invoice's quantity and
/// unit price (so both books agree), the amount rounded to cents.
fn sale_line(line: &SaleLine, item: String, tax_code: Option<&str>) -> Line {
    let qty = Decimal::from(line.quantity);
    Line {
        description: Some(line.description.clone()),
        amount: Some(crate::tax::round_money(qty * line.unit_price)),
        detail_type: "SalesItemLineDetail".into(),
        sales_item_line_detail: Some(SalesItemLineDetail {
            item_ref: Some(Ref {
                value: item,
                name: None,
            }),
            qty: Some(qty),
            unit_price: Some(line.unit_price),
            tax_code_ref: tax_code.map(|c| Ref {
                value: c.to_string(),
                name: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The product's name: the description without the fraction rule's note.
fn item_name(line: &SaleLine) -> String {
    match (&line.converted_from, line.description.rsplit_once(" (")) {
        (Some(_), Some((base, _))) => base.to_string(),
        _ => line.description.clone(),
    }
}

/// A name as QuickBooks takes it: one line, trimmed, within its limit.
fn clean_name(name: &str, max: usize) -> String {
    let one_line: String = name.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(max).collect()
}

/// The note QuickBooks keeps with the invoice: where it came from and its
/// JoFotara state.
fn private_note(job: &Job) -> String {
    let mut note = format!("pos-connector: invoice {}", job.invoice_number);
    if let Some(id) = job.laravel_id {
        note.push_str(&format!(", backend id {id}"));
    }
    note.push_str(&format!(
        "; JoFotara status: {}",
        job.backend_status.as_deref().unwrap_or("not submitted")
    ));
    if let Some(uuid) = &job.uuid {
        note.push_str(&format!("; uuid {uuid}"));
    }
    note.chars().take(PRIVATE_NOTE_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::sale::OriginalQuantity;

    fn line(desc: &str, q: u32, p: &str, converted: bool) -> SaleLine {
        SaleLine {
            description: desc.into(),
            quantity: q,
            unit_price: p.parse().unwrap(),
            sku: None,
            converted_from: converted.then(|| OriginalQuantity {
                quantity: "1.5".parse().unwrap(),
                unit_price: "4.00".parse().unwrap(),
                line_total: None,
            }),
        }
    }

    #[test]
    fn lines_keep_the_invoice_amounts_and_never_invent_tax() {
        let l = sale_line(&line("Coffee", 3, "1.255", false), "7".into(), None);
        assert_eq!(l.amount, Some("3.77".parse().unwrap()));
        let d = l.sales_item_line_detail.unwrap();
        assert_eq!(d.qty, Some(Decimal::from(3)));
        assert_eq!(d.unit_price, Some("1.255".parse().unwrap()));
        assert!(d.tax_code_ref.is_none(), "no tax code unless configured");
        let taxed = sale_line(&line("Tea", 1, "2", false), "8".into(), Some("TAX"));
        assert_eq!(
            taxed
                .sales_item_line_detail
                .unwrap()
                .tax_code_ref
                .unwrap()
                .value,
            "TAX"
        );
    }

    #[test]
    fn item_names_drop_the_fraction_note_and_fit_quickbooks() {
        assert_eq!(
            item_name(&line("Cheese (1.5 x 4.00)", 1, "6", true)),
            "Cheese"
        );
        assert_eq!(
            item_name(&line("Cup (large)", 1, "6", false)),
            "Cup (large)"
        );
        assert_eq!(clean_name("  Two\n lines\t here ", 100), "Two lines here");
        assert_eq!(clean_name(&"x".repeat(150), ITEM_NAME_MAX).len(), 100);
    }
}
