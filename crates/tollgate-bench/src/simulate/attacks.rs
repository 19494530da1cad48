//! The attacks: what each does, which detector should see it, and the schedule.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::time::{sleep, Instant};
use tollgate_mqtt::{Bytes, Packet, QoS};

use super::fleet::{self, Cmd, Device, Handle};
use crate::client::{self, Dial};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ClonedCertificate,
    ClonedCertificateConcurrent,
    AuthorizationProbing,
    TopicScanning,
    TrafficSpike,
    ConnectionFlapping,
    NewSourceAddress,
    Inactive,
    LinkLoss,
    LinkDelay,
    CohortLinkLoss,
}

/// The default schedule, in order.
pub const ALL: [Kind; 11] = [
    Kind::ClonedCertificate,
    Kind::AuthorizationProbing,
    Kind::TopicScanning,
    Kind::TrafficSpike,
    Kind::ConnectionFlapping,
    Kind::NewSourceAddress,
    Kind::Inactive,
    Kind::ClonedCertificateConcurrent,
    Kind::LinkLoss,
    Kind::LinkDelay,
    Kind::CohortLinkLoss,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ClonedCertificate => "cloned_certificate",
            Kind::ClonedCertificateConcurrent => "cloned_certificate_concurrent",
            Kind::AuthorizationProbing => "authorization_probing",
            Kind::TopicScanning => "topic_scanning",
            Kind::TrafficSpike => "traffic_spike",
            Kind::ConnectionFlapping => "connection_flapping",
            Kind::NewSourceAddress => "new_source_address",
            Kind::Inactive => "inactive",
            Kind::LinkLoss => "link_loss",
            Kind::LinkDelay => "link_delay",
            Kind::CohortLinkLoss => "cohort_link_loss",
        }
    }

    pub fn parse(s: &str) -> Result<Kind> {
        ALL.into_iter().find(|k| k.name() == s).with_context(|| {
            let names: Vec<&str> = ALL.iter().map(|k| k.name()).collect();
            format!("unknown attack {s:?} (one of {})", names.join(", "))
        })
    }

    /// The detector that should raise an alert.
    pub fn detector(self) -> &'static str {
        match self {
            Kind::ClonedCertificate | Kind::ClonedCertificateConcurrent => "cloned_certificate",
            Kind::AuthorizationProbing => "authorization_probing",
            Kind::TopicScanning => "topic_scanning",
            Kind::TrafficSpike => "traffic_spike",
            Kind::ConnectionFlapping => "connection_flapping",
            Kind::NewSourceAddress => "new_source_address",
            Kind::Inactive => "inactive",
            Kind::LinkLoss | Kind::LinkDelay => "link_degradation",
            Kind::CohortLinkLoss => "network_degradation",
        }
    }

    /// Runs devices in a network namespace (root, `ip netns`, nftables).
    pub fn needs_netns(self) -> bool {
        matches!(
            self,
            Kind::LinkLoss | Kind::LinkDelay | Kind::CohortLinkLoss
        )
    }

    /// How long the attack itself lasts (the schedule leaves room for it).
    pub fn duration(self) -> Duration {
        match self {
            Kind::TrafficSpike | Kind::ConnectionFlapping => Duration::from_secs(60),
            Kind::Inactive => Duration::from_secs(90),
            // The impairment itself lasts until the end of the run (each attack has its own
            // namespace); this is the room the schedule leaves before the next onset.
            Kind::LinkLoss | Kind::LinkDelay | Kind::CohortLinkLoss => Duration::from_secs(30),
            _ => Duration::from_secs(20),
        }
    }
}

/// `NAME` or `NAME@SECONDS` (onset after the learning phase).
#[derive(Debug, Clone)]
pub struct Requested {
    pub kind: Kind,
    pub at: Option<f64>,
}

