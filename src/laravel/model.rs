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
pub struct NewInvoice {
    pub invoice_number: String,
    pub customer_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_phone: Option<String>,
    pub items: Vec<NewItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NewItem {
    pub description: String,
    /// The backend takes whole quantities only (integer, min 1).
    pub quantity: u32,
    /// Unit price, tax excluded.
    #[serde(with = "rust_decimal::serde::float")]
    pub price: Decimal,
}

/// One thing wrong with an input field, named by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

fn first_present<'a>(obj: &'a Value, names: &[&str]) -> Option<(&'a str, &'a Value)> {
    let map = obj.as_object()?;
    for name in names {
        for (k, v) in map {
            if k.eq_ignore_ascii_case(name) && !v.is_null() {
                return Some((k.as_str(), v));
            }
        }
    }
    None
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
pub fn decimal_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse::<Decimal>().ok().or_else(|| {
            n.as_f64()
                .and_then(|f| Decimal::from_scientific(&format!("{f:e}")).ok())
        }),
        Value::String(s) => s.trim().parse::<Decimal>().ok(),
        _ => None,
    }
}

impl NewInvoice {
    /// Reads a sale in the backend's shape (`invoice_number`,
    /// `customer_name`, `items[{description, quantity, price}]`), accepting
    /// `customer: {name, email, phone}`, `unit_price`, `name`/`item_name`,
    /// numbers as strings. Every problem is reported, by field path.
    pub fn from_json(v: &Value) -> Result<NewInvoice, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, text: &str| {
            problems.push(FieldProblem {
                field: field.to_string(),
                problem: text.to_string(),
            })
        };
        if !v.is_object() {
            problem("(document)", "must be a JSON object describing one sale");
            return Err(problems);
        }
        let invoice_number = first_present(v, &["invoice_number", "invoice_no", "number"])
            .and_then(|(_, v)| text_of(v));
        if invoice_number.is_none() {
            problem("invoice_number", "is required (a text unique to this sale)");
        }
        let customer = first_present(v, &["customer"]).map(|(_, c)| c);
        let from_customer = |keys: &[&str]| {
            customer
                .filter(|c| c.is_object())
                .and_then(|c| first_present(c, keys))
                .and_then(|(_, v)| text_of(v))
        };
        let customer_name = first_present(v, &["customer_name"])
            .and_then(|(_, v)| text_of(v))
            .or_else(|| customer.and_then(text_of))
            .or_else(|| from_customer(&["name"]));
        if customer_name.is_none() {
            problem("customer_name", "is required");
        }
        let customer_email = first_present(v, &["customer_email"])
            .and_then(|(_, v)| text_of(v))
            .or_else(|| from_customer(&["email"]));
        if let Some(e) = &customer_email {
            if !e.contains('@') || e.contains(char::is_whitespace) {
                problem("customer_email", "must be an email address (or left out)");
            }
        }
        let customer_phone = first_present(v, &["customer_phone"])
            .and_then(|(_, v)| text_of(v))
            .or_else(|| from_customer(&["phone"]));

        let mut items = Vec::new();
        match first_present(v, &["items", "lines"]).map(|(_, v)| v) {
            Some(Value::Array(list)) if !list.is_empty() => {
                for (i, item) in list.iter().enumerate() {
                    let at = |f: &str| format!("items[{i}].{f}");
                    let description = first_present(item, &["description", "name", "item_name"])
                        .and_then(|(_, v)| text_of(v));
                    if description.is_none() {
                        problem(&at("description"), "is required");
                    }
                    let quantity = match first_present(item, &["quantity", "qty"]) {
                        None => {
                            problem(&at("quantity"), "is required");
                            None
                        }
                        Some((_, q)) => match decimal_of(q) {
                            Some(d) if d.fract().is_zero() && d >= Decimal::ONE => {
                                u32::try_from(d.trunc().mantissa()).ok().or_else(|| {
                                    problem(&at("quantity"), "is too large");
                                    None
                                })
                            }
                            Some(d) if d.fract().is_zero() => {
                                problem(&at("quantity"), "must be at least 1");
                                None
                            }
                            Some(_) => {
                                problem(
                                    &at("quantity"),
                                    "must be a whole number: the backend takes integer quantities only",
                                );
                                None
                            }
                            None => {
                                problem(&at("quantity"), "must be a number");
                                None
                            }
                        },
                    };
                    let price = match first_present(item, &["price", "unit_price"]) {
                        None => {
                            problem(&at("price"), "is required (unit price, tax excluded)");
                            None
                        }
                        Some((_, p)) => match decimal_of(p) {
                            Some(d) if d >= Decimal::ZERO => Some(d),
                            Some(_) => {
                                problem(&at("price"), "must be at least 0");
                                None
                            }
                            None => {
                                problem(&at("price"), "must be a number");
                                None
                            }
                        },
                    };
                    if let (Some(description), Some(quantity), Some(price)) =
                        (description, quantity, price)
                    {
                        items.push(NewItem {
                            description,
                            quantity,
                            price,
                        });
                    }
                }
            }
            Some(Value::Array(_)) => problem("items", "must list at least one item"),
            Some(_) => problem("items", "must be an array of items"),
            None => problem("items", "is required"),
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(NewInvoice {
            invoice_number: invoice_number.expect("checked"),
            customer_name: customer_name.expect("checked"),
            customer_email,
            customer_phone,
            items,
        })
    }
}

