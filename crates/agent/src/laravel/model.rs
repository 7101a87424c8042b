//! The Laravel backend's data: what we send to create an invoice and what
//! comes back. Input is read generously (numbers as strings, a few common
//! synonyms); answers keep their raw JSON so `--json` shows exactly what
//! the backend said and unknown fields are never lost.

use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

/// The body of `POST /api/invoices`. Optional fields are omitted, never
/// sent as null.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct NewInvoice {
    pub(crate) invoice_number: String,
    pub customer_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) customer_phone: Option<String>,
    pub(crate) items: Vec<NewItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct NewItem {
    pub(crate) description: String,
    /// The backend takes whole quantities only (integer, min 1).
    pub(crate) quantity: u32,
    /// Unit price, tax excluded.
    #[serde(with = "rust_decimal::serde::float")]
    pub(crate) price: Decimal,
}

/// One thing wrong with an input field, named by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub(crate) field: String,
    pub(crate) problem: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A decimal from a JSON number or numeric string, without going through
/// a binary float (JSON numbers print in their shortest exact form).
pub(crate) fn decimal_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse::<Decimal>().ok().or_else(|| {
            n.as_f64()
                .and_then(|f| Decimal::from_scientific(&format!("{f:e}")).ok())
        }),
        Value::String(s) => s.trim().parse::<Decimal>().ok(),
        _ => None,
    }
}

/// Statuses the backend reports. Unknown ones (a webhook may set others)
/// are kept as they are, never rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum InvoiceStatus {
    Draft,
    Submitted,
    Rejected,
    Error,
    Other(String),
}

