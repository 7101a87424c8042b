//! The company's entities: their kinds and the tables that hold them.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Customer,
    Vendor,
    Item,
    Invoice,
    Account,
    TaxCode,
    TaxRate,
}

pub(super) const ALL_KINDS: [Kind; 7] = [
    Kind::Customer,
    Kind::Vendor,
    Kind::Item,
    Kind::Invoice,
    Kind::Account,
    Kind::TaxCode,
    Kind::TaxRate,
];

/// Queryable fields shared by every entity.
pub(super) const COMMON_FIELDS: [&str; 4] = [
    "Id",
    "SyncToken",
    "MetaData.CreateTime",
    "MetaData.LastUpdatedTime",
];

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Customer => "Customer",
            Kind::Vendor => "Vendor",
            Kind::Item => "Item",
            Kind::Invoice => "Invoice",
            Kind::Account => "Account",
            Kind::TaxCode => "TaxCode",
            Kind::TaxRate => "TaxRate",
        }
    }

    /// Entity names are case-insensitive in queries, `cdc` and URL paths.
    pub(super) fn parse(s: &str) -> Option<Kind> {
        ALL_KINDS
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// Entities the API can create and update.
    pub(super) fn writable(self) -> bool {
        matches!(
            self,
            Kind::Customer | Kind::Vendor | Kind::Item | Kind::Invoice
        )
    }

    /// Name lists: a query without a condition on `Active` only returns
    /// the active ones, as QuickBooks does.
    pub(super) fn is_list(self) -> bool {
        !matches!(self, Kind::Invoice)
    }

    /// Queryable fields besides [`COMMON_FIELDS`].
    pub(super) fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Customer | Kind::Vendor => &[
                "DisplayName",
                "CompanyName",
                "GivenName",
                "FamilyName",
                "FullyQualifiedName",
                "PrintOnCheckName",
                "Active",
                "Balance",
                "PrimaryEmailAddr",
            ],
            Kind::Item => &[
                "Name",
                "Sku",
                "Type",
                "Active",
                "FullyQualifiedName",
                "UnitPrice",
                "Description",
                "Taxable",
            ],
            Kind::Invoice => &[
                "DocNumber",
                "TxnDate",
                "DueDate",
                "CustomerRef",
                "TotalAmt",
                "Balance",
                "PrivateNote",
            ],
            Kind::Account => &[
                "Name",
                "AccountType",
                "AccountSubType",
                "Classification",
                "Active",
                "FullyQualifiedName",
                "CurrentBalance",
            ],
            Kind::TaxCode => &["Name", "Active", "Taxable", "Description"],
            Kind::TaxRate => &["Name", "Active", "RateValue", "Description"],
        }
    }

    /// The canonical spelling of a queryable field (fields are
    /// case-insensitive), or `None` when it cannot be queried.
    pub(super) fn field(self, name: &str) -> Option<&'static str> {
        COMMON_FIELDS
            .iter()
            .chain(self.fields())
            .find(|f| f.eq_ignore_ascii_case(name))
            .copied()
    }
}

pub(super) type Row = Map<String, Value>;

pub(super) fn row_id(row: &Row) -> &str {
    row.get("Id").and_then(Value::as_str).unwrap_or("")
}

pub(super) fn is_active(row: &Row) -> bool {
    row.get("Active").and_then(Value::as_bool).unwrap_or(true)
}

/// The company's data: one list per entity, in creation (= Id) order.
pub(super) struct Tables {
    pub(super) rows: [Vec<Row>; 7],
    pub(super) next_id: [u64; 7],
    /// Deleted entities, as `cdc` reports them.
    pub(super) deleted: [Vec<Row>; 7],
}

