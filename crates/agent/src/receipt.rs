//! Provisional receipts as PDF.
//!
//! While a sale waits to be registered with JoFotara (backend offline, retry
//! pending) the customer still gets a receipt. It must show the totals the
//! backend will register, say plainly that it is provisional, and print the
//! Arabic names a Jordanian shop's customers and items usually have.
//!
//! printpdf 0.12 without its `text_layout` feature (which pulls in the whole
//! azul layout engine) neither shapes Arabic nor subsets fonts, so this module
//! does both itself, in small steps:
//!
//! 1. a simplified Unicode bidi algorithm (UAX #9 rules W1-W7, N1-N2, I1-I2,
//!    L1, L2 and L4; no explicit embeddings or isolates, which POS data has no
//!    use for) gives every character a direction level;
//! 2. Arabic letters become their contextual presentation forms (Unicode
//!    Presentation Forms-B, plus Forms-A for the Persian letters), including
//!    the mandatory lam-alef ligatures;
//! 3. each line is reordered into visual (left-to-right drawing) order;
//! 4. the embedded DejaVu Sans is cut down to the glyphs the receipt uses, so
//!    a receipt carries a few kB of font instead of 760 kB.
//!
//! Every glyph maps back to base letters in the `/ToUnicode` CMap, and every
//! line whose drawn glyphs differ from its logical text is wrapped in an
//! `/ActualText` span (the standard way to give the text behind shaped
//! glyphs), so [`extract_text`] and readers that honour it (Acrobat) get the
//! text back in logical order. Characters the font lacks (CJK, emoji...) are
//! drawn as a visible box, listed on the receipt and returned as warnings:
//! nothing silently becomes '?'.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use printpdf::{
    Codepoint, Color, DictItem, FontId, FontType, Greyscale, Line, LinePoint, Mm, OffsetDateTime,
    Op, PaintMode, ParsedFont, PdfDocument, PdfFont, PdfFontHandle, PdfPage, PdfParseErrorSeverity,
    PdfParseOptions, PdfSaveOptions, Point, Pt, Rect, TextItem, TextRenderingMode,
};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::fsutil::AtomicFile;
use crate::tax;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// What a provisional receipt shows. Amounts are computed here from the lines
/// with [`crate::tax::totals`], the backend's rule, never taken from the POS.
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptLine {
    pub description: String,
    pub quantity: Decimal,
    pub unit_price: Decimal,
}

#[derive(Debug, thiserror::Error)]
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

/// The PDF bytes of a provisional receipt.
pub fn render(r: &Receipt) -> Result<Vec<u8>, ReceiptError> {
    render_with_warnings(r).map(|(pdf, _)| pdf)
}

/// Like [`render`], plus human-readable warnings: today only "some characters
/// could not be printed", which the receipt itself also states.
pub fn render_with_warnings(r: &Receipt) -> Result<(Vec<u8>, Vec<String>), ReceiptError> {
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

    let mut c = Composer::new(face, r);
    c.first_page_header(&missing);
    c.table(&line_totals);
    c.totals(&totals);
    let (pages, used) = c.finish();
    let pdf = serialize(face, r, pages, &used)?;
    Ok((pdf, warnings))
}

/// Renders and writes atomically to `path` (parent folders created); never
/// leaves a partial file under the final name. On Unix the file is readable
/// by the agent's user only (0600, [`AtomicFile`]'s default): it names the
/// customer.
pub fn write(r: &Receipt, path: &Path) -> Result<(), ReceiptError> {
    write_with_warnings(r, path).map(|_| ())
}

/// [`write()`], returning the warnings of [`render_with_warnings`].
pub fn write_with_warnings(r: &Receipt, path: &Path) -> Result<Vec<String>, ReceiptError> {
    let (pdf, warnings) = render_with_warnings(r)?;
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
    extract(pdf, true)
}

// ---------------------------------------------------------------------------
// Wording
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// The embedded font
// ---------------------------------------------------------------------------

/// DejaVu Sans 2.37 (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
/// Chosen over DejaVu Sans Mono (half the size) because monospaced Arabic is
/// cramped and hard to read, and Mono lacks Hebrew and most symbol blocks.
const FONT_TTF: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FONT_PS_NAME: &str = "DejaVuSans";
/// Resource name of the font in the PDF. Not F1..F14, which printpdf reserves
/// for the 14 built-in fonts.
const FONT_RESOURCE: &str = "FR";
/// Drawn for characters the font lacks: a box reads as "missing glyph" to
/// everyone, unlike '?' which reads as text.
const PLACEHOLDER: char = '\u{25A1}';

struct Face {
    font: ParsedFont,
    sfnt: Sfnt,
    placeholder: u16,
}

fn face() -> Result<&'static Face, ReceiptError> {
    static FACE: OnceLock<Result<Face, String>> = OnceLock::new();
    FACE.get_or_init(|| {
        let mut warnings = Vec::new();
        let font = ParsedFont::from_bytes(FONT_TTF, 0, &mut warnings)
            .ok_or_else(|| format!("parse failed: {warnings:?}"))?;
        let sfnt = Sfnt::parse(FONT_TTF)?;
        let placeholder = font
            .lookup_glyph_index(PLACEHOLDER as u32)
            .unwrap_or_default();
        Ok(Face {
            font,
            sfnt,
            placeholder,
        })
    })
    .as_ref()
    .map_err(|e| ReceiptError::Font(e.clone()))
}

impl Face {
    fn gid(&self, c: char) -> Option<u16> {
        self.font.lookup_glyph_index(c as u32).filter(|&g| g != 0)
    }

    fn has(&self, c: char) -> bool {
        self.gid(c).is_some()
    }

    fn advance(&self, gid: u16) -> u16 {
        self.font.get_glyph_width(gid).unwrap_or(0)
    }

    fn points(&self, units: u32, size: f32) -> f32 {
        units as f32 * size / f32::from(self.font.units_per_em)
    }

    /// Horizontal extent of a glyph's outline, `None` if it has none.
    fn x_bounds(&self, gid: u16) -> Option<(i16, i16)> {
        let glyph = self.sfnt.glyph(self.sfnt.table(FONT_TTF, b"glyf")?, gid);
        Some((be16(glyph, 2)? as i16, be16(glyph, 6)? as i16))
    }
}

