use super::*;

fn dev_with(buckets: &[(i64, u64)]) -> Device {
    let mut d = Device::new("d");
    for (idx, n) in buckets {
        d.with_bucket(*idx, |b| b.messages_in = *n);
    }
    d
}

#[test]
fn sliding_window_weights_the_oldest_bucket() {
    let w = 60_000;
    // Buckets of 60 s: 100 messages in bucket 9, 30 in bucket 10 (current).
    let d = dev_with(&[(8, 1000), (9, 100), (10, 30)]);
    // At 10 min + 15 s: current bucket whole (30) + 45/60 of bucket 9 (75).
    let v = d.window_sum(615_000, w, 60_000, |b| b.messages_in as f64);
    assert!((v - 105.0).abs() < 1e-9, "{v}");
    // At the start of bucket 10: all of bucket 9.
    let v = d.window_sum(600_000, w, 60_000, |b| b.messages_in as f64);
    assert!((v - 130.0).abs() < 1e-9, "{v}");
    // A 2-minute window at 10:30: current + bucket 9 + half of bucket 8.
    let v = d.window_sum(630_000, 120_000, 60_000, |b| b.messages_in as f64);
    assert!((v - 630.0).abs() < 1e-9, "{v}");
    // Sparse: nothing between.
    let d = dev_with(&[(1, 500), (10, 30)]);
    let v = d.window_sum(615_000, w, 60_000, |b| b.messages_in as f64);
    assert!((v - 30.0).abs() < 1e-9, "{v}");
}

#[test]
fn counters_delta_and_restart() {
    let mut d = Device::new("d");
    let c = |n| Counters {
        messages_in: n,
        bytes_in: n * 10,
        ..Counters::default()
    };
    d.record_sample(
        0,
        0,
        c(100),
        false,
        &Sketch::EMPTY,
        &Sketch::EMPTY,
        vec![],
        &[],
    );
    d.record_sample(
        0,
        10,
        c(130),
        false,
        &Sketch::EMPTY,
        &Sketch::EMPTY,
        vec![],
        &[],
    );
    // Meter restarted: 5 is the delta.
    d.record_sample(
        1,
        70_000,
        c(5),
        false,
        &Sketch::EMPTY,
        &Sketch::EMPTY,
        vec![],
        &[],
    );
    assert_eq!(d.buckets.len(), 2);
    assert_eq!(d.buckets[0].messages_in, 30);
    assert_eq!(d.buckets[0].bytes_in, 300);
    assert_eq!(d.buckets[1].messages_in, 5);
}

#[test]
fn baselines_skip_offline_current_and_excluded() {
    let mut d = Device::new("d");
    for idx in 0..10 {
        d.with_bucket(idx, |b| {
            b.messages_in = 10 + (idx as u64 % 3);
            b.online = idx != 3;
        });
    }
    d.with_bucket(10, |b| {
        b.messages_in = 10_000;
        b.online = true;
    });
    let mut scratch = Vec::new();
    d.refresh_baselines(10, 60_000, 5, &[Metric::MessagesIn], &mut scratch);
    let b = *d.baseline(Metric::MessagesIn).unwrap();
    assert_eq!(b.samples, 9);
    assert_eq!(b.median, 11.0);
    // Exclude buckets 7..=9 for messages_in: recomputed at the next refresh.
    d.exclude(7 * 60_000, 9 * 60_000, 60_000, Metric::MessagesIn.bit());
    d.refresh_baselines(10, 60_000, 5, &[Metric::MessagesIn], &mut scratch);
    assert_eq!(d.baseline(Metric::MessagesIn).unwrap().samples, 6);
}

#[test]
fn networks() {
    let a: IpAddr = "192.168.7.42".parse().unwrap();
    assert_eq!(network_of(a, 24, 64), "192.168.7.0/24");
    assert_eq!(network_of(a, 0, 64), "0.0.0.0/0");
    let b: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
    assert_eq!(network_of(b, 24, 64), "2001:db8:1:2::/64");
}
