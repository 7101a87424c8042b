//! The canonical fields, their synonyms and `intake.mapping`: which column
//! or JSON key holds which field, and the options intake reads with.

use super::*;

// ---------------------------------------------------------------------------
// Options and mapping
// ---------------------------------------------------------------------------

/// How intake reads its inputs.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct IntakeOptions {
    pub mapping: Mapping,
    /// The customer of sales that name none.
    pub default_customer: String,
    /// `intake.encoding`: how text without a byte order mark is read
    /// (UTF-8 unless the tills export in a legacy code page).
    pub encoding: &'static encoding_rs::Encoding,
}

impl Default for IntakeOptions {
    fn default() -> Self {
        IntakeOptions {
            mapping: Mapping::default(),
            default_customer: DEFAULT_CUSTOMER.to_string(),
            encoding: encoding_rs::UTF_8,
        }
    }
}

/// A canonical field of a sale or of one of its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Field {
    InvoiceNumber,
    CustomerName,
    CustomerEmail,
    CustomerPhone,
    Date,
    Currency,
    Notes,
    /// The JSON path of a sale's line array (not used for CSV).
    Items,
    Description,
    Quantity,
    UnitPrice,
    LineTotal,
    Sku,
}

impl Field {
    pub(crate) const ALL: [Field; 13] = [
        Field::InvoiceNumber,
        Field::CustomerName,
        Field::CustomerEmail,
        Field::CustomerPhone,
        Field::Date,
        Field::Currency,
        Field::Notes,
        Field::Items,
        Field::Description,
        Field::Quantity,
        Field::UnitPrice,
        Field::LineTotal,
        Field::Sku,
    ];

