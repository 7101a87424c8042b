//! The Windows Event Log: the service's warnings and errors also go to the
//! Application log under the source `pos-connector` (the files in
//! `log_dir` keep everything). `service install` registers the source
//! (the registry key Event Viewer reads: this exe is its message file, with
//! one message, id 1 = `%1`, compiled in from
//! packaging/windows/messages.mc by build.rs), `service uninstall` removes
//! it. An unregistered source still logs; Event Viewer then prefixes the
//! text with "The description for Event ID 1 cannot be found".

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{null, null_mut};
use std::sync::Arc;

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, RegisterEventSourceW, ReportEventW, EVENTLOG_ERROR_TYPE,
    EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE, REPORT_EVENT_TYPE,
};
use windows_sys::Win32::System::Registry::{
    RegCloseKey, RegCreateKeyExW, RegDeleteTreeW, RegSetValueExW, HKEY, HKEY_LOCAL_MACHINE,
    KEY_WRITE, REG_DWORD, REG_EXPAND_SZ, REG_OPTION_NON_VOLATILE,
};

/// The Event Log source (Event Viewer's "Source" column).
pub(crate) const SOURCE: &str = "pos-connector";
/// The one message in the exe's message table: `%1`, the whole text.
const EVENT_ID: u32 = 1;
/// Where a source of the Application log is registered.
const SOURCE_KEY: &str = r"SYSTEM\CurrentControlSet\Services\EventLog\Application\pos-connector";
/// Win32 ERROR_FILE_NOT_FOUND: the key or value is not there.
const ERROR_FILE_NOT_FOUND: u32 = 2;
/// The Event Log caps one string at 31,839 characters; a log line that
/// long is cut (the file has it whole).
const MAX_CHARS: usize = 31_000;

fn wide(s: impl AsRef<OsStr>) -> Vec<u16> {
    s.as_ref().encode_wide().chain(Some(0)).collect()
}

fn win32(code: u32) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code as i32))
    }
}

/// Registers the source (needs Administrator rights): this exe as the
/// message file, error, warning and information events.
pub(crate) fn register_source(exe: &Path) -> io::Result<()> {
    let mut key: HKEY = null_mut();
    win32(unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            wide(SOURCE_KEY).as_ptr(),
            0,
            null(),
            REG_OPTION_NON_VOLATILE,
            KEY_WRITE,
            null(),
            &mut key,
            null_mut(),
        )
    })?;
    let file = wide(exe.as_os_str());
    let types: u32 = 7; // EVENTLOG_ERROR_TYPE | WARNING | INFORMATION
    let result = win32(unsafe {
        RegSetValueExW(
            key,
            wide("EventMessageFile").as_ptr(),
            0,
            REG_EXPAND_SZ,
            file.as_ptr() as *const u8,
            (file.len() * 2) as u32,
        )
    })
    .and_then(|_| {
        win32(unsafe {
            RegSetValueExW(
                key,
                wide("TypesSupported").as_ptr(),
                0,
                REG_DWORD,
                &types as *const u32 as *const u8,
                4,
            )
        })
    });
    unsafe { RegCloseKey(key) };
    result
}

/// Removes the source's registration; true when there was one.
pub(crate) fn deregister_source() -> io::Result<bool> {
    match unsafe { RegDeleteTreeW(HKEY_LOCAL_MACHINE, wide(SOURCE_KEY).as_ptr()) } {
        0 => Ok(true),
        ERROR_FILE_NOT_FOUND => Ok(false),
        code => win32(code).map(|_| false),
    }
}

/// The layer: warnings and errors, in the files' format (every field made
/// safe by the one escaping step) without the timestamp (the Event Log has
/// its own), one entry per event.
pub(crate) fn layer_with<S, K>(sink: Arc<K>) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    K: EventSink,
{
    crate::log_format::layer(EventLogWriter::new(sink))
        .with_ansi(false)
        .without_time()
        .with_filter(LevelFilter::WARN)
}

/// Where formatted lines go: the Event Log, or a test's list.
pub(crate) trait EventSink: Send + Sync + 'static {
    fn report(&self, kind: REPORT_EVENT_TYPE, text: &str) -> io::Result<()>;
}

/// An open handle on the source.
pub(crate) struct EventSource(HANDLE);

// SAFETY: an event source handle may be used from any thread
// (ReportEventW is thread-safe); it is closed once, on drop.
unsafe impl Send for EventSource {}
unsafe impl Sync for EventSource {}

