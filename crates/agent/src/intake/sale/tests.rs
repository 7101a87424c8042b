//! The reader's tests: the sample files, JSON shapes, CSV variants,
//! mapping, amounts, derived numbers, bad inputs.

use super::*;
use serde_json::json;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/intake/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(name: &str, bytes: &[u8]) -> Vec<Sale> {
    parse_file(name, bytes, &IntakeOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn fails(name: &str, bytes: &[u8]) -> IntakeError {
    match parse_file(name, bytes, &IntakeOptions::default()) {
        Ok(sales) => panic!("expected problems, got {sales:?}"),
        Err(e) => e,
    }
}

fn json_fails(v: Value) -> IntakeError {
    match parse_json(&v, &IntakeOptions::default()) {
        Ok(sales) => panic!("expected problems, got {sales:?}"),
        Err(e) => e,
    }
}

/// Asserts a problem at `location` whose message contains `needle`.
fn has(e: &IntakeError, location: &str, needle: &str) {
    assert!(
        e.problems
            .iter()
            .any(|p| p.location == location && p.message.contains(needle)),
        "no problem at {location:?} containing {needle:?} in:\n{e}"
    );
}

fn dec(s: &str) -> Decimal {
    s.parse().expect("test decimal")
}

fn line(sale: &Sale, i: usize) -> (&str, u32, String) {
    let l = &sale.lines[i];
    (l.description.as_str(), l.quantity, l.unit_price.to_string())
}

// --- the sample files -------------------------------------------------

#[test]
fn cafe_csv_sample() {
    let sales = parse("cafe_pos_sales.csv", &fixture("cafe_pos_sales.csv"));
    assert_eq!(sales.len(), 8);
    let first = &sales[0];
    assert_eq!(first.invoice_number, "TXN001");
    assert!(!first.number_derived);
    assert_eq!(first.customer_name, "John Smith");
    assert_eq!(first.date.as_deref(), Some("2025-06-30"));
    assert_eq!(line(first, 0), ("Coffee - Large", 2, "4.50".into()));
    assert_eq!(first.lines.len(), 1);
    assert_eq!(sales[5].invoice_number, "TXN006");
    assert_eq!(sales[5].customer_name, "David Lee");
    assert_eq!(line(&sales[5], 0), ("Lunch Combo", 2, "12.99".into()));
    assert_eq!(sales[7].customer_name, "Frank Miller");
    assert_eq!(line(&sales[7], 0), ("Muffin - Blueberry", 2, "3.25".into()));
}

#[test]
fn store_csv_sample() {
    let sales = parse("store_sales.csv", &fixture("store_sales.csv"));
    let numbers: Vec<&str> = sales.iter().map(|s| s.invoice_number.as_str()).collect();
    assert_eq!(numbers, ["TXN001", "TXN002", "TXN003"]);
    let s = &sales[0];
    assert_eq!(s.customer_name, DEFAULT_CUSTOMER);
    assert_eq!(line(s, 0), ("Blue T-Shirt", 2, "19.99".into()));
    assert_eq!(s.lines[0].unit_price, dec("19.99"));
    assert_eq!(s.lines[0].sku.as_deref(), Some("SKU001"));
    assert_eq!(line(&sales[2], 0), ("Sneakers", 1, "79.99".into()));
}

#[test]
fn generic_json_sample() {
    let sales = parse("generic_pos.json", &fixture("generic_pos.json"));
    assert_eq!(sales.len(), 1);
    let s = &sales[0];
    assert_eq!(s.invoice_number, "INV-GEN-001");
    assert_eq!(s.customer_name, "Generic Customer");
    assert_eq!(s.customer_email.as_deref(), Some("generic@example.com"));
    assert_eq!(s.customer_phone.as_deref(), Some("+962791234567"));
    assert_eq!(s.date.as_deref(), Some("2025-01-11"));
    assert_eq!(s.currency.as_deref(), Some("JOD"));
    assert_eq!(
        s.notes.as_deref(),
        Some("Test invoice for generic POS system")
    );
    assert_eq!(line(s, 0), ("Generic Product 1", 2, "15.5".into()));
    assert_eq!(line(s, 1), ("Generic Product 2", 1, "30.0".into()));
}

#[test]
fn minimal_json_sample_gets_a_stable_derived_number() {
    let bytes = fixture("minimal_format.json");
    let a = parse("minimal_format.json", &bytes);
    let b = parse("minimal_format.json", &bytes);
    let s = &a[0];
    assert!(s.number_derived);
    assert!(s.invoice_number.starts_with("POS-"), "{}", s.invoice_number);
    assert_eq!(s.invoice_number.len(), 4 + 16);
    assert!(s.invoice_number[4..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(s.invoice_number, b[0].invoice_number);
    assert_eq!(s.customer_name, "Minimal Customer");
    assert_eq!(s.date.as_deref(), Some("2025-01-11"));
    assert_eq!(line(s, 0), ("Simple Product", 1, "25.0".into()));
}

#[test]
fn quickbooks_json_sample() {
    let sales = parse("quickbooks_format.json", &fixture("quickbooks_format.json"));
    let s = &sales[0];
    assert_eq!(s.customer_name, "QuickBooks Customer");
    assert!(s.number_derived);
    assert_eq!(s.date.as_deref(), Some("2025-01-11"));
    assert_eq!(s.currency.as_deref(), Some("JOD"));
    assert_eq!(s.lines.len(), 2);
    // Amount 31.0 over Qty 2.
    assert_eq!(line(s, 0), ("QB Product 1", 2, "15.5".into()));
    assert_eq!(s.lines[1].quantity, 1);
    assert_eq!(s.lines[1].unit_price, dec("45"));
    assert!(s.lines.iter().all(|l| l.converted_from.is_none()));
}

// --- JSON shapes ------------------------------------------------------

#[test]
fn json_array_of_two_invoices_keeps_indexes() {
    let doc = json!([
        {"invoice_number": "A-1", "customer_name": "Ann",
         "items": [{"description": "Tea", "quantity": 1, "unit_price": "1.250"}]},
        {"invoice_number": "A-2", "customer": "Bob",
         "items": [{"description": "Cake", "qty": "3", "price": " 2.5 "}]}
    ]);
    let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
    assert_eq!(sales.len(), 2);
    assert_eq!(sales[0].lines[0].unit_price.to_string(), "1.250");
    assert_eq!(sales[1].customer_name, "Bob");
    assert_eq!(line(&sales[1], 0), ("Cake", 3, "2.5".into()));

    let mut bad = doc.clone();
    bad[1]["items"][0]["qty"] = json!("three");
    let e = json_fails(bad);
    has(&e, "[1].items[0].qty", "not a number");
}

#[test]
fn wrapper_objects() {
    let sale = json!({"receipt_no": 7, "lines": [{"name": "Pen", "price": 1}]});
    for key in [
        "invoices",
        "Sales",
        "transactions",
        "orders",
        "receipts",
        "data",
    ] {
        let doc = json!({"store": "Main", key: [sale.clone(), sale.clone()]});
        let sales = parse_json(&doc, &IntakeOptions::default()).expect(key);
        assert_eq!(sales.len(), 2, "{key}");
        assert_eq!(sales[0].invoice_number, "7");
    }
    let nested = json!({"data": {"invoices": [{"invoice": "X", "items": []}]}});
    has(
        &json_fails(nested),
        "data.invoices[0].items",
        "at least one item line",
    );
}

#[test]
fn wrapper_metadata_is_not_read_as_a_line() {
    let doc = json!({"name": "Main store", "count": 1, "sales": [
        {"invoice": "S1", "items": [{"name": "Tea", "price": "1"}]}
    ]});
    let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0].invoice_number, "S1");
    // A QuickBooks API answer.
    let doc = json!({"QueryResponse": {"Invoice": [{"DocNumber": "1037",
        "CustomerRef": {"value": "3", "name": "Cool Cars"},
        "BillEmail": {"Address": "cool@example.com"},
        "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 10,
                  "SalesItemLineDetail": {"ItemRef": {"name": "Wash"}, "UnitPrice": 5, "Qty": 2}}]}]}});
    let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
    assert_eq!(sales[0].invoice_number, "1037");
    assert_eq!(sales[0].customer_email.as_deref(), Some("cool@example.com"));
    assert_eq!(line(&sales[0], 0), ("Wash", 2, "5".into()));
}

