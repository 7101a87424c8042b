//! The contract's "Details a faithful simulator must also get right".

use super::*;

#[tokio::test]
async fn form_encoded_login_and_create() {
    let t = start().await;
    let c = json_client();
    let r = c
        .post(t.url("/api/vendors/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "email=+{}+&password={}",
            SANDBOX_EMAIL.replace('@', "%40"),
            SANDBOX_PASSWORD
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "emails are trimmed");
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Passwords are not trimmed.
    let r = c
        .post(t.url("/api/vendors/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "email={SANDBOX_EMAIL}&password=+{SANDBOX_PASSWORD}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let body = "invoice_number=+F-1+&customer_name=Rana&customer_email=\
                &items%5B0%5D%5Bdescription%5D=Tea&items[0][quantity]=3&items[0][price]=1.03\
                &items[1][description]=Milk&items[1][quantity]=1&items[1][price]=8.45";
    let r = c
        .post(t.url("/api/invoices"))
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["invoice_number"], "F-1");
    // Sent empty: present, and null.
    assert_eq!(v["customer_email"], Value::Null);
    assert!(v.as_object().unwrap().contains_key("customer_email"));
    assert!(!v.as_object().unwrap().contains_key("customer_phone"));
    // 3.09 + 8.45 = 11.54; tax 0.4944 + 1.352 = 1.8464 -> 1.85; 13.3864 -> 13.39
    assert_eq!(
        (&v["tax_amount"], &v["total_amount"]),
        (&json!("1.85"), &json!("13.39"))
    );
    let full = t.sb.invoice_by_number("F-1").unwrap();
    assert_eq!(full["items"][0]["quantity"], 3);
    assert_eq!(full["items"][1]["item_name"], "Milk");
    // A repeated, trimmed number is taken.
    let (s, _) = t.create(&token, " F-1 ").await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn a_text_plain_body_is_422_listing_every_required_field() {
    let t = start().await;
    let token = t.login().await;
    let r =
        t.c.post(t.url("/api/invoices"))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body(r#"{"invoice_number": "X"}"#)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    let fields: Vec<&str> = v["errors"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["invoice_number", "customer_name", "items"]);
    assert_eq!(
        v["message"],
        "The invoice number field is required. (and 2 more errors)"
    );
}

#[tokio::test]
async fn a_trailing_slash_is_ignored() {
    let t = start().await;
    let token = t.login().await;
    let id = t.create(&token, "SL-1").await.1["id"].as_u64().unwrap();
    let (s, v) = t
        .get_json(&token, &format!("/api/invoices/status/{id}/"))
        .await;
    assert_eq!((s, v), (200, json!({"status": "draft"})));
    let (s, v) = t
        .post_json(&token, &format!("/api/invoices/{id}/submit/"), json!({}))
        .await;
    assert_eq!((s, v), (200, json!({"status": "submitted"})));
    let (s, v) = t.get_json(&token, "/api/nope/").await;
    assert_eq!(
        (s, v),
        (
            404,
            json!({"message": "The route api/nope could not be found."})
        )
    );
}

#[tokio::test]
async fn get_invoice_has_the_backends_full_key_set() {
    let t = start().await;
    let token = t.login().await;
    let id = t.create(&token, "KEYS-1").await.1["id"].as_u64().unwrap();
    let (s, v) = t.get_json(&token, &format!("/api/invoices/{id}")).await;
    assert_eq!(s, 200);
    let o = v.as_object().unwrap();
    for key in [
        "id",
        "invoice_number",
        "customer_name",
        "customer_email",
        "customer_phone",
        "uuid",
        "vendor_id",
        "organization_id",
        "invoice_date",
        "total_amount",
        "tax_amount",
        "created_at",
        "updated_at",
        "status",
        "currency",
        "invoice_type",
        "payment_status",
        "compliance_status",
        "discount_amount",
        "revision_number",
        "due_date",
        "submitted_at",
        "processed_at",
        "paid_at",
        "net_amount",
        "payment_method",
        "payment_reference",
        "rejection_reason",
        "customer_address",
        "customer_tax_number",
        "integration_type",
        "line_items_summary",
        "audit_trail",
        "created_by",
        "updated_by",
        "items",
    ] {
        assert!(o.contains_key(key), "{key} missing from {v}");
    }
    assert_eq!(o.len(), 36, "{v}");
    assert_eq!(v["currency"], "JOD");
    assert_eq!(v["discount_amount"], "0.00");
    assert!(v["revision_number"].is_number());
    assert_eq!(v["submitted_at"], Value::Null);
    t.post_json(&token, &format!("/api/invoices/{id}/submit"), json!({}))
        .await;
    let (_, v) = t.get_json(&token, &format!("/api/invoices/{id}")).await;
    assert!(v["submitted_at"].is_string());
}
