//! The query language: lexer, parser and evaluation over the tables.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Star,
    LParen,
    RParen,
    Comma,
    Op(&'static str),
}

impl Tok {
    pub(super) fn show(&self) -> String {
        match self {
            Tok::Word(w) | Tok::Num(w) => w.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Star => "*".into(),
            Tok::LParen => "(".into(),
            Tok::RParen => ")".into(),
            Tok::Comma => ",".into(),
            Tok::Op(o) => (*o).into(),
        }
    }

    pub(super) fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// Tokens with their 1-based column (for error details).
pub(super) fn lex(q: &str) -> Result<Vec<(Tok, usize)>, ApiError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '*' => Tok::Star,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' => Tok::Op("="),
            '<' | '>' | '!' => {
                let next = chars.get(i + 1).copied();
                let op = match (c, next) {
                    ('<', Some('=')) => "<=",
                    ('>', Some('=')) => ">=",
                    ('!', Some('=')) | ('<', Some('>')) => "!=",
                    ('<', _) => "<",
                    ('>', _) => ">",
                    _ => {
                        return Err(parse_error(format!(
                            "Encountered \"{c}\" at line 1, column {col}."
                        )))
                    }
                };
                i += op.len() - 1;
                Tok::Op(op)
            }
            '\'' => {
                // `\'` escapes a quote; a backslash before anything else is
                // kept as it is.
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => {
                            return Err(parse_error(format!(
                                "Lexical error at line 1, column {}. Encountered: <EOF> (unterminated string starting at column {col})",
                                chars.len() + 1
                            )))
                        }
                        Some('\\') if chars.get(j + 1) == Some(&'\'') => {
                            s.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&ch) => {
                            s.push(ch);
                            j += 1;
                        }
                    }
                }
                i = j;
                Tok::Str(s)
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                let s: String = chars[i..j].iter().collect();
                i = j - 1;
                Tok::Num(s)
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '.')
                {
                    j += 1;
                }
                let s: String = chars[i..j].iter().collect();
                i = j - 1;
                Tok::Word(s)
            }
            other => {
                return Err(parse_error(format!(
                    "Lexical error at line 1, column {col}. Encountered: \"{other}\""
                )))
            }
        };
        out.push((tok, col));
        i += 1;
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lit {
    Str(String),
    Bool(bool),
    Num(Decimal),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cond {
    Cmp(&'static str, CmpOp, Lit),
    In(&'static str, Vec<Lit>),
    Like(&'static str, String),
}

impl Cond {
    pub(super) fn field(&self) -> &'static str {
        match self {
            Cond::Cmp(f, ..) | Cond::In(f, _) | Cond::Like(f, _) => f,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct QboQuery {
    pub(super) count: bool,
    pub(super) kind: Kind,
    pub(super) conds: Vec<Cond>,
    pub(super) order: Vec<(&'static str, bool)>,
    pub(super) start: u64,
    pub(super) max: u64,
}

pub(super) struct Parser {
    pub(super) toks: Vec<(Tok, usize)>,
    pub(super) pos: usize,
    pub(super) end_col: usize,
}

impl Parser {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    pub(super) fn unexpected(&self) -> ApiError {
        match self.toks.get(self.pos) {
            Some((t, col)) => parse_error(format!(
                "Encountered \"{}\" at line 1, column {col}.",
                t.show()
            )),
            None => parse_error(format!(
                "Encountered \"<EOF>\" at line 1, column {}.",
                self.end_col
            )),
        }
    }

    pub(super) fn next(&mut self) -> Result<Tok, ApiError> {
        let t = self.peek().cloned().ok_or_else(|| self.unexpected())?;
        self.pos += 1;
        Ok(t)
    }

    pub(super) fn expect(&mut self, want: &Tok) -> Result<(), ApiError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    pub(super) fn keyword(&mut self, kw: &str) -> Result<(), ApiError> {
        if self.peek().is_some_and(|t| t.is_kw(kw)) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    pub(super) fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.peek().is_some_and(|t| t.is_kw(kw));
        if yes {
            self.pos += 1;
        }
        yes
    }

    pub(super) fn field(&mut self, kind: Kind) -> Result<&'static str, ApiError> {
        match self.next()? {
            Tok::Word(w) => kind
                .field(&w)
                .ok_or_else(|| parse_error(format!("property '{w}' is not queryable"))),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    pub(super) fn literal(&mut self) -> Result<Lit, ApiError> {
        match self.next()? {
            Tok::Str(s) => Ok(Lit::Str(s)),
            Tok::Num(n) => match Decimal::from_str(&n) {
                Ok(d) => Ok(Lit::Num(d)),
                Err(_) => {
                    self.pos -= 1;
                    Err(self.unexpected())
                }
            },
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    pub(super) fn integer(&mut self) -> Result<u64, ApiError> {
        match self.next()? {
            Tok::Num(n) => n.parse::<u64>().map_err(|_| {
                self.pos -= 1;
                self.unexpected()
            }),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    pub(super) fn cond(&mut self, kind: Kind) -> Result<Cond, ApiError> {
        let field = self.field(kind)?;
        match self.next()? {
            Tok::Op(op) => {
                let op = match op {
                    "=" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                Ok(Cond::Cmp(field, op, self.literal()?))
            }
            t if t.is_kw("IN") => {
                self.expect(&Tok::LParen)?;
                let mut list = vec![self.literal()?];
                while self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    list.push(self.literal()?);
                }
                self.expect(&Tok::RParen)?;
                Ok(Cond::In(field, list))
            }
            t if t.is_kw("LIKE") => match self.next()? {
                Tok::Str(s) => Ok(Cond::Like(field, s)),
                _ => {
                    self.pos -= 1;
                    Err(self.unexpected())
                }
            },
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }
}

/// Parses the subset of Intuit's query language the sandbox serves:
/// `SELECT * | SELECT COUNT(*) FROM <Entity> [WHERE cond [AND cond]...]
/// [ORDERBY field [ASC|DESC] [, ...]] [STARTPOSITION n] [MAXRESULTS m]`,
/// keywords, entities and fields case-insensitive; `cond` is `field op
/// literal` (`=`, `!=`, `<`, `<=`, `>`, `>=`), `field IN (literal, ...)` or
/// `field LIKE 'text'` (`%` at either end); literals are `'strings'` (`\'`
/// inside), numbers or `true`/`false`.
pub(super) fn parse_query(q: &str) -> Result<QboQuery, ApiError> {
    let toks = lex(q)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end_col: q.chars().count() + 1,
    };
    p.keyword("SELECT")?;
    let count = match p.next()? {
        Tok::Star => false,
        t if t.is_kw("COUNT") => {
            p.expect(&Tok::LParen)?;
            p.expect(&Tok::Star)?;
            p.expect(&Tok::RParen)?;
            true
        }
        Tok::Word(_) => {
            return Err(parse_error(
                "the sandbox serves SELECT * and SELECT COUNT(*) only, not field lists",
            ))
        }
        _ => {
            p.pos -= 1;
            return Err(p.unexpected());
        }
    };
    p.keyword("FROM")?;
    let kind = match p.next()? {
        Tok::Word(w) => Kind::parse(&w).ok_or_else(|| {
            parse_error(format!(
                "Invalid entity '{w}': it is not a queryable entity"
            ))
        })?,
        _ => {
            p.pos -= 1;
            return Err(p.unexpected());
        }
    };
    let mut conds = Vec::new();
    if p.eat_kw("WHERE") {
        conds.push(p.cond(kind)?);
        while p.eat_kw("AND") {
            conds.push(p.cond(kind)?);
        }
    }
    let mut order = Vec::new();
    if p.eat_kw("ORDERBY") {
        loop {
            let f = p.field(kind)?;
            let desc = if p.eat_kw("DESC") {
                true
            } else {
                p.eat_kw("ASC");
                false
            };
            order.push((f, desc));
            if p.peek() != Some(&Tok::Comma) {
                break;
            }
            p.pos += 1;
        }
    }
    let (mut start, mut max) = (None, None);
    loop {
        if start.is_none() && p.eat_kw("STARTPOSITION") {
            start = Some(p.integer()?);
        } else if max.is_none() && p.eat_kw("MAXRESULTS") {
            max = Some(p.integer()?);
        } else {
            break;
        }
    }
    if p.peek().is_some() {
        return Err(p.unexpected());
    }
    let max = max.unwrap_or(DEFAULT_MAX_RESULTS);
    if max > MAX_RESULTS_LIMIT {
        return Err(query_invalid(format!(
            "value {max} is too large. Max allowed value is: {MAX_RESULTS_LIMIT}"
        )));
    }
    if max == 0 {
        return Err(query_invalid("MAXRESULTS must be at least 1"));
    }
    Ok(QboQuery {
        count,
        kind,
        conds,
        order,
        start: start.unwrap_or(1).max(1),
        max,
    })
}

/// A field of a row: dotted paths walk objects; a reference
/// (`CustomerRef`) compares by its `value`; `PrimaryEmailAddr` by its
/// `Address`.
pub(super) fn field_value<'a>(row: &'a Row, field: &str) -> Option<&'a Value> {
    let mut parts = field.split('.');
    let mut v = row.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    match v {
        Value::Object(o) => o.get("value").or_else(|| o.get("Address")),
        other => Some(other),
    }
}

/// A time for comparisons: RFC 3339, a date-time without offset (UTC) or a
/// date (midnight UTC).
pub(super) fn as_instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Compares a stored value with a literal; `None` when they cannot be
/// compared (the condition is then false). Strings compare
/// case-insensitively, as QuickBooks' queries do; times as times, numbers
/// as numbers.
pub(super) fn compare(stored: &Value, lit: &Lit) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    let parse_bool = |s: &str| match s.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    match (stored, lit) {
        (Value::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Lit::Str(s)) => parse_bool(s).map(|b| a.cmp(&b)),
        (Value::Number(_), _) => {
            let a = dec(stored)?;
            let b = match lit {
                Lit::Num(d) => *d,
                Lit::Str(s) => Decimal::from_str(s.trim()).ok()?,
                Lit::Bool(_) => return None,
            };
            Some(a.cmp(&b))
        }
        (Value::String(a), Lit::Str(b)) => {
            if let (Some(x), Some(y)) = (as_instant(a), as_instant(b)) {
                return Some(x.cmp(&y));
            }
            if let (Ok(x), Ok(y)) = (Decimal::from_str(a), Decimal::from_str(b)) {
                return Some(x.cmp(&y));
            }
            Some(a.to_lowercase().cmp(&b.to_lowercase()))
        }
        (Value::String(a), Lit::Num(b)) => Decimal::from_str(a.trim()).ok().map(|x| x.cmp(b)),
        (Value::String(a), Lit::Bool(b)) => parse_bool(a).map(|x| x.cmp(b)),
        _ => None::<Ordering>,
    }
}

pub(super) fn matches(row: &Row, cond: &Cond) -> bool {
    use std::cmp::Ordering::*;
    let Some(v) = field_value(row, cond.field()) else {
        return false;
    };
    match cond {
        Cond::Cmp(_, op, lit) => compare(v, lit).is_some_and(|o| match op {
            CmpOp::Eq => o == Equal,
            CmpOp::Ne => o != Equal,
            CmpOp::Lt => o == Less,
            CmpOp::Le => o != Greater,
            CmpOp::Gt => o == Greater,
            CmpOp::Ge => o != Less,
        }),
        Cond::In(_, list) => list.iter().any(|l| compare(v, l) == Some(Equal)),
        Cond::Like(_, pat) => {
            let Some(s) = v.as_str() else {
                return false;
            };
            let s = s.to_lowercase();
            let pat = pat.to_lowercase();
            let (front, rest) = match pat.strip_prefix('%') {
                Some(r) => (true, r),
                None => (false, pat.as_str()),
            };
            let (back, core) = match rest.strip_suffix('%') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            match (front, back) {
                (true, true) => s.contains(core),
                (true, false) => s.ends_with(core),
                (false, true) => s.starts_with(core),
                (false, false) => s == core,
            }
        }
    }
}

pub(super) fn lit_of(v: &Value) -> Option<Lit> {
    match v {
        Value::Bool(b) => Some(Lit::Bool(*b)),
        Value::Number(_) => dec(v).map(Lit::Num),
        Value::String(s) => Some(Lit::Str(s.clone())),
        _ => None,
    }
}

/// Runs a query; answers the inner `QueryResponse` object.
pub(super) fn run_query(t: &Tables, q: &QboQuery) -> Value {
    let mentions_active = q.conds.iter().any(|c| c.field() == "Active");
    let mut rows: Vec<&Row> = t
        .list(q.kind)
        .iter()
        .filter(|r| !q.kind.is_list() || mentions_active || is_active(r))
        .filter(|r| q.conds.iter().all(|c| matches(r, c)))
        .collect();
    if q.count {
        return json!({"totalCount": rows.len()});
    }
    // Rows are kept in creation order, which is ascending Id for the
    // writable entities (Ids are never reused): `ORDERBY Id` needs no sort,
    // which keeps paging through tens of thousands of rows cheap.
    let by_id = q.kind.writable() && q.order.len() == 1 && q.order[0] == ("Id", false);
    if !q.order.is_empty() && !by_id {
        rows.sort_by(|a, b| {
            for (f, desc) in &q.order {
                let o = match (field_value(a, f), field_value(b, f).and_then(lit_of)) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) => compare(x, &y).unwrap_or(std::cmp::Ordering::Equal),
                };
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let page: Vec<Value> = rows
        .into_iter()
        .skip((q.start - 1) as usize)
        .take(q.max as usize)
        .map(|r| Value::Object(r.clone()))
        .collect();
    if page.is_empty() {
        return json!({});
    }
    let n = page.len();
    let mut out = Map::new();
    out.insert(q.kind.name().into(), Value::Array(page));
    out.insert("startPosition".into(), json!(q.start));
    out.insert("maxResults".into(), json!(n));
    Value::Object(out)
}