#[test]
fn flat_json_rows_group_like_csv_rows() {
    let doc = json!([
        {"order_id": "O1", "customer": "Ann", "product": "Tea", "qty": 2, "price": 1.5},
        {"order_id": "O2", "product": "Cake", "amount": "6.00", "qty": 3},
        {"order_id": "O1", "product": "Scone", "qty": 1, "price": 2}
    ]);
    let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
    assert_eq!(sales.len(), 2);
    assert_eq!(sales[0].invoice_number, "O1");
    assert_eq!(sales[0].lines.len(), 2);
    assert_eq!(line(&sales[1], 0), ("Cake", 3, "2".into()));
}

#[test]
fn json_lines_file() {
    let text = "{\"id\":1,\"items\":[{\"item\":\"A\",\"rate\":3}]}\n{\"id\":2,\"items\":[{\"item\":\"B\",\"rate\":4}]}\n";
    let sales = parse("sales.jsonl", text.as_bytes());
    assert_eq!(sales.len(), 2);
    assert_eq!(sales[1].invoice_number, "2");
}

#[test]
fn keys_match_ignoring_case_and_separators() {
    for key in [
        "Transaction_ID",
        "transactionId",
        "transaction id",
        "TRANSACTION-ID",
    ] {
        let doc = json!({key: "T-9", "Line_Items": [{"Item Name": "X", "Unit-Price": "2"}]});
        let sales = parse_json(&doc, &IntakeOptions::default()).expect(key);
        assert_eq!(sales[0].invoice_number, "T-9", "{key}");
        assert_eq!(sales[0].lines[0].unit_price, dec("2"));
    }
}

