use super::*;

#[tokio::test]
async fn requestid_replays_the_original_answer() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let (cust, item) = t.basics(&tok).await;
    let body = invoice_body(&cust, &item, "R-1");
    let (s, first) = t.post(&tok, "invoice?requestid=rq-1", &body).await;
    assert_eq!(s, 200);
    // Same requestid, even with another body: the original answer.
    let (s, again) = t
        .post(
            &tok,
            "invoice?requestid=rq-1",
            &invoice_body(&cust, &item, "R-2"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(again["Invoice"], first["Invoice"]);
    assert_eq!(t.sb.invoices().len(), 1);
    // A new requestid with the same body is a new request: 6140.
    let (s, v) = t.post(&tok, "invoice?requestid=rq-2", &body).await;
    assert_eq!((s, fault_code(&v)), (400, "6140"));
    // Errors replay too, even once the cause is gone.
    t.sb.set_duplicate_doc_check(false);
    let (s, v2) = t.post(&tok, "invoice?requestid=rq-2", &body).await;
    assert_eq!((s, fault_code(&v2)), (400, "6140"));
    assert_eq!(v2["Fault"], v["Fault"]);
    assert_eq!(t.sb.invoices().len(), 1);
    // Length limits: 50, and 36 for a batch.
    let long = "x".repeat(51);
    let (s, v) = t
        .post(&tok, &format!("invoice?requestid={long}"), &body)
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    assert!(fault_detail(&v).contains("requestid"));
    assert_eq!(t.sb.invoices().len(), 1);
    let ok50 = "y".repeat(50);
    let (s, _) = t
        .post(&tok, &format!("invoice?requestid={ok50}"), &body)
        .await;
    assert_eq!(s, 200);
    let batch = json!({"BatchItemRequest": [{"bId": "1", "Query": "select * from Item"}]});
    let (s, v) = t
        .post(&tok, &format!("batch?requestid={}", "z".repeat(37)), &batch)
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    let (s, _) = t
        .post(&tok, &format!("batch?requestid={}", "z".repeat(36)), &batch)
        .await;
    assert_eq!(s, 200);
    assert_eq!(t.sb.stats_json()["requestid_replays"], 2);
}

#[tokio::test]
async fn batch_runs_items_independently() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let (cust, item) = t.basics(&tok).await;
    let body = json!({"BatchItemRequest": [
        {"bId": "1", "operation": "create", "Invoice": invoice_body(&cust, &item, "B-1")},
        {"bId": "2", "operation": "create", "Invoice": invoice_body("999", &item, "B-2")},
        {"bId": "3", "Query": "select * from Customer where DisplayName = 'Acme'"},
        {"bId": "4", "operation": "create", "Invoice": invoice_body(&cust, &item, "B-1")},
        {"bId": "5", "operation": "update", "Customer": {"Id": cust, "SyncToken": "7", "DisplayName": "Acme"}},
        {"bId": "6", "operation": "delete", "Invoice": {"Id": "130", "SyncToken": "0"}},
        {"bId": "7", "Query": "select * from Nothing"},
    ]});
    let (s, v) = t.post(&tok, "batch", &body).await;
    assert_eq!(s, 200, "{v}");
    let items = v["BatchItemResponse"].as_array().unwrap();
    let bids: Vec<&str> = items.iter().map(|i| i["bId"].as_str().unwrap()).collect();
    assert_eq!(bids, ["1", "2", "3", "4", "5", "6", "7"]);
    assert_eq!(items[0]["Invoice"]["DocNumber"], "B-1");
    assert_eq!(fault_code(&items[1]), "2500");
    assert_eq!(items[1]["Fault"]["type"], "ValidationFault");
    assert_eq!(items[2]["QueryResponse"]["Customer"][0]["Id"], json!(cust));
    assert_eq!(fault_code(&items[3]), "6140");
    assert_eq!(fault_code(&items[4]), "5010");
    assert_eq!(fault_code(&items[5]), "500");
    assert_eq!(fault_code(&items[6]), "4000");
    assert!(v["time"].is_string());
    assert_eq!(t.sb.invoices().len(), 1);

    let many: Vec<Value> = (0..31)
        .map(|i| json!({"bId": i.to_string(), "Query": "select * from Item"}))
        .collect();
    let (s, v) = t
        .post(&tok, "batch", &json!({"BatchItemRequest": many}))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    assert!(fault_detail(&v).contains("30"), "{v}");
    assert_eq!(t.sb.requests("POST /v3/company/{realm}/batch"), 2);
}

