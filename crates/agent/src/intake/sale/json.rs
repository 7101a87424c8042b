//! JSON shapes: one sale, arrays, wrappers, JSON Lines, nested lines,
//! QuickBooks lines, flat rows grouped like CSV.

use super::*;

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_string()
    } else {
        format!("{prefix}.{path}")
    }
}

pub(super) fn find_key<'v>(
    map: &'v Map<String, Value>,
    segment: &str,
) -> Option<(&'v str, &'v Value)> {
    if let Some((k, v)) = map.get_key_value(segment) {
        return Some((k.as_str(), v));
    }
    let n = norm(segment);
    map.iter()
        .find(|(k, _)| norm_eq(k, &n))
        .map(|(k, v)| (k.as_str(), v))
}

/// The value at a dotted path, keys matched like field names; with the path
/// as the document spells it.
pub(super) fn resolve<'v>(obj: &'v Value, path: &str) -> Option<(String, &'v Value)> {
    let mut current = obj;
    let mut written = String::new();
    for segment in path.split('.') {
        let (key, value) = find_key(current.as_object()?, segment)?;
        if !written.is_empty() {
            written.push('.');
        }
        written.push_str(key);
        current = value;
    }
    Some((written, current))
}

pub(super) fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

pub(super) fn scalar(v: &Value) -> Scalar {
    match v {
        Value::String(s) => Scalar::Text(s.clone()),
        // The shortest exact text of the number: never through a float.
        Value::Number(n) => Scalar::Text(n.to_string()),
        other => Scalar::Bad(kind_of(other)),
    }
}

/// A JSON object read as a sale, a line or a flat row.
pub(super) struct JsonObj<'a> {
    pub(super) obj: &'a Value,
    /// Path of the object: "", "[2]", "invoices[2].items[1]".
    pub(super) prefix: String,
    pub(super) mapping: &'a Mapping,
}

impl Source for JsonObj<'_> {
    fn name_parts(&self) -> Option<String> {
        let text = |path: &str| {
            resolve(self.obj, path).and_then(|(_, v)| match v {
                Value::String(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                _ => None,
            })
        };
        NAME_PARTS
            .iter()
            .find_map(|(first, last)| join_name(text(first), text(last)))
    }

    fn slot(&self, field: Field) -> Slot {
        if self.mapping.ignores(field) {
            return Slot {
                loc: join(&self.prefix, field.name()),
                val: None,
                absent: "is ignored",
                mapped: true,
            };
        }
        if let Some(path) = self.mapping.get(field) {
            return match resolve(self.obj, path) {
                Some((written, v)) if !is_blank(v) => Slot {
                    loc: join(&self.prefix, &written),
                    val: Some(scalar(v)),
                    absent: "is missing",
                    mapped: true,
                },
                _ => Slot {
                    loc: join(&self.prefix, path),
                    val: None,
                    absent: "is missing",
                    mapped: true,
                },
            };
        }
        let mut bad = None;
        for synonym in field.synonyms() {
            if self.mapping.claims(synonym, field, true) {
                continue;
            }
            let Some((written, v)) = resolve(self.obj, synonym) else {
                continue;
            };
            match v {
                // Objects are containers (`customer: {name}`, `ItemRef`),
                // read through the dotted synonyms.
                Value::Null | Value::Object(_) => {}
                Value::String(_) | Value::Number(_) => {
                    if !is_blank(v) {
                        return Slot {
                            loc: join(&self.prefix, &written),
                            val: Some(scalar(v)),
                            absent: "is missing",
                            mapped: false,
                        };
                    }
                }
                Value::Bool(_) | Value::Array(_) => {
                    bad.get_or_insert(Slot {
                        loc: join(&self.prefix, &written),
                        val: Some(scalar(v)),
                        absent: "is missing",
                        mapped: false,
                    });
                }
            }
        }
        bad.unwrap_or_else(|| Slot {
            loc: join(&self.prefix, field.name()),
            val: None,
            absent: "is missing",
            mapped: false,
        })
    }

    fn here(&self) -> String {
        if self.prefix.is_empty() {
            DOCUMENT.to_string()
        } else {
            self.prefix.clone()
        }
    }
}

