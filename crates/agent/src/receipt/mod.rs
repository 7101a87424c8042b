//! Provisional receipts as PDF.
//!
//! While a sale waits to be registered with JoFotara (backend offline, retry
//! pending) the customer still gets a receipt. It must show the totals the
//! backend will register, say plainly that it is provisional, and print the
//! Arabic names a Jordanian shop's customers and items usually have.
//!
//! printpdf 0.12 without its `text_layout` feature (which pulls in the whole
//! azul layout engine) neither shapes Arabic nor subsets fonts, so this module
//! does both, with maintained crates, in small steps:
//!
//! 1. [`text`]: the Unicode bidi algorithm (`unicode-bidi`) splits each line
//!    into directional runs in visual order; `harfrust` (the HarfBuzz port)
//!    shapes each run with the font's own GSUB and GPOS tables: Arabic
//!    joining forms, lam-alef ligatures, harakat stacked where the font puts
//!    them, kerning, mirrored brackets;
//! 2. [`layout`]: lines are wrapped and placed on A4 or on a till's paper
//!    roll;
//! 3. [`font`] and [`pdf`]: the embedded DejaVu Sans is cut down to the
//!    glyphs the receipt uses (`subsetter`), so a receipt carries a few kB of
//!    font instead of 760 kB, and printpdf writes the PDF.
//!
//! Every glyph maps back to base letters in the `/ToUnicode` CMap, and every
//! line whose drawn glyphs differ from its logical text is wrapped in an
//! `/ActualText` span (the standard way to give the text behind shaped
//! glyphs), so [`extract_text`] and readers that honour it (Acrobat) get the
//! text back in logical order. Characters the font lacks (CJK, emoji...) are
//! drawn as a visible box, listed on the receipt and returned as warnings:
//! nothing silently becomes '?'.

mod font;
mod layout;
mod pdf;
mod text;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rust_decimal::{Decimal, RoundingStrategy};

use crate::fsutil::AtomicFile;
use crate::tax;
use font::face;
use text::{is_format, sanitize};

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// What a provisional receipt shows. Amounts are computed here from the lines
/// with [`crate::tax::totals`], the backend's rule, never taken from the POS.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Receipt {
    pub shop_name: String,
    pub invoice_number: String,
    /// Already formatted, e.g. "2026-11-22".
    pub date: String,
    pub customer: String,
    /// "JOD".
    pub currency: String,
    pub lines: Vec<ReceiptLine>,
}

/// One line of a receipt: what was sold, how many, at what unit price.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct ReceiptLine {
    pub description: String,
    pub quantity: Decimal,
    pub unit_price: Decimal,
}

/// Why a receipt could not be rendered or written.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum ReceiptError {
    #[error(
        "receipt {invoice}: the sale has no lines, so there is nothing to print; \
         check the sale the POS exported"
    )]
    NoLines { invoice: String },
    #[error(
        "receipt {invoice}: the amounts are too large to total (arithmetic overflow); \
         check the quantities and unit prices of the sale"
    )]
    Overflow { invoice: String },
    #[error(
        "the receipt font built into pos-connector is unreadable ({0}); the program \
         file is damaged: reinstall pos-connector"
    )]
    Font(String),
    #[error(
        "could not produce the receipt PDF ({0}); this is a bug in pos-connector, please report it"
    )]
    Pdf(String),
    #[error(
        "could not write the receipt to {path}: {source}; check that the folder is \
         writable and the disk is not full"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a readable PDF ({0}); pass the bytes of a receipt this program wrote")]
    Unreadable(String),
}

/// The paper a receipt is laid out for (`receipts.paper`): plain data of
/// the config, laid out here.
pub use crate::config::Paper;

/// The PDF bytes of a provisional receipt.
pub fn render(r: &Receipt, paper: Paper) -> Result<Vec<u8>, ReceiptError> {
    render_with_warnings(r, paper).map(|(pdf, _)| pdf)
}