impl std::str::FromStr for Requested {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Requested> {
        let (name, at) = match s.split_once('@') {
            Some((n, a)) => {
                let secs: f64 = a
                    .parse()
                    .with_context(|| format!("onset {a:?} in {s:?} is not a number"))?;
                if !(0.0..=86_400.0).contains(&secs) {
                    bail!("onset {secs} s in {s:?} is outside 0 to 86400");
                }
                (n, Some(secs))
            }
            None => (s, None),
        };
        Ok(Requested {
            kind: Kind::parse(name)?,
            at,
        })
    }
}

/// One attack to launch: its kind, repetition and onset (seconds after the learning phase).
#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: Kind,
    pub rep: usize,
    pub onset_s: f64,
}

/// The schedule: every requested attack (or every one, in [`ALL`] order) `spacing` seconds
/// apart unless it names its onset, repeated `reps` times one cycle after another.
pub fn schedule(requested: &[Requested], reps: usize, spacing: f64) -> Vec<Planned> {
    let list: Vec<Requested> = if requested.is_empty() {
        ALL.iter()
            .map(|&kind| Requested { kind, at: None })
            .collect()
    } else {
        requested.to_vec()
    };
    let mut onsets = Vec::with_capacity(list.len());
    let mut next = 0.0f64;
    for r in &list {
        let at = r.at.unwrap_or(next);
        // The next default onset leaves this attack's duration, or `spacing`, whichever longer.
        next = at + spacing.max(r.kind.duration().as_secs_f64() + 10.0);
        onsets.push(at);
    }
    let cycle = next;
    let mut out = Vec::new();
    for rep in 0..reps {
        for (r, at) in list.iter().zip(&onsets) {
            out.push(Planned {
                kind: r.kind,
                rep,
                onset_s: at + cycle * rep as f64,
            });
        }
    }
    out.sort_by(|a, b| a.onset_s.total_cmp(&b.onset_s));
    out
}

/// Launch an event-based attack on one steady device. Returns once the attack has been set
/// going; a clone's connections continue in the returned task (aborted when the run ends).
pub async fn launch(
    kind: Kind,
    target: &Handle,
    fleet_ids: &[String],
    addr: SocketAddr,
    k: usize,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let id = target.device.id.clone();
    let send = |cmd: Cmd| {
        let tx = target.tx.clone();
        async move {
            tx.send(cmd)
                .await
                .map_err(|_| anyhow::anyhow!("the device task has stopped"))
        }
    };
    match kind {
        Kind::ClonedCertificate => {
            let dev = Arc::clone(&target.device);
            return Ok(Some(tokio::spawn(async move {
                if let Err(e) = takeover_ping_pong(addr, &dev).await {
                    eprintln!("cloned_certificate on {}: {e:#}", dev.id);
                }
            })));
        }
        Kind::ClonedCertificateConcurrent => {
            let dev = Arc::clone(&target.device);
            return Ok(Some(tokio::spawn(async move {
                if let Err(e) = concurrent_clone(addr, &dev).await {
                    eprintln!("cloned_certificate_concurrent on {}: {e:#}", dev.id);
                }
            })));
        }
        Kind::AuthorizationProbing => {
            let mut topics: Vec<String> = fleet_ids
                .iter()
                .filter(|o| **o != id)
                .take(20)
                .map(|o| format!("telemetry/{o}/x"))
                .collect();
            for t in [
                "admin/config",
                "admin/users",
                "$SYS/broker/clients",
                "commands/all/reboot",
                "firmware/update",
                "admin/keys",
                "backend/db",
                "ota/push",
                "admin/shutdown",
                "logs/all",
            ] {
                topics.push(t.to_string());
            }
            let filters = vec!["admin/#".into(), "telemetry/+/state".into(), "#".into()];
            send(Cmd::Probe {
                topics,
                filters,
                gap: Duration::from_millis(100),
            })
            .await?;
        }
        Kind::TopicScanning => {
            // 15 distinct wildcard filters: 10 inside the device's own command tree (allowed),
            // 5 broad ones (denied, fewer than authorization_probing's 8 distinct topics).
            let mut filters: Vec<String> = [
                "+", "#", "+/+", "+/#", "a/#", "b/+", "+/x/+", "status/+", "cfg/#", "+/+/+",
            ]
            .iter()
            .map(|f| format!("commands/{id}/{f}"))
            .collect();
            for f in ["#", "+/+", "telemetry/+/state", "commands/#", "+/+/+"] {
                filters.push(f.to_string());
            }
            send(Cmd::Probe {
                topics: Vec::new(),
                filters,
                gap: Duration::from_millis(200),
            })
            .await?;
        }
        Kind::TrafficSpike => {
            send(Cmd::Spike {
                factor: 20,
                payload_factor: 4,
                dur: kind.duration(),
            })
            .await?
        }
        Kind::ConnectionFlapping => {
            send(Cmd::Flap {
                times: 10,
                over: kind.duration(),
            })
            .await?
        }
        Kind::NewSourceAddress => {
            // 127.0.<x>.2: another /24, all of 127/8 is loopback on Linux.
            let x = 10 + (k % 200) as u8;
            send(Cmd::MoveTo(IpAddr::V4(Ipv4Addr::new(127, 0, x, 2)))).await?
        }
        Kind::Inactive => {
            send(Cmd::Silence {
                dur: kind.duration(),
                disconnect: false,
            })
            .await?
        }
        Kind::LinkLoss | Kind::LinkDelay | Kind::CohortLinkLoss => {
            bail!("{} runs in a network namespace", kind.name())
        }
    }
    Ok(None)
}

