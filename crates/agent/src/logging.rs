//! Logs: to the console and to daily rolling files in `log_dir`
//! (`pos-connector.log.YYYY-MM-DD`, the newest `log_keep_files` kept),
//! through a non-blocking writer whose guard the binary's main holds so the
//! last lines are flushed on exit. Secrets never reach a log: they are
//! `SecretString`s (printed `[REDACTED]`), the Authorization header is marked
//! sensitive, and login answers are parsed, never logged.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogLevel;

/// Where console logs go. One-shot commands print their results on stdout,
/// so their logs go to stderr; the service logs to stdout (journald).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    Stdout,
    Stderr,
}

/// Keeps the file writer alive; drop it last.
#[must_use]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

/// Lines waiting for the log file's writer thread at most (then further
/// lines are dropped rather than stall the agent). A catch-up after an
/// outage writes a few lines per sale; the thread writes thousands a
/// second.
const LOG_QUEUE_LINES: usize = 8_192;

/// The file name prefix; the appender adds `.YYYY-MM-DD`.
pub const LOG_FILE_PREFIX: &str = "pos-connector.log";

fn filter(level: LogLevel) -> EnvFilter {
    // RUST_LOG, when set, is the operator's explicit choice for everything.
    if let Ok(spec) = std::env::var("RUST_LOG") {
        if let Ok(f) = EnvFilter::try_new(spec) {
            return f;
        }
    }
    // Our own crate at the configured level; libraries only when they warn.
    EnvFilter::new(format!("warn,pos_connector={}", level.as_str()))
}

/// Installs the global subscriber. `file`: the log folder and how many
/// daily files to keep. A log folder that cannot be created is reported on
/// stderr and the agent goes on without file logs rather than not running.
pub fn init(
    console: Console,
    console_level: LogLevel,
    file: Option<(&Path, LogLevel, usize)>,
) -> LogGuard {
    let console_layer = match console {
        Console::Stdout => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .with_target(false)
            .with_filter(filter(console_level))
            .boxed(),
        Console::Stderr => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_filter(filter(console_level))
            .boxed(),
    };
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
                    tracing_subscriber::fmt::layer()
                        .with_writer(writer)
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
    let _ = tracing_subscriber::registry()
        .with(console_layer)
        .with(file_layer)
        .try_init();
    LogGuard { _file: guard }
}
