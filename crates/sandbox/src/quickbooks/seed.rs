//! Seeding: single entities for tests, bulk seeding of realistic companies.

use super::*;

/// The customer named `name` (its Active flag set as asked), created if
/// there is none: a company cannot hold two with one name.
pub(super) fn seed_customer(db: &mut Db, name: &str, active: bool) -> String {
    let existing = db
        .tables
        .party_named(name, None)
        .filter(|(k, _)| *k == Kind::Customer)
        .map(|(_, r)| r.clone());
    let body = match existing {
        Some(row) if is_active(&row) == active => return row_id(&row).to_string(),
        Some(row) => json!({"Id": row_id(&row), "SyncToken": row["SyncToken"],
                            "sparse": true, "Active": active}),
        None => json!({"DisplayName": name, "Active": active}),
    };
    match upsert(db, Kind::Customer, body, None) {
        Ok(row) => row_id(&row).to_string(),
        // Only a vendor can hold the name: seed regardless, as a company
        // migrated from elsewhere might.
        Err(_) => force_row(
            db,
            Kind::Customer,
            json!({"DisplayName": name, "FullyQualifiedName": name, "Active": active,
                   "Balance": 0.0}),
        ),
    }
}

pub(super) fn seed_item(db: &mut Db, name: &str, sku: Option<&str>) -> String {
    if let Some(row) = db.tables.item_named(name, None) {
        return row_id(row).to_string();
    }
    let mut body = json!({"Name": name, "Type": "Service", "IncomeAccountRef": {"value": "1"},
                          "UnitPrice": 0});
    if let Some(s) = sku {
        body["Sku"] = json!(s);
    }
    match upsert(db, Kind::Item, body.clone(), None) {
        Ok(row) => row_id(&row).to_string(),
        Err(_) => force_row(db, Kind::Item, body),
    }
}

/// An invoice of 100.00 for one "Services" line, as if entered in the
/// QuickBooks UI: no duplicate number or length check, any customer.
pub(super) fn seed_invoice(db: &mut Db, doc_number: &str, customer: &str) -> String {
    let cust = match db.tables.party_named(customer, None) {
        Some((Kind::Customer, r)) => row_id(r).to_string(),
        _ => seed_customer(db, customer, true),
    };
    let item = seed_item(db, "Services", None);
    let tax = if db.opts.us_company { "NON" } else { ZERO_CODE };
    let body = json!({
        "DocNumber": doc_number,
        "CustomerRef": {"value": cust},
        "Line": [{"Amount": 100.0, "DetailType": "SalesItemLineDetail",
                  "SalesItemLineDetail": {"ItemRef": {"value": item}, "Qty": 1,
                                          "UnitPrice": 100.0, "TaxCodeRef": {"value": tax}}}],
    });
    let checks = Checks {
        duplicate_doc: false,
        strict: false,
    };
    match upsert(db, Kind::Invoice, body.clone(), Some(checks)) {
        Ok(row) => row_id(&row).to_string(),
        Err(_) => force_row(db, Kind::Invoice, body),
    }
}

/// The `i`-th generated party of `kind` (customer or vendor).
pub(super) fn seeded_party(kind: Kind, i: usize) -> Map<String, Value> {
    use names::*;
    let mut m = Map::new();
    // Every third is Arabic; each script counts its own sequence so that
    // names stay unique.
    let arabic = i % 3 == 2;
    let j = if arabic { i / 3 } else { i / 3 * 2 + i % 3 };
    let (display, company, email) = if kind == Kind::Vendor {
        let ([last, what], round) = pick(j, [&LAST[..], &SUPPLIER[..]]);
        let name = if arabic {
            let ([last], round) = pick(j, [&AR_LAST[..]]);
            numbered(format!("شركة {last} للتوريدات"), round)
        } else {
            numbered(format!("{last} {what}"), round)
        };
        let email = format!("orders{i}@supplier.example.jo");
        (name.clone(), Some(name), Some(email))
    } else if arabic {
        let ([first, middle, last], round) = pick(j, [&AR_FIRST[..], &AR_MIDDLE[..], &AR_LAST[..]]);
        let company = i
            .is_multiple_of(4)
            .then(|| format!("{} {last}", AR_COMPANY[i / 4 % AR_COMPANY.len()]));
        let email = i
            .is_multiple_of(3)
            .then(|| format!("customer{i}@example.jo"));
        (
            numbered(format!("{first} {middle} {last}"), round),
            company,
            email,
        )
    } else {
        let ([first, middle, last], round) = pick(j, [&FIRST[..], &MIDDLE[..], &LAST[..]]);
        let company = i
            .is_multiple_of(4)
            .then(|| format!("{last} {}", COMPANY[i / 4 % COMPANY.len()]));
        let email = i.is_multiple_of(2).then(|| {
            let user: String = format!("{first}.{last}")
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            format!("{user}{j}@example.jo")
        });
        m.insert("GivenName".into(), json!(first));
        m.insert("FamilyName".into(), json!(last));
        (
            numbered(format!("{first} {middle} {last}"), round),
            company,
            email,
        )
    };
    m.insert("DisplayName".into(), json!(display));
    m.insert("PrintOnCheckName".into(), json!(display));
    if let Some(c) = company {
        m.insert("CompanyName".into(), json!(c));
    }
    if let Some(e) = email {
        m.insert("PrimaryEmailAddr".into(), json!({"Address": e}));
    }
    m.insert("Active".into(), json!(i % 20 != 19));
    m.insert("Balance".into(), json!(0.0));
    if kind == Kind::Customer {
        m.insert("FullyQualifiedName".into(), json!(display));
        m.insert("Job".into(), json!(false));
        m.insert("BillWithParent".into(), json!(false));
        m.insert("Taxable".into(), json!(true));
        m.insert("BalanceWithJobs".into(), json!(0.0));
        m.insert("PreferredDeliveryMethod".into(), json!("Print"));
    } else {
        m.insert("Vendor1099".into(), json!(false));
    }
    m
}

