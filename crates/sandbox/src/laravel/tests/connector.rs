use super::*;

#[tokio::test]
async fn connector_routes_refuse_a_missing_or_wrong_key() {
    let t = start().await;
    let token = t.login().await;
    let invalid = json!({"error": "Invalid API key"});
    let routes = [
        (reqwest::Method::GET, "/api/pos-connector/test"),
        (reqwest::Method::GET, "/api/pos-connector/config"),
        (reqwest::Method::GET, "/api/pos-connector/stats"),
        (reqwest::Method::POST, "/api/pos-connector/heartbeat"),
        (reqwest::Method::POST, "/api/pos-connector/transactions"),
    ];
    for (m, path) in &routes {
        for key in [None, Some("wrong-key"), Some("")] {
            let body = (*m == reqwest::Method::POST).then(beat_body);
            let answer = t.connector(m.clone(), path, key, body).await;
            assert_eq!(answer, (401, invalid.clone()), "{m} {path} {key:?}");
        }
    }
    // The vendor's Sanctum token is not a connector key.
    let r =
        t.c.get(t.url("/api/pos-connector/test"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    // JSON even for a client that does not ask for it: the backend's
    // own check, not Sanctum's redirect to a login page.
    let r = crate::test_client_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(t.url("/api/pos-connector/test"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap(), invalid);
    assert!(t.sb.heartbeats().is_empty());
    assert_eq!(t.sb.responses(HEARTBEAT, 401), 3);

    // A new key: the old one stops working.
    t.sb.set_api_key("rotated-key");
    let get = reqwest::Method::GET;
    let (s, _) = t
        .connector(
            get.clone(),
            "/api/pos-connector/test",
            Some(SANDBOX_API_KEY),
            None,
        )
        .await;
    assert_eq!(s, 401);
    let (s, v) = t
        .connector(get, "/api/pos-connector/test", Some("rotated-key"), None)
        .await;
    assert_eq!((s, &v["status"]), (200, &json!("connection_ok")));
}

#[tokio::test]
async fn heartbeats_are_recorded_and_answered_with_config_updates() {
    let t = start().await;
    let post = reqwest::Method::POST;
    let (s, v) = t
        .connector(
            post.clone(),
            "/api/pos-connector/heartbeat",
            Some(SANDBOX_API_KEY),
            Some(beat_body()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(
        v["config_updates"],
        json!({"sync_interval": 300, "debug_mode": false})
    );
    assert!(v["server_time"].as_str().unwrap().ends_with(".000000Z"));
    assert_eq!(t.sb.heartbeats(), vec![beat_body()]);

    t.sb.set_config_updates(json!({"sync_interval": "60"}))
        .unwrap();
    let (_, v) = t
        .connector(
            post.clone(),
            "/api/pos-connector/heartbeat",
            Some(SANDBOX_API_KEY),
            Some(beat_body()),
        )
        .await;
    assert_eq!(v["config_updates"], json!({"sync_interval": "60"}));
    // No updates: PHP's empty array.
    t.sb.set_config_updates(json!({})).unwrap();
    let (_, v) = t
        .connector(
            post.clone(),
            "/api/pos-connector/heartbeat",
            Some(SANDBOX_API_KEY),
            Some(beat_body()),
        )
        .await;
    assert_eq!(v["config_updates"], json!([]));
    assert!(t.sb.set_config_updates(json!([1])).is_err());

    // Validation, Laravel style.
    let (s, v) = t
        .connector(
            post.clone(),
            "/api/pos-connector/heartbeat",
            Some(SANDBOX_API_KEY),
            Some(json!({"transactions_pending": "many"})),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(
        v["message"],
        "The version field is required. (and 1 more error)"
    );
    assert_eq!(
        v["errors"]["transactions_pending"][0],
        "The transactions pending field must be an integer."
    );
    let (s, _) = t
        .connector(
            post,
            "/api/pos-connector/heartbeat",
            Some(SANDBOX_API_KEY),
            Some(json!({"version": "1", "system_info": "linux"})),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(t.sb.heartbeats().len(), 3);
    assert_eq!(t.sb.requests(HEARTBEAT), 5);
    assert_eq!(t.sb.responses(HEARTBEAT, 200), 3);
    assert_eq!(t.sb.responses(HEARTBEAT, 422), 2);
}

#[tokio::test]
async fn connector_test_config_and_stats() {
    let t = start().await;
    let get = reqwest::Method::GET;
    let key = Some(SANDBOX_API_KEY);
    let (s, v) = t
        .connector(get.clone(), "/api/pos-connector/test", key, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "connection_ok");
    assert_eq!(v["customer"], SANDBOX_CUSTOMER);
    assert_eq!(v["customer_id"], SANDBOX_CUSTOMER_ID.to_string());
    assert_eq!(
        v["message"],
        "POS Connector is successfully connected to JoFotara!"
    );
    assert!(v["server_time"].is_string());

    let (s, v) = t
        .connector(get.clone(), "/api/pos-connector/config", key, None)
        .await;
    assert_eq!(s, 200);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "customer_id",
            "customer_name",
            "api_key",
            "api_url",
            "sync_interval",
            "debug_mode",
            "auto_start",
            "version",
            "created_date",
            "contact_info"
        ]
    );
    assert_eq!(v["customer_id"], "1");
    assert_eq!(v["customer_name"], SANDBOX_CUSTOMER);
    assert_eq!(v["api_key"], SANDBOX_API_KEY);
    assert_eq!(v["api_url"], format!("{}/api", t.base));
    assert_eq!(
        (&v["sync_interval"], &v["debug_mode"]),
        (&json!(300), &json!(false))
    );
    assert!(v["contact_info"]["support_email"].is_string());
    assert!(v["contact_info"]["support_phone"].is_string());

    let (_, v) = t
        .connector(get.clone(), "/api/pos-connector/stats", key, None)
        .await;
    assert_eq!(
        v,
        json!({"total_transactions": 0, "today_transactions": 0, "weekly_transactions": 0,
               "total_revenue": 0, "invoices_created": 0, "last_transaction": null,
               "connector_uptime": "0 minutes"})
    );
    t.connector(
        reqwest::Method::POST,
        "/api/pos-connector/heartbeat",
        key,
        Some(beat_body()),
    )
    .await;
    t.connector(
        reqwest::Method::POST,
        "/api/pos-connector/transactions",
        key,
        Some(
            json!({"transactions": [{"transaction_id": "T1", "total": "10.5"},
                                     {"transaction_id": "T2", "amount": 2}]}),
        ),
    )
    .await;
    let (_, v) = t
        .connector(get, "/api/pos-connector/stats", key, None)
        .await;
    assert_eq!(v["total_transactions"], 2);
    assert_eq!(v["today_transactions"], 2);
    assert_eq!(v["weekly_transactions"], 2);
    assert_eq!(v["total_revenue"], json!(12.5));
    assert!(v["last_transaction"].is_string());
    assert!(v["connector_uptime"].is_string());
    let ctl = t.sb.stats_json();
    assert_eq!(ctl["connector"]["heartbeats_received"], 1);
    assert_eq!(ctl["connector"]["last_version"], "0.1.0");
}

#[tokio::test]
async fn transactions_are_deduplicated_on_their_id() {
    let t = start().await;
    let post = reqwest::Method::POST;
    let key = Some(SANDBOX_API_KEY);
    let path = "/api/pos-connector/transactions";
    let tx = |id: Value, total: u32| json!({"transaction_id": id, "total": total});
    let (s, v) = t
        .connector(
            post.clone(),
            path,
            key,
            Some(
                json!({"transactions": [tx(json!("A"), 1), tx(json!("B"), 2), tx(json!("A"), 3)]}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "success", "processed": 2, "skipped": 1, "errors": 0, "error_details": []})
    );
    // Again, and a number for an id already sent as text is the same id.
    let (_, v) = t
        .connector(
            post.clone(),
            path,
            key,
            Some(json!({"transactions": [tx(json!("B"), 9), tx(json!(7), 4)]})),
        )
        .await;
    assert_eq!(
        (v["processed"].as_u64(), v["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, v) = t
        .connector(
            post.clone(),
            path,
            key,
            Some(json!({"transactions": [tx(json!("7"), 5)]})),
        )
        .await;
    assert_eq!(
        (v["processed"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(1))
    );
    // The first copy is kept.
    let kept = t.sb.connector_transactions();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[0], tx(json!("A"), 1));
    assert_eq!(kept[1], tx(json!("B"), 2));

    let (s, v) = t
        .connector(
            post.clone(),
            path,
            key,
            Some(json!({"transactions": [{"total": 1}]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"status": "success", "processed": 0, "skipped": 0, "errors": 1,
               "error_details": [{"index": 0, "error": "The transaction_id field is required."}]})
    );
    // An empty or missing list: the channel's own 422 shape.
    for body in [json!({}), json!({"transactions": []})] {
        let (s, v) = t.connector(post.clone(), path, key, Some(body)).await;
        assert_eq!(
            (s, v),
            (
                422,
                json!({"error": "Validation failed",
                       "details": {"transactions": ["The transactions field is required."]}})
            )
        );
    }
    let v = t.sb.stats_json();
    assert_eq!(v["connector"]["transactions_received"], 3);
    assert_eq!(v["connector"]["transactions_duplicate"], 3);
}

#[tokio::test]
async fn connector_routes_take_faults_and_the_control_api() {
    let t = start().await;
    let key = Some(SANDBOX_API_KEY);
    t.sb.inject(
        HEARTBEAT,
        Fault::Status {
            status: 503,
            retry_after: Some(5),
            html: false,
        },
        1,
    );
    t.sb.inject(HEARTBEAT, Fault::Drop, 1);
    let post = reqwest::Method::POST;
    let (s, _) = t
        .connector(
            post.clone(),
            "/api/pos-connector/heartbeat",
            key,
            Some(beat_body()),
        )
        .await;
    assert_eq!(s, 503);
    let dropped =
        t.c.post(t.url("/api/pos-connector/heartbeat"))
            .header("X-API-Key", SANDBOX_API_KEY)
            .json(&beat_body())
            .send()
            .await;
    assert!(dropped.is_err());
    let (s, _) = t
        .connector(post, "/api/pos-connector/heartbeat", key, Some(beat_body()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(t.sb.requests(HEARTBEAT), 3);
    assert_eq!(t.sb.responses(HEARTBEAT, 503), 1);
    assert_eq!(t.sb.responses(HEARTBEAT, 200), 1);
    assert_eq!(t.sb.heartbeats().len(), 1);

    // The control API reads and changes the channel.
    let ctl = t.url("/__sandbox/connector");
    let v: Value = t.c.get(&ctl).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["api_key"], SANDBOX_API_KEY);
    assert_eq!(v["heartbeats"].as_array().unwrap().len(), 1);
    let r =
        t.c.post(&ctl)
            .json(&json!({"api_key": "k2", "config_updates": {"sync_interval": 30}}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.sb.api_key(), "k2");
    let (_, v) = t
        .connector(
            reqwest::Method::GET,
            "/api/pos-connector/config",
            Some("k2"),
            None,
        )
        .await;
    assert_eq!(v["sync_interval"], 30);
    for bad in [
        json!({"api_key": ""}),
        json!({"config_updates": 3}),
        json!({"other": 1}),
    ] {
        let r = t.c.post(&ctl).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // Control requests are neither counted nor faulted.
    assert_eq!(t.sb.requests("GET /__sandbox/connector"), 0);
}
