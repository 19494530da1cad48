//! The data directory as the binary sees it: where a running server listens, and the exclusive
//! lock that lets only one server (or `store compact`) use a directory at a time. The layout of
//! the files and `tollgate init` belong to the control plane ([`tollgate_control::ca`]).

use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
pub use tollgate_control::ca::Layout;

/// Where a running server listens; written by `serve`, read by the CLI.
#[derive(Debug, Serialize, Deserialize)]
pub struct Addresses {
    pub mqtt: SocketAddr,
    pub admin: SocketAddr,
    /// The metrics listener, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    pub pid: u32,
}

/// An exclusive OS lock (`flock`) on `DATA/run/lock`, held for as long as this value lives. The
/// kernel releases it when the process ends however it ends, so a crash never leaves a stale
/// lock, and a PID that was reused cannot fool it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Take the lock for `what` ("serve", "store compact"), or say who holds it.
    pub fn acquire(data: &Path, what: &str) -> Result<DataDirLock> {
        let path = Layout::new(data).lock();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another Tollgate process"
                } else {
                    holder
                };
                bail!(
                    "tollgate {holder} is running on {}; {what} refuses to share the data directory (stop it first, or use another --data directory)",
                    data.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{what} (pid {})", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { _file: file })
    }
}

/// Write the addresses file of a running server.
pub fn write_addresses(data: &Path, a: &Addresses) -> Result<()> {
    let path = Layout::new(data).addresses();
    tollgate_control::files::write_file(&path, serde_json::to_string_pretty(a)?.as_bytes(), false)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_of_the_data_directory_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("tollgate-lock-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = DataDirLock::acquire(&dir, "serve").unwrap();
        let err = DataDirLock::acquire(&dir, "store compact").unwrap_err();
        assert!(err.to_string().contains("tollgate serve (pid "), "{err}");
        assert!(err.to_string().contains("is running on"), "{err}");
        drop(first);
        DataDirLock::acquire(&dir, "serve").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
