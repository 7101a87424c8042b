//! Entities: validation and construction (customers, vendors, items,
//! invoices and their totals), create and update.

use super::*;

/// Checks that relax when the sandbox seeds data for a test (a company
/// may hold what the API would refuse today).
#[derive(Clone, Copy)]
pub(super) struct Checks {
    pub(super) duplicate_doc: bool,
    pub(super) strict: bool,
}

/// Fields the server owns: whatever the client sends for them is replaced.
pub(super) const SERVER_FIELDS: [&str; 6] =
    ["Id", "SyncToken", "MetaData", "sparse", "domain", "status"];

pub(super) fn bool_field(m: &Row, name: &str) -> Result<Option<bool>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(unsupported_property(format!("{name} (value {other})"))),
    }
}

/// A customer or vendor (one namespace of names).
pub(super) fn build_party(
    t: &Tables,
    kind: Kind,
    mut m: Row,
    self_id: Option<&str>,
) -> Result<Row, ApiError> {
    let name = str_field(&m, "DisplayName")
        .map(str::to_string)
        .ok_or_else(|| required("DisplayName"))?;
    if name.chars().count() > 500 {
        return Err(string_length("DisplayName", 500, name.chars().count()));
    }
    if t.party_named(&name, self_id.map(|id| (kind, id))).is_some() {
        return Err(ApiError::validation(
            "6240",
            "Duplicate Name Exists Error",
            "The name supplied already exists. : Another customer, vendor or employee is already using this name. Please use a different name.".into(),
        ));
    }
    let active = bool_field(&m, "Active")?.unwrap_or(true);
    m.insert("DisplayName".into(), json!(name));
    m.insert("Active".into(), json!(active));
    m.entry("PrintOnCheckName").or_insert_with(|| json!(name));
    if kind == Kind::Customer {
        m.insert("FullyQualifiedName".into(), json!(name));
        m.entry("Job").or_insert(json!(false));
        m.entry("BillWithParent").or_insert(json!(false));
        m.entry("Taxable").or_insert(json!(true));
        m.entry("Balance").or_insert(json!(0.0));
        m.entry("BalanceWithJobs").or_insert(json!(0.0));
        m.entry("PreferredDeliveryMethod").or_insert(json!("Print"));
    } else {
        m.entry("Vendor1099").or_insert(json!(false));
        m.entry("Balance").or_insert(json!(0.0));
    }
    Ok(m)
}

pub(super) fn string_length(field: &str, max: usize, got: usize) -> ApiError {
    ApiError::validation(
        "2050",
        "String length is either shorter or longer than supported by specification",
        format!("String length specified does not match the supported length. Min:0 Max:{max} supported. Supplied length:{got}"),
    )
    .element(field)
}

/// An account reference of an item: must name an existing, active account
/// of one of `types`.
pub(super) fn account_ref(
    t: &Tables,
    m: &mut Row,
    field: &str,
    types: &[&str],
) -> Result<(), ApiError> {
    let what = types.join(" or ");
    let id = ref_value(m.get(field)).ok_or_else(|| {
        business(format!(
            "{field} is required for this item: reference an {what} account"
        ))
        .element(field)
    })?;
    let acct = t
        .get(Kind::Account, &id)
        .filter(|a| is_active(a))
        .filter(|a| {
            a.get("AccountType")
                .and_then(Value::as_str)
                .is_some_and(|ty| types.contains(&ty))
        })
        .ok_or_else(|| {
            business(format!(
                "{field} {id} is not an {what} account of this company"
            ))
            .element(field)
        })?;
    let name = acct.get("Name").cloned().unwrap_or(Value::Null);
    m.insert(field.into(), json!({"value": id, "name": name}));
    Ok(())
}

