use super::*;

#[tokio::test]
async fn status_faults() {
    let t = start().await;
    t.sb.inject(
        LOGIN,
        Fault::Status {
            status: 429,
            retry_after: Some(2),
            html: false,
        },
        1,
    );
    let r =
        t.c.post(t.url("/api/vendors/login"))
            .json(&json!({"email": SANDBOX_EMAIL, "password": SANDBOX_PASSWORD}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Too Many Attempts."})
    );
    assert_eq!(t.sb.logins_ok(), 0);
    let token = t.login().await;

    t.sb.inject(
        CREATE,
        Fault::Status {
            status: 500,
            retry_after: None,
            html: false,
        },
        1,
    );
    t.sb.inject(
        CREATE,
        Fault::Status {
            status: 503,
            retry_after: None,
            html: false,
        },
        1,
    );
    t.sb.inject(
        CREATE,
        Fault::Status {
            status: 502,
            retry_after: None,
            html: true,
        },
        1,
    );
    assert_eq!(
        t.create(&token, "F-1").await,
        (500, json!({"message": "Server Error"}))
    );
    assert_eq!(
        t.create(&token, "F-1").await,
        (503, json!({"message": "Service Unavailable"}))
    );
    let r =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().starts_with("<!DOCTYPE html>"));
    assert_eq!(t.sb.invoice_count(), 0);
    assert_eq!(t.create(&token, "F-1").await.0, 201);
    assert_eq!(t.sb.requests(CREATE), 4);
    assert_eq!(t.sb.responses(CREATE, 500), 1);
    assert_eq!(t.sb.responses(CREATE, 201), 1);
}

#[tokio::test]
async fn drop_faults() {
    let t = start().await;
    let token = t.login().await;
    t.sb.inject(CREATE, Fault::Drop, 1);
    let e =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .json(&json!({"invoice_number": "D-1", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}))
            .send()
            .await;
    assert!(e.is_err(), "{e:?}");
    assert_eq!(t.sb.invoice_count(), 0, "Drop: nothing happens server-side");

    t.sb.inject(CREATE, Fault::DropAfter, 1);
    let e =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .json(&json!({"invoice_number": "D-1", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}))
            .send()
            .await;
    assert!(e.is_err(), "{e:?}");
    assert_eq!(t.sb.invoices_with_number("D-1"), 1, "DropAfter: committed");
    // the retry learns it through the 422
    let (s, v) = t.create(&token, "D-1").await;
    assert_eq!(s, 422);
    assert_eq!(
        v["errors"]["invoice_number"][0],
        "The invoice number has already been taken."
    );

    t.sb.inject(SUBMIT, Fault::DropAfter, 1);
    let e =
        t.c.post(t.url("/api/invoices/1/submit"))
            .bearer_auth(&token)
            .send()
            .await;
    assert!(e.is_err());
    assert_eq!(
        t.get_json(&token, "/api/invoices/status/1").await.1,
        json!({"status": "submitted"})
    );
    assert_eq!(t.sb.requests(CREATE), 3);
    assert_eq!(t.sb.responses(CREATE, 201), 0);
    assert_eq!(t.sb.responses(CREATE, 422), 1);
    assert_eq!(t.sb.stats_json()["routes"][CREATE]["unanswered"], 2);
}

