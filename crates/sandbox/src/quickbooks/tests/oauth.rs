use super::*;

#[tokio::test]
async fn authorize_redirects_with_code_state_and_realm() {
    let t = start().await;
    let redirect = "http://localhost:8765/cb?tenant=a b";
    let state = "st ate/+&=x";
    let r =
        t.c.get(t.url("/connect/oauth2"))
            .query(&[
                ("client_id", SANDBOX_CLIENT_ID),
                ("response_type", "code"),
                ("scope", "openid com.intuit.quickbooks.accounting"),
                ("redirect_uri", redirect),
                ("state", state),
            ])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 302);
    tid(r.headers());
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with("http://localhost:8765/cb?tenant=a b&code="),
        "{loc}"
    );
    assert!(loc.contains("&state=st%20ate%2F%2B%26%3Dx&"), "{loc}");
    let p = location_params(&loc);
    assert_eq!(p["state"], state);
    assert_eq!(p["realmId"], SANDBOX_REALM);
    assert_eq!(p["tenant"], "a b");
    let (s, v) = t.exchange(&p["code"], redirect).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");

    let bad = [
        ("client_id", "nobody", "Unknown client_id"),
        ("response_type", "token", "response_type"),
        ("scope", "openid email", "com.intuit.quickbooks.accounting"),
        ("state", "", "state"),
        ("redirect_uri", "", "redirect_uri"),
    ];
    for (field, value, says) in bad {
        let mut q = vec![
            ("client_id", SANDBOX_CLIENT_ID),
            ("response_type", "code"),
            ("scope", ACCOUNTING_SCOPE),
            ("redirect_uri", REDIRECT),
            ("state", "s1"),
        ];
        q.retain(|(k, _)| *k != field);
        if !value.is_empty() {
            q.push((field, value));
        }
        let r =
            t.c.get(t.url("/connect/oauth2"))
                .query(&q)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = r.text().await.unwrap();
        assert!(html.contains(says), "{field}: {html}");
    }
}

#[tokio::test]
async fn a_code_is_exchanged_once_and_a_second_exchange_spoils_the_tokens() {
    let t = start().await;
    let code = t.sb.issue_code(REDIRECT);
    // Wrong redirect_uri: refused, the code stays usable.
    let (s, v) = t.exchange(&code, "http://localhost:8765/other").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    let (s, v) = t.exchange(&code, REDIRECT).await;
    assert_eq!(s, 200, "{v}");
    let access = v["access_token"].as_str().unwrap().to_string();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["x_refresh_token_expires_in"], 8_640_000);
    assert!(v.get("x_refresh_token_hard_expires_in").is_none());
    assert_eq!(refresh.len(), 50);
    assert!(refresh.starts_with("AB11"));
    assert!(access.len() > 500);
    assert_eq!(t.query(&access, "select * from Customer").await.0, 200);

    let (s, v) = t.exchange(&code, REDIRECT).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    let (s, v) = t.query(&access, "select * from Customer").await;
    assert_eq!(
        (s, v["fault"]["error"][0]["code"].as_str()),
        (401, Some("3200"))
    );
    let (s, v) = t.refresh(&refresh).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    assert!(t.sb.live_refresh_tokens().is_empty());

    // Client authentication.
    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    let r =
        t.c.post(t.url(TOKEN_PATH))
            .form(&form)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "invalid_client"})
    );
    let r =
        t.c.post(t.url(TOKEN_PATH))
            .basic_auth(SANDBOX_CLIENT_ID, Some("wrong"))
            .form(&form)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    let (s, v) = t.token(&[("grant_type", "password")]).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (s, v) = t.exchange("AB11nonsense", REDIRECT).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));

    let counts = t.sb.token_grants();
    assert_eq!(counts.codes_exchanged, 1);
    assert_eq!(counts.invalid_grant, 4);
    assert_eq!(counts.invalid_client, 2);
    assert_eq!(t.sb.requests(&format!("POST {TOKEN_PATH}")), 8);
}