/// The `i`-th generated item.
pub(super) fn seeded_item(i: usize) -> Map<String, Value> {
    use names::*;
    let ([p, v, z], round) = digits(i, [PRODUCT.len(), VARIANT.len(), SIZE.len()]);
    let ((base, code), variant, size) = (PRODUCT[p], VARIANT[v], SIZE[z]);
    let name = if variant.is_empty() {
        format!("{base} {size}")
    } else {
        format!("{base} {variant} {size}")
    };
    let name = numbered(name, round);
    let ty = ["Inventory", "NonInventory", "Service"][i % 3];
    // 0.25 to 200.00 in steps of 0.25.
    let price = Decimal::new(25 * (1 + (i * 7919) % 800) as i64, 2);
    let mut m = Map::new();
    m.insert("Name".into(), json!(name));
    m.insert("FullyQualifiedName".into(), json!(name));
    m.insert("Sku".into(), json!(format!("{code}-{:05}", i + 1)));
    let description = if variant.is_empty() {
        format!("{base}, {size}")
    } else {
        format!("{base} ({}), {size}", variant.to_lowercase())
    };
    m.insert("Description".into(), json!(description));
    m.insert("Type".into(), json!(ty));
    m.insert("UnitPrice".into(), num(price));
    m.insert("Taxable".into(), json!(true));
    m.insert("Active".into(), json!(i % 25 != 24));
    m.insert(
        "IncomeAccountRef".into(),
        json!({"value": "79", "name": "Sales of Product Income"}),
    );
    if ty == "Inventory" {
        m.insert("TrackQtyOnHand".into(), json!(true));
        m.insert("QtyOnHand".into(), json!((i * 31) % 500));
        m.insert("InvStartDate".into(), json!("2024-01-01"));
        m.insert(
            "AssetAccountRef".into(),
            json!({"value": "81", "name": "Inventory Asset"}),
        );
        m.insert(
            "ExpenseAccountRef".into(),
            json!({"value": "80", "name": "Cost of Goods Sold"}),
        );
    } else {
        m.insert("TrackQtyOnHand".into(), json!(false));
    }
    m
}

/// Stores `n` generated entities of `kind` directly (no per-row search for
/// an existing Id: they are new), dated [`SEEDED_AGE_DAYS`] ago.
pub(super) fn bulk_seed(db: &mut Db, kind: Kind, n: usize) -> Vec<String> {
    let slot = match kind {
        Kind::Customer => 0,
        Kind::Vendor => 1,
        _ => 2,
    };
    let first = db.bulk_seeded[slot];
    db.bulk_seeded[slot] += n;
    let when = meta_time(Utc::now() - chrono::Duration::days(SEEDED_AGE_DAYS));
    let mut ids = Vec::with_capacity(n);
    for i in first..first + n {
        let content = match kind {
            Kind::Item => seeded_item(i),
            _ => seeded_party(kind, i),
        };
        let id = db.tables.next_id(kind);
        let mut row = Map::new();
        row.insert("Id".into(), json!(id));
        row.insert("SyncToken".into(), json!("0"));
        row.insert(
            "MetaData".into(),
            json!({"CreateTime": when, "LastUpdatedTime": when}),
        );
        row.extend(content);
        row.insert("domain".into(), json!("QBO"));
        row.insert("sparse".into(), json!(false));
        db.tables.rows[kind.index()].push(row);
        ids.push(id);
    }
    ids
}

/// Stores `v` as a new row without validation (seeding's last resort).
pub(super) fn force_row(db: &mut Db, kind: Kind, v: Value) -> String {
    let id = db.tables.next_id(kind);
    let now = meta_now();
    let mut row = Map::new();
    row.insert("Id".into(), json!(id));
    row.insert("SyncToken".into(), json!("0"));
    row.insert(
        "MetaData".into(),
        json!({"CreateTime": now, "LastUpdatedTime": now}),
    );
    if let Value::Object(o) = v {
        for (k, v) in o {
            row.entry(k).or_insert(v);
        }
    }
    db.tables.put(kind, row);
    id
}
