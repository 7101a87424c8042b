//! Drafts: sales before defaults and derived invoice numbers; rows grouped
//! into sales.

use super::*;

// ---------------------------------------------------------------------------
// Drafts: sales before defaults and derived numbers
// ---------------------------------------------------------------------------

pub(super) struct Draft {
    pub(super) fields: SaleFields,
    pub(super) lines: Vec<SaleLine>,
}

/// Applies defaults and derived numbers, checks numbers across the
/// document, and decides all-or-nothing.
pub(super) fn finish(
    drafts: Vec<Draft>,
    opts: &IntakeOptions,
    mut p: Problems,
    here: &str,
) -> Result<Vec<Sale>, IntakeError> {
    if drafts.is_empty() && p.is_empty() {
        p.push(here, "holds no sales: export at least one sale");
    }
    for d in &drafts {
        let total = invoice_total_with_tax(&d.lines);
        if total.is_none_or(|t| t > MAX_AMOUNT) {
            p.push(
                &d.fields.here,
                format!(
                    "the invoice total with the 16% sales tax would be {}, more than the backend \
                     can store ({MAX_AMOUNT}): split the sale into several invoices",
                    shown_total(total)
                ),
            );
        }
    }
    if !p.is_empty() {
        return Err(p.into_error());
    }
    let default_customer = match opts.default_customer.trim() {
        "" => DEFAULT_CUSTOMER,
        name => name,
    };
    let mut derived: HashMap<String, u32> = HashMap::new();
    let mut explicit: HashMap<String, (String, String)> = HashMap::new();
    let mut sales = Vec::with_capacity(drafts.len());
    for Draft { fields: f, lines } in drafts {
        let mut sale = Sale {
            invoice_number: f.number.clone().unwrap_or_default(),
            number_derived: f.number.is_none(),
            customer_name: f.customer_name.clone().unwrap_or_default(),
            customer_email: f.customer_email,
            customer_phone: f.customer_phone,
            date: f.date,
            currency: f.currency,
            notes: f.notes,
            lines,
        };
        if sale.number_derived {
            let base = format!("POS-{}", &sale.derivation_hash()[..16]);
            let seen = derived.entry(base.clone()).or_insert(0);
            *seen += 1;
            sale.invoice_number = if *seen == 1 {
                base
            } else {
                format!("{base}-{seen}")
            };
        }
        // Filled in after deriving the number, so changing the configured
        // default customer does not renumber a file dropped again.
        if f.customer_name.is_none() {
            sale.customer_name = default_customer.to_string();
        }
        if !sale.number_derived {
            let hash = sale.content_hash();
            match explicit.get(&sale.invoice_number) {
                Some((first, h)) if *h != hash => p.push(
                    &f.number_loc,
                    format!(
                        "invoice number \"{}\" is also used by the sale at {first} with different content: \
                         each sale needs its own number",
                        sale.invoice_number
                    ),
                ),
                Some(_) => {}
                None => {
                    explicit.insert(sale.invoice_number.clone(), (f.here.clone(), hash));
                }
            }
        }
        sales.push(sale);
    }
    if p.is_empty() {
        Ok(sales)
    } else {
        Err(p.into_error())
    }
}

/// Rows (CSV rows, flat JSON objects), one line each, grouped into sales by
/// invoice number in order of first appearance.
pub(super) fn drafts_from_rows<S: Source>(rows: &[S], p: &mut Problems) -> Vec<Draft> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_number: HashMap<String, usize> = HashMap::new();
    // The numbered sale the previous row belongs to: a row with no number
    // continues it unless it names another customer or date.
    let mut open: Option<usize> = None;
    for (i, row) in rows.iter().enumerate() {
        match plain_text(&row.slot(Field::InvoiceNumber)) {
            Some(number) => {
                let g = *by_number.entry(number).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(i);
                open = Some(g);
            }
            None => match open {
                Some(g) if continues(row, &rows[groups[g][0]]) => groups[g].push(i),
                _ => {
                    groups.push(vec![i]);
                    open = None;
                }
            },
        }
        if groups.len() > MAX_SALES {
            p.push(
                row.here(),
                format!(
                    "starts sale number {}: at most {MAX_SALES} sales are accepted in one file; split the export",
                    MAX_SALES + 1
                ),
            );
            return Vec::new();
        }
    }
    let mut drafts = Vec::with_capacity(groups.len());
    for group in groups {
        let first = &rows[group[0]];
        let fields = read_sale_fields(first, p);
        if let (Some(name), Some(number)) = (&fields.customer_name, &fields.number) {
            for &i in &group[1..] {
                let slot = rows[i].slot(Field::CustomerName);
                if let Some(other) = plain_text(&slot) {
                    if other != *name {
                        p.push(
                            &slot.loc,
                            format!(
                                "is \"{}\" but invoice {number} (from {}) is for \"{}\": \
                                 one invoice number must be one sale; give each sale its own number",
                                shorten(&other),
                                fields.here,
                                shorten(name)
                            ),
                        );
                    }
                }
            }
        }
        if group.len() > MAX_LINES_PER_SALE {
            p.push(
                &fields.here,
                format!(
                    "starts a sale of {} lines: at most {MAX_LINES_PER_SALE} lines are accepted in one sale",
                    group.len()
                ),
            );
            continue;
        }
        let lines = group
            .iter()
            .filter_map(|&i| read_line(&rows[i], p))
            .collect();
        drafts.push(Draft { fields, lines });
    }
    drafts
}

/// Whether an unnumbered row belongs to the sale started by `first`: its
/// customer and date are blank or repeat the sale's.
pub(super) fn continues<S: Source>(row: &S, first: &S) -> bool {
    [
        Field::CustomerName,
        Field::CustomerEmail,
        Field::CustomerPhone,
        Field::Date,
    ]
    .into_iter()
    .all(|f| match plain_text(&row.slot(f)) {
        None => true,
        Some(v) => plain_text(&first.slot(f)).as_deref() == Some(v.as_str()),
    })
}