#[tokio::test]
async fn strict_rotation_kills_the_previous_refresh_token_at_once() {
    let t = start().await;
    let (_, r1) = t.connect().await;
    assert_eq!(t.sb.live_refresh_tokens(), vec![r1.clone()]);
    let (s, v) = t.refresh(&r1).await;
    assert_eq!(s, 200, "{v}");
    let r2 = v["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2, "every refresh rotates");
    assert_eq!(v["expires_in"], 3600);
    let (s, v) = t.refresh(&r1).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    assert!(v["error_description"].is_string());
    let (s, v) = t.refresh(&r2).await;
    assert_eq!(s, 200);
    let r3 = v["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(t.sb.live_refresh_tokens(), vec![r3.clone()]);
    assert_eq!(t.sb.latest_refresh_token(), Some(r3));
    let counts = t.sb.token_grants();
    assert_eq!((counts.refreshes_ok, counts.invalid_grant), (2, 1));
}

#[tokio::test]
async fn grace_rotation_keeps_the_previous_token_for_a_while() {
    let grace = Duration::from_millis(300);
    let t = start_with(QuickbooksSandboxOptions {
        rotation: Rotation::Grace(grace),
        ..unlimited()
    })
    .await;
    let (_, r1) = t.connect().await;
    let begin = std::time::Instant::now();
    let (s, v) = t.refresh(&r1).await;
    assert_eq!(s, 200);
    let r2 = v["refresh_token"].as_str().unwrap().to_string();
    // Within the grace period the old one still works, with a new pair.
    let (s, v) = t.refresh(&r1).await;
    assert_eq!(s, 200, "{v}");
    let r3 = v["refresh_token"].as_str().unwrap().to_string();
    assert!(
        begin.elapsed() < grace,
        "the machine is too slow for this test"
    );
    assert_ne!(r3, r2);
    let live = t.sb.live_refresh_tokens();
    assert!([&r1, &r2, &r3].iter().all(|r| live.contains(r)), "{live:?}");
    tokio::time::sleep(grace + Duration::from_millis(50)).await;
    for old in [&r1, &r2] {
        let (s, v) = t.refresh(old).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    }
    assert_eq!(t.refresh(&r3).await.0, 200);
    // Back to strict: the previous token dies at once again.
    t.sb.set_rotation(Rotation::Strict);
    let r4 = t.sb.latest_refresh_token().unwrap();
    assert_eq!(t.refresh(&r4).await.0, 200);
    assert_eq!(t.refresh(&r4).await.0, 400);
}

#[tokio::test]
async fn hard_expiry_is_reported_only_when_asked() {
    let t = start().await;
    let code = t.sb.issue_code(REDIRECT);
    let r = t
        .token_req(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
            true,
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let hard = v["x_refresh_token_hard_expires_in"].as_u64().unwrap();
    let five_years = 5 * 365 * 86_400;
    assert!(hard <= five_years && hard > five_years - 60, "{hard}");
    let rt = v["refresh_token"].as_str().unwrap();
    let (_, v) = t.refresh(rt).await;
    assert!(v.get("x_refresh_token_hard_expires_in").is_none(), "{v}");
}

#[tokio::test(start_paused = true)]
async fn lifetimes_run_on_tokio_time() {
    let t = start_with(QuickbooksSandboxOptions {
        access_token_lifetime: Duration::from_secs(60),
        hard_expiry: Duration::from_secs(3600),
        ..unlimited()
    })
    .await;
    let code = t.sb.issue_code(REDIRECT);
    tokio::time::sleep(Duration::from_secs(601)).await;
    let (s, v) = t.exchange(&code, REDIRECT).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );

    let (access, refresh) = t.connect().await;
    assert_eq!(t.sb.token_grants().codes_exchanged, 1);
    let (_, v) = t.refresh(&refresh).await;
    // The rolling lifetime cannot outlast the grant's hard expiry.
    assert!(v["x_refresh_token_expires_in"].as_u64().unwrap() <= 3600);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let (s, v) = t.query(&access, "select * from Item").await;
    assert_eq!(s, 401);
    assert!(v["fault"]["error"][0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("Token expired"));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let rt = t.sb.latest_refresh_token().unwrap();
    let (s, v) = t.refresh(&rt).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn revoke_kills_the_whole_grant() {
    let t = start().await;
    let (a1, r1) = t.connect().await;
    let (a2, r2) = t.connect().await;
    let revoke = |body: Value, auth: bool| {
        let mut r = t.c.post(t.url("/v2/oauth2/tokens/revoke")).json(&body);
        if auth {
            r = r.basic_auth(SANDBOX_CLIENT_ID, Some(SANDBOX_CLIENT_SECRET));
        }
        r.send()
    };
    let r = revoke(json!({"token": r1}), true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(t.query(&a1, "select * from Item").await.0, 401);
    assert_eq!(t.refresh(&r1).await.0, 400);
    assert_eq!(t.query(&a2, "select * from Item").await.0, 200);
    // By its access token.
    let r = revoke(json!({"token": a2}), true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.refresh(&r2).await.0, 400);
    // Idempotent; authenticated; needs a token.
    assert_eq!(
        revoke(json!({"token": "nope"}), true)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        revoke(json!({"token": r1}), true).await.unwrap().status(),
        200
    );
    let r = revoke(json!({"token": "nope"}), false).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    assert_eq!(revoke(json!({}), true).await.unwrap().status(), 400);
    assert_eq!(t.sb.token_grants().revoked, 2);

    let (a3, _) = t.connect().await;
    t.sb.revoke_all();
    assert_eq!(t.query(&a3, "select * from Item").await.0, 401);
    assert!(t.sb.live_refresh_tokens().is_empty());
}

#[tokio::test]
async fn the_gateway_answers_3200_and_3100() {
    let t = start().await;
    let (access, _) = t.connect().await;
    let r = t.c.get(t.api("customer/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"Intuit\", error=\"invalid_token\""
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["fault"]["type"], "AUTHENTICATION");
    assert_eq!(
        v["fault"]["error"][0]["message"],
        "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    );
    assert!(v["time"].is_string());

    t.sb.expire_access_tokens();
    let r =
        t.c.get(t.api("query?query=select%20*%20from%20Item"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["fault"]["error"][0]["code"], "3200");
    assert!(v["fault"]["error"][0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("Token expired: "));

    // Tokens issued afterwards work; another company's path is 403.
    let (access, _) = t.connect().await;
    let r =
        t.c.get(format!(
            "{}/v3/company/123145/query?query=select%20*%20from%20Item&minorversion=75",
            t.base
        ))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["Fault"]["type"], "AUTHORIZATION");
    assert_eq!(fault_code(&v), "3100");
    // An unknown resource: 404 with a Fault.
    let (s, v) = t.get(&access, "gizmo").await;
    assert_eq!(s, 404, "{v}");
    assert!(v["Fault"]["Error"].is_array());
}
