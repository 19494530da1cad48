//! The security event log: one JSON object per line, appended to the events file and echoed
//! to the process log. A burst of events becomes one write.

use std::io::Write;
use std::path::PathBuf;

use tollgate_events::EventStream;

/// Most events gathered into one write.
const BATCH: usize = 512;

pub async fn run(mut stream: EventStream, path: PathBuf) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A plain file append lands in the page cache: one short write per batch on this task is
    // cheaper than handing every batch to tokio's blocking pool (a thread switch each).
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(
                "cannot open the event log {}: {e}; events go to the process log only",
                path.display()
            );
            None
        }
    };
    let mut buf = String::new();
    while let Some(first) = stream.next().await {
        let mut ev = Some(first);
        let mut n = 0;
        while let Some(e) = ev {
            let line = e.to_json();
            tracing::info!(target: "tollgate::event", "{line}");
            buf.push_str(&line);
            buf.push('\n');
            n += 1;
            ev = if n < BATCH { stream.try_next() } else { None };
        }
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(buf.as_bytes()) {
                tracing::error!("writing the event log: {e}");
            }
        }
        buf.clear();
    }
}
