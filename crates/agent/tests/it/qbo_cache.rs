//! The QuickBooks cache end to end: real HTTP against the simulator on
//! 127.0.0.1:0, the real outbox database in a temp folder. Full loads
//! page through every entity (inactive ones included) and replace the copy
//! only when complete; change data capture brings creations, changes and
//! deletions; the 30-day window and another company force a full load;
//! search answers from the copy; the push resolves from it and recovers
//! from a stale entry; refreshes are single-flight; `run` waits out a
//! reconnect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::qbo::{
    connect_to, pusher, sale, sim_options, submitted, unlimited, Qbo, INVOICE_ROUTE, QUERY_ROUTE,
    TOKEN_ROUTE,
};
use crate::common::*;
use chrono::{DateTime, Utc};
use pos_connector::clock::{Clock, SystemClock};
use pos_connector::config::Config;
use pos_connector::quickbooks::{
    self, CacheError, PushOutcome, QboCache, QboError, RefreshKind, SearchError,
};
use pos_connector::store::{Outbox, OutboxHandle};
use pos_sandbox::quickbooks::{QboLimits, QuickbooksSandbox, QuickbooksSandboxOptions};
use serde_json::{json, Value};

const CDC_ROUTE: &str = "GET /v3/company/{realm}/cdc";
const CUSTOMER_ROUTE: &str = "POST /v3/company/{realm}/customer";
const ITEM_ROUTE: &str = "POST /v3/company/{realm}/item";
const HOUR: Duration = Duration::from_secs(3600);

