//! The backend's sales-tax arithmetic, the simulator's own code (it must
//! never borrow the agent's: a rule wrong in both would pass every test).
//!
//! The real backend computes in PHP floats and rounds only when a
//! `decimal(…,2)` column stores a value (contracts/laravel-api.md): per
//! line `line = quantity * price` and `line_tax = line * 0.16`, unrounded;
//! `tax_amount = round2(Σ line_tax)` and `total_amount = round2(Σ line +
//! Σ line_tax)`. Three lines of 1.03 give 0.49 / 3.58, where rounding each
//! line's tax first would give 0.48 / 3.57.
//!
//! PHP turns a float into a string with 14 significant digits (its
//! `precision` setting) before anything decimal happens to it (Laravel's
//! decimal cast, the database driver), and that string is then rounded half
//! up. [`php_decimal`] is that conversion; [`round2`] the stored amount;
//! [`stored_float`] what a database that keeps the value as given (SQLite)
//! hands back.

use rust_decimal::{Decimal, RoundingStrategy};

/// 16% general sales tax, as the backend's float.
pub const RATE: f64 = 0.16;

/// The largest magnitude a `decimal(15,2)` column stores (exclusive): a
/// larger amount makes the database refuse the row (the backend's 500).
pub const DECIMAL_15_2_LIMIT: f64 = 1e13;

/// The float as PHP writes it (`(string)$x` at `precision` 14), as an exact
/// decimal; `None` for infinities, NaN and magnitudes no decimal holds.
pub fn php_decimal(x: f64) -> Option<Decimal> {
    if !x.is_finite() {
        return None;
    }
    if x.abs() < 1e-20 {
        return Some(Decimal::ZERO);
    }
    let s = format!("{x:.13e}");
    Decimal::from_scientific(&s).ok().map(|d| d.normalize())
}

/// Rounds half away from zero ("half up" in PHP's and Brick's words) to
/// `dp` decimals.
pub fn round_half_up(d: Decimal, dp: u32) -> Decimal {
    d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
}

/// The amount a `decimal(…,2)` column keeps of a float.
pub fn round2(x: f64) -> Option<Decimal> {
    php_decimal(x).map(|d| round_half_up(d, 2))
}

/// What a database that keeps the value PHP sent (SQLite, numeric
/// affinity) gives back: the float of its 14-digit string.
pub fn stored_float(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.13e}").parse().unwrap_or(x)
}

/// One invoice line, unrounded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Line {
    /// `quantity * price` (tax excluded).
    pub net: f64,
    /// `net * 0.16`.
    pub tax: f64,
    /// `net + tax`.
    pub total: f64,
}

/// The line of `quantity` at unit `price`.
pub fn line(quantity: f64, price: f64) -> Line {
    let net = quantity * price;
    let tax = net * RATE;
    Line {
        net,
        tax,
        total: net + tax,
    }
}

/// An invoice's amounts as the backend computes and stores them.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    pub lines: Vec<Line>,
    /// Σ line (unrounded).
    pub net: f64,
    /// Σ line tax (unrounded).
    pub tax: f64,
    /// `round2(net)`.
    pub subtotal: Decimal,
    /// `round2(Σ line tax)`.
    pub tax_amount: Decimal,
    /// `round2(Σ line + Σ line tax)`.
    pub total_amount: Decimal,
}

/// The totals of `(quantity, price)` lines; `None` when an amount does not
/// fit the backend's `decimal(15,2)` columns (the database refuses it).
pub fn totals<I: IntoIterator<Item = (f64, f64)>>(lines: I) -> Option<Totals> {
    let lines: Vec<Line> = lines.into_iter().map(|(q, p)| line(q, p)).collect();
    let mut net = 0.0;
    let mut tax = 0.0;
    for l in &lines {
        net += l.net;
        tax += l.tax;
    }
    let fits = |x: f64| x.is_finite() && x.abs() < DECIMAL_15_2_LIMIT;
    let all_fit = [net, tax, net + tax].into_iter().all(fits)
        && lines
            .iter()
            .all(|l| fits(l.net) && fits(l.tax) && fits(l.total));
    if !all_fit {
        return None;
    }
    Some(Totals {
        subtotal: round2(net)?,
        tax_amount: round2(tax)?,
        total_amount: round2(net + tax)?,
        lines,
        net,
        tax,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn the_contracts_examples() {
        // Three lines of 1.03: the tax rounded once, on the sum.
        let t = totals([(1.0, 1.03); 3]).unwrap();
        assert_eq!(t.tax_amount, d("0.49"));
        assert_eq!(t.total_amount, d("3.58"));
        assert_eq!(stored_float(t.lines[0].tax), 0.1648);
        // 8.45 net: 1.35 / 9.80 (rounding per line would say 1.36 / 9.81).
        let t = totals([(1.0, 8.45)]).unwrap();
        assert_eq!((t.tax_amount, t.total_amount), (d("1.35"), d("9.80")));
        // 116.00 / 16.00 for 2 x 50.
        let t = totals([(2.0, 50.0)]).unwrap();
        assert_eq!((t.tax_amount, t.total_amount), (d("16"), d("116")));
    }

    #[test]
    fn php_writes_14_significant_digits_then_rounds_half_up() {
        // 0.285 is 0.28499999999999998... as a float: PHP's string is
        // "0.285", which rounds half up to 0.29 (not 0.28).
        assert_eq!(php_decimal(0.285), Some(d("0.285")));
        assert_eq!(round2(0.285), Some(d("0.29")));
        assert_eq!(round2(1.005), Some(d("1.01")));
        assert_eq!(round2(-1.005), Some(d("-1.01")));
        // 0.1 + 0.2 = 0.30000000000000004: "0.3".
        assert_eq!(php_decimal(0.1 + 0.2), Some(d("0.3")));
        assert_eq!(stored_float(0.1 + 0.2), 0.3);
        assert_eq!(php_decimal(f64::NAN), None);
        assert_eq!(php_decimal(1e-300), Some(Decimal::ZERO));
    }

    #[test]
    fn amounts_beyond_decimal_15_2_are_refused() {
        assert!(totals([(1.0, 9_000_000_000_000.0)]).is_none());
        assert!(totals([(1_000_000.0, 1e300)]).is_none());
        assert!(totals([(1.0, 1_000_000_000.0)]).is_some());
    }
}
