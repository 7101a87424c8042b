//! PDF assembly with printpdf, and reading a receipt's text back.

use std::collections::{BTreeMap, BTreeSet};

use printpdf::{
    DictItem, FontId, OffsetDateTime, Op, PdfDocument, PdfFont, PdfPage, PdfParseErrorSeverity,
    PdfParseOptions, PdfSaveOptions, TextItem,
};

use super::font::{self, fnv1a, Face};
use super::{Receipt, ReceiptError, FONT_RESOURCE, NOTICE_EN, TITLE_EN};

/// The PDF of the composed pages: the font subset to the glyphs drawn, the
/// pages' glyph ids renumbered to the subset's, one `/ToUnicode` entry per
/// glyph, a deterministic `/ID` and dates.
pub(super) fn serialize(
    face: &Face,
    r: &Receipt,
    mut pages: Vec<PdfPage>,
    used: &BTreeMap<u16, String>,
) -> Result<Vec<u8>, ReceiptError> {
    let glyphs: BTreeSet<u16> = used.keys().copied().collect();
    let (font, new_id) = font::subset(face, &glyphs)?;
    for page in &mut pages {
        for op in &mut page.ops {
            if let Op::ShowText { items } = op {
                for item in items {
                    if let TextItem::GlyphIds(glyphs) = item {
                        for g in glyphs {
                            // printpdf builds /ToUnicode from these, the
                            // last one per glyph winning: give each glyph
                            // its one text everywhere.
                            g.cid = Some(used.get(&g.gid).cloned().unwrap_or_default());
                            g.gid = new_id.get(&g.gid).copied().unwrap_or(0);
                        }
                    }
                }
            }
        }
    }

    let mut doc = PdfDocument::new(&format!("{TITLE_EN} {}", r.invoice_number));
    let info = &mut doc.metadata.info;
    info.author = r.shop_name.clone();
    info.subject = NOTICE_EN.to_string();
    info.identifier = r.invoice_number.clone();
    info.creator = "pos-connector".to_string();
    info.producer = "pos-connector with printpdf 0.12".to_string();
    // The receipt's own date, not the clock: the same sale gives the same bytes.
    let date = receipt_date(&r.date);
    info.creation_date = date;
    info.modification_date = date;
    info.metadata_date = date;
    doc.resources
        .fonts
        .map
        .insert(FontId(FONT_RESOURCE.to_string()), PdfFont::new(font));
    doc.pages = pages;

    let opts = PdfSaveOptions {
        optimize: true,
        subset_fonts: false,
        secure: true,
        image_optimization: None,
    };
    let mut warnings = Vec::new();
    let mut lo = doc.to_lopdf_document(&opts, &mut warnings);
    if let Some(w) = warnings
        .iter()
        .find(|w| w.severity == PdfParseErrorSeverity::Error)
    {
        return Err(ReceiptError::Pdf(w.msg.clone()));
    }
    // printpdf stamps a random /ID; derive it from the receipt instead.
    let id = document_id(r);
    if let Ok(ids) = lo.trailer.get_mut(b"ID").and_then(|o| o.as_array_mut()) {
        for part in ids {
            if let Ok(s) = part.as_str_mut() {
                s.clone_from(&id);
            }
        }
    }
    // /ActualText is PDF 1.5.
    lo.version = "1.5".to_string();
    lo.compress();
    let mut out = Vec::new();
    lo.save_to(&mut out)
        .map_err(|e| ReceiptError::Pdf(e.to_string()))?;
    Ok(out)
}

fn document_id(r: &Receipt) -> Vec<u8> {
    let text = format!("{r:?}");
    let a = fnv1a(0xCBF2_9CE4_8422_2325, text.as_bytes());
    let b = fnv1a(a ^ 0x9E37_79B9_7F4A_7C15, text.as_bytes());
    format!("{a:016x}{b:016x}").into_bytes()
}