#[test]
fn quickbooks_non_item_lines() {
    let mut doc: Value =
        serde_json::from_slice(&fixture("quickbooks_format.json")).expect("fixture json");
    let lines = doc["Line"].as_array_mut().expect("Line array");
    lines.push(json!({"DetailType": "SubTotalLineDetail", "Amount": 76.0}));
    let sales = parse_json(&doc, &IntakeOptions::default()).expect("subtotal skipped");
    assert_eq!(sales[0].lines.len(), 2);

    doc["Line"]
        .as_array_mut()
        .expect("Line array")
        .push(json!({"DetailType": "DiscountLineDetail", "Amount": 5.0}));
    has(&json_fails(doc), "Line[3].DetailType", "discount");
}

// --- CSV variants -----------------------------------------------------

#[test]
fn bom_and_crlf_csv() {
    let text = "\u{feff}Invoice No,Customer,Item,Qty,Price\r\n\
                INV-1,Ann,Tea,2,1.500\r\n\
                INV-1,,Cake,1,3\r\n\
                INV-2,\"Bob, Jr.\",\"Big \"\"Mug\"\"\",1,9.99\r\n\r\n\r\n";
    let sales = parse("export.csv", text.as_bytes());
    assert_eq!(sales.len(), 2);
    assert_eq!(sales[0].invoice_number, "INV-1");
    assert_eq!(sales[0].lines.len(), 2);
    assert_eq!(line(&sales[0], 0), ("Tea", 2, "1.500".into()));
    assert_eq!(sales[1].customer_name, "Bob, Jr.");
    assert_eq!(sales[1].lines[0].description, "Big \"Mug\"");
}

#[test]
fn semicolon_and_tab_csv() {
    let text = "Receipt No.;Date;Product;Quantity;Unit Price (JOD)\n\
                R1;30/06/2025 09:15;Cheese;2;4,50\n\
                R2;2025/07/01;Bread;1;\"1.234,50\"\n";
    let sales = parse("till.csv", text.as_bytes());
    assert_eq!(sales[0].date.as_deref(), Some("2025-06-30"));
    assert_eq!(line(&sales[0], 0), ("Cheese", 2, "4.50".into()));
    assert_eq!(sales[1].lines[0].unit_price, dec("1234.50"));

    let tabbed = "id\tname\tprice\n5\tSoap\t1.25\n";
    let sales = parse("till.txt", tabbed.as_bytes());
    assert_eq!(line(&sales[0], 0), ("Soap", 1, "1.25".into()));
}

#[test]
fn excel_separator_hint() {
    let text = "sep=;\r\nitem;price\r\nTea;1,5\r\n";
    assert_eq!(
        parse("x.csv", text.as_bytes())[0].lines[0].unit_price,
        dec("1.5")
    );
    let text = "sep=\t\nitem\tprice\nTea\t2\n";
    assert_eq!(
        parse("x.csv", text.as_bytes())[0].lines[0].unit_price,
        dec("2")
    );
}

#[test]
fn shop_platform_shapes_first_and_last_names_and_nested_products() {
    let opts = IntakeOptions::default();
    // Shopify-like: order_number, customer first/last name, title.
    let shopify = br#"{"orders":[{"order_number":1001,"customer":{"first_name":"John","last_name":"Smith","email":"j@x.com"},
        "line_items":[{"title":"Shirt","quantity":2,"price":"19.99","sku":"S1"}]}]}"#;
    let s = parse_file("orders.json", shopify, &opts).unwrap();
    assert_eq!(s[0].invoice_number, "1001");
    assert_eq!(s[0].customer_name, "John Smith");
    assert_eq!(s[0].customer_email.as_deref(), Some("j@x.com"));
    assert_eq!(s[0].lines[0].description, "Shirt");
    // A nested product object.
    let nested = br#"{"sale_id":"N-1","client":{"name":"Omar"},"lines":[{"product":{"name":"Widget","sku":"W1"},"qty":1,"price":2.5}]}"#;
    let s = parse_file("n.json", nested, &opts).unwrap();
    assert_eq!(s[0].lines[0].description, "Widget");
    assert_eq!(s[0].lines[0].sku.as_deref(), Some("W1"));
    assert_eq!(s[0].customer_name, "Omar");
    // JSON Lines keyed by "txn", grouped into one sale.
    let jsonl = b"{\"txn\":\"J-1\",\"item_name\":\"Cola\",\"qty\":2,\"price\":\"0.75\"}\n{\"txn\":\"J-1\",\"item_name\":\"Chips\",\"qty\":1,\"price\":\"0.50\"}\n";
    let s = parse_file("t.jsonl", jsonl, &opts).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].invoice_number.as_str(), s[0].lines.len()), ("J-1", 2));
    // CSV with separate name columns.
    let csv =
        b"Ticket No,First Name,Last Name,Item,Qty,Price\r\nT9,Sara,Haddad,Haircut,1,15.000\r\n";
    let s = parse_file("t.csv", csv, &opts).unwrap();
    assert_eq!(s[0].invoice_number, "T9");
    assert_eq!(s[0].customer_name, "Sara Haddad");
}

