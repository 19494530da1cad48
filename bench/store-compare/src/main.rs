//! store-compare: group-commit workload of a durable MQTT queue against SQLite, fjall, redb,
//! and a plain append+fdatasync file. See README.md.
//!
//! Per batch of B messages: B inserts (key = session u64 BE ++ seq u64 BE, value = 200-byte
//! payload) + B deletes of the previous batch's keys, then one durable commit.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type R<T> = Result<T, Box<dyn Error>>;
const PAYLOAD: usize = 200;
const SESSIONS: u64 = 64;

#[derive(Clone, Copy)]
struct Msg {
    session: u64,
    seq: u64,
}
impl Msg {
    fn key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.session.to_be_bytes());
        k[8..].copy_from_slice(&self.seq.to_be_bytes());
        k
    }
}

/// One durable commit: insert `ins` (with matching `vals`), delete `del`.
trait Store {
    fn commit(&mut self, ins: &[Msg], vals: &[&[u8]], del: &[Msg]) -> R<()>;
}

struct Sqlite(rusqlite::Connection);
impl Sqlite {
    fn open(dir: &Path) -> R<Self> {
        let c = rusqlite::Connection::open(dir.join("queue.sqlite"))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "FULL")?;
        let (jm, sync): (String, i64) = (c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                                         c.query_row("PRAGMA synchronous", [], |r| r.get(0))?);
        assert!(jm == "wal" && sync == 2, "sqlite pragmas not applied: {jm} {sync}");
        c.execute_batch(
            "CREATE TABLE q (session INTEGER NOT NULL, seq INTEGER NOT NULL, \
             payload BLOB NOT NULL, PRIMARY KEY (session, seq)) WITHOUT ROWID;",
        )?;
        Ok(Sqlite(c))
    }
}
impl Store for Sqlite {
    fn commit(&mut self, ins: &[Msg], vals: &[&[u8]], del: &[Msg]) -> R<()> {
        let tx = self.0.transaction()?;
        {
            let mut i = tx.prepare_cached("INSERT INTO q (session, seq, payload) VALUES (?1, ?2, ?3)")?;
            for (m, v) in ins.iter().zip(vals) {
                i.execute(rusqlite::params![m.session as i64, m.seq as i64, v])?;
            }
            let mut d = tx.prepare_cached("DELETE FROM q WHERE session = ?1 AND seq = ?2")?;
            for m in del {
                d.execute(rusqlite::params![m.session as i64, m.seq as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}
impl Fjall {
    fn open(dir: &Path) -> R<Self> {
        let db = fjall::Database::builder(dir.join("fjall")).open()?;
        let ks = db.keyspace("queue", fjall::KeyspaceCreateOptions::default)?;
        Ok(Fjall { db, ks })
    }
}
impl Store for Fjall {
    fn commit(&mut self, ins: &[Msg], vals: &[&[u8]], del: &[Msg]) -> R<()> {
        // durability(SyncAll): the journal is fsync'ed inside commit() before it returns.
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for (m, v) in ins.iter().zip(vals) {
            b.insert(&self.ks, m.key(), *v);
        }
        for m in del {
            b.remove(&self.ks, m.key());
        }
        b.commit()?;
        Ok(())
    }
}

const REDB_T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("queue");
struct Redb(redb::Database);
impl Redb {
    fn open(dir: &Path) -> R<Self> {
        Ok(Redb(redb::Database::create(dir.join("queue.redb"))?))
    }
}
impl Store for Redb {
    fn commit(&mut self, ins: &[Msg], vals: &[&[u8]], del: &[Msg]) -> R<()> {
        let mut tx = self.0.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        {
            let mut t = tx.open_table(REDB_T)?;
            for (m, v) in ins.iter().zip(vals) {
                t.insert(&m.key()[..], *v)?;
            }
            for m in del {
                t.remove(&m.key()[..])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Baseline: append the batch's payload bytes (B * 200) to one file, then fdatasync.
struct File(std::fs::File, Vec<u8>);
impl Store for File {
    fn commit(&mut self, _ins: &[Msg], vals: &[&[u8]], _del: &[Msg]) -> R<()> {
        self.1.clear();
        vals.iter().for_each(|v| self.1.extend_from_slice(v));
        self.0.write_all(&self.1)?;
        self.0.sync_data()?;
        Ok(())
    }
}

fn open(engine: &str, dir: &Path) -> R<Box<dyn Store>> {
    Ok(match engine {
        "sqlite" => Box::new(Sqlite::open(dir)?),
        "fjall" => Box::new(Fjall::open(dir)?),
        "redb" => Box::new(Redb::open(dir)?),
        "file" => {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("log"))?;
            Box::new(File(f, Vec::new()))
        }
        e => return Err(format!("unknown engine {e}").into()),
    })
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Allocated bytes (st_blocks * 512) of everything under `dir`; sparse/preallocated space excluded.
fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter_map(|e| e.metadata().ok().map(|m| (e, m)))
        .map(|(e, m)| if m.is_dir() { dir_size(&e.path()) } else { m.blocks() * 512 })
        .sum()
}

struct Run {
    batches: u64,
    secs: f64,
    p99_ms: f64,
    size_open: u64,   // allocated bytes just before close
    size_closed: u64, // allocated bytes after close
}

fn run_once(engine: &str, b: usize, dir: &Path, dur: Duration, seed: u64) -> R<Run> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut store = open(engine, dir)?;
    let mut rng = XorShift(seed | 1);
    // 1 MiB of random bytes; payloads are 200-byte windows at random offsets (incompressible).
    let pool: Vec<u8> = (0..(1 << 17)).flat_map(|_| rng.next().to_le_bytes()).collect();
    let mut seqs = [0u64; SESSIONS as usize];
    let (mut prev, mut cur): (Vec<Msg>, Vec<Msg>) = (Vec::new(), Vec::new());
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        cur.clear();
        let mut vals: Vec<&[u8]> = Vec::with_capacity(b);
        for _ in 0..b {
            let session = rng.next() % SESSIONS;
            seqs[session as usize] += 1;
            cur.push(Msg { session, seq: seqs[session as usize] });
            let off = (rng.next() as usize) % (pool.len() - PAYLOAD);
            vals.push(&pool[off..off + PAYLOAD]);
        }
        let t = Instant::now();
        store.commit(&cur, &vals, &prev)?;
        lat.push(t.elapsed());
        std::mem::swap(&mut prev, &mut cur);
    }
    let secs = start.elapsed().as_secs_f64();
    let size_open = dir_size(dir);
    drop(store); // close (SQLite checkpoints + removes its WAL here)
    lat.sort();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)].as_secs_f64() * 1e3;
    Ok(Run { batches: lat.len() as u64, secs, p99_ms: p99, size_open, size_closed: dir_size(dir) })
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("store-compare [--dir D] [--secs 3] [--runs 3] [--batches 1,16,256,2048] [--engines file,sqlite,fjall,redb]");
        return Ok(());
    }
    let root = PathBuf::from(arg(&args, "--dir", "/tmp/store-compare-data"));
    let dur = Duration::from_secs_f64(arg(&args, "--secs", "3").parse()?);
    let runs: usize = arg(&args, "--runs", "3").parse()?;
    let batches: Vec<usize> =
        arg(&args, "--batches", "1,16,256,2048").split(',').map(|s| s.parse()).collect::<Result<_, _>>()?;
    let engines = arg(&args, "--engines", "file,sqlite,fjall,redb");

    println!("| engine | B | commits/s | msgs/s | p99 commit ms | disk MiB open / closed |");
    println!("|---|---:|---:|---:|---:|---:|");
    for engine in engines.split(',') {
        for &b in &batches {
            let mut rs = Vec::new();
            for r in 0..runs {
                let dir = root.join(format!("{engine}-{b}"));
                rs.push(run_once(engine, b, &dir, dur, 0x9E37_79B9_7F4A_7C15 ^ (r as u64 + 1))?);
                let _ = std::fs::remove_dir_all(&dir);
            }
            rs.sort_by(|x, y| (x.batches as f64 / x.secs).total_cmp(&(y.batches as f64 / y.secs)));
            let m = &rs[rs.len() / 2]; // median run by commits/s
            let cps = m.batches as f64 / m.secs;
            let all: Vec<String> = rs.iter().map(|r| format!("{:.0}", r.batches as f64 / r.secs)).collect();
            eprintln!("{engine} B={b}: commits/s per run (sorted) = {}", all.join(", "));
            println!(
                "| {engine} | {b} | {cps:.0} | {:.0} | {:.2} | {:.1} / {:.1} |",
                cps * b as f64, m.p99_ms, m.size_open as f64 / 1048576.0, m.size_closed as f64 / 1048576.0
            );
        }
    }
    Ok(())
}