#[tokio::test(start_paused = true)]
async fn delay_fault_on_the_paused_clock() {
    let t = start().await;
    let token = t.login().await;
    t.sb.inject("*", Fault::Delay(Duration::from_secs(20)), 1);
    let started = Instant::now();
    let r = t.get(&token, "/api/vendors/profile").await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(20));
    // a client timeout shorter than the delay fires
    t.sb.inject(SUBMIT, Fault::Delay(Duration::from_secs(60)), 1);
    t.create(&token, "SLOW").await;
    let e =
        t.c.post(t.url("/api/invoices/1/submit"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
    assert!(e.unwrap_err().is_timeout());
}

#[tokio::test(start_paused = true)]
async fn hold_after_commits_before_answering() {
    let t = start().await;
    let token = t.login().await;
    t.sb.inject(CREATE, Fault::HoldAfter(Duration::from_secs(5)), 1);
    let started = Instant::now();
    let req =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .json(&json!({"invoice_number": "HOLD-1", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}));
    let pending = tokio::spawn(async move {
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    while t.sb.invoices_with_number("HOLD-1") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!pending.is_finished(), "committed, but not answered yet");
    assert_eq!(t.sb.responses(CREATE, 201), 0);
    let (s, v) = pending.await.unwrap();
    assert_eq!(s, 201);
    assert_eq!(v["invoice_number"], "HOLD-1");
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(t.sb.responses(CREATE, 201), 1);

    // a client that gives up during the hold: the invoice stays
    t.sb.inject(CREATE, Fault::HoldAfter(Duration::from_secs(60)), 1);
    let e =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(2))
            .json(&json!({"invoice_number": "HOLD-2", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}))
            .send()
            .await;
    assert!(e.unwrap_err().is_timeout());
    assert_eq!(t.sb.invoices_with_number("HOLD-2"), 1);
    assert_eq!(
        t.sb.stats_json()["faults_injected"]["planned"]["hold_after"],
        2
    );
}

#[tokio::test]
async fn random_faults() {
    let t = start().await;
    let token = t.login().await;
    let s503 = Fault::Status {
        status: 503,
        retry_after: None,
        html: false,
    };
    // rate 1: every request on the listed routes faults
    t.sb.inject_random(RandomFaults {
        rate: 1.0,
        routes: vec![PROFILE.into(), CREATE.into()],
        kinds: vec![s503.clone()],
        seed: None,
    })
    .unwrap();
    for _ in 0..5 {
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 503);
    }
    assert_eq!(t.create(&token, "RF-1").await.0, 503);
    assert_eq!(t.get(&token, "/api/invoices/status/1").await.status(), 404);
    assert_eq!(t.sb.invoice_count(), 0);
    assert_eq!(
        t.sb.random_faults_injected(),
        BTreeMap::from([("status".to_string(), 6)])
    );
    assert_eq!(t.sb.stats_json()["faults_injected"]["random"]["status"], 6);
    assert_eq!(t.sb.stats_json()["random_faults"]["rate"], 1.0);

    // "*" and several kinds, all of them used
    t.sb.inject_random(RandomFaults {
        rate: 1.0,
        routes: vec!["*".into()],
        kinds: vec![s503.clone(), Fault::Drop],
        seed: Some(9),
    })
    .unwrap();
    let mut drops = 0;
    for _ in 0..40 {
        match t
            .c
            .get(t.url("/api/vendors/profile"))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(r) => assert_eq!(r.status(), 503),
            Err(_) => drops += 1,
        }
    }
    assert!((1..40).contains(&drops), "{drops}");
    assert_eq!(t.sb.random_faults_injected()["drop"], drops);

    // seeded runs repeat
    let run = |seed: u64| {
        let t = &t;
        let token = token.clone();
        let kinds = vec![
            s503.clone(),
            Fault::Status {
                status: 500,
                retry_after: None,
                html: false,
            },
        ];
        async move {
            t.sb.inject_random(RandomFaults {
                rate: 0.5,
                routes: vec!["*".into()],
                kinds,
                seed: Some(seed),
            })
            .unwrap();
            let mut statuses = Vec::new();
            for _ in 0..30 {
                statuses.push(
                    t.get(&token, "/api/vendors/profile")
                        .await
                        .status()
                        .as_u16(),
                );
            }
            statuses
        }
    };
    let first = run(1234).await;
    assert_eq!(run(1234).await, first);
    assert_ne!(run(4321).await, first);
    for s in [200, 500, 503] {
        assert!(first.contains(&s), "{first:?}");
    }

    // queued faults come first; clearing stops the random ones
    t.sb.inject(
        PROFILE,
        Fault::Status {
            status: 418,
            retry_after: None,
            html: false,
        },
        1,
    );
    assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 418);
    t.sb.clear_random();
    assert_eq!(t.sb.stats_json()["random_faults"], Value::Null);
    for _ in 0..10 {
        assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
    }
    let bad = RandomFaults {
        rate: 0.5,
        routes: vec![],
        kinds: vec![Fault::Drop],
        seed: None,
    };
    assert!(t.sb.inject_random(bad).is_err());
}