#[test]
fn synonyms_are_written_normalized() {
    for field in Field::ALL {
        for synonym in field.synonyms() {
            for segment in synonym.split('.') {
                assert_eq!(norm(segment), segment, "{field:?}: {synonym}");
            }
        }
        assert_eq!(Field::from_name(field.name()), Some(field));
    }
    for wrapper in WRAPPERS {
        assert_eq!(norm(wrapper), *wrapper);
    }
}

#[test]
fn utf16_files() {
    let text = "transaction_id,item_name,quantity,price\r\nT1,Café,1,2.00\r\n";
    let mut le = vec![0xFF, 0xFE];
    let mut be = vec![0xFE, 0xFF];
    for unit in text.encode_utf16() {
        le.extend(unit.to_le_bytes());
        be.extend(unit.to_be_bytes());
    }
    for bytes in [le, be] {
        let sales = parse("export.csv", &bytes);
        assert_eq!(line(&sales[0], 0), ("Café", 1, "2.00".into()));
    }
}

/// A CSV export saved by Excel in Windows-1256 (the Arabic code page):
/// the bytes as Windows writes them, not produced by the decoder under test.
const CP1256_CSV: &[u8] = b"invoice_number,customer,description,quantity,price\r\n\
    W-1,\xc3\xcd\xe3\xcf,\xde\xe5\xe6\xc9 \xda\xd1\xc8\xed\xc9,2,1.500\r\n";

fn with_encoding(label: &str) -> IntakeOptions {
    IntakeOptions {
        encoding: encoding_rs::Encoding::for_label(label.as_bytes()).unwrap(),
        ..IntakeOptions::default()
    }
}

#[test]
fn a_legacy_code_page_is_read_with_intake_encoding() {
    let sales = parse_file("export.csv", CP1256_CSV, &with_encoding("windows-1256"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sales[0].customer_name, "أحمد");
    assert_eq!(line(&sales[0], 0), ("قهوة عربية", 2, "1.500".into()));
    // Without the setting the same bytes are not UTF-8, and the
    // message says which setting reads them.
    let e = fails("export.csv", CP1256_CSV).to_string();
    assert!(
        e.contains("not UTF-8") && e.contains("intake.encoding"),
        "{e}"
    );
}

#[test]
fn a_byte_order_mark_wins_over_intake_encoding() {
    let text = "invoice_number,customer,description,quantity,price\r\nW-1,أحمد,قهوة,1,2\r\n";
    let opts = with_encoding("windows-1256");
    let mut utf8 = vec![0xEF, 0xBB, 0xBF];
    utf8.extend(text.as_bytes());
    let mut le = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        le.extend(unit.to_le_bytes());
    }
    for bytes in [utf8, le] {
        let sales = parse_file("x.csv", &bytes, &opts).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sales[0].customer_name, "أحمد");
        assert_eq!(line(&sales[0], 0).0, "قهوة");
    }
    // UTF-16 named as the encoding: no byte order mark needed.
    let mut be = Vec::new();
    for unit in text.encode_utf16() {
        be.extend(unit.to_be_bytes());
    }
    let sales = parse_file("x.csv", &be, &with_encoding("utf-16be")).unwrap();
    assert_eq!(sales[0].customer_name, "أحمد");
}

#[test]
fn a_byte_the_code_page_does_not_define_is_located() {
    // ISO-8859-6 leaves 0xA1 undefined: an error with its offset, never
    // a replacement character on a legal invoice.
    let bytes = b"invoice_number,description,price\nI-1,\xc7\xa1,1\n";
    let e = parse_file("x.csv", bytes, &with_encoding("iso-8859-6"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("offset 38") && e.contains("ISO-8859-6"), "{e}");
    // NUL bytes stay "not a text file" whatever the code page.
    let e = parse_file("x.csv", b"a,b\n\x001,2\n", &with_encoding("windows-1256"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("NUL bytes"), "{e}");
}

#[test]
fn no_invoice_column_each_row_is_a_sale_and_blank_numbers_continue() {
    let text = "item,price\nA,1\nB,2\n";
    let sales = parse("x.csv", text.as_bytes());
    assert_eq!(sales.len(), 2);
    assert!(sales.iter().all(|s| s.number_derived));

    let text = "number,customer,item,price\nN1,Ann,A,1\n,,B,2\n,Ann,B2,2\n,Bob,C,3\n";
    let sales = parse("x.csv", text.as_bytes());
    assert_eq!(sales.len(), 2);
    assert_eq!(sales[0].lines.len(), 3);
    assert_eq!(sales[1].customer_name, "Bob");
    assert!(sales[1].number_derived);
}

#[test]
fn one_number_two_customers_is_a_problem() {
    let text = "invoice,customer,item,price\nI1,Ann,A,1\nI1,Bob,B,2\n";
    has(
        &fails("x.csv", text.as_bytes()),
        "line 3, column \"customer\"",
        "own number",
    );
}

#[test]
fn unknown_extension_is_sniffed() {
    let json = br#"{"invoice_id": "Z", "entries": [{"title": "T", "cost": 1}]}"#;
    assert_eq!(parse("drop.dat", json)[0].invoice_number, "Z");
    assert_eq!(
        parse("drop", b"invoice_id,title,cost\nZ,T,1\n")[0]
            .lines
            .len(),
        1
    );
}

// --- mapping ----------------------------------------------------------

#[test]
fn mapping_overrides_csv_detection() {
    let mapping = Mapping::from_json(&json!({
        "invoice_number": "Ticket#",
        "description": "Artikel",
        "quantity": "Menge",
        "unit_price": "Preis"
    }))
    .expect("valid mapping");
    assert!(!mapping.is_empty());
    let opts = IntakeOptions {
        mapping,
        ..IntakeOptions::default()
    };
    let text = "Ticket#;Artikel;Menge;Preis;Kunde\n\
                77;Brezel;3;0,80;x\n\
                77;Kaffee;1;2,10;x\n";
    let sales = parse_file("kasse.csv", text.as_bytes(), &opts).expect("mapped");
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0].invoice_number, "77");
    assert_eq!(line(&sales[0], 0), ("Brezel", 3, "0.80".into()));

    // Without the mapping the file is refused, naming the missing columns.
    let e = fails("kasse.csv", text.as_bytes());
    has(&e, "line 1", "no column for the item description");
    has(&e, "line 1", "\"Ticket#\", \"Artikel\"");
    // A mapping naming a column the file lacks.
    let opts = IntakeOptions {
        mapping: Mapping::from_json(&json!({"quantity": "Anzahl"})).expect("valid"),
        ..IntakeOptions::default()
    };
    let e = parse_file("k.csv", b"item,price,Menge\nA,1,2\n", &opts).expect_err("no column");
    has(
        &e,
        "line 1",
        "intake.mapping.quantity names the column \"Anzahl\"",
    );
}

