use super::*;

#[tokio::test]
async fn login_ok_invalid_and_validation() {
    let t = start().await;
    let (s, v) = t
        .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
        .await;
    assert_eq!(s, 200);
    let user = &v["user"];
    assert_eq!(user["id"], 2);
    assert_eq!(user["name"], "Sandbox Vendor");
    assert_eq!(user["email"], SANDBOX_EMAIL);
    assert_eq!(user["organization_id"], 1);
    // The backend's full user object, nulls where unset.
    let keys: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "email",
            "email_verified_at",
            "role",
            "is_admin",
            "organization_id",
            "organization_name",
            "organization_phone",
            "organization_address",
            "phone",
            "address",
            "company_name",
            "tax_number",
            "settings",
            "created_at",
            "updated_at"
        ]
    );
    assert_eq!(user["role"], "vendor");
    assert_eq!(user["is_admin"], false);
    assert_eq!(user["tax_number"], Value::Null);
    assert!(user["created_at"].as_str().unwrap().ends_with(".000000Z"));
    assert!(v.get("expires_at").is_none());

    // Sanctum token: <id>|<40 alnum><crc32 of them, 8 lowercase hex>
    let token = v["token"].as_str().unwrap();
    let (id, secret) = token.split_once('|').unwrap();
    assert_eq!(id, "1");
    assert_eq!(secret.len(), 48);
    let (entropy, crc) = secret.split_at(40);
    assert!(entropy.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(crc, format!("{:08x}", crc32fast::hash(entropy.as_bytes())));
    // every login a new token, ids increment, old ones stay valid
    let second = t.login().await;
    assert!(second.starts_with("2|"));
    assert_eq!(t.get(token, "/api/vendors/profile").await.status(), 200);

    for bad in [
        json!({"email": SANDBOX_EMAIL, "password": "wrong"}),
        json!({"email": "nobody@sandbox.test", "password": SANDBOX_PASSWORD}),
    ] {
        let (s, v) = t.login_raw(bad).await;
        assert_eq!(s, 401);
        assert_eq!(v, json!({"message": "Invalid credentials"}));
    }

    let (s, v) = t.login_raw(json!({"email": SANDBOX_EMAIL})).await;
    assert_eq!(s, 422);
    assert_eq!(
        v,
        json!({"message": "The password field is required.",
                   "errors": {"password": ["The password field is required."]}})
    );
    let (s, v) = t
        .login_raw(json!({"email": "  not-an-email ", "password": ""}))
        .await;
    assert_eq!(s, 422);
    assert_eq!(
        v["message"],
        "The email field must be a valid email address. (and 1 more error)"
    );
    assert_eq!(
        v["errors"]["password"][0],
        "The password field is required."
    );
    // a body that is not JSON: validation of empty input
    let r =
        t.c.post(t.url("/api/vendors/login"))
            .header("content-type", "application/json")
            .body("{nope")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["message"],
        "The email field is required. (and 1 more error)"
    );

    assert_eq!(t.sb.logins_ok(), 2);
    assert_eq!(t.sb.requests(LOGIN), 7);
    assert_eq!(t.sb.responses(LOGIN, 401), 2);
    assert_eq!(t.sb.responses(LOGIN, 422), 3);
}

#[tokio::test]
async fn unauthenticated_tokens() {
    let t = start().await;
    let token = t.login().await;
    let (id, secret) = token.split_once('|').unwrap();
    let unauth = json!({"message": "Unauthenticated."});
    for bad in [
        format!("{id}|{}", "x".repeat(48)),
        format!("99|{secret}"),
        "garbage".to_string(),
        format!("a{id}|{secret}"),
    ] {
        assert_eq!(
            t.get_json(&bad, "/api/vendors/profile").await,
            (401, unauth.clone())
        );
    }
    let r = t.c.get(t.url("/api/invoices/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let (s, v) = t.get_json(&token, "/api/vendors/profile").await;
    assert_eq!((s, &v["email"]), (200, &json!(SANDBOX_EMAIL)));
    // auth comes before the model lookup
    t.sb.revoke_all_tokens();
    assert_eq!(
        t.get_json(&token, "/api/invoices/999").await,
        (401, unauth.clone())
    );
    assert_eq!(t.create(&token, "X").await, (401, unauth));
    assert_eq!(t.sb.invoice_count(), 0);
    let fresh = t.login().await;
    assert_eq!(t.get(&fresh, "/api/vendors/profile").await.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn token_expiry_on_the_paused_clock() {
    let t = start_with(LaravelSandboxOptions {
        token_lifetime: Some(Duration::from_secs(3600)),
        ..Default::default()
    })
    .await;
    let token = t.login().await;
    tokio::time::advance(Duration::from_secs(3599)).await;
    assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
    tokio::time::advance(Duration::from_secs(2)).await;
    let (s, v) = t.get_json(&token, "/api/vendors/profile").await;
    assert_eq!((s, v), (401, json!({"message": "Unauthenticated."})));
    let token2 = t.login().await;
    assert_eq!(t.get(&token2, "/api/vendors/profile").await.status(), 200);
    // the setting applies to existing tokens, like Sanctum's expiration
    t.sb.set_token_lifetime(None);
    assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
    t.sb.set_token_lifetime(Some(Duration::from_secs(10)));
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(t.get(&token2, "/api/vendors/profile").await.status(), 401);
    assert_eq!(t.sb.stats_json()["tokens_active"], 0);
}

#[tokio::test]
async fn advertised_expiry() {
    let t = start().await;
    t.sb.set_advertise_expiry(true);
    let (_, v) = t
        .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
        .await;
    assert!(
        v.get("expires_at").is_none(),
        "no lifetime, nothing to advertise"
    );
    t.sb.set_token_lifetime(Some(Duration::from_secs(7200)));
    let (_, v) = t
        .login_raw(json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
        .await;
    let at = DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    let left = at.with_timezone(&Utc) - Utc::now();
    assert!(left > chrono::Duration::seconds(7100) && left <= chrono::Duration::seconds(7200));
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
}
