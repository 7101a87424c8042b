//! How one log line is written, for every sink (console, files, the
//! system's log): tracing's usual format with every field and message made
//! safe by [`untrusted`]. Text that comes from a till or a backend may hold
//! line breaks, terminal escapes, NUL or bidi overrides; nothing from
//! outside can forge or hide a line. A leaf module (it imports nothing of
//! the agent), so both `logging` and `platform` (the Event Log) use it.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Format, Writer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;

/// The agent's log line format (the console's and the files'): tracing's
/// usual one, with every field and message made safe by [`untrusted`].
pub fn layer<S, W>(writer: W) -> tracing_subscriber::fmt::Layer<S, SafeFields, Format, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(SafeFields)
        .with_writer(writer)
}

/// Text from outside the agent, printed on one line: characters that could
/// start a line, drive a terminal or reorder what is shown (controls, bidi
/// overrides, invisible format characters, line separators) are written as
/// `\u{..}` escapes; everything else, any script included, as it is.
pub(crate) fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted(text)
}

/// See [`untrusted`].
#[derive(Clone, Copy)]
pub(crate) struct Untrusted<'a>(pub(crate) &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(is_unsafe_char) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found there");
            write!(f, "\\u{{{:x}}}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Characters that must never be printed raw from untrusted text: controls
/// (C0, DEL, C1: line breaks, ESC, NUL...), the line and paragraph
/// separators, and Unicode's invisible format characters (category Cf:
/// bidi embeddings, overrides and isolates, zero-width characters, the BOM,
/// tags).
pub(crate) fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{600}'..='\u{605}'
                | '\u{61c}'
                | '\u{6dd}'
                | '\u{70f}'
                | '\u{890}'..='\u{891}'
                | '\u{8e2}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0001}'
                | '\u{e0020}'..='\u{e007f}'
        )
}

/// Formats log fields like tracing's default, each value (and the message)
/// passed through [`untrusted`] first.
#[derive(Debug, Clone, Copy, Default)]
pub struct SafeFields;

impl<'a> MakeVisitor<Writer<'a>> for SafeFields {
    type Visitor = SafeVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> SafeVisitor<'a> {
        SafeVisitor(DefaultVisitor::new(target, true))
    }
}

/// [`SafeFields`]' visitor: tracing's default one, fed escaped values.
pub struct SafeVisitor<'a>(DefaultVisitor<'a>);

impl Visit for SafeVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields and the message arrive here with Display as their
        // Debug: raw. Strings (`x = s`) arrive quoted and escaped by Rust;
        // escaping them again changes nothing.
        let text = format!("{value:?}");
        self.0
            .record_debug(field, &format_args!("{}", untrusted(&text)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl VisitOutput<fmt::Result> for SafeVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl VisitFmt for SafeVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}
