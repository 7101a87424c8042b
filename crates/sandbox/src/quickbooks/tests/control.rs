use super::*;

#[tokio::test]
async fn bulk_seeds_are_realistic_unique_and_paged_by_id() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let ids = t.sb.seed_customers(3000);
    let more = t.sb.seed_customers(10);
    assert_eq!(ids.len(), 3000);
    let all = t.sb.customers();
    let mut names: Vec<&str> = all
        .iter()
        .map(|c| c["DisplayName"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 3010, "unique across calls");
    let arabic = all
        .iter()
        .filter(|c| {
            c["DisplayName"]
                .as_str()
                .unwrap()
                .chars()
                .any(|ch| ('\u{0600}'..='\u{06FF}').contains(&ch))
        })
        .count();
    assert!((900..=1100).contains(&arabic), "{arabic}");
    let inactive = all.iter().filter(|c| c["Active"] == false).count();
    assert_eq!(inactive, 150);
    assert!(all.iter().any(|c| c["CompanyName"].is_string()));
    assert!(all
        .iter()
        .any(|c| c["PrimaryEmailAddr"]["Address"].is_string()));
    assert_eq!(more[0], "3001");

    // Pages by Id, inactive ones included when asked.
    let (s, v) = t
            .query(
                &tok,
                "SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY Id STARTPOSITION 2001 MAXRESULTS 1000",
            )
            .await;
    assert_eq!(s, 200);
    let page = v["QueryResponse"]["Customer"].as_array().unwrap();
    assert_eq!(page.len(), 1000);
    assert_eq!(page[0]["Id"], "2001");
    let (_, v) = t.query(&tok, "SELECT COUNT(*) FROM Customer").await;
    assert_eq!(v["QueryResponse"]["totalCount"], 3010 - 150, "active only");

    let items = t.sb.seed_items(600);
    let all = t.sb.items();
    assert_eq!(all.len(), 600);
    let mut skus: Vec<&str> = all.iter().map(|i| i["Sku"].as_str().unwrap()).collect();
    skus.sort_unstable();
    skus.dedup();
    assert_eq!(skus.len(), 600);
    assert!(all.iter().all(|i| i["UnitPrice"].as_f64().unwrap() > 0.0));
    assert!(all.iter().any(|i| i["Type"] == "Inventory"));
    assert!(all.iter().any(|i| i["Type"] == "Service"));
    // A seeded item is as usable as any.
    let cust = t.sb.seed_customer("Bulk Buyer", true);
    let (s, v) = t
        .post(&tok, "invoice", &invoice_body(&cust, &items[5], "BULK-1"))
        .await;
    assert_eq!(s, 200, "{v}");
    let vendors = t.sb.seed_vendors(20);
    assert_eq!(t.sb.vendors().len(), 20);
    assert_eq!(vendors.len(), 20);
    assert!(t
        .sb
        .seed_vendor("Bulk Buyer", true)
        .unwrap_err()
        .contains("6240"));
    assert!(t.sb.seed_vendor("Beans Inc", true).is_ok());
}

