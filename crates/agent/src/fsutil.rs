//! Crash-safe file writing: everything the agent writes (state, secrets,
//! PDFs, config updates) goes to a temporary name in the destination folder,
//! is flushed to disk, then renamed over the final name. A power cut leaves
//! either the old file or the new one, never a half-written file under the
//! final name.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// A file being written under a temporary name; [`AtomicFile::commit`]
/// makes it appear under its final name. Dropping it without committing
/// removes the temporary file, so an interrupted download leaves nothing.
pub(crate) struct AtomicFile {
    temp: NamedTempFile,
    dest: PathBuf,
    written: u64,
}

impl AtomicFile {
    /// Starts a file that will become `dest`. The parent folder is created
    /// if needed. On Unix the file is created with mode 0600 (tempfile's
    /// default); callers that want it readable by others call
    /// [`AtomicFile::commit_with_mode`].
    pub(crate) fn create(dest: &Path) -> io::Result<AtomicFile> {
        let dir = parent_dir(dest);
        fs::create_dir_all(&dir)?;
        let temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .suffix(".part")
            .tempfile_in(&dir)?;
        Ok(AtomicFile {
            temp,
            dest: dest.to_path_buf(),
            written: 0,
        })
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.temp.as_file_mut().write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub(crate) fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Flushes to disk, renames over the destination and syncs the folder
    /// so the rename itself survives a power cut.
    pub(crate) fn commit(self) -> io::Result<PathBuf> {
        self.commit_inner(None)
    }

    /// Like [`AtomicFile::commit`], with Unix permission bits for the final file.
    pub(crate) fn commit_with_mode(self, mode: u32) -> io::Result<PathBuf> {
        self.commit_inner(Some(mode))
    }

    /// Like [`AtomicFile::commit_with_mode`], but never replaces a file:
    /// if `dest` exists, nothing is written and the error's kind is
    /// `AlreadyExists` (the caller picks another name).
    pub(crate) fn commit_new_with_mode(self, mode: u32) -> io::Result<PathBuf> {
        let AtomicFile { temp, dest, .. } = self;
        set_mode(temp.path(), Some(mode))?;
        temp.as_file().sync_all()?;
        temp.persist_noclobber(&dest).map_err(|e| e.error)?;
        sync_dir(&parent_dir(&dest));
        Ok(dest)
    }

    fn commit_inner(self, mode: Option<u32>) -> io::Result<PathBuf> {
        let AtomicFile { temp, dest, .. } = self;
        set_mode(temp.path(), mode)?;
        temp.as_file().sync_all()?;
        temp.persist(&dest).map_err(|e| e.error)?;
        sync_dir(&parent_dir(&dest));
        Ok(dest)
    }
}

/// Renames `from` to `to` unless `to` exists: then nothing moves and the
/// error's kind is `AlreadyExists`. Atomic where the system can (Linux's
/// `RENAME_NOREPLACE`, a hard link elsewhere on Unix, `MoveFileEx` without
/// replacing on Windows), so a file is never written over, even by a
/// racing writer.
pub(crate) fn rename_no_clobber(from: &Path, to: &Path) -> io::Result<()> {
    // tempfile's no-clobber rename is the portable one; its TempPath would
    // delete `from` when dropped, so it is kept on every path out.
    match tempfile::TempPath::try_from_path(from)?.persist_noclobber(to) {
        Ok(()) => {
            sync_dir(&parent_dir(to));
            Ok(())
        }
        Err(e) => {
            let _ = e.path.keep();
            Err(e.error)
        }
    }
}

/// Writes `bytes` to `dest` atomically with mode 0600 (secrets, state).
pub(crate) fn write_private(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(dest)?;
    file.write_all(bytes)?;
    file.commit_with_mode(0o600)?;
    Ok(())
}

/// Opens (creating, mode 0600, in a private folder) a lock file shared by
/// the agent's processes; the caller locks it and holds the `File`.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<fs::File> {
    create_private_dir(&parent_dir(path))?;
    let mut opts = fs::OpenOptions::new();
    opts.create(true).truncate(false).read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Creates a folder (and its parents) that only the agent's user can enter.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        set_mode(dir, Some(0o700))?;
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: Option<u32>) -> io::Result<()> {
    // Windows: files inherit the ACL of the agent's data folder; the
    // install notes tell integrators to restrict that folder.
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) {
    // Best effort: some filesystems refuse fsync on a directory.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_file_leaves_nothing_and_commit_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/out.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 0);

        fs::write(&dest, b"old").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"new ").unwrap();
        f.write_all(b"content").unwrap();
        assert_eq!(f.bytes_written(), 11);
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        f.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new content");
    }

    #[test]
    fn no_clobber_rename_and_commit_never_replace_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let err = rename_no_clobber(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&a).unwrap(), b"a", "the source is kept");
        assert_eq!(fs::read(&b).unwrap(), b"b");
        let c = dir.path().join("c");
        rename_no_clobber(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&c).unwrap(), b"a");

        let mut f = AtomicFile::create(&b).unwrap();
        f.write_all(b"new").unwrap();
        let err = f.commit_new_with_mode(0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"b");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp file left"
        );
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("secret");
        write_private(&dest, b"x").unwrap();
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
