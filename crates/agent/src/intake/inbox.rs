//! The inbox folder (`invoice_folder`): tills drop export files here.
//!
//! A file is taken only once its size and modification time have stayed
//! the same across two looks (`intake.settle_seconds` apart), and never
//! while it has a `.tmp`/`.part`-style name. It is claimed by renaming it
//! into `processing/`, parsed, its sales committed to the outbox, and only
//! then moved to `archive/YYYY-MM-DD/`. A file that cannot be read goes to
//! `rejected/` with `<name>.error.txt` beside it saying why and where.
//! Nothing is ever deleted.
//!
//! A till may still be writing a file that looked settled (it paused
//! longer than `intake.settle_seconds`, keeping the file open: the handle
//! follows the file into `processing/`). So after its sales are committed,
//! the file is checked against what was read (the open handle's length, the
//! path's size and modification time); if it changed, it is read again and
//! committed again (the sales already queued are duplicates, a no-op)
//! before it is archived. A file that grew and is not complete yet (half a
//! sale at its end) stays in `processing/` and is read again at the next
//! pass rather than being rejected.
//!
//! Nothing in `archive/` or `rejected/` is ever written over: a file or a
//! note whose name is taken gets `-2`, `-3`..., and every move is a
//! no-clobber rename.
//!
//! Crash safety: a file left in `processing/` by a crash is processed
//! again at the next start; its sales that were already committed are
//! duplicates in the outbox (a no-op), so nothing is lost or doubled.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::Local;

use super::sale;
use super::{conflict_message, Intake};
use crate::clock::Clock;
use crate::store::Enqueued;
use crate::sync_interval::SyncInterval;

pub(crate) const PROCESSING: &str = "processing";
pub(crate) const ARCHIVE: &str = "archive";
pub(crate) const REJECTED: &str = "rejected";
/// Larger files are rejected rather than read into memory.
pub(crate) const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Reads of one file in one pass while it keeps changing; then it waits in
/// `processing/` for the next pass.
const MAX_READS_PER_PASS: u32 = 5;

/// What one pass over the inbox did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct PassReport {
    pub files_archived: usize,
    pub files_rejected: usize,
    pub sales_new: usize,
    pub sales_duplicate: usize,
    /// Files seen but not yet settled (still being written?).
    pub files_waiting: usize,
    /// Files left in `processing/` because the outbox could not take them.
    pub files_deferred: usize,
}

/// The inbox watcher.
pub struct Inbox {
    dir: PathBuf,
    intake: Intake,
    /// Live: a change (the backend's `config_updates.sync_interval`, via
    /// the heartbeat) applies to the wait in progress, without a restart.
    interval: SyncInterval,
    settle: Duration,
    clock: Arc<dyn Clock>,
}

/// A file's identity across looks.
pub type Look = HashMap<String, (u64, Option<SystemTime>)>;

impl Inbox {
    /// `interval`: a [`SyncInterval`] shared with whoever may change it, or
    /// a plain `Duration` for a fixed one.
    pub fn new(
        dir: PathBuf,
        intake: Intake,
        interval: impl Into<SyncInterval>,
        settle: Duration,
        clock: Arc<dyn Clock>,
    ) -> Inbox {
        Inbox {
            dir,
            intake,
            interval: interval.into(),
            settle,
            clock,
        }
    }

    /// Creates the inbox and its sub-folders.
    pub fn prepare(&self) -> io::Result<()> {
        for sub in [PROCESSING, ARCHIVE, REJECTED] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        Ok(())
    }

