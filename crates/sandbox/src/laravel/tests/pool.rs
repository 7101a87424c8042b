use super::*;

#[test]
fn latency_profiles() {
    let r = LatencyProfile::realistic();
    let ms = Duration::from_millis;
    assert_eq!(
        (r.login, r.create, r.submit, r.status, r.show, r.profile, r.pdf, r.xml),
        (
            ms(120),
            ms(30),
            ms(300),
            ms(15),
            ms(15),
            ms(10),
            ms(200),
            ms(30)
        )
    );
    assert_eq!(r.per_sale(), ms(530));
    let ceiling = r.ceiling_per_sec(REALISTIC_WORKERS).unwrap();
    assert!((ceiling - 8.0 / 0.53).abs() < 1e-9, "{ceiling}");
    let small = r.scaled(0.1);
    assert_eq!(
        (small.submit, small.status),
        (ms(30), Duration::from_micros(1500))
    );
    assert!(r.scaled(0.0).is_none());
    assert!(r.scaled(-2.0).is_none());
    assert!(r.scaled(f64::NAN).is_none());
    assert_eq!(r.scaled(f64::INFINITY).login, Duration::MAX);
    assert!(LatencyProfile::none().is_none());
    assert_eq!(LatencyProfile::none().ceiling_per_sec(8), None);
    assert_eq!(LatencyProfile::default(), LatencyProfile::none());
    let routes = r.route_times();
    assert!(routes.contains(&(LOOKUP.to_string(), ms(15))));
    assert!(routes.contains(&(SUBMIT.to_string(), ms(300))));
    assert_eq!(r.to_json()["pdf_us"], json!(200_000));

    assert_eq!(
        options_from_profile(" Realistic "),
        Ok((LatencyProfile::realistic(), Some(8)))
    );
    assert_eq!(
        options_from_profile("none"),
        Ok((LatencyProfile::none(), None))
    );
    let e = options_from_profile("fast").unwrap_err();
    assert!(e.contains("realistic") && e.contains("fast"), "{e}");
    let o = LaravelSandboxOptions::realistic_pool();
    assert_eq!(
        (o.latency, o.workers),
        (LatencyProfile::realistic(), Some(8))
    );
    assert!(!o.lookup_route && o.jofotara_configured);
    let d = LaravelSandboxOptions::default();
    assert_eq!(
        (d.latency, d.workers, d.lookup_route),
        (LatencyProfile::none(), None, false)
    );
}

#[tokio::test]
async fn zero_workers_is_refused() {
    let e = LaravelSandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        LaravelSandboxOptions {
            workers: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test(start_paused = true)]
async fn worker_pool_bounds_concurrency_on_the_paused_clock() {
    let t = start_with(LaravelSandboxOptions {
        latency: LatencyProfile {
            profile: Duration::from_millis(100),
            ..LatencyProfile::none()
        },
        workers: Some(2),
        ..Default::default()
    })
    .await;
    let token = t.login().await;
    let base = t.sb.pool_stats();
    assert_eq!(
        (base.workers, base.served, base.in_flight, base.queued),
        (Some(2), 1, 0, 0),
        "the login went through a worker"
    );
    let started = Instant::now();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let req = t.c.get(t.url("/api/vendors/profile")).bearer_auth(&token);
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    let p = t.sb.pool_stats();
    assert_eq!(p.max_in_flight, 2);
    assert_eq!((p.served, p.in_flight, p.queued), (7, 0, 0));
    assert!(p.max_queued >= 1, "{p:?}");
    assert!(p.busy >= Duration::from_millis(600), "{p:?}");
    // waits 0, 0, 100, 100, 200, 200 ms when the six arrive together
    assert!(p.queue_wait >= Duration::from_millis(500), "{p:?}");
    let u = p.utilisation(elapsed).unwrap();
    assert!(u > 0.5 && u <= 1.0, "{u}");

    // a fault answered without the handler takes no worker
    t.sb.inject(
        PROFILE,
        Fault::Status {
            status: 503,
            retry_after: None,
            html: false,
        },
        1,
    );
    assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 503);
    assert_eq!(t.sb.pool_stats().served, 7);

    let stats = t.sb.stats_json();
    let pool = &stats["pool"];
    assert_eq!(pool["workers"], 2);
    assert_eq!(pool["served"], 7);
    assert_eq!(pool["max_in_flight"], 2);
    assert_eq!(pool["latency"]["profile_us"], json!(100_000));
    assert_eq!(pool["per_sale_us"], json!(0));
    assert_eq!(pool["ceiling_sales_per_sec"], Value::Null);
    assert!(pool["busy_us"].as_u64().unwrap() >= 600_000);

    // the control API's reset zeroes the totals
    let c = crate::test_client_builder().no_proxy().build().unwrap();
    c.post(t.url("/__sandbox/stats/reset"))
        .send()
        .await
        .unwrap();
    let p = t.sb.pool_stats();
    assert_eq!((p.served, p.max_in_flight, p.busy), (0, 0, Duration::ZERO));

    // the service times can change at run time
    t.sb.set_latency(LatencyProfile::none());
    let started = Instant::now();
    assert_eq!(t.get(&token, "/api/vendors/profile").await.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(t.sb.latency(), LatencyProfile::none());
}

#[tokio::test(start_paused = true)]
async fn realistic_pool_ceiling_in_the_stats() {
    let t = start_with(LaravelSandboxOptions::realistic_pool()).await;
    let started = Instant::now();
    let token = t.login().await;
    assert!(started.elapsed() >= Duration::from_millis(120), "bcrypt");
    let started = Instant::now();
    let (s, v) = t.create(&token, "R-1").await;
    assert_eq!(s, 201);
    let id = v["id"].as_u64().unwrap();
    t.post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
        .await;
    let pdf = t.get(&token, &format!("/api/invoices/{id}/pdf")).await;
    assert_eq!(pdf.status(), 200);
    pdf.bytes().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(530));
    let pool = &t.sb.stats_json()["pool"];
    assert_eq!(pool["workers"], 8);
    assert_eq!(pool["per_sale_us"], json!(530_000));
    let ceiling = pool["ceiling_sales_per_sec"].as_f64().unwrap();
    assert!((ceiling - 8.0 / 0.53).abs() < 1e-9);
    assert_eq!(pool["served"], 4);
    assert_eq!(pool["max_in_flight"], 1);
}

#[tokio::test(start_paused = true)]
async fn queued_work_is_finished_when_the_client_hangs_up() {
    let t = start_with(LaravelSandboxOptions {
        latency: LatencyProfile {
            create: Duration::from_secs(2),
            ..LatencyProfile::none()
        },
        workers: Some(1),
        finish_after_disconnect: true,
        ..Default::default()
    })
    .await;
    let token = t.login().await;
    let e =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(1))
            .json(&json!({"invoice_number": "GONE-1", "customer_name": "A",
                          "items": [{"description": "d", "quantity": 1, "price": 1}]}))
            .send()
            .await;
    assert!(e.unwrap_err().is_timeout());
    assert_eq!(t.sb.invoice_count(), 0, "still in its service time");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(t.sb.invoices_with_number("GONE-1"), 1, "PHP ran to the end");
    assert_eq!(t.sb.pool_stats().served, 2);
    // the retry learns it through the 422
    assert_eq!(t.create(&token, "GONE-1").await.0, 422);
}
