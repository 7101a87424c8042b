//! Where the paths in config.json point.
//!
//! A relative path (`"data_dir": "data"`) means "beside the config file",
//! on every system: a Windows service starts in System32 and a systemd unit
//! wherever its `WorkingDirectory` says, so the working directory is not a
//! place a till's files can depend on. Paths are made absolute once, here,
//! and every other module only ever sees absolute ones.

use std::path::{Component, Path, PathBuf};

/// The folder relative paths resolve against: the config file's own folder,
/// made absolute (against the working directory only for a relative
/// `--config`, which is what the operator typed).
pub(crate) fn base_folder(config_file: &Path) -> PathBuf {
    let file = absolute(config_file);
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `path` made absolute against the working directory and normalized.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// `path` as given when absolute, else joined to `base`; `.` and `..`
/// removed lexically (no symlinks followed, the folder need not exist).
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        normalize(&base.join(path))
    }
}

/// Removes `.` and folds `..` without touching the disk.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An absolute root on this system (`/`, `C:\`).
    fn root() -> PathBuf {
        PathBuf::from(if cfg!(windows) { r"C:\" } else { "/" })
    }

    #[test]
    fn relative_paths_land_beside_the_config_file() {
        let etc = root().join("etc").join("pos-connector");
        let base = base_folder(&etc.join("config.json"));
        assert_eq!(base, etc);
        assert_eq!(resolve(&base, Path::new("data")), etc.join("data"));
        assert_eq!(resolve(&base, Path::new("./x/../logs")), etc.join("logs"));
        assert_eq!(
            resolve(&base, Path::new("../../var/lib/pos")),
            root().join("var").join("lib").join("pos")
        );
        let inbox = root().join("srv").join("inbox");
        let with_slash = format!("{}{}", inbox.display(), std::path::MAIN_SEPARATOR);
        assert_eq!(resolve(&base, Path::new(&with_slash)), inbox);
        if cfg!(windows) {
            // Either separator, as Windows users write them.
            assert_eq!(
                resolve(&base, Path::new(r"data\pdfs")),
                etc.join("data").join("pdfs")
            );
            assert_eq!(
                resolve(&base, Path::new("data/pdfs")),
                etc.join("data").join("pdfs")
            );
        }
    }

    #[test]
    fn a_relative_config_path_is_taken_from_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            base_folder(Path::new("config/config.json")),
            cwd.join("config")
        );
        assert_eq!(base_folder(Path::new("config.json")), cwd);
    }
}