/// Like [`render`], plus human-readable warnings: today only "some characters
/// could not be printed", which the receipt itself also states.
pub(crate) fn render_with_warnings(
    r: &Receipt,
    paper: Paper,
) -> Result<(Vec<u8>, Vec<String>), ReceiptError> {
    if r.lines.is_empty() {
        return Err(ReceiptError::NoLines {
            invoice: r.invoice_number.clone(),
        });
    }
    let totals =
        tax::totals(r.lines.iter().map(|l| (l.quantity, l.unit_price))).ok_or_else(|| {
            ReceiptError::Overflow {
                invoice: r.invoice_number.clone(),
            }
        })?;
    let mut line_totals = Vec::with_capacity(r.lines.len());
    for l in &r.lines {
        line_totals.push(l.quantity.checked_mul(l.unit_price).ok_or_else(|| {
            ReceiptError::Overflow {
                invoice: r.invoice_number.clone(),
            }
        })?);
    }

    let face = face()?;
    let missing = missing_chars(face, r);
    let mut warnings = Vec::new();
    if !missing.is_empty() {
        warnings.push(format!(
            "receipt {}: {} {}; they are drawn as boxes and listed on the receipt",
            r.invoice_number,
            MISSING_NOTICE.to_lowercase(),
            code_point_list(&missing, usize::MAX)
        ));
    }

    let (pages, used) = layout::compose(face, r, paper, &missing, &line_totals, &totals);
    let pdf = pdf::serialize(face, r, pages, &used)?;
    Ok((pdf, warnings))
}

/// Renders and writes atomically to `path` (parent folders created); never
/// leaves a partial file under the final name. On Unix the file is readable
/// by the agent's user only (0600, [`AtomicFile`]'s default): it names the
/// customer.
#[cfg(test)]
pub(crate) fn write(r: &Receipt, paper: Paper, path: &Path) -> Result<(), ReceiptError> {
    write_with_warnings(r, paper, path).map(|_| ())
}

/// [`write()`], returning the warnings of [`render_with_warnings`].
pub(crate) fn write_with_warnings(
    r: &Receipt,
    paper: Paper,
    path: &Path,
) -> Result<Vec<String>, ReceiptError> {
    let (pdf, warnings) = render_with_warnings(r, paper)?;
    let failed = |source| ReceiptError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = AtomicFile::create(path).map_err(failed)?;
    file.write_all(&pdf).map_err(failed)?;
    file.commit().map_err(failed)?;
    Ok(warnings)
}

/// Pulls the text back out of a PDF this module wrote: Unicode text in reading
/// order (Arabic in logical order), one line of the receipt per line, cells
/// separated by a space. Good enough to find totals and names; not a general
/// PDF text extractor.
pub fn extract_text(pdf: &[u8]) -> Result<String, ReceiptError> {
    pdf::extract(pdf, true)
}

// ---------------------------------------------------------------------------
// Wording
// ---------------------------------------------------------------------------

/// Resource name of the font in the PDF. Not F1..F14, which printpdf reserves
/// for the 14 built-in fonts.
const FONT_RESOURCE: &str = "FR";

const NOTICE_EN: &str = "PROVISIONAL: not yet registered with JoFotara";
const NOTICE_AR: &str = "إيصال مؤقت: لم يسجل بعد في نظام الفوترة الوطني (JoFotara)";
const TITLE_EN: &str = "Provisional receipt";
const MISSING_NOTICE: &str = "Some characters could not be printed (font lacks them):";
const MISSING_NOTICE_AR: &str = "تعذرت طباعة بعض الأحرف لأن الخط لا يدعمها";

fn tax_label_en() -> String {
    format!(
        "Sales tax {}%",
        (tax::RATE * Decimal::ONE_HUNDRED).normalize()
    )
}

fn tax_label_ar() -> String {
    format!(
        "ضريبة المبيعات {}%",
        (tax::RATE * Decimal::ONE_HUNDRED).normalize()
    )
}

/// Money as printed: at least two decimals, a third when the amount has one
/// (JOD has fils: "1.250" stays "1.250"), more only up to `max_dp`, rounded
/// half away from zero like the backend. Zeros past the fils are noise
/// ("15.5000" prints "15.500").
fn money(d: Decimal, max_dp: u32) -> String {
    let dp = if d.scale() <= 3 {
        d.scale()
    } else {
        d.normalize().scale().max(3)
    };
    let dp = dp.clamp(2, max_dp.max(2));
    let mut out = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    out.rescale(dp);
    out.to_string()
}

fn quantity(d: Decimal) -> String {
    d.normalize().to_string()
}