#[tokio::test]
async fn cdc_returns_what_changed() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let (cust, item) = t.basics(&tok).await;
    t.post(&tok, "invoice", &invoice_body(&cust, &item, "C-1"))
        .await;
    let since = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let r =
        t.c.get(t.api("cdc"))
            .query(&[
                ("entities", "Customer,Item,invoice"),
                ("changedSince", &since),
            ])
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let qr = &v["CDCResponse"][0]["QueryResponse"];
    assert_eq!(qr[0]["Customer"][0]["DisplayName"], "Acme");
    assert_eq!(qr[1]["Item"][0]["Name"], "Coffee");
    assert_eq!(qr[2]["Invoice"][0]["DocNumber"], "C-1");
    assert_eq!(qr[2]["maxResults"], 1);
    let future = (Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let (s, v) = t
        .get(
            &tok,
            &format!("cdc?entities=Customer&changedSince={future}"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["CDCResponse"][0]["QueryResponse"], json!([{}]));
    let old = (Utc::now() - chrono::Duration::days(31)).format("%Y-%m-%d");
    let (s, v) = t
        .get(&tok, &format!("cdc?entities=Customer&changedSince={old}"))
        .await;
    assert_eq!((s, fault_code(&v)), (400, "6000"));
    let (s, _) = t.get(&tok, "cdc?entities=Customer").await;
    assert_eq!(s, 400);
    let (s, _) = t.get(&tok, "cdc?changedSince=2030-01-01").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn cdc_reports_changes_and_deletions_and_caps_an_answer_at_1000() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    // History (90 days old): outside cdc's window.
    let customers = t.sb.seed_customers(1200);
    let items = t.sb.seed_items(30);
    let since = (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let cdc = |entities: &'static str| {
        let since = since.clone();
        let t = &t;
        let tok = tok.clone();
        async move {
            let r =
                t.c.get(t.api("cdc"))
                    .query(&[("entities", entities), ("changedSince", &since)])
                    .bearer_auth(&tok)
                    .send()
                    .await
                    .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["CDCResponse"][0]["QueryResponse"].clone()
        }
    };
    assert_eq!(cdc("Customer,Item").await, json!([{}, {}]));

    let renamed =
        t.sb.update_entity(
            "customer",
            &customers[3],
            json!({"DisplayName": "Renamed One"}),
        )
        .unwrap();
    assert_eq!(renamed["SyncToken"], "1");
    assert!(t.sb.delete_entity("Item", &items[0]));
    assert!(!t.sb.delete_entity("Item", &items[0]), "gone already");
    assert!(
        !t.sb.delete_entity("Account", "1"),
        "lists cannot be deleted"
    );
    let qr = cdc("Customer,Item").await;
    assert_eq!(qr[0]["Customer"].as_array().unwrap().len(), 1);
    assert_eq!(qr[0]["Customer"][0]["DisplayName"], "Renamed One");
    assert_eq!(
        qr[1]["Item"],
        json!([{"domain": "QBO", "status": "Deleted", "Id": items[0],
                    "MetaData": qr[1]["Item"][0]["MetaData"].clone()}])
    );
    let (s, v) = t.get(&tok, &format!("item/{}", items[0])).await;
    assert_eq!((s, fault_code(&v)), (400, "610"), "deleted: not found");
    // A clash is refused as QuickBooks would.
    let clash = t.sb.update_entity(
        "Customer",
        &customers[4],
        json!({"DisplayName": "renamed one"}),
    );
    assert!(clash.unwrap_err().contains("6240"));

    // 1,000 objects at most, shared by the entities, oldest first.
    for id in &customers[100..1100] {
        t.sb.update_entity("Customer", id, json!({"Notes": "touched"}))
            .unwrap();
    }
    let qr = cdc("Item,Customer").await;
    assert_eq!(qr[0]["Item"].as_array().unwrap().len(), 1, "items first");
    let got = qr[1]["Customer"].as_array().unwrap();
    assert_eq!(got.len(), 999);
    assert_eq!(
        got[0]["DisplayName"], "Renamed One",
        "the oldest change first"
    );
}