/// Wall time a test moves by hand (the cache's view of "now").
#[derive(Debug)]
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(Utc::now())))
    }

    fn advance(&self, days: i64) {
        *self.0.lock().unwrap() += chrono::Duration::days(days);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A simulator without rate limits (these tests count requests; the
/// limits have their own tests and the bench), a config and a connection.
async fn connected() -> (Qbo, Config) {
    let q = Qbo::start(QuickbooksSandboxOptions {
        limits: QboLimits {
            enforce: false,
            ..QboLimits::default()
        },
        ..sim_options()
    })
    .await;
    let mut cfg = q.config(json!({}));
    unlimited(&mut cfg);
    q.connect(&cfg).await;
    (q, cfg)
}

async fn open_cache(cfg: &Config, every: Duration, clock: Arc<dyn Clock>) -> QboCache {
    let client = quickbooks::connect(cfg, Arc::new(SystemClock)).unwrap();
    QboCache::open(
        OutboxHandle::open(&cfg.data_dir).unwrap(),
        client,
        every,
        clock,
    )
    .await
    .unwrap()
}

/// Query pages a full load of `n` rows takes: until a short page.
fn pages(n: usize) -> u64 {
    (n / 1000 + 1) as u64
}

fn names(a: &quickbooks::SearchAnswer) -> Vec<&str> {
    a.results.iter().map(|h| h.name.as_str()).collect()
}

fn id_of(v: &Value) -> String {
    v["Id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_full_load_pages_through_every_entity_inactive_ones_included() {
    let (q, cfg) = connected().await;
    q.sim.seed_customers(2500);
    q.sim.seed_vendors(3);
    q.sim.seed_items(1200);
    q.sim.seed_invoice("INV-1", "Walk-in");
    let customers = q.sim.customers();
    let items = q.sim.items();
    let inactive = customers.iter().filter(|c| c["Active"] == false).count();
    assert_eq!(inactive, 125);

    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    assert_eq!(cache.age(), None, "never refreshed");
    assert_eq!(cache.search("client_names", "a", None).unwrap().total, 0);
    let report = cache.refresh(false).await.unwrap();
    assert_eq!(report.kind, RefreshKind::Full);
    assert_eq!(report.reason, "the cache is empty");
    assert_eq!(report.realm, q.sim.realm_id());
    assert_eq!(report.customers.rows, customers.len() as u64);
    assert_eq!(report.items.rows, items.len() as u64);
    assert_eq!((report.vendors.rows, report.invoices.rows), (3, 1));
    let expected = pages(customers.len()) + pages(3) + pages(items.len()) + pages(1);
    assert_eq!(expected, 7);
    assert_eq!(q.sim.requests(QUERY_ROUTE), expected, "pages of 1,000");
    assert_eq!(report.requests as u64, expected);
    assert_eq!(q.sim.requests(CDC_ROUTE), 0);

    // Inactive ones are in, marked so.
    let sleeping = customers.iter().find(|c| c["Active"] == false).unwrap();
    let a = cache
        .search(
            "client_names",
            sleeping["DisplayName"].as_str().unwrap(),
            None,
        )
        .unwrap();
    let hit = a.results.iter().find(|h| h.id == id_of(sleeping)).unwrap();
    assert!(!hit.active);

    let st = cache.status().await.unwrap();
    assert_eq!(st.realm.as_deref(), Some(q.sim.realm_id().as_str()));
    assert_eq!(st.counts.customers, customers.len() as u64);
    assert!(st.last_full_at.is_some() && st.last_incremental_at.is_none());
    assert!(st.age_seconds.unwrap() < 60);
    assert!(!st.refreshing);
    assert_eq!(st.last_error, None);
    assert!(cache.age().unwrap() < Duration::from_secs(60));
    let idx = cache.indexes_status();
    let clients = idx.iter().find(|i| i.name == "client_names").unwrap();
    assert_eq!(clients.entries, customers.len());
    let parts = idx.iter().find(|i| i.name == "part_names").unwrap();
    assert_eq!(parts.alias_of, Some("product_names"));

    // The rows as QuickBooks sent them.
    let rows = cache.data("customers", 5).await.unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows
        .iter()
        .all(|r| r["Id"].is_string() && r["MetaData"].is_object()));
    assert_eq!(
        cache.data("invoices", 10).await.unwrap()[0]["DocNumber"],
        "INV-1"
    );
    let err = cache.data("clients", 5).await.unwrap_err();
    assert!(matches!(err, CacheError::UnknownEntity { .. }));
    assert!(err
        .to_string()
        .contains("customers, vendors, items or invoices"));

    // Kept on disk: a restart searches at once, without asking QuickBooks.
    drop(cache);
    let before = q.sim.requests(QUERY_ROUTE);
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    let name = customers[1234]["DisplayName"].as_str().unwrap();
    let a = cache.search("client_names", name, None).unwrap();
    assert_eq!(a.results[0].id, id_of(&customers[1234]));
    assert_eq!(q.sim.requests(QUERY_ROUTE), before);
    assert!(cache.age().is_some());
}

#[tokio::test]
async fn change_data_capture_brings_creations_changes_and_deletions() {
    let (q, cfg) = connected().await;
    let customers = q.sim.seed_customers(1500);
    let items = q.sim.seed_items(300);
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    cache.refresh(false).await.unwrap();
    let (queries, cdcs) = (q.sim.requests(QUERY_ROUTE), q.sim.requests(CDC_ROUTE));

    // What people did in QuickBooks meanwhile.
    let new_customer = q.sim.seed_customer("Nour Al-Huda Bakery", true);
    q.sim
        .update_entity(
            "Customer",
            &customers[10],
            json!({"DisplayName": "Renamed Customer Co"}),
        )
        .unwrap();
    q.sim
        .update_entity("Customer", &customers[11], json!({"Active": false}))
        .unwrap();
    let gone = q.sim.customers()[20]["DisplayName"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(q.sim.delete_entity("Customer", &customers[20]));
    let new_item = q.sim.seed_item("Pistachio Ice Cream", Some("ICE-1"));
    q.sim
        .update_entity(
            "Item",
            &items[5],
            json!({"Name": "Renamed Item", "UnitPrice": 9.75}),
        )
        .unwrap();
    assert!(q.sim.delete_entity("Item", &items[7]));

    let report = cache.refresh(false).await.unwrap();
    assert_eq!(report.kind, RefreshKind::Incremental, "{report:?}");
    assert!(
        report.reason.starts_with("changes since"),
        "{}",
        report.reason
    );
    assert_eq!(q.sim.requests(CDC_ROUTE) - cdcs, 1, "one cdc for the four");
    assert_eq!(q.sim.requests(QUERY_ROUTE), queries, "no query");
    assert_eq!(report.requests, 1);
    assert_eq!(
        (report.customers.upserted, report.customers.deleted),
        (3, 1)
    );
    assert_eq!((report.items.upserted, report.items.deleted), (2, 1));
    assert_eq!(report.customers.rows, 1500);
    assert_eq!(report.items.rows, 300);

    let a = cache.search("client_names", "al-huda", None).unwrap();
    assert_eq!(a.results[0].id, new_customer);
    let a = cache
        .search("client_names", "renamed customer", None)
        .unwrap();
    assert_eq!(
        (a.total, a.results[0].id.as_str()),
        (1, customers[10].as_str())
    );
    let dormant = q.sim.customers()[11]["DisplayName"]
        .as_str()
        .unwrap()
        .to_string();
    let a = cache.search("client_names", &dormant, None).unwrap();
    assert!(
        !a.results
            .iter()
            .find(|h| h.id == customers[11])
            .unwrap()
            .active
    );
    assert!(
        !cache
            .search("client_names", &gone, Some(100))
            .unwrap()
            .results
            .iter()
            .any(|h| h.id == customers[20]),
        "the deleted customer is gone"
    );
    let a = cache.search("product_names", "ice-1", None).unwrap();
    assert_eq!(
        (a.results[0].id.as_str(), a.results[0].matched),
        (new_item.as_str(), "sku")
    );
    let a = cache.search("product_names", "renamed item", None).unwrap();
    assert_eq!(a.results[0].unit_price, Some("9.75".parse().unwrap()));
    let kept: Vec<Value> = cache.data("items", 1000).await.unwrap();
    assert!(!kept.iter().any(|i| id_of(i) == items[7]));
    let st = cache.status().await.unwrap();
    assert!(st.last_incremental_at.is_some());

    // A few changes went to the indexes' overlay, without a rebuild.
    let pending = |name: &str| {
        cache
            .indexes_status()
            .into_iter()
            .find(|i| i.name == name)
            .unwrap()
            .pending
    };
    assert_eq!(pending("client_names"), 4);
    assert_eq!(pending("product_names"), 3);

    // Nothing new: one cdc, nothing written.
    let again = cache.refresh(false).await.unwrap();
    assert_eq!(again.kind, RefreshKind::Incremental);
    assert_eq!(q.sim.requests(CDC_ROUTE) - cdcs, 2);

    // Many changes: the index is rebuilt from the database instead.
    for id in &items[100..200] {
        q.sim
            .update_entity("Item", id, json!({"Description": "Summer price list"}))
            .unwrap();
    }
    for id in &customers[100..600] {
        q.sim
            .update_entity("Customer", id, json!({"CompanyName": "Summer Promotions"}))
            .unwrap();
    }
    let r = cache.refresh(false).await.unwrap();
    assert_eq!(
        (r.kind, r.customers.upserted, r.items.upserted),
        (RefreshKind::Incremental, 500, 100)
    );
    assert_eq!(pending("client_names"), 0, "rebuilt");
    assert_eq!(pending("product_names"), 103, "still in the overlay");
    assert_eq!(
        cache
            .search("client_names", "summer promo", None)
            .unwrap()
            .total,
        500
    );
    assert_eq!(
        cache
            .search("product_descriptions", "summer price", None)
            .unwrap()
            .total,
        100
    );
}

#[tokio::test]
async fn a_change_set_too_big_for_one_cdc_answer_reloads_that_entity() {
    let (q, cfg) = connected().await;
    let customers = q.sim.seed_customers(1500);
    let items = q.sim.seed_items(20);
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    cache.refresh(false).await.unwrap();
    let (queries, cdcs) = (q.sim.requests(QUERY_ROUTE), q.sim.requests(CDC_ROUTE));
    // 1,200 customers changed (an import), and one item.
    for id in &customers[..1200] {
        q.sim
            .update_entity("Customer", id, json!({"Notes": "imported"}))
            .unwrap();
    }
    q.sim
        .update_entity(
            "Item",
            &items[3],
            json!({"Description": "Now with a description"}),
        )
        .unwrap();
    let report = cache.refresh(false).await.unwrap();
    // One cdc for all (cut at 1,000), one per entity, and the customers
    // read again in full; the item's change applied from its own cdc.
    assert_eq!(q.sim.requests(CDC_ROUTE) - cdcs, 5);
    assert_eq!(q.sim.requests(QUERY_ROUTE) - queries, pages(1500));
    assert!(report.customers.full && !report.items.full, "{report:?}");
    assert_eq!(report.items.upserted, 1);
    assert_eq!(report.customers.rows, 1500);
    assert!(
        report.reason.contains("customers changed too much"),
        "{}",
        report.reason
    );
    let rows = cache.data("customers", 1000).await.unwrap();
    assert!(rows.iter().filter(|c| c["Notes"] == "imported").count() >= 999);
    let a = cache
        .search("product_descriptions", "now with a desc", None)
        .unwrap();
    assert_eq!(a.results[0].id, items[3]);
}

#[tokio::test]
async fn a_cache_older_than_cdc_reaches_is_loaded_in_full() {
    let (q, cfg) = connected().await;
    q.sim.seed_customers(1100);
    let clock = ManualClock::new();
    let cache = open_cache(&cfg, HOUR, clock.clone()).await;
    cache.refresh(false).await.unwrap();
    let full_pages = pages(1100) + 3;
    assert_eq!(q.sim.requests(QUERY_ROUTE), full_pages);

    // 29 days later: still within change data capture's reach.
    clock.advance(29);
    let r = cache.refresh(false).await.unwrap();
    assert_eq!(r.kind, RefreshKind::Incremental);
    assert_eq!(q.sim.requests(CDC_ROUTE), 1);
    assert_eq!(cache.age(), Some(Duration::ZERO));

    // Another 31 days without a refresh: beyond it.
    clock.advance(31);
    assert_eq!(cache.age(), Some(Duration::from_secs(31 * 86_400)));
    let r = cache.refresh(false).await.unwrap();
    assert_eq!(r.kind, RefreshKind::Full);
    assert!(r.reason.contains("30 days"), "{}", r.reason);
    assert_eq!(q.sim.requests(CDC_ROUTE), 1, "no cdc beyond its window");
    assert_eq!(q.sim.requests(QUERY_ROUTE), 2 * full_pages);
    assert_eq!(r.customers.rows, 1100);
}

#[tokio::test]
async fn another_company_wipes_the_cache() {
    let (q, cfg) = connected().await;
    q.sim.seed_customers(40);
    let first = q.sim.customers()[0]["DisplayName"]
        .as_str()
        .unwrap()
        .to_string();
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    cache.refresh(false).await.unwrap();
    assert_eq!(cache.search("client_names", &first, None).unwrap().total, 1);
    drop(cache);

    // The till is connected to another company.
    let other = QuickbooksSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        QuickbooksSandboxOptions {
            realm_id: "4620816365000001".into(),
            ..sim_options()
        },
    )
    .await
    .unwrap();
    other.seed_customer("Other Company Customer", true);
    let mut cfg2 = q.config(json!({"auth_base": other.auth_base(), "api_base": other.api_base()}));
    unlimited(&mut cfg2);

    // Opened before the new connection is known: the copy stays until the
    // first refresh sees the other realm.
    let cache = open_cache(&cfg2, HOUR, Arc::new(SystemClock)).await;
    assert_eq!(cache.search("client_names", &first, None).unwrap().total, 1);
    connect_to(&other, &cfg2, &q.redirect).await;
    let r = cache.refresh(false).await.unwrap();
    assert_eq!(r.kind, RefreshKind::Full);
    assert!(r.reason.contains("another company"), "{}", r.reason);
    assert_eq!(r.realm, "4620816365000001");
    assert_eq!(r.customers.rows, 1);
    assert_eq!(cache.search("client_names", &first, None).unwrap().total, 0);
    assert_eq!(
        cache
            .search("client_names", "other company", None)
            .unwrap()
            .total,
        1
    );
    let st = cache.status().await.unwrap();
    assert_eq!(st.realm.as_deref(), Some("4620816365000001"));
    drop(cache);

    // Connected back to the first company, and opened: the copy is not of
    // it, so it is wiped at once, before anything is searched.
    q.connect(&cfg).await;
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    assert_eq!(cache.status().await.unwrap().counts.customers, 0);
    assert_eq!(
        cache
            .search("client_names", "other company", None)
            .unwrap()
            .total,
        0
    );
    let r = cache.refresh(false).await.unwrap();
    assert_eq!((r.kind, r.customers.rows), (RefreshKind::Full, 40));
}

#[tokio::test]
async fn search_answers_from_the_copy() {
    let (q, cfg) = connected().await;
    q.sim.seed_customers(3000);
    for name in [
        "Zayed Store",
        "Abu Zayed",
        "Kazayo Smith",
        "ZAYNAB",
        "أحمد الخطيب",
        "محمد احمد",
    ] {
        q.sim.seed_customer(name, true);
    }
    q.sim.seed_customer("Zayan Dormant", false);
    q.sim.seed_items(500);
    q.sim.seed_item("Arabic Coffee Cardamom", Some("ZZ-COF-9"));
    q.sim.seed_vendor("Beans Wholesale Inc", true).unwrap();
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    cache.refresh(false).await.unwrap();

    // Prefix, then word prefix, then substring; active first; shorter first.
    let a = cache.search("client_names", "zAY", None).unwrap();
    assert_eq!(
        names(&a),
        vec![
            "ZAYNAB",
            "Zayed Store",
            "Zayan Dormant",
            "Abu Zayed",
            "Kazayo Smith"
        ]
    );
    assert_eq!(a.total, 5);
    let ranks: Vec<&str> = a.results.iter().map(|h| h.rank).collect();
    assert_eq!(
        ranks,
        ["prefix", "prefix", "prefix", "word_prefix", "substring"]
    );
    // Arabic, with and without hamza.
    let a = cache.search("client_names", "احمد", Some(100)).unwrap();
    let pos = |n: &str| names(&a).iter().position(|x| *x == n).unwrap();
    assert!(pos("أحمد الخطيب") < pos("محمد احمد"), "prefix first");
    // Many matches: 15 by default, 100 at most, the total before the limit.
    let a = cache.search("client_names", "a", None).unwrap();
    assert_eq!(a.results.len(), 15);
    assert!(a.total > 1000, "{}", a.total);
    let b = cache.search("client_names", "a", Some(10_000)).unwrap();
    assert_eq!((b.results.len(), b.total), (100, a.total));
    // Emails and company names are searched too.
    let with_email = q
        .sim
        .customers()
        .into_iter()
        .find(|c| c["PrimaryEmailAddr"]["Address"].is_string())
        .unwrap();
    let email = with_email["PrimaryEmailAddr"]["Address"].as_str().unwrap();
    let a = cache.search("client_names", email, None).unwrap();
    assert_eq!(
        (a.results[0].id.clone(), a.results[0].matched),
        (id_of(&with_email), "email")
    );
    // Products: names and SKUs; parts: SKUs; descriptions apart.
    let a = cache.search("product_names", "zz-cof", None).unwrap();
    assert_eq!(names(&a), vec!["Arabic Coffee Cardamom"]);
    assert_eq!(
        cache.search("part_names", "coffee", None).unwrap(),
        cache.search("product_names", "coffee", None).unwrap()
    );
    let a = cache.search("part_numbers", "ZZ-COF-9", None).unwrap();
    assert_eq!((a.total, a.results[0].matched), (1, "sku"));
    assert_eq!(
        cache
            .search("part_numbers", "cardamom", None)
            .unwrap()
            .total,
        0
    );
    assert!(
        cache
            .search("product_descriptions", "coffee", None)
            .unwrap()
            .total
            > 0
    );
    let a = cache.search("vendor_names", "beans", None).unwrap();
    assert_eq!(
        (names(&a), a.results[0].kind.as_str()),
        (vec!["Beans Wholesale Inc"], "Vendor")
    );
    let err = cache.search("customers", "x", None).unwrap_err();
    assert!(matches!(err, SearchError::UnknownIndex { .. }));
    assert!(err.to_string().contains("client_names"), "{err}");
    let a = cache.search("client_names", "", None).unwrap();
    assert_eq!((a.results.len(), a.total), (0, 0));
}

#[tokio::test]
async fn the_push_resolves_from_the_cache_and_keeps_what_it_creates() {
    let (q, cfg) = connected().await;
    let customer = q.sim.seed_customer("Cached Customer", true);
    let item = q.sim.seed_item("Cached Item", Some("CI-1"));
    let by_sku = q.sim.seed_item("Listed Under Another Name", Some("SKU-77"));
    q.sim.seed_customers(200);
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    cache.refresh(false).await.unwrap();
    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let p = pusher(&cfg, client.clone()).with_cache(cache.clone());
    let mut o = Outbox::open(&cfg.data_dir).unwrap();

    // In the cache: only the DocNumber check is a query.
    let q0 = q.sim.requests(QUERY_ROUTE);
    let job = submitted(&mut o, &sale("PC-1", "cached customer", "Cached Item"), 1);
    let out = p.push_one(&job).await;
    assert!(
        matches!(out, PushOutcome::Pushed { existed: false, .. }),
        "{out:?}"
    );
    assert_eq!(
        q.sim.requests(QUERY_ROUTE) - q0,
        1,
        "the DocNumber check only"
    );
    let inv = q
        .sim
        .invoices()
        .into_iter()
        .find(|i| i["DocNumber"] == "PC-1")
        .unwrap();
    assert_eq!(inv["CustomerRef"]["value"], customer.as_str());
    assert_eq!(
        inv["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"],
        item.as_str()
    );
    // An item found by its SKU.
    let mut s = sale("PC-SKU", "Cached Customer", "Unknown Name Here");
    s.lines[0].sku = Some("sku-77".into());
    let job = submitted(&mut o, &s, 2);
    let q1 = q.sim.requests(QUERY_ROUTE);
    assert!(matches!(p.push_one(&job).await, PushOutcome::Pushed { .. }));
    assert_eq!(q.sim.requests(QUERY_ROUTE) - q1, 1);
    let inv = q
        .sim
        .invoices()
        .into_iter()
        .find(|i| i["DocNumber"] == "PC-SKU")
        .unwrap();
    assert_eq!(
        inv["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"],
        by_sku.as_str()
    );

    // Not in the cache: looked up (DocNumber, customer, item), created,
    // and kept in the cache at once.
    let q2 = q.sim.requests(QUERY_ROUTE);
    let job = submitted(
        &mut o,
        &sale("PC-2", "Walk-in Newcomer", "Brand New Gadget"),
        3,
    );
    assert!(matches!(p.push_one(&job).await, PushOutcome::Pushed { .. }));
    assert_eq!(q.sim.requests(QUERY_ROUTE) - q2, 3);
    assert_eq!(q.sim.requests(CUSTOMER_ROUTE), 1);
    assert_eq!(q.sim.requests(ITEM_ROUTE), 1);
    let a = cache.search("client_names", "newcomer", None).unwrap();
    assert_eq!(names(&a), vec!["Walk-in Newcomer"]);
    assert_eq!(
        cache.search("product_names", "gadget", None).unwrap().total,
        1
    );
    assert!(cache
        .data("customers", 1000)
        .await
        .unwrap()
        .iter()
        .any(|c| c["DisplayName"] == "Walk-in Newcomer"));

    // Another pusher (a restart: nothing remembered in the process) finds
    // them in the cache.
    let p2 = pusher(&cfg, client.clone()).with_cache(cache.clone());
    let q3 = q.sim.requests(QUERY_ROUTE);
    let job = submitted(
        &mut o,
        &sale("PC-3", "Walk-in Newcomer", "Brand New Gadget"),
        4,
    );
    assert!(matches!(
        p2.push_one(&job).await,
        PushOutcome::Pushed { .. }
    ));
    assert_eq!(q.sim.requests(QUERY_ROUTE) - q3, 1);
    assert_eq!(q.sim.requests(CUSTOMER_ROUTE), 1, "not created again");
    // Without the cache, the same push asks for both.
    let p3 = pusher(&cfg, client);
    let q4 = q.sim.requests(QUERY_ROUTE);
    let job = submitted(
        &mut o,
        &sale("PC-4", "Walk-in Newcomer", "Brand New Gadget"),
        5,
    );
    assert!(matches!(
        p3.push_one(&job).await,
        PushOutcome::Pushed { .. }
    ));
    assert_eq!(q.sim.requests(QUERY_ROUTE) - q4, 3);
}

#[tokio::test]
async fn a_stale_cached_reference_is_resolved_again() {
    let (q, cfg) = connected().await;
    let old_customer = q.sim.seed_customer("Stale Co", true);
    let old_item = q.sim.seed_item("Stale Item", None);
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    cache.refresh(false).await.unwrap();
    // Merged away in QuickBooks and entered again under the same name.
    assert!(q.sim.delete_entity("Customer", &old_customer));
    let new_customer = q.sim.seed_customer("Stale Co", true);
    assert_ne!(new_customer, old_customer);

    let client = quickbooks::connect(&cfg, Arc::new(SystemClock)).unwrap();
    let p = pusher(&cfg, client.clone()).with_cache(cache.clone());
    let mut o = Outbox::open(&cfg.data_dir).unwrap();
    let job = submitted(&mut o, &sale("ST-1", "Stale Co", "Stale Item"), 1);
    let out = p.push_one(&job).await;
    assert!(
        matches!(out, PushOutcome::Pushed { existed: false, .. }),
        "{out:?}"
    );
    assert_eq!(
        q.sim.requests(INVOICE_ROUTE),
        2,
        "refused once, then created"
    );
    assert_eq!(q.sim.responses(INVOICE_ROUTE, 400), 1);
    let inv = q
        .sim
        .invoices()
        .into_iter()
        .find(|i| i["DocNumber"] == "ST-1")
        .unwrap();
    assert_eq!(inv["CustomerRef"]["value"], new_customer.as_str());
    assert_eq!(cache.find_customer("Stale Co"), Some(new_customer.clone()));
    assert_eq!(q.sim.invoices().len(), 1);

    // The same in a batch: the item went stale; both invoices still made.
    assert!(q.sim.delete_entity("Item", &old_item));
    let new_item = q.sim.seed_item("Stale Item", None);
    let p = pusher(&cfg, client).with_cache(cache.clone());
    let jobs = vec![
        submitted(&mut o, &sale("ST-2", "Stale Co", "Stale Item"), 2),
        submitted(&mut o, &sale("ST-3", "Stale Co", "Stale Item"), 3),
    ];
    let outcomes = p.push_batch(jobs).await;
    for (_, o) in &outcomes {
        assert!(
            matches!(o, PushOutcome::Pushed { existed: false, .. }),
            "{o:?}"
        );
    }
    for n in ["ST-2", "ST-3"] {
        let inv = q
            .sim
            .invoices()
            .into_iter()
            .find(|i| i["DocNumber"] == n)
            .unwrap();
        assert_eq!(
            inv["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"],
            new_item.as_str()
        );
    }
    assert_eq!(cache.find_item("Stale Item", None), Some(new_item));
    assert_eq!(q.sim.invoices().len(), 3, "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_make_one() {
    let (q, cfg) = connected().await;
    q.sim.seed_customers(1500);
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    // The first page is slow: every caller arrives while it runs.
    q.sim
        .inject(QUERY_ROUTE, Fault::Delay(Duration::from_millis(300)), 1);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.refresh(false).await })
        })
        .collect();
    wait_until(Duration::from_secs(10), "a refresh running", || async {
        cache.status().await.unwrap().refreshing
    })
    .await;
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await.unwrap().unwrap());
    }
    assert!(
        reports.windows(2).all(|w| w[0] == w[1]),
        "one shared result"
    );
    assert_eq!(q.sim.requests(QUERY_ROUTE), pages(1500) + 3, "one load");
    assert!(!cache.status().await.unwrap().refreshing);

    // A full load asked for while an incremental one runs waits for it,
    // then runs.
    q.sim
        .inject(CDC_ROUTE, Fault::Delay(Duration::from_millis(300)), 1);
    let inc = {
        let c = cache.clone();
        tokio::spawn(async move { c.refresh(false).await })
    };
    wait_until(Duration::from_secs(10), "the cdc running", || async {
        q.sim.requests(CDC_ROUTE) == 1
    })
    .await;
    let full = cache.refresh(true).await.unwrap();
    assert_eq!(full.kind, RefreshKind::Full);
    assert_eq!(inc.await.unwrap().unwrap().kind, RefreshKind::Incremental);
    assert_eq!(q.sim.requests(QUERY_ROUTE), 2 * (pages(1500) + 3));
}

