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
    let r = reqwest::Client::builder()
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
    assert_eq!(v["customer_id"], SANDBOX_CUSTOMER_ID);
    assert_eq!(v["message"], "Connection successful");
    assert!(v["server_time"].is_string());

    let (s, v) = t
        .connector(get.clone(), "/api/pos-connector/config", key, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["config"],
        json!({"sync_interval": 300, "debug_mode": false})
    );
    assert_eq!(v["customer"], SANDBOX_CUSTOMER);

    let (_, v) = t
        .connector(get.clone(), "/api/pos-connector/stats", key, None)
        .await;
    assert_eq!(v["heartbeats_received"], 0);
    assert_eq!(v["last_heartbeat"], Value::Null);
    t.connector(
        reqwest::Method::POST,
        "/api/pos-connector/heartbeat",
        key,
        Some(beat_body()),
    )
    .await;
    let (_, v) = t
        .connector(get, "/api/pos-connector/stats", key, None)
        .await;
    assert_eq!(v["heartbeats_received"], 1);
    assert!(v["last_heartbeat"].is_string());
    assert_eq!(v["last_version"], "0.1.0");
    assert_eq!(v["transactions_received"], 0);
    assert_eq!(t.sb.stats_json()["connector"]["heartbeats_received"], 1);
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
        json!({"status": "ok", "received": 3, "new": 2, "duplicates": 1})
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
        (v["new"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, v) = t
        .connector(post.clone(), path, key, Some(tx(json!("7"), 5)))
        .await;
    assert_eq!(
        (v["new"].as_u64(), v["duplicates"].as_u64()),
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
    assert_eq!(s, 422);
    assert_eq!(
        v["errors"]["transactions.0.transaction_id"][0],
        "The transactions.0.transaction id field is required."
    );
    let (s, _) = t.connector(post, path, key, Some(json!({}))).await;
    assert_eq!(s, 422);
    let (_, v) = t
        .connector(reqwest::Method::GET, "/api/pos-connector/stats", key, None)
        .await;
    assert_eq!(v["transactions_received"], 3);
    assert_eq!(v["transactions_duplicate"], 3);
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
    assert_eq!(v["config"], json!({"sync_interval": 30}));
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
