//! Receipts as they look: each reference receipt is rendered to PDF, the
//! PDF rasterised with poppler's `pdftoppm` (100 dpi, grey) and compared with
//! the committed image in `tests/fixtures/receipts/` within a tolerance, so
//! rasteriser noise passes but a wrong joining form, an unmirrored bracket,
//! overlapping harakat or a moved column fails.
//!
//! A pixel differs when a channel differs by more than 64 (of 255). The
//! test fails when more than 0.5% of the pixels differ, or when any 16x16
//! tile holds more than 16 differing pixels: the tile rule catches the small
//! local errors a flat ratio would average away (two unmirrored brackets
//! are 0.07% of an 80 mm receipt).
//!
//! On failure the render is written next to the reference as
//! `<name>.actual.png`. `UPDATE_REFERENCES=1` (or a missing reference)
//! writes the references instead: look at them before committing them.
//!
//! `scripts/test.sh` installs poppler-utils and sets
//! `POS_CONNECTOR_REQUIRE_PDFTOPPM=1`, so CI cannot skip this. Elsewhere,
//! without pdftoppm, the test says so and passes.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;

use pos_connector::receipt::{self, Paper, Receipt, ReceiptLine};

const DIFF_THRESHOLD: u8 = 64;
const MAX_DIFF_RATIO: f64 = 0.005;
const TILE: usize = 16;
const MAX_TILE_DIFFS: usize = 16;

fn line(description: &str, quantity: &str, unit_price: &str) -> ReceiptLine {
    ReceiptLine {
        description: description.to_string(),
        quantity: quantity.parse().unwrap(),
        unit_price: unit_price.parse().unwrap(),
    }
}

/// Arabic with harakat and lam-alef, brackets, mixed Arabic/Latin lines,
/// European and Arabic-Indic digits, a percentage.
fn arabic_receipt() -> Receipt {
    Receipt {
        shop_name: "مقهى النور Al Noor".to_string(),
        invoice_number: "INV-2026-000123".to_string(),
        date: "2026-11-22".to_string(),
        customer: "مُحَمَّد علي".to_string(),
        currency: "JOD".to_string(),
        lines: vec![
            line("قهوة Coffee 2 x 1.500", "2", "1.500"),
            line("شاي (كبير) Tea", "3", "0.750"),
            line("لا إله حلويات ١٢٣", "1", "2.25"),
            line("Espresso beans 1kg (AVATAR WAVE office)", "1", "15.50"),
            line("خصم 16% على الكعك", "4", "0.995"),
        ],
    }
}

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/receipts")
}

fn pdftoppm() -> Option<PathBuf> {
    std::env::var_os("PDFTOPPM")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/pdftoppm")])
        .find(|c| c.is_file())
}

struct Image {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

fn read_png(path: &Path) -> Image {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut data = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut data).unwrap();
    data.truncate(info.buffer_size());
    Image {
        width: info.width as usize,
        height: info.height as usize,
        channels: info.color_type.samples(),
        data,
    }
}