impl Tables {
    pub(super) fn new(us_company: bool) -> Tables {
        let mut t = Tables {
            rows: Default::default(),
            next_id: [1; 7],
            deleted: Default::default(),
        };
        t.next_id[Kind::Invoice.index()] = FIRST_INVOICE_ID;
        let created = meta_now();
        let meta = json!({"CreateTime": created, "LastUpdatedTime": created});
        let account = |id: &str, name: &str, ty: &str, sub: &str, class: &str| {
            json!({"Name": name, "SubAccount": false, "FullyQualifiedName": name,
                   "Active": true, "Classification": class, "AccountType": ty,
                   "AccountSubType": sub, "CurrentBalance": 0.0,
                   "CurrentBalanceWithSubAccounts": 0.0, "domain": "QBO", "sparse": false,
                   "Id": id, "SyncToken": "0", "MetaData": meta})
        };
        for a in [
            account("1", "Services", "Income", "ServiceFeeIncome", "Revenue"),
            account(
                "79",
                "Sales of Product Income",
                "Income",
                "SalesOfProductIncome",
                "Revenue",
            ),
            account(
                "80",
                "Cost of Goods Sold",
                "Cost of Goods Sold",
                "SuppliesMaterialsCogs",
                "Expense",
            ),
            account(
                "81",
                "Inventory Asset",
                "Other Current Asset",
                "Inventory",
                "Asset",
            ),
        ] {
            t.push_seeded(Kind::Account, a);
        }
        t.next_id[Kind::Account.index()] = 82;
        let code = |id: &str, name: &str, taxable: bool, rate: Option<(&str, &str)>| {
            let mut v = json!({"Name": name, "Description": name, "Active": true,
                               "Taxable": taxable, "TaxGroup": false, "domain": "QBO",
                               "sparse": false, "Id": id, "SyncToken": "0", "MetaData": meta});
            if let Some((rate_id, rate_name)) = rate {
                v["SalesTaxRateList"] = json!({"TaxRateDetail": [{
                    "TaxRateRef": {"value": rate_id, "name": rate_name},
                    "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0}]});
            }
            v
        };
        if us_company {
            // Automated sales tax: the line codes are the pseudo-codes.
            t.push_seeded(Kind::TaxCode, code("TAX", "TAX", true, None));
            t.push_seeded(Kind::TaxCode, code("NON", "NON", false, None));
        } else {
            t.push_seeded(
                Kind::TaxCode,
                code(VAT_CODE, "VAT 16%", true, Some(("5", "VAT 16%"))),
            );
            t.push_seeded(
                Kind::TaxCode,
                code(ZERO_CODE, "Zero-rated", true, Some(("6", "Zero-rated"))),
            );
            for (id, name, rate) in [("5", "VAT 16%", VAT_PERCENT), ("6", "Zero-rated", 0)] {
                t.push_seeded(
                    Kind::TaxRate,
                    json!({"Name": name, "Description": name, "Active": true,
                           "RateValue": rate, "SpecialTaxType": "NONE", "DisplayType": "ReadOnly",
                           "domain": "QBO", "sparse": false, "Id": id, "SyncToken": "0",
                           "MetaData": meta}),
                );
            }
        }
        t
    }

    pub(super) fn push_seeded(&mut self, kind: Kind, v: Value) {
        if let Value::Object(m) = v {
            self.rows[kind.index()].push(m);
        }
    }

    pub(super) fn list(&self, kind: Kind) -> &[Row] {
        &self.rows[kind.index()]
    }

    pub(super) fn get(&self, kind: Kind, id: &str) -> Option<&Row> {
        self.list(kind).iter().find(|r| row_id(r) == id)
    }

    pub(super) fn next_id(&mut self, kind: Kind) -> String {
        let n = self.next_id[kind.index()];
        self.next_id[kind.index()] += 1;
        n.to_string()
    }

    /// Stores `row` (replacing the row with its Id, if any).
    pub(super) fn put(&mut self, kind: Kind, row: Row) {
        let list = &mut self.rows[kind.index()];
        match list.iter().position(|r| row_id(r) == row_id(&row)) {
            Some(i) => list[i] = row,
            None => list.push(row),
        }
    }

    /// Removes entity `id`; `cdc` reports it as deleted from now on.
    pub(super) fn delete(&mut self, kind: Kind, id: &str) -> bool {
        let list = &mut self.rows[kind.index()];
        let Some(i) = list.iter().position(|r| row_id(r) == id) else {
            return false;
        };
        list.remove(i);
        let mut tomb = Map::new();
        tomb.insert("domain".into(), json!("QBO"));
        tomb.insert("status".into(), json!("Deleted"));
        tomb.insert("Id".into(), json!(id));
        tomb.insert("MetaData".into(), json!({"LastUpdatedTime": meta_now()}));
        self.deleted[kind.index()].push(tomb);
        true
    }

    /// The customer or vendor already using `name` (case-insensitive),
    /// other than `except`.
    pub(super) fn party_named(
        &self,
        name: &str,
        except: Option<(Kind, &str)>,
    ) -> Option<(Kind, &Row)> {
        let wanted = name.trim().to_lowercase();
        [Kind::Customer, Kind::Vendor].into_iter().find_map(|k| {
            self.list(k)
                .iter()
                .find(|r| {
                    except != Some((k, row_id(r)))
                        && r.get("DisplayName")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.trim().to_lowercase() == wanted)
                })
                .map(|r| (k, r))
        })
    }

    pub(super) fn item_named(&self, name: &str, except: Option<&str>) -> Option<&Row> {
        let wanted = name.trim().to_lowercase();
        self.list(Kind::Item).iter().find(|r| {
            Some(row_id(r)) != except
                && r.get("Name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.trim().to_lowercase() == wanted)
        })
    }
}