impl InvoiceStatus {
    pub(crate) fn parse(s: &str) -> InvoiceStatus {
        match s.trim().to_ascii_lowercase().as_str() {
            "draft" => InvoiceStatus::Draft,
            "submitted" => InvoiceStatus::Submitted,
            "rejected" => InvoiceStatus::Rejected,
            "error" => InvoiceStatus::Error,
            _ => InvoiceStatus::Other(s.to_string()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Submitted => "submitted",
            InvoiceStatus::Rejected => "rejected",
            InvoiceStatus::Error => "error",
            InvoiceStatus::Other(s) => s,
        }
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The 201 answer to create: the invoice as created (no status, no items).
#[derive(Debug, Clone)]
pub struct CreatedInvoice {
    pub id: u64,
    pub(crate) uuid: Option<String>,
    pub total_amount: Option<Decimal>,
    pub tax_amount: Option<Decimal>,
    pub(crate) raw: Value,
}

impl CreatedInvoice {
    pub(crate) fn from_json(raw: Value) -> Result<CreatedInvoice, String> {
        let id = raw
            .get("id")
            .and_then(id_of)
            .ok_or("the answer has no numeric \"id\"")?;
        Ok(CreatedInvoice {
            id,
            uuid: raw.get("uuid").and_then(text_of),
            total_amount: raw.get("total_amount").and_then(decimal_of),
            tax_amount: raw.get("tax_amount").and_then(decimal_of),
            raw,
        })
    }
}

/// `GET /api/invoices/{id}`: the invoice with status and items.
#[derive(Debug, Clone)]
pub struct Invoice {
    pub id: u64,
    pub(crate) invoice_number: String,
    pub(crate) customer_name: Option<String>,
    pub(crate) status: Option<InvoiceStatus>,
    pub(crate) uuid: Option<String>,
    pub(crate) total_amount: Option<Decimal>,
    pub(crate) tax_amount: Option<Decimal>,
    pub items: Vec<InvoiceLine>,
    pub(crate) raw: Value,
}

#[derive(Debug, Clone)]
pub struct InvoiceLine {
    pub(crate) item_name: String,
    pub(crate) quantity: Option<Decimal>,
    pub(crate) unit_price: Option<Decimal>,
    pub(crate) tax: Option<Decimal>,
    pub total: Option<Decimal>,
}

impl Invoice {
    pub(crate) fn from_json(raw: Value) -> Result<Invoice, String> {
        let id = raw
            .get("id")
            .and_then(id_of)
            .ok_or("the answer has no numeric \"id\"")?;
        let items = raw
            .get("items")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|l| InvoiceLine {
                        item_name: l
                            .get("item_name")
                            .or_else(|| l.get("description"))
                            .and_then(text_of)
                            .unwrap_or_default(),
                        quantity: l.get("quantity").and_then(decimal_of),
                        unit_price: l.get("unit_price").and_then(decimal_of),
                        tax: l.get("tax").and_then(decimal_of),
                        total: l.get("total").and_then(decimal_of),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Invoice {
            id,
            invoice_number: raw
                .get("invoice_number")
                .and_then(text_of)
                .unwrap_or_default(),
            customer_name: raw.get("customer_name").and_then(text_of),
            status: raw
                .get("status")
                .and_then(Value::as_str)
                .map(InvoiceStatus::parse),
            uuid: raw.get("uuid").and_then(text_of),
            total_amount: raw.get("total_amount").and_then(decimal_of),
            tax_amount: raw.get("tax_amount").and_then(decimal_of),
            items,
            raw,
        })
    }
}

/// How an invoice read back from the backend differs from the one we send
/// for a sale, if it does: its customer (name, and email and phone where
/// the backend shows them) and its lines (description, quantity, unit
/// price), compared as a set of lines in any order. Totals are not
/// compared: the backend computes them its own way (in floating point),
/// while the lines are what the sale is. `None`: they are the same.
pub(crate) fn sale_difference(sent: &NewInvoice, found: &Invoice) -> Option<String> {
    let text = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match text(found.customer_name.as_deref()) {
        Some(theirs) if theirs == sent.customer_name.trim() => {}
        Some(theirs) => {
            return Some(format!(
                "customer \"{theirs}\" there, \"{}\" here",
                sent.customer_name
            ))
        }
        None => return Some("the backend shows no customer for it".into()),
    }
    for (field, ours) in [
        ("customer_email", &sent.customer_email),
        ("customer_phone", &sent.customer_phone),
    ] {
        // Only when the backend shows the field (null counts as shown).
        let Some(v) = found.raw.get(field) else {
            continue;
        };
        let fold = |s: Option<String>| s.map(|s| s.to_lowercase());
        let theirs = fold(text(v.as_str()));
        if theirs != fold(text(ours.as_deref())) {
            return Some(format!(
                "{field} {} there, {} here",
                theirs.as_deref().unwrap_or("(none)"),
                ours.as_deref().unwrap_or("(none)")
            ));
        }
    }
    if found.items.is_empty() {
        return Some("the backend shows no lines for it".into());
    }
    let money = crate::tax::round_money;
    let show = |d: &str, q: Option<Decimal>, p: Option<Decimal>| {
        format!(
            "\"{d}\" {} x {}",
            q.map(|q| q.normalize().to_string())
                .unwrap_or_else(|| "?".into()),
            p.map(|p| format!("{:.2}", money(p)))
                .unwrap_or_else(|| "?".into())
        )
    };
    let mut theirs: Vec<Option<(String, Decimal, Decimal)>> = found
        .items
        .iter()
        .map(|l| {
            Some((
                l.item_name.trim().to_string(),
                l.quantity?.normalize(),
                money(l.unit_price?),
            ))
        })
        .collect();
    for ours in &sent.items {
        let key = (
            ours.description.trim().to_string(),
            Decimal::from(ours.quantity),
            money(ours.price),
        );
        match theirs.iter().position(|t| t.as_ref() == Some(&key)) {
            Some(i) => {
                theirs.remove(i);
            }
            None => {
                let there = found
                    .items
                    .iter()
                    .map(|l| show(&l.item_name, l.quantity, l.unit_price))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Some(format!(
                    "line {} here is not there (there: {there})",
                    show(&ours.description, Some(key.1), Some(key.2))
                ));
            }
        }
    }
    if !theirs.is_empty() {
        return Some(format!(
            "{} line(s) there, {} here",
            found.items.len(),
            sent.items.len()
        ));
    }
    None
}

/// The signed-in vendor (`user` of the login answer, or the profile).
#[derive(Debug, Clone)]
pub struct Vendor {
    pub(crate) id: Option<u64>,
    pub(crate) name: Option<String>,
    pub(crate) email: Option<String>,
}

impl Vendor {
    pub(crate) fn from_json(raw: Value) -> Vendor {
        Vendor {
            id: raw.get("id").and_then(id_of),
            name: raw.get("name").and_then(text_of),
            email: raw.get("email").and_then(text_of),
        }
    }
}

/// Reads `{"status": "..."}`.
pub(crate) fn status_from_json(v: &Value) -> Result<InvoiceStatus, String> {
    v.get("status")
        .and_then(Value::as_str)
        .map(InvoiceStatus::parse)
        .ok_or_else(|| "the answer has no \"status\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_do_not_go_through_floats() {
        assert_eq!(decimal_of(&json!(0.1)).unwrap().to_string(), "0.1");
        assert_eq!(decimal_of(&json!("116.00")).unwrap().to_string(), "116.00");
        assert_eq!(decimal_of(&json!(8.99)).unwrap().to_string(), "8.99");
    }

    #[test]
    fn item_amounts_are_read_as_numbers_or_strings() {
        // SQLite backends send unrounded numbers, MySQL two-decimal strings.
        let inv = Invoice::from_json(json!({"id": 5, "invoice_number": "N", "items": [
            {"item_name": "A", "quantity": 3, "unit_price": 1.03, "tax": 0.16480000000000003, "total": 1.1948},
            {"item_name": "B", "quantity": "2", "unit_price": "4.50", "tax": "1.44", "total": "10.44"},
            {"item_name": "C", "quantity": 1.0, "unit_price": 1e-5, "tax": "0", "total": 2.5e1}
        ]}))
        .unwrap();
        let l = &inv.items;
        assert_eq!(l[0].quantity, Some(Decimal::from(3)));
        assert_eq!(l[0].unit_price.unwrap().to_string(), "1.03");
        assert_eq!(l[0].tax.unwrap().to_string(), "0.16480000000000003");
        assert_eq!(l[1].quantity, Some(Decimal::from(2)));
        assert_eq!(l[1].unit_price.unwrap().to_string(), "4.50");
        assert_eq!(l[2].quantity.unwrap().normalize(), Decimal::from(1));
        assert_eq!(l[2].unit_price.unwrap().to_string(), "0.00001");
        assert_eq!(l[2].total.unwrap().normalize().to_string(), "25");
    }

    #[test]
    fn a_found_invoice_is_compared_line_by_line() {
        let sent = NewInvoice::from_json(&json!({
            "invoice_number": "T-1", "customer_name": "Amal", "customer_email": "a@x.jo",
            "items": [{"description": "Tea", "quantity": 2, "price": "1.03"},
                      {"description": "Cake", "quantity": 1, "price": 3.5}]
        }))
        .unwrap();
        let found = |items: Value, extra: Value| {
            let mut v = json!({"id": 9, "invoice_number": "T-1", "customer_name": " Amal ",
                               "customer_email": "A@x.jo", "total_amount": "9.99", "items": items});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            Invoice::from_json(v).unwrap()
        };
        let ours = json!([
            {"item_name": "Cake", "quantity": 1, "unit_price": "3.50", "tax": 0.56, "total": 4.06},
            {"item_name": "Tea", "quantity": 2, "unit_price": 1.03, "tax": 0.3296, "total": 2.3896}
        ]);
        // Same lines in another order, any totals, amounts as numbers: the same sale.
        assert_eq!(
            sale_difference(&sent, &found(ours.clone(), json!({}))),
            None
        );
        // Same customer and the same total, other lines: another sale.
        let other = json!([{"item_name": "Tea", "quantity": 1, "unit_price": 2.06},
                           {"item_name": "Cake", "quantity": 1, "unit_price": 3.5}]);
        let d = sale_difference(&sent, &found(other, json!({}))).unwrap();
        assert!(d.contains("\"Tea\" 2 x 1.03 here is not there"), "{d}");
        let d = sale_difference(
            &sent,
            &found(ours.clone(), json!({"customer_name": "Omar"})),
        )
        .unwrap();
        assert!(d.contains("customer \"Omar\" there"), "{d}");
        let d =
            sale_difference(&sent, &found(ours.clone(), json!({"customer_email": null}))).unwrap();
        assert!(d.contains("customer_email"), "{d}");
        let mut more = ours.as_array().unwrap().clone();
        more.push(json!({"item_name": "Tip", "quantity": 1, "unit_price": 1}));
        let d = sale_difference(&sent, &found(Value::Array(more), json!({}))).unwrap();
        assert!(d.contains("3 line(s) there, 2 here"), "{d}");
        let d = sale_difference(&sent, &found(json!([]), json!({}))).unwrap();
        assert!(d.contains("no lines"), "{d}");
    }

    #[test]
    fn unknown_status_is_kept() {
        let s = status_from_json(&json!({"status": "cancelled_by_webhook"})).unwrap();
        assert_eq!(s, InvoiceStatus::Other("cancelled_by_webhook".into()));
        assert_eq!(s.to_string(), "cancelled_by_webhook");
    }
}
