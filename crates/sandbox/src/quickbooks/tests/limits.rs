use super::*;

#[test]
fn sliding_windows() {
    let l = QboLimits {
        per_second: 3,
        per_minute: 5,
        batch_per_minute: 2,
        time_scale: 0.1,
        enforce: true,
    };
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut w = Windows::default();
    // 3 in the (100 ms) second, the 4th refused, and not counted.
    assert!((0..3).all(|i| w.admit(at(i), false, &l)));
    assert!(!w.admit(at(50), false, &l));
    assert!(!w.admit(at(99), false, &l));
    assert!(w.admit(at(100), false, &l), "the first one left the window");
    assert!(w.admit(at(150), false, &l));
    // 5 in the (6 s) minute: full, even a second later.
    assert!(!w.admit(at(400), false, &l));
    assert!(
        w.admit(at(6000), false, &l),
        "requests at 0 ms left the minute"
    );
    // Batches: 2 a minute, besides counting as requests.
    let mut w = Windows::default();
    assert!(w.admit(at(0), true, &l));
    assert!(w.admit(at(200), true, &l));
    assert!(!w.admit(at(400), true, &l));
    assert!(w.admit(at(400), false, &l), "plain requests still pass");
    assert!(w.admit(at(6000), true, &l));
    // Not enforced: anything goes.
    let off = QboLimits {
        enforce: false,
        ..l.clone()
    };
    assert!((0..100).all(|_| w.admit(at(6001), true, &off)));
}

#[tokio::test]
async fn the_limiter_answers_xml_429_past_the_limit() {
    let t = start_with(QuickbooksSandboxOptions {
        // A 3 s "second": the burst below fits in it on any machine.
        limits: QboLimits {
            time_scale: 3.0,
            ..QboLimits::default()
        },
        ..Default::default()
    })
    .await;
    let (tok, _) = t.connect().await;
    for i in 0..10 {
        let (s, v) = t.query(&tok, "select * from Item").await;
        assert_eq!(s, 200, "request {i}: {v}");
    }
    assert_eq!(t.sb.throttled(), 0);
    let r =
        t.c.get(t.api("customer/1"))
            .bearer_auth(&tok)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/xml");
    assert!(r.headers().get("retry-after").is_none());
    tid(r.headers());
    let body = r.text().await.unwrap();
    assert!(body.starts_with(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><IntuitResponse time=\""
    ));
    assert!(body.contains("<Fault type=\"SERVICE\"><Error code=\"3001\"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message><Detail>The request limit was reached.</Detail></Error></Fault></IntuitResponse>"));
    assert_eq!(t.sb.throttled(), 1);

    // Batches have their own limit; a batch is one request.
    t.sb.set_limits(QboLimits {
        per_second: 1000,
        batch_per_minute: 2,
        ..QboLimits::default()
    });
    let batch = json!({"BatchItemRequest": [{"bId": "1", "Query": "select * from Item"}]});
    assert_eq!(t.post(&tok, "batch", &batch).await.0, 200);
    assert_eq!(t.post(&tok, "batch", &batch).await.0, 200);
    let r =
        t.c.post(t.api("batch"))
            .bearer_auth(&tok)
            .json(&batch)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(t.query(&tok, "select * from Item").await.0, 200);
    assert_eq!(t.sb.throttled(), 2);
}

#[tokio::test]
async fn every_answer_carries_a_fresh_intuit_tid() {
    let t = start().await;
    let (tok, _) = t.connect().await;
    let mut tids = Vec::new();
    let reqs = vec![
        t.c.get(t.url("/connect/oauth2")),
        t.c.post(t.url(TOKEN_PATH)),
        t.c.get(t.api("query?query=select%20*%20from%20Item"))
            .bearer_auth(&tok),
        t.c.get(t.api("query?query=select%20*%20from%20Item")),
        t.c.get(t.api("customer/77")).bearer_auth(&tok),
        t.c.get(t.url("/nowhere")),
        t.c.get(t.url("/__sandbox/stats")),
        t.c.post(t.url("/v2/oauth2/tokens/revoke")),
    ];
    for rb in reqs {
        let r = rb.send().await.unwrap();
        tids.push(tid(r.headers()));
    }
    let n = tids.len();
    tids.sort();
    tids.dedup();
    assert_eq!(tids.len(), n, "all distinct: {tids:?}");
}
