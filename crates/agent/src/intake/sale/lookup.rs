//! Reading a sale's fields from a source (a CSV row or a JSON object):
//! values and their problems, then a line's rules (derived numbers, the
//! fraction rule, what the backend can store).

use super::*;

// ---------------------------------------------------------------------------
// Field lookup, shared by CSV rows and JSON objects
// ---------------------------------------------------------------------------

/// Field-name normalization: case, `_`, `-` and whitespace ignored.
pub(super) fn norm_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-') && !c.is_whitespace())
        .flat_map(char::to_lowercase)
}

pub(super) fn norm(s: &str) -> String {
    norm_chars(s).collect()
}

pub(super) fn norm_eq(key: &str, normalized: &str) -> bool {
    norm_chars(key).eq(normalized.chars())
}

/// A raw value found for a field.
pub(super) enum Scalar {
    /// Text, or a JSON number's exact text.
    Text(String),
    /// A JSON value of the wrong kind ("an array", "true/false").
    Bad(&'static str),
}

/// What a source holds for one field, and where.
pub(super) struct Slot {
    /// Where the value is (or would be).
    pub(super) loc: String,
    /// None when absent or blank.
    pub(super) val: Option<Scalar>,
    /// How an absent value is described ("is missing", "is empty").
    pub(super) absent: &'static str,
    /// Set when `intake.mapping` chose the place.
    pub(super) mapped: bool,
}

/// A CSV row or a JSON object that fields are read from.
pub(super) trait Source {
    fn slot(&self, field: Field) -> Slot;
    /// The customer's name from separate first and last name fields
    /// (`first_name` + `last_name`, `customer.given_name` +
    /// `customer.family_name`...), when there is no whole-name field.
    fn name_parts(&self) -> Option<String> {
        None
    }
    /// Where the row or object is, for problems about it as a whole.
    fn here(&self) -> String;
}

pub(super) enum Got<T> {
    Absent,
    /// Present but wrong; the problem is already reported.
    Bad,
    Value(T),
}

impl<T> Got<T> {
    fn value(self) -> Option<T> {
        match self {
            Got::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Placeholder texts tills print for "nothing here".
pub(super) fn is_placeholder(t: &str) -> bool {
    ["-", "--", "n/a", "null", "none"]
        .iter()
        .any(|p| t.eq_ignore_ascii_case(p))
}

/// A value shortened for quoting in a message.
pub(super) fn shorten(t: &str) -> String {
    crate::laravel::error::first_chars(t, 40)
}

pub(super) fn absent_message(field: Field, slot: &Slot, what: &str) -> String {
    let via = if slot.mapped {
        " (as intake.mapping says)"
    } else {
        ""
    };
    format!("{} {}{via}: {what}", field.label(), slot.absent)
}

pub(super) fn text_of(p: &mut Problems, slot: &Slot) -> Got<String> {
    match &slot.val {
        None => Got::Absent,
        Some(Scalar::Bad(kind)) => {
            p.push(&slot.loc, format!("must be text, found {kind}"));
            Got::Bad
        }
        Some(Scalar::Text(t)) => {
            let t = t.trim();
            if t.is_empty() || is_placeholder(t) {
                return Got::Absent;
            }
            let chars = t.chars().count();
            if chars > MAX_TEXT_CHARS {
                p.push(
                    &slot.loc,
                    format!(
                        "is {chars} characters long, at most {MAX_TEXT_CHARS} are accepted: \
                         is this the right column, or is the file damaged?"
                    ),
                );
                return Got::Bad;
            }
            Got::Value(t.to_string())
        }
    }
}

pub(super) fn number_of(p: &mut Problems, slot: &Slot) -> Got<Decimal> {
    match &slot.val {
        None => Got::Absent,
        Some(Scalar::Bad(kind)) => {
            p.push(&slot.loc, format!("must be a number, found {kind}"));
            Got::Bad
        }
        Some(Scalar::Text(t)) => {
            let t = t.trim();
            if t.is_empty() {
                return Got::Absent;
            }
            match parse_amount(t) {
                Ok(d) => Got::Value(d),
                Err(NumError::Ambiguous) => {
                    p.push(
                        &slot.loc,
                        format!(
                            "\"{t}\" is ambiguous (a thousands separator or a decimal comma?): \
                             write it as {} or {}",
                            t.replace(',', ""),
                            t.replace(',', ".")
                        ),
                    );
                    Got::Bad
                }
                Err(NumError::TooLarge) => {
                    p.push(
                        &slot.loc,
                        format!("\"{}\" has too many digits for an amount", shorten(t)),
                    );
                    Got::Bad
                }
                Err(NumError::NotANumber) => {
                    p.push(
                        &slot.loc,
                        format!("\"{}\" is not a number: write it like 4.50", shorten(t)),
                    );
                    Got::Bad
                }
            }
        }
    }
}

/// Text for grouping rows by invoice number; problems are reported later.
pub(super) fn plain_text(slot: &Slot) -> Option<String> {
    match &slot.val {
        Some(Scalar::Text(t)) => {
            let t = t.trim();
            (!t.is_empty() && !is_placeholder(t)).then(|| t.to_string())
        }
        _ => None,
    }
}

/// The sale-level fields of a sale, checked.
pub(super) struct SaleFields {
    pub(super) here: String,
    pub(super) number_loc: String,
    pub(super) number: Option<String>,
    pub(super) customer_name: Option<String>,
    pub(super) customer_email: Option<String>,
    pub(super) customer_phone: Option<String>,
    pub(super) date: Option<String>,
    pub(super) currency: Option<String>,
    pub(super) notes: Option<String>,
}

pub(super) fn read_sale_fields<S: Source + ?Sized>(src: &S, p: &mut Problems) -> SaleFields {
    let number_slot = src.slot(Field::InvoiceNumber);
    let number = text_of(p, &number_slot).value();
    if let Some(problem) = number.as_deref().and_then(number_problem) {
        p.push(&number_slot.loc, problem);
    }
    let customer_name = text_of(p, &src.slot(Field::CustomerName))
        .value()
        .or_else(|| src.name_parts());
    let email_slot = src.slot(Field::CustomerEmail);
    let customer_email = text_of(p, &email_slot).value();
    if let Some(e) = &customer_email {
        if !looks_like_email(e) {
            p.push(
                &email_slot.loc,
                format!(
                    "\"{}\" is not an email address: correct it or leave it empty \
                     (the backend would refuse the whole invoice)",
                    shorten(e)
                ),
            );
        }
    }
    let customer_phone = text_of(p, &src.slot(Field::CustomerPhone)).value();
    let date = text_of(p, &src.slot(Field::Date))
        .value()
        .and_then(|d| parse_date(&d));
    let currency = text_of(p, &src.slot(Field::Currency)).value();
    let notes = text_of(p, &src.slot(Field::Notes)).value();
    SaleFields {
        here: src.here(),
        number_loc: number_slot.loc,
        number,
        customer_name,
        customer_email,
        customer_phone,
        date,
        currency,
        notes,
    }
}

/// Close to what the backend's `email` rule accepts: one `@`, a local part,
/// a domain of letters, digits, `-` and dots, no spaces.
pub(super) fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "()<>[]:;,\\\"@".contains(c))
        && !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// Why an invoice number cannot be sent, if it cannot: a control or
/// invisible format character (a line break, ESC, NUL, a bidi override)
/// would forge log lines, drive a terminal or show another number than the
/// one stored. The number is quoted escaped.
pub(super) fn number_problem(number: &str) -> Option<String> {
    let (at, c) = number
        .chars()
        .enumerate()
        .find(|&(_, c)| crate::logging::is_unsafe_char(c))?;
    let what = match c {
        '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => "a line break",
        '\t' => "a tab",
        '\u{0}' => "NUL",
        '\u{1b}' => "ESC, which starts terminal escape codes",
        '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            "a bidirectional control, which changes the order text is shown in"
        }
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' => "a zero-width character",
        c if c.is_control() => "a control character",
        _ => "an invisible format character",
    };
    Some(format!(
        "\"{}\" holds U+{:04X}, {what}, at character {}: an invoice number is printed on the \
         legal invoice and in logs and must be plain text; correct it in the till's export",
        crate::logging::untrusted(&shorten(number)),
        c as u32,
        at + 1
    ))
}

/// One line, checked and converted (the fraction rule) and within what the
/// backend can store, or None with the problems reported.
pub(super) fn read_line<S: Source + ?Sized>(src: &S, p: &mut Problems) -> Option<SaleLine> {
    let line = convert_line(src, p)?;
    storable_line(src, &line, p).then_some(line)
}

/// Whether the backend can store `line`: its unit price, and its total
/// with the 16% tax, within `decimal(15,2)`. One absurd sale must be
/// refused here: at the backend it fails with a 500 forever, which looks
/// like the backend being down.
pub(super) fn storable_line<S: Source + ?Sized>(
    src: &S,
    line: &SaleLine,
    p: &mut Problems,
) -> bool {
    let price_loc = || {
        let u = src.slot(Field::UnitPrice);
        if u.val.is_some() {
            u.loc
        } else {
            src.slot(Field::LineTotal).loc
        }
    };
    if crate::tax::round_money(line.unit_price) > MAX_AMOUNT {
        let how = match &line.converted_from {
            Some(o) if o.line_total.is_none() => {
                format!(
                    "{} x {} = {}",
                    o.quantity.normalize(),
                    o.unit_price,
                    line.unit_price
                )
            }
            _ => line.unit_price.to_string(),
        };
        p.push(
            price_loc(),
            format!(
                "{how} is too large: the backend stores amounts up to {MAX_AMOUNT}; \
                 is this the right column? Otherwise split the sale"
            ),
        );
        return false;
    }
    match line_total_with_tax(line) {
        Some(total) if total <= MAX_AMOUNT => true,
        total => {
            p.push(
                src.here(),
                format!(
                    "the line's total with the 16% sales tax would be {}, more than the backend \
                     can store ({MAX_AMOUNT}): split it into several lines or invoices",
                    shown_total(total)
                ),
            );
            false
        }
    }
}

/// `quantity x unit price` plus the 16% tax, as the backend stores it
/// (rounded to cents); `None` beyond what a decimal holds.
pub(super) fn line_total_with_tax(line: &SaleLine) -> Option<Decimal> {
    Decimal::from(line.quantity)
        .checked_mul(line.unit_price)?
        .checked_mul(Decimal::ONE + crate::tax::RATE)
        .map(crate::tax::round_money)
}

/// The invoice's total with tax as the backend computes it (the tax is
/// rounded once, on the sum).
pub(super) fn invoice_total_with_tax(lines: &[SaleLine]) -> Option<Decimal> {
    let mut net = Decimal::ZERO;
    for l in lines {
        net = net.checked_add(Decimal::from(l.quantity).checked_mul(l.unit_price)?)?;
    }
    net.checked_mul(Decimal::ONE + crate::tax::RATE)
        .map(crate::tax::round_money)
}

pub(super) fn shown_total(total: Option<Decimal>) -> String {
    match total {
        Some(t) => format!("{t:.2}"),
        None => "beyond any amount".into(),
    }
}

/// One line, checked and converted (the fraction rule), or None with the
/// problems reported.
pub(super) fn convert_line<S: Source + ?Sized>(src: &S, p: &mut Problems) -> Option<SaleLine> {
    let before = p.count();
    let d_slot = src.slot(Field::Description);
    let description = match text_of(p, &d_slot) {
        Got::Value(d) => Some(d),
        Got::Absent => {
            p.push(
                &d_slot.loc,
                absent_message(
                    Field::Description,
                    &d_slot,
                    "every line needs a description of the item sold",
                ),
            );
            None
        }
        Got::Bad => None,
    };
    let q_slot = src.slot(Field::Quantity);
    let u_slot = src.slot(Field::UnitPrice);
    let t_slot = src.slot(Field::LineTotal);
    let quantity = number_of(p, &q_slot);
    let unit = number_of(p, &u_slot);
    let total = number_of(p, &t_slot);
    let sku = text_of(p, &src.slot(Field::Sku)).value();

    if let Got::Value(q) = &quantity {
        if q.is_zero() {
            p.push(
                &q_slot.loc,
                "is 0: a line must sell at least some of the item; remove the line or correct the quantity",
            );
        } else if q.is_sign_negative() {
            p.push(
                &q_slot.loc,
                format!(
                    "is negative ({q}): returns and refunds are not supported here; \
                     issue a credit note at the backend, and remove this line"
                ),
            );
        }
    }
    for (amount, slot) in [(&unit, &u_slot), (&total, &t_slot)] {
        if let Got::Value(a) = amount {
            if a.is_sign_negative() && !a.is_zero() {
                p.push(
                    &slot.loc,
                    format!(
                        "is negative ({a}): discount and refund lines are not supported; \
                         put the discounted price on the item itself, and issue a credit note \
                         at the backend for refunds"
                    ),
                );
            }
        }
    }
    if matches!(unit, Got::Absent) && matches!(total, Got::Absent) {
        p.push(
            &u_slot.loc,
            absent_message(
                Field::UnitPrice,
                &u_slot,
                "give the unit price (tax excluded) or the line total",
            ),
        );
    }
    if p.count() > before {
        return None;
    }
    let description = description?;
    let quantity_given = matches!(quantity, Got::Value(_));
    let q = quantity.value().unwrap_or(Decimal::ONE);
    let (unit, total) = (unit.value(), total.value());
    if let (false, Some(u), Some(t)) = (quantity_given, unit, total) {
        // A quantity of 1 is our assumption: the total must agree with it
        // (with or without the 16% tax), or the quantity is somewhere we
        // did not look and the invoice would be wrong.
        let near = |a: Decimal| (a - t).abs() <= Decimal::new(1, 2);
        if !near(u) && !u.checked_mul(Decimal::new(116, 2)).is_some_and(near) {
            p.push(
                &t_slot.loc,
                format!(
                    "is {t}, but the line has no quantity and its unit price is {u}: name the quantity \
                     column or path in intake.mapping.quantity, or set intake.mapping.line_total to \
                     null if this is not the line's total"
                ),
            );
            return None;
        }
    }

    let unit = match (unit, total) {
        (Some(u), _) => u,
        (None, Some(t)) => match exact_unit(t, q) {
            Some(u) => u,
            None => {
                // No exact unit price: one unit at the line total, so the
                // amount is exactly what the till charged.
                let per_unit = t.checked_div(q).map(|u| u.round_dp(6).normalize());
                return Some(SaleLine {
                    description: format!("{description} ({} for {t})", q.normalize()),
                    quantity: 1,
                    unit_price: t,
                    sku,
                    converted_from: Some(OriginalQuantity {
                        quantity: q,
                        unit_price: per_unit.unwrap_or(t),
                        line_total: Some(t),
                    }),
                });
            }
        },
        (None, None) => return None, // reported above
    };

    if q.fract().is_zero() {
        let Some(whole) = q.to_u32().filter(|n| *n <= MAX_QUANTITY) else {
            p.push(
                &q_slot.loc,
                format!(
                    "is {q}: too large, the backend stores at most {MAX_QUANTITY} units per line"
                ),
            );
            return None;
        };
        return Some(SaleLine {
            description,
            quantity: whole,
            unit_price: unit,
            sku,
            converted_from: None,
        });
    }
    // The fraction rule (see the module documentation).
    let Some(amount) = q.checked_mul(unit) else {
        p.push(
            &q_slot.loc,
            format!("{q} x {unit} is too large for an amount"),
        );
        return None;
    };
    Some(SaleLine {
        description: format!("{description} ({} x {unit})", q.normalize()),
        quantity: 1,
        unit_price: amount.normalize(),
        sku,
        converted_from: Some(OriginalQuantity {
            quantity: q,
            unit_price: unit,
            line_total: None,
        }),
    })
}

/// total / quantity when that is exact to 3 decimals (fils).
pub(super) fn exact_unit(total: Decimal, q: Decimal) -> Option<Decimal> {
    let u = total.checked_div(q)?.round_dp(3);
    (u.checked_mul(q)? == total).then(|| u.normalize())
}