impl EventSource {
    pub(crate) fn open() -> io::Result<EventSource> {
        let h = unsafe { RegisterEventSourceW(null(), wide(SOURCE).as_ptr()) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(EventSource(h))
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        unsafe { DeregisterEventSource(self.0) };
    }
}

impl EventSink for EventSource {
    fn report(&self, kind: REPORT_EVENT_TYPE, text: &str) -> io::Result<()> {
        let text: String = text.chars().take(MAX_CHARS).collect();
        let text = wide(text);
        let strings = [text.as_ptr()];
        let ok = unsafe {
            ReportEventW(
                self.0,
                kind,
                0,
                EVENT_ID,
                null_mut(),
                1,
                0,
                strings.as_ptr(),
                null(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The event type of a log level: error and warning; anything else (the
/// layer is filtered to warnings and errors) information.
pub(crate) fn event_type(level: &Level) -> REPORT_EVENT_TYPE {
    match *level {
        Level::ERROR => EVENTLOG_ERROR_TYPE,
        Level::WARN => EVENTLOG_WARNING_TYPE,
        _ => EVENTLOG_INFORMATION_TYPE,
    }
}

/// A `MakeWriter` for the log format: each event is formatted into one
/// buffer, which becomes one Event Log entry of its level's type.
pub(crate) struct EventLogWriter<S: EventSink> {
    sink: Arc<S>,
}

impl<S: EventSink> EventLogWriter<S> {
    pub(crate) fn new(sink: Arc<S>) -> Self {
        EventLogWriter { sink }
    }
}

/// One event's text, reported when the formatter is done with it.
pub(crate) struct EventLine<S: EventSink> {
    sink: Arc<S>,
    kind: REPORT_EVENT_TYPE,
    buf: Vec<u8>,
}

impl<S: EventSink> io::Write for EventLine<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: EventSink> Drop for EventLine<S> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if !text.is_empty() {
            // Nowhere to report a failing Event Log but the files, which
            // have the line anyway.
            let _ = self.sink.report(self.kind, text);
        }
    }
}

impl<'a, S: EventSink> MakeWriter<'a> for EventLogWriter<S> {
    type Writer = EventLine<S>;

    fn make_writer(&'a self) -> Self::Writer {
        EventLine {
            sink: self.sink.clone(),
            kind: EVENTLOG_INFORMATION_TYPE,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventLine {
            sink: self.sink.clone(),
            kind: event_type(meta.level()),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    use windows_sys::Win32::System::Registry::{RegGetValueW, RRF_NOEXPAND, RRF_RT_REG_EXPAND_SZ};

    /// The registered message file, if the source is registered (what the
    /// tests read back).
    pub(crate) fn registered_message_file() -> io::Result<Option<std::path::PathBuf>> {
        let mut buf = vec![0u16; 1024];
        let mut bytes = (buf.len() * 2) as u32;
        let code = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                wide(SOURCE_KEY).as_ptr(),
                wide("EventMessageFile").as_ptr(),
                RRF_RT_REG_EXPAND_SZ | RRF_NOEXPAND,
                null_mut(),
                buf.as_mut_ptr() as *mut _,
                &mut bytes,
            )
        };
        if code == ERROR_FILE_NOT_FOUND {
            return Ok(None);
        }
        win32(code)?;
        let len = (bytes as usize / 2).min(buf.len());
        let text = String::from_utf16_lossy(&buf[..len]);
        Ok(Some(std::path::PathBuf::from(text.trim_end_matches('\0'))))
    }

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(REPORT_EVENT_TYPE, String)>>);

    impl EventSink for Recorded {
        fn report(&self, kind: REPORT_EVENT_TYPE, text: &str) -> io::Result<()> {
            self.0.lock().unwrap().push((kind, text.to_string()));
            Ok(())
        }
    }

    #[test]
    fn warnings_and_errors_become_one_entry_each_of_their_type_and_info_does_not() {
        let sink = Arc::new(Recorded::default());
        let layer = layer_with(sink.clone());
        let subscriber = tracing_subscriber::registry().with(layer.boxed());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("an ordinary start");
            tracing::warn!(invoice = "INV-1\nforged line", "backend slow");
            tracing::error!("cannot sign in");
        });
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, EVENTLOG_WARNING_TYPE);
        assert!(got[0].1.contains("backend slow"), "{got:?}");
        // Outside text is escaped as in the files: one entry, one line.
        assert!(got[0].1.contains(r#""INV-1\nforged line""#), "{got:?}");
        assert!(!got[0].1.contains('\n'), "{got:?}");
        assert!(!got[0].1.contains('\u{1b}'), "no colours: {got:?}");
        assert_eq!(got[1].0, EVENTLOG_ERROR_TYPE);
        assert!(got[1].1.contains("cannot sign in"), "{got:?}");
    }

    #[test]
    fn the_source_registers_reports_and_deregisters() {
        // Needs Administrator rights (HKLM): CI's Wine prefix has them.
        let exe = std::env::current_exe().unwrap();
        register_source(&exe).unwrap();
        assert_eq!(registered_message_file().unwrap(), Some(exe.clone()));
        let source = EventSource::open().unwrap();
        source
            .report(EVENTLOG_WARNING_TYPE, "pos-connector test warning")
            .unwrap();
        source
            .report(EVENTLOG_ERROR_TYPE, &"x".repeat(40_000))
            .unwrap();
        drop(source);
        assert!(deregister_source().unwrap());
        assert_eq!(registered_message_file().unwrap(), None);
        assert!(!deregister_source().unwrap(), "nothing left to remove");
    }
}