#[test]
fn mapping_overrides_json_detection() {
    let mapping = Mapping::from_json(&json!({
        "items": "cart.entries",
        "description": "label.en",
        "unit_price": "money.net",
        "customer_name": "who"
    }))
    .expect("valid mapping");
    let opts = IntakeOptions {
        mapping,
        ..IntakeOptions::default()
    };
    let doc = json!({
        "id": "C-1", "who": "Dana", "customer": "not this one",
        "cart": {"entries": [
            {"label": {"en": "Oil"}, "name": "ignored", "money": {"net": "3.25"}, "qty": 2}
        ]}
    });
    let sales = parse_json(&doc, &opts).expect("mapped");
    assert_eq!(sales[0].customer_name, "Dana");
    assert_eq!(line(&sales[0], 0), ("Oil", 2, "3.25".into()));

    let doc = json!({"cart": {"entries": [{"name": "Oil", "money": {"net": 1}}]}});
    let e = parse_json(&doc, &opts).expect_err("mapped description missing");
    has(&e, "cart.entries[0].label.en", "intake.mapping");
}

#[test]
fn quantity_hidden_in_an_unknown_column_is_not_assumed_to_be_1() {
    let text = "invoice,item,Menge,price,total\nA,Tea,3,2.00,6.00\nB,Jam,1,2.00,2.32\n";
    let e = fails("x.csv", text.as_bytes());
    has(&e, "line 2, column \"total\"", "intake.mapping.quantity");
    assert_eq!(
        e.problems.len(),
        1,
        "a total with 16% tax is consistent: {e}"
    );
    // A total column that is not the line's total can be ignored.
    let text = "order,item,qty,price,total\nA,Tea,1,2.00,9.00\nA,Jam,1,7.00,9.00\n";
    let opts = IntakeOptions {
        mapping: Mapping::from_json(&json!({"line_total": null})).expect("null ignores"),
        ..IntakeOptions::default()
    };
    let sales = parse_file("x.csv", text.as_bytes(), &opts).expect("valid");
    assert_eq!(sales[0].lines.len(), 2);
    let e = Mapping::from_json(&json!({"description": null})).expect_err("required");
    assert!(e.contains("cannot be null"), "{e}");
}

#[test]
fn mapping_config_errors() {
    let e = Mapping::from_json(&json!({"qty": "Menge"})).expect_err("unknown key");
    assert!(e.contains("\"qty\""), "{e}");
    assert!(e.contains("invoice_number, customer_name"), "{e}");
    assert!(e.contains("line_total, sku"), "{e}");
    let e = Mapping::from_json(&json!({"quantity": 3})).expect_err("not text");
    assert!(e.contains("intake.mapping.quantity"), "{e}");
    assert!(Mapping::from_json(&json!(["x"])).is_err());
    assert!(Mapping::from_json(&Value::Null).expect("null").is_empty());
    let m = Mapping::from_json(&json!({"UnitPrice": "P"})).expect("normalized key");
    assert_eq!(m.get(Field::UnitPrice), Some("P"));
    let config =
        json!({"items": "Line", "unit_price": "SalesItemLineDetail.UnitPrice", "sku": null});
    let m = Mapping::from_json(&config).expect("valid");
    assert_eq!(m.to_json(), config);
    assert_eq!(Mapping::from_json(&m.to_json()), Ok(m));
}

// --- amounts ----------------------------------------------------------

