use super::*;

#[tokio::test]
async fn control_api_over_http() {
    let t = start().await;
    let c = crate::test_client_builder().no_proxy().build().unwrap();
    let ctl = |p: &str| t.url(&format!("/__sandbox{p}"));
    let post = |p: &str, body: Value| c.post(ctl(p)).json(&body).send();

    let r = post("/faults", json!({"route": "POST /api/vendors/login", "kind": "status", "status": 503, "retry_after": 5, "times": 2})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["faults_pending"][0]["remaining"], 2);
    for bad in [
        json!({"route": "POST /api/vendors/login", "kind": "boom"}),
        json!({"route": "login", "kind": "drop"}),
        json!({"route": "*", "kind": "delay"}),
        json!({"route": "*", "kind": "status", "status": "500"}),
    ] {
        let r = post("/faults", bad.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(
            r.json::<Value>().await.unwrap()["message"]
                .as_str()
                .unwrap()
                .len()
                > 10
        );
    }
    let (s, _) = t
        .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
        .await;
    assert_eq!(s, 503);
    let r = c.delete(ctl("/faults")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = t.login().await;

    let r = post(
        "/settings",
        json!({"token_lifetime_secs": 60, "advertise_expiry": true}),
    )
    .await
    .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["token_lifetime_secs"], 60);
    let (_, v) = t
        .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
        .await;
    assert!(v["expires_at"].is_string());
    let r = post(
        "/settings",
        json!({"token_lifetime_secs": null, "jofotara_configured": false}),
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["token_lifetime_secs"], &v["jofotara_configured"]),
        (&Value::Null, &json!(false))
    );
    assert_eq!(
        post("/settings", json!({"advertise_expiry": "yes"}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post("/settings", json!({"lifetime": 5}))
            .await
            .unwrap()
            .status(),
        400
    );
    t.create(&token, "C-1").await;
    let (s, _) = t
        .post_json(&token, "/api/invoices/1/submit", json!({}))
        .await;
    assert_eq!(s, 500);
    post("/settings", json!({"jofotara_configured": true}))
        .await
        .unwrap();

    let r = post("/submit-outcomes", json!({"outcomes": ["rejected"]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        post("/submit-outcomes", json!({"outcomes": [1]}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        t.post_json(&token, "/api/invoices/1/submit", json!({}))
            .await
            .1,
        json!({"status": "rejected"})
    );

    let r = post(
        "/users/active",
        json!({"email": SANDBOX_EMAIL, "active": false}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        t.post_json(&token, "/api/invoices/1/submit", json!({}))
            .await
            .0,
        403
    );
    assert_eq!(
        post("/users/active", json!({"email": "x@y.z", "active": true}))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        post("/users/active", json!({"email": SANDBOX_EMAIL}))
            .await
            .unwrap()
            .status(),
        400
    );
    post(
        "/users/active",
        json!({"email": SANDBOX_EMAIL, "active": true}),
    )
    .await
    .unwrap();

    let r = c.post(ctl("/tokens/revoke")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 2);
    assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 401);

    let stats: Value = c
        .get(ctl("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["routes"][LOGIN]["requests"], 3);
    assert_eq!(stats["routes"][LOGIN]["responses"]["503"], 1);
    assert_eq!(stats["routes"][LOGIN]["responses"]["200"], 2);
    assert_eq!(stats["routes"][SUBMIT]["responses"]["403"], 1);
    assert_eq!(stats["statuses"]["401"], 1);
    assert_eq!(stats["logins_ok"], 2);
    assert_eq!(stats["tokens_issued"], 2);
    assert_eq!(stats["invoices"], 1);
    assert_eq!(stats["tokens_active"], 0);
    assert!(stats["routes"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| !k.contains("__sandbox")));
    assert_eq!(stats, t.sb.stats_json());

    assert_eq!(
        c.post(ctl("/stats/reset")).send().await.unwrap().status(),
        200
    );
    let stats: Value = c
        .get(ctl("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["requests_total"], 0);
    assert_eq!(stats["logins_ok"], 0);
    assert_eq!(stats["invoices"], 1);
    // control routes are never faulted
    t.sb.inject("*", Fault::Drop, 10);
    assert_eq!(c.get(ctl("/stats")).send().await.unwrap().status(), 200);
    t.sb.clear_faults();
    t.sb.shutdown().await;
}

#[tokio::test]
async fn control_api_random_and_hold_after_faults() {
    let t = start().await;
    let token = t.login().await;
    let c = crate::test_client_builder().no_proxy().build().unwrap();
    let ctl = |p: &str| t.url(&format!("/__sandbox{p}"));

    let r = c
        .post(ctl("/faults"))
        .json(&json!({"route": CREATE, "kind": "hold_after", "hold_ms": 5000, "times": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["faults_pending"],
        json!([{"kind": "hold_after", "hold_ms": 5000, "route": CREATE, "remaining": 2}])
    );
    c.delete(ctl("/faults")).send().await.unwrap();

    let spec = json!({"rate": 1.0, "routes": [PROFILE],
                          "kinds": [{"kind": "status", "status": 500, "retry_after": 3}],
                          "seed": 5});
    let r = c
        .post(ctl("/random-faults"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["random_faults"]["seed"], 5);
    assert_eq!(v["random_faults"]["kinds"][0]["status"], 500);
    let r = t.get(&token, "/api/vendors/profile").await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["retry-after"], "3");
    let stats: Value = c
        .get(ctl("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["random_faults"]["routes"], json!([PROFILE]));
    assert_eq!(stats["faults_injected"]["random"], json!({"status": 1}));
    assert_eq!(stats["pool"]["workers"], Value::Null);
    assert_eq!(
        stats["pool"]["served"], 1,
        "the login; the fault took no worker"
    );
    for bad in [
        json!({"rate": 2, "kinds": [{"kind": "drop"}]}),
        json!({"rate": 0.5, "kinds": []}),
        json!({"rate": 0.5, "kinds": [{"kind": "drop"}], "routes": ["nope"]}),
    ] {
        let r = c
            .post(ctl("/random-faults"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = c
        .post(ctl("/random-faults"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c.delete(ctl("/random-faults")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
    c.post(ctl("/stats/reset")).send().await.unwrap();
    let stats: Value = c
        .get(ctl("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["faults_injected"],
        json!({"planned": {}, "random": {}})
    );
}