    /// Polls until `shutdown`: at start (files already there included),
    /// then every `interval` (its current value: a change ends or extends
    /// the wait in progress); a file seen for the first time is looked at
    /// again after `settle` rather than a whole interval later.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        if let Err(e) = self.prepare() {
            tracing::error!(folder = %self.dir.display(), error = %e, "cannot create the inbox folders; retrying at each poll");
        }
        let mut previous = Look::new();
        loop {
            let report = self.pass(&mut previous).await;
            if report != PassReport::default() {
                tracing::info!(
                    archived = report.files_archived,
                    rejected = report.files_rejected,
                    new_sales = report.sales_new,
                    duplicates = report.sales_duplicate,
                    waiting = report.files_waiting,
                    deferred = report.files_deferred,
                    "inbox pass"
                );
            }
            if report.files_waiting > 0 || report.files_deferred > 0 {
                let wait = self
                    .settle
                    .max(Duration::from_millis(50))
                    .min(self.interval.get());
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            } else {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = self.interval.sleep() => {}
                }
            }
        }
    }

    /// One look at the inbox: finishes claimed files, then takes the files
    /// that are unchanged since `previous` (which is updated).
    pub async fn pass(&self, previous: &mut Look) -> PassReport {
        let mut report = PassReport::default();
        // Files a crash left in processing/ first: we claimed them whole.
        let claimed = list_files(&self.dir.join(PROCESSING)).unwrap_or_default();
        for (name, _, _) in claimed {
            self.process(&self.dir.join(PROCESSING).join(&name), &name, &mut report)
                .await;
        }
        let listing = match list_files(&self.dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(folder = %self.dir.display(), error = %e, "cannot read the inbox folder");
                return report;
            }
        };
        let mut now_seen = Look::new();
        let mut ready = Vec::new();
        for (name, size, mtime) in listing {
            if is_in_progress_name(&name) {
                continue;
            }
            let settled = previous.get(&name) == Some(&(size, mtime));
            now_seen.insert(name.clone(), (size, mtime));
            if settled {
                ready.push(name);
            } else {
                report.files_waiting += 1;
            }
        }
        for name in ready {
            now_seen.remove(&name);
            let from = self.dir.join(&name);
            let claimed = match claim(&from, &self.dir.join(PROCESSING), &name) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(file = %from.display(), error = %e, "cannot claim the file (in use?); trying again later");
                    report.files_waiting += 1;
                    continue;
                }
            };
            self.process(&claimed, &name, &mut report).await;
        }
        *previous = now_seen;
        report
    }

    /// Reads a claimed file, commits its sales and files it away; reads it
    /// again while it changes (a till still writing it).
    async fn process(&self, claimed: &Path, name: &str, report: &mut PassReport) {
        let mut committed = false;
        for round in 1..=MAX_READS_PER_PASS {
            let path = claimed.to_path_buf();
            let file_name = name.to_string();
            let options = self.intake.options().clone();
            let reading =
                tokio::task::spawn_blocking(move || Reading::take(&path, &file_name, &options))
                    .await
                    .unwrap_or_else(|e| Err(format!("the reader crashed: {e}")));
            let (reading, parsed) = match reading {
                Ok(r) => r,
                Err(reason) => {
                    self.reject(claimed, name, &reason, report);
                    return;
                }
            };
            let sales = match parsed {
                Ok(sales) => sales,
                Err(reason) => {
                    if reading.changed(claimed) && round < MAX_READS_PER_PASS {
                        continue;
                    }
                    if committed || reading.changed(claimed) {
                        // Grew after its sales were taken, and its end is not
                        // a whole sale yet: the till is still writing.
                        tracing::info!(
                            file = name,
                            "the file changed after it was read and is not complete yet; it stays in processing/ and is read again at the next look"
                        );
                        report.files_deferred += 1;
                        return;
                    }
                    self.reject(claimed, name, &reason, report);
                    return;
                }
            };
            let count = sales.len();
            match self.intake.accept(sales, format!("inbox:{name}")).await {
                Ok(results) => {
                    let conflicts: Vec<String> = results
                        .iter()
                        .filter_map(|r| match r {
                            Enqueued::Conflict(j) => Some(conflict_message(j)),
                            _ => None,
                        })
                        .collect();
                    if !conflicts.is_empty() {
                        let text = format!(
                            "Nothing from this file was queued: {} of its {count} sale(s) reuse an \
                             invoice number already taken by a different sale:\n  {}",
                            conflicts.len(),
                            conflicts.join("\n  ")
                        );
                        self.reject(claimed, name, &text, report);
                        return;
                    }
                    for r in &results {
                        match r {
                            Enqueued::New(_) => report.sales_new += 1,
                            // A second read finds the first one's sales.
                            _ if !committed => report.sales_duplicate += 1,
                            _ => {}
                        }
                    }
                    committed = true;
                }
                Err(e) => {
                    // The file stays claimed; the next pass tries again.
                    tracing::error!(file = name, error = %e, "cannot commit the file's sales; it stays in processing/ and is tried again");
                    report.files_deferred += 1;
                    return;
                }
            }
            if !reading.changed(claimed) {
                self.archive(claimed, name, report);
                return;
            }
            tracing::info!(
                file = name,
                read = reading.len,
                "the file changed while its sales were being taken (the till is still writing it); reading it again"
            );
        }
        tracing::info!(
            file = name,
            "the file keeps changing; it stays in processing/ and is read again at the next look"
        );
        report.files_deferred += 1;
    }

    fn archive(&self, claimed: &Path, name: &str, report: &mut PassReport) {
        let day = self
            .clock
            .now()
            .with_timezone(&Local)
            .format("%Y-%m-%d")
            .to_string();
        let folder = self.dir.join(ARCHIVE).join(day);
        match fs::create_dir_all(&folder).and_then(|_| move_unique(claimed, &folder, name)) {
            Ok(to) => {
                tracing::debug!(file = name, to = %to.display(), "archived");
                report.files_archived += 1;
            }
            Err(e) => {
                tracing::error!(file = name, error = %e, "sales committed but the file cannot be archived; it stays in processing/");
                report.files_deferred += 1;
            }
        }
    }

    fn reject(&self, claimed: &Path, name: &str, reason: &str, report: &mut PassReport) {
        let folder = self.dir.join(REJECTED);
        let placed =
            fs::create_dir_all(&folder).and_then(|_| place_rejected(claimed, &folder, name));
        match placed {
            Ok((to, note)) => {
                let text = format!(
                    "pos-connector could not take the file {}\nreceived: {}\n\n{reason}\n\n\
                     Nothing from this file was queued. Fix it and drop it into {} again: sales \
                     that were already queued are never sent twice.\n",
                    crate::logging::untrusted(name),
                    self.clock.now().with_timezone(&Local).to_rfc3339(),
                    self.dir.display()
                );
                if let Err(e) = write_note(&note, &text) {
                    tracing::error!(file = %note.display(), error = %e, "cannot write the rejection note");
                }
                tracing::warn!(file = name, to = %to.display(), reason = %first_line(reason), "file rejected");
                report.files_rejected += 1;
            }
            Err(e) => {
                tracing::error!(file = name, error = %e, "cannot move the rejected file; it stays in processing/");
                report.files_deferred += 1;
            }
        }
    }
}

