//! The invoice routes: create (validation, totals), show, status, submit,
//! and the PDF and XML downloads.

use super::*;

/// A validated line, ready to store.
pub(super) struct NewItem {
    name: String,
    quantity: i64,
    price: f64,
}

/// Validates a create request against the contract's rules, in Laravel's
/// order (fields, then each wildcard rule over every item).
pub(super) fn validate_invoice(
    input: &Map<String, Value>,
    taken: impl Fn(&str) -> bool,
) -> Result<Vec<NewItem>, Errors> {
    let mut errors = Errors::default();

    let f = "invoice_number";
    let v = input.get(f);
    if !filled(v) {
        errors.add(f, msg_required(f));
    } else if let Some(v) = v {
        if !v.is_string() {
            errors.add(f, msg_string(f));
        }
        if php_string(v).is_some_and(|s| taken(&s)) {
            errors.add(
                f,
                format!("The {} has already been taken.", display_attr(f)),
            );
        }
    }

    let f = "customer_name";
    let v = input.get(f);
    if !filled(v) {
        errors.add(f, msg_required(f));
    } else if !v.is_some_and(Value::is_string) {
        errors.add(f, msg_string(f));
    }

    let f = "customer_email";
    if let Some(v) = input.get(f).filter(|v| !v.is_null()) {
        if !v.as_str().is_some_and(valid_email) {
            errors.add(
                f,
                format!(
                    "The {} field must be a valid email address.",
                    display_attr(f)
                ),
            );
        }
    }

    let f = "customer_phone";
    if let Some(v) = input.get(f).filter(|v| !v.is_null()) {
        if !v.is_string() {
            errors.add(f, msg_string(f));
        }
    }

    let items = input.get("items");
    let mut entries: Vec<(String, Option<&Map<String, Value>>)> = Vec::new();
    if !filled(items) {
        errors.add("items", msg_required("items"));
    } else {
        match items {
            Some(Value::Array(a)) => {
                entries = a
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (i.to_string(), x.as_object()))
                    .collect();
            }
            // A JSON object is a PHP (associative) array too.
            Some(Value::Object(o)) => {
                entries = o.iter().map(|(k, x)| (k.clone(), x.as_object())).collect();
            }
            _ => errors.add("items", "The items field must be an array.".into()),
        }
    }
    let get = |item: Option<&Map<String, Value>>, k: &str| -> Option<Value> {
        item.and_then(|m| m.get(k)).cloned()
    };
    for (key, item) in &entries {
        let f = format!("items.{key}.description");
        let v = get(*item, "description");
        if !filled(v.as_ref()) {
            errors.add(&f, msg_required(&f));
        } else if !v.as_ref().is_some_and(Value::is_string) {
            errors.add(&f, msg_string(&f));
        }
    }
    for (key, item) in &entries {
        let f = format!("items.{key}.quantity");
        match get(*item, "quantity") {
            v if !filled(v.as_ref()) => errors.add(&f, msg_required(&f)),
            Some(v) => {
                if php_int(&v).is_none() {
                    errors.add(&f, format!("The {f} field must be an integer."));
                }
                if numeric_size(&v) < 1.0 {
                    errors.add(&f, format!("The {f} field must be at least 1."));
                }
            }
            None => {}
        }
    }
    for (key, item) in &entries {
        let f = format!("items.{key}.price");
        match get(*item, "price") {
            v if !filled(v.as_ref()) => errors.add(&f, msg_required(&f)),
            Some(v) => {
                if !is_numeric(&v) {
                    errors.add(&f, format!("The {f} field must be a number."));
                }
                if numeric_size(&v) < 0.0 {
                    errors.add(&f, format!("The {f} field must be at least 0."));
                }
            }
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = Vec::new();
    for (_, item) in entries {
        let item = item.ok_or_else(Errors::default)?;
        out.push(NewItem {
            name: item
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            quantity: item.get("quantity").and_then(php_int).unwrap_or(0),
            price: item
                .get("price")
                .and_then(php_float)
                .ok_or_else(Errors::default)?,
        });
    }
    Ok(out)
}

pub(super) async fn create_invoice(
    State(sh): State<Sh>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let input = request_input(&headers, &body);
    let mut st = sh.state();
    let Some(user) = st.authenticate(&headers) else {
        return unauthenticated();
    };
    match store_invoice(&mut st, &user, &input) {
        Ok(id) => json_response(
            StatusCode::CREATED,
            &invoice_created_json(&st.invoices[&id]),
        ),
        Err(resp) => *resp,
    }
}

/// What the create route does once the caller is known: validates `input`,
/// computes the totals with the backend's arithmetic, stores the invoice
/// as `user`'s and returns its id; or the error answer (422, 500).
pub(super) fn store_invoice(
    st: &mut Db,
    user: &SandboxUser,
    input: &Map<String, Value>,
) -> Result<u64, Box<Response>> {
    let items = match validate_invoice(input, |n| {
        st.invoices.values().any(|i| i.invoice_number == n)
    }) {
        Ok(items) => items,
        Err(e) if e.is_empty() => return Err(Box::new(server_error())),
        Err(e) => return Err(Box::new(e.into_response())),
    };

    // Money: the backend's float arithmetic (`crate::tax`); an amount its
    // decimal(15,2) columns cannot hold makes the insert fail: a 500.
    let Some(totals) = crate::tax::totals(items.iter().map(|it| (it.quantity as f64, it.price)))
    else {
        return Err(Box::new(server_error()));
    };
    let now = now_timestamp();
    let id = st.next_invoice_id;
    let stored: Vec<Item> = items
        .into_iter()
        .zip(&totals.lines)
        .enumerate()
        .map(|(n, (it, line))| Item {
            id: st.next_item_id + n as u64,
            item_name: it.name,
            quantity: it.quantity,
            unit_price: it.price,
            tax: line.tax,
            total: line.total,
            created_at: now.clone(),
        })
        .collect();
    let str_field = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    let invoice = Invoice {
        id,
        invoice_number: str_field("invoice_number").unwrap_or_default(),
        customer_name: str_field("customer_name").unwrap_or_default(),
        customer_email: str_field("customer_email"),
        customer_phone: str_field("customer_phone"),
        uuid: uuid::Uuid::new_v4().to_string(),
        vendor_id: user.id,
        vendor_name: user.name.clone(),
        organization_id: user.organization_id,
        invoice_date: Utc::now().date_naive(),
        status: "draft".into(),
        subtotal: totals.subtotal,
        tax_amount: totals.tax_amount,
        total_amount: totals.total_amount,
        created_at: now.clone(),
        updated_at: now,
        items: stored,
        email_sent: input.contains_key("customer_email"),
        phone_sent: input.contains_key("customer_phone"),
        submitted_at: None,
        jofotara_submissions: 0,
    };
    st.next_item_id += invoice.items.len() as u64;
    st.next_invoice_id += 1;
    st.invoices.insert(id, invoice);
    Ok(id)
}

/// Authenticates, then finds the invoice (401 before 404, like Laravel's
/// middleware order) and maps it.
pub(super) fn with_invoice(
    sh: &Shared,
    headers: &HeaderMap,
    id: &str,
    f: impl FnOnce(&mut Db, SandboxUser, u64) -> Response,
) -> Response {
    let mut st = sh.state();
    let Some(user) = st.authenticate(headers) else {
        return unauthenticated();
    };
    match id
        .parse::<u64>()
        .ok()
        .filter(|n| st.invoices.contains_key(n))
    {
        Some(n) => f(&mut st, user, n),
        None => model_not_found(Some(id)),
    }
}

pub(super) async fn show_invoice(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_invoice(&sh, &headers, &id, |st, _, n| {
        json_response(StatusCode::OK, &invoice_full_json(&st.invoices[&n]))
    })
}

/// `GET /api/invoices/by-number/{invoice_number}` (optional, not in the
/// real backend): like `show`, found by number. Like the real routes, it
/// does not check that the invoice belongs to the caller's vendor.
pub(super) async fn show_by_number(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let st = sh.state();
    if st.authenticate(&headers).is_none() {
        return unauthenticated();
    }
    match st.invoices.values().find(|i| i.invoice_number == number) {
        Some(inv) => json_response(StatusCode::OK, &invoice_full_json(inv)),
        None => model_not_found(None),
    }
}

pub(super) async fn invoice_status(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_invoice(&sh, &headers, &id, |st, _, n| {
        json_response(StatusCode::OK, &json!({"status": st.invoices[&n].status}))
    })
}

pub(super) async fn submit_invoice(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_invoice(&sh, &headers, &id, |st, user, n| {
        if !user.active {
            return json_response(
                StatusCode::FORBIDDEN,
                &json!({"message": "Your account is disabled. Please contact admin."}),
            );
        }
        if !st.jofotara_configured {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"message": "JoFotara integration is not configured for this organization."}),
            );
        }
        // A broken integration fails every call; the scripted outcomes
        // wait for it to be mended.
        let outcome = if st.jofotara_broken {
            "error".to_string()
        } else {
            st.submit_outcomes
                .pop_front()
                .unwrap_or_else(|| "submitted".into())
        };
        if let Some(inv) = st.invoices.get_mut(&n) {
            // The backend hands the invoice to JoFotara's SDK whatever the
            // outcome: this is the count exactly-once checks read.
            inv.jofotara_submissions += 1;
            inv.status = outcome.clone();
            inv.updated_at = now_timestamp();
            if outcome == "submitted" {
                inv.submitted_at = Some(inv.updated_at.clone());
            }
        }
        json_response(StatusCode::OK, &json!({ "status": outcome }))
    })
}

/// A download answer; the file name goes in raw, as the backend does.
pub(super) fn download(content_type: &'static str, filename: &str, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition: Vec<u8> = format!("attachment; filename=\"{filename}\"")
        .bytes()
        .map(|b| if b < 0x20 || b == 0x7f { b'_' } else { b })
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

pub(super) async fn pdf(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_invoice(&sh, &headers, &id, |st, _, n| {
        let inv = &st.invoices[&n];
        download(
            "application/pdf",
            &format!("invoice_{}.pdf", inv.invoice_number),
            invoice_pdf(inv),
        )
    })
}

pub(super) async fn xml(
    State(sh): State<Sh>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_invoice(&sh, &headers, &id, |st, _, n| {
        let inv = &st.invoices[&n];
        download(
            "application/xml",
            &format!("invoice_{}.xml", inv.invoice_number),
            invoice_xml(inv).into_bytes(),
        )
    })
}
