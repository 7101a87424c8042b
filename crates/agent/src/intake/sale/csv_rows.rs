//! CSV exports: delimiter detection, headers to fields, rows to drafts.

use super::*;

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// Which column holds which field.
pub(super) struct Columns {
    pub(super) by_field: BTreeMap<Field, (usize, String)>,
    /// First and last name columns, used when no column holds the name.
    pub(super) name_parts: Option<(Option<usize>, Option<usize>)>,
}

pub(super) struct CsvRow<'a> {
    pub(super) line: u64,
    pub(super) record: &'a csv::StringRecord,
    pub(super) columns: &'a Columns,
}

impl Source for CsvRow<'_> {
    fn slot(&self, field: Field) -> Slot {
        match self.columns.by_field.get(&field) {
            Some((i, name)) => {
                let cell = self.record.get(*i).unwrap_or("");
                Slot {
                    loc: format!("line {}, column \"{name}\"", self.line),
                    val: (!cell.trim().is_empty()).then(|| Scalar::Text(cell.to_string())),
                    absent: "is empty",
                    mapped: false,
                }
            }
            None => Slot {
                loc: format!("line {}", self.line),
                val: None,
                absent: "has no column",
                mapped: false,
            },
        }
    }

    fn here(&self) -> String {
        format!("line {}", self.line)
    }

    fn name_parts(&self) -> Option<String> {
        let (first, last) = self.columns.name_parts?;
        let cell = |i: Option<usize>| {
            i.and_then(|i| self.record.get(i))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        join_name(cell(first), cell(last))
    }
}

/// A header matched loosely: `Receipt No.`, `Invoice #`, `Price (JOD)`.
pub(super) fn header_key(h: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in h.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            '.' | '#' | ':' | '*' => {}
            _ => out.push(c),
        }
    }
    let key = norm(&out);
    if key.is_empty() {
        norm(h)
    } else {
        key
    }
}

pub(super) fn delimiter_name(d: u8) -> &'static str {
    match d {
        b';' => "\";\"",
        b'\t' => "tab",
        b'|' => "\"|\"",
        _ => "\",\"",
    }
}

/// The separator used most in the header line (outside quotes).
pub(super) fn detect_delimiter(header: &str) -> u8 {
    let mut counts = [0usize; 4];
    let candidates = [b',', b';', b'\t', b'|'];
    let mut quoted = false;
    for b in header.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            if let Some(i) = candidates.iter().position(|&c| c == b) {
                counts[i] += 1;
            }
        }
    }
    let mut best = 0;
    for i in 1..4 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    candidates[best]
}

pub(super) fn csv_drafts(text: &str, opts: &IntakeOptions, p: &mut Problems) -> Vec<Draft> {
    // Classic Mac line ends: make them lines.
    let owned;
    let text = if !text.contains('\n') && text.contains('\r') {
        owned = text.replace('\r', "\n");
        owned.as_str()
    } else {
        text
    };
    let mut too_long = false;
    for (i, line) in text.split('\n').enumerate() {
        if line.len() > MAX_CSV_LINE_BYTES {
            p.push(
                format!("line {}", i + 1),
                format!(
                    "is {} bytes long, a POS export line is at most 64 KiB: this is not a sales \
                     export, or the file is damaged",
                    line.len()
                ),
            );
            too_long = true;
        }
    }
    if too_long {
        return Vec::new();
    }

    // The header is the first non-blank line, after an Excel "sep=;" hint.
    let mut start = 0;
    let mut skipped = 0u64;
    let mut delimiter = None;
    for piece in text.split_inclusive('\n') {
        let line = piece.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            start += piece.len();
            skipped += 1;
            continue;
        }
        let hint = line
            .trim_start()
            .strip_prefix("sep=")
            .filter(|_| delimiter.is_none());
        if let Some(sep) = hint.and_then(|s| s.bytes().next()) {
            delimiter = Some(sep);
            start += piece.len();
            skipped += 1;
            continue;
        }
        delimiter.get_or_insert_with(|| detect_delimiter(line));
        break;
    }
    let delimiter = delimiter.unwrap_or(b',');
    let body = &text[start..];

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    let line_of = |pos: Option<&csv::Position>| skipped + pos.map_or(1, csv::Position::line);
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            p.push(
                format!("line {}", line_of(e.position())),
                format!("cannot be read as CSV: {e}"),
            );
            return Vec::new();
        }
        None => {
            p.push("line 1", "the file has no header line: it holds no sales");
            return Vec::new();
        }
    };
    let header_line = line_of(header.position());
    let headers: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let before = p.count();
    let columns = assign_columns(&headers, header_line, &opts.mapping, p);
    if p.count() > before {
        return Vec::new();
    }

    let mut rows = Vec::new();
    for record in records {
        match record {
            Ok(rec) => {
                let line = line_of(rec.position());
                if rec.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                if rec.len() > headers.len()
                    && rec.iter().skip(headers.len()).any(|c| !c.trim().is_empty())
                {
                    p.push(
                        format!("line {line}"),
                        format!(
                            "has {} values but the header (line {header_line}) names {} columns: a value \
                             probably contains the separator {} without quotes around it; quote it or export again",
                            rec.len(),
                            headers.len(),
                            delimiter_name(delimiter)
                        ),
                    );
                    continue;
                }
                rows.push((line, rec));
            }
            Err(e) => p.push(
                format!("line {}", line_of(e.position())),
                format!("cannot be read as CSV: {e}"),
            ),
        }
    }
    if rows.is_empty() {
        if p.is_empty() {
            p.push(
                format!("line {header_line}"),
                "is a header with no sale rows below it: the file holds no sales",
            );
        }
        return Vec::new();
    }
    let sources: Vec<CsvRow<'_>> = rows
        .iter()
        .map(|(line, record)| CsvRow {
            line: *line,
            record,
            columns: &columns,
        })
        .collect();
    drafts_from_rows(&sources, p)
}