#[test]
fn fraction_rule() {
    let doc = json!({"invoice_number": "F1", "items": [
        {"description": "Cheese", "quantity": "1.5", "unit_price": "4.00"},
        {"description": "Labour", "quantity": 0.25, "unit_price": 30},
        {"description": "Olives", "quantity": "0.750", "unit_price": "3.333"}
    ]});
    let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
    let l = &sales[0].lines[0];
    assert_eq!(l.description, "Cheese (1.5 x 4.00)");
    assert_eq!(l.quantity, 1);
    assert_eq!(l.unit_price, dec("6.00"));
    assert_eq!(l.unit_price.to_string(), "6");
    assert_eq!(
        l.converted_from,
        Some(OriginalQuantity {
            quantity: dec("1.5"),
            unit_price: dec("4.00"),
            line_total: None
        })
    );
    assert_eq!(line(&sales[0], 1), ("Labour (0.25 x 30)", 1, "7.5".into()));
    // Exact product, not rounded: 0.75 x 3.333 = 2.49975.
    assert_eq!(
        line(&sales[0], 2),
        ("Olives (0.75 x 3.333)", 1, "2.49975".into())
    );
    // The backend body carries the converted line.
    let body = sales[0].to_new_invoice();
    assert_eq!(body.items[0].quantity, 1);
    assert_eq!(body.items[0].price, dec("6"));
}

#[test]
fn line_total_without_unit_price() {
    let doc = json!({"invoice_number": "T", "items": [
        {"description": "Nuts", "quantity": 4, "total": "10.00"},
        {"description": "Bag", "quantity": 3, "line_total": "10.00"},
        {"description": "Figs", "quantity": "1.5", "amount": "6.00"},
        {"description": "Card", "total": 2}
    ]});
    let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
    assert_eq!(line(&sales[0], 0), ("Nuts", 4, "2.5".into()));
    let bag = &sales[0].lines[1];
    assert_eq!(
        (bag.description.as_str(), bag.quantity),
        ("Bag (3 for 10.00)", 1)
    );
    assert_eq!(bag.unit_price, dec("10.00"));
    let original = bag.converted_from.as_ref().expect("converted");
    assert_eq!(original.line_total, Some(dec("10.00")));
    assert_eq!(original.unit_price, dec("3.333333"));
    assert_eq!(line(&sales[0], 2), ("Figs (1.5 x 4)", 1, "6".into()));
    assert_eq!(line(&sales[0], 3), ("Card", 1, "2".into()));
}

#[test]
fn amounts_are_read_exactly() {
    let ok = [
        ("4.50", "4.50"),
        (" 4.5 ", "4.5"),
        ("4,50", "4.50"),
        ("0,250", "0.250"),
        ("1,234.50", "1234.50"),
        ("1.234,50", "1234.50"),
        ("1 234,5", "1234.5"),
        ("1,234,567", "1234567"),
        ("JOD 4.500", "4.500"),
        ("$19.99", "19.99"),
        ("-3", "-3"),
        ("(2.00)", "-2.00"),
        ("٤٫٥٠", "4.50"),
        ("1e-7", "0.0000001"),
        (".5", "0.5"),
        ("0.1", "0.1"),
    ];
    for (text, want) in ok {
        assert_eq!(
            parse_amount(text).map(|d| d.to_string()),
            Ok(want.to_string()),
            "{text}"
        );
    }
    assert_eq!(parse_amount("1,250"), Err(NumError::Ambiguous));
    for bad in [
        "abc", "4.5.6x", "1,2.5", "4 5", "", "--1", "12abc", "1_000", "0x10",
    ] {
        assert!(parse_amount(bad).is_err(), "{bad}");
    }
    let e = json_fails(json!({"items": [{"description": "A", "price": "1,250"}]}));
    has(&e, "items[0].price", "ambiguous");
}

#[test]
fn dates() {
    let cases = [
        ("2025-06-30", Some("2025-06-30")),
        ("2025/6/3", Some("2025-06-03")),
        ("2025-06-30T09:15:00Z", Some("2025-06-30")),
        ("2025-06-30T23:30:00-05:00", Some("2025-06-30")),
        ("2025-06-30 09:15", Some("2025-06-30")),
        ("03/04/2025", Some("2025-04-03")),
        ("30-06-2025", Some("2025-06-30")),
        ("30.06.2025 14:00", Some("2025-06-30")),
        ("20250630", Some("2025-06-30")),
        ("1751241600", Some("2025-06-30")),
        ("1751241600000", Some("2025-06-30")),
        ("06/30/2025", None),
        ("2025-02-30", None),
        ("30/06/25", None),
        ("yesterday", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_date(text).as_deref(), want, "{text}");
    }
}

// --- derived numbers and hashes ---------------------------------------

