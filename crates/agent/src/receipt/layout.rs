//! Page layout: where each part of the receipt goes, on A4 or on a roll.

use std::collections::{BTreeMap, BTreeSet};

use printpdf::{
    Codepoint, Color, DictItem, FontId, Greyscale, Line, LinePoint, Mm, Op, PaintMode,
    PdfFontHandle, PdfPage, Point, Pt, Rect, TextItem, TextMatrix, TextRenderingMode,
};
use rust_decimal::Decimal;

use super::font::Face;
use super::pdf::utf16be;
use super::text::{sanitize, shape_line, wrap, TextLine};
use super::{
    code_point_list, money, quantity, tax_label_ar, tax_label_en, Paper, Receipt, FONT_RESOURCE,
    MISSING_NOTICE, MISSING_NOTICE_AR, NOTICE_AR, NOTICE_EN, TITLE_EN,
};
use crate::tax;

/// The longest page a PDF may have (ISO 32000-1, annex C: 14,400 units):
/// a roll receipt longer than that continues on a second page (a point less,
/// against rounding in the unit conversions).
const MAX_ROLL_PAGE: f32 = 14_399.0;
const GREY: f32 = 0.35;

/// The page geometry and type sizes of one paper, in points.
#[derive(Debug, Clone, Copy)]
struct Sheet {
    width: f32,
    /// A4's height; for a roll the longest page, the last page being cut to
    /// its content.
    height: f32,
    /// A roll: one column, each table row on two lines, the page as long as
    /// the receipt.
    roll: bool,
    margin_x: f32,
    margin_top: f32,
    margin_bottom: f32,
    body: f32,
    small: f32,
    title: f32,
    shop: f32,
    footer: f32,
}

const fn mm(mm: f32) -> f32 {
    mm * 72.0 / 25.4
}

impl Sheet {
    fn of(paper: Paper) -> Sheet {
        match paper {
            Paper::A4 => Sheet {
                width: 595.28,
                height: 841.89,
                roll: false,
                margin_x: 42.0,
                margin_top: 46.0,
                margin_bottom: 38.0,
                body: 9.5,
                small: 8.0,
                title: 11.0,
                shop: 16.0,
                footer: 7.5,
            },
            // Till printers print 72 mm of an 80 mm roll and 48 mm of a
            // 58 mm one; the margins keep the text inside that.
            Paper::Roll80 => Sheet {
                width: mm(80.0),
                height: MAX_ROLL_PAGE,
                roll: true,
                margin_x: mm(4.0),
                margin_top: 12.0,
                margin_bottom: 12.0,
                body: 8.5,
                small: 7.0,
                title: 9.0,
                shop: 12.0,
                footer: 6.5,
            },
            Paper::Roll58 => Sheet {
                width: mm(58.0),
                height: MAX_ROLL_PAGE,
                roll: true,
                margin_x: mm(5.0),
                margin_top: 10.0,
                margin_bottom: 10.0,
                body: 7.5,
                small: 6.5,
                title: 8.0,
                shop: 10.5,
                footer: 6.0,
            },
        }
    }

    fn content_w(&self) -> f32 {
        self.width - 2.0 * self.margin_x
    }

    fn left(&self) -> f32 {
        self.margin_x
    }

    fn right(&self) -> f32 {
        self.width - self.margin_x
    }
}

// A4's table columns (x of the left edge, or the right edge for numbers).
const A4_DESC_W: f32 = 262.0;
const A4_QTY_RIGHT: f32 = 42.0 + 330.0;
const A4_PRICE_RIGHT: f32 = 42.0 + 420.0;
const A4_NUM_COL_W: f32 = 82.0;

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

pub(super) struct Composer<'a> {
    face: &'a Face,
    r: &'a Receipt,
    sheet: Sheet,
    /// A roll's last page is cut to this height (known from a first pass).
    last_page: Option<(usize, f32)>,
    /// Bottom of the text area; the footer sits below it.
    body_bottom: f32,
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    /// Top of the free space on the current page (PDF y, grows upwards).
    y: f32,
    /// Glyphs drawn so far, with the `/ToUnicode` text of each.
    used: BTreeMap<u16, String>,
}

