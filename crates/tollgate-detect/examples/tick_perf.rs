//! How long one evaluation (`Engine::tick`) of 100,000 devices takes, over 62 minutes of
//! 30-second samples (so the hour of history fills and bucket-boundary ticks recompute full
//! baselines). A measurement, not a test:
//!
//! ```sh
//! cargo run --release -p tollgate-detect --example tick_perf
//! ```

use tollgate_detect::{
    Counters, DetectionConfig, DeviceInfo, Engine, LiveConn, Sample, Sketch, Transport,
};

fn main() {
    let mut eng = Engine::new(DetectionConfig::default());
    let n = 100_000;
    let ids: Vec<String> = (0..n).map(|i| format!("dev-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        eng.set_device(
            id,
            DeviceInfo {
                groups: vec![format!("g{}", i % 50)],
                model: Some(format!("m{}", i % 7)),
            },
        );
    }
    let mut now: i64 = 1_764_000_000_000;
    let mut worst = std::time::Duration::ZERO;
    let mut total = std::time::Duration::ZERO;
    let mut ticks = 0;
    // 62 minutes in 30 s steps: the history fills, so the bucket-boundary ticks recompute
    // 60-bucket baselines for every device.
    for step in 0..124 {
        now += 30_000;
        let samples: Vec<Sample> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Sample {
                device: id.clone(),
                counters: Counters {
                    messages_in: (step * (10 + i % 5)) as u64,
                    bytes_in: (step * 2000) as u64,
                    ..Counters::default()
                },
                topics: Sketch::default(),
                filters: Sketch::default(),
                connections: vec![LiveConn {
                    client_id: id.clone(),
                    addr: None,
                    transport: Some(Transport {
                        rtt_us: 30_000,
                        bytes_sent: (step * 3000) as u64,
                        segs_out: (step * 10) as u32,
                        ..Transport::default()
                    }),
                }],
                restarted: false,
                closed: Vec::new(),
            })
            .collect();
        eng.sample(now, samples);
        let t = std::time::Instant::now();
        let tick = eng.tick(now);
        let d = t.elapsed();
        assert!(tick.changes.is_empty());
        worst = worst.max(d);
        total += d;
        ticks += 1;
    }
    eprintln!(
        "100k devices: mean tick {:?}, worst tick {:?}",
        total / ticks,
        worst
    );
    if worst >= std::time::Duration::from_secs(1) {
        eprintln!("a tick took a second or more");
        std::process::exit(1);
    }
}