#[test]
fn identical_sales_in_one_file_get_distinct_numbers() {
    let text = "item,qty,price\nCoffee,1,2.00\nCoffee,1,2.00\nTea,1,1.00\nCoffee,1,2.00\n";
    let a = parse("walkins.csv", text.as_bytes());
    let numbers: Vec<&str> = a.iter().map(|s| s.invoice_number.as_str()).collect();
    assert_eq!(numbers[1], format!("{}-2", numbers[0]));
    assert_eq!(numbers[3], format!("{}-3", numbers[0]));
    assert_ne!(numbers[2], numbers[0]);
    // The same file dropped again maps to the same numbers, even after
    // the default customer was reconfigured.
    let b = parse("walkins-again.csv", text.as_bytes());
    assert_eq!(a, b);
    let opts = IntakeOptions {
        default_customer: "Cash sale".into(),
        ..IntakeOptions::default()
    };
    let c = parse_file("walkins.csv", text.as_bytes(), &opts).expect("valid");
    assert_eq!(c[0].customer_name, "Cash sale");
    assert_eq!(c[0].invoice_number, a[0].invoice_number);
}

#[test]
fn derived_numbers_are_pinned() {
    // Changing the canonical encoding would renumber every re-dropped
    // file and let it through twice: this value must never change.
    let doc = json!({"customer": "Ann", "date": "2025-01-11",
                     "items": [{"description": "Tea", "quantity": 2, "price": "1.50"}]});
    let sales = parse_json(&doc, &IntakeOptions::default()).expect("valid");
    assert_eq!(sales[0].invoice_number, "POS-f7b62db2537e0e6d");
}

#[test]
fn content_hash_tells_resubmission_from_conflict() {
    let bytes = fixture("generic_pos.json");
    let a = parse("a.json", &bytes).remove(0);
    let b = parse("b.json", &bytes).remove(0);
    assert_eq!(a.content_hash(), b.content_hash());
    assert_eq!(a.content_hash().len(), 64);
    let mut c = a.clone();
    c.lines[0].unit_price = dec("15.51");
    assert_ne!(a.content_hash(), c.content_hash());
    let mut d = a.clone();
    d.lines[0].unit_price = dec("15.50");
    assert_eq!(a.content_hash(), d.content_hash(), "scale is not content");
    let mut e = a.clone();
    e.number_derived = true;
    assert_eq!(a.content_hash(), e.content_hash());
}

#[test]
fn same_number_different_content_in_one_document() {
    let doc = json!([
        {"invoice_number": "D", "items": [{"description": "A", "price": 1}]},
        {"invoice_number": "D", "items": [{"description": "A", "price": 1}]},
        {"invoice_number": "D", "items": [{"description": "B", "price": 1}]}
    ]);
    has(
        &json_fails(doc),
        "[2].invoice_number",
        "also used by the sale at [0]",
    );
}

#[test]
fn sale_round_trips_through_json_with_string_amounts() {
    let doc = json!({"invoice_number": "R", "items": [
        {"description": "Cheese", "quantity": "1.5", "unit_price": "4.00", "sku": "C1"},
        {"description": "Tea", "quantity": 2, "unit_price": "0.1"}
    ]});
    let sale = parse_json(&doc, &IntakeOptions::default())
        .expect("valid")
        .remove(0);
    let stored = serde_json::to_value(&sale).expect("serialize");
    assert_eq!(stored["lines"][1]["unit_price"], json!("0.1"));
    assert_eq!(
        stored["lines"][0]["converted_from"]["quantity"],
        json!("1.5")
    );
    assert_eq!(
        stored["lines"][0]["converted_from"]["unit_price"],
        json!("4.00")
    );
    let back: Sale = serde_json::from_value(stored).expect("deserialize");
    assert_eq!(back, sale);
    let body = serde_json::to_value(sale.to_new_invoice()).expect("body");
    assert_eq!(body["items"][1]["price"], json!(0.1));
    assert_eq!(body["customer_name"], json!(DEFAULT_CUSTOMER));
}

// --- bad inputs -------------------------------------------------------

#[test]
fn empty_files() {
    has(&fails("a.csv", b""), "a.csv", "the file is empty");
    has(
        &fails("a.json", b" \r\n\t\n"),
        "a.json",
        "the file is empty",
    );
    has(
        &fails("a.csv", b"\xEF\xBB\xBF\n"),
        "a.csv",
        "the file is empty",
    );
    has(&fails("a.csv", b"item,price\n\n"), "line 1", "no sale rows");
    has(&fails("a.json", b"[]"), DOCUMENT, "empty list");
}

#[test]
fn truncated_json_reports_line_and_column() {
    let bytes = fixture("generic_pos.json");
    let e = fails("generic_pos.json", &bytes[..bytes.len() / 2]);
    assert_eq!(e.problems.len(), 1);
    let p = &e.problems[0];
    assert!(p.location.starts_with("line "), "{p}");
    assert!(p.message.contains("EOF while parsing"), "{p}");
    assert!(p.message.contains("truncated"), "{p}");
}

#[test]
fn binary_content() {
    let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
    let e = fails("photo.csv", png);
    has(&e, "photo.csv", "not a text file");
    has(&e, "photo.csv", "expected a CSV or JSON export");
    has(
        &fails("latin1.csv", b"item,price\ncaf\xe9,1\n"),
        "latin1.csv",
        "not UTF-8",
    );
    has(
        &fails("ctl.csv", b"item,price\nA\x01,1\n"),
        "ctl.csv",
        "line 2",
    );
}

