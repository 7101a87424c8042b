use super::*;

#[tokio::test]
async fn create_show_status_and_duplicate() {
    let t = start().await;
    let token = t.login().await;
    let (s, v) = t
        .post_json(
            &token,
            "/api/invoices",
            json!({
                "invoice_number": "  INV-1  ",
                "customer_name": "Ahmad",
                "customer_email": "ahmad@example.jo",
                "invoice_date": "2001-01-01",
                "currency": "USD",
                "items": [
                    {"description": "Coffee", "quantity": 2, "price": 50, "tax": 99},
                    {"description": "Tea", "quantity": "3", "price": "0.335"},
                ],
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "invoice_number",
            "customer_name",
            "customer_email",
            "uuid",
            "vendor_id",
            "organization_id",
            "invoice_date",
            "total_amount",
            "tax_amount",
            "updated_at",
            "created_at"
        ]
    );
    assert_eq!(v["id"], 1);
    assert_eq!(v["invoice_number"], "INV-1");
    assert_eq!(v["customer_phone"], Value::Null);
    assert_eq!(v["vendor_id"], 2);
    assert_eq!(v["organization_id"], 1);
    let today = Utc::now().format("%Y-%m-%dT00:00:00.000000Z").to_string();
    assert_eq!(v["invoice_date"], json!(today));
    // 2*50 = 100, tax 16; 3*0.335 = 1.005, tax 0.1608: 16.1608 -> 16.16
    assert_eq!(v["tax_amount"], "16.16");
    assert_eq!(v["total_amount"], "117.17");
    assert_eq!(
        uuid::Uuid::parse_str(v["uuid"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        4
    );

    let (s, full) = t.get_json(&token, "/api/invoices/1").await;
    assert_eq!(s, 200);
    assert_eq!(full["status"], "draft");
    assert_eq!(full["uuid"], v["uuid"]);
    let items = full["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["invoice_id"], 1);
    assert_eq!(items[0]["item_name"], "Coffee");
    assert_eq!(items[0]["quantity"], 2);
    // Item amounts: JSON numbers, unrounded (whole ones as integers).
    assert_eq!(items[0]["unit_price"], json!(50));
    assert_eq!(items[0]["tax"], json!(16));
    assert_eq!(items[0]["total"], json!(116));
    assert_eq!(items[1]["quantity"], 3);
    assert_eq!(items[1]["unit_price"], json!(0.335));
    assert_eq!(items[1]["tax"], json!(0.1608));
    assert_eq!(items[1]["total"], json!(1.1658));
    assert_eq!(t.sb.invoice_by_number("INV-1").unwrap(), full);

    assert_eq!(
        t.get_json(&token, "/api/invoices/status/1").await,
        (200, json!({"status": "draft"}))
    );
    for missing in ["/api/invoices/status/99", "/api/invoices/99"] {
        assert_eq!(
            t.get_json(&token, missing).await,
            (
                404,
                json!({"message": "No query results for model [App\\Models\\Invoice] 99"})
            )
        );
    }
    let (s, v) = t.get_json(&token, "/api/invoices/abc").await;
    assert_eq!(s, 404);
    assert_eq!(
        v["message"],
        "No query results for model [App\\Models\\Invoice] abc"
    );

    // the simple case of the contract, and ids shared by all invoices
    let (s, v) = t.create(&token, "INV-2").await;
    assert_eq!(s, 201);
    assert_eq!(
        (&v["id"], &v["total_amount"], &v["tax_amount"]),
        (&json!(2), &json!("116.00"), &json!("16.00"))
    );
    assert!(v.get("status").is_none() && v.get("items").is_none());

    let (s, v) = t.create(&token, "INV-1").await;
    assert_eq!(s, 422);
    assert_eq!(
        v,
        json!({"message": "The invoice number has already been taken.",
                   "errors": {"invoice_number": ["The invoice number has already been taken."]}})
    );
    assert_eq!(t.sb.invoices_with_number("INV-1"), 1);
    assert_eq!(t.sb.invoice_count(), 2);
    assert_eq!(t.sb.responses(CREATE, 201), 2);
    assert_eq!(t.sb.responses(CREATE, 422), 1);
    assert_eq!(t.sb.requests("GET /api/invoices/{id}"), 3);
    assert_eq!(t.sb.requests("GET /api/invoices/status/{id}"), 2);
}

#[tokio::test]
async fn validation_messages() {
    let t = start().await;
    let token = t.login().await;
    let (s, v) = t.post_json(&token, "/api/invoices", json!({})).await;
    assert_eq!(s, 422);
    assert_eq!(
        v["message"],
        "The invoice number field is required. (and 2 more errors)"
    );
    assert_eq!(
        v["errors"],
        json!({
            "invoice_number": ["The invoice number field is required."],
            "customer_name": ["The customer name field is required."],
            "items": ["The items field is required."],
        })
    );
    let (_, v) = t
            .post_json(
                &token,
                "/api/invoices",
                json!({"invoice_number": 5, "customer_name": "A", "customer_email": "nope", "items": []}),
            )
            .await;
    assert_eq!(
        v["errors"],
        json!({
            "invoice_number": ["The invoice number field must be a string."],
            "customer_email": ["The customer email field must be a valid email address."],
            "items": ["The items field is required."],
        })
    );
    let (_, v) = t
        .post_json(
            &token,
            "/api/invoices",
            json!({"invoice_number": "N", "customer_name": "A", "items": "lots"}),
        )
        .await;
    assert_eq!(
        v,
        json!({"message": "The items field must be an array.",
                   "errors": {"items": ["The items field must be an array."]}})
    );
    let (s, v) = t
        .post_json(
            &token,
            "/api/invoices",
            json!({"invoice_number": "N", "customer_name": "A", "customer_email": "",
            "items": [
                {"description": " ", "quantity": 1.5, "price": "abc"},
                {"description": "ok", "quantity": 0, "price": -1},
                {"description": "ok", "quantity": "x", "price": null},
                7,
            ]}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(
        v["errors"],
        json!({
            "items.0.description": ["The items.0.description field is required."],
            "items.3.description": ["The items.3.description field is required."],
            "items.0.quantity": ["The items.0.quantity field must be an integer."],
            "items.1.quantity": ["The items.1.quantity field must be at least 1."],
            "items.2.quantity": ["The items.2.quantity field must be an integer."],
            "items.3.quantity": ["The items.3.quantity field is required."],
            "items.0.price": ["The items.0.price field must be a number."],
            "items.1.price": ["The items.1.price field must be at least 0."],
            "items.2.price": ["The items.2.price field is required."],
            "items.3.price": ["The items.3.price field is required."],
        })
    );
    assert_eq!(
        v["message"],
        "The items.0.description field is required. (and 9 more errors)"
    );
    // error order in the object is rule order
    let keys: Vec<&String> = v["errors"].as_object().unwrap().keys().collect();
    assert_eq!(keys[0], "items.0.description");
    assert_eq!(keys[1], "items.3.description");
    assert_eq!(keys[2], "items.0.quantity");
    assert_eq!(t.sb.invoice_count(), 0);

    // JSON without a JSON content type is not read: all fields missing
    let r = t
            .c
            .post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .body(r#"{"invoice_number":"N","customer_name":"A","items":[{"description":"d","quantity":1,"price":1}]}"#)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn submit_outcomes_disabled_and_unconfigured() {
    let t = start().await;
    let token = t.login().await;
    t.create(&token, "S-1").await;
    let submit = |id: u64| {
        let t = &t;
        let token = token.clone();
        async move {
            t.post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
                .await
        }
    };
    assert_eq!(submit(1).await, (200, json!({"status": "submitted"})));
    assert_eq!(
        t.sb.invoice_by_number("S-1").unwrap()["status"],
        "submitted"
    );
    t.sb.queue_submit_outcomes(&["rejected", "error"]);
    assert_eq!(submit(1).await, (200, json!({"status": "rejected"})));
    assert_eq!(
        t.get_json(&token, "/api/invoices/status/1").await.1,
        json!({"status": "rejected"})
    );
    assert_eq!(submit(1).await, (200, json!({"status": "error"})));
    assert_eq!(submit(1).await, (200, json!({"status": "submitted"})));
    assert_eq!(
        submit(42).await,
        (
            404,
            json!({"message": "No query results for model [App\\Models\\Invoice] 42"})
        )
    );

    t.sb.set_user_active(SANDBOX_EMAIL, false);
    // a disabled vendor still logs in and reads; only submit refuses
    let token2 = t.login().await;
    assert_eq!(t.get(&token2, "/api/invoices/1").await.status(), 200);
    assert_eq!(
        submit(1).await,
        (
            403,
            json!({"message": "Your account is disabled. Please contact admin."})
        )
    );
    t.sb.set_user_active(SANDBOX_EMAIL, true);
    t.sb.set_jofotara_configured(false);
    assert_eq!(
        submit(1).await,
        (
            500,
            json!({"message": "JoFotara integration is not configured for this organization."})
        )
    );
    t.sb.set_jofotara_configured(true);
    assert_eq!(submit(1).await.0, 200);
    assert_eq!(t.sb.requests(SUBMIT), 8);
    assert_eq!(t.sb.responses(SUBMIT, 200), 5);
    assert_eq!(
        t.sb.stats_json()["invoices_by_status"],
        json!({"submitted": 1})
    );
}

#[tokio::test]
async fn pdf_and_xml_downloads() {
    let t = start().await;
    let token = t.login().await;
    let (_, v) = t
            .post_json(
                &token,
                "/api/invoices",
                json!({
                    "invoice_number": "INV-<&>",
                    "customer_name": "Café \"Amman\" & Sons",
                    "customer_phone": "+962 6 000 0000",
                    "items": (0..12).map(|i| json!({"description": format!("Item {i} (large)"), "quantity": i + 1, "price": "1.10"})).collect::<Vec<_>>(),
                }),
            )
            .await;
    let id = v["id"].as_u64().unwrap();
    let r = t.get(&token, &format!("/api/invoices/{id}/pdf")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"invoice_INV-<&>.pdf\""
    );
    let body = r.bytes().await.unwrap();
    assert!(body.starts_with(b"%PDF-1.4"));
    assert!(body.len() > 4096, "{} bytes", body.len());
    assert_eq!(body.to_vec(), t.sb.pdf_bytes(id).unwrap());
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("Item 11 \\(large\\)"));
    assert!(text.contains("(Customer:         Caf? \"Amman\" & Sons) Tj"));
    // deterministic, and independent of the status
    t.post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
        .await;
    let again = t.get(&token, &format!("/api/invoices/{id}/pdf")).await;
    assert_eq!(again.bytes().await.unwrap(), body);
    assert!(t.sb.pdf_bytes(99).is_none());

    let r = t.get(&token, &format!("/api/invoices/{id}/xml")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/xml");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"invoice_INV-<&>.xml\""
    );
    let xml = r.text().await.unwrap();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    assert!(xml.contains("<cbc:ID>INV-&lt;&amp;&gt;</cbc:ID>"));
    assert!(xml.contains(&format!(
        "<cbc:UUID>{}</cbc:UUID>",
        v["uuid"].as_str().unwrap()
    )));
    assert!(xml.contains("Café &quot;Amman&quot; &amp; Sons"));
    assert_eq!(xml.matches("<cac:InvoiceLine>").count(), 12);
    // The backend's view: 3 decimals, document totals printed 0.000.
    let tax = v["tax_amount"].as_str().unwrap();
    assert!(xml.contains(&format!(
        "<cbc:TaxAmount currencyID=\"JOD\">{tax}0</cbc:TaxAmount>\n  </cac:TaxTotal>"
    )));
    for total in ["TaxExclusiveAmount", "TaxInclusiveAmount", "PayableAmount"] {
        assert!(
            xml.contains(&format!(
                "<cbc:{total} currencyID=\"JOD\">0.000</cbc:{total}>"
            )),
            "{total}"
        );
    }
    assert!(xml.trim_end().ends_with("</Invoice>"));
    assert_eq!(t.get(&token, "/api/invoices/99/xml").await.status(), 404);
}

#[tokio::test]
async fn laravel_answers_without_accept_json() {
    let t = start().await;
    let token = t.login().await;
    let plain = crate::test_client_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(t.url("/api/vendors/profile"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        format!("{}/login", t.base).as_str()
    );
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("Redirecting to"));

    let r = plain
        .post(t.url("/api/vendors/login"))
        .header("accept", "text/html")
        .header("referer", "http://shop.example/form")
        .json(&json!({"email": SANDBOX_EMAIL}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://shop.example/form");
    let r = plain
        .post(t.url("/api/invoices"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], t.base.as_str());

    // not found: an HTML page; success and controller answers: JSON anyway
    let r = plain
        .get(t.url("/api/invoices/5"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = plain
        .post(t.url("/api/vendors/login"))
        .json(&json!({"email": SANDBOX_EMAIL, "password": "bad"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Invalid credentials"
    );
    let r = plain
        .get(t.url("/api/vendors/profile"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], 2);
    // an XHR accepting anything counts as expecting JSON
    let r = plain
        .get(t.url("/api/vendors/profile"))
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let t = start().await;
    let (s, v) = t.get_json("x", "/api/xyz").await;
    assert_eq!(
        (s, v),
        (
            404,
            json!({"message": "The route api/xyz could not be found."})
        )
    );
    let (s, v) = t.get_json("x", "/api/invoices").await;
    assert_eq!(s, 405);
    assert_eq!(
        v,
        json!({"message": "The GET method is not supported for this route. Supported methods: POST."})
    );
    let (s, v) = t.post_json("x", "/api/invoices/1", json!({})).await;
    assert_eq!(s, 405);
    assert_eq!(
        v["message"],
        "The POST method is not supported for this route. Supported methods: GET, HEAD."
    );
    assert_eq!(t.sb.responses("GET /api/invoices", 405), 1);
    assert_eq!(t.sb.responses("GET /api/xyz", 404), 1);
}

#[tokio::test]
async fn totals_follow_the_backends_float_arithmetic() {
    let t = start().await;
    let token = t.login().await;
    let create = |number: &str, items: Value| {
        t.post_json(
            &token,
            "/api/invoices",
            json!({"invoice_number": number, "customer_name": "A", "items": items}),
        )
    };
    // The contract's examples: tax rounded once, on the sum of the
    // unrounded line taxes.
    let line = json!({"description": "Milk", "quantity": 1, "price": "1.03"});
    let (s, v) = create("TAX-1", json!([line, line, line])).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (&v["tax_amount"], &v["total_amount"]),
        (&json!("0.49"), &json!("3.58"))
    );
    let full = t.sb.invoice(v["id"].as_u64().unwrap()).unwrap();
    for item in full["items"].as_array().unwrap() {
        // Item amounts: JSON numbers, unrounded.
        assert_eq!(item["unit_price"], json!(1.03));
        assert_eq!(item["tax"], json!(0.1648));
        assert_eq!(item["total"], json!(1.1948));
    }
    assert_eq!(full["tax_amount"], "0.49");
    let (_, v) = create(
        "TAX-2",
        json!([{"description": "x", "quantity": 1, "price": 8.45}]),
    )
    .await;
    assert_eq!(
        (&v["tax_amount"], &v["total_amount"]),
        (&json!("1.35"), &json!("9.80"))
    );
    let (_, v) = create(
        "TAX-3",
        json!([{"description": "x", "quantity": 2, "price": 50}]),
    )
    .await;
    assert_eq!(
        (&v["tax_amount"], &v["total_amount"]),
        (&json!("16.00"), &json!("116.00"))
    );
    let item = &t.sb.invoice_by_number("TAX-3").unwrap()["items"][0];
    assert_eq!(
        (&item["unit_price"], &item["tax"], &item["total"]),
        (&json!(50), &json!(16), &json!(116))
    );
    // More than decimal(15,2) holds: the insert fails, a 500.
    let (s, v) = create(
        "TAX-4",
        json!([{"description": "x", "quantity": 1, "price": "9000000000000"}]),
    )
    .await;
    assert_eq!((s, v), (500, json!({"message": "Server Error"})));
    assert_eq!(t.sb.invoices_with_number("TAX-4"), 0);
    assert_eq!(tax_percent(), "16");
}

#[tokio::test]
async fn lookup_route_by_number() {
    let t = start_with(LaravelSandboxOptions {
        lookup_route: true,
        ..Default::default()
    })
    .await;
    let token = t.login().await;
    for n in ["L-1", "L/2 x", "pdf", "by-number"] {
        assert_eq!(t.create(&token, n).await.0, 201, "{n}");
    }
    let (s, by_id) = t.get_json(&token, "/api/invoices/2").await;
    assert_eq!(s, 200, "GET /api/invoices/{{id}} still answers");
    let (s, v) = t
        .get_json(&token, "/api/invoices/by-number/L%2F2%20x")
        .await;
    assert_eq!((s, &v), (200, &by_id));
    assert_eq!(
        t.get_json(&token, "/api/invoices/by-number/pdf").await.1["id"],
        3
    );
    assert_eq!(
        t.get_json(&token, "/api/invoices/by-number/by-number")
            .await
            .1["id"],
        4
    );
    assert_eq!(
        t.get_json(&token, "/api/invoices/by-number/NOPE").await,
        (
            404,
            json!({"message": "No query results for model [App\\Models\\Invoice]."})
        )
    );
    assert_eq!(
        t.get_json("bad-token", "/api/invoices/by-number/L-1").await,
        (401, json!({"message": "Unauthenticated."}))
    );
    // the other invoice routes are not shadowed
    assert_eq!(t.get(&token, "/api/invoices/1/pdf").await.status(), 200);
    assert_eq!(t.get(&token, "/api/invoices/1/xml").await.status(), 200);
    assert_eq!(
        t.get_json(&token, "/api/invoices/status/1").await,
        (200, json!({"status": "draft"}))
    );
    assert_eq!(
        t.post_json(&token, "/api/invoices/1/submit", json!({}))
            .await,
        (200, json!({"status": "submitted"}))
    );
    assert_eq!(
        t.get_json(&token, "/api/invoices/by-number").await.1["message"],
        "No query results for model [App\\Models\\Invoice] by-number"
    );
    assert_eq!(t.sb.requests(LOOKUP), 5);
    assert_eq!(t.sb.responses(LOOKUP, 200), 3);
    assert_eq!(t.sb.requests("GET /api/invoices/{id}"), 2);

    // off by default: the real backend has no such route
    let t = start().await;
    let token = t.login().await;
    t.create(&token, "L-1").await;
    assert_eq!(
        t.get_json(&token, "/api/invoices/by-number/L-1").await,
        (
            404,
            json!({"message": "The route api/invoices/by-number/L-1 could not be found."})
        )
    );
}

#[tokio::test]
async fn foreign_invoices_and_the_highest_id() {
    let t = start().await;
    let token = t.login().await;
    assert_eq!(t.sb.highest_invoice_id(), None);
    assert_eq!(t.sb.stats_json()["highest_invoice_id"], Value::Null);
    t.create(&token, "OWN-1").await;
    assert_eq!(t.sb.seed_foreign_invoices(3), vec![2, 3, 4]);
    assert_eq!(t.create(&token, "OWN-2").await.1["id"], 5);
    let c = crate::test_client_builder().no_proxy().build().unwrap();
    let r = c
        .post(t.url("/__sandbox/foreign-invoices"))
        .json(&json!({"count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"ok": true, "ids": [6, 7], "highest_invoice_id": 7})
    );
    for bad in [
        json!({}),
        json!({"count": 0}),
        json!({"count": "2"}),
        json!({"n": 1}),
    ] {
        let r = c
            .post(t.url("/__sandbox/foreign-invoices"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(t.create(&token, "OWN-3").await.1["id"], 8);
    assert_eq!(t.sb.highest_invoice_id(), Some(8));
    assert_eq!(t.sb.stats_json()["highest_invoice_id"], 8);

    // an id scan that keeps only the caller's invoices
    let mut own = Vec::new();
    for id in 1..=t.sb.highest_invoice_id().unwrap() {
        let (s, v) = t.get_json(&token, &format!("/api/invoices/{id}")).await;
        assert_eq!(s, 200);
        if v["vendor_id"] == 2 {
            own.push(v["invoice_number"].as_str().unwrap().to_string());
        } else {
            assert_eq!(v["vendor_id"], 3);
            assert_eq!(v["organization_id"], 2);
            assert_eq!(v["status"], "submitted");
            assert!(v["invoice_number"]
                .as_str()
                .unwrap()
                .starts_with("OTHER-3-"));
            let items = v["items"].as_array().unwrap();
            let totals = crate::tax::totals([(
                items[0]["quantity"].as_f64().unwrap(),
                items[0]["unit_price"].as_f64().unwrap(),
            )])
            .unwrap();
            assert_eq!(v["tax_amount"], json!(money(totals.tax_amount)));
        }
    }
    assert_eq!(own, ["OWN-1", "OWN-2", "OWN-3"]);
    assert_eq!(t.sb.invoice_count(), 8);
    // the other vendor's invoice numbers are taken for everyone
    let (s, _) = t.create(&token, "OTHER-3-000002").await;
    assert_eq!(s, 422);
    // the other vendor is a second account; its password is not known
    let (s, _) = t
        .login_raw(json!({"email": FOREIGN_VENDOR_EMAIL, "password": SANDBOX_PASSWORD}))
        .await;
    assert_eq!(s, 401);
}
