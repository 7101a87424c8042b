//! The embedded font: loaded once for shaping (harfrust) and for the PDF
//! (printpdf's metrics), and cut down to the glyphs a receipt uses
//! (subsetter) so a receipt carries a few kB of font instead of 760 kB.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use printpdf::{FontType, ParsedFont};

use super::ReceiptError;

/// DejaVu Sans 2.37 (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
/// Chosen over DejaVu Sans Mono (half the size) because monospaced Arabic is
/// cramped and hard to read, and Mono lacks Hebrew and most symbol blocks.
///
/// A `static`, not a `const`: a const is inlined at every use, and release
/// builds with several codegen units were seen to link the 760 kB twice.
pub(super) static FONT_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub(super) const FONT_PS_NAME: &str = "DejaVuSans";
/// Drawn for characters the font lacks: a box reads as "missing glyph" to
/// everyone, unlike '?' which reads as text.
pub(super) const PLACEHOLDER: char = '\u{25A1}';

pub(super) struct Face {
    /// printpdf's view: cmap, advances, metrics for the PDF font dictionary.
    pub(super) pdf: ParsedFont,
    /// harfrust's view: GSUB/GPOS for shaping.
    pub(super) shaping: harfrust::Font,
    /// The glyph of [`PLACEHOLDER`].
    pub(super) placeholder: u16,
    /// The character each glyph stands for when the font's cmap maps an
    /// ordinary character to it (not a presentation form): what the glyph
    /// shows, whatever the text it was shaped from (a mirrored bracket).
    nominal: HashMap<u16, char>,
}

/// The font, parsed on first use.
pub(super) fn face() -> Result<&'static Face, ReceiptError> {
    static FACE: OnceLock<Result<Face, String>> = OnceLock::new();
    FACE.get_or_init(|| {
        let mut warnings = Vec::new();
        let pdf = ParsedFont::from_bytes(FONT_TTF, 0, &mut warnings)
            .ok_or_else(|| format!("parse failed: {warnings:?}"))?;
        let shaping = harfrust::Font::new(FONT_TTF, 0)
            .ok_or_else(|| "harfrust cannot read the font".to_string())?;
        let placeholder = pdf
            .lookup_glyph_index(PLACEHOLDER as u32)
            .unwrap_or_default();
        let mut nominal = HashMap::new();
        for (&code, &gid) in &pdf.codepoint_to_glyph {
            match char::from_u32(code) {
                Some(c) if gid != 0 && !is_presentation_form(c) => {
                    nominal.entry(gid).or_insert(c);
                }
                _ => {}
            }
        }
        Ok(Face {
            pdf,
            shaping,
            placeholder,
            nominal,
        })
    })
    .as_ref()
    .map_err(|e| ReceiptError::Font(e.clone()))
}

/// Ligatures and contextual forms encoded as characters of their own
/// (Alphabetic Presentation Forms, Arabic Presentation Forms-A and -B): a
/// shaped glyph that happens to be mapped from one stands for the base
/// letters it was shaped from, not for the compatibility character.
fn is_presentation_form(c: char) -> bool {
    matches!(c, '\u{FB00}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFF}')
}

impl Face {
    /// The font's glyph for `c`, `None` when it lacks one.
    pub(super) fn gid(&self, c: char) -> Option<u16> {
        self.pdf.lookup_glyph_index(c as u32).filter(|&g| g != 0)
    }

    pub(super) fn has(&self, c: char) -> bool {
        self.gid(c).is_some()
    }

    /// The glyph's advance without kerning, in font units.
    pub(super) fn advance(&self, gid: u16) -> u16 {
        self.pdf.get_glyph_width(gid).unwrap_or(0)
    }

    pub(super) fn units_per_em(&self) -> f32 {
        f32::from(self.pdf.units_per_em)
    }

    /// Font units at `size` points, in points.
    pub(super) fn points(&self, units: i32, size: f32) -> f32 {
        units as f32 * size / self.units_per_em()
    }