/// One read of a claimed file: what was read, and the open handle, to
/// tell afterwards whether the till has written more since.
struct Reading {
    file: fs::File,
    /// Bytes read.
    len: u64,
    /// The modification time before the read.
    modified: Option<SystemTime>,
}

/// The sales of a file, or why it is rejected (its `.error.txt`).
type Parsed = Result<Vec<sale::Sale>, String>;

impl Reading {
    /// Opens, reads and parses the file; `Err` when it cannot be read at
    /// all.
    fn take(
        path: &Path,
        name: &str,
        options: &sale::IntakeOptions,
    ) -> Result<(Reading, Parsed), String> {
        let cannot = |e: io::Error| format!("cannot read the file: {e}");
        let mut file = fs::File::open(path).map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(too_large(meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        let parsed = sale::parse_file(name, &bytes, options)
            .map_err(|e| format!("Problems found ({}):\n{e}", e.problems.len()));
        let reading = Reading {
            file,
            len: bytes.len() as u64,
            modified: meta.modified().ok(),
        };
        Ok((reading, parsed))
    }

    /// Whether the file differs from what was read: the open handle is
    /// longer (a writer that kept it open), or the path's size or time
    /// changed. A file that cannot be looked at counts as unchanged (its
    /// move then says what is wrong).
    fn changed(&self, path: &Path) -> bool {
        let handle_len = self.file.metadata().map(|m| m.len()).unwrap_or(self.len);
        let (len, modified) = match fs::metadata(path) {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(_) => (self.len, self.modified),
        };
        handle_len != self.len || len != self.len || modified != self.modified
    }
}

fn too_large(bytes: u64) -> String {
    format!(
        "the file is {:.1} MB; the limit is {} MB: export fewer sales per file",
        bytes as f64 / 1e6,
        MAX_FILE_BYTES / (1024 * 1024)
    )
}

/// Moves a rejected file into `folder` under a name that is free together
/// with its note's (`<name>.error.txt`), so neither replaces anything: the
/// file and the note paths.
fn place_rejected(from: &Path, folder: &Path, name: &str) -> io::Result<(PathBuf, PathBuf)> {
    for n in 1..10_000 {
        let candidate = numbered(name, n);
        let note = folder.join(format!("{candidate}.error.txt"));
        if fs::symlink_metadata(&note).is_ok() {
            continue;
        }
        let to = folder.join(&candidate);
        match crate::fsutil::rename_no_clobber(from, &to) {
            Ok(()) => return Ok((to, note)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "too many files named {name} in {}",
        folder.display()
    )))
}

/// Writes a rejection note; never over another file (a note that appeared
/// meanwhile, or a file named like one): then beside it, numbered.
fn write_note(note: &Path, text: &str) -> io::Result<PathBuf> {
    let name = note
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = note.parent().unwrap_or(Path::new("."));
    for n in 1..100 {
        let mut f = crate::fsutil::AtomicFile::create(&folder.join(numbered(&name, n)))?;
        f.write_all(text.as_bytes())?;
        match f.commit_new_with_mode(0o644) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            other => return other,
        }
    }
    Err(io::Error::other("too many notes of that name"))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Regular files directly in `dir` (not hidden), with size and mtime.
fn list_files(dir: &Path) -> io::Result<Vec<(String, u64, Option<SystemTime>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(file = ?entry.file_name(), "skipping a file whose name is not valid Unicode; rename it");
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        out.push((name, meta.len(), meta.modified().ok()));
    }
    out.sort();
    Ok(out)
}

/// Names that say "still being written".
pub(crate) fn is_in_progress_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        ".tmp",
        ".part",
        ".partial",
        ".crdownload",
        ".download",
        ".swp",
        "~",
    ]
    .iter()
    .any(|s| lower.ends_with(s))
        || lower.starts_with("~$")
}

/// Renames `from` into `folder`, keeping `name` or adding `-2`, `-3`...
/// before the extension when taken. Never overwrites.
fn move_unique(from: &Path, folder: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 1..10_000 {
        let candidate = folder.join(numbered(name, n));
        match crate::fsutil::rename_no_clobber(from, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "too many files named {name} in {}",
        folder.display()
    )))
}

fn claim(from: &Path, processing: &Path, name: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(processing)?;
    move_unique(from, processing, name)
}

fn numbered(name: &str, n: u32) -> String {
    if n == 1 {
        return name.to_string();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-{n}.{ext}"),
        _ => format!("{name}-{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_progress_names_are_skipped() {
        for n in [
            "a.csv.tmp",
            "a.PART",
            "x.crdownload",
            "~$book.xlsx",
            "a.json~",
        ] {
            assert!(is_in_progress_name(n), "{n}");
        }
        assert!(!is_in_progress_name("sales.csv"));
    }

    #[test]
    fn numbered_names_keep_the_extension() {
        assert_eq!(numbered("a.csv", 1), "a.csv");
        assert_eq!(numbered("a.csv", 2), "a-2.csv");
        assert_eq!(numbered("README", 3), "README-3");
    }
}
