//! Reading OSV records from disk: a folder of `*.json` files (recursively) or an osv.dev
//! `all.zip`. Owns the bounds on what is read (record size, archive size, entry count, the
//! uncompressed size of each entry whatever its header claims) and a stable order; it must not
//! parse records (the caller does) or follow symbolic links to folders.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{ComplianceError, MAX_RECORD_BYTES};

/// The largest advisory archive read, in bytes (osv.dev's per-ecosystem `all.zip` files run to
/// hundreds of megabytes).
pub const MAX_ARCHIVE_BYTES: u64 = 1024 * 1024 * 1024;

/// The most records read from one folder or archive.
pub const MAX_RECORDS: usize = 2_000_000;

/// One record as read, before parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Where it came from: the file, or `archive!entry`.
    pub origin: String,
    /// The record's bytes.
    pub bytes: Vec<u8>,
}

fn read_error(path: &Path, detail: impl std::fmt::Display) -> ComplianceError {
    ComplianceError::Read {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Read OSV records from `path`: a folder (every `*.json` below it, in path order), a zip
/// archive (every `*.json` entry, in name order), or one `.json` file, calling `f` once per
/// record. Stops at the first error, from reading or from `f`. Returns the number of records.
///
/// Bounds: a file or entry over [`MAX_RECORD_BYTES`] (measured while decompressing, not taken
/// from the header), an archive over [`MAX_ARCHIVE_BYTES`], or more than [`MAX_RECORDS`]
/// records are errors.
pub fn read_path(
    path: &Path,
    mut f: impl FnMut(RawRecord) -> Result<(), ComplianceError>,
) -> Result<usize, ComplianceError> {
    let meta = fs::metadata(path).map_err(|e| read_error(path, e))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        collect_json(path, &mut files)?;
        files.sort();
        for file in &files {
            f(read_file(file)?)?;
        }
        return Ok(files.len());
    }
    if is_zip(path)? {
        return read_zip(path, meta.len(), f);
    }
    f(read_file(path)?)?;
    Ok(1)
}

fn is_zip(path: &Path) -> Result<bool, ComplianceError> {
    let mut magic = [0u8; 4];
    let mut file = fs::File::open(path).map_err(|e| read_error(path, e))?;
    let n = file.read(&mut magic).map_err(|e| read_error(path, e))?;
    Ok(n == 4 && (magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06"))
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ComplianceError> {
    let entries = fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(|e| read_error(&p, e))?;
        if ft.is_dir() {
            collect_json(&p, out)?;
        } else if (ft.is_file() || ft.is_symlink())
            && p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("json"))
            && fs::metadata(&p).is_ok_and(|m| m.is_file())
        {
            if out.len() >= MAX_RECORDS {
                return Err(read_error(dir, format!("more than {MAX_RECORDS} records")));
            }
            out.push(p);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<RawRecord, ComplianceError> {
    let file = fs::File::open(path).map_err(|e| read_error(path, e))?;
    let size = file.metadata().map_err(|e| read_error(path, e))?.len();
    if size > MAX_RECORD_BYTES {
        return Err(ComplianceError::TooLarge {
            what: path.display().to_string(),
            size,
            limit: MAX_RECORD_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(path, e))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(ComplianceError::TooLarge {
            what: path.display().to_string(),
            size: bytes.len() as u64,
            limit: MAX_RECORD_BYTES,
        });
    }
    Ok(RawRecord {
        origin: path.display().to_string(),
        bytes,
    })
}

fn read_zip(
    path: &Path,
    size: u64,
    mut f: impl FnMut(RawRecord) -> Result<(), ComplianceError>,
) -> Result<usize, ComplianceError> {
    if size > MAX_ARCHIVE_BYTES {
        return Err(ComplianceError::TooLarge {
            what: path.display().to_string(),
            size,
            limit: MAX_ARCHIVE_BYTES,
        });
    }
    let file = fs::File::open(path).map_err(|e| read_error(path, e))?;
    let mut archive =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| read_error(path, e))?;
    if archive.len() > MAX_RECORDS {
        return Err(read_error(
            path,
            format!("{} entries, over the limit of {MAX_RECORDS}", archive.len()),
        ));
    }
    let mut names: Vec<String> = Vec::new();
    for n in archive.file_names() {
        let n = n.map_err(|e| read_error(path, e))?;
        let json = !n.ends_with('/')
            && Path::new(n.as_ref())
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("json"));
        if json {
            names.push(n.into_owned());
        }
    }
    names.sort();
    names.dedup();
    for name in &names {
        let origin = format!("{}!{name}", path.display());
        let entry = archive
            .by_name(name)
            .map_err(|e| read_error(Path::new(&origin), e))?;
        if entry.size() > MAX_RECORD_BYTES {
            return Err(ComplianceError::TooLarge {
                what: origin,
                size: entry.size(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let mut bytes = Vec::new();
        entry
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_error(Path::new(&origin), e))?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(ComplianceError::TooLarge {
                what: origin,
                size: bytes.len() as u64,
                limit: MAX_RECORD_BYTES,
            });
        }
        f(RawRecord { origin, bytes })?;
    }
    Ok(names.len())
}
