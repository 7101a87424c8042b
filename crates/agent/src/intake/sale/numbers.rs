//! Amounts as exact decimals from what tills print (currency marks,
//! grouping, decimal commas, Arabic-Indic digits), and dates.

use super::*;

// ---------------------------------------------------------------------------
// Numbers and dates
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
pub(super) enum NumError {
    NotANumber,
    Ambiguous,
    TooLarge,
}

pub(super) const CURRENCY_MARKS: &[&str] = &[
    "JOD", "JD", "USD", "EUR", "GBP", "SAR", "AED", "$", "€", "£", "د.ا",
];

/// Drops a currency mark before or after an amount (`JOD 4.500`, `4.50$`).
pub(super) fn strip_currency(s: &str) -> &str {
    let mut s = s.trim();
    for mark in CURRENCY_MARKS {
        let n = mark.len();
        if s.get(..n)
            .is_some_and(|head| head.eq_ignore_ascii_case(mark))
        {
            s = s[n..].trim_start();
        }
        let cut = s.len().saturating_sub(n);
        if s.get(cut..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(mark))
        {
            s = s[..cut].trim_end();
        }
    }
    s
}

/// An exact decimal from a till's text (see "Amounts" in the module docs).
pub(super) fn parse_amount(raw: &str) -> Result<Decimal, NumError> {
    let mapped: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '\u{660}'..='\u{669}' => char::from_digit(c as u32 - 0x660, 10).unwrap_or(c),
            '\u{6F0}'..='\u{6F9}' => char::from_digit(c as u32 - 0x6F0, 10).unwrap_or(c),
            '\u{66B}' => '.',
            '\u{66C}' => ',',
            '\u{2212}' => '-',
            other => other,
        })
        .collect();
    let mut s = strip_currency(&mapped);
    let mut negative = false;
    if let Some(inner) = s.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        negative = true;
        s = inner.trim();
    }
    if let Some(rest) = s.strip_prefix('-') {
        negative = !negative;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    let s = strip_currency(s);
    if s.is_empty() {
        return Err(NumError::NotANumber);
    }
    let value = if s.contains(['e', 'E']) {
        // JSON numbers print as 1e-7 when very small or large.
        if !s.chars().all(|c| c.is_ascii_digit() || "eE.+-".contains(c)) {
            return Err(NumError::NotANumber);
        }
        Decimal::from_scientific(s).map_err(|_| NumError::NotANumber)?
    } else {
        let (int, frac) = split_decimal(s)?;
        let int = ungroup(int)?;
        if !frac.chars().all(|c| c.is_ascii_digit()) || (int.is_empty() && frac.is_empty()) {
            return Err(NumError::NotANumber);
        }
        let int = if int.is_empty() { "0" } else { &int };
        let text = if frac.is_empty() {
            int.to_string()
        } else {
            format!("{int}.{frac}")
        };
        text.parse::<Decimal>().map_err(|_| NumError::TooLarge)?
    };
    Ok(if negative { -value } else { value })
}

/// Splits at the decimal separator: the last of `.` and `,` when both
/// appear, a lone `,` (decimal comma) or a lone `.`.
pub(super) fn split_decimal(s: &str) -> Result<(&str, &str), NumError> {
    let dots = s.matches('.').count();
    let commas = s.matches(',').count();
    let at = match (dots, commas) {
        (0, 0) => return Ok((s, "")),
        (_, 0) if dots > 1 => return Ok((s, "")), // 1.234.567
        (0, _) if commas > 1 => return Ok((s, "")), // 1,234,567
        (0, 1) => {
            let (int, frac) = s.split_once(',').unwrap_or((s, ""));
            let digits = int.trim_start_matches(['\u{a0}', ' ']);
            if frac.len() == 3
                && (1..=3).contains(&digits.len())
                && !digits.starts_with('0')
                && digits.chars().all(|c| c.is_ascii_digit())
            {
                return Err(NumError::Ambiguous);
            }
            s.len() - frac.len() - 1
        }
        _ => s.rfind(['.', ',']).unwrap_or(s.len()),
    };
    let sep = s[at..].chars().next().unwrap_or('.');
    let (int, frac) = (&s[..at], &s[at + sep.len_utf8()..]);
    if int.contains(sep) {
        return Err(NumError::NotANumber);
    }
    Ok((int, frac))
}

/// The digits of an integer part, with thousands grouping (`,` `.` space,
/// no-break space, apostrophe) removed only when it groups by three.
pub(super) fn ungroup(int: &str) -> Result<String, NumError> {
    let is_sep = |c: char| matches!(c, ',' | '.' | ' ' | '\u{a0}' | '\u{202f}' | '\'' | '’');
    if !int.contains(is_sep) {
        return if int.chars().all(|c| c.is_ascii_digit()) {
            Ok(int.to_string())
        } else {
            Err(NumError::NotANumber)
        };
    }
    let groups: Vec<&str> = int.split(is_sep).collect();
    let well_grouped = groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        && (1..=3).contains(&groups[0].len())
        && groups[1..].iter().all(|g| g.len() == 3);
    if well_grouped {
        Ok(groups.concat())
    } else {
        Err(NumError::NotANumber)
    }
}

/// A sale date as YYYY-MM-DD (see "Dates" in the module docs).
pub(super) fn parse_date(s: &str) -> Option<String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return match s.len() {
            8 => ymd(&s[..4], &s[4..6], &s[6..]),
            10 => epoch(s.parse().ok()?),
            13 => epoch(s.parse::<i64>().ok()? / 1000),
            _ => None,
        };
    }
    let day = s.split(|c: char| c == 'T' || c.is_whitespace()).next()?;
    let parts: Vec<&str> = day.split(['-', '/', '.']).collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|x| x.is_empty() || !x.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    match (parts[0].len(), parts[1].len(), parts[2].len()) {
        (4, 1..=2, 1..=2) => ymd(parts[0], parts[1], parts[2]),
        (1..=2, 1..=2, 4) => ymd(parts[2], parts[1], parts[0]),
        _ => None,
    }
}

pub(super) fn ymd(y: &str, m: &str, d: &str) -> Option<String> {
    let date = chrono::NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    Some(date.format("%Y-%m-%d").to_string())
}

pub(super) fn epoch(seconds: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.date_naive().format("%Y-%m-%d").to_string())
}
