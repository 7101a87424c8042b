use super::*;

#[tokio::test]
async fn query_language() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    t.sb.seed_customer("Alice's Bakery", true);
    t.sb.seed_customer("Bob Ltd", true);
    t.sb.seed_customer("Carol", false);
    t.sb.seed_customer("Dave", true);
    t.sb.seed_item("Espresso", Some("SKU-9"));
    let names = |v: &Value| -> Vec<String> {
        v["QueryResponse"]["Customer"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c["DisplayName"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let ok = |q: &'static str| {
        let t = &t;
        let tok = &tok;
        async move {
            let (s, v) = t.query(tok, q).await;
            assert_eq!(s, 200, "{q}: {v}");
            v
        }
    };
    let v = ok(r"select * from Customer where DisplayName = 'Alice\'s Bakery'").await;
    assert_eq!(names(&v), ["Alice's Bakery"]);
    assert_eq!(v["QueryResponse"]["startPosition"], 1);
    assert_eq!(v["QueryResponse"]["maxResults"], 1);
    assert!(v["time"].is_string());
    let v = ok("SeLeCt * FrOm customer WHERE displayname = 'bob ltd'").await;
    assert_eq!(names(&v), ["Bob Ltd"]);
    let v = ok("select * from Customer where DisplayName in ('Bob Ltd','Dave', 'Zed')").await;
    assert_eq!(names(&v), ["Bob Ltd", "Dave"]);
    let v = ok("select * from Customer where DisplayName like '%a%'").await;
    assert_eq!(
        names(&v),
        ["Alice's Bakery", "Dave"],
        "inactive Carol left out"
    );
    let v = ok("select * from Customer where DisplayName like 'b%'").await;
    assert_eq!(names(&v), ["Bob Ltd"]);
    let v = ok("select * from Customer where Active = false").await;
    assert_eq!(names(&v), ["Carol"]);
    let v = ok("select count(*) from Customer").await;
    assert_eq!(v["QueryResponse"], json!({"totalCount": 3}));
    let v = ok("SELECT COUNT(*) FROM Customer WHERE Active IN (true, false)").await;
    assert_eq!(v["QueryResponse"]["totalCount"], 4);
    let v =
        ok("select * from Customer ORDERBY DisplayName DESC STARTPOSITION 2 MAXRESULTS 2").await;
    assert_eq!(names(&v), ["Bob Ltd", "Alice's Bakery"]);
    assert_eq!(v["QueryResponse"]["startPosition"], 2);
    assert_eq!(v["QueryResponse"]["maxResults"], 2);
    let v = ok("select * from Customer where DisplayName = 'Nobody'").await;
    assert_eq!(v["QueryResponse"], json!({}));
    let v =
        ok("select * from Customer where MetaData.LastUpdatedTime > '2020-01-01T00:00:00-08:00'")
            .await;
    assert_eq!(names(&v).len(), 3);
    let v = ok("select * from Item where Sku = 'SKU-9'").await;
    assert_eq!(v["QueryResponse"]["Item"][0]["Name"], "Espresso");
    let v = ok("select * from Account where AccountType = 'Income'").await;
    assert_eq!(v["QueryResponse"]["maxResults"], 2);
    let v = ok("select * from TaxCode").await;
    assert_eq!(v["QueryResponse"]["TaxCode"][0]["Id"], "TAX");
    assert_eq!(ok("select * from Vendor").await["QueryResponse"], json!({}));

    // POSTed as application/text.
    let r =
        t.c.post(t.api("query"))
            .bearer_auth(&tok)
            .header("accept", "application/json")
            .header("content-type", "application/text")
            .body("select * from Customer where DisplayName = 'Dave'")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(names(&r.json().await.unwrap()), ["Dave"]);

    for (q, code) in [
        ("select * from Customer where", "4000"),
        ("select * from Gizmo", "4000"),
        ("select * from Customer where Nope = '1'", "4000"),
        (
            "select * from Customer where DisplayName = 'a' OR Active = true",
            "4000",
        ),
        (
            "select * from Customer where DisplayName = 'unterminated",
            "4000",
        ),
        ("select Id from Customer", "4000"),
        ("select * from Customer MAXRESULTS 1001", "4001"),
    ] {
        let (s, v) = t.query(&tok, q).await;
        assert_eq!((s, fault_code(&v)), (400, code), "{q}: {v}");
        assert_eq!(v["Fault"]["type"], "ValidationFault");
    }
    let (_, v) = t.query(&tok, "select * from Customer where").await;
    assert_eq!(v["Fault"]["Error"][0]["Message"], "Error parsing query");
    assert!(fault_detail(&v).starts_with("QueryParserError: "));

    // Header and version hygiene is counted.
    assert_eq!(t.sb.missing_minorversion(), 0);
    assert_eq!(t.sb.missing_accept_json(), 0);
    let r =
        t.c.get(format!(
            "{}/v3/company/{}/query?query=select%20*%20from%20Item",
            t.base, t.realm
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.sb.missing_minorversion(), 1);
    assert_eq!(t.sb.missing_accept_json(), 1);
}