#[tokio::test]
async fn injected_faults_have_intuit_shapes() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let (cust, item) = t.basics(&tok).await;
    let body = invoice_body(&cust, &item, "F-1");
    t.sb.inject(
        INVOICE_ROUTE,
        Fault::Status {
            status: 503,
            retry_after: None,
            html: false,
        },
        1,
    );
    let (s, v) = t.post(&tok, "invoice", &body).await;
    assert_eq!((s, fault_code(&v)), (503, "10000"));
    assert_eq!(v["Fault"]["type"], "SystemFault");
    assert!(t.sb.invoices().is_empty(), "nothing was done");
    assert_eq!(t.post(&tok, "invoice", &body).await.0, 200);
    assert_eq!(t.sb.responses(INVOICE_ROUTE, 503), 1);
    assert_eq!(t.sb.responses(INVOICE_ROUTE, 200), 1);

    // Through the control API: a 429 is XML.
    let r = t
        .c
        .post(t.url("/__sandbox/faults"))
        .json(&json!({"route": "GET /v3/company/{realm}/query", "kind": "status", "status": 429}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r =
        t.c.get(t.api("query?query=select%20*%20from%20Item"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/xml");
    assert!(r.text().await.unwrap().contains("<Error code=\"3001\">"));
    assert_eq!(t.sb.throttled(), 0, "injected, not the limiter");

    // A 401 on the API is the gateway's; on the token endpoint, OAuth's.
    let unauth = Fault::Status {
        status: 401,
        retry_after: None,
        html: false,
    };
    t.sb.inject("GET /v3/company/{realm}/customer/{id}", unauth.clone(), 1);
    let r =
        t.c.get(t.api(&format!("customer/{cust}")))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["fault"]["error"][0]["code"], "3200");
    t.sb.inject(&format!("POST {TOKEN_PATH}"), unauth, 1);
    let (s, v) = t.refresh("whatever").await;
    assert_eq!((s, v), (401, json!({"error": "invalid_client"})));
    t.sb.inject("*", Fault::Drop, 1);
    t.sb.clear_faults();
    assert_eq!(t.query(&tok, "select * from Item").await.0, 200);
}

#[tokio::test]
async fn control_api() {
    let t = start().await;
    let post = |path: &str, body: Value| t.c.post(t.url(path)).json(&body).send();
    let r = post(
        "/__sandbox/settings",
        json!({"rotation": {"grace_secs": 2}, "access_token_lifetime_secs": 120,
                   "limits": {"per_second": 3, "time_scale": 0.5}, "duplicate_doc_check": false}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["rotation"], json!({"grace_secs": 2.0}));
    assert_eq!(v["limits"]["per_second"], 3);
    assert_eq!(v["limits"]["per_minute"], 500);
    assert_eq!(v["duplicate_doc_check"], false);
    for bad in [
        json!({"rotation": "lenient"}),
        json!({"limits": {"per_hour": 1}}),
        json!({"limits": {"time_scale": 0}}),
        json!({"nope": 1}),
    ] {
        let r = post("/__sandbox/settings", bad.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let (access, _) = t.connect().await;
    let code = t.sb.issue_code(REDIRECT);
    let (_, v) = t.exchange(&code, REDIRECT).await;
    assert_eq!(v["expires_in"], 120);

    let r = post(
        "/__sandbox/customers",
        json!({"display_name": "Zed", "active": false}),
    )
    .await
    .unwrap();
    let id = r.json::<Value>().await.unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.sb.customers()[0]["Id"], json!(id));
    assert_eq!(t.sb.customers()[0]["Active"], false);
    assert_eq!(t.sb.seed_customer("Zed", true), id, "one customer per name");
    assert_eq!(t.sb.customers().len(), 1);
    let inv = t.sb.seed_invoice("S-1", "Yolanda");
    assert_eq!(inv, "130");
    assert_eq!(t.sb.invoices()[0]["TotalAmt"], json!(100.0));
    assert_eq!(t.sb.items()[0]["Name"], "Services");
    assert_eq!(
        t.sb.seed_item("Services", None),
        t.sb.items()[0]["Id"].as_str().unwrap()
    );
    let r = post("/__sandbox/codes", json!({"redirect_uri": REDIRECT}))
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        t.exchange(v["code"].as_str().unwrap(), REDIRECT).await.0,
        200
    );

    assert_eq!(
        post("/__sandbox/tokens/expire", json!({}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(t.query(&access, "select * from Item").await.0, 401);
    let r = post("/__sandbox/tokens/revoke", json!({})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 3);
    assert!(t.sb.live_refresh_tokens().is_empty());

    let v: Value =
        t.c.get(t.url("/__sandbox/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(v["tokens"]["codes_exchanged"], 3);
    assert_eq!(v["entities"]["Invoice"], 1);
    assert_eq!(
        v["routes"]["GET /v3/company/{realm}/query"]["responses"]["401"],
        1
    );
    assert!(v["routes"].get("GET /__sandbox/stats").is_none());
    post("/__sandbox/stats/reset", json!({})).await.unwrap();
    let v = t.sb.stats_json();
    assert_eq!(v["tokens"]["codes_exchanged"], 0);
    assert_eq!(v["requests_total"], 0);
}
