//! Logs: to the console and to daily rolling files in `log_dir`
//! (`pos-connector.log.YYYY-MM-DD`, the newest `log_keep_files` kept),
//! through a non-blocking writer whose guard the binary's main holds so the
//! last lines are flushed on exit. Secrets never reach a log: they are
//! `SecretString`s (printed `[REDACTED]`), the Authorization header is marked
//! sensitive, and login answers are parsed, never logged.
//!
//! Nothing from outside can forge or hide a log line: text that comes from
//! a till (file names, invoice numbers, customer names) or a backend (error
//! messages, settings) may hold line breaks, terminal escapes, NUL or bidi
//! overrides. [`untrusted`] is the one helper that makes such text safe to
//! print on one line, and every field and message of every log line goes
//! through it ([`SafeFields`], installed by [`layer`]), so no call site can
//! forget it.
//!
//! The console gets colours only on a terminal (not in a pipe, a file or
//! the journal; `NO_COLOR` turns them off everywhere). When the console is
//! systemd's journal (`JOURNAL_STREAM` names it), each line starts with its
//! syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug),
//! which journald strips and stores as the entry's PRIORITY, and carries no
//! timestamp of its own (the journal adds one). Files never carry colours.
//! The service (`run`) also hands its warnings and errors to the system's
//! own log where there is one besides the console (Windows: the Event Log,
//! `platform::system_log_layer`), in the same safe format.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;

use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogLevel;
pub(crate) use crate::log_format::{is_unsafe_char, untrusted};
pub use crate::log_format::{layer, SafeFields};
use crate::platform::{self, Stream};

/// Where console logs go. One-shot commands print their results on stdout,
/// so their logs go to stderr; the service logs to stdout (journald).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Console {
    Stdout,
    Stderr,
}

/// Keeps the file writer alive; drop it last.
#[must_use]
pub(crate) struct LogGuard {
    _file: Option<WorkerGuard>,
}

/// Lines waiting for the log file's writer thread at most (then further
/// lines are dropped rather than stall the agent). A catch-up after an
/// outage writes a few lines per sale; the thread writes thousands a
/// second.
const LOG_QUEUE_LINES: usize = 8_192;

/// The file name prefix; the appender adds `.YYYY-MM-DD`.
pub(crate) const LOG_FILE_PREFIX: &str = "pos-connector.log";

/// Which targets log at which level. `Targets` (target prefixes and
/// levels, as `warn,pos_connector=debug`) rather than `EnvFilter`: the
/// latter's span and field directives need a regex engine, about a
/// megabyte of the till's binary that no operator needs.
fn filter(level: LogLevel) -> Targets {
    // RUST_LOG, when set and readable, is the operator's explicit choice
    // for everything.
    if let Ok(spec) = std::env::var("RUST_LOG") {
        match spec.parse::<Targets>() {
            Ok(f) => return f,
            Err(e) => {
                // Once, though the console and the files each ask.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    eprintln!(
                        "warning: RUST_LOG={spec:?} is not a list of target=level \
                         directives ({e}); using the configured log level"
                    )
                });
            }
        }
    }
    // Our own crate at the configured level; libraries only when they warn.
    format!("warn,pos_connector={}", level.as_str())
        .parse()
        .expect("a valid directive list")
}

/// How the console is written, decided once from where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsoleStyle {
    /// A terminal: colours (unless `NO_COLOR`), timestamps.
    Terminal,
    /// A pipe or file: plain text, timestamps.
    Plain,
    /// systemd's journal: `<N>` priority prefixes, no timestamps.
    Journal,
}

impl ConsoleStyle {
    pub(crate) fn detect(console: Console) -> ConsoleStyle {
        let stream = match console {
            Console::Stdout => Stream::Stdout,
            Console::Stderr => Stream::Stderr,
        };
        let terminal = match console {
            Console::Stdout => std::io::stdout().is_terminal(),
            Console::Stderr => std::io::stderr().is_terminal(),
        };
        if platform::stream_is_journal(stream) {
            ConsoleStyle::Journal
        } else if terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) {
            ConsoleStyle::Terminal
        } else {
            ConsoleStyle::Plain
        }
    }
}

/// The syslog priority journald stores for a tracing level (sd-daemon(3)).
pub(crate) fn journal_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Prefixes each event with `<priority>` for journald, then formats it as
/// the inner format does.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", journal_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

