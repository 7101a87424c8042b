//! Text: sanitising, the Unicode bidi algorithm (`unicode-bidi`), shaping
//! with the font's own GSUB/GPOS (`harfrust`: Arabic joining forms,
//! lam-alef, marks stacked by GPOS, kerning), and line breaking.
//!
//! A line comes out as glyphs in visual (left-to-right drawing) order with
//! their positions, plus the logical text it was made from, which the PDF
//! carries as `/ActualText` whenever the glyphs read differently.

use harfrust::{Buffer, ClusterLevel, Direction, ShapeOptions, ShaperFont};
use unicode_bidi::{BidiInfo, Level};

use super::font::Face;

/// Longest text taken from one field: more than three lines of any column
/// can show, and it bounds the work a pathological description can cause.
const MAX_FIELD_CHARS: usize = 600;

/// Control characters become spaces, runs of white space one space.
/// Explicit bidi controls stay: the bidi algorithm honours them, and every
/// line is its own paragraph, so an unterminated one cannot leak further.
pub(super) fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_FIELD_CHARS * 4));
    let mut space = false;
    for c in s.chars().take(MAX_FIELD_CHARS) {
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
pub(super) fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Paragraph direction (UAX #9 P2/P3): the first strong character decides.
pub(super) fn is_rtl(text: &str) -> bool {
    unicode_bidi::get_base_direction(text) == unicode_bidi::Direction::Rtl
}

/// One drawn glyph. Positions are in font units.
#[derive(Debug, Clone)]
pub(super) struct Glyph {
    pub(super) gid: u16,
    /// How far the pen moves after it (kerning included; 0 for marks).
    pub(super) advance: i32,
    /// Where it is drawn relative to the pen (GPOS mark attachment).
    pub(super) x_offset: i32,
    pub(super) y_offset: i32,
    /// The logical text it was shaped from ("" for the second and later
    /// glyphs of one cluster).
    pub(super) text: String,
}

/// One shaped line.
#[derive(Debug, Clone, Default)]
pub(super) struct TextLine {
    /// Visual order.
    pub(super) glyphs: Vec<Glyph>,
    /// Sum of advances, in font units.
    pub(super) advance: i32,
    /// The text as written (logical order).
    pub(super) logical: String,
    /// Whether the glyphs, read left to right, differ from `logical`: then
    /// the line carries `/ActualText` so extraction gets `logical`.
    pub(super) reordered: bool,
}

/// Shapes one line that already fits; `rtl` is its paragraph's direction.
pub(super) fn shape_line(face: &Face, text: &str, rtl: bool) -> TextLine {
    let level = if rtl { Level::rtl() } else { Level::ltr() };
    let bidi = BidiInfo::new(text, Some(level));
    let mut line = TextLine {
        logical: text.to_string(),
        ..TextLine::default()
    };
    let mut missing = false;
    for para in &bidi.paragraphs {
        // `levels` is per byte of `text`; the runs are byte ranges, in visual
        // order (rule L2 applied to whole level runs).
        let (levels, runs) = bidi.visual_runs(para, para.range.clone());
        for run in runs {
            let run_rtl = levels[run.start].is_rtl();
            missing |= shape_run(face, &text[run], run_rtl, &mut line.glyphs);
        }
    }
    line.advance = line.glyphs.iter().map(|g| g.advance).sum();
    let drawn: String = line.glyphs.iter().map(|g| g.text.as_str()).collect();
    line.reordered = missing || drawn != line.logical;
    line
}

/// Shapes one directional run and appends its glyphs in visual order;
/// returns whether the font lacked a glyph (drawn as the placeholder box).
fn shape_run(face: &Face, run: &str, rtl: bool, out: &mut Vec<Glyph>) -> bool {
    let mut buf = Buffer::new();
    buf.push_str(run);
    buf.set_direction(if rtl {
        Direction::RightToLeft
    } else {
        Direction::LeftToRight
    });
    // The script (Arabic, Latin, Hebrew...) from the text itself.
    buf.guess_segment_properties();
    // Marks keep their own cluster, so base letters and harakat each map
    // back to their own character.
    buf.set_cluster_level(ClusterLevel::MonotoneCharacters);
    // The scale defaults to the font's units per em: positions in font units.
    let shaper = ShaperFont::new(&face.shaping);
    if harfrust::shape(&shaper, &mut buf, ShapeOptions::new()).is_err() {
        // Cannot happen with a direction set and no plan given; should it,
        // the run is left out rather than the receipt lost (its text is
        // still in /ActualText, as the drawn text then differs).
        return false;
    }
    let infos = buf.glyph_infos();
    let positions = buf.glyph_positions();
    let texts = cluster_texts(run, infos.iter().map(|i| i.cluster as usize), rtl);
    let mut missing = false;
    for ((info, pos), text) in infos.iter().zip(positions).zip(texts) {
        // Joiners and bidi controls shape to nothing visible.
        if pos.x_advance == 0 && !text.is_empty() && text.chars().all(is_format) {
            continue;
        }
        let mut glyph = Glyph {
            gid: u16::try_from(info.glyph_id).unwrap_or(0),
            advance: pos.x_advance,
            x_offset: pos.x_offset,
            y_offset: pos.y_offset,
            text,
        };
        if glyph.gid == 0 {
            missing = true;
            glyph.gid = face.placeholder;
            glyph.advance = i32::from(face.advance(face.placeholder));
            glyph.x_offset = 0;
            glyph.y_offset = 0;
        }
        out.push(glyph);
    }
    missing
}

/// For each glyph (in the shaper's order) the text of its cluster, given to
/// the glyph that comes first in logical order and "" to the others.
/// `clusters` are byte offsets into `run`.
fn cluster_texts(run: &str, clusters: impl Iterator<Item = usize>, rtl: bool) -> Vec<String> {
    let clusters: Vec<usize> = clusters.collect();
    let mut starts = clusters.clone();
    starts.sort_unstable();
    starts.dedup();
    let text_of = |c: usize| {
        let next = starts.iter().copied().find(|&s| s > c).unwrap_or(run.len());
        run.get(c..next).unwrap_or_default().to_string()
    };
    let mut out = vec![String::new(); clusters.len()];
    let mut seen = std::collections::HashSet::new();
    // Right-to-left glyphs come out in visual order: logical order is
    // backwards.
    let order: Box<dyn Iterator<Item = usize>> = if rtl {
        Box::new((0..clusters.len()).rev())
    } else {
        Box::new(0..clusters.len())
    };
    for i in order {
        if seen.insert(clusters[i]) {
            out[i] = text_of(clusters[i]);
        }
    }
    out
}

/// Breaks `text` into lines of at most `max_width` points (at most
/// `max_lines`; the last one ends in "…" when text is cut) and shapes them.
pub(super) fn wrap(
    face: &Face,
    text: &str,
    size: f32,
    max_width: f32,
    max_lines: usize,
) -> Vec<TextLine> {
    let text = sanitize(text);
    let rtl = is_rtl(&text);
    let width = |s: &str| face.points(shape_line(face, s, rtl).advance, size);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    // Greedy: a candidate line is shaped whole, so kerning and joining
    // across its words count.
    for word in text.split(' ') {
        let candidate = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if width(&candidate) <= max_width {
            cur = candidate;
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

#[cfg(test)]
mod tests {
    use super::super::font::face;
    use super::*;

    /// What each glyph of a shaped line is, as the character the font maps
    /// to it, preferring presentation forms (they name the contextual form;
    /// isolated letters keep their own glyph), in drawing order.
    fn displayed(text: &str) -> String {
        let face = face().unwrap();
        let by_glyph: std::collections::HashMap<u16, char> = face
            .pdf
            .codepoint_to_glyph
            .iter()
            .filter_map(|(&c, &g)| Some((g, char::from_u32(c)?)))
            .collect(); // ascending code points: the highest wins
        shape_line(face, text, is_rtl(text))
            .glyphs
            .iter()
            .map(|g| by_glyph.get(&g.gid).copied().unwrap_or('\u{FFFD}'))
            .collect()
    }

    fn chars(codes: &[u32]) -> String {
        codes.iter().map(|&c| char::from_u32(c).unwrap()).collect()
    }

    #[test]
    fn arabic_letters_take_their_joining_forms() {
        // محمد: meem initial, hah medial, meem medial, dal final; drawn right to left.
        assert_eq!(displayed("محمد"), chars(&[0xFEAA, 0xFEE4, 0xFEA4, 0xFEE3]));
        // شركة النور: reh and waw never join the next letter, so kaf and the
        // last reh start afresh; "ال" is alef + initial lam.
        assert_eq!(
            displayed("شركة النور"),
            chars(&[0x0631, 0xFEEE, 0xFEE8, 0xFEDF, 0x0627, 0x20, 0xFE94, 0xFEDB, 0xFEAE, 0xFEB7])
        );
        // Lam-alef is one ligature glyph, final after a joining letter: سلام.
        assert_eq!(displayed("سلام"), chars(&[0x0645, 0xFEFC, 0xFEB3]));
        assert_eq!(displayed("لا"), chars(&[0xFEFB]));
    }

    #[test]
    fn marks_are_placed_by_the_fonts_gpos_not_overlapping() {
        let face = face().unwrap();
        // مُحَمَّد: damma, fatha, shadda + fatha stacked on the second meem.
        let line = shape_line(face, "مُحَمَّد", true);
        // DejaVu draws shadda + fatha as one glyph (a GSUB ligature).
        let marks: Vec<&Glyph> = line.glyphs.iter().filter(|g| g.advance == 0).collect();
        assert_eq!(marks.len(), 3, "{:?}", line.glyphs);
        // Every mark is moved by GPOS onto its letter, each letter's its own
        // way (the hand-written shaper only centred them over the advance).
        assert!(marks.iter().all(|m| m.x_offset != 0 && m.y_offset != 0));
        let places: std::collections::BTreeSet<(i32, i32)> =
            marks.iter().map(|m| (m.x_offset, m.y_offset)).collect();
        assert!(places.len() >= 2, "{marks:?}");
        // The line's text is still all there, letter by letter.
        let mut texts: Vec<&str> = line.glyphs.iter().map(|g| g.text.as_str()).collect();
        texts.reverse();
        let mut got: Vec<char> = texts.concat().chars().collect();
        let mut want: Vec<char> = "مُحَمَّد".chars().collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn latin_is_kerned() {
        let face = face().unwrap();
        let line = shape_line(face, "AVATAR", false);
        let nominal: i32 = "AVATAR"
            .chars()
            .map(|c| i32::from(face.advance(face.gid(c).unwrap())))
            .sum();
        assert!(line.advance < nominal, "{} vs {nominal}", line.advance);
        assert!(!line.reordered);
    }

    #[test]
    fn mixed_text_keeps_latin_and_digits_left_to_right() {
        let face = face().unwrap();
        let visual = |t: &str| -> String {
            shape_line(face, t, is_rtl(t))
                .glyphs
                .iter()
                .map(|g| face.unicode_of(g.gid, &g.text))
                .collect()
        };
        // Right-to-left paragraph: the Latin run and the number keep their
        // order and sit to the left of the Arabic word.
        assert_eq!(visual("قهوة Coffee 2"), "Coffee 2 ةوهق");
        // A number after Arabic is a right-to-left neighbour (UAX #9 W2).
        assert_eq!(visual("قهوة 2 x"), "x 2 ةوهق");
        // Digits (and their decimal point) are never reversed.
        assert!(visual("سعر 15.50").starts_with("15.50 "));
        // Brackets are mirrored so they still enclose the word.
        assert_eq!(visual("حليب (لتر)"), "(رتل) بيلح");
        // Left-to-right text is left alone.
        assert_eq!(visual("Espresso 2x (1kg)"), "Espresso 2x (1kg)");
        // Arabic inside a Latin paragraph is reversed in place.
        assert_eq!(visual("Tea محمد x2"), "Tea دمحم x2");
        // Explicit isolates are honoured (the hand-written bidi dropped them).
        assert_eq!(visual("\u{2067}abc\u{2069} def"), "abc def");
    }

    #[test]
    fn missing_glyphs_become_the_placeholder_box() {
        let face = face().unwrap();
        let line = shape_line(face, "王 Wang", false);
        assert_eq!(line.glyphs[0].gid, face.placeholder);
        assert!(line.reordered, "the real text goes to /ActualText");
        assert_eq!(line.glyphs[0].text, "王");
    }

    #[test]
    fn long_descriptions_wrap_then_end_in_an_ellipsis() {
        let face = face().unwrap();
        let body = 9.5;
        let width = 262.0;
        let long = "Organic single origin Ethiopian Yirgacheffe whole bean coffee, \
                    washed process, light roast, notes of jasmine and bergamot, 1kg bag"
            .repeat(3);
        let lines = wrap(face, &long, body, width, 3);
        assert_eq!(lines.len(), 3);
        for l in &lines {
            assert!(face.points(l.advance, body) <= width + 0.01);
        }
        assert!(lines[2].logical.ends_with('…'), "{}", lines[2].logical);
        // A single word wider than the column is broken, not overflowing.
        let word = "X".repeat(200);
        let lines = wrap(face, &word, body, width, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines
            .iter()
            .all(|l| face.points(l.advance, body) <= width + 0.01));
        // Arabic wraps too, and each line stays right-to-left.
        let ar = "قهوة عربية محمصة مع الهيل ".repeat(10);
        let lines = wrap(face, &ar, body, width, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.reordered));
    }
}
