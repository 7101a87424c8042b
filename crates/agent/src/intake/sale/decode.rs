//! Bytes -> text: byte order marks, UTF-8, UTF-16, the legacy code page of
//! `intake.encoding` (encoding_rs), and what is not a text file.

use encoding_rs::{DecoderResult, Encoding};

// ---------------------------------------------------------------------------
// Text decoding
// ---------------------------------------------------------------------------

pub(super) const EXPECTED: &str =
    "expected a CSV or JSON export of sales saved as UTF-8, UTF-16 (with byte order mark) \
     or the code page named by intake.encoding";

/// The file's text, or why it is not one. A byte order mark (UTF-8,
/// UTF-16 LE/BE) wins; ASCII text saved as UTF-16 without one is
/// recognised by its NUL bytes; anything else is read in `encoding`.
pub(super) fn decode(bytes: &[u8], encoding: &'static Encoding) -> Result<String, String> {
    let text = if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        utf8(rest, 3)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, u16::from_le_bytes)?
    } else if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, u16::from_be_bytes)?
    } else if encoding == encoding_rs::UTF_16LE {
        utf16(bytes, u16::from_le_bytes)?
    } else if encoding == encoding_rs::UTF_16BE {
        utf16(bytes, u16::from_be_bytes)?
    } else if bytes.len() >= 4 && bytes[0] != 0 && bytes[1] == 0 && bytes[2] != 0 && bytes[3] == 0 {
        // ASCII text saved as UTF-16 LE without a byte order mark.
        utf16(bytes, u16::from_le_bytes)?
    } else if bytes.len() >= 4 && bytes[0] == 0 && bytes[1] != 0 && bytes[2] == 0 && bytes[3] != 0 {
        utf16(bytes, u16::from_be_bytes)?
    } else {
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(format!(
                "not a text file: it holds NUL bytes (first at byte {at}); {EXPECTED}"
            ));
        }
        if encoding == encoding_rs::UTF_8 {
            utf8(bytes, 0)?
        } else {
            legacy(bytes, encoding)?
        }
    };
    // Old DOS tools end text files with Ctrl-Z; a stray BOM may remain.
    let text = text
        .trim_start_matches('\u{feff}')
        .trim_end_matches('\u{1a}');
    if let Some((i, c)) = text
        .char_indices()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
    {
        let line = text[..i].matches('\n').count() + 1;
        return Err(format!(
            "not a text file: control character U+{:04X} on line {line}; {EXPECTED}",
            c as u32
        ));
    }
    Ok(text.to_string())
}

pub(super) fn utf8(bytes: &[u8], offset: usize) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        format!(
            "not a text file: the bytes at offset {} are not UTF-8; {EXPECTED} \
             (a text export in a legacy code page, such as Windows-1256, is read with \
             intake.encoding set to its name, e.g. \"windows-1256\"; or re-save it as UTF-8)",
            e.utf8_error().valid_up_to() + offset
        )
    })
}

/// Text in a legacy code page (`encoding_rs`, no replacement characters:
/// a byte the code page does not define is an error, never a silent `\u{fffd}`).
pub(super) fn legacy(bytes: &[u8], encoding: &'static Encoding) -> Result<String, String> {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(
        decoder
            .max_utf8_buffer_length_without_replacement(bytes.len())
            .unwrap_or(bytes.len()),
    );
    let mut read = 0;
    loop {
        let (result, n) =
            decoder.decode_to_string_without_replacement(&bytes[read..], &mut out, true);
        read += n;
        match result {
            DecoderResult::InputEmpty => return Ok(out),
            DecoderResult::OutputFull => out.reserve(bytes.len() - read + 16),
            DecoderResult::Malformed(bad, after) => {
                let at = read - usize::from(bad) - usize::from(after);
                return Err(format!(
                    "not a text file: the bytes at offset {at} are not {} (intake.encoding); \
                     {EXPECTED}",
                    encoding.name()
                ));
            }
        }
    }
}

pub(super) fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, String> {
    if !bytes.len().is_multiple_of(2) {
        return Err(format!(
            "not a text file: UTF-16 text has an odd number of bytes; {EXPECTED}"
        ));
    }
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| format!("not a text file: invalid UTF-16; {EXPECTED}"))
}