/// Lays the receipt out on `paper`. A roll's page is as long as the
/// receipt: a first pass measures it, the second draws on a page of that
/// length (the layout is the same, only measured from another top).
pub(super) fn compose(
    face: &Face,
    r: &Receipt,
    paper: Paper,
    missing: &BTreeSet<char>,
    line_totals: &[Decimal],
    totals: &tax::Totals,
) -> (Vec<PdfPage>, BTreeMap<u16, String>) {
    let run = |last_page| {
        let mut c = Composer::new(face, r, paper, last_page);
        c.first_page_header(missing);
        c.table(line_totals);
        c.totals(totals);
        c
    };
    let c = run(None);
    if !c.sheet.roll {
        return c.finish();
    }
    // The last page's content, a small gap, the footer.
    let height = c.sheet.height - c.y + c.body_bottom + 4.0;
    run(Some((c.pages.len(), height))).finish()
}

impl<'a> Composer<'a> {
    fn new(face: &'a Face, r: &'a Receipt, paper: Paper, last_page: Option<(usize, f32)>) -> Self {
        let sheet = Sheet::of(paper);
        let mut c = Composer {
            face,
            r,
            sheet,
            last_page,
            body_bottom: 0.0,
            pages: Vec::new(),
            ops: Vec::new(),
            y: 0.0,
            used: BTreeMap::new(),
        };
        c.body_bottom = sheet.margin_bottom + c.footer_height();
        c.y = c.page_height() - sheet.margin_top;
        c
    }

    /// The height of the page being composed.
    fn page_height(&self) -> f32 {
        match self.last_page {
            Some((index, height)) if index == self.pages.len() => height,
            _ => self.sheet.height,
        }
    }

    /// The footer's text: on A4 one line beside the page number, on a roll
    /// wrapped, with the page number under it.
    fn footer_lines(&self) -> Vec<TextLine> {
        let left = format!("{} · {NOTICE_EN}", sanitize(&self.r.invoice_number));
        let st = self.footer_style();
        let width = if self.sheet.roll {
            self.sheet.content_w()
        } else {
            self.sheet.content_w() - 80.0
        };
        self.wrap(&left, st, width, if self.sheet.roll { 3 } else { 1 })
    }

    fn footer_style(&self) -> Style {
        style(self.sheet.footer, false, GREY)
    }

    fn footer_line_h(&self) -> f32 {
        self.sheet.footer + 2.5
    }

