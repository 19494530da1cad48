//! The security event log: one JSON object per line, appended to the events file and echoed
//! to the process log.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tollgate_events::EventStream;

pub async fn run(mut stream: EventStream, path: PathBuf) {
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    let mut file = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
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
    while let Some(ev) = stream.next().await {
        let mut line = ev.to_json();
        tracing::info!(target: "tollgate::event", "{line}");
        if let Some(f) = file.as_mut() {
            line.push('\n');
            if let Err(e) = f.write_all(line.as_bytes()).await {
                tracing::error!("writing the event log: {e}");
            }
        }
    }
}
