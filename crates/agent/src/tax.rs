//! Jordan's general sales tax as the invoicing backend computes it
//! (contracts/laravel-api.md): a flat 16% of each line's `quantity * unit
//! price`, **not rounded per line**; the invoice's tax is the sum of the
//! unrounded line taxes rounded once, and its total is the lines plus those
//! unrounded taxes, rounded once. Rounding is to two decimals, half away
//! from zero (what the backend's decimal(…,2) columns do).
//!
//! The backend does this in binary floating point; the agent does it in
//! exact decimals, which is the rule the backend's arithmetic approximates
//! (the two can only disagree on a sum that lands within a float's error of
//! a half cent). The provisional receipts print these totals, so a receipt
//! printed offline shows what the official invoice will say. The sandbox has
//! its own implementation (it must never borrow this one).

use rust_decimal::{Decimal, RoundingStrategy};

/// 16%.
pub(crate) const RATE: Decimal = Decimal::from_parts(16, 0, 0, false, 2);

/// Rounds an amount the way the backend stores money (two decimals, half
/// away from zero).
pub(crate) fn round_money(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// The unrounded tax of one line whose tax-exclusive amount is
/// `line_subtotal`. `None` only on arithmetic overflow (absurd amounts).
pub(crate) fn line_tax(line_subtotal: Decimal) -> Option<Decimal> {
    line_subtotal.checked_mul(RATE)
}

/// Totals of an invoice, each rounded once to two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    /// The lines without tax (the backend stores no such field; receipts
    /// print it).
    pub(crate) subtotal: Decimal,
    /// The backend's `tax_amount`.
    pub(crate) tax: Decimal,
    /// The backend's `total_amount`.
    pub(crate) total: Decimal,
}

/// Totals from the lines' `(quantity, unit_price)`; `None` on overflow.
pub(crate) fn totals<I: IntoIterator<Item = (Decimal, Decimal)>>(lines: I) -> Option<Totals> {
    let mut subtotal = Decimal::ZERO;
    let mut tax = Decimal::ZERO;
    for (qty, price) in lines {
        let line = qty.checked_mul(price)?;
        subtotal = subtotal.checked_add(line)?;
        tax = tax.checked_add(line_tax(line)?)?;
    }
    Some(Totals {
        subtotal: round_money(subtotal),
        tax: round_money(tax),
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
    fn whole_cent_lines() {
        // 2 x 15.50 = 31.00 -> 4.96; 1 x 30.00 -> 4.80
        let t = totals([(d("2"), d("15.5")), (d("1"), d("30"))]).unwrap();
        assert_eq!(t.subtotal, d("61.00"));
        assert_eq!(t.tax, d("9.76"));
        assert_eq!(t.total, d("70.76"));
        assert_eq!(line_tax(d("0.03125")), Some(d("0.005")));
    }

    #[test]
    fn tax_is_rounded_once_on_the_sum_of_unrounded_line_taxes() {
        // The contract's example: three lines of 1.03 (0.1648 tax each).
        let t = totals([(d("1"), d("1.03")); 3]).unwrap();
        assert_eq!(
            (t.subtotal, t.tax, t.total),
            (d("3.09"), d("0.49"), d("3.58"))
        );
        // The receipt: 8.45 net over two lines, 0.676 tax each.
        let t = totals([(d("1"), d("4.225")), (d("1"), d("4.225"))]).unwrap();
        assert_eq!((t.tax, t.total), (d("1.35"), d("9.80")));
        // Half a cent rounds away from zero, once, at the end.
        let t = totals([(d("1"), d("0.03125"))]).unwrap();
        assert_eq!((t.tax, t.total), (d("0.01"), d("0.04")));
    }
}
