//! Jordan's general sales tax as the invoicing backend computes it: a flat
//! 16% on each line's `quantity * unit price`, rounded to two decimals half
//! away from zero; the invoice's tax is the sum of the line taxes. The
//! sandbox and the provisional receipts both use this, so a receipt printed
//! offline shows the same totals the backend will register.

use rust_decimal::{Decimal, RoundingStrategy};

/// 16%.
pub const RATE: Decimal = Decimal::from_parts(16, 0, 0, false, 2);

/// Rounds an amount the way the backend stores money (two decimals).
pub fn round_money(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// The tax of one line whose tax-exclusive amount is `line_subtotal`.
/// `None` only on arithmetic overflow (absurd amounts).
pub fn line_tax(line_subtotal: Decimal) -> Option<Decimal> {
    line_subtotal.checked_mul(RATE).map(round_money)
}

/// Totals of an invoice from its lines' `(quantity, unit_price)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
}

pub fn totals<I: IntoIterator<Item = (Decimal, Decimal)>>(lines: I) -> Option<Totals> {
    let mut subtotal = Decimal::ZERO;
    let mut tax = Decimal::ZERO;
    for (qty, price) in lines {
        let line = qty.checked_mul(price)?;
        subtotal = subtotal.checked_add(line)?;
        tax = tax.checked_add(line_tax(line)?)?;
    }
    Some(Totals {
        subtotal: round_money(subtotal),
        tax,
        total: round_money(subtotal.checked_add(tax)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn per_line_rounding_matches_the_backend() {
        // 2 x 15.50 = 31.00 -> 4.96; 1 x 30.00 -> 4.80
        let t = totals([(d("2"), d("15.5")), (d("1"), d("30"))]).unwrap();
        assert_eq!(t.subtotal, d("61.00"));
        assert_eq!(t.tax, d("9.76"));
        assert_eq!(t.total, d("70.76"));
        // 0.03125 * 0.16 = 0.005 -> rounds away from zero to 0.01
        assert_eq!(line_tax(d("0.03125")), Some(d("0.01")));
    }
}