/// "2026-11-22" (any suffix ignored) as a PDF date; 1970-01-01 if it is not
/// a date.
pub(super) fn receipt_date(s: &str) -> OffsetDateTime {
    let epoch = OffsetDateTime::from_unix_timestamp(0).expect("epoch is a valid date");
    let parse = |from: usize, to: usize| s.get(from..to).and_then(|p| p.parse::<i64>().ok());
    let (Some(y), Some(m), Some(d)) = (parse(0, 4), parse(5, 7), parse(8, 10)) else {
        return epoch;
    };
    if s.get(4..5) != Some("-") || s.get(7..8) != Some("-") {
        return epoch;
    }
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return epoch;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    OffsetDateTime::from_unix_timestamp(days * 86_400).unwrap_or(epoch)
}

pub(super) fn utf16be(s: &str) -> Vec<u8> {
    let mut out = vec![0xFE, 0xFF];
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_be_bytes());
    }
    out
}

/// With `actual_text`, lines inside an `/ActualText` span give that text
/// (logical order); without, every glyph gives its `/ToUnicode` text in
/// drawing order (tests use this to see what is really drawn).
pub(super) fn extract(pdf: &[u8], actual_text: bool) -> Result<String, ReceiptError> {
    let mut warnings = Vec::new();
    let opts = PdfParseOptions {
        fail_on_error: false,
    };
    let doc = PdfDocument::parse(pdf, &opts, &mut warnings).map_err(ReceiptError::Unreadable)?;
    let mut out = String::new();
    for page in &doc.pages {
        // (baseline y, text) in content order, which is reading order here.
        let mut lines: Vec<(f32, String)> = Vec::new();
        let mut actual: Option<String> = None;
        // The text section being read: each drawn line is one BT..ET, its
        // first positioning op at the line's origin on the baseline.
        let mut section: Option<(Option<f32>, String)> = None;
        for op in &page.ops {
            match op {
                Op::BeginMarkedContentWithProperties { properties, .. } if actual_text => {
                    actual = actual_text_of(properties);
                }
                Op::EndMarkedContent | Op::EndMarkedContentWithProperties => actual = None,
                Op::StartTextSection => section = Some((None, String::new())),
                Op::SetTextCursor { pos } => {
                    if let Some((y, _)) = &mut section {
                        y.get_or_insert(pos.y.0);
                    }
                }
                Op::SetTextMatrix { matrix } => {
                    if let Some((y, _)) = &mut section {
                        y.get_or_insert(matrix.as_array()[5]);
                    }
                }
                Op::ShowText { items } => {
                    if let Some((_, text)) = &mut section {
                        text.push_str(&decode_items(items));
                    }
                }
                Op::EndTextSection => {
                    let Some((y, drawn)) = section.take() else {
                        continue;
                    };
                    let y = y.unwrap_or(0.0);
                    let text = actual.take().unwrap_or(drawn);
                    match lines.last_mut() {
                        Some((line_y, line)) if (*line_y - y).abs() < 2.0 => {
                            line.push(' ');
                            line.push_str(&text);
                        }
                        _ => lines.push((y, text)),
                    }
                }
                _ => {}
            }
        }
        for (_, line) in lines {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    Ok(out)
}

fn actual_text_of(properties: &DictItem) -> Option<String> {
    let DictItem::Dict { map } = properties else {
        return None;
    };
    let Some(DictItem::String { data, .. }) = map.get("ActualText") else {
        return None;
    };
    Some(match data.strip_prefix(&[0xFE, 0xFF]) {
        Some(utf16) => {
            let units: Vec<u16> = utf16
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        None => data.iter().map(|&b| char::from(b)).collect(),
    })
}

fn decode_items(items: &[TextItem]) -> String {
    let mut s = String::new();
    for item in items {
        match item {
            TextItem::Text(t) => s.push_str(t),
            TextItem::GlyphIds(glyphs) => {
                for g in glyphs {
                    s.push_str(g.cid.as_deref().unwrap_or("\u{FFFD}"));
                }
            }
            // Spaces are drawn as glyphs; offsets only position glyphs.
            TextItem::Offset(_) => {}
        }
    }
    s
}