/// Matches the header to fields: mapping entries first, then synonyms,
/// each column used once. The description and a price or total are required.
pub(super) fn assign_columns(
    headers: &[String],
    header_line: u64,
    mapping: &Mapping,
    p: &mut Problems,
) -> Columns {
    let keys: Vec<String> = headers.iter().map(|h| header_key(h)).collect();
    let mut taken = vec![false; headers.len()];
    let mut by_field = BTreeMap::new();
    let list = || {
        headers
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for field in Field::ALL {
        let Some(column) = mapping.get(field) else {
            continue;
        };
        if field == Field::Items {
            continue; // a JSON path; CSV rows are lines already
        }
        let found = headers
            .iter()
            .position(|h| h == column)
            .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case(column)))
            .or_else(|| keys.iter().position(|k| *k == header_key(column)));
        match found {
            Some(i) => {
                taken[i] = true;
                by_field.insert(field, (i, headers[i].clone()));
            }
            None => p.push(
                format!("line {header_line}"),
                format!(
                    "intake.mapping.{} names the column \"{column}\", which this file does not have; \
                     its columns are: {}",
                    field.name(),
                    list()
                ),
            ),
        }
    }
    for field in Field::ALL {
        if field == Field::Items || by_field.contains_key(&field) || mapping.ignores(field) {
            continue;
        }
        let found = field.synonyms().iter().find_map(|syn| {
            let syn = syn.replace('.', "");
            (0..headers.len()).find(|&i| !taken[i] && keys[i] == syn)
        });
        if let Some(i) = found {
            taken[i] = true;
            by_field.insert(field, (i, headers[i].clone()));
        }
    }
    let expect = |field: Field| match field {
        Field::Description => {
            "description, item_name, product_name, service_name, name, item, product or title"
        }
        Field::UnitPrice => "unit_price, price, rate or cost",
        _ => "line_total, total, amount or subtotal",
    };
    if !by_field.contains_key(&Field::Description) {
        p.push(
            format!("line {header_line}"),
            format!(
                "no column for the item description: expected one named like {} (case, \"_\", \"-\" \
                 and spaces ignored), or set intake.mapping.description to its name; the columns \
                 (the first line must name them) are: {}",
                expect(Field::Description),
                list()
            ),
        );
    }
    if !by_field.contains_key(&Field::UnitPrice) && !by_field.contains_key(&Field::LineTotal) {
        p.push(
            format!("line {header_line}"),
            format!(
                "no column for the unit price or the line total: expected one named like {} or {}, \
                 or set intake.mapping.unit_price to its name; the columns are: {}",
                expect(Field::UnitPrice),
                expect(Field::LineTotal),
                list()
            ),
        );
    }
    let name_parts = if by_field.contains_key(&Field::CustomerName) {
        None
    } else {
        NAME_PARTS.iter().find_map(|(first, last)| {
            let at = |name: &str| {
                let name = name.replace('.', "");
                (0..headers.len()).find(|&i| !taken[i] && keys[i] == name)
            };
            let (f, l) = (at(first), at(last));
            (f.is_some() || l.is_some()).then_some((f, l))
        })
    };
    Columns {
        by_field,
        name_parts,
    }
}
