use super::*;

#[tokio::test]
async fn customer_names_are_unique_including_inactive_ones() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let (s, v) = t
        .post(
            &tok,
            "customer",
            &json!({"DisplayName": "Acme", "Notes": "x"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = &v["Customer"];
    assert_eq!(
        (c["SyncToken"].as_str(), c["Active"].as_bool()),
        (Some("0"), Some(true))
    );
    assert_eq!(c["Notes"], "x");
    let id = c["Id"].as_str().unwrap().to_string();
    let (s, v) = t
        .post(&tok, "customer", &json!({"DisplayName": "acme"}))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6240"));
    assert_eq!(
        v["Fault"]["Error"][0]["Message"],
        "Duplicate Name Exists Error"
    );
    assert_eq!(
            fault_detail(&v),
            "The name supplied already exists. : Another customer, vendor or employee is already using this name. Please use a different name."
        );
    t.sb.seed_customer("Old Co", false);
    let (s, v) = t
        .post(&tok, "customer", &json!({"DisplayName": "Old Co"}))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6240"));
    let (s, v) = t.post(&tok, "customer", &json!({"CompanyName": "X"})).await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    assert!(fault_detail(&v).contains("DisplayName"));
    let (s, v) = t
        .post(&tok, "customer", &json!({"DisplayName": "Vendor Co"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = t
        .post(&tok, "vendor", &json!({"DisplayName": "vendor co"}))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6240"), "one namespace");

    // Sparse update, then a stale one.
    let upd = json!({"Id": id, "SyncToken": "0", "sparse": true, "Active": false});
    let (s, v) = t.post(&tok, "customer", &upd).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Customer"]["SyncToken"], "1");
    assert_eq!(v["Customer"]["Notes"], "x", "sparse keeps the rest");
    assert_eq!(v["Customer"]["Active"], false);
    let (s, v) = t.post(&tok, "customer", &upd).await;
    assert_eq!((s, fault_code(&v)), (400, "5010"));
    assert_eq!(v["Fault"]["Error"][0]["Message"], "Stale Object Error");
    let (s, v) = t.get(&tok, &format!("customer/{id}")).await;
    assert_eq!((s, v["Customer"]["SyncToken"].as_str()), (200, Some("1")));
    let (s, v) = t.get(&tok, "customer/999").await;
    assert_eq!((s, fault_code(&v)), (400, "610"));
    assert_eq!(t.sb.customers().len(), 3);
}

#[tokio::test]
async fn items_need_a_type_and_an_income_account() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let (s, v) = t
        .post(
            &tok,
            "item",
            &json!({"Name": "Tea", "IncomeAccountRef": {"value": "1"}}),
        )
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6000"), "{v}");
    let (s, v) = t
        .post(&tok, "item", &json!({"Name": "Tea", "Type": "Service"}))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    assert!(fault_detail(&v).contains("IncomeAccountRef"));
    let (s, v) = t
        .post(
            &tok,
            "item",
            &json!({"Name": "Tea", "Type": "NonInventory", "IncomeAccountRef": {"value": "81"}}),
        )
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6000"), "81 is an asset account");
    let (s, v) = t
        .post(
            &tok,
            "item",
            &json!({"Name": "Tea", "Type": "NonInventory", "IncomeAccountRef": {"value": "79"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["Item"]["IncomeAccountRef"]["name"],
        "Sales of Product Income"
    );
    let (s, v) = t
        .post(
            &tok,
            "item",
            &json!({"Name": "TEA", "Type": "Service", "IncomeAccountRef": {"value": "1"}}),
        )
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6240"));
}

#[tokio::test]
async fn invoices_are_validated_totalled_and_checked_for_duplicates() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let (cust, item) = t.basics(&tok).await;
    let mut body = invoice_body(&cust, &item, "INV-1");
    body["PrivateNote"] = json!("sale 1");
    body["CustomerMemo"] = json!({"value": "thanks"});
    body["SomethingNew"] = json!({"a": 1});
    let (s, v) = t.post(&tok, "invoice", &body).await;
    assert_eq!(s, 200, "{v}");
    let inv = &v["Invoice"];
    assert_eq!(inv["Id"], "130");
    assert_eq!(inv["SyncToken"], "0");
    assert_eq!(inv["TotalAmt"], json!(100.0));
    assert_eq!(inv["Balance"], json!(100.0));
    assert_eq!(inv["TxnTaxDetail"]["TotalTax"], json!(0.0));
    assert_eq!(inv["CustomerRef"], json!({"value": cust, "name": "Acme"}));
    assert_eq!(inv["PrivateNote"], "sale 1");
    assert_eq!(inv["CustomerMemo"]["value"], "thanks");
    assert_eq!(inv["SomethingNew"]["a"], 1);
    assert_eq!(
        inv["TxnDate"],
        Utc::now().date_naive().format("%Y-%m-%d").to_string()
    );
    assert!(DateTime::parse_from_rfc3339(inv["MetaData"]["CreateTime"].as_str().unwrap()).is_ok());
    let lines = inv["Line"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["SalesItemLineDetail"]["ItemRef"]["name"], "Coffee");
    assert_eq!(
        lines[1],
        json!({"Amount": 100.0, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
    );
    assert!(v["time"].is_string());

    let (s, v) = t
        .post(&tok, "invoice", &invoice_body(&cust, &item, "INV-1"))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6140"));
    assert_eq!(
        v["Fault"]["Error"][0]["Message"],
        "Duplicate Document Number Error"
    );
    assert_eq!(
            fault_detail(&v),
            "Duplicate Document Number Error : You must specify a different number. This number has already been used. DocNumber=INV-1 is assigned to TxnType=Invoice with TxnId=130"
        );
    t.sb.set_duplicate_doc_check(false);
    let (s, v) = t
        .post(&tok, "invoice", &invoice_body(&cust, &item, "INV-1"))
        .await;
    assert_eq!((s, v["Invoice"]["Id"].as_str()), (200, Some("131")));
    t.sb.set_duplicate_doc_check(true);

    let mut bad = invoice_body(&cust, &item, "INV-2");
    bad["Line"][0]["Amount"] = json!(99.0);
    let (s, v) = t.post(&tok, "invoice", &bad).await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    assert!(fault_detail(&v).contains("Amount is not equal to UnitPrice * Qty"));
    let (s, v) = t
        .post(&tok, "invoice", &invoice_body(&cust, "999", "INV-2"))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "2500"));
    let (s, v) = t
        .post(&tok, "invoice", &invoice_body("999", &item, "INV-2"))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "2500"));
    let (s, v) = t
        .post(
            &tok,
            "invoice",
            &invoice_body(&cust, &item, "INV-2-IS-FAR-TOO-LONG!"),
        )
        .await;
    assert_eq!((s, fault_code(&v)), (400, "2050"), "{v}");
    let mut bad = invoice_body(&cust, &item, "INV-2");
    bad["Line"] = json!([]);
    let (s, v) = t.post(&tok, "invoice", &bad).await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    let mut bad = invoice_body(&cust, &item, "INV-2");
    bad["Line"][0]["SalesItemLineDetail"]["TaxCodeRef"] = json!({"value": "3"});
    let (s, v) = t.post(&tok, "invoice", &bad).await;
    assert_eq!((s, fault_code(&v)), (400, "2500"), "US codes are TAX/NON");
    let inactive = t.sb.seed_customer("Gone Ltd", false);
    let (s, v) = t
        .post(&tok, "invoice", &invoice_body(&inactive, &item, "INV-2"))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "610"));
    assert!(fault_detail(&v).contains("Gone Ltd"), "{v}");
    assert_eq!(t.sb.invoices().len(), 2);

    // Read, then a full update with the current SyncToken.
    let (s, v) = t.get(&tok, "invoice/130").await;
    assert_eq!(
        (s, v["Invoice"]["DocNumber"].as_str()),
        (200, Some("INV-1"))
    );
    // (Renumbered: 131 holds INV-1 too since the check was off.)
    let mut upd = invoice_body(&cust, &item, "INV-1R");
    upd["Id"] = json!("130");
    upd["SyncToken"] = json!("0");
    upd["Line"][0]["Amount"] = json!(120.0);
    upd["Line"][0]["SalesItemLineDetail"]["UnitPrice"] = json!(60.0);
    let (s, v) = t.post(&tok, "invoice", &upd).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Invoice"]["TotalAmt"], json!(120.0));
    assert_eq!(v["Invoice"]["SyncToken"], "1");
    assert!(
        v["Invoice"].get("PrivateNote").is_none(),
        "a full update replaces"
    );
    let (s, v) = t.get(&tok, "invoice/999").await;
    assert_eq!((s, fault_code(&v)), (400, "610"));
}

#[tokio::test]
async fn non_us_companies_compute_vat() {
    let t = start_with(QuickbooksSandboxOptions {
        us_company: false,
        ..unlimited()
    })
    .await;
    let (tok, _) = t.connect().await;
    let (cust, item) = t.basics(&tok).await;
    let line = |amount: f64, code: Option<&str>| {
        let mut l = json!({"Amount": amount, "DetailType": "SalesItemLineDetail",
                               "SalesItemLineDetail": {"ItemRef": {"value": item}}});
        if let Some(c) = code {
            l["SalesItemLineDetail"]["TaxCodeRef"] = json!({"value": c});
        }
        l
    };
    let body = |lines: Vec<Value>, gtc: &str| json!({"CustomerRef": {"value": cust}, "GlobalTaxCalculation": gtc, "Line": lines});
    let (s, v) = t
        .post(
            &tok,
            "invoice",
            &body(
                vec![line(100.0, Some("3")), line(50.0, Some("4"))],
                "TaxExcluded",
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Invoice"]["TxnTaxDetail"]["TotalTax"], json!(16.0));
    assert_eq!(v["Invoice"]["TotalAmt"], json!(166.0));
    assert_eq!(v["Invoice"]["Line"][2]["Amount"], json!(150.0));
    let (s, v) = t
        .post(
            &tok,
            "invoice",
            &body(vec![line(116.0, Some("3"))], "TaxInclusive"),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Invoice"]["TotalAmt"], json!(116.0));
    assert_eq!(v["Invoice"]["TxnTaxDetail"]["TotalTax"], json!(16.0));
    // Decimals, not floats: 0.1 + 0.2 is 0.3; 16% of 0.3 rounds to 0.05.
    let (s, v) = t
        .post(
            &tok,
            "invoice",
            &body(
                vec![line(0.1, Some("3")), line(0.2, Some("3"))],
                "TaxExcluded",
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Invoice"]["Line"][2]["Amount"], json!(0.3));
    assert_eq!(v["Invoice"]["TxnTaxDetail"]["TotalTax"], json!(0.05));
    assert_eq!(v["Invoice"]["TotalAmt"], json!(0.35));
    let (s, v) = t
        .post(
            &tok,
            "invoice",
            &body(vec![line(10.0, None)], "TaxExcluded"),
        )
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    let (s, v) = t
        .post(
            &tok,
            "invoice",
            &body(vec![line(10.0, Some("TAX"))], "TaxExcluded"),
        )
        .await;
    assert_eq!((s, fault_code(&v)), (400, "2500"));
    let (s, v) = t
        .post(
            &tok,
            "invoice",
            &body(vec![line(10.0, None)], "NotApplicable"),
        )
        .await;
    assert_eq!((s, v["Invoice"]["TotalAmt"].clone()), (200, json!(10.0)));
    let (s, v) = t.query(&tok, "select * from TaxCode where Id = '3'").await;
    assert_eq!(
        (s, v["QueryResponse"]["TaxCode"][0]["Name"].as_str()),
        (200, Some("VAT 16%"))
    );
    let (_, v) = t
        .query(&tok, "select * from TaxRate where Name = 'VAT 16%'")
        .await;
    assert_eq!(v["QueryResponse"]["TaxRate"][0]["RateValue"], 16);
}