pub(super) fn build_item(t: &Tables, mut m: Row, self_id: Option<&str>) -> Result<Row, ApiError> {
    let name = str_field(&m, "Name")
        .map(str::to_string)
        .ok_or_else(|| required("Name"))?;
    if name.chars().count() > 100 {
        return Err(string_length("Name", 100, name.chars().count()));
    }
    if t.item_named(&name, self_id).is_some() {
        return Err(ApiError::validation(
            "6240",
            "Duplicate Name Exists Error",
            "The name supplied already exists. : Another product or service is already using this name. Please use a different name.".into(),
        ));
    }
    let ty = str_field(&m, "Type").map(str::to_string).ok_or_else(|| {
        business("Type is required: Service, NonInventory or Inventory").element("Type")
    })?;
    let ty = ["Service", "NonInventory", "Inventory"]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(&ty))
        .ok_or_else(|| {
            business(format!(
                "Type {ty} is not supported: use Service, NonInventory or Inventory"
            ))
            .element("Type")
        })?;
    if let Some(sku) = m.get("Sku") {
        if !sku.is_string() && !sku.is_null() {
            return Err(unsupported_property(format!("Sku (value {sku})")));
        }
    }
    account_ref(t, &mut m, "IncomeAccountRef", &["Income", "Other Income"])?;
    if ty == "Inventory" {
        account_ref(t, &mut m, "AssetAccountRef", &["Other Current Asset"])?;
        account_ref(
            t,
            &mut m,
            "ExpenseAccountRef",
            &["Cost of Goods Sold", "Expense"],
        )?;
        for f in ["QtyOnHand", "InvStartDate"] {
            if m.get(f).is_none_or(Value::is_null) {
                return Err(required(f));
            }
        }
        m.insert("TrackQtyOnHand".into(), json!(true));
    } else {
        m.entry("TrackQtyOnHand").or_insert(json!(false));
    }
    let active = bool_field(&m, "Active")?.unwrap_or(true);
    m.insert("Name".into(), json!(name));
    m.insert("FullyQualifiedName".into(), json!(name));
    m.insert("Type".into(), json!(ty));
    m.insert("Active".into(), json!(active));
    m.entry("UnitPrice").or_insert(json!(0));
    m.entry("Taxable").or_insert(json!(false));
    Ok(m)
}

/// Tax codes a line may carry.
pub(super) fn valid_tax_codes(us_company: bool) -> &'static [&'static str] {
    if us_company {
        &["TAX", "NON"]
    } else {
        &[VAT_CODE, ZERO_CODE]
    }
}