/// The clone: the same certificate and client id from 127.0.0.2, reconnecting whenever the
/// real device takes the session back, so the two take it over from each other.
async fn takeover_ping_pong(addr: SocketAddr, dev: &Device) -> Result<()> {
    let d = Dial {
        local: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
        ..Dial::default()
    };
    let until = Instant::now() + Duration::from_secs(30);
    for _ in 0..6 {
        if Instant::now() > until {
            break;
        }
        let mut conn = fleet::dial(addr, dev, &d).await?;
        // Held until the device reconnects and takes the session back (at most 5 s).
        if !fleet::hold(&mut conn, Duration::from_secs(5)).await {
            let _ = conn.send(&Packet::Disconnect(Default::default())).await;
        }
        sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The clone with its own client id (`<id>:clone`, allowed by `client_id = "prefix"`) from
/// 127.0.0.2, connected alongside the device for 20 s and publishing as it does.
async fn concurrent_clone(addr: SocketAddr, dev: &Device) -> Result<()> {
    let d = Dial {
        local: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
        client_id: Some(format!("{}:clone", dev.id)),
        ..Dial::default()
    };
    let mut conn = fleet::dial(addr, dev, &d).await?;
    for i in 0..20u32 {
        let p = fleet::publish(
            &format!("telemetry/{}/state", dev.id),
            QoS::AtMostOnce,
            0,
            Bytes::from(format!("{{\"seq\":{i},\"clone\":true}}")),
        );
        client::write_packet(&mut conn.wr, conn.protocol, &p).await?;
        if fleet::hold(&mut conn, Duration::from_secs(1)).await {
            bail!("the clone's connection closed");
        }
    }
    let _ = conn.send(&Packet::Disconnect(Default::default())).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_attacks_parse_with_and_without_onset() {
        let r: Requested = "traffic_spike@30".parse().unwrap();
        assert_eq!((r.kind, r.at), (Kind::TrafficSpike, Some(30.0)));
        let r: Requested = "inactive".parse().unwrap();
        assert_eq!((r.kind, r.at), (Kind::Inactive, None));
        assert!("nope".parse::<Requested>().is_err());
        assert!("inactive@-1".parse::<Requested>().is_err());
    }

    #[test]
    fn the_default_schedule_spaces_attacks_by_their_duration_and_repeats() {
        let s = schedule(&[], 2, 40.0);
        assert_eq!(s.len(), 2 * ALL.len());
        for w in s.windows(2) {
            assert!(w[1].onset_s - w[0].onset_s >= 30.0 - 1e-9, "{w:?}");
        }
        assert_eq!(s.iter().filter(|p| p.rep == 1).count(), ALL.len());
    }
}
