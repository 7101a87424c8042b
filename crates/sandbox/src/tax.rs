//! The backend's sales-tax arithmetic, the simulator's own copy (it must
//! never borrow the agent's: a rule wrong in both would pass every test).
//! Placeholder during the workspace split: per-line rounding, to be
//! replaced by the backend's float arithmetic (contracts/laravel-api.md).

use rust_decimal::{Decimal, RoundingStrategy};

/// 16%.
pub const RATE: Decimal = Decimal::from_parts(16, 0, 0, false, 2);

pub fn round_money(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

pub fn line_tax(line_subtotal: Decimal) -> Option<Decimal> {
    line_subtotal.checked_mul(RATE).map(round_money)
}

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