fn console_layer<S>(console: Console, filter: Targets) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn styled<S, W>(
        writer: W,
        style: ConsoleStyle,
        filter: Targets,
    ) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let layer = layer(writer)
            .with_target(false)
            .with_ansi(style == ConsoleStyle::Terminal);
        match style {
            ConsoleStyle::Journal => layer
                .event_format(JournalPriority(
                    tracing_subscriber::fmt::format()
                        .with_target(false)
                        .with_ansi(false)
                        .without_time(),
                ))
                .with_filter(filter)
                .boxed(),
            _ => layer.with_filter(filter).boxed(),
        }
    }
    let style = ConsoleStyle::detect(console);
    match console {
        Console::Stdout => styled(std::io::stdout, style, filter),
        Console::Stderr => styled(std::io::stderr, style, filter),
    }
}

/// Installs the global subscriber. `file`: the log folder and how many
/// daily files to keep. A log folder that cannot be created is reported on
/// stderr and the agent goes on without file logs rather than not running.
pub(crate) fn init(
    console: Console,
    console_level: LogLevel,
    file: Option<(&Path, LogLevel, usize)>,
) -> LogGuard {
    let console_layer = console_layer(console, filter(console_level));
    let mut guard = None;
    let file_layer = file.and_then(|(dir, level, keep)| {
        let appender = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                Builder::new()
                    .rotation(Rotation::DAILY)
                    .filename_prefix(LOG_FILE_PREFIX)
                    .max_log_files(keep.max(1))
                    .build(dir)
                    .map_err(|e| e.to_string())
            });
        match appender {
            Ok(appender) => {
                // Its queue is allocated whole at the start: the default
                // 128,000 lines are 4 MiB that an idle till never uses.
                let (writer, g) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                    .buffered_lines_limit(LOG_QUEUE_LINES)
                    .finish(appender);
                guard = Some(g);
                Some(
                    layer(writer)
                        .with_ansi(false)
                        .with_filter(filter(level))
                        .boxed(),
                )
            }
            Err(e) => {
                eprintln!(
                    "warning: cannot write logs to {}: {e}; logging to the console only (fix log_dir in config.json)",
                    dir.display()
                );
                None
            }
        }
    });
    // The service (`run`, the one console on stdout) also reports its
    // warnings and errors to the system's log (Windows: the Event Log).
    let system_layer = match console {
        Console::Stdout => platform::system_log_layer(),
        Console::Stderr => None,
    };
    let _ = tracing_subscriber::registry()
        .with(console_layer)
        .with(file_layer)
        .with(system_layer)
        .try_init();
    LogGuard { _file: guard }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn untrusted_text_is_escaped_and_other_scripts_are_kept() {
        let shown =
            untrusted("A\n\u{1b}[31m\u{0}\u{202e}\u{2066}\u{200b}\u{85}\u{2028}Z").to_string();
        assert_eq!(
            shown,
            "A\\u{a}\\u{1b}[31m\\u{0}\\u{202e}\\u{2066}\\u{200b}\\u{85}\\u{2028}Z"
        );
        let arabic = "فاتورة رقم ١٧ – Ωmega\ttab";
        assert_eq!(
            untrusted(arabic).to_string(),
            "فاتورة رقم ١٧ – Ωmega\\u{9}tab"
        );
        assert_eq!(format!("{:?}", untrusted("a\nb")), "\"a\\u{a}b\"");
    }

    /// Every way a value reaches a log line: the message's arguments, `%`
    /// (Display) and `?` (Debug) fields, plain strings, errors.
    #[test]
    fn no_field_or_message_can_start_a_line_or_hide_one() {
        let buf = Buffer::default();
        let sink = buf.clone();
        let subscriber =
            tracing_subscriber::registry().with(layer(move || sink.clone()).with_ansi(false));
        let evil = "x\n2031-01-01T00:00:00Z ERROR FORGED\u{1b}[2J\u{202e}\u{0}";
        let err = std::io::Error::other(evil.to_string());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                file = evil,
                display = %evil,
                debug = ?evil,
                error = &err as &(dyn std::error::Error + 'static),
                "rejected {evil}"
            );
            let span = tracing::info_span!("job", number = %evil);
            let _in = span.enter();
            tracing::info!("inside");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        for line in text.lines() {
            assert!(
                !line.contains("\n2031") && !line.starts_with("2031"),
                "{line}"
            );
        }
        for c in ['\u{1b}', '\u{202e}', '\u{0}'] {
            assert!(!text.contains(c), "{text:?}");
        }
        assert!(
            text.matches("FORGED").count() >= 6,
            "every value is still shown: {text}"
        );
    }
}