/// Every character of the receipt's own text that the font cannot draw.
fn missing_chars(face: &Face, r: &Receipt) -> BTreeSet<char> {
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

// ---------------------------------------------------------------------------
// Text: sanitising, bidi, Arabic shaping
// ---------------------------------------------------------------------------

/// Longest text taken from one field: more than three lines of any column
/// can show, and it bounds the work a pathological description can cause.
const MAX_FIELD_CHARS: usize = 600;

/// Control characters become spaces, runs of white space one space, explicit
/// bidi embeddings (which this module does not implement) are dropped.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_FIELD_CHARS * 4));
    let mut space = false;
    for c in s.chars().take(MAX_FIELD_CHARS) {
        if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// Invisible formatting characters: they steer joining and direction but
/// have no glyph, so they are never drawn and never "missing".
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

/// Bidi character classes (UAX #9), the subset that occurs without explicit
/// embeddings. Named as in the standard, so the rules read like it.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bc {
    L,
    R,
    AL,
    EN,
    AN,
    ES,
    ET,
    CS,
    NSM,
    WS,
    ON,
}

fn bidi_class(c: char) -> Bc {
    use Bc::*;
    match c as u32 {
        0x30..=0x39 | 0xB2 | 0xB3 | 0xB9 | 0x6F0..=0x6F9 | 0x2070..=0x2079 | 0xFF10..=0xFF19 => EN,
        0x600..=0x605 | 0x660..=0x669 | 0x66B | 0x66C | 0x6DD => AN,
        0x2B | 0x2D | 0x207A | 0x207B | 0x2212 | 0xFE62 | 0xFE63 | 0xFF0B | 0xFF0D => ES,
        0x23..=0x25 | 0xA2..=0xA5 | 0xB0 | 0xB1 | 0x66A | 0x2030..=0x2034 | 0x20A0..=0x20CF => ET,
        0x2C | 0x2E | 0x2F | 0x3A | 0xA0 | 0x60C | 0x202F | 0x2044 | 0xFF0C | 0xFF0E | 0xFF1A => CS,
        0x20 | 0x2000..=0x200A | 0x2028 | 0x205F | 0x3000 => WS,
        0x200E => L,
        0x200F => R,
        0x300..=0x36F
        | 0x483..=0x489
        | 0x591..=0x5BD
        | 0x5BF
        | 0x5C1
        | 0x5C2
        | 0x5C4
        | 0x5C5
        | 0x5C7
        | 0x610..=0x61A
        | 0x64B..=0x65F
        | 0x670
        | 0x6D6..=0x6DC
        | 0x6DF..=0x6E4
        | 0x6E7
        | 0x6E8
        | 0x6EA..=0x6ED
        | 0x20D0..=0x20FF
        | 0xFE00..=0xFE0F
        | 0xFE20..=0xFE2F => NSM,
        // Formatting characters take the class of what precedes them (X9
        // removes them; inheriting is the same for our purposes).
        0xAD | 0x61C | 0x180E | 0x200B..=0x200D | 0x2060..=0x2064 | 0xFEFF => NSM,
        0x5BE | 0x5C0 | 0x5C3 | 0x5C6 | 0x5D0..=0x5FF | 0x7C0..=0x85F | 0xFB1D..=0xFB4F => R,
        0x608
        | 0x60B
        | 0x60D
        | 0x61B..=0x64A
        | 0x66D..=0x66F
        | 0x671..=0x6D5
        | 0x6E5
        | 0x6E6
        | 0x6EE
        | 0x6EF
        | 0x6FA..=0x7BF
        | 0x860..=0x8FF
        | 0xFB50..=0xFDFF
        | 0xFE70..=0xFEFE => AL,
        _ if c.is_alphanumeric() => L,
        _ => ON,
    }
}

/// Paragraph direction (UAX #9 P2/P3): the first strong character decides.
fn is_rtl(text: &str) -> bool {
    text.chars()
        .map(bidi_class)
        .find(|b| matches!(b, Bc::L | Bc::R | Bc::AL))
        .is_some_and(|b| b != Bc::L)
}

/// Embedding level of each character of one line.
fn bidi_levels(chars: &[char], rtl: bool) -> Vec<u8> {
    use Bc::*;
    let n = chars.len();
    let sos = if rtl { R } else { L };
    let orig: Vec<Bc> = chars.iter().map(|&c| bidi_class(c)).collect();
    let mut t = orig.clone();

    // W1: marks take the class of what they sit on.
    let mut prev = sos;
    for x in &mut t {
        if *x == NSM {
            *x = prev;
        } else {
            prev = *x;
        }
    }
    // W2: digits after Arabic letters are Arabic numbers. W3: AL is R.
    let mut strong = sos;
    for x in &mut t {
        match *x {
            L | R | AL => strong = *x,
            EN if strong == AL => *x = AN,
            _ => {}
        }
    }
    for x in &mut t {
        if *x == AL {
            *x = R;
        }
    }
    // W4: "1,000.50" and "1-2" stay one number.
    for i in 1..n.saturating_sub(1) {
        match (t[i - 1], t[i], t[i + 1]) {
            (EN, ES | CS, EN) => t[i] = EN,
            (AN, CS, AN) => t[i] = AN,
            _ => {}
        }
    }
    // W5: "%", "$" next to a European number belong to it.
    let mut i = 0;
    while i < n {
        if t[i] != ET {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && t[i] == ET {
            i += 1;
        }
        if (start > 0 && t[start - 1] == EN) || (i < n && t[i] == EN) {
            t[start..i].fill(EN);
        }
    }
    // W6: leftover separators are neutral. W7: numbers in Latin text are Latin.
    for x in &mut t {
        if matches!(*x, ES | ET | CS) {
            *x = ON;
        }
    }
    let mut strong = sos;
    for x in &mut t {
        match *x {
            L | R => strong = *x,
            EN if strong == L => *x = L,
            _ => {}
        }
    }
    // N1/N2: neutrals between two runs of one direction take it, others the
    // paragraph's. Numbers count as right-to-left here.
    let dir = |b: Bc| match b {
        L => Some(L),
        R | EN | AN => Some(R),
        _ => None,
    };
    let mut i = 0;
    while i < n {
        if dir(t[i]).is_some() {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && dir(t[i]).is_none() {
            i += 1;
        }
        let before = if start == 0 {
            Some(sos)
        } else {
            dir(t[start - 1])
        };
        let after = if i == n { Some(sos) } else { dir(t[i]) };
        let resolved = if before == after {
            before.unwrap_or(sos)
        } else {
            sos
        };
        t[start..i].fill(resolved);
    }
    // I1/I2.
    let base = u8::from(rtl);
    let mut levels: Vec<u8> = t
        .iter()
        .map(|&x| match (rtl, x) {
            (false, R) => 1,
            (false, EN | AN) => 2,
            (false, _) => 0,
            (true, L | EN | AN) => 2,
            (true, _) => 1,
        })
        .collect();
    // L1: trailing white space goes back to the paragraph level.
    for k in (0..n).rev() {
        if orig[k] == WS || is_format(chars[k]) {
            levels[k] = base;
        } else {
            break;
        }
    }
    levels
}

/// L4: brackets in right-to-left runs are drawn mirrored.
fn mirror(c: char) -> char {
    match c {
        '(' => ')',
        ')' => '(',
        '[' => ']',
        ']' => '[',
        '{' => '}',
        '}' => '{',
        '<' => '>',
        '>' => '<',
        '«' => '»',
        '»' => '«',
        '‹' => '›',
        '›' => '‹',
        _ => c,
    }
}

/// Contextual forms of the Arabic letters: (letter, isolated, final, initial,
/// medial), 0 where the form does not exist (letters that never join to the
/// next one). Presentation Forms-B, plus Forms-A for Persian letters and the
/// joining forms of alef maksura.
const ARABIC_FORMS: &[(u16, u16, u16, u16, u16)] = &[
    (0x0621, 0xFE80, 0, 0, 0),
    (0x0622, 0xFE81, 0xFE82, 0, 0),
    (0x0623, 0xFE83, 0xFE84, 0, 0),
    (0x0624, 0xFE85, 0xFE86, 0, 0),
    (0x0625, 0xFE87, 0xFE88, 0, 0),
    (0x0626, 0xFE89, 0xFE8A, 0xFE8B, 0xFE8C),
    (0x0627, 0xFE8D, 0xFE8E, 0, 0),
    (0x0628, 0xFE8F, 0xFE90, 0xFE91, 0xFE92),
    (0x0629, 0xFE93, 0xFE94, 0, 0),
    (0x062A, 0xFE95, 0xFE96, 0xFE97, 0xFE98),
    (0x062B, 0xFE99, 0xFE9A, 0xFE9B, 0xFE9C),
    (0x062C, 0xFE9D, 0xFE9E, 0xFE9F, 0xFEA0),
    (0x062D, 0xFEA1, 0xFEA2, 0xFEA3, 0xFEA4),
    (0x062E, 0xFEA5, 0xFEA6, 0xFEA7, 0xFEA8),
    (0x062F, 0xFEA9, 0xFEAA, 0, 0),
    (0x0630, 0xFEAB, 0xFEAC, 0, 0),
    (0x0631, 0xFEAD, 0xFEAE, 0, 0),
    (0x0632, 0xFEAF, 0xFEB0, 0, 0),
    (0x0633, 0xFEB1, 0xFEB2, 0xFEB3, 0xFEB4),
    (0x0634, 0xFEB5, 0xFEB6, 0xFEB7, 0xFEB8),
    (0x0635, 0xFEB9, 0xFEBA, 0xFEBB, 0xFEBC),
    (0x0636, 0xFEBD, 0xFEBE, 0xFEBF, 0xFEC0),
    (0x0637, 0xFEC1, 0xFEC2, 0xFEC3, 0xFEC4),
    (0x0638, 0xFEC5, 0xFEC6, 0xFEC7, 0xFEC8),
    (0x0639, 0xFEC9, 0xFECA, 0xFECB, 0xFECC),
    (0x063A, 0xFECD, 0xFECE, 0xFECF, 0xFED0),
    (0x0641, 0xFED1, 0xFED2, 0xFED3, 0xFED4),
    (0x0642, 0xFED5, 0xFED6, 0xFED7, 0xFED8),
    (0x0643, 0xFED9, 0xFEDA, 0xFEDB, 0xFEDC),
    (0x0644, 0xFEDD, 0xFEDE, 0xFEDF, 0xFEE0),
    (0x0645, 0xFEE1, 0xFEE2, 0xFEE3, 0xFEE4),
    (0x0646, 0xFEE5, 0xFEE6, 0xFEE7, 0xFEE8),
    (0x0647, 0xFEE9, 0xFEEA, 0xFEEB, 0xFEEC),
    (0x0648, 0xFEED, 0xFEEE, 0, 0),
    (0x0649, 0xFEEF, 0xFEF0, 0xFBE8, 0xFBE9),
    (0x064A, 0xFEF1, 0xFEF2, 0xFEF3, 0xFEF4),
    (0x067E, 0xFB56, 0xFB57, 0xFB58, 0xFB59),
    (0x0686, 0xFB7A, 0xFB7B, 0xFB7C, 0xFB7D),
    (0x0698, 0xFB8A, 0xFB8B, 0, 0),
    (0x06A9, 0xFB8E, 0xFB8F, 0xFB90, 0xFB91),
    (0x06AF, 0xFB92, 0xFB93, 0xFB94, 0xFB95),
    (0x06CC, 0xFBFC, 0xFBFD, 0xFBFE, 0xFBFF),
];

/// Lam followed by an alef is always written as one ligature: (alef,
/// isolated ligature, final ligature).
const LAM_ALEF: &[(u16, u16, u16)] = &[
    (0x0622, 0xFEF5, 0xFEF6),
    (0x0623, 0xFEF7, 0xFEF8),
    (0x0625, 0xFEF9, 0xFEFA),
    (0x0627, 0xFEFB, 0xFEFC),
];
const LAM: char = '\u{0644}';

fn ch(u: u16) -> Option<char> {
    (u != 0).then(|| char::from_u32(u32::from(u))).flatten()
}

fn arabic_forms(c: char) -> Option<[Option<char>; 4]> {
    let u = u16::try_from(c as u32).ok()?;
    ARABIC_FORMS
        .binary_search_by_key(&u, |f| f.0)
        .ok()
        .map(|i| {
            let f = ARABIC_FORMS[i];
            [ch(f.1), ch(f.2), ch(f.3), ch(f.4)]
        })
}

/// The logical text a drawn presentation form stands for (what `/ToUnicode`
/// maps it to), if `c` is one.
fn presentation_base(c: char) -> Option<String> {
    let u = u16::try_from(c as u32).ok()?;
    if !(0xFB50..=0xFEFC).contains(&u) {
        return None;
    }
    if let Some(&(alef, ..)) = LAM_ALEF.iter().find(|l| l.1 == u || l.2 == u) {
        return Some([LAM, ch(alef)?].iter().collect());
    }
    ARABIC_FORMS
        .iter()
        .find(|f| [f.1, f.2, f.3, f.4].contains(&u))
        .and_then(|f| ch(f.0))
        .map(String::from)
}

/// Arabic joining types (Unicode ArabicShaping.txt), reduced to what the
/// shaper distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jt {
    /// Does not join (Latin, digits, hamza, letters without known forms).
    U,
    /// Joins only to the letter before it (alef, dal, reh, waw...).
    R,
    /// Joins on both sides.
    D,
    /// Tatweel and ZWJ: join both neighbours but have no forms themselves.
    C,
    /// Marks (harakat): invisible to joining.
    T,
}

fn joining_type(c: char) -> Jt {
    match c {
        '\u{0640}' | '\u{200D}' => Jt::C,
        _ if is_format(c) => Jt::U,
        _ if bidi_class(c) == Bc::NSM => Jt::T,
        _ => match arabic_forms(c) {
            Some([_, _, Some(_), _]) => Jt::D,
            Some([_, Some(_), _, _]) => Jt::R,
            _ => Jt::U,
        },
    }
}

/// One drawable unit after shaping: a character or a lam-alef ligature.
#[derive(Debug, Clone)]
struct Unit {
    display: char,
    level: u8,
    mark: bool,
    /// Drawn differently from how it is written (shaped or mirrored).
    changed: bool,
}

/// Replaces Arabic letters by the form their neighbours call for. Letters
/// whose form the font lacks keep their base glyph, which is still legible.
fn shape_arabic(chars: &[char], levels: &[u8], has: impl Fn(char) -> bool) -> Vec<Unit> {
    let jt: Vec<Jt> = chars.iter().map(|&c| joining_type(c)).collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let unit = |display: char| Unit {
            display,
            level: levels[i],
            mark: jt[i] == Jt::T,
            changed: display != c,
        };
        let Some(forms) = arabic_forms(c) else {
            out.push(unit(c));
            i += 1;
            continue;
        };
        let prev = (0..i).rev().find(|&k| jt[k] != Jt::T);
        let next = (i + 1..chars.len()).find(|&k| jt[k] != Jt::T);
        let joins_prev =
            matches!(jt[i], Jt::D | Jt::R) && prev.is_some_and(|k| matches!(jt[k], Jt::D | Jt::C));
        if c == LAM {
            let alef = chars.get(i + 1).and_then(|&a| {
                u16::try_from(a as u32)
                    .ok()
                    .and_then(|a| LAM_ALEF.iter().find(|l| l.0 == a))
            });
            if let Some(&(_, iso, fin)) = alef {
                let lig = ch(if joins_prev { fin } else { iso });
                if let Some(lig) = lig.filter(|&l| has(l)) {
                    out.push(unit(lig));
                    i += 2;
                    continue;
                }
            }
        }
        let joins_next =
            jt[i] == Jt::D && next.is_some_and(|k| matches!(jt[k], Jt::D | Jt::R | Jt::C));
        let form = match (joins_prev, joins_next) {
            (false, false) => forms[0],
            (true, false) => forms[1],
            (false, true) => forms[2],
            (true, true) => forms[3],
        };
        out.push(unit(form.filter(|&f| has(f)).unwrap_or(c)));
        i += 1;
    }
    out
}

/// L2: reverses runs from the highest level down, keeping each mark after
/// the letter it belongs to (it is drawn over the glyph just before it).
fn visual_order(units: Vec<Unit>) -> Vec<Unit> {
    let mut clusters: Vec<Vec<Unit>> = Vec::with_capacity(units.len());
    for u in units {
        match clusters.last_mut() {
            Some(last) if u.mark => last.push(u),
            _ => clusters.push(vec![u]),
        }
    }
    let level = |c: &Vec<Unit>| c[0].level;
    let max = clusters.iter().map(level).max().unwrap_or(0);
    for lvl in (1..=max).rev() {
        let mut i = 0;
        while i < clusters.len() {
            if level(&clusters[i]) < lvl {
                i += 1;
                continue;
            }
            let start = i;
            while i < clusters.len() && level(&clusters[i]) >= lvl {
                i += 1;
            }
            clusters[start..i].reverse();
        }
    }
    clusters.into_iter().flatten().collect()
}

/// A line of text ready to draw: glyphs in visual order, as (glyph, the
/// character it shows, pen shift in font units before drawing it). Only marks
/// are shifted, and the pen moves back after them.
#[derive(Debug, Clone, Default)]
struct TextLine {
    glyphs: Vec<(u16, char, i32)>,
    /// Sum of advances, in font units.
    advance: u32,
    /// The text as written (logical order).
    logical: String,
    /// Whether the glyphs, read left to right, differ from `logical`: then
    /// the line carries `/ActualText` so extraction gets `logical`.
    reordered: bool,
}

/// Shapes one line that already fits; `rtl` is its paragraph's direction.
fn shape_line(face: &Face, text: &str, rtl: bool) -> TextLine {
    let chars: Vec<char> = text.chars().collect();
    let levels = bidi_levels(&chars, rtl);
    let mut units = shape_arabic(&chars, &levels, |c| face.has(c));
    for u in &mut units {
        if u.level % 2 == 1 {
            let m = mirror(u.display);
            u.changed |= m != u.display;
            u.display = m;
        }
    }
    let mut reordered = units.iter().any(|u| u.changed || u.level % 2 == 1);
    let mut line = TextLine {
        logical: text.to_string(),
        ..TextLine::default()
    };
    // Without GPOS a mark does not know where its letter is: DejaVu draws
    // Arabic harakat right of the pen, Latin accents left of it. So each mark
    // follows its base and is shifted to centre its ink over the base.
    let mut base_advance: Option<i32> = None;
    for u in visual_order(units) {
        if is_format(u.display) {
            continue;
        }
        let gid = match face.gid(u.display) {
            Some(g) => g,
            None => {
                reordered = true;
                face.placeholder
            }
        };
        let advance = face.advance(gid);
        let mut shift = 0;
        if u.mark {
            if let (Some(base), Some((x_min, x_max))) = (base_advance, face.x_bounds(gid)) {
                shift = -base / 2 - (i32::from(x_min) + i32::from(x_max)) / 2;
            }
        } else {
            base_advance = Some(i32::from(advance));
        }
        line.advance += u32::from(advance);
        line.glyphs.push((gid, u.display, shift));
    }
    line.reordered = reordered;
    line
}

/// What a glyph's `/ToUnicode` entry says: base letters for presentation
/// forms (so search and copy-paste see normal Arabic), U+FFFD for the
/// missing-glyph box (a literal U+25A1 in the text shares that glyph and so
/// that entry). Must depend on the glyph only, as the CMap holds one entry
/// per glyph: that is also why mirrored brackets map to what they show.
fn unicode_of(face: &Face, gid: u16, display: char) -> String {
    if gid == face.placeholder {
        return "\u{FFFD}".to_string();
    }
    presentation_base(display).unwrap_or_else(|| display.to_string())
}

/// Breaks `text` into lines of at most `max_width` points (at most
/// `max_lines`; the last one ends in "..." when text is cut) and shapes them.
fn wrap(face: &Face, text: &str, size: f32, max_width: f32, max_lines: usize) -> Vec<TextLine> {
    let text = sanitize(text);
    let rtl = is_rtl(&text);
    let width = |s: &str| face.points(shape_line(face, s, rtl).advance, size);
    let space = width(" ");
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut cur_w = 0.0;
    // Joining never crosses a space, so a word measures the same alone as in
    // its line: each word is shaped once.
    for word in text.split(' ') {
        let w = width(word);
        if cur.is_empty() && w <= max_width {
            cur = word.to_string();
            cur_w = w;
        } else if !cur.is_empty() && cur_w + space + w <= max_width {
            cur.push(' ');
            cur.push_str(word);
            cur_w += space + w;
        } else {
            if !cur.is_empty() {
                lines.push(std::mem::take(&mut cur));
            }
            // A word wider than the column is broken where it has to be:
            // the longest prefix that fits, found by bisection.
            let mut rest: Vec<char> = word.chars().collect();
            let fits = |part: &[char]| width(&part.iter().collect::<String>()) <= max_width;
            while rest.len() > 1 && !fits(&rest) {
                let (mut lo, mut hi) = (1, rest.len() - 1);
                while lo < hi {
                    let mid = (lo + hi).div_ceil(2);
                    if fits(&rest[..mid]) {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                lines.push(rest.drain(..lo).collect());
            }
            cur = rest.iter().collect();
            cur_w = width(&cur);
        }
        if lines.len() > max_lines {
            break;
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        let last = lines.last_mut().expect("max_lines > 0");
        let mut chars: Vec<char> = last.trim_end().chars().collect();
        loop {
            let candidate: String = chars.iter().chain(['…'].iter()).collect();
            if chars.is_empty() || width(&candidate) <= max_width {
                *last = candidate;
                break;
            }
            chars.pop();
            while chars.last() == Some(&' ') {
                chars.pop();
            }
        }
    }
    lines.iter().map(|l| shape_line(face, l, rtl)).collect()
}

// ---------------------------------------------------------------------------
// Page layout
// ---------------------------------------------------------------------------

/// A4 portrait, in points.
const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN_X: f32 = 42.0;
const MARGIN_TOP: f32 = 46.0;
/// Bottom of the text area; the footer sits below it.
const BODY_BOTTOM: f32 = 62.0;
const CONTENT_W: f32 = PAGE_W - 2.0 * MARGIN_X;
const RIGHT: f32 = PAGE_W - MARGIN_X;

// Table columns (x of left edge or right edge for numbers).
const DESC_W: f32 = 262.0;
const QTY_RIGHT: f32 = MARGIN_X + 330.0;
const PRICE_RIGHT: f32 = MARGIN_X + 420.0;
const TOTAL_RIGHT: f32 = RIGHT;
const NUM_COL_W: f32 = 82.0;

const BODY: f32 = 9.5;
const SMALL: f32 = 8.0;
const GREY: f32 = 0.35;

#[derive(Debug, Clone, Copy)]
struct Style {
    size: f32,
    bold: bool,
    /// 0 = black.
    grey: f32,
}

const fn style(size: f32, bold: bool, grey: f32) -> Style {
    Style { size, bold, grey }
}

#[derive(Debug, Clone, Copy)]
enum Align {
    Left(f32),
    Right(f32),
    Center,
}

struct Composer<'a> {
    face: &'a Face,
    r: &'a Receipt,
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    /// Top of the free space on the current page (PDF y, grows upwards).
    y: f32,
    /// Glyphs drawn so far, with the character each one shows.
    used: BTreeMap<u16, char>,
}

impl<'a> Composer<'a> {
    fn new(face: &'a Face, r: &'a Receipt) -> Self {
        Composer {
            face,
            r,
            pages: Vec::new(),
            ops: Vec::new(),
            y: PAGE_H - MARGIN_TOP,
            used: BTreeMap::new(),
        }
    }

    fn wrap(&self, text: &str, st: Style, max_width: f32, max_lines: usize) -> Vec<TextLine> {
        wrap(self.face, text, st.size, max_width, max_lines)
    }

    fn width(&self, line: &TextLine, st: Style) -> f32 {
        self.face.points(line.advance, st.size)
    }

    /// Draws one line with its baseline at `y`.
    fn put(&mut self, line: &TextLine, align: Align, y: f32, st: Style) {
        if line.glyphs.is_empty() {
            return;
        }
        let w = self.width(line, st);
        let x = match align {
            Align::Left(x) => x,
            Align::Right(x) => x - w,
            Align::Center => (PAGE_W - w) / 2.0,
        };
        self.used
            .extend(line.glyphs.iter().map(|&(gid, c, _)| (gid, c)));
        if line.reordered {
            let mut map = BTreeMap::new();
            map.insert(
                "ActualText".to_string(),
                DictItem::String {
                    data: utf16be(&line.logical),
                    literal: false,
                },
            );
            self.ops.push(Op::BeginMarkedContentWithProperties {
                tag: "Span".to_string(),
                properties: DictItem::Dict { map },
            });
        }
        // Bold is the regular face filled and stroked: one embedded font
        // instead of two, and the difference is plain on paper.
        self.ops.push(Op::SaveGraphicsState);
        if st.grey > 0.0 {
            self.ops.push(Op::SetFillColor {
                col: Color::Greyscale(Greyscale::new(st.grey, None)),
            });
        }
        if st.bold {
            self.ops.push(Op::SetOutlineThickness {
                pt: Pt(st.size * 0.035),
            });
            self.ops.push(Op::SetOutlineColor {
                col: Color::Greyscale(Greyscale::new(st.grey, None)),
            });
        }
        self.ops.push(Op::StartTextSection);
        self.ops.push(Op::SetFont {
            font: PdfFontHandle::External(FontId(FONT_RESOURCE.to_string())),
            size: Pt(st.size),
        });
        if st.bold {
            self.ops.push(Op::SetTextRenderingMode {
                mode: TextRenderingMode::FillStroke,
            });
        }
        // One BT/Td per line (not Tm): printpdf then writes each line as its
        // own TJ instead of merging lines that share a baseline.
        self.ops.push(Op::SetTextCursor {
            pos: Point { x: Pt(x), y: Pt(y) },
        });
        // TJ numbers are thousandths of an em, positive to the left.
        let em = 1000.0 / f32::from(self.face.font.units_per_em);
        let mut items = Vec::new();
        let mut run = Vec::new();
        for &(gid, display, shift) in &line.glyphs {
            let glyph = Codepoint {
                gid,
                offset: 0.0,
                cid: Some(unicode_of(self.face, gid, display)),
            };
            if shift == 0 {
                run.push(glyph);
                continue;
            }
            if !run.is_empty() {
                items.push(TextItem::GlyphIds(std::mem::take(&mut run)));
            }
            items.push(TextItem::Offset(-(shift as f32) * em));
            items.push(TextItem::GlyphIds(vec![glyph]));
            items.push(TextItem::Offset(shift as f32 * em));
        }
        if !run.is_empty() {
            items.push(TextItem::GlyphIds(run));
        }
        self.ops.push(Op::ShowText { items });
        self.ops.push(Op::EndTextSection);
        self.ops.push(Op::RestoreGraphicsState);
        if line.reordered {
            self.ops.push(Op::EndMarkedContentWithProperties);
        }
    }

    fn put_text(&mut self, text: &str, align: Align, y: f32, st: Style) {
        let line = self
            .wrap(text, st, CONTENT_W, 1)
            .into_iter()
            .next()
            .unwrap_or_default();
        self.put(&line, align, y, st);
    }

    /// A number in a column `col_w` wide ending at `right`; shrunk rather
    /// than cut if it is too wide, since a cut amount would be wrong.
    fn put_number(&mut self, text: &str, right: f32, y: f32, st: Style, col_w: f32) {
        let line = shape_line(self.face, &sanitize(text), false);
        let w = self.width(&line, st);
        let st = if w > col_w {
            Style {
                size: st.size * col_w / w,
                ..st
            }
        } else {
            st
        };
        self.put(&line, Align::Right(right), y, st);
    }

    fn rule(&mut self, x1: f32, x2: f32, y: f32, width: f32, grey: f32) {
        self.ops.push(Op::SaveGraphicsState);
        self.ops.push(Op::SetOutlineColor {
            col: Color::Greyscale(Greyscale::new(grey, None)),
        });
        self.ops.push(Op::SetOutlineThickness { pt: Pt(width) });
        self.ops.push(Op::DrawLine {
            line: Line {
                points: vec![
                    LinePoint {
                        p: Point {
                            x: Pt(x1),
                            y: Pt(y),
                        },
                        bezier: false,
                    },
                    LinePoint {
                        p: Point {
                            x: Pt(x2),
                            y: Pt(y),
                        },
                        bezier: false,
                    },
                ],
                is_closed: false,
            },
        });
        self.ops.push(Op::RestoreGraphicsState);
    }

    fn boxed(&mut self, top: f32, height: f32, fill: f32, border: f32) {
        self.ops.push(Op::SaveGraphicsState);
        self.ops.push(Op::SetFillColor {
            col: Color::Greyscale(Greyscale::new(fill, None)),
        });
        self.ops.push(Op::SetOutlineColor {
            col: Color::Greyscale(Greyscale::new(0.0, None)),
        });
        self.ops.push(Op::SetOutlineThickness { pt: Pt(border) });
        self.ops.push(Op::DrawRectangle {
            rectangle: Rect {
                x: Pt(MARGIN_X),
                y: Pt(top - height),
                width: Pt(CONTENT_W),
                height: Pt(height),
                mode: Some(PaintMode::FillStroke),
                winding_order: None,
            },
        });
        self.ops.push(Op::RestoreGraphicsState);
    }

    /// Starts a new page if fewer than `needed` points are left.
    fn ensure(&mut self, needed: f32, in_table: bool) {
        if self.y - needed >= BODY_BOTTOM {
            return;
        }
        self.pages.push(std::mem::take(&mut self.ops));
        self.y = PAGE_H - MARGIN_TOP;
        let head = format!(
            "{} · {} (continued)",
            sanitize(&self.r.shop_name),
            sanitize(&self.r.invoice_number)
        );
        self.y -= 10.0;
        self.put_text(
            &head,
            Align::Left(MARGIN_X),
            self.y,
            style(SMALL, false, GREY),
        );
        self.y -= 14.0;
        if in_table {
            self.table_header();
        }
    }

    fn first_page_header(&mut self, missing: &BTreeSet<char>) {
        let r = self.r;
        let name_st = style(16.0, true, 0.0);
        for line in self.wrap(&r.shop_name, name_st, CONTENT_W, 2) {
            self.y -= 18.0;
            self.put(&line, Align::Center, self.y, name_st);
        }
        self.y -= 14.0;
        let title = format!("{TITLE_EN} · إيصال مؤقت");
        self.put_text(&title, Align::Center, self.y, style(10.0, false, GREY));

        // The notice: boxed, bold, in both languages.
        self.y -= 10.0;
        let top = self.y;
        self.boxed(top, 40.0, 0.92, 1.2);
        let st = style(11.0, true, 0.0);
        self.put_text(NOTICE_EN, Align::Center, top - 16.0, st);
        self.put_text(NOTICE_AR, Align::Center, top - 32.0, st);
        self.y = top - 40.0 - 8.0;

        let rows = [
            (
                "Invoice no.",
                "رقم الفاتورة",
                r.invoice_number.as_str(),
                true,
            ),
            ("Date", "التاريخ", r.date.as_str(), false),
            ("Customer", "العميل", r.customer.as_str(), true),
            ("Currency", "العملة", r.currency.as_str(), false),
        ];
        let value_x = MARGIN_X + 80.0;
        let value_w = CONTENT_W - 80.0 - 90.0;
        for (en, ar, value, bold) in rows {
            let value_st = style(BODY, bold, 0.0);
            let lines = self.wrap(value, value_st, value_w, 2);
            self.y -= 13.0;
            // Drawn in reading order (label, value, Arabic label), which is
            // the order text extraction reports.
            self.put_text(en, Align::Left(MARGIN_X), self.y, style(BODY, false, GREY));
            for (i, line) in lines.iter().enumerate() {
                if i == 1 {
                    self.put_text(ar, Align::Right(RIGHT), self.y, style(BODY, false, GREY));
                }
                if i > 0 {
                    self.y -= 12.0;
                }
                self.put(line, Align::Left(value_x), self.y, value_st);
            }
            if lines.len() < 2 {
                self.put_text(ar, Align::Right(RIGHT), self.y, style(BODY, false, GREY));
            }
        }

        if !missing.is_empty() {
            let text = format!("{MISSING_NOTICE} {}", code_point_list(missing, 40));
            let st = style(SMALL, true, 0.0);
            let lines = self.wrap(&text, st, CONTENT_W - 12.0, 4);
            let ar = self.wrap(MISSING_NOTICE_AR, st, CONTENT_W - 12.0, 1);
            let height = 10.0 * (lines.len() + ar.len()) as f32 + 8.0;
            self.y -= 8.0;
            let top = self.y;
            self.boxed(top, height, 1.0, 0.8);
            let mut y = top - 11.0;
            for line in &lines {
                self.put(line, Align::Left(MARGIN_X + 6.0), y, st);
                y -= 10.0;
            }
            for line in &ar {
                self.put(line, Align::Right(RIGHT - 6.0), y, st);
                y -= 10.0;
            }
            self.y = top - height;
        }
        self.y -= 16.0;
    }

    fn table_header(&mut self) {
        let en = style(BODY, true, 0.0);
        let ar = style(SMALL, false, GREY);
        self.y -= 10.0;
        let cur = self.r.currency.as_str();
        self.put_text("Description", Align::Left(MARGIN_X), self.y, en);
        self.put_text("Qty", Align::Right(QTY_RIGHT), self.y, en);
        self.put_text(
            &format!("Unit price ({cur})"),
            Align::Right(PRICE_RIGHT),
            self.y,
            en,
        );
        self.put_text(
            &format!("Line total ({cur})"),
            Align::Right(TOTAL_RIGHT),
            self.y,
            en,
        );
        self.y -= 11.0;
        self.put_text("الصنف", Align::Left(MARGIN_X), self.y, ar);
        self.put_text("الكمية", Align::Right(QTY_RIGHT), self.y, ar);
        self.put_text("سعر الوحدة", Align::Right(PRICE_RIGHT), self.y, ar);
        self.put_text("المجموع", Align::Right(TOTAL_RIGHT), self.y, ar);
        self.y -= 5.0;
        self.rule(MARGIN_X, RIGHT, self.y, 0.9, 0.0);
    }

    fn table(&mut self, line_totals: &[Decimal]) {
        self.ensure(60.0, false);
        self.table_header();
        let st = style(BODY, false, 0.0);
        let r = self.r;
        for (line, total) in r.lines.iter().zip(line_totals) {
            let desc = self.wrap(&line.description, st, DESC_W, 3);
            let height = 12.0 * desc.len() as f32 + 6.0;
            self.ensure(height, true);
            let first = self.y - 13.0;
            // First description line, the numbers, then the rest: reading
            // order, so extraction keeps a row's figures on its first line.
            if let Some(d) = desc.first() {
                self.put(d, Align::Left(MARGIN_X), first, st);
            }
            self.put_number(&quantity(line.quantity), QTY_RIGHT, first, st, 55.0);
            self.put_number(
                &money(line.unit_price, u32::MAX),
                PRICE_RIGHT,
                first,
                st,
                NUM_COL_W,
            );
            self.put_number(&money(*total, 3), TOTAL_RIGHT, first, st, NUM_COL_W);
            for (i, d) in desc.iter().enumerate().skip(1) {
                self.put(d, Align::Left(MARGIN_X), first - 12.0 * i as f32, st);
            }
            self.y -= height;
            self.rule(MARGIN_X, RIGHT, self.y, 0.3, 0.7);
        }
    }

    fn totals(&mut self, t: &tax::Totals) {
        self.ensure(58.0, false);
        let cur = self.r.currency.clone();
        let en_x = MARGIN_X + 215.0;
        let ar_right = PRICE_RIGHT;
        let rows = [
            (
                "Subtotal".to_string(),
                "المجموع قبل الضريبة".to_string(),
                t.subtotal,
                false,
            ),
            (tax_label_en(), tax_label_ar(), t.tax, false),
            ("Total".to_string(), "الإجمالي".to_string(), t.total, true),
        ];
        self.y -= 4.0;
        for (en, ar, amount, bold) in rows {
            let st = style(if bold { 11.0 } else { BODY }, bold, 0.0);
            if bold {
                self.y -= 5.0;
                self.rule(en_x, RIGHT, self.y, 0.9, 0.0);
            }
            self.y -= if bold { 15.0 } else { 13.0 };
            self.put_text(&en, Align::Left(en_x), self.y, st);
            self.put_text(
                &ar,
                Align::Right(ar_right),
                self.y,
                style(st.size, bold, GREY),
            );
            self.put_number(
                &format!("{} {cur}", money(amount, 2)),
                TOTAL_RIGHT,
                self.y,
                st,
                NUM_COL_W,
            );
        }
    }

    /// Closes the last page and adds the footers, now that the page count is
    /// known.
    fn finish(mut self) -> (Vec<PdfPage>, BTreeMap<u16, char>) {
        self.pages.push(std::mem::take(&mut self.ops));
        let count = self.pages.len();
        let st = style(7.5, false, GREY);
        let left = format!("{} · {NOTICE_EN}", sanitize(&self.r.invoice_number));
        let mut pages = Vec::with_capacity(count);
        for (i, ops) in std::mem::take(&mut self.pages).into_iter().enumerate() {
            self.ops = ops;
            self.rule(MARGIN_X, RIGHT, BODY_BOTTOM - 12.0, 0.3, 0.7);
            self.put_text(&left, Align::Left(MARGIN_X), BODY_BOTTOM - 24.0, st);
            let page_no = format!("Page {} of {count}", i + 1);
            self.put_text(&page_no, Align::Right(RIGHT), BODY_BOTTOM - 24.0, st);
            let ops = std::mem::take(&mut self.ops);
            pages.push(PdfPage::new(Mm(210.0), Mm(297.0), ops));
        }
        (pages, self.used)
    }
}

fn utf16be(s: &str) -> Vec<u8> {
    let mut out = vec![0xFE, 0xFF];
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_be_bytes());
    }
    out
}

// ---------------------------------------------------------------------------
// PDF assembly
// ---------------------------------------------------------------------------

fn serialize(
    face: &Face,
    r: &Receipt,
    mut pages: Vec<PdfPage>,
    used: &BTreeMap<u16, char>,
) -> Result<Vec<u8>, ReceiptError> {
    // The subset's own cmap lists the characters drawn (not the ones only
    // represented by the missing-glyph box).
    let cmap: BTreeMap<u16, u16> = used
        .iter()
        .filter(|&(&gid, &c)| face.gid(c) == Some(gid))
        .filter_map(|(&gid, &c)| Some((u16::try_from(c as u32).ok()?, gid)))
        .collect();
    let glyphs: BTreeSet<u16> = used.keys().copied().collect();
    let (program, new_id) = face
        .sfnt
        .subset(FONT_TTF, &glyphs, &cmap)
        .map_err(ReceiptError::Font)?;
    for page in &mut pages {
        for op in &mut page.ops {
            if let Op::ShowText { items } = op {
                for item in items {
                    if let TextItem::GlyphIds(glyphs) = item {
                        for g in glyphs {
                            g.gid = new_id.get(&g.gid).copied().unwrap_or(0);
                        }
                    }
                }
            }
        }
    }
    let base = &face.font;
    // printpdf without `text_layout` embeds whatever bytes the ParsedFont
    // holds, with the glyph ids the page content uses: give it the subset.
    let font = ParsedFont {
        original_bytes: program,
        font_index: 0,
        font_name: Some(format!("{}+{FONT_PS_NAME}", subset_tag(&glyphs))),
        codepoint_to_glyph: BTreeMap::new(),
        glyph_widths: new_id
            .iter()
            .map(|(&old, &new)| (new, face.advance(old)))
            .collect(),
        units_per_em: base.units_per_em,
        font_metrics: base.font_metrics.clone(),
        font_type: FontType::TrueType,
        pdf_font_metrics: base.pdf_font_metrics.clone(),
    };

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

/// 64-bit FNV-1a: a stable hash (std's may change between Rust releases).
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

fn document_id(r: &Receipt) -> Vec<u8> {
    let text = format!("{r:?}");
    let a = fnv1a(0xCBF2_9CE4_8422_2325, text.as_bytes());
    let b = fnv1a(a ^ 0x9E37_79B9_7F4A_7C15, text.as_bytes());
    format!("{a:016x}{b:016x}").into_bytes()
}

/// The six-letter tag a subset font's name carries (ISO 32000-1, 9.6.4).
fn subset_tag(glyphs: &BTreeSet<u16>) -> String {
    let bytes: Vec<u8> = glyphs.iter().flat_map(|g| g.to_be_bytes()).collect();
    let mut h = fnv1a(0xCBF2_9CE4_8422_2325, &bytes);
    (0..6)
        .map(|_| {
            let c = char::from(b'A' + (h % 26) as u8);
            h /= 26;
            c
        })
        .collect()
}

/// "2026-11-22" (any suffix ignored) as a PDF date; 1970-01-01 if it is not
/// a date.
fn receipt_date(s: &str) -> OffsetDateTime {
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

// ---------------------------------------------------------------------------
// TrueType subsetting
// ---------------------------------------------------------------------------

fn be16(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The parts of a TrueType font the subsetter needs, read once.
struct Sfnt {
    /// Tag -> (offset, length) in the font file.
    tables: BTreeMap<[u8; 4], (usize, usize)>,
    num_glyphs: u16,
    num_h_metrics: u16,
    /// Offset of each glyph in `glyf`, `num_glyphs + 1` entries.
    loca: Vec<u32>,
}

impl Sfnt {
    fn parse(data: &[u8]) -> Result<Sfnt, String> {
        let bad = |what: &str| format!("font file: bad {what}");
        let count = be16(data, 4).ok_or_else(|| bad("header"))?;
        let mut tables = BTreeMap::new();
        for i in 0..usize::from(count) {
            let rec = 12 + 16 * i;
            let tag: [u8; 4] = data
                .get(rec..rec + 4)
                .and_then(|t| t.try_into().ok())
                .ok_or_else(|| bad("table directory"))?;
            let off = be32(data, rec + 8).ok_or_else(|| bad("table directory"))? as usize;
            let len = be32(data, rec + 12).ok_or_else(|| bad("table directory"))? as usize;
            if off.checked_add(len).is_none_or(|end| end > data.len()) {
                return Err(bad("table bounds"));
            }
            tables.insert(tag, (off, len));
        }
        let mut sfnt = Sfnt {
            tables,
            num_glyphs: 0,
            num_h_metrics: 0,
            loca: Vec::new(),
        };
        let head = sfnt.table(data, b"head").ok_or_else(|| bad("head"))?;
        let long_loca = be16(head, 50).ok_or_else(|| bad("head"))? == 1;
        let maxp = sfnt.table(data, b"maxp").ok_or_else(|| bad("maxp"))?;
        sfnt.num_glyphs = be16(maxp, 4).ok_or_else(|| bad("maxp"))?;
        let hhea = sfnt.table(data, b"hhea").ok_or_else(|| bad("hhea"))?;
        sfnt.num_h_metrics = be16(hhea, 34).ok_or_else(|| bad("hhea"))?;
        let loca = sfnt.table(data, b"loca").ok_or_else(|| bad("loca"))?;
        let glyf_len = sfnt.table(data, b"glyf").ok_or_else(|| bad("glyf"))?.len();
        sfnt.loca = (0..=usize::from(sfnt.num_glyphs))
            .map(|i| {
                if long_loca {
                    be32(loca, 4 * i)
                } else {
                    be16(loca, 2 * i).map(|o| 2 * u32::from(o))
                }
            })
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| bad("loca"))?;
        let ordered = sfnt.loca.windows(2).all(|w| w[0] <= w[1]);
        if !ordered || sfnt.loca.last().is_some_and(|&end| end as usize > glyf_len) {
            return Err(bad("loca"));
        }
        let hmtx = sfnt.table(data, b"hmtx").ok_or_else(|| bad("hmtx"))?;
        let nh = usize::from(sfnt.num_h_metrics);
        if nh == 0
            || hmtx.len()
                < 4 * nh + 2 * (usize::from(sfnt.num_glyphs) - nh.min(usize::from(sfnt.num_glyphs)))
        {
            return Err(bad("hmtx"));
        }
        Ok(sfnt)
    }

    fn table<'d>(&self, data: &'d [u8], tag: &[u8; 4]) -> Option<&'d [u8]> {
        self.tables
            .get(tag)
            .map(|&(off, len)| &data[off..off + len])
    }

    fn glyph<'d>(&self, glyf: &'d [u8], gid: u16) -> &'d [u8] {
        let i = usize::from(gid);
        match (self.loca.get(i), self.loca.get(i + 1)) {
            (Some(&a), Some(&b)) => &glyf[a as usize..b as usize],
            _ => &[],
        }
    }

    /// A copy of the font with only the glyphs in `used` (and the glyphs
    /// they are composed of), renumbered from 1 (0 stays .notdef). Returns
    /// the font program and old glyph id -> new glyph id.
    ///
    /// Also dropped: layout tables (GSUB, GPOS, kern: the PDF positions
    /// every glyph) and TrueType hinting (glyph instructions, fpgm, prep,
    /// cvt), which is about half of DejaVu's outline data and which PDF
    /// viewers and printers do not need; PDF generators such as WeasyPrint
    /// drop it too.
    fn subset(
        &self,
        data: &[u8],
        used: &BTreeSet<u16>,
        cmap: &BTreeMap<u16, u16>,
    ) -> Result<(Vec<u8>, BTreeMap<u16, u16>), String> {
        let table = |tag: &[u8; 4]| {
            self.table(data, tag)
                .ok_or_else(|| format!("font file: no {} table", String::from_utf8_lossy(tag)))
        };
        let glyf = table(b"glyf")?;
        let mut order: Vec<u16> = vec![0];
        order.extend(
            used.iter()
                .copied()
                .filter(|&g| g != 0 && g < self.num_glyphs),
        );
        let mut new_id: BTreeMap<u16, u16> = BTreeMap::new();
        for (i, &g) in order.iter().enumerate() {
            new_id.insert(g, i as u16);
        }
        let mut i = 0;
        while i < order.len() {
            for part in composite_parts(self.glyph(glyf, order[i])) {
                if part < self.num_glyphs && !new_id.contains_key(&part) {
                    new_id.insert(part, order.len() as u16);
                    order.push(part);
                }
            }
            i += 1;
        }
        let count = u16::try_from(order.len()).map_err(|_| "too many glyphs".to_string())?;

        let hmtx = table(b"hmtx")?;
        let nh = usize::from(self.num_h_metrics);
        let mut new_glyf = Vec::new();
        let mut new_loca = Vec::with_capacity(4 * (order.len() + 1));
        let mut new_hmtx = Vec::with_capacity(4 * order.len());
        for &old in &order {
            new_loca.extend_from_slice(&(new_glyf.len() as u32).to_be_bytes());
            new_glyf.extend_from_slice(&rewrite_glyph(self.glyph(glyf, old), &new_id));
            new_glyf.resize(new_glyf.len().next_multiple_of(4), 0);
            let g = usize::from(old);
            let advance = &hmtx[4 * g.min(nh - 1)..][..2];
            let lsb = if g < nh {
                &hmtx[4 * g + 2..][..2]
            } else {
                &hmtx[4 * nh + 2 * (g - nh)..][..2]
            };
            new_hmtx.extend_from_slice(advance);
            new_hmtx.extend_from_slice(lsb);
        }
        new_loca.extend_from_slice(&(new_glyf.len() as u32).to_be_bytes());

        let patch = |tag: &[u8; 4], at: usize, value: u16| -> Result<Vec<u8>, String> {
            let mut t = table(tag)?.to_vec();
            t.get_mut(at..at + 2)
                .ok_or_else(|| format!("font file: short {}", String::from_utf8_lossy(tag)))?
                .copy_from_slice(&value.to_be_bytes());
            Ok(t)
        };
        let mut head = patch(b"head", 50, 1)?; // long loca offsets
        head[8..12].fill(0); // checkSumAdjustment, set by assemble_sfnt
        let mut post = table(b"post")?
            .get(..32)
            .ok_or("font file: short post")?
            .to_vec();
        post[..4].copy_from_slice(&0x0003_0000u32.to_be_bytes()); // no glyph names
        let cmap: BTreeMap<u16, u16> = cmap
            .iter()
            .filter_map(|(&cp, old)| Some((cp, *new_id.get(old)?)))
            .collect();

        let mut tables: Vec<([u8; 4], Vec<u8>)> = vec![
            (*b"cmap", cmap_format4(&cmap)),
            (*b"glyf", new_glyf),
            (*b"head", head),
            (*b"hhea", patch(b"hhea", 34, count)?),
            (*b"hmtx", new_hmtx),
            (*b"loca", new_loca),
            (*b"maxp", patch(b"maxp", 4, count)?),
            (*b"post", post),
        ];
        if let Some(os2) = self.table(data, b"OS/2") {
            tables.push((*b"OS/2", os2.to_vec()));
        }
        if let Some(name) = self.table(data, b"name").and_then(name_subset) {
            tables.push((*b"name", name));
        }
        Ok((assemble_sfnt(tables), new_id))
    }
}