pub(super) fn build_invoice(
    t: &Tables,
    us_company: bool,
    checks: Checks,
    mut m: Row,
    self_id: Option<&str>,
) -> Result<Row, ApiError> {
    // Customer: must exist and be active.
    let cust_id = ref_value(m.get("CustomerRef")).ok_or_else(|| required("CustomerRef"))?;
    let customer = t
        .get(Kind::Customer, &cust_id)
        .ok_or_else(|| invalid_ref(Kind::Customer, &cust_id, "CustomerRef"))?;
    let cust_name = customer.get("DisplayName").cloned().unwrap_or(Value::Null);
    if checks.strict && !is_active(customer) {
        return Err(not_found(format!(
            "{INACTIVE_DETAIL} (Customer Id={cust_id}, DisplayName={})",
            cust_name.as_str().unwrap_or("")
        ))
        .element("CustomerRef"));
    }
    m.insert(
        "CustomerRef".into(),
        json!({"value": cust_id, "name": cust_name}),
    );

    // Document number: length, then duplicates (when the company checks).
    match m.get("DocNumber") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) => {
            let len = d.chars().count();
            if checks.strict && len > DOC_NUMBER_MAX {
                return Err(string_length("DocNumber", DOC_NUMBER_MAX, len));
            }
            if checks.duplicate_doc {
                let clash = t.list(Kind::Invoice).iter().find(|r| {
                    Some(row_id(r)) != self_id
                        && r.get("DocNumber").and_then(Value::as_str) == Some(d.as_str())
                });
                if let Some(other) = clash {
                    return Err(ApiError::validation(
                        "6140",
                        "Duplicate Document Number Error",
                        format!("Duplicate Document Number Error : You must specify a different number. This number has already been used. DocNumber={d} is assigned to TxnType=Invoice with TxnId={}", row_id(other)),
                    ));
                }
            }
        }
        Some(other) => return Err(unsupported_property(format!("DocNumber (value {other})"))),
    }

    // Dates.
    let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
    for f in ["TxnDate", "DueDate"] {
        match m.get(f) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {}
            Some(other) => return Err(unsupported_property(format!("{f} (value {other})"))),
        }
    }
    if m.get("TxnDate").is_none_or(Value::is_null) {
        m.insert("TxnDate".into(), json!(today));
    }

    // Tax mode.
    let gtc = match m.get("GlobalTaxCalculation") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            ["TaxExcluded", "TaxInclusive", "NotApplicable"]
                .into_iter()
                .find(|k| k == s)
                .ok_or_else(|| unsupported_property(format!("GlobalTaxCalculation (value {s})")))?,
        ),
        Some(other) => {
            return Err(unsupported_property(format!(
                "GlobalTaxCalculation (value {other})"
            )))
        }
    };
    let gtc = match (gtc, us_company) {
        (Some(g), _) => Some(g),
        // QuickBooks outside the US works tax-excluded unless told otherwise.
        (None, false) => Some("TaxExcluded"),
        (None, true) => None,
    };
    if let Some(g) = gtc {
        m.insert("GlobalTaxCalculation".into(), json!(g));
    }
    let needs_tax_code = !us_company && gtc != Some("NotApplicable");

    // Lines.
    let lines = match m.get("Line") {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => return Err(unsupported_property(format!("Line (value {other})"))),
    };
    let mut out_lines = Vec::new();
    let mut subtotal = Decimal::ZERO;
    let mut vat_base = Decimal::ZERO;
    let mut line_no = 0u32;
    for line in lines {
        let Value::Object(mut line) = line else {
            return Err(unsupported_property("Line (not an object)"));
        };
        let detail_type = str_field(&line, "DetailType")
            .map(str::to_string)
            .ok_or_else(|| required("Line.DetailType"))?;
        match detail_type.as_str() {
            // QuickBooks computes the subtotal line itself.
            "SubTotalLineDetail" => continue,
            "DescriptionOnly" => {
                line.remove("Amount");
            }
            "SalesItemLineDetail" => {
                let Some(Value::Object(mut detail)) = line.get("SalesItemLineDetail").cloned()
                else {
                    return Err(required("Line.SalesItemLineDetail"));
                };
                let item_id = ref_value(detail.get("ItemRef"))
                    .ok_or_else(|| required("Line.SalesItemLineDetail.ItemRef"))?;
                let item = t
                    .get(Kind::Item, &item_id)
                    .ok_or_else(|| invalid_ref(Kind::Item, &item_id, "ItemRef"))?;
                if checks.strict && !is_active(item) {
                    return Err(not_found(format!(
                        "{INACTIVE_DETAIL} (Item Id={item_id})"
                    ))
                    .element("ItemRef"));
                }
                let item_name = item.get("Name").cloned().unwrap_or(Value::Null);
                detail.insert("ItemRef".into(), json!({"value": item_id, "name": item_name}));
                if let Some(acct) = item.get("IncomeAccountRef") {
                    detail
                        .entry("ItemAccountRef")
                        .or_insert_with(|| acct.clone());
                }
                let amount = match line.get("Amount") {
                    None | Some(Value::Null) => return Err(required("Line.Amount")),
                    Some(v) => dec(v).ok_or_else(|| {
                        unsupported_property(format!("Line.Amount (value {v})"))
                    })?,
                };
                let qty = detail.get("Qty").filter(|v| !v.is_null());
                let price = detail.get("UnitPrice").filter(|v| !v.is_null());
                if let (Some(q), Some(p)) = (qty, price) {
                    let q = dec(q)
                        .ok_or_else(|| unsupported_property(format!("Qty (value {q})")))?;
                    let p = dec(p)
                        .ok_or_else(|| unsupported_property(format!("UnitPrice (value {p})")))?;
                    // A whole cent off is an error; sub-cent rounding is not.
                    if (q * p - amount).abs() >= Decimal::new(1, 2) {
                        return Err(business(format!(
                            "Amount is not equal to UnitPrice * Qty. Supplied value:{amount}"
                        ))
                        .element("Line.Amount"));
                    }
                }
                match ref_value(detail.get("TaxCodeRef")) {
                    Some(code) if !valid_tax_codes(us_company).contains(&code.as_str()) => {
                        return Err(invalid_ref(Kind::TaxCode, &code, "TaxCodeRef"));
                    }
                    Some(code) => {
                        if code == VAT_CODE && !us_company {
                            vat_base += amount;
                        }
                        detail.insert("TaxCodeRef".into(), json!({"value": code}));
                    }
                    None if needs_tax_code && checks.strict => {
                        return Err(business(
                            "Make sure all your transactions have a VAT rate before you save.",
                        ));
                    }
                    None => {}
                }
                subtotal += amount;
                line.insert("Amount".into(), num(amount));
                line.insert("SalesItemLineDetail".into(), Value::Object(detail));
            }
            other => {
                return Err(business(format!(
                    "Line DetailType {other} is not supported by the sandbox: use SalesItemLineDetail or DescriptionOnly"
                )))
            }
        }
        line_no += 1;
        line.entry("Id")
            .or_insert_with(|| json!(line_no.to_string()));
        line.insert("LineNum".into(), json!(line_no));
        out_lines.push(Value::Object(line));
    }
    if out_lines.is_empty() {
        return Err(business("You must fill out at least one split line.").element("Line"));
    }
    out_lines.push(
        json!({"Amount": num(subtotal), "DetailType": "SubTotalLineDetail",
                          "SubTotalLineDetail": {}}),
    );

    // Totals: tax-excluded adds the VAT; tax-inclusive amounts already hold it.
    let rate = Decimal::new(VAT_PERCENT, 0);
    let hundred = Decimal::new(100, 0);
    let (tax, total) = match gtc {
        _ if us_company => (Decimal::ZERO, subtotal),
        Some("TaxExcluded") => {
            let tax = round2(vat_base * rate / hundred);
            (tax, subtotal + tax)
        }
        Some("TaxInclusive") => (round2(vat_base * rate / (hundred + rate)), subtotal),
        _ => (Decimal::ZERO, subtotal),
    };
    m.insert("Line".into(), Value::Array(out_lines));
    let mut tax_detail = match m.get("TxnTaxDetail") {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    tax_detail.insert("TotalTax".into(), num(tax));
    m.insert("TxnTaxDetail".into(), Value::Object(tax_detail));
    m.insert("TotalAmt".into(), num(total));
    m.insert("Balance".into(), num(total));
    Ok(m)
}