#[test]
fn top_level_json_must_be_object_or_array() {
    has(
        &fails("n.json", b"42"),
        DOCUMENT,
        "the JSON document is a number",
    );
    has(
        &json_fails(json!("text")),
        DOCUMENT,
        "expected one sale object",
    );
    has(
        &json_fails(json!([1, {"items": []}])),
        "[0]",
        "must be an object",
    );
}

#[test]
fn wrong_types_are_located() {
    let e = json_fails(json!([
        {"items": "coffee"},
        {"items": [{"description": ["x"], "quantity": true, "price": {"v": 1}}]},
        {"items": [7]},
        {"customer_email": "a@b.c", "lines": [{"name": "A", "price": "1O.00"}]}
    ]));
    has(&e, "[0].items", "must be an array");
    has(
        &e,
        "[1].items[0].description",
        "must be text, found an array",
    );
    has(
        &e,
        "[1].items[0].quantity",
        "must be a number, found true/false",
    );
    has(&e, "[1].items[0].unit_price", "unit price is missing");
    has(&e, "[2].items[0]", "must be an object");
    has(&e, "[3].lines[0].price", "\"1O.00\" is not a number");
}

#[test]
fn csv_problems_name_line_and_column() {
    let text = "invoice,item,quantity,price,email\n\
                A,Tea,1,1.00,a@example.com\n\
                B,,2,1.00,\n\
                C,Cake,-1,2.00,\n\
                D,Bun,0,2.00,\n\
                E,Jam,1,-2.00,\n\
                F,Pie,5000000000,1,\n\
                G,Oil,1,,\n\
                H,Egg,x,1,not-an-email\n";
    let e = fails("bad.csv", text.as_bytes());
    has(&e, "line 3, column \"item\"", "description is empty");
    has(
        &e,
        "line 4, column \"quantity\"",
        "credit note at the backend",
    );
    has(&e, "line 5, column \"quantity\"", "is 0");
    has(&e, "line 6, column \"price\"", "is negative");
    has(&e, "line 7, column \"quantity\"", "too large");
    has(&e, "line 8, column \"price\"", "unit price is empty");
    has(&e, "line 9, column \"quantity\"", "not a number");
    has(&e, "line 9, column \"email\"", "not an email address");
    assert_eq!(e.problems.len(), 8, "{e}");
    // Display: one problem per line.
    assert_eq!(e.to_string().lines().count(), 8);
    assert!(e
        .to_string()
        .starts_with("line 3, column \"item\": description is empty"));
}

#[test]
fn bad_email_in_json() {
    let e = json_fails(
        json!({"invoice_number": "E", "customer": {"name": "X", "email": "x at y"},
                              "items": [{"description": "A", "price": 1}]}),
    );
    has(&e, "customer.email", "not an email address");
    for good in ["a@b.co", "first.last+tag@sub.example.jo", "user@localhost"] {
        assert!(looks_like_email(good), "{good}");
    }
    for bad in ["a@", "@b.c", "a@@b.c", "a b@c.d", "a@b..c", "a@b.c; d@e.f"] {
        assert!(!looks_like_email(bad), "{bad}");
    }
}

#[test]
fn unquoted_separator_in_a_value() {
    let text = "invoice,item,qty,price\nA,Coffee, Large,1,4.50\n";
    has(&fails("x.csv", text.as_bytes()), "line 2", "without quotes");
}

#[test]
fn a_10_mb_line() {
    let mut text = b"invoice,item,price\nA,".to_vec();
    text.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    text.extend(b",1\nB,Tea,1\n");
    let e = fails("huge.csv", &text);
    assert_eq!(e.problems.len(), 1, "{e}");
    has(&e, "line 2", "at most 64 KiB");
    let e = fails("one-line.csv", &vec![b'a'; 10 * 1024 * 1024]);
    assert_eq!(e.problems.len(), 1, "{e}");
    has(&e, "line 1", "is 10485760 bytes long");
    // As JSON, the text field limit catches it.
    let long = "y".repeat(5000);
    let e = json_fails(json!({"items": [{"description": long, "price": 1}]}));
    has(&e, "items[0].description", "at most 1000");
}

#[test]
fn volume_limits() {
    let mut text = String::from("invoice,item,price\n");
    for i in 0..=MAX_SALES {
        let _ = writeln!(text, "N{i},Tea,1");
    }
    has(
        &fails("big.csv", text.as_bytes()),
        "line 10002",
        "at most 10000 sales",
    );
    let lines: Vec<Value> = (0..=MAX_LINES_PER_SALE)
        .map(|_| json!({"description": "A", "price": 1}))
        .collect();
    has(
        &json_fails(json!({"items": lines})),
        "items",
        "at most 1000",
    );
}

#[test]
fn problems_are_capped() {
    let mut text = String::from("item,price\n");
    for _ in 0..150 {
        text.push_str(",1\n");
    }
    let e = fails("many.csv", text.as_bytes());
    assert_eq!(e.problems.len(), MAX_PROBLEMS + 1);
    has(&e, "(more)", "50 more problems");
}