/// Calls `f(offset of flags)` for each component of a composite glyph and
/// returns where the components end; `None` for simple or empty glyphs.
fn for_each_component(glyph: &[u8], mut f: impl FnMut(usize)) -> Option<usize> {
    const ARGS_ARE_WORDS: u16 = 0x0001;
    const HAVE_SCALE: u16 = 0x0008;
    const MORE_COMPONENTS: u16 = 0x0020;
    const HAVE_XY_SCALE: u16 = 0x0040;
    const HAVE_2X2: u16 = 0x0080;
    if be16(glyph, 0).is_none_or(|n| (n as i16) >= 0) {
        return None;
    }
    let mut at = 10;
    loop {
        let flags = be16(glyph, at)?;
        be16(glyph, at + 2)?;
        f(at);
        at += 4 + if flags & ARGS_ARE_WORDS != 0 { 4 } else { 2 };
        at += if flags & HAVE_SCALE != 0 {
            2
        } else if flags & HAVE_XY_SCALE != 0 {
            4
        } else if flags & HAVE_2X2 != 0 {
            8
        } else {
            0
        };
        if flags & MORE_COMPONENTS == 0 {
            return (at <= glyph.len()).then_some(at);
        }
    }
}

/// The glyphs a composite glyph is built from.
fn composite_parts(glyph: &[u8]) -> Vec<u16> {
    let mut parts = Vec::new();
    for_each_component(glyph, |at| parts.extend(be16(glyph, at + 2)));
    parts
}