    /// What a glyph's `/ToUnicode` entry says, given the text it was shaped
    /// from here (`cluster`). The CMap holds one entry per glyph for the
    /// whole document, so this must not depend on where the glyph is drawn:
    /// the character the glyph shows when it is a character's own glyph
    /// (brackets mirrored in right-to-left text map to what they show),
    /// U+FFFD for the missing-glyph box (a literal U+25A1 shares that glyph),
    /// otherwise the base letters it was shaped from (contextual forms,
    /// ligatures: search and copy-paste see normal Arabic).
    pub(super) fn unicode_of(&self, gid: u16, cluster: &str) -> String {
        if gid == self.placeholder {
            return "\u{FFFD}".to_string();
        }
        match self.nominal.get(&gid) {
            Some(c) => c.to_string(),
            None => cluster.to_string(),
        }
    }
}

/// The font program cut down to `glyphs` (plus `.notdef`, and the parts of
/// composite glyphs), as printpdf embeds it: its glyph ids renumbered, so
/// page content must use the returned map's ids. The subset has no `cmap`:
/// the PDF font is a CID font addressed by glyph id, with its own
/// `/ToUnicode`.
pub(super) fn subset(
    face: &Face,
    glyphs: &BTreeSet<u16>,
) -> Result<(ParsedFont, BTreeMap<u16, u16>), ReceiptError> {
    let ids: Vec<u16> = glyphs.iter().copied().collect();
    let remapper = subsetter::GlyphRemapper::new_from_glyphs_sorted(&ids);
    let program = subsetter::subset(FONT_TTF, 0, &remapper)
        .map_err(|e| ReceiptError::Font(format!("subsetting failed: {e}")))?;
    let new_id: BTreeMap<u16, u16> = std::iter::once(0)
        .chain(ids)
        .filter_map(|old| Some((old, remapper.get(old)?)))
        .collect();
    let base = &face.pdf;
    // printpdf without `text_layout` embeds whatever bytes the ParsedFont
    // holds, with the glyph ids the page content uses, and never subsets
    // itself: give it the subset, with the widths under the new ids.
    let font = ParsedFont {
        original_bytes: program,
        font_index: 0,
        font_name: Some(format!("{}+{FONT_PS_NAME}", subset_tag(glyphs))),
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
    Ok((font, new_id))
}

/// 64-bit FNV-1a: a stable hash (std's may change between Rust releases).
pub(super) fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_font_is_a_valid_smaller_font() {
        let face = face().unwrap();
        let text = "Aé€محمد";
        let used: BTreeSet<u16> = text.chars().filter_map(|c| face.gid(c)).collect();
        let (font, new_id) = subset(face, &used).unwrap();
        assert!(
            font.original_bytes.len() < 16_000,
            "{} bytes",
            font.original_bytes.len()
        );
        assert!(font.font_name.as_deref().unwrap().ends_with("+DejaVuSans"));
        // .notdef stays glyph 0; the others are numbered densely in order.
        assert_eq!(new_id[&0], 0);
        let mut news: Vec<u16> = used.iter().map(|g| new_id[g]).collect();
        news.sort_unstable();
        assert_eq!(news, (1..=used.len() as u16).collect::<Vec<_>>());
        // The subset parses as a font with as many glyphs (composite glyphs'
        // parts may add some), each used glyph keeping its outline's width.
        let reparsed = harfrust::Font::new(font.original_bytes.clone(), 0).unwrap();
        assert_eq!(reparsed.units_per_em(), face.pdf.units_per_em);
        for (old, new) in &new_id {
            assert_eq!(font.glyph_widths[new], face.advance(*old));
        }
    }

    #[test]
    fn glyphs_map_back_to_what_they_show() {
        let face = face().unwrap();
        let paren = face.gid(')').unwrap();
        // A ')' glyph drawn for a mirrored '(' is still ')'.
        assert_eq!(face.unicode_of(paren, "("), ")");
        assert_eq!(face.unicode_of(face.placeholder, "王"), "\u{FFFD}");
        // The initial form of meem is mapped only from U+FEE3: it stands for
        // the letter it was shaped from.
        let initial_meem = face.gid('\u{FEE3}').unwrap();
        assert_eq!(face.unicode_of(initial_meem, "م"), "م");
    }
}