    /// The name used in `intake.mapping`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::InvoiceNumber => "invoice_number",
            Field::CustomerName => "customer_name",
            Field::CustomerEmail => "customer_email",
            Field::CustomerPhone => "customer_phone",
            Field::Date => "date",
            Field::Currency => "currency",
            Field::Notes => "notes",
            Field::Items => "items",
            Field::Description => "description",
            Field::Quantity => "quantity",
            Field::UnitPrice => "unit_price",
            Field::LineTotal => "line_total",
            Field::Sku => "sku",
        }
    }

    /// A mapping key, matched like any field name (case, `_`, `-`, spaces ignored).
    pub(crate) fn from_name(name: &str) -> Option<Field> {
        let n = norm(name);
        Field::ALL.into_iter().find(|f| norm(f.name()) == n)
    }

    /// Lines are read from line objects (JSON), sale fields from the sale.
    fn is_line_field(self) -> bool {
        matches!(
            self,
            Field::Description | Field::Quantity | Field::UnitPrice | Field::LineTotal | Field::Sku
        )
    }

    /// The field in words, for messages.
    pub(super) fn label(self) -> &'static str {
        match self {
            Field::InvoiceNumber => "invoice number",
            Field::CustomerName => "customer name",
            Field::CustomerEmail => "customer email",
            Field::CustomerPhone => "customer phone",
            Field::Date => "date",
            Field::Currency => "currency",
            Field::Notes => "notes",
            Field::Items => "item lines",
            Field::Description => "description",
            Field::Quantity => "quantity",
            Field::UnitPrice => "unit price",
            Field::LineTotal => "line total",
            Field::Sku => "SKU",
        }
    }

    /// Names this field goes by, already normalized (see [`norm`]), best
    /// first; dotted ones are JSON paths. Ambiguous names (`id`, `cost`)
    /// come last so a more specific column wins.
    #[rustfmt::skip]
    pub(super) fn synonyms(self) -> &'static [&'static str] {
        match self {
            Field::InvoiceNumber => &[
                "invoicenumber", "invoiceno", "invoicenum", "invoiceid", "invoice",
                "docnumber", "documentnumber", "documentno",
                "receiptnumber", "receiptno", "receiptid", "receipt",
                "transactionid", "transactionnumber", "transactionno", "txnid", "txnnumber", "txnno",
                "orderid", "ordernumber", "orderno", "order", "saleid", "salenumber", "saleno",
                "ticketid", "ticketnumber", "ticketno", "billnumber", "billno", "appointmentid",
                "txn", "transid", "transno", "checknumber", "checkno",
                "number", "id",
            ],
            Field::CustomerName => &[
                "customername", "customer.name", "customerref.name", "customer",
                "customerfullname", "customer.fullname", "customerdisplayname", "customer.displayname",
                "clientname", "client.name", "client", "buyername", "buyer.name", "buyer", "billto.name",
            ],
            Field::CustomerEmail => &[
                "customeremail", "customer.email", "customer.emailaddress", "email", "emailaddress",
                "clientemail", "client.email", "buyeremail", "buyer.email", "billemail.address", "billemail",
            ],
            Field::CustomerPhone => &[
                "customerphone", "customer.phone", "customer.mobile", "customer.telephone", "customermobile",
                "phone", "phonenumber", "mobile", "mobilenumber", "telephone", "tel",
                "clientphone", "client.phone", "buyerphone", "buyer.phone",
            ],
            Field::Date => &[
                "date", "invoicedate", "saledate", "salesdate", "transactiondate", "txndate", "orderdate",
                "receiptdate", "documentdate", "issuedate", "createdat", "created", "datetime", "timestamp",
            ],
            Field::Currency => &["currency", "currencycode", "currencyref.value", "currencyref"],
            Field::Notes => &[
                "notes", "note", "memo", "comment", "comments", "remarks",
                "customermemo.value", "customermemo", "privatenote",
            ],
            Field::Items => &[
                "items", "lines", "lineitems", "line", "products", "details", "entries",
                "orderitems", "saleitems", "salelines", "itemlines",
            ],
            Field::Description => &[
                "description", "itemdescription", "itemname", "productname", "servicename",
                "productdescription", "name", "item", "product", "service", "title",
                "itemref.name", "salesitemlinedetail.itemref.name",
                "product.name", "product.title", "item.name", "item.title", "article", "articlename",
            ],
            Field::Quantity => &[
                "quantity", "qty", "salesitemlinedetail.qty", "quantitysold", "qtysold", "unitssold",
                "count", "units", "hours", "hrs", "weight",
            ],
            Field::UnitPrice => &[
                "unitprice", "price", "priceeach", "itemprice", "sellingprice", "saleprice",
                "salesitemlinedetail.unitprice", "unitcost", "rate", "cost",
            ],
            Field::LineTotal => &[
                "linetotal", "total", "amount", "lineamount", "subtotal", "linesubtotal",
                "totalprice", "totalamount", "extendedprice",
            ],
            Field::Sku => &[
                "sku", "productsku", "itemsku", "code", "itemcode", "productcode", "barcode",
                "upc", "ean", "partnumber", "partno", "product.sku", "item.sku",
            ],
        }
    }

    fn names() -> String {
        Field::ALL.map(Field::name).join(", ")
    }
}

/// Where a customer's first and last names are found when no field holds
/// the whole name (normalized; dotted ones are JSON paths).
#[rustfmt::skip]
pub(super) const NAME_PARTS: &[(&str, &str)] = &[
    ("customer.firstname", "customer.lastname"),
    ("customer.givenname", "customer.familyname"),
    ("client.firstname", "client.lastname"),
    ("billingaddress.firstname", "billingaddress.lastname"),
    ("customerfirstname", "customerlastname"),
    ("clientfirstname", "clientlastname"),
    ("firstname", "lastname"),
    ("givenname", "familyname"),
    ("firstname", "surname"),
];