/// Statuses the backend reports. Unknown ones (a webhook may set others)
/// are kept as they are, never rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceStatus {
    Draft,
    Submitted,
    Rejected,
    Error,
    Other(String),
}

impl InvoiceStatus {
    pub fn parse(s: &str) -> InvoiceStatus {
        match s.trim().to_ascii_lowercase().as_str() {
            "draft" => InvoiceStatus::Draft,
            "submitted" => InvoiceStatus::Submitted,
            "rejected" => InvoiceStatus::Rejected,
            "error" => InvoiceStatus::Error,
            _ => InvoiceStatus::Other(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
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
    pub invoice_number: String,
    pub uuid: Option<String>,
    pub total_amount: Option<Decimal>,
    pub tax_amount: Option<Decimal>,
    pub raw: Value,
}

impl CreatedInvoice {
    pub fn from_json(raw: Value) -> Result<CreatedInvoice, String> {
        let id = raw
            .get("id")
            .and_then(id_of)
            .ok_or("the answer has no numeric \"id\"")?;
        Ok(CreatedInvoice {
            id,
            invoice_number: raw
                .get("invoice_number")
                .and_then(text_of)
                .unwrap_or_default(),
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
    pub invoice_number: String,
    pub customer_name: Option<String>,
    pub status: Option<InvoiceStatus>,
    pub uuid: Option<String>,
    pub total_amount: Option<Decimal>,
    pub tax_amount: Option<Decimal>,
    pub items: Vec<InvoiceLine>,
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct InvoiceLine {
    pub item_name: String,
    pub quantity: Option<Decimal>,
    pub unit_price: Option<Decimal>,
    pub tax: Option<Decimal>,
    pub total: Option<Decimal>,
}

impl Invoice {
    pub fn from_json(raw: Value) -> Result<Invoice, String> {
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

/// The signed-in vendor (`user` of the login answer, or the profile).
#[derive(Debug, Clone)]
pub struct Vendor {
    pub id: Option<u64>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub raw: Value,
}

impl Vendor {
    pub fn from_json(raw: Value) -> Vendor {
        Vendor {
            id: raw.get("id").and_then(id_of),
            name: raw.get("name").and_then(text_of),
            email: raw.get("email").and_then(text_of),
            raw,
        }
    }
}

/// Reads `{"status": "..."}`.
pub fn status_from_json(v: &Value) -> Result<InvoiceStatus, String> {
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
    fn backend_shape_and_synonyms() {
        let v = json!({
            "invoice_number": 1001,
            "customer": {"name": "Generic Customer", "email": "g@example.com"},
            "items": [
                {"description": "A", "quantity": "2", "unit_price": 15.5},
                {"name": "B", "qty": 1.0, "price": "30.00"}
            ]
        });
        let inv = NewInvoice::from_json(&v).unwrap();
        assert_eq!(inv.invoice_number, "1001");
        assert_eq!(inv.customer_name, "Generic Customer");
        assert_eq!(inv.customer_email.as_deref(), Some("g@example.com"));
        assert_eq!(inv.items[0].quantity, 2);
        assert_eq!(inv.items[0].price.to_string(), "15.5");
        assert_eq!(inv.items[1].price.to_string(), "30.00");
        let body = serde_json::to_value(&inv).unwrap();
        assert_eq!(body["items"][0]["price"], json!(15.5));
        assert!(body.get("customer_phone").is_none());
    }

    #[test]
    fn every_problem_is_named() {
        let v = json!({"items": [{"description": "A", "quantity": 1.5, "price": -1}]});
        let problems = NewInvoice::from_json(&v).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "invoice_number",
                "customer_name",
                "items[0].quantity",
                "items[0].price"
            ]
        );
    }

    #[test]
    fn decimals_do_not_go_through_floats() {
        assert_eq!(decimal_of(&json!(0.1)).unwrap().to_string(), "0.1");
        assert_eq!(decimal_of(&json!("116.00")).unwrap().to_string(), "116.00");
        assert_eq!(decimal_of(&json!(8.99)).unwrap().to_string(), "8.99");
    }

    #[test]
    fn unknown_status_is_kept() {
        let s = status_from_json(&json!({"status": "cancelled_by_webhook"})).unwrap();
        assert_eq!(s, InvoiceStatus::Other("cancelled_by_webhook".into()));
        assert_eq!(s.to_string(), "cancelled_by_webhook");
    }
}