/// Create (no `Id`) or update (`Id` and `SyncToken`; `"sparse": true`
/// merges into the stored entity, otherwise the body replaces it).
pub(super) fn upsert(
    db: &mut Db,
    kind: Kind,
    body: Value,
    checks: Option<Checks>,
) -> Result<Row, ApiError> {
    let Value::Object(body) = body else {
        return Err(unsupported_property(format!(
            "{} (the body must be a JSON object)",
            kind.name()
        )));
    };
    let checks = checks.unwrap_or(Checks {
        duplicate_doc: db.duplicate_doc_check,
        strict: true,
    });
    let id = match body.get("Id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(unsupported_property(format!("Id (value {other})"))),
    };
    let now = meta_now();
    let (content, id, sync, created) = match id {
        None => {
            let mut content = body;
            for f in SERVER_FIELDS {
                content.remove(f);
            }
            (content, None, 0u64, now.clone())
        }
        Some(id) => {
            let old = db.tables.get(kind, &id).cloned().ok_or_else(|| {
                not_found(format!(
                    "Object Not Found : {} Id={id} does not exist (or was deleted)",
                    kind.name()
                ))
            })?;
            let sent = match body.get("SyncToken") {
                Some(Value::String(s)) => s.trim().to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(required("SyncToken")),
            };
            let current = old.get("SyncToken").and_then(Value::as_str).unwrap_or("0");
            if sent != current {
                return Err(ApiError::validation(
                    "5010",
                    "Stale Object Error",
                    format!("Stale Object Error : You and sandbox were working on this at the same time. sandbox finished before you did, so your work was not saved. (SyncToken {sent} is not the current {current})"),
                ));
            }
            let sparse = body.get("sparse").and_then(Value::as_bool) == Some(true);
            let mut content = if sparse { old.clone() } else { Map::new() };
            for (k, v) in body {
                content.insert(k, v);
            }
            for f in SERVER_FIELDS {
                content.remove(f);
            }
            let created = old
                .get("MetaData")
                .and_then(|md| md.get("CreateTime"))
                .and_then(Value::as_str)
                .unwrap_or(&now)
                .to_string();
            let sync = current.parse::<u64>().unwrap_or(0) + 1;
            (content, Some(id), sync, created)
        }
    };
    let built = match kind {
        Kind::Customer | Kind::Vendor => build_party(&db.tables, kind, content, id.as_deref())?,
        Kind::Item => build_item(&db.tables, content, id.as_deref())?,
        Kind::Invoice => build_invoice(
            &db.tables,
            db.opts.us_company,
            checks,
            content,
            id.as_deref(),
        )?,
        other => {
            return Err(unsupported_operation(&format!(
                "create on {}",
                other.name()
            )))
        }
    };
    let id = id.unwrap_or_else(|| db.tables.next_id(kind));
    let mut row = Map::new();
    row.insert("Id".into(), json!(id));
    row.insert("SyncToken".into(), json!(sync.to_string()));
    row.insert(
        "MetaData".into(),
        json!({"CreateTime": created, "LastUpdatedTime": now}),
    );
    for (k, v) in built {
        row.entry(k).or_insert(v);
    }
    row.insert("domain".into(), json!("QBO"));
    row.insert("sparse".into(), json!(false));
    db.tables.put(kind, row.clone());
    Ok(row)
}