fn code_point_list(chars: &BTreeSet<char>, max: usize) -> String {
    let mut out: Vec<String> = chars
        .iter()
        .take(max)
        .map(|c| format!("U+{:04X}", *c as u32))
        .collect();
    if chars.len() > max {
        out.push(format!("and {} more", chars.len() - max));
    }
    out.join(" ")
}

/// Every character of the receipt's own text that the font cannot draw.
fn missing_chars(face: &font::Face, r: &Receipt) -> BTreeSet<char> {
    let fields = [
        &r.shop_name,
        &r.invoice_number,
        &r.date,
        &r.customer,
        &r.currency,
    ];
    fields
        .into_iter()
        .chain(r.lines.iter().map(|l| &l.description))
        .flat_map(|s| sanitize(s).chars().collect::<Vec<_>>())
        .filter(|&c| !is_format(c) && !face.has(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn line(description: &str, quantity: &str, unit_price: &str) -> ReceiptLine {
        ReceiptLine {
            description: description.to_string(),
            quantity: d(quantity),
            unit_price: d(unit_price),
        }
    }

    fn receipt(shop: &str, customer: &str, lines: Vec<ReceiptLine>) -> Receipt {
        Receipt {
            shop_name: shop.to_string(),
            invoice_number: "INV-2026-000123".to_string(),
            date: "2026-11-22".to_string(),
            customer: customer.to_string(),
            currency: "JOD".to_string(),
            lines,
        }
    }

    fn latin() -> Receipt {
        receipt(
            "Al Noor Coffee Roasters",
            "John Smith",
            vec![
                line("Espresso beans 1kg", "2", "15.50"),
                line("Milk frother", "1", "30.00"),
                line("Paper cups (pack)", "3", "0.995"),
            ],
        )
    }

    fn arabic() -> Receipt {
        receipt(
            "شركة النور",
            "محمد",
            vec![
                line("قهوة Coffee 2", "2", "15.50"),
                line("حليب طازج (لتر)", "1", "30.00"),
                line("سلام", "1", "1"),
            ],
        )
    }

    const PAPERS: [Paper; 3] = [Paper::A4, Paper::Roll80, Paper::Roll58];

    /// Width and height of each page, in points.
    fn page_sizes(pdf: &[u8]) -> Vec<(f32, f32)> {
        let doc = load(pdf);
        doc.get_pages()
            .values()
            .map(|&id| {
                let page = doc.get_dictionary(id).unwrap();
                let b = page.get(b"MediaBox").unwrap().as_array().unwrap();
                let n = |i: usize| b[i].as_float().unwrap();
                (n(2) - n(0), n(3) - n(1))
            })
            .collect()
    }

    #[test]
    fn paper_names_parse_back() {
        for paper in PAPERS {
            assert_eq!(Paper::parse(paper.name()), Some(paper));
        }
        assert_eq!(Paper::default(), Paper::Roll80);
        assert_eq!(Paper::parse("letter"), None);
    }

    #[test]
    fn rolls_are_one_page_as_long_as_the_receipt() {
        for (paper, width_mm) in [(Paper::Roll80, 80.0), (Paper::Roll58, 58.0)] {
            let short = render(&latin(), paper).unwrap();
            let sizes = page_sizes(&short);
            assert_eq!(sizes.len(), 1, "{paper:?}");
            let (w, h) = sizes[0];
            assert!((w - width_mm * 72.0 / 25.4).abs() < 0.1, "{paper:?}: {w}");
            assert!((250.0..600.0).contains(&h), "{paper:?}: {h}");
            let text = extract_text(&short).unwrap();
            for needle in [
                "Espresso beans 1kg",
                "2 × 15.50 31.00",
                "Paper cups (pack)",
                "3 × 0.995 2.985",
                "Subtotal 63.99 JOD",
                "Sales tax 16% 10.24 JOD",
                "Total 74.22 JOD",
                "الإجمالي",
                "John Smith",
                "Page 1 of 1",
            ] {
                assert!(
                    text.contains(needle),
                    "{paper:?}: {needle:?} missing from:\n{text}"
                );
            }
            // Ten more lines make a longer page, not a second one.
            let mut r = latin();
            for i in 0..10 {
                r.lines.push(line(&format!("Item {i}"), "1", "1"));
            }
            let sizes = page_sizes(&render(&r, paper).unwrap());
            assert_eq!(sizes.len(), 1);
            assert!(
                sizes[0].1 > h + 10.0 * 20.0,
                "{paper:?}: {} vs {h}",
                sizes[0].1
            );
            // Two hundred lines still fit one page...
            let lines = (0..200)
                .map(|i| line(&format!("Item {i:03} house blend"), "1", "1.005"))
                .collect();
            let long = render(&receipt("Al Noor", "John Smith", lines), paper).unwrap();
            assert_eq!(page_sizes(&long).len(), 1, "{paper:?}");
            assert!(extract_text(&long).unwrap().contains("233.16 JOD"));
        }
        // ... and a receipt longer than a PDF page may be continues on the next.
        let lines = (0..700)
            .map(|i| line(&format!("Item {i:03}"), "1", "1"))
            .collect();
        let pdf = render(&receipt("Al Noor", "John Smith", lines), Paper::Roll80).unwrap();
        let sizes = page_sizes(&pdf);
        assert!(sizes.len() >= 2, "{sizes:?}");
        assert!(sizes.iter().all(|&(_, h)| h <= 14_400.0), "{sizes:?}");
        let text = extract_text(&pdf).unwrap();
        assert!(
            text.contains("Item 699") && text.contains("700.00 JOD"),
            "{text}"
        );
    }

    fn load(pdf: &[u8]) -> lopdf::Document {
        lopdf::Document::load_mem(pdf).expect("lopdf opens the receipt")
    }

    /// The text each drawn glyph stands for (its /ToUnicode entry), in drawing
    /// order, ignoring /ActualText: what is really on the page.
    fn drawn_text(pdf: &[u8]) -> String {
        pdf::extract(pdf, false).unwrap()
    }

    #[test]
    fn latin_receipt_renders_with_the_backend_totals() {
        let pdf = render(&latin(), Paper::A4).unwrap();
        assert_eq!(load(&pdf).get_pages().len(), 1);
        let text = extract_text(&pdf).unwrap();
        // By hand, as the backend does: 16% of each line, unrounded,
        // rounded once on the sums (half away from zero):
        //   2 x 15.50 = 31.00  tax 4.96
        //   1 x 30.00 = 30.00  tax 4.80
        //   3 x 0.995 =  2.985 tax 0.4776
        // subtotal 63.985 -> 63.99, tax 10.2376 -> 10.24,
        // total 63.985 + 10.2376 = 74.2226 -> 74.22 (not 74.23)
        for needle in [
            "INV-2026-000123",
            "John Smith",
            "Al Noor Coffee Roasters",
            "2026-11-22",
            "Espresso beans 1kg 2 15.50 31.00",
            "Milk frother 1 30.00 30.00",
            "Paper cups (pack) 3 0.995 2.985",
            "Subtotal",
            "63.99 JOD",
            "Sales tax 16%",
            "10.24 JOD",
            "74.22 JOD",
            "PROVISIONAL: not yet registered with JoFotara",
            "إيصال مؤقت: لم يسجل بعد في نظام الفوترة الوطني (JoFotara)",
            "Page 1 of 1",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let total_line = text.lines().find(|l| l.starts_with("Total")).unwrap();
        assert!(total_line.ends_with("74.22 JOD"), "{total_line}");
        assert!(!text.contains('?') && !text.contains('\u{FFFD}'), "{text}");
    }

    #[test]
    fn arabic_is_shaped_embedded_and_extracted_in_logical_order() {
        for paper in PAPERS {
            arabic_on(paper);
        }
    }

    fn arabic_on(paper: Paper) {
        let (pdf, warnings) = render_with_warnings(&arabic(), paper).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");

        // The font is embedded as a subset: FontFile2 present, small, tagged.
        let doc = load(&pdf);
        let descriptor = doc
            .objects
            .values()
            .filter_map(|o| o.as_dict().ok())
            .find(|d| d.has(b"FontFile2"))
            .expect("an embedded TrueType font");
        let name = descriptor.get(b"FontName").unwrap().as_name().unwrap();
        assert!(
            name.ends_with(b"+DejaVuSans"),
            "{}",
            String::from_utf8_lossy(name)
        );
        let file = descriptor
            .get(b"FontFile2")
            .unwrap()
            .as_reference()
            .unwrap();
        let program = doc.get_object(file).unwrap().as_stream().unwrap();
        assert!(
            program.content.len() < 30_000,
            "{} bytes",
            program.content.len()
        );

        // Logical order back through /ActualText.
        let text = extract_text(&pdf).unwrap();
        for needle in [
            "شركة النور",
            "محمد",
            "قهوة Coffee 2",
            "حليب طازج (لتر)",
            "سلام",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        // What is drawn: glyphs in visual order whose /ToUnicode gives the
        // base letters (so the glyphs are there, shaped, not '?').
        let drawn = drawn_text(&pdf);
        for needle in [
            "دمحم",
            "رونلا ةكرش",
            "Coffee 2 ةوهق",
            "(رتل) جزاط بيلح",
            "ملاس",
        ] {
            assert!(drawn.contains(needle), "{needle:?} not drawn:\n{drawn}");
        }
        for t in [&text, &drawn] {
            assert!(!t.contains('?') && !t.contains('\u{FFFD}'), "{t}");
        }
    }

    #[test]
    fn characters_the_font_lacks_are_boxed_listed_and_warned() {
        let r = receipt(
            "Al Noor",
            "王小明 Wang",
            vec![line("绿茶 Green tea", "1", "2.000")],
        );
        for paper in PAPERS {
            missing_on(&r, paper);
        }
    }

    fn missing_on(r: &Receipt, paper: Paper) {
        let (pdf, warnings) = render_with_warnings(r, paper).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("U+5C0F U+660E U+738B U+7EFF U+8336"),
            "{warnings:?}"
        );
        let text = extract_text(&pdf).unwrap();
        // On a roll the notice wraps: read it as one paragraph.
        assert!(
            text.replace('\n', " ").contains(
                "Some characters could not be printed (font lacks them): \
                 U+5C0F U+660E U+738B U+7EFF U+8336"
            ),
            "{paper:?}: {text}"
        );
        // The drawn glyphs are boxes (U+FFFD in /ToUnicode), never '?'; the
        // /ActualText still gives the real name to copy-paste.
        let drawn = drawn_text(&pdf);
        assert!(drawn.contains("\u{FFFD}\u{FFFD}\u{FFFD} Wang"), "{drawn}");
        assert!(
            text.contains("王小明 Wang") && text.contains("绿茶 Green tea"),
            "{text}"
        );
        assert!(!text.contains('?') && !drawn.contains('?'));
    }

    #[test]
    fn the_fixed_wording_is_covered_by_the_font() {
        let face = face().unwrap();
        let fixed = [
            NOTICE_EN.to_string(),
            NOTICE_AR.to_string(),
            MISSING_NOTICE.to_string(),
            MISSING_NOTICE_AR.to_string(),
            tax_label_ar(),
            "إيصال مؤقت رقم الفاتورة التاريخ العميل العملة الصنف الكمية سعر الوحدة المجموع \
             المجموع قبل الضريبة الإجمالي · … □"
                .to_string(),
        ];
        for text in fixed {
            let missing: Vec<char> = text.chars().filter(|&c| !face.has(c)).collect();
            assert!(missing.is_empty(), "{missing:?} in {text}");
            let shaped = text::shape_line(face, &text, text::is_rtl(&text));
            assert!(shaped
                .glyphs
                .iter()
                .all(|g| g.gid != face.placeholder || g.text == font::PLACEHOLDER.to_string()));
        }
    }

    #[test]
    fn write_is_atomic_deterministic_and_equals_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts/2026/INV-2026-000123.pdf");
        write(&arabic(), Paper::Roll80, &path).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written, render(&arabic(), Paper::Roll80).unwrap());
        for paper in PAPERS {
            assert_eq!(
                render(&arabic(), paper).unwrap(),
                render(&arabic(), paper).unwrap()
            );
        }
        // Rewriting replaces the file and leaves no temporary file behind.
        write(&latin(), Paper::A4, &path).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            render(&latin(), Paper::A4).unwrap()
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("INV-2026-000123.pdf")]);
    }

    #[test]
    fn write_reports_where_it_failed() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let path = blocker.join("r.pdf");
        let err = write(&latin(), Paper::default(), &path).unwrap_err();
        assert!(matches!(err, ReceiptError::Write { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn many_lines_flow_onto_several_pages() {
        let lines = (0..200)
            .map(|i| line(&format!("Item {i:03} house blend"), "1", "1.005"))
            .collect();
        let pdf = render(&receipt("Al Noor", "John Smith", lines), Paper::A4).unwrap();
        let pages = load(&pdf).get_pages().len();
        assert!(pages >= 3, "{pages} pages");
        let text = extract_text(&pdf).unwrap();
        // 200 x 1.005 = 201.000; each line's tax 0.1608, unrounded (the
        // backend's rule): 32.16, total 233.16 (per-line rounding would
        // have printed 32.00 and 233.00).
        for needle in [
            "Item 000 house blend 1 1.005 1.005".to_string(),
            "Item 199 house blend 1 1.005 1.005".to_string(),
            "201.00 JOD".to_string(),
            "32.16 JOD".to_string(),
            "233.16 JOD".to_string(),
            format!("Page {pages} of {pages}"),
            "Al Noor · INV-2026-000123 (continued)".to_string(),
        ] {
            assert!(text.contains(&needle), "{needle:?} missing");
        }
        // Every page repeats the table header.
        assert_eq!(text.matches("Description Qty").count(), pages);
    }

    #[test]
    fn money_keeps_fils_and_quantities_drop_zeros() {
        assert_eq!(money(d("15.5"), u32::MAX), "15.50");
        assert_eq!(money(d("30"), u32::MAX), "30.00");
        assert_eq!(money(d("1.250"), u32::MAX), "1.250");
        assert_eq!(money(d("15.5000"), u32::MAX), "15.500");
        assert_eq!(money(d("0.1234"), u32::MAX), "0.1234");
        assert_eq!(money(d("0.41625"), 3), "0.416");
        assert_eq!(money(d("0.4165"), 3), "0.417");
        assert_eq!(money(d("61"), 2), "61.00");
        assert_eq!(quantity(d("2.000")), "2");
        assert_eq!(quantity(d("0.250")), "0.25");
    }

    #[test]
    fn bad_sales_are_refused_with_a_reason() {
        let empty = receipt("Al Noor", "John", Vec::new());
        assert!(matches!(
            render(&empty, Paper::default()),
            Err(ReceiptError::NoLines { .. })
        ));
        let huge = receipt(
            "Al Noor",
            "John",
            vec![line("x", "79228162514264337593543950335", "2")],
        );
        let err = render(&huge, Paper::default()).unwrap_err();
        assert!(matches!(err, ReceiptError::Overflow { .. }), "{err}");
        assert!(err.to_string().contains("INV-2026-000123"));
        assert!(matches!(
            extract_text(b"not a pdf"),
            Err(ReceiptError::Unreadable(_))
        ));
    }

    #[test]
    fn odd_text_renders_without_panics_or_question_marks() {
        let odd = [
            "",
            "   ",
            "\u{064E}starts with a mark",
            "مُحَمَّد",
            "ل",
            "لـا ـــ",
            "ZWNJ می\u{200C}خواهم and ZWJ ع\u{200D}",
            "\u{200F}RLM first, then Latin",
            "\u{202B}embedded\u{202C} controls",
            "tab\there\nnewline\u{0}nul",
            "עברית Hebrew",
            "emoji 😀 and 🧾",
            "((nested [brackets])) قهوة {x} <y>",
            "١٢٣ ٤٥٦ / 12.50% $3",
        ];
        for text in odd {
            let r = receipt(text, text, vec![line(text, "1.5", "2.125")]);
            for paper in PAPERS {
                let pdf = render(&r, paper).unwrap_or_else(|e| panic!("{text:?}: {e}"));
                let got = extract_text(&pdf).unwrap();
                assert!(!got.contains('?'), "{text:?} gave {got}");
                assert!(!drawn_text(&pdf).contains('?'), "{text:?}");
            }
        }
    }

    #[test]
    fn receipt_dates_become_pdf_dates() {
        let t = pdf::receipt_date("2026-11-22");
        assert_eq!((t.year(), u8::from(t.month()), t.day()), (2026, 11, 22));
        assert_eq!(pdf::receipt_date("2024-02-29 13:00").day(), 29);
        assert_eq!(pdf::receipt_date("22/11/2026").year(), 1970);
    }
}