    /// Room the footer takes above the bottom margin: a gap, the rule, the
    /// lines.
    fn footer_height(&self) -> f32 {
        let lines = self.footer_lines().len() + usize::from(self.sheet.roll);
        24.0 + self.footer_line_h() * (lines as f32 - 1.0)
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
            Align::Center => (self.sheet.width - w) / 2.0,
        };
        for g in &line.glyphs {
            let text = self.face.unicode_of(g.gid, &g.text);
            let known = self.used.entry(g.gid).or_default();
            // The first non-empty text wins: a glyph that is only ever the
            // second of its cluster keeps "".
            if known.is_empty() {
                *known = text;
            }
        }
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
        // The line's origin first (Td), so extraction finds its baseline
        // even when the first glyph drawn is a raised mark; then every glyph
        // at its own position, which printpdf writes as one kerned TJ per
        // run of glyphs on the baseline.
        self.ops.push(Op::SetTextCursor {
            pos: Point { x: Pt(x), y: Pt(y) },
        });
        let scale = st.size / self.face.units_per_em();
        let mut pen = x;
        for g in &line.glyphs {
            let at_x = pen + g.x_offset as f32 * scale;
            let at_y = y + g.y_offset as f32 * scale;
            self.ops.push(Op::SetTextMatrix {
                matrix: TextMatrix::Translate(Pt(at_x), Pt(at_y)),
            });
            self.ops.push(Op::ShowText {
                items: vec![TextItem::GlyphIds(vec![Codepoint {
                    gid: g.gid,
                    offset: 0.0,
                    cid: None,
                }])],
            });
            pen += g.advance as f32 * scale;
        }
        self.ops.push(Op::EndTextSection);
        self.ops.push(Op::RestoreGraphicsState);
        if line.reordered {
            self.ops.push(Op::EndMarkedContentWithProperties);
        }
    }

    fn put_text(&mut self, text: &str, align: Align, y: f32, st: Style) {
        let line = self
            .wrap(text, st, self.sheet.content_w(), 1)
            .into_iter()
            .next()
            .unwrap_or_default();
        self.put(&line, align, y, st);
    }

    /// A number in a column `col_w` wide ending at `right` (starting at
    /// `right - col_w` when `left_aligned`); shrunk rather than cut if it is
    /// too wide, since a cut amount would be wrong.
    fn put_number(
        &mut self,
        text: &str,
        right: f32,
        y: f32,
        st: Style,
        col_w: f32,
        left_aligned: bool,
    ) {
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
        let align = if left_aligned {
            Align::Left(right - col_w)
        } else {
            Align::Right(right)
        };
        self.put(&line, align, y, st);
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
                x: Pt(self.sheet.left()),
                y: Pt(top - height),
                width: Pt(self.sheet.content_w()),
                height: Pt(height),
                mode: Some(PaintMode::FillStroke),
                winding_order: None,
            },
        });
        self.ops.push(Op::RestoreGraphicsState);
    }

    /// Draws lines one under the other from the current position.
    fn put_lines(&mut self, lines: &[TextLine], align: Align, st: Style, line_h: f32) {
        for line in lines {
            self.y -= line_h;
            self.put(line, align, self.y, st);
        }
    }

    /// Starts a new page if fewer than `needed` points are left.
    fn ensure(&mut self, needed: f32, in_table: bool) {
        if self.y - needed >= self.body_bottom {
            return;
        }
        // A roll's last page, cut to its content: the first pass found that
        // everything left fits (the room asked for ahead is not all used).
        if matches!(self.last_page, Some((index, _)) if index == self.pages.len()) {
            return;
        }
        self.pages.push(std::mem::take(&mut self.ops));
        self.y = self.page_height() - self.sheet.margin_top;
        let head = format!(
            "{} · {} (continued)",
            sanitize(&self.r.shop_name),
            sanitize(&self.r.invoice_number)
        );
        self.y -= 10.0;
        let (left, small) = (self.sheet.left(), self.sheet.small);
        self.put_text(&head, Align::Left(left), self.y, style(small, false, GREY));
        self.y -= 14.0;
        if in_table {
            self.table_header();
        }
    }

    pub(super) fn first_page_header(&mut self, missing: &BTreeSet<char>) {
        let r = self.r;
        let sh = self.sheet;
        let (left, right, content_w) = (sh.left(), sh.right(), sh.content_w());
        let name_st = style(sh.shop, true, 0.0);
        let name = self.wrap(&r.shop_name, name_st, content_w, 2);
        self.put_lines(&name, Align::Center, name_st, sh.shop + 2.0);
        let title_st = style(sh.title - 1.0, false, GREY);
        let title = self.wrap(&format!("{TITLE_EN} · إيصال مؤقت"), title_st, content_w, 2);
        self.y -= 2.0;
        self.put_lines(&title, Align::Center, title_st, sh.title + 1.0);

        // The notice: boxed, bold, in both languages.
        self.y -= 10.0;
        let top = self.y;
        let st = style(sh.title, true, 0.0);
        let line_h = sh.title + 5.0;
        let mut notice = self.wrap(NOTICE_EN, st, content_w - 8.0, 3);
        notice.extend(self.wrap(NOTICE_AR, st, content_w - 8.0, 3));
        let height = line_h * notice.len() as f32 + 8.0;
        self.boxed(top, height, 0.92, 1.2);
        self.put_lines(&notice, Align::Center, st, line_h);
        self.y = top - height - 8.0;

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
        let label_st = style(sh.body, false, GREY);
        for (en, ar, value, bold) in rows {
            let value_st = style(sh.body, bold, 0.0);
            if sh.roll {
                // Labels on one line (English left, Arabic right), the value
                // under them across the whole width.
                let label_st = style(sh.small, false, GREY);
                self.y -= sh.small + 4.0;
                self.put_text(en, Align::Left(left), self.y, label_st);
                self.put_text(ar, Align::Right(right), self.y, label_st);
                let lines = self.wrap(value, value_st, content_w, 2);
                self.put_lines(&lines, Align::Left(left), value_st, sh.body + 3.0);
                continue;
            }
            let value_x = left + 80.0;
            let lines = self.wrap(value, value_st, content_w - 80.0 - 90.0, 2);
            self.y -= 13.0;
            // Drawn in reading order (label, value, Arabic label), which is
            // the order text extraction reports.
            self.put_text(en, Align::Left(left), self.y, label_st);
            for (i, line) in lines.iter().enumerate() {
                if i == 1 {
                    self.put_text(ar, Align::Right(right), self.y, label_st);
                }
                if i > 0 {
                    self.y -= 12.0;
                }
                self.put(line, Align::Left(value_x), self.y, value_st);
            }
            if lines.len() < 2 {
                self.put_text(ar, Align::Right(right), self.y, label_st);
            }
        }

        if !missing.is_empty() {
            let text = format!("{MISSING_NOTICE} {}", code_point_list(missing, 40));
            let st = style(sh.small, true, 0.0);
            let line_h = sh.small + 2.0;
            let lines = self.wrap(&text, st, content_w - 12.0, 4);
            let ar = self.wrap(MISSING_NOTICE_AR, st, content_w - 12.0, 2);
            let height = line_h * (lines.len() + ar.len()) as f32 + 8.0;
            self.y -= 8.0;
            let top = self.y;
            self.boxed(top, height, 1.0, 0.8);
            self.y = top - 1.0;
            self.put_lines(&lines, Align::Left(left + 6.0), st, line_h);
            self.put_lines(&ar, Align::Right(right - 6.0), st, line_h);
            self.y = top - height;
        }
        self.y -= if sh.roll { 8.0 } else { 16.0 };
    }

    fn table_header(&mut self) {
        let sh = self.sheet;
        let (left, right) = (sh.left(), sh.right());
        let en = style(sh.body, true, 0.0);
        let ar = style(sh.small, false, GREY);
        self.y -= 10.0;
        let cur = self.r.currency.as_str();
        self.put_text("Description", Align::Left(left), self.y, en);
        if sh.roll {
            self.put_text(&format!("Total ({cur})"), Align::Right(right), self.y, en);
            self.y -= sh.small + 3.0;
            self.put_text("الصنف", Align::Left(left), self.y, ar);
            self.put_text("المجموع", Align::Right(right), self.y, ar);
        } else {
            self.put_text("Qty", Align::Right(A4_QTY_RIGHT), self.y, en);
            self.put_text(
                &format!("Unit price ({cur})"),
                Align::Right(A4_PRICE_RIGHT),
                self.y,
                en,
            );
            self.put_text(
                &format!("Line total ({cur})"),
                Align::Right(right),
                self.y,
                en,
            );
            self.y -= 11.0;
            self.put_text("الصنف", Align::Left(left), self.y, ar);
            self.put_text("الكمية", Align::Right(A4_QTY_RIGHT), self.y, ar);
            self.put_text("سعر الوحدة", Align::Right(A4_PRICE_RIGHT), self.y, ar);
            self.put_text("المجموع", Align::Right(right), self.y, ar);
        }
        self.y -= 5.0;
        self.rule(left, right, self.y, 0.9, 0.0);
    }

    pub(super) fn table(&mut self, line_totals: &[Decimal]) {
        let sh = self.sheet;
        let (left, right) = (sh.left(), sh.right());
        self.ensure(60.0, false);
        self.table_header();
        let st = style(sh.body, false, 0.0);
        let line_h = sh.body + 2.5;
        let r = self.r;
        for (line, total) in r.lines.iter().zip(line_totals) {
            let total = money(*total, 3);
            if sh.roll {
                // The description across the width, then "qty × price" and
                // the line's total under it.
                let desc = self.wrap(&line.description, st, sh.content_w(), 3);
                let height = line_h * (desc.len() + 1) as f32 + 6.0;
                self.ensure(height, true);
                let top = self.y;
                self.y -= 1.5;
                self.put_lines(&desc, Align::Left(left), st, line_h);
                self.y -= line_h;
                let each = format!(
                    "{} × {}",
                    quantity(line.quantity),
                    money(line.unit_price, u32::MAX)
                );
                let half = sh.content_w() / 2.0;
                self.put_number(&each, left + half, self.y, st, half - 8.0, true);
                self.put_number(&total, right, self.y, st, half - 4.0, false);
                self.y = top - height;
                self.rule(left, right, self.y, 0.3, 0.7);
                continue;
            }
            let desc = self.wrap(&line.description, st, A4_DESC_W, 3);
            let height = 12.0 * desc.len() as f32 + 6.0;
            self.ensure(height, true);
            let first = self.y - 13.0;
            // First description line, the numbers, then the rest: reading
            // order, so extraction keeps a row's figures on its first line.
            if let Some(d) = desc.first() {
                self.put(d, Align::Left(left), first, st);
            }
            let qty = quantity(line.quantity);
            self.put_number(&qty, A4_QTY_RIGHT, first, st, 55.0, false);
            let price = money(line.unit_price, u32::MAX);
            self.put_number(&price, A4_PRICE_RIGHT, first, st, A4_NUM_COL_W, false);
            self.put_number(&total, right, first, st, A4_NUM_COL_W, false);
            for (i, d) in desc.iter().enumerate().skip(1) {
                self.put(d, Align::Left(left), first - 12.0 * i as f32, st);
            }
            self.y -= height;
            self.rule(left, right, self.y, 0.3, 0.7);
        }
    }

    pub(super) fn totals(&mut self, t: &tax::Totals) {
        let sh = self.sheet;
        let (left, right) = (sh.left(), sh.right());
        self.ensure(if sh.roll { 80.0 } else { 58.0 }, false);
        let cur = self.r.currency.clone();
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
        // On A4 the labels sit in the right half, Arabic right-aligned
        // before the amount; on a roll the English label starts the line and
        // the Arabic one follows under it, right-aligned.
        let en_x = if sh.roll { left } else { left + 215.0 };
        self.y -= 4.0;
        for (en, ar, amount, bold) in rows {
            let size = if bold { sh.title } else { sh.body };
            let st = style(size, bold, 0.0);
            if bold {
                self.y -= 5.0;
                self.rule(en_x, right, self.y, 0.9, 0.0);
            }
            self.y -= size + if bold { 4.0 } else { 3.5 };
            let amount = format!("{} {cur}", money(amount, 2));
            self.put_text(&en, Align::Left(en_x), self.y, st);
            let ar_st = style(if sh.roll { sh.small } else { size }, bold, GREY);
            if sh.roll {
                self.put_number(&amount, right, self.y, st, sh.content_w() / 2.0, false);
                self.y -= sh.small + 2.0;
                self.put_text(&ar, Align::Right(right), self.y, ar_st);
            } else {
                self.put_text(&ar, Align::Right(A4_PRICE_RIGHT), self.y, ar_st);
                self.put_number(&amount, right, self.y, st, A4_NUM_COL_W, false);
            }
        }
    }

    /// Closes the last page and adds the footers, now that the page count is
    /// known.
    fn finish(mut self) -> (Vec<PdfPage>, BTreeMap<u16, String>) {
        self.pages.push(std::mem::take(&mut self.ops));
        let count = self.pages.len();
        let sh = self.sheet;
        let (left, right) = (sh.left(), sh.right());
        let st = self.footer_style();
        let lines = self.footer_lines();
        let line_h = self.footer_line_h();
        let mut pages = Vec::with_capacity(count);
        for (i, ops) in std::mem::take(&mut self.pages).into_iter().enumerate() {
            let height = match self.last_page {
                Some((index, height)) if index == i => height,
                _ => sh.height,
            };
            self.ops = ops;
            let bottom = self.body_bottom;
            self.rule(left, right, bottom - 12.0, 0.3, 0.7);
            self.y = bottom - 24.0 + line_h;
            self.put_lines(&lines, Align::Left(left), st, line_h);
            let page_no = format!("Page {} of {count}", i + 1);
            if sh.roll {
                self.y -= line_h;
            } else {
                self.y = bottom - 24.0;
            }
            self.put_text(&page_no, Align::Right(right), self.y, st);
            let ops = std::mem::take(&mut self.ops);
            pages.push(PdfPage::new(
                Mm::from(Pt(sh.width)),
                Mm::from(Pt(height)),
                ops,
            ));
        }
        (pages, self.used)
    }
}