/// "First Last" from the parts present, if any.
pub(super) fn join_name(first: Option<String>, last: Option<String>) -> Option<String> {
    let parts: Vec<String> = [first, last].into_iter().flatten().collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Keys of wrapper objects holding a document's sales, normalized.
#[rustfmt::skip]
pub(super) const WRAPPERS: &[&str] = &[
    "invoices", "sales", "transactions", "orders", "receipts", "data",
    "invoice", "sale", "transaction", "order", "receipt", "queryresponse", "results", "records",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MapEntry {
    /// As configured: a CSV column name or a dotted JSON path; None when
    /// the field is to be ignored (configured as null).
    pub(super) path: Option<String>,
    /// Each segment normalized, to compare with synonyms.
    pub(super) norm: String,
}

/// Explicit field mapping from config.json `intake.mapping`: canonical field -> CSV column name or JSON path.
///
/// JSON paths are dotted (`CustomerRef.name`, `SalesItemLineDetail.Qty`);
/// sale fields are relative to the sale object, line fields to the line
/// object, `items` names the sale's line array. An entry overrides detection
/// for its field only, and the column or key it names is no longer taken by
/// detection for another field. `null` ignores a field the till exports
/// under a misleading name (e.g. a `total` column holding the order total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    entries: BTreeMap<Field, MapEntry>,
}

impl Mapping {
    /// Validates the config value (a JSON object of string -> string). Err names the bad key and lists the valid canonical fields.
    pub(crate) fn from_json(v: &Value) -> Result<Mapping, String> {
        let obj = match v {
            Value::Null => return Ok(Mapping::default()),
            Value::Object(obj) => obj,
            other => {
                return Err(format!(
                    "intake.mapping must be an object of canonical field -> CSV column name or JSON path \
                     (e.g. {{\"quantity\": \"Menge\"}}), found {}",
                    kind_of(other)
                ))
            }
        };
        let mut mapping = Mapping::default();
        let mut errors = Vec::new();
        for (key, value) in obj {
            let Some(field) = Field::from_name(key) else {
                errors.push(format!(
                    "intake.mapping: unknown field \"{key}\"; the valid fields are: {}",
                    Field::names()
                ));
                continue;
            };
            let path = match value {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim()),
                Value::Null if matches!(field, Field::Items | Field::Description) => {
                    errors.push(format!(
                        "intake.mapping.{key} cannot be null: every sale needs its {}",
                        field.label()
                    ));
                    continue;
                }
                Value::Null => None,
                Value::String(_) => {
                    errors.push(format!(
                        "intake.mapping.{key} is empty: give the CSV column name or JSON path, \
                         null to ignore the field, or remove the entry"
                    ));
                    continue;
                }
                other => {
                    errors.push(format!(
                        "intake.mapping.{key} must be a CSV column name or JSON path (text), \
                         or null to ignore the field; found {}",
                        kind_of(other)
                    ));
                    continue;
                }
            };
            if mapping.entries.contains_key(&field) {
                errors.push(format!(
                    "intake.mapping names the field {} twice (again as \"{key}\"): keep one",
                    field.name()
                ));
                continue;
            }
            match path {
                Some(path) => mapping.set(field, path),
                None => mapping.ignore(field),
            }
        }
        if errors.is_empty() {
            Ok(mapping)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Maps `field` to a CSV column name or dotted JSON path.
    pub(crate) fn set(&mut self, field: Field, path: &str) {
        let path = path.trim().to_string();
        let norm = path.split('.').map(norm).collect::<Vec<_>>().join(".");
        let path = Some(path);
        self.entries.insert(field, MapEntry { path, norm });
    }

    /// Ignores `field`: it is never read, whatever the input calls it.
    pub(crate) fn ignore(&mut self, field: Field) {
        let entry = MapEntry {
            path: None,
            norm: String::new(),
        };
        self.entries.insert(field, entry);
    }

    /// The configured column or path of `field`.
    pub(crate) fn get(&self, field: Field) -> Option<&str> {
        self.entries.get(&field).and_then(|e| e.path.as_deref())
    }

    /// The mapping as config.json holds it (the inverse of [`Mapping::from_json`]).
    #[cfg(test)]
    pub(crate) fn to_json(&self) -> Value {
        let map: Map<String, Value> = self
            .entries
            .iter()
            .map(|(f, e)| {
                let path = e.path.clone().map_or(Value::Null, Value::String);
                (f.name().to_string(), path)
            })
            .collect();
        Value::Object(map)
    }

    /// Whether `field` is configured as null (ignored).
    pub(crate) fn ignores(&self, field: Field) -> bool {
        self.entries.get(&field).is_some_and(|e| e.path.is_none())
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another field's entry names `synonym` (normalized), which
    /// detection for `field` must then leave alone. In JSON only entries of
    /// the same level (sale or line) count.
    pub(super) fn claims(&self, synonym: &str, field: Field, same_level: bool) -> bool {
        self.entries.iter().any(|(f, e)| {
            *f != field
                && (!same_level || f.is_line_field() == field.is_line_field())
                && e.norm == synonym
        })
    }
}