/// A glyph without its hinting instructions, its components renumbered.
/// Malformed data is copied unchanged rather than guessed at.
fn rewrite_glyph(glyph: &[u8], new_id: &BTreeMap<u16, u16>) -> Vec<u8> {
    const HAVE_INSTRUCTIONS: u16 = 0x0100;
    let Some(contours) = be16(glyph, 0).map(|n| n as i16) else {
        return Vec::new(); // no outline (space)
    };
    if contours >= 0 {
        // header, endPtsOfContours, instructionLength, instructions, rest
        let at = 10 + 2 * contours as usize;
        let Some(len) = be16(glyph, at) else {
            return glyph.to_vec();
        };
        let Some(rest) = glyph.get(at + 2 + usize::from(len)..) else {
            return glyph.to_vec();
        };
        let mut out = glyph[..at].to_vec();
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(rest);
        return out;
    }
    let mut offsets = Vec::new();
    let Some(end) = for_each_component(glyph, |at| offsets.push(at)) else {
        return glyph.to_vec();
    };
    let mut out = glyph[..end].to_vec();
    for at in offsets {
        let flags = be16(&out, at).unwrap_or(0) & !HAVE_INSTRUCTIONS;
        out[at..at + 2].copy_from_slice(&flags.to_be_bytes());
        let old = be16(&out, at + 2).unwrap_or(0);
        let new = new_id.get(&old).copied().unwrap_or(0);
        out[at + 2..at + 4].copy_from_slice(&new.to_be_bytes());
    }
    out
}