impl JsonObj<'_> {
    fn has(&self, field: Field) -> bool {
        self.slot(field).val.is_some()
    }

    /// The sale's line array, where it is.
    fn lines(&self) -> Lines<'_> {
        if let Some(path) = self.mapping.get(Field::Items) {
            return match resolve(self.obj, path) {
                Some((w, Value::Array(a))) => Lines::Array(join(&self.prefix, &w), a),
                Some((w, v)) if !v.is_null() => Lines::NotArray(join(&self.prefix, &w), v),
                _ => Lines::Missing,
            };
        }
        let mut other = None;
        for synonym in Field::Items.synonyms() {
            if self.mapping.claims(synonym, Field::Items, true) {
                continue;
            }
            match resolve(self.obj, synonym) {
                Some((w, Value::Array(a))) => return Lines::Array(join(&self.prefix, &w), a),
                Some((w, v)) if !v.is_null() && other.is_none() => other = Some((w, v)),
                _ => {}
            }
        }
        match other {
            Some((w, v)) => Lines::NotArray(join(&self.prefix, &w), v),
            None => Lines::Missing,
        }
    }

    /// One line item written flat, with its sale's fields beside it.
    fn is_flat_row(&self) -> bool {
        !matches!(self.lines(), Lines::Array(..))
            && self.has(Field::Description)
            && (self.has(Field::Quantity)
                || self.has(Field::UnitPrice)
                || self.has(Field::LineTotal))
    }

    fn is_sale(&self) -> bool {
        matches!(self.lines(), Lines::Array(..)) || self.is_flat_row()
    }
}

pub(super) enum Lines<'v> {
    Array(String, &'v Vec<Value>),
    NotArray(String, &'v Value),
    Missing,
}

/// JSON text: one document, or JSON Lines (several values, one sale each).
pub(super) fn json_text_drafts(text: &str, opts: &IntakeOptions, p: &mut Problems) -> Vec<Draft> {
    let mut values = Vec::new();
    for item in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match item {
            Ok(v) => values.push(v),
            Err(e) => {
                let what = if e.is_eof() {
                    "the file ends too early: it is truncated or was still being written; export it again"
                } else {
                    "correct the JSON or export the sales again"
                };
                p.push(
                    format!("line {}, column {}", e.line(), e.column()),
                    format!("the JSON is not valid ({e}): {what}"),
                );
                return Vec::new();
            }
        }
    }
    if values.len() == 1 {
        json_drafts(&values[0], opts, p)
    } else {
        json_drafts(&Value::Array(values), opts, p)
    }
}

pub(super) fn json_drafts(v: &Value, opts: &IntakeOptions, p: &mut Problems) -> Vec<Draft> {
    let mapping = &opts.mapping;
    let mut found = Vec::new();
    collect_sales(v, String::new(), 0, mapping, p, &mut found);
    if found.len() > MAX_SALES {
        p.push(
            DOCUMENT,
            format!(
                "holds {} sales: at most {MAX_SALES} are accepted in one document; split it",
                found.len()
            ),
        );
        return Vec::new();
    }
    // Flat rows (one line item per object) are grouped like CSV rows.
    if found.len() > 1 && found.iter().all(JsonObj::is_flat_row) {
        return drafts_from_rows(&found, p);
    }
    let mut drafts = Vec::with_capacity(found.len());
    for sale in &found {
        if sale.is_flat_row() {
            drafts.extend(drafts_from_rows(std::slice::from_ref(sale), p));
        } else if let Some(d) = nested_draft(sale, p) {
            drafts.push(d);
        }
    }
    drafts
}

/// The sale objects of a document, with their paths.
pub(super) fn collect_sales<'a>(
    v: &'a Value,
    prefix: String,
    depth: usize,
    mapping: &'a Mapping,
    p: &mut Problems,
    out: &mut Vec<JsonObj<'a>>,
) {
    let here = if prefix.is_empty() {
        DOCUMENT.to_string()
    } else {
        prefix.clone()
    };
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                p.push(here, "is an empty list: it holds no sales");
            }
            for (i, item) in items.iter().enumerate() {
                let at = format!("{prefix}[{i}]");
                if item.is_object() {
                    out.push(JsonObj {
                        obj: item,
                        prefix: at,
                        mapping,
                    });
                } else {
                    p.push(
                        at,
                        format!("must be an object describing one sale, found {}", kind_of(item)),
                    );
                }
            }
        }
        Value::Object(map) => {
            let sale = JsonObj {
                obj: v,
                prefix,
                mapping,
            };
            // A sale with a line array is a sale even if it has a `data`
            // key; otherwise a wrapper key holding sales wins over reading
            // the object's own metadata (`name`, `count`) as a flat line.
            if depth < 3 && !matches!(sale.lines(), Lines::Array(..)) {
                if let Some((key, inner)) = wrapped_sales(map, depth, mapping) {
                    let at = join(&sale.prefix, key);
                    return collect_sales(inner, at, depth + 1, mapping, p, out);
                }
            }
            out.push(sale);
        }
        other => p.push(
            here,
            format!(
                "the JSON document is {}; expected one sale object, an array of sales, or an object \
                 holding them under \"invoices\", \"sales\", \"transactions\", \"orders\", \"receipts\" or \"data\"",
                kind_of(other)
            ),
        ),
    }
}

