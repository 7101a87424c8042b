//! A minimal PDF 1.4 writer, by hand: enough for the simulators to serve a
//! real, valid document (the Laravel backend serves dompdf output).
//!
//! Pages are A4 (595 x 842 points), text is set in the standard Type 1 fonts
//! Helvetica (body) and Helvetica-Bold (title) with WinAnsiEncoding, one
//! `BT /F1 10 Tf x y Td (text) Tj ET` block per line; content streams are not
//! compressed. Text is limited to printable ASCII: `(`, `)` and `\` are
//! escaped, every other character (non-ASCII, control characters) is
//! replaced by `?`. Long lines are wrapped, many lines flow onto more pages.
//! The output depends only on the input (no dates, no random ids), so equal
//! input gives byte-identical files.

const PAGE_WIDTH: u32 = 595;
const PAGE_HEIGHT: u32 = 842;
const MARGIN: u32 = 50;
const LINE_HEIGHT: u32 = 14;
const TITLE_SIZE: u32 = 14;
const BODY_SIZE: u32 = 10;
/// Characters per line before wrapping (Helvetica 10 pt averages ~5 pt).
const WRAP_AT: usize = 95;

/// Escapes `s` for a PDF literal string: `(`, `)`, `\` get a backslash,
/// anything outside printable ASCII becomes `?`.
pub fn escape_pdf_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// Splits a line into chunks of at most [`WRAP_AT`] characters, at spaces
/// where possible.
fn wrap(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= WRAP_AT {
        return vec![line.to_string()];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while chars.len() - start > WRAP_AT {
        let window = &chars[start..start + WRAP_AT];
        let cut = match window.iter().rposition(|c| *c == ' ') {
            Some(i) if i > WRAP_AT / 2 => i,
            _ => WRAP_AT,
        };
        out.push(chars[start..start + cut].iter().collect());
        start += cut;
        while start < chars.len() && chars[start] == ' ' {
            start += 1;
        }
    }
    if start < chars.len() {
        out.push(chars[start..].iter().collect());
    }
    out
}

fn text_op(out: &mut String, font: &str, size: u32, x: u32, y: u32, text: &str) {
    out.push_str(&format!(
        "BT /{font} {size} Tf {x} {y} Td ({}) Tj ET\n",
        escape_pdf_text(text)
    ));
}

/// Renders `title` (bold, on every page) and `lines` (wrapped, paginated)
/// into a complete PDF 1.4 file. Each page ends with "Page n of m".
pub fn render_text_pdf(title: &str, lines: &[String]) -> Vec<u8> {
    let wrapped: Vec<String> = lines.iter().flat_map(|l| wrap(l)).collect();
    // Title line, a gap, body, a gap, footer.
    let top = PAGE_HEIGHT - MARGIN;
    let body_top = top - 2 * LINE_HEIGHT;
    let body_bottom = MARGIN + 2 * LINE_HEIGHT;
    let per_page = ((body_top - body_bottom) / LINE_HEIGHT + 1) as usize;
    let pages: Vec<&[String]> = if wrapped.is_empty() {
        vec![&[]]
    } else {
        wrapped.chunks(per_page).collect()
    };
    let page_count = pages.len();

    // Object numbers: 1 catalog, 2 pages, 3 F1, 4 F2, 5 info, then per page
    // (page, content).
    let first_page_obj = 6;
    let mut objects: Vec<Vec<u8>> = Vec::new();
    let kids: Vec<String> = (0..page_count)
        .map(|i| format!("{} 0 R", first_page_obj + 2 * i))
        .collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {page_count} >>",
            kids.join(" ")
        )
        .into_bytes(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    );
    objects.push(
        format!(
            "<< /Title ({}) /Producer (pos-connector sandbox) >>",
            escape_pdf_text(title)
        )
        .into_bytes(),
    );
    for (i, page_lines) in pages.iter().enumerate() {
        let content_obj = first_page_obj + 2 * i + 1;
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
                 /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {content_obj} 0 R >>"
            )
            .into_bytes(),
        );
        let mut content = String::new();
        text_op(&mut content, "F2", TITLE_SIZE, MARGIN, top, title);
        let mut y = body_top;
        for line in page_lines.iter() {
            if !line.trim().is_empty() {
                text_op(&mut content, "F1", BODY_SIZE, MARGIN, y, line);
            }
            y -= LINE_HEIGHT;
        }
        text_op(
            &mut content,
            "F1",
            BODY_SIZE - 2,
            MARGIN,
            MARGIN,
            &format!("Page {} of {page_count}", i + 1),
        );
        let mut obj = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        obj.extend_from_slice(content.as_bytes());
        obj.extend_from_slice(b"\nendstream");
        objects.push(obj);
    }

    let mut out: Vec<u8> = Vec::new();
    out.extend_from_slice(b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n");
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref_at = out.len();
    let size = objects.len() + 1;
    out.extend_from_slice(format!("xref\n0 {size}\n0000000000 65535 f \n").as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {size} /Root 1 0 R /Info 5 0 R >>\nstartxref\n{xref_at}\n%%EOF\n"
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    /// Checks the xref table against the file: every entry points at its
    /// `N 0 obj`, startxref at `xref`. Returns the number of objects.
    fn check_structure(pdf: &[u8]) -> usize {
        assert!(pdf.starts_with(b"%PDF-1.4\n"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        let sx = pdf.windows(10).rposition(|w| w == b"startxref\n").unwrap();
        let tail = std::str::from_utf8(&pdf[sx + 10..]).unwrap();
        let xref_at: usize = tail.lines().next().unwrap().parse().unwrap();
        assert_eq!(&pdf[xref_at..xref_at + 5], b"xref\n");
        let xref = std::str::from_utf8(&pdf[xref_at..]).unwrap();
        let mut lines = xref.lines();
        lines.next();
        let header = lines.next().unwrap();
        let size: usize = header.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(lines.next().unwrap(), "0000000000 65535 f ");
        for n in 1..size {
            let entry = lines.next().unwrap();
            assert_eq!(entry.len(), 19, "entry lines are 20 bytes with the newline");
            let off: usize = entry[..10].parse().unwrap();
            let expect = format!("{n} 0 obj\n");
            assert_eq!(
                &pdf[off..off + expect.len()],
                expect.as_bytes(),
                "object {n}"
            );
        }
        assert_eq!(lines.next().unwrap(), "trailer");
        assert!(xref.contains(&format!("/Size {size} ")));
        // stream lengths are exact
        let mut from = 0;
        while let Some(p) = find(&pdf[from..], b"/Length ") {
            let at = from + p + 8;
            let end = at + pdf[at..].iter().position(|b| *b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&pdf[at..end]).unwrap().parse().unwrap();
            let start = at + find(&pdf[at..], b"stream\n").unwrap() + 7;
            assert_eq!(&pdf[start + len..start + len + 10], b"\nendstream");
            from = start + len;
        }
        size - 1
    }

    #[test]
    fn structure_and_text() {
        let lines = vec![
            "Hello (world) back\\slash".to_string(),
            "Caf\u{e9} \u{645}\u{631}\u{62d}\u{628}\u{627}".to_string(),
            String::new(),
            "Total: 116.00".to_string(),
        ];
        let pdf = render_text_pdf("Invoice INV-1", &lines);
        assert_eq!(check_structure(&pdf), 7);
        assert!(find(&pdf, b"BT /F2 14 Tf 50 792 Td (Invoice INV-1) Tj ET").is_some());
        assert!(find(&pdf, b"(Hello \\(world\\) back\\\\slash) Tj").is_some());
        assert!(find(&pdf, b"(Caf? ?????) Tj").is_some());
        assert!(find(&pdf, b"(Total: 116.00) Tj").is_some());
        assert!(find(&pdf, b"(Page 1 of 1) Tj").is_some());
        assert_eq!(pdf, render_text_pdf("Invoice INV-1", &lines));
    }

    #[test]
    fn many_lines_make_pages_and_long_lines_wrap() {
        let mut lines: Vec<String> = (0..130).map(|i| format!("line number {i}")).collect();
        lines.push(format!("{} END", "word ".repeat(40)));
        let pdf = render_text_pdf("Long", &lines);
        let objects = check_structure(&pdf);
        assert_eq!(objects, 5 + 2 * 3);
        assert!(find(&pdf, b"/Count 3 ").is_some());
        assert!(find(&pdf, b"(Page 3 of 3) Tj").is_some());
        assert!(find(&pdf, b"(line number 129) Tj").is_some());
        assert!(find(&pdf, b" END) Tj").is_some());
        assert_eq!(wrap(&"x".repeat(200)).len(), 3);
        assert_eq!(check_structure(&render_text_pdf("Empty", &[])), 7);
    }
}