/// A Windows Unicode BMP cmap (format 4) for `map` (code point -> glyph).
fn cmap_format4(map: &BTreeMap<u16, u16>) -> Vec<u8> {
    // Segments: runs of consecutive code points with consecutive glyphs.
    let mut segs: Vec<(u16, u16, u16)> = Vec::new(); // start, end, delta
    for (&cp, &gid) in map.iter().filter(|(&cp, _)| cp != 0xFFFF) {
        let delta = gid.wrapping_sub(cp);
        match segs.last_mut() {
            Some(s) if s.1.checked_add(1) == Some(cp) && s.2 == delta => s.1 = cp,
            _ => segs.push((cp, cp, delta)),
        }
    }
    segs.push((0xFFFF, 0xFFFF, 1));
    let n = segs.len() as u16;
    let search = 2 * (1u16 << (15 - n.leading_zeros()));
    let selector = (search / 2).trailing_zeros() as u16;
    let mut sub = Vec::new();
    for v in [4, 16 + 8 * n, 0, 2 * n, search, selector, 2 * n - search] {
        sub.extend_from_slice(&v.to_be_bytes());
    }
    segs.iter()
        .for_each(|s| sub.extend_from_slice(&s.1.to_be_bytes()));
    sub.extend_from_slice(&[0, 0]);
    segs.iter()
        .for_each(|s| sub.extend_from_slice(&s.0.to_be_bytes()));
    segs.iter()
        .for_each(|s| sub.extend_from_slice(&s.2.to_be_bytes()));
    segs.iter().for_each(|_| sub.extend_from_slice(&[0, 0]));
    let mut out = Vec::with_capacity(12 + sub.len());
    for v in [0u16, 1, 3, 1] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&12u32.to_be_bytes());
    out.extend_from_slice(&sub);
    out
}