/// The first wrapper key of `map` whose value holds sales: an array, or an
/// object that is a sale or wraps sales itself.
pub(super) fn wrapped_sales<'a>(
    map: &'a Map<String, Value>,
    depth: usize,
    mapping: &'a Mapping,
) -> Option<(&'a str, &'a Value)> {
    WRAPPERS.iter().find_map(|wrapper| {
        let (key, inner) = find_key(map, wrapper)?;
        let holds = match inner {
            Value::Array(_) => true,
            Value::Object(inner_map) => {
                let obj = JsonObj {
                    obj: inner,
                    prefix: String::new(),
                    mapping,
                };
                obj.is_sale()
                    || (depth < 2 && wrapped_sales(inner_map, depth + 1, mapping).is_some())
            }
            _ => false,
        };
        holds.then_some((key, inner))
    })
}

/// A sale object with a line array.
pub(super) fn nested_draft(sale: &JsonObj<'_>, p: &mut Problems) -> Option<Draft> {
    let fields = read_sale_fields(sale, p);
    let (at, list) = match sale.lines() {
        Lines::Array(at, list) => (at, list),
        Lines::NotArray(at, v) => {
            p.push(
                at,
                format!("must be an array of item lines, found {}", kind_of(v)),
            );
            return None;
        }
        Lines::Missing => {
            let at = join(
                &sale.prefix,
                sale.mapping.get(Field::Items).unwrap_or("items"),
            );
            p.push(
                at,
                "item lines are missing: a sale needs an array of lines named items, lines, \
                 line_items, products, Line, details or entries (or set intake.mapping.items)",
            );
            return None;
        }
    };
    if list.is_empty() {
        p.push(at, "is empty: a sale needs at least one item line");
        return None;
    }
    if list.len() > MAX_LINES_PER_SALE {
        p.push(
            at,
            format!(
                "has {} lines: at most {MAX_LINES_PER_SALE} are accepted in one sale",
                list.len()
            ),
        );
        return None;
    }
    let before = p.count();
    let mut lines = Vec::with_capacity(list.len());
    for (i, line) in list.iter().enumerate() {
        let line_at = format!("{at}[{i}]");
        if !line.is_object() {
            p.push(
                line_at,
                format!(
                    "must be an object with a description, quantity and unit price, found {}",
                    kind_of(line)
                ),
            );
            continue;
        }
        match quickbooks_detail(line) {
            Detail::Sale => {}
            Detail::Skip => continue,
            Detail::Refuse(key, why) => {
                p.push(join(&line_at, key), why);
                continue;
            }
        }
        let src = JsonObj {
            obj: line,
            prefix: line_at,
            mapping: sale.mapping,
        };
        lines.extend(read_line(&src, p));
    }
    if lines.is_empty() && p.count() == before {
        p.push(
            at,
            "has no item lines (only sub-total or description lines): a sale needs at least one item",
        );
        return None;
    }
    Some(Draft { fields, lines })
}

pub(super) enum Detail<'v> {
    Sale,
    Skip,
    Refuse(&'v str, &'static str),
}

/// QuickBooks lines carry a `DetailType`: only item lines are sales. Sub
/// totals and description-only lines are skipped; discount and group lines
/// are refused, because skipping them would change the invoice's amount.
pub(super) fn quickbooks_detail(line: &Value) -> Detail<'_> {
    let Some((key, Value::String(kind))) = line.as_object().and_then(|m| find_key(m, "detailtype"))
    else {
        return Detail::Sale;
    };
    match norm(kind).as_str() {
        "salesitemlinedetail" => Detail::Sale,
        "discountlinedetail" => Detail::Refuse(
            key,
            "is a discount line: discount lines are not supported; put the discounted price on the items",
        ),
        "grouplinedetail" => Detail::Refuse(
            key,
            "is a group (bundle) line: list the bundle's items as separate lines",
        ),
        _ => Detail::Skip,
    }
}
