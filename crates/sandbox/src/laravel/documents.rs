//! How the backend shows its models: the JSON of a user and an invoice, the
//! invoice's PDF (dompdf in the real backend) and its UBL XML view.

use super::*;

/// Laravel's date serialisation, at the database's second precision.
pub(super) fn laravel_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S.000000Z").to_string()
}

pub(super) fn now_timestamp() -> String {
    laravel_timestamp(Utc::now())
}

/// A decimal(…,2) amount as Laravel's decimal cast shows it: `"116.00"`.
pub(super) fn money(d: Decimal) -> String {
    format!("{:.2}", round_half_up(d, 2))
}

/// An item's float amount, two decimals, for the PDF (PHP's
/// `number_format`).
pub(super) fn money_f(x: f64) -> String {
    money(crate::tax::php_decimal(x).unwrap_or_default())
}

/// An item's float amount as the backend's JSON shows it: what the
/// database kept (SQLite: the value of PHP's 14-digit string, an integer
/// when whole), as a JSON number (`0.1648`, `50`).
pub(super) fn db_number(x: f64) -> Value {
    let v = stored_float(x);
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// The tax rate as a percentage, `16`.
pub(super) fn tax_percent() -> String {
    crate::tax::php_decimal(RATE * 100.0)
        .unwrap_or_default()
        .to_string()
}

/// The vendor (user) as login and profile show it: the backend's full key
/// set, nulls where unset.
pub(super) fn user_json(u: &SandboxUser, created_at: &str) -> Value {
    let organization = if u.organization_id == 1 {
        SANDBOX_CUSTOMER
    } else {
        "Other Shop"
    };
    json!({
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "email_verified_at": null,
        "role": "vendor",
        "is_admin": false,
        "organization_id": u.organization_id,
        "organization_name": organization,
        "organization_phone": null,
        "organization_address": null,
        "phone": null,
        "address": null,
        "company_name": null,
        "tax_number": null,
        "settings": null,
        "created_at": created_at,
        "updated_at": created_at,
    })
}

pub(super) fn invoice_date_json(d: NaiveDate) -> String {
    format!("{}T00:00:00.000000Z", d.format("%Y-%m-%d"))
}

/// The create answer: the model as created (no status, no items).
pub(super) fn invoice_created_json(inv: &Invoice) -> Value {
    let mut v = json!({
        "id": inv.id,
        "invoice_number": inv.invoice_number,
        "customer_name": inv.customer_name,
    });
    // Optional keys only when the request had them.
    if inv.email_sent {
        v["customer_email"] = json!(inv.customer_email);
    }
    if inv.phone_sent {
        v["customer_phone"] = json!(inv.customer_phone);
    }
    let rest = json!({
        "uuid": inv.uuid,
        "vendor_id": inv.vendor_id,
        "organization_id": inv.organization_id,
        "invoice_date": invoice_date_json(inv.invoice_date),
        "total_amount": money(inv.total_amount),
        "tax_amount": money(inv.tax_amount),
        "updated_at": inv.updated_at,
        "created_at": inv.created_at,
    });
    if let (Some(v), Value::Object(rest)) = (v.as_object_mut(), rest) {
        v.extend(rest);
    }
    v
}

/// `GET /api/invoices/{id}`: the stored invoice with status and items.
pub(super) fn invoice_full_json(inv: &Invoice) -> Value {
    let items: Vec<Value> = inv
        .items
        .iter()
        .map(|it| {
            json!({
                "id": it.id,
                "invoice_id": inv.id,
                "item_name": it.item_name,
                "quantity": it.quantity,
                "unit_price": db_number(it.unit_price),
                "tax": db_number(it.tax),
                "total": db_number(it.total),
                "created_at": it.created_at,
                "updated_at": it.created_at,
            })
        })
        .collect();
    // The stored model, reloaded: every column (the database defaults
    // where the create left them) and its items.
    json!({
        "id": inv.id,
        "invoice_number": inv.invoice_number,
        "customer_name": inv.customer_name,
        "customer_email": inv.customer_email,
        "customer_phone": inv.customer_phone,
        "customer_address": null,
        "customer_tax_number": null,
        "uuid": inv.uuid,
        "vendor_id": inv.vendor_id,
        "organization_id": inv.organization_id,
        "invoice_date": invoice_date_json(inv.invoice_date),
        "due_date": null,
        "status": inv.status,
        "currency": CURRENCY,
        "invoice_type": "income",
        "payment_status": "pending",
        "compliance_status": "pending",
        "total_amount": money(inv.total_amount),
        "tax_amount": money(inv.tax_amount),
        "discount_amount": money(Decimal::ZERO),
        "net_amount": null,
        "payment_method": null,
        "payment_reference": null,
        "rejection_reason": null,
        "integration_type": null,
        "line_items_summary": null,
        "audit_trail": null,
        "revision_number": 1,
        "submitted_at": inv.submitted_at,
        "processed_at": null,
        "paid_at": null,
        "created_by": null,
        "updated_by": null,
        "created_at": inv.created_at,
        "updated_at": inv.updated_at,
        "items": items,
    })
}

pub(super) const LEGAL_TEXT: &[&str] = &[
    "Terms and legal notes",
    "1. This document was produced by the pos-connector sandbox, a simulator of the invoicing",
    "   backend. It is not a tax invoice and has not been reported to the Income and Sales Tax",
    "   Department of Jordan (JoFotara). It carries no legal or fiscal value whatsoever.",
    "2. Amounts are expressed in Jordanian dinars (JOD). General sales tax is applied at a flat",
    "   rate of 16% on each line, computed on quantity times unit price and kept unrounded; the",
    "   invoice tax is the sum of the line taxes, rounded once to two decimals, half up.",
    "3. In the field, the official invoice is rendered by the backend once the invoice has been",
    "   accepted by the national e-invoicing system, and carries the QR code issued by it.",
    "4. Goods remain the property of the seller until paid in full. Payment is due on receipt",
    "   unless otherwise agreed in writing. Late payments may incur charges as permitted by law.",
    "5. Claims regarding the goods or this invoice must be made within fourteen days of the",
    "   invoice date, quoting the invoice number and the unique identifier (UUID) shown above.",
    "6. Returns are accepted only with this document, in the original packaging, within the",
    "   period stated in the store's return policy; refunds are issued as a credit note that",
    "   references this invoice, never by editing or deleting the original invoice.",
    "7. Personal data printed on this document (customer name, e-mail, telephone) is processed",
    "   only to issue and keep the invoice for the period the tax law requires.",
    "8. Integrators: the bytes of this PDF are deterministic for a given invoice, so tests can",
    "   compare a downloaded copy with the sandbox's own rendering.",
    "",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt",
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco",
    "laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in",
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat",
    "cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum.",
    "Sed ut perspiciatis unde omnis iste natus error sit voluptatem accusantium doloremque",
    "laudantium, totam rem aperiam, eaque ipsa quae ab illo inventore veritatis et quasi",
    "architecto beatae vitae dicta sunt explicabo. Nemo enim ipsam voluptatem quia voluptas sit",
    "aspernatur aut odit aut fugit, sed quia consequuntur magni dolores eos qui ratione voluptatem",
    "sequi nesciunt. Neque porro quisquam est, qui dolorem ipsum quia dolor sit amet.",
];

/// The invoice PDF: depends only on the stored invoice (not its status), so
/// the same invoice always gives the same bytes.
pub(super) fn invoice_pdf(inv: &Invoice) -> Vec<u8> {
    let mut lines = vec![
        "TAX INVOICE (sandbox)".to_string(),
        String::new(),
        format!("Invoice number:   {}", inv.invoice_number),
        format!("Invoice id:       {}", inv.id),
        format!("UUID:             {}", inv.uuid),
        format!("Issue date:       {}", inv.invoice_date.format("%Y-%m-%d")),
        format!(
            "Seller:           {} (vendor {}, organization {})",
            inv.vendor_name, inv.vendor_id, inv.organization_id
        ),
        format!("Customer:         {}", inv.customer_name),
    ];
    if let Some(e) = &inv.customer_email {
        lines.push(format!("Customer e-mail:  {e}"));
    }
    if let Some(p) = &inv.customer_phone {
        lines.push(format!("Customer phone:   {p}"));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<4}{:<44}{:>8}{:>12}{:>10}{:>12}",
        "#", "Description", "Qty", "Unit price", "Tax", "Total"
    ));
    lines.push("-".repeat(90));
    for (n, it) in inv.items.iter().enumerate() {
        let name: String = it.item_name.chars().take(42).collect();
        lines.push(format!(
            "{:<4}{:<44}{:>8}{:>12}{:>10}{:>12}",
            n + 1,
            name,
            it.quantity,
            money_f(it.unit_price),
            money_f(it.tax),
            money_f(it.total)
        ));
        if it.item_name.chars().count() > 42 {
            lines.push(format!("    {}", it.item_name));
        }
    }
    lines.push("-".repeat(90));
    lines.push(format!(
        "{:>78}{:>12}",
        "Subtotal (tax excluded):",
        money(inv.subtotal)
    ));
    lines.push(format!(
        "{:>78}{:>12}",
        format!("General sales tax {}%:", tax_percent()),
        money(inv.tax_amount)
    ));
    lines.push(format!(
        "{:>78}{:>12}",
        format!("Total ({CURRENCY}):"),
        money(inv.total_amount)
    ));
    lines.push(String::new());
    lines.extend(LEGAL_TEXT.iter().map(|s| s.to_string()));
    render_text_pdf(&format!("Invoice {}", inv.invoice_number), &lines)
}

pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// An amount with 3 decimals, as the backend's UBL view prints them.
fn ubl_amount(x: f64) -> String {
    format!(
        "{:.3}",
        round_half_up(crate::tax::php_decimal(x).unwrap_or_default(), 3)
    )
}

/// The backend's own UBL 2.1 view (`/xml`), with its habits: amounts with 3
/// decimals, line amounts tax-inclusive, and the document totals
/// (TaxExclusive, TaxInclusive, Payable) printed as `0.000` (the view reads
/// fields the model does not fill). Not a source of totals.
pub(super) fn invoice_xml(inv: &Invoice) -> String {
    let e = xml_escape;
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(
        "<Invoice xmlns=\"urn:oasis:names:specification:ubl:schema:xsd:Invoice-2\" \
         xmlns:cac=\"urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2\" \
         xmlns:cbc=\"urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2\">\n",
    );
    x.push_str("  <cbc:UBLVersionID>2.1</cbc:UBLVersionID>\n");
    x.push_str("  <cbc:ProfileID>reporting:1.0</cbc:ProfileID>\n");
    x.push_str(&format!("  <cbc:ID>{}</cbc:ID>\n", e(&inv.invoice_number)));
    x.push_str(&format!("  <cbc:UUID>{}</cbc:UUID>\n", e(&inv.uuid)));
    x.push_str(&format!(
        "  <cbc:IssueDate>{}</cbc:IssueDate>\n",
        inv.invoice_date.format("%Y-%m-%d")
    ));
    x.push_str("  <cbc:InvoiceTypeCode name=\"012\">388</cbc:InvoiceTypeCode>\n");
    x.push_str(&format!(
        "  <cbc:DocumentCurrencyCode>{CURRENCY}</cbc:DocumentCurrencyCode>\n  <cbc:TaxCurrencyCode>{CURRENCY}</cbc:TaxCurrencyCode>\n"
    ));
    x.push_str(&format!(
        "  <cac:AccountingSupplierParty>\n    <cac:Party>\n      <cac:PartyIdentification>\n        <cbc:ID schemeID=\"VENDOR\">{}</cbc:ID>\n      </cac:PartyIdentification>\n      <cac:PartyTaxScheme>\n        <cbc:CompanyID>ORG-{}</cbc:CompanyID>\n        <cac:TaxScheme>\n          <cbc:ID>VAT</cbc:ID>\n        </cac:TaxScheme>\n      </cac:PartyTaxScheme>\n      <cac:PartyLegalEntity>\n        <cbc:RegistrationName>{}</cbc:RegistrationName>\n      </cac:PartyLegalEntity>\n    </cac:Party>\n  </cac:AccountingSupplierParty>\n",
        inv.vendor_id,
        inv.organization_id,
        e(&inv.vendor_name)
    ));
    x.push_str("  <cac:AccountingCustomerParty>\n    <cac:Party>\n");
    x.push_str(&format!(
        "      <cac:PartyLegalEntity>\n        <cbc:RegistrationName>{}</cbc:RegistrationName>\n      </cac:PartyLegalEntity>\n",
        e(&inv.customer_name)
    ));
    if inv.customer_email.is_some() || inv.customer_phone.is_some() {
        x.push_str("      <cac:Contact>\n");
        if let Some(p) = &inv.customer_phone {
            x.push_str(&format!(
                "        <cbc:Telephone>{}</cbc:Telephone>\n",
                e(p)
            ));
        }
        if let Some(m) = &inv.customer_email {
            x.push_str(&format!(
                "        <cbc:ElectronicMail>{}</cbc:ElectronicMail>\n",
                e(m)
            ));
        }
        x.push_str("      </cac:Contact>\n");
    }
    x.push_str("    </cac:Party>\n  </cac:AccountingCustomerParty>\n");
    x.push_str(&format!(
        "  <cac:TaxTotal>\n    <cbc:TaxAmount currencyID=\"{CURRENCY}\">{:.3}</cbc:TaxAmount>\n  </cac:TaxTotal>\n",
        inv.tax_amount
    ));
    x.push_str(&format!(
        "  <cac:LegalMonetaryTotal>\n    <cbc:TaxExclusiveAmount currencyID=\"{CURRENCY}\">{zero}</cbc:TaxExclusiveAmount>\n    <cbc:TaxInclusiveAmount currencyID=\"{CURRENCY}\">{zero}</cbc:TaxInclusiveAmount>\n    <cbc:PayableAmount currencyID=\"{CURRENCY}\">{zero}</cbc:PayableAmount>\n  </cac:LegalMonetaryTotal>\n",
        zero = ubl_amount(0.0)
    ));
    for (n, it) in inv.items.iter().enumerate() {
        x.push_str(&format!(
            "  <cac:InvoiceLine>\n    <cbc:ID>{}</cbc:ID>\n    <cbc:InvoicedQuantity unitCode=\"PCE\">{}</cbc:InvoicedQuantity>\n    <cbc:LineExtensionAmount currencyID=\"{CURRENCY}\">{}</cbc:LineExtensionAmount>\n    <cac:TaxTotal>\n      <cbc:TaxAmount currencyID=\"{CURRENCY}\">{}</cbc:TaxAmount>\n      <cbc:RoundingAmount currencyID=\"{CURRENCY}\">{}</cbc:RoundingAmount>\n      <cac:TaxSubtotal>\n        <cbc:TaxAmount currencyID=\"{CURRENCY}\">{}</cbc:TaxAmount>\n        <cac:TaxCategory>\n          <cbc:ID>S</cbc:ID>\n          <cbc:Percent>{}</cbc:Percent>\n          <cac:TaxScheme>\n            <cbc:ID>VAT</cbc:ID>\n          </cac:TaxScheme>\n        </cac:TaxCategory>\n      </cac:TaxSubtotal>\n    </cac:TaxTotal>\n    <cac:Item>\n      <cbc:Name>{}</cbc:Name>\n    </cac:Item>\n    <cac:Price>\n      <cbc:PriceAmount currencyID=\"{CURRENCY}\">{}</cbc:PriceAmount>\n    </cac:Price>\n  </cac:InvoiceLine>\n",
            n + 1,
            it.quantity,
            ubl_amount(it.total),
            ubl_amount(it.tax),
            ubl_amount(it.total),
            ubl_amount(it.tax),
            tax_percent(),
            e(&it.item_name),
            ubl_amount(it.unit_price)
        ));
    }
    x.push_str("</Invoice>\n");
    x
}