/// The `name` table cut to the Windows records of the copyright notice,
/// names, version and licence URL: the notice the Vera licence asks to keep,
/// without the 9 kB licence text in every receipt.
fn name_subset(name: &[u8]) -> Option<Vec<u8>> {
    let count = usize::from(be16(name, 2)?);
    let storage = usize::from(be16(name, 4)?);
    let mut records = Vec::new();
    let mut strings = Vec::new();
    for i in 0..count {
        let rec = 6 + 12 * i;
        let (platform, name_id) = (be16(name, rec)?, be16(name, rec + 6)?);
        if platform != 3 || !(name_id <= 6 || name_id == 14) {
            continue;
        }
        let (len, off) = (
            usize::from(be16(name, rec + 8)?),
            usize::from(be16(name, rec + 10)?),
        );
        let s = name.get(storage + off..storage + off + len)?;
        records.extend_from_slice(name.get(rec..rec + 8)?);
        records.extend_from_slice(&(len as u16).to_be_bytes());
        records.extend_from_slice(&(strings.len() as u16).to_be_bytes());
        strings.extend_from_slice(s);
    }
    let kept = (records.len() / 12) as u16;
    let mut out = Vec::new();
    for v in [0, kept, 6 + 12 * kept] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&records);
    out.extend_from_slice(&strings);
    Some(out)
}

