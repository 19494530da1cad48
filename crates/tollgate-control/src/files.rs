//! Crash-safe file writes: one file atomically, or several as one commit.
//!
//! A single file is written to a temporary name beside it, fsynced, renamed over the target and
//! its directory fsynced, so a reader sees the old file or the new one, never half of either.
//! Several files that must agree (a CA certificate and its key, a device's key and certificate)
//! are committed through a journal: every new file is written and fsynced under a temporary
//! name, then a journal naming them is written and fsynced, then each is renamed into place and
//! the journal removed. A crash before the journal exists leaves the old files; a crash after
//! it leaves a journal that [`recover`] rolls forward. Either way the files never disagree once
//! `recover` has run, which every reader of such a set calls first.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One file of a commit.
#[derive(Debug, Clone)]
pub struct FileWrite<'a> {
    /// Where it goes.
    pub path: PathBuf,
    /// What it holds.
    pub contents: &'a [u8],
    /// A private key: mode 0600 from the moment the file exists.
    pub private: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// (temporary, final) pairs still to rename.
    renames: Vec<(PathBuf, PathBuf)>,
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".new");
    path.with_file_name(name)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Write `contents` to `path` as is (creating parent directories) and fsync it. Private keys get
/// mode 0600 from the moment the file exists.
fn write_plain(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    if private {
        // An existing file keeps its old mode through open(): tighten it before writing.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(contents)?;
    f.sync_all()
}

fn annotate(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Replace `path` with `contents` atomically.
pub fn write_file(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = tmp_name(path);
    write_plain(&tmp, contents, private).map_err(|e| annotate(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| annotate(path, e))?;
    sync_dir(path).map_err(|e| annotate(path, e))
}

/// Replace every file in `files` as one commit, with `journal` as the commit record.
pub fn commit(journal: &Path, files: &[FileWrite<'_>]) -> std::io::Result<()> {
    // A journal left by an earlier crash is finished first, so commits apply in order.
    recover(journal)?;
    let mut renames = Vec::with_capacity(files.len());
    for f in files {
        let tmp = tmp_name(&f.path);
        write_plain(&tmp, f.contents, f.private).map_err(|e| annotate(&tmp, e))?;
        renames.push((tmp, f.path.clone()));
    }
    let text = serde_json::to_vec(&Journal { renames }).map_err(std::io::Error::other)?;
    write_plain(journal, &text, false).map_err(|e| annotate(journal, e))?;
    sync_dir(journal).map_err(|e| annotate(journal, e))?;
    roll_forward(journal)
}

/// Finish a commit that a crash interrupted (roll forward), if there is one. Returns quietly
/// when there is no journal.
pub fn recover(journal: &Path) -> std::io::Result<()> {
    match std::fs::metadata(journal) {
        Ok(_) => roll_forward(journal),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(annotate(journal, e)),
    }
}

fn roll_forward(journal: &Path) -> std::io::Result<()> {
    let text = std::fs::read(journal).map_err(|e| annotate(journal, e))?;
    // A journal that does not parse was torn while being written, before any rename: the old
    // files are intact and consistent, so it is simply dropped.
    if let Ok(j) = serde_json::from_slice::<Journal>(&text) {
        for (tmp, dest) in &j.renames {
            match std::fs::rename(tmp, dest) {
                Ok(()) => sync_dir(dest).map_err(|e| annotate(dest, e))?,
                // Renamed before the crash.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(annotate(dest, e)),
            }
        }
    }
    std::fs::remove_file(journal).map_err(|e| annotate(journal, e))?;
    sync_dir(journal).map_err(|e| annotate(journal, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_crash_after_the_journal_rolls_the_whole_commit_forward() {
        let d = dir("forward");
        let (key, crt, journal) = (d.join("a.key"), d.join("a.crt"), d.join(".journal"));
        write_file(&key, b"old key", true).unwrap();
        write_file(&crt, b"old cert", false).unwrap();
        // Simulate a crash between the two renames: the journal and both temporaries were
        // written, the key was renamed, the certificate was not.
        write_plain(&tmp_name(&key), b"new key", true).unwrap();
        write_plain(&tmp_name(&crt), b"new cert", false).unwrap();
        let j = Journal {
            renames: vec![(tmp_name(&key), key.clone()), (tmp_name(&crt), crt.clone())],
        };
        std::fs::write(&journal, serde_json::to_vec(&j).unwrap()).unwrap();
        std::fs::rename(tmp_name(&key), &key).unwrap();
        assert_eq!(
            std::fs::read(&crt).unwrap(),
            b"old cert",
            "the pair disagrees now"
        );
        recover(&journal).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"new key");
        assert_eq!(std::fs::read(&crt).unwrap(), b"new cert");
        assert!(!journal.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_crash_before_the_journal_keeps_the_old_pair_and_a_torn_journal_is_dropped() {
        let d = dir("torn");
        let (key, crt, journal) = (d.join("b.key"), d.join("b.crt"), d.join(".journal"));
        write_file(&key, b"old key", true).unwrap();
        write_file(&crt, b"old cert", false).unwrap();
        write_plain(&tmp_name(&key), b"new key", true).unwrap();
        std::fs::write(&journal, b"{\"renames\":[[\"b.key.n").unwrap();
        recover(&journal).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"old key");
        assert_eq!(std::fs::read(&crt).unwrap(), b"old cert");
        // A later commit still works and replaces both.
        commit(
            &journal,
            &[
                FileWrite {
                    path: key.clone(),
                    contents: b"k2",
                    private: true,
                },
                FileWrite {
                    path: crt.clone(),
                    contents: b"c2",
                    private: false,
                },
            ],
        )
        .unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"k2");
        assert_eq!(std::fs::read(&crt).unwrap(), b"c2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