/// Renders page 1 of `pdf` to a PNG and returns its path.
fn rasterise(pdftoppm: &Path, pdf: &[u8], dir: &Path, name: &str) -> PathBuf {
    let input = dir.join(format!("{name}.pdf"));
    std::fs::write(&input, pdf).unwrap();
    let prefix = dir.join(name);
    let out = Command::new(pdftoppm)
        .args(["-r", "100", "-png", "-gray", "-singlefile"])
        .arg(&input)
        .arg(&prefix)
        .output()
        .expect("pdftoppm runs");
    assert!(
        out.status.success(),
        "pdftoppm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    prefix.with_extension("png")
}

/// Why `actual` is not `expected` within the tolerance, if it is not.
fn difference(expected: &Image, actual: &Image) -> Option<String> {
    if (expected.width, expected.height) != (actual.width, actual.height) {
        return Some(format!(
            "size {}x{} instead of {}x{}",
            actual.width, actual.height, expected.width, expected.height
        ));
    }
    let (w, h) = (expected.width, expected.height);
    // pdftoppm's grey output may still come as RGB: compare the first
    // channel of grey images with every channel of colour ones.
    let pixel = |img: &Image, x: usize, y: usize| -> Vec<u8> {
        let at = (y * w + x) * img.channels;
        let n = if img.channels >= 3 { 3 } else { 1 };
        let px = &img.data[at..at + n];
        if n == 1 {
            vec![px[0]; 3]
        } else {
            px.to_vec()
        }
    };
    let tiles_x = w.div_ceil(TILE);
    let mut tiles = vec![0usize; tiles_x * h.div_ceil(TILE)];
    let mut total = 0usize;
    for y in 0..h {
        for x in 0..w {
            let (a, b) = (pixel(expected, x, y), pixel(actual, x, y));
            if a.iter()
                .zip(&b)
                .any(|(a, b)| a.abs_diff(*b) > DIFF_THRESHOLD)
            {
                total += 1;
                tiles[(y / TILE) * tiles_x + x / TILE] += 1;
            }
        }
    }
    let ratio = total as f64 / (w * h) as f64;
    let (worst, worst_at) = tiles
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i))
        .max()
        .unwrap_or((0, 0));
    if ratio > MAX_DIFF_RATIO || worst > MAX_TILE_DIFFS {
        return Some(format!(
            "{:.3}% of the pixels differ (limit {:.1}%), worst 16x16 tile has {worst} \
             (limit {MAX_TILE_DIFFS}) at x={} y={}",
            ratio * 100.0,
            MAX_DIFF_RATIO * 100.0,
            (worst_at % tiles_x) * TILE,
            (worst_at / tiles_x) * TILE,
        ));
    }
    None
}

#[test]
fn receipts_look_like_their_reference_images() {
    let Some(pdftoppm) = pdftoppm() else {
        assert!(
            std::env::var("POS_CONNECTOR_REQUIRE_PDFTOPPM").is_err(),
            "pdftoppm is required here (apt-get install poppler-utils)"
        );
        eprintln!("SKIPPED: no pdftoppm (apt-get install poppler-utils)");
        return;
    };
    let update = std::env::var_os("UPDATE_REFERENCES").is_some();
    let tmp = tempfile::tempdir().unwrap();
    let refs = reference_dir();
    let mut failures = Vec::new();
    for (name, paper) in [
        ("arabic-80mm", Paper::Roll80),
        ("arabic-58mm", Paper::Roll58),
        ("arabic-a4", Paper::A4),
    ] {
        let pdf = receipt::render(&arabic_receipt(), paper).unwrap();
        let png = rasterise(&pdftoppm, &pdf, tmp.path(), name);
        let reference = refs.join(format!("{name}.png"));
        if update || !reference.exists() {
            std::fs::create_dir_all(&refs).unwrap();
            std::fs::copy(&png, &reference).unwrap();
            eprintln!("wrote {}", reference.display());
            continue;
        }
        if let Some(why) = difference(&read_png(&reference), &read_png(&png)) {
            let actual = refs.join(format!("{name}.actual.png"));
            std::fs::copy(&png, &actual).unwrap();
            failures.push(format!("{name}: {why} (see {})", actual.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_tolerance_passes_noise_and_catches_small_changes() {
    let blank = |w: usize, h: usize| Image {
        width: w,
        height: h,
        channels: 1,
        data: vec![255; w * h],
    };
    let a = blank(160, 160);
    let mut b = blank(160, 160);
    // Anti-aliasing drift: slightly different greys pass.
    for px in b.data.iter_mut().step_by(7) {
        *px = 200;
    }
    assert_eq!(difference(&a, &b), None);
    // A dozen scattered dark pixels pass...
    let mut c = blank(160, 160);
    for i in 0..12 {
        c.data[i * 2000] = 0;
    }
    assert_eq!(difference(&a, &c), None);
    // ... a 5x5 blot in one place does not (a misplaced mark).
    let mut d = blank(160, 160);
    for y in 40..45 {
        for x in 40..45 {
            d.data[y * 160 + x] = 0;
        }
    }
    assert!(difference(&a, &d).unwrap().contains("tile has 25"));
    // Neither does a different page size.
    assert!(difference(&a, &blank(160, 170)).unwrap().contains("size"));
}