fn table_checksum(data: &[u8]) -> u32 {
    data.chunks(4).fold(0u32, |sum, c| {
        let mut word = [0u8; 4];
        word[..c.len()].copy_from_slice(c);
        sum.wrapping_add(u32::from_be_bytes(word))
    })
}

fn assemble_sfnt(mut tables: Vec<([u8; 4], Vec<u8>)>) -> Vec<u8> {
    tables.sort_by_key(|t| t.0);
    let n = tables.len() as u16;
    let selector = 15 - n.leading_zeros() as u16;
    let search = 16 * (1u16 << selector);
    let mut out = Vec::new();
    out.extend_from_slice(&0x0001_0000u32.to_be_bytes());
    for v in [n, search, selector, 16 * n - search] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut offset = 12 + 16 * tables.len();
    let mut head_at = None;
    for (tag, data) in &tables {
        out.extend_from_slice(tag);
        out.extend_from_slice(&table_checksum(data).to_be_bytes());
        out.extend_from_slice(&(offset as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        if tag == b"head" {
            head_at = Some(offset);
        }
        offset += data.len().next_multiple_of(4);
    }
    for (_, data) in &tables {
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    if let Some(at) = head_at {
        let adjust = 0xB1B0_AFBAu32.wrapping_sub(table_checksum(&out));
        out[at + 8..at + 12].copy_from_slice(&adjust.to_be_bytes());
    }
    out
}

// ---------------------------------------------------------------------------
// Text extraction
// ---------------------------------------------------------------------------

/// With `actual_text`, lines inside an `/ActualText` span give that text
/// (logical order); without, every glyph gives its `/ToUnicode` text in
/// drawing order (tests use this to see what is really drawn).
fn extract(pdf: &[u8], actual_text: bool) -> Result<String, ReceiptError> {
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
        let mut y = 0.0f32;
        for op in &page.ops {
            let text = match op {
                Op::BeginMarkedContentWithProperties { properties, .. } if actual_text => {
                    actual = actual_text_of(properties);
                    continue;
                }
                Op::EndMarkedContent | Op::EndMarkedContentWithProperties => {
                    actual = None;
                    continue;
                }
                Op::StartTextSection => {
                    y = 0.0;
                    continue;
                }
                Op::SetTextCursor { pos } => {
                    y = pos.y.0;
                    continue;
                }
                Op::SetTextMatrix { matrix } => {
                    y = matrix.as_array()[5];
                    continue;
                }
                Op::ShowText { items } => actual.take().unwrap_or_else(|| decode_items(items)),
                _ => continue,
            };
            match lines.last_mut() {
                Some((line_y, line)) if (*line_y - y).abs() < 2.0 => {
                    line.push(' ');
                    line.push_str(&text);
                }
                _ => lines.push((y, text)),
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
            // Spaces are drawn as glyphs; offsets only position marks.
            TextItem::Offset(_) => {}
        }
    }
    s
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

    fn load(pdf: &[u8]) -> lopdf::Document {
        lopdf::Document::load_mem(pdf).expect("lopdf opens the receipt")
    }

    /// The text each drawn glyph stands for (its /ToUnicode entry), in drawing
    /// order, ignoring /ActualText: what is really on the page.
    fn drawn_text(pdf: &[u8]) -> String {
        extract(pdf, false).unwrap()
    }

    fn displayed(text: &str) -> String {
        let face = face().unwrap();
        let rtl = is_rtl(text);
        shape_line(face, text, rtl)
            .glyphs
            .iter()
            .map(|g| g.1)
            .collect()
    }

    fn chars(codes: &[u32]) -> String {
        codes.iter().map(|&c| char::from_u32(c).unwrap()).collect()
    }

    #[test]
    fn latin_receipt_renders_with_the_backend_totals() {
        let pdf = render(&latin()).unwrap();
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
        let (pdf, warnings) = render_with_warnings(&arabic()).unwrap();
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
    fn arabic_letters_take_their_joining_forms() {
        // محمد: meem initial, hah medial, meem medial, dal final; drawn right to left.
        assert_eq!(displayed("محمد"), chars(&[0xFEAA, 0xFEE4, 0xFEA4, 0xFEE3]));
        // شركة النور: reh and waw never join the next letter, so kaf and the
        // last reh start afresh; "ال" is alef + initial lam.
        assert_eq!(
            displayed("شركة النور"),
            chars(&[0xFEAD, 0xFEEE, 0xFEE8, 0xFEDF, 0xFE8D, 0x20, 0xFE94, 0xFEDB, 0xFEAE, 0xFEB7])
        );
        // Lam-alef is one ligature, final after a joining letter: سلام.
        assert_eq!(displayed("سلام"), chars(&[0xFEE1, 0xFEFC, 0xFEB3]));
        assert_eq!(displayed("لا"), chars(&[0xFEFB]));
        assert_eq!(displayed("الأمل"), chars(&[0xFEDE, 0xFEE3, 0xFEF7, 0xFE8D]));
    }

    #[test]
    fn mixed_text_keeps_latin_and_digits_left_to_right() {
        // Right-to-left paragraph: the Latin run and the number keep their
        // order and sit to the left of the Arabic word.
        assert_eq!(
            displayed("قهوة Coffee 2"),
            format!("Coffee 2 {}", chars(&[0xFE93, 0xFEEE, 0xFEEC, 0xFED7]))
        );
        // Digits (and their decimal point) are never reversed.
        assert!(displayed("سعر 15.50").starts_with("15.50 "));
        // Brackets are mirrored so they still enclose the word.
        let shown = displayed("حليب (لتر)");
        assert!(shown.starts_with('(') && shown.contains(')'), "{shown}");
        // Left-to-right text is left alone.
        assert_eq!(displayed("Espresso 2x (1kg)"), "Espresso 2x (1kg)");
        // Arabic inside a Latin paragraph is reversed in place.
        assert_eq!(
            displayed("Tea محمد x2"),
            format!("Tea {} x2", chars(&[0xFEAA, 0xFEE4, 0xFEA4, 0xFEE3]))
        );
    }

    #[test]
    fn characters_the_font_lacks_are_boxed_listed_and_warned() {
        let r = receipt(
            "Al Noor",
            "王小明 Wang",
            vec![line("绿茶 Green tea", "1", "2.000")],
        );
        let (pdf, warnings) = render_with_warnings(&r).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("U+5C0F U+660E U+738B U+7EFF U+8336"),
            "{warnings:?}"
        );
        let text = extract_text(&pdf).unwrap();
        assert!(
            text.contains(
                "Some characters could not be printed (font lacks them): \
                 U+5C0F U+660E U+738B U+7EFF U+8336"
            ),
            "{text}"
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
            let shaped = shape_line(face, &text, is_rtl(&text));
            assert!(shaped
                .glyphs
                .iter()
                .all(|g| g.0 != face.placeholder || g.1 == PLACEHOLDER));
        }
    }

    #[test]
    fn write_is_atomic_deterministic_and_equals_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts/2026/INV-2026-000123.pdf");
        write(&arabic(), &path).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written, render(&arabic()).unwrap());
        assert_eq!(render(&arabic()).unwrap(), render(&arabic()).unwrap());
        // Rewriting replaces the file and leaves no temporary file behind.
        write(&latin(), &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), render(&latin()).unwrap());
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
        let err = write(&latin(), &path).unwrap_err();
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
        let pdf = render(&receipt("Al Noor", "John Smith", lines)).unwrap();
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
    fn long_descriptions_wrap_then_end_in_an_ellipsis() {
        let face = face().unwrap();
        let long = "Organic single origin Ethiopian Yirgacheffe whole bean coffee, \
                    washed process, light roast, notes of jasmine and bergamot, 1kg bag"
            .repeat(3);
        let lines = wrap(face, &long, BODY, DESC_W, 3);
        assert_eq!(lines.len(), 3);
        for l in &lines {
            assert!(face.points(l.advance, BODY) <= DESC_W + 0.01);
        }
        assert!(lines[2].logical.ends_with('…'), "{}", lines[2].logical);
        // A single word wider than the column is broken, not overflowing.
        let word = "X".repeat(200);
        let lines = wrap(face, &word, BODY, DESC_W, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines
            .iter()
            .all(|l| face.points(l.advance, BODY) <= DESC_W + 0.01));
        // Arabic wraps too, and each line stays right-to-left.
        let ar = "قهوة عربية محمصة مع الهيل ".repeat(10);
        let lines = wrap(face, &ar, BODY, DESC_W, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.reordered));
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
        assert!(matches!(render(&empty), Err(ReceiptError::NoLines { .. })));
        let huge = receipt(
            "Al Noor",
            "John",
            vec![line("x", "79228162514264337593543950335", "2")],
        );
        let err = render(&huge).unwrap_err();
        assert!(matches!(err, ReceiptError::Overflow { .. }), "{err}");
        assert!(err.to_string().contains("INV-2026-000123"));
        assert!(matches!(
            extract_text(b"not a pdf"),
            Err(ReceiptError::Unreadable(_))
        ));
    }

    #[test]
    fn subset_font_is_a_valid_smaller_font() {
        let face = face().unwrap();
        let used: BTreeSet<u16> = "Aé€محمد".chars().filter_map(|c| face.gid(c)).collect();
        let cmap: BTreeMap<u16, u16> = "Aé€محمد"
            .chars()
            .map(|c| (c as u32 as u16, face.gid(c).unwrap()))
            .collect();
        let (program, new_id) = face.sfnt.subset(FONT_TTF, &used, &cmap).unwrap();
        assert!(program.len() < 12_000, "{} bytes", program.len());
        // It parses, its cmap and widths agree with the original font.
        let parsed = ParsedFont::from_bytes(&program, 0, &mut Vec::new()).unwrap();
        let sub = Sfnt::parse(&program).unwrap();
        assert_eq!(usize::from(sub.num_glyphs), new_id.len());
        for c in "Aé€محمد".chars() {
            let old = face.gid(c).unwrap();
            let new = parsed.lookup_glyph_index(c as u32).unwrap();
            assert_eq!(new_id[&old], new);
            assert_eq!(parsed.get_glyph_width(new), Some(face.advance(old)));
        }
        assert_eq!(new_id[&0], 0);
        // Table checksums and the whole-font checksum are consistent.
        assert_eq!(table_checksum(&program), 0xB1B0_AFBA);
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
            let pdf = render(&r).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let got = extract_text(&pdf).unwrap();
            assert!(!got.contains('?'), "{text:?} gave {got}");
            assert!(!drawn_text(&pdf).contains('?'), "{text:?}");
        }
    }

    #[test]
    fn receipt_dates_become_pdf_dates() {
        let t = receipt_date("2026-11-22");
        assert_eq!((t.year(), u8::from(t.month()), t.day()), (2026, 11, 22));
        assert_eq!(receipt_date("2024-02-29 13:00").day(), 29);
        assert_eq!(receipt_date("22/11/2026").year(), 1970);
    }
}