#[tokio::test]
async fn a_failed_load_keeps_the_previous_copy() {
    let (q, cfg) = connected().await;
    q.sim.seed_customers(1500);
    let cache = open_cache(&cfg, HOUR, Arc::new(SystemClock)).await;
    cache.refresh(false).await.unwrap();
    q.sim.seed_customers(600);
    // The second page of the next load fails (503 is not resubmitted).
    q.sim.inject(QUERY_ROUTE, Fault::Delay(Duration::ZERO), 1);
    q.sim.inject(
        QUERY_ROUTE,
        Fault::Status {
            status: 503,
            retry_after: None,
            html: false,
        },
        1,
    );
    let err = cache.refresh(true).await.unwrap_err();
    assert!(
        matches!(err, CacheError::Qbo(QboError::Server { status: 503, .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("retry later"), "{err}");
    let st = cache.status().await.unwrap();
    assert_eq!(st.counts.customers, 1500, "the previous copy is whole");
    assert!(st.last_error.unwrap().contains("503"));
    assert_eq!(cache.indexes_status()[0].entries, 1500);
    let r = cache.refresh(true).await.unwrap();
    assert_eq!(r.customers.rows, 2100);
    assert_eq!(cache.status().await.unwrap().last_error, None);
    assert_eq!(cache.indexes_status()[0].entries, 2100);
}

#[tokio::test]
async fn run_waits_while_quickbooks_needs_reconnecting_then_loads_by_itself() {
    let q = Qbo::start(QuickbooksSandboxOptions {
        limits: QboLimits {
            enforce: false,
            ..QboLimits::default()
        },
        ..sim_options()
    })
    .await;
    let mut cfg = q.config(json!({}));
    unlimited(&mut cfg);
    q.sim.seed_customers(120);
    // Not connected yet. Every 2 s, so the connection is looked at every 2 s.
    let cache = open_cache(&cfg, Duration::from_secs(2), Arc::new(SystemClock)).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = {
        let c = cache.clone();
        tokio::spawn(async move {
            c.run(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    wait_until(
        Duration::from_secs(10),
        "waiting for a reconnect",
        || async { cache.status().await.unwrap().reconnect_needed.is_some() },
    )
    .await;
    let why = cache.status().await.unwrap().reconnect_needed.unwrap();
    assert!(why.contains("qbo connect"), "{why}");
    // Nothing asked of QuickBooks (nor of its token endpoint).
    assert_eq!(cache.status().await.unwrap().next_refresh_at, None);
    assert_eq!(q.sim.requests(QUERY_ROUTE) + q.sim.requests(TOKEN_ROUTE), 0);
    let err = cache.refresh(false).await.unwrap_err();
    assert!(
        err.needs_person() && err.to_string().contains("qbo connect"),
        "{err}"
    );

    // Someone connects: `run` notices by itself and loads.
    q.connect(&cfg).await;
    wait_until(Duration::from_secs(20), "the first load", || async {
        cache.status().await.unwrap().counts.customers == 120
    })
    .await;
    let st = cache.status().await.unwrap();
    assert_eq!(st.reconnect_needed, None);
    assert!(st.last_full_at.is_some());
    // Then incrementally, every 2 s.
    wait_until(
        Duration::from_secs(20),
        "an incremental refresh",
        || async { q.sim.requests(CDC_ROUTE) >= 1 },
    )
    .await;
    assert!(cache.status().await.unwrap().next_refresh_at.is_some());
    // A full load on request.
    let before = q.sim.requests(QUERY_ROUTE);
    cache.request_full();
    wait_until(
        Duration::from_secs(20),
        "the requested full load",
        || async { q.sim.requests(QUERY_ROUTE) >= before + 4 },
    )
    .await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run stops")
        .unwrap();
    assert_eq!(cache.status().await.unwrap().next_refresh_at, None);
}
