//! The evaluation of a [`Facts`] snapshot into [`Finding`]s.
//!
//! Pure and total: the same facts give the same findings in the same order, and no input
//! (empty or absurd moduli, times at `i64::MIN`/`MAX`, odd patterns) makes it panic. Time
//! arithmetic saturates or is done in `i128`.

use std::collections::{BTreeMap, BTreeSet};

use super::roca::{bit_len, has_roca_fingerprint};
use super::rules::rule;
use super::{
    days, fmt_span, fmt_time, norm_digest, norm_hex, CertFact, CertKind, DeviceFact, Facts,
    Finding, GrantFact, KeyFact, Severity,
};

/// Evidence longer than this is not extended by further merged findings.
const MAX_EVIDENCE: usize = 4096;

/// Evaluate every rule on `f`: one finding per (rule, resource), sorted by severity (highest
/// first), then rule id, then resource.
pub fn evaluate(f: &Facts) -> Vec<Finding> {
    let mut out = Out::default();
    let ctx = Ctx::new(f);
    infra_certs(&ctx, &mut out);
    device_certs(&ctx, &mut out);
    revoked_cas(&ctx, &mut out);
    duplicate_keys(&ctx, &mut out);
    weak_keys(&ctx, &mut out);
    too_old(&ctx, &mut out);
    devices(&ctx, &mut out);
    policy(f, &mut out);
    config(f, &mut out);
    audit_log(f, &mut out);
    files(f, &mut out);
    out.finish()
}

/// The findings being collected, keyed by (rule, resource).
#[derive(Default)]
struct Out {
    map: BTreeMap<(String, String), Finding>,
}

impl Out {
    /// Add a finding. The remediation is the catalogue's, with `<device-id>` and `<file>`
    /// replaced by `device` and `file` when given. A second finding for the same rule and
    /// resource is merged into the first: the higher severity, both evidences.
    fn push(
        &mut self,
        rule_id: &'static str,
        severity: Severity,
        resource: String,
        evidence: String,
        device: Option<&str>,
        file: Option<&str>,
    ) {
        let mut remediation = rule(rule_id)
            .map(|r| r.remediation.to_string())
            .unwrap_or_default();
        if let Some(d) = device {
            remediation = remediation.replace("<device-id>", d);
        }
        if let Some(p) = file {
            remediation = remediation.replace("<file>", p);
        }
        let key = (rule_id.to_string(), resource);
        match self.map.get_mut(&key) {
            Some(existing) => {
                existing.severity = existing.severity.max(severity);
                if existing.evidence != evidence && existing.evidence.len() < MAX_EVIDENCE {
                    existing.evidence.push_str("; ");
                    existing.evidence.push_str(&evidence);
                }
            }
            None => {
                let finding = Finding {
                    rule: key.0.clone(),
                    severity,
                    resource: key.1.clone(),
                    evidence,
                    remediation,
                };
                self.map.insert(key, finding);
            }
        }
    }

    fn finish(self) -> Vec<Finding> {
        let mut v: Vec<Finding> = self.map.into_values().collect();
        sort_findings(&mut v);
        v
    }
}

/// Severity (highest first), rule, resource.
pub(super) fn sort_findings(v: &mut [Finding]) {
    v.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.resource.cmp(&b.resource))
    });
}

/// What several rules share: the time, the thresholds in seconds, the device records and the
/// device certificates grouped by device.
struct Ctx<'a> {
    f: &'a Facts,
    now: i64,
    /// `expiry_days` in seconds.
    window: i64,
    /// Device id → revoked (revoked if any record of that id says so).
    revoked: BTreeMap<&'a str, bool>,
    /// Device id → its certificates that are not revoked, of devices that are not revoked.
    device_certs: BTreeMap<&'a str, Vec<&'a CertFact>>,
    /// Normalised serial → retired CA.
    retired: BTreeMap<String, &'a CertFact>,
}

impl<'a> Ctx<'a> {
    fn new(f: &'a Facts) -> Ctx<'a> {
        let mut revoked: BTreeMap<&str, bool> = BTreeMap::new();
        for d in &f.devices {
            let r = revoked.entry(d.id.as_str()).or_insert(false);
            *r = *r || d.revoked;
        }
        let mut device_certs: BTreeMap<&str, Vec<&CertFact>> = BTreeMap::new();
        for c in &f.certs {
            if c.kind == CertKind::Device
                && !c.revoked
                && !revoked.get(c.subject.as_str()).copied().unwrap_or(false)
            {
                device_certs.entry(c.subject.as_str()).or_default().push(c);
            }
        }
        let mut retired = BTreeMap::new();
        for c in &f.certs {
            if c.kind == CertKind::RetiredCa {
                retired.entry(norm_hex(&c.serial)).or_insert(c);
            }
        }
        Ctx {
            f,
            now: f.now,
            window: days(f.thresholds.expiry_days),
            revoked,
            device_certs,
            retired,
        }
    }

    fn device_revoked(&self, id: &str) -> bool {
        self.revoked.get(id).copied().unwrap_or(false)
    }

    fn expired(&self, c: &CertFact) -> bool {
        self.now > c.not_after
    }

    /// A certificate that matters now: not revoked, not expired, and for a retired CA still
    /// trusted; for a device certificate, of a device that is not revoked.
    fn in_use(&self, c: &CertFact) -> bool {
        let gone = c.revoked
            || self.expired(c)
            || (c.kind == CertKind::RetiredCa && trust_ended(c, self.now))
            || (c.kind == CertKind::Device && self.device_revoked(&c.subject));
        !gone
    }
}

/// A retired CA whose `trusted_until` has passed.
fn trust_ended(c: &CertFact, now: i64) -> bool {
    matches!(c.trusted_until, Some(t) if t <= now)
}

fn kind_name(k: CertKind) -> &'static str {
    match k {
        CertKind::RootCa => "root CA",
        CertKind::IssuingCa => "issuing CA",
        CertKind::RetiredCa => "retired issuing CA",
        CertKind::Server => "server",
        CertKind::Admin => "admin",
        CertKind::Device => "device",
    }
}

fn is_ca(k: CertKind) -> bool {
    matches!(
        k,
        CertKind::RootCa | CertKind::IssuingCa | CertKind::RetiredCa
    )
}

/// `cert:<serial>`.
fn cert_resource(c: &CertFact) -> String {
    format!("cert:{}", c.serial)
}

/// `the server certificate "gw.example" (serial 1a)`.
fn describe(c: &CertFact) -> String {
    format!(
        "the {} certificate {:?} (serial {})",
        kind_name(c.kind),
        c.subject,
        c.serial
    )
}

/// `cert-expired` and `cert-expiring` for CA, server and admin certificates.
fn infra_certs(ctx: &Ctx<'_>, out: &mut Out) {
    let now = ctx.now;
    for c in &ctx.f.certs {
        // Revoked CAs are `ca-revoked-still-trusted`'s; revoked server or admin certificates are
        // not in use; a retired CA whose trust has ended is not used any more.
        if c.kind == CertKind::Device
            || c.revoked
            || (c.kind == CertKind::RetiredCa && trust_ended(c, now))
        {
            continue;
        }
        if now > c.not_after {
            out.push(
                "cert-expired",
                Severity::High,
                cert_resource(c),
                format!("{} expired at {}", describe(c), fmt_time(c.not_after)),
                None,
                None,
            );
            continue;
        }
        // A retired CA is meant to lapse; its devices are `device-cert-under-retired-ca`'s.
        let left = i128::from(c.not_after) - i128::from(now);
        if c.kind != CertKind::RetiredCa && left <= i128::from(ctx.window) {
            out.push(
                "cert-expiring",
                Severity::Medium,
                cert_resource(c),
                format!(
                    "{} expires at {}, in {} (threshold: {} days)",
                    describe(c),
                    fmt_time(c.not_after),
                    fmt_span(left),
                    ctx.f.thresholds.expiry_days
                ),
                None,
                None,
            );
        }
    }
}

/// `cert-expired`, `cert-expiring` and `device-cert-under-retired-ca` for devices, judged on
/// all of a device's certificates together.
fn device_certs(ctx: &Ctx<'_>, out: &mut Out) {
    let now = ctx.now;
    for (&id, certs) in &ctx.device_certs {
        let resource = format!("device:{id}");
        let unexpired: Vec<&CertFact> = certs.iter().copied().filter(|c| !ctx.expired(c)).collect();
        if unexpired.is_empty() {
            if let Some(last) = certs.iter().max_by_key(|c| (c.not_after, c.not_before)) {
                out.push(
                    "cert-expired",
                    Severity::High,
                    resource.clone(),
                    format!(
                        "device {id:?} has no valid certificate: its newest (serial {}) expired \
                         at {}",
                        last.serial,
                        fmt_time(last.not_after)
                    ),
                    Some(id),
                    None,
                );
            }
            continue;
        }
        // Expiring: the newest certificate valid now has under a third of its lifetime and
        // under the threshold left (the agent renews at two thirds: it is not renewing).
        let newest = unexpired
            .iter()
            .filter(|c| c.not_before <= now)
            .max_by_key(|c| (c.not_after, c.not_before));
        if let Some(c) = newest {
            let lifetime = i128::from(c.not_after) - i128::from(c.not_before);
            let left = i128::from(c.not_after) - i128::from(now);
            if left * 3 < lifetime && left < i128::from(ctx.window) {
                out.push(
                    "cert-expiring",
                    Severity::Medium,
                    resource.clone(),
                    format!(
                        "device {id:?}: its newest certificate (serial {}) expires at {}, in \
                         {} of a {} lifetime; the agent renews at two thirds of the lifetime, so \
                         renewal is not happening",
                        c.serial,
                        fmt_time(c.not_after),
                        fmt_span(left),
                        fmt_span(lifetime)
                    ),
                    Some(id),
                    None,
                );
            }
        }
        // Under a retired CA: only when no unexpired certificate comes from another issuer.
        let under_retired: Vec<(&CertFact, &CertFact)> = unexpired
            .iter()
            .filter_map(|c| {
                ctx.retired
                    .get(&norm_hex(&c.issuer_serial))
                    .map(|ca| (*c, *ca))
            })
            .collect();
        if under_retired.len() == unexpired.len() {
            let soonest = under_retired
                .iter()
                .min_by_key(|(_, ca)| ca.trusted_until.unwrap_or(i64::MAX));
            if let Some((c, ca)) = soonest {
                let (severity, until) = match ca.trusted_until {
                    Some(t) if i128::from(t) - i128::from(now) <= i128::from(ctx.window) => {
                        (Severity::High, format!("only until {}", fmt_time(t)))
                    }
                    Some(t) => (Severity::Medium, format!("until {}", fmt_time(t))),
                    None => (Severity::Medium, "until its own expiry".to_string()),
                };
                out.push(
                    "device-cert-under-retired-ca",
                    severity,
                    resource.clone(),
                    format!(
                        "device {id:?}: its certificate (serial {}) was issued by the retired \
                         CA {:?} (serial {}), trusted {until}",
                        c.serial, ca.subject, ca.serial
                    ),
                    Some(id),
                    None,
                );
            }
        }
    }
}

/// `ca-revoked-still-trusted`.
fn revoked_cas(ctx: &Ctx<'_>, out: &mut Out) {
    for c in &ctx.f.certs {
        if !matches!(c.kind, CertKind::RetiredCa | CertKind::IssuingCa) || !c.revoked {
            continue;
        }
        let until = match c.trusted_until {
            Some(t) if t <= ctx.now => continue,
            Some(t) => format!("until {}", fmt_time(t)),
            None => "with no end".to_string(),
        };
        out.push(
            "ca-revoked-still-trusted",
            Severity::High,
            cert_resource(c),
            format!("{} is revoked but still trusted {until}", describe(c)),
            None,
            None,
        );
    }
}

/// `duplicate-public-key`.
fn duplicate_keys(ctx: &Ctx<'_>, out: &mut Out) {
    let mut by_key: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (&id, certs) in &ctx.device_certs {
        for c in certs {
            let spki = norm_digest(&c.spki_sha256);
            if spki.is_empty() || ctx.expired(c) {
                continue;
            }
            by_key.entry(spki).or_default().insert(id);
        }
    }
    for (spki, ids) in by_key {
        if ids.len() < 2 {
            continue;
        }
        let short: String = spki.chars().take(16).collect();
        let list: Vec<String> = ids.iter().map(|i| format!("{i:?}")).collect();
        out.push(
            "duplicate-public-key",
            Severity::High,
            format!("key:{short}"),
            format!(
                "{} devices present valid certificates with the same public key (SPKI SHA-256 \
                 {spki}): {}",
                ids.len(),
                list.join(", ")
            ),
            None,
            None,
        );
    }
}

/// `weak-key`.
fn weak_keys(ctx: &Ctx<'_>, out: &mut Out) {
    for c in &ctx.f.certs {
        if !ctx.in_use(c) {
            continue;
        }
        let KeyFact::Rsa {
            modulus,
            blocklisted,
        } = &c.key
        else {
            continue;
        };
        let bits = bit_len(modulus);
        let mut reasons = Vec::new();
        let mut severity = Severity::High;
        if has_roca_fingerprint(modulus) {
            severity = Severity::Critical;
            reasons.push(
                "its modulus has the ROCA fingerprint (CVE-2017-15361): the private key can be \
                 computed from the public key"
                    .to_string(),
            );
        }
        if *blocklisted {
            reasons.push("its key is on the weak-key blocklist".to_string());
        }
        if bits < 2048 {
            reasons.push(format!("its RSA modulus has {bits} bits (under 2048)"));
        }
        if reasons.is_empty() {
            continue;
        }
        let device = (c.kind == CertKind::Device).then_some(c.subject.as_str());
        out.push(
            "weak-key",
            severity,
            cert_resource(c),
            format!("{}: {}", describe(c), reasons.join("; ")),
            device,
            None,
        );
    }
}

/// `cert-too-old`: server, admin and device certificates in use that were issued longer ago
/// than `max_cert_age_days` (CAs are long-lived by design).
fn too_old(ctx: &Ctx<'_>, out: &mut Out) {
    let max_age = i128::from(days(ctx.f.thresholds.max_cert_age_days));
    for c in &ctx.f.certs {
        if is_ca(c.kind) || !ctx.in_use(c) {
            continue;
        }
        let age = i128::from(ctx.now) - i128::from(c.not_before);
        if age > max_age {
            let device = (c.kind == CertKind::Device).then_some(c.subject.as_str());
            out.push(
                "cert-too-old",
                Severity::Low,
                cert_resource(c),
                format!(
                    "{} was issued at {}, {} ago (threshold: {} days)",
                    describe(c),
                    fmt_time(c.not_before),
                    fmt_span(age),
                    ctx.f.thresholds.max_cert_age_days
                ),
                device,
                None,
            );
        }
    }
}

/// `device-concurrent-addresses`, `device-dormant`, `device-no-inventory`, `device-no-sbom`.
fn devices(ctx: &Ctx<'_>, out: &mut Out) {
    let dormant = i128::from(days(ctx.f.thresholds.dormant_days));
    for d in &ctx.f.devices {
        if d.revoked || ctx.device_revoked(&d.id) {
            continue;
        }
        let id = d.id.as_str();
        let resource = format!("device:{id}");
        concurrent(d, &resource, out);
        let (seen, what) = match d.last_seen {
            Some(t) => (t, "last seen"),
            None => (d.created_at, "never seen; created"),
        };
        let idle = i128::from(ctx.now) - i128::from(seen);
        if idle > dormant {
            out.push(
                "device-dormant",
                Severity::Low,
                resource.clone(),
                format!(
                    "device {id:?} was {what} at {}, {} ago (threshold: {} days)",
                    fmt_time(seen),
                    fmt_span(idle),
                    ctx.f.thresholds.dormant_days
                ),
                Some(id),
                None,
            );
        }
        if !d.has_inventory {
            out.push(
                "device-no-inventory",
                Severity::Low,
                resource.clone(),
                format!("device {id:?} has no recorded model and firmware"),
                Some(id),
                None,
            );
        } else if !d.has_sbom {
            out.push(
                "device-no-sbom",
                Severity::Low,
                resource.clone(),
                format!("no SBOM is known for the model and firmware of device {id:?}"),
                Some(id),
                None,
            );
        }
    }
}

fn concurrent(d: &DeviceFact, resource: &str, out: &mut Out) {
    let addrs: BTreeSet<&str> = d
        .live_addresses
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .collect();
    if !d.clone_alert && addrs.len() < 2 {
        return;
    }
    let mut parts = Vec::new();
    if addrs.len() >= 2 {
        let list: Vec<&str> = addrs.iter().copied().collect();
        parts.push(format!(
            "is connected from {} addresses at once ({})",
            addrs.len(),
            list.join(", ")
        ));
    }
    if d.clone_alert {
        parts.push("has an active cloned_certificate alert".to_string());
    }
    out.push(
        "device-concurrent-addresses",
        Severity::High,
        resource.to_string(),
        format!("device {:?} {}", d.id, parts.join(" and ")),
        Some(&d.id),
        None,
    );
}

/// The placeholder of a device's own id in policy patterns.
const DEVICE_ID: &str = "${device.id}";

/// A pattern with `${device.id}`: its levels and the first level holding it.
struct PerDevice<'a> {
    grant: &'a GrantFact,
    levels: Vec<&'a str>,
    at: usize,
}

/// `policy-broad-grant` and `policy-lint`.
fn policy(f: &Facts, out: &mut Out) {
    let mut per_device: Vec<PerDevice<'_>> = f
        .grants
        .iter()
        .filter_map(|g| {
            let levels: Vec<&str> = g.pattern.split('/').collect();
            let at = levels.iter().position(|l| l.contains(DEVICE_ID))?;
            Some(PerDevice {
                grant: g,
                levels,
                at,
            })
        })
        .collect();
    // Name the same per-device pattern whatever the order of the grants.
    per_device.sort_by(|a, b| {
        (a.grant.line, &a.grant.pattern, &a.grant.rule).cmp(&(
            b.grant.line,
            &b.grant.pattern,
            &b.grant.rule,
        ))
    });
    for g in &f.grants {
        if !g.allow {
            continue;
        }
        let everyone = g.who.iter().any(|w| w.trim() == "*");
        let group = g.who.iter().any(|w| w.trim().starts_with("group:"));
        let severity = if everyone {
            Severity::High
        } else if group {
            Severity::Medium
        } else {
            continue;
        };
        let Some(why) = reaches_others(&g.pattern, &per_device) else {
            continue;
        };
        out.push(
            "policy-broad-grant",
            severity,
            format!("policy:{}", g.rule),
            format!(
                "policy.toml line {}: rule {:?} lets {} {} `{}`: {why}",
                g.line,
                g.rule,
                g.who.join(", "),
                g.action,
                g.pattern
            ),
            None,
            None,
        );
    }
    for l in &f.lints {
        let severity = if l.warning {
            Severity::Medium
        } else {
            Severity::Low
        };
        out.push(
            "policy-lint",
            severity,
            format!("policy:{}:{}", l.rule, l.line),
            format!(
                "policy.toml line {}: rule {:?}: {}",
                l.line, l.rule, l.message
            ),
            None,
            None,
        );
    }
}

/// Why a granted pattern reaches other devices' topics, if it does: its first level is a
/// wildcard, or it has a wildcard where a per-device pattern of the policy has `${device.id}`
/// after a prefix the grant matches. A grant already pinned to `${device.id}` before its
/// wildcard stays in the device's own subtree.
fn reaches_others(pattern: &str, per_device: &[PerDevice<'_>]) -> Option<String> {
    let levels: Vec<&str> = pattern.split('/').collect();
    let pin = levels.iter().position(|l| l.contains(DEVICE_ID));
    let first = levels.first().copied().unwrap_or("");
    if first == "#" {
        return Some("it matches every topic, every device's included".to_string());
    }
    if first == "+" && pin.is_none() {
        return Some(
            "its first level is a wildcard: it matches topics of every device".to_string(),
        );
    }
    for (i, &level) in levels.iter().enumerate().take(pin.unwrap_or(usize::MAX)) {
        if level != "+" && level != "#" {
            continue;
        }
        for p in per_device {
            let placed = if level == "+" { p.at == i } else { p.at >= i };
            if !placed {
                continue;
            }
            let prefix_matches = levels
                .iter()
                .zip(&p.levels)
                .take(i)
                .all(|(a, b)| *a == "+" || a == b);
            if prefix_matches {
                return Some(format!(
                    "`{level}` at level {} stands where `{}` (line {}) has {DEVICE_ID}: one \
                     device reaches every device's topics",
                    i + 1,
                    p.grant.pattern,
                    p.grant.line
                ));
            }
        }
    }
    None
}

/// `client-id-any`, `admin-listener-exposed`, `metrics-listener-exposed`, `tls12-allowed`.
fn config(f: &Facts, out: &mut Out) {
    if f.client_id_mode.trim() == "any" {
        out.push(
            "client-id-any",
            Severity::Medium,
            "config:[mqtt] client_id".to_string(),
            "[mqtt] client_id = \"any\": a device may connect with any client id, not one tied \
             to its certificate's device id, so logs and systems that go by client id can be \
             misled"
                .to_string(),
            None,
            None,
        );
    }
    if !f.admin_loopback {
        out.push(
            "admin-listener-exposed",
            Severity::Medium,
            "config:[admin] listen".to_string(),
            format!(
                "the admin listener (admin API, EST enrollment) listens on {}, not a loopback \
                 address",
                f.admin_listen
            ),
            None,
            None,
        );
    }
    if let Some(m) = &f.metrics_listen {
        if !f.metrics_loopback {
            out.push(
                "metrics-listener-exposed",
                Severity::Low,
                "config:[metrics] listen".to_string(),
                format!("the metrics listener listens on {m}, not a loopback address"),
                None,
                None,
            );
        }
    }
    if !f.tls13_only {
        out.push(
            "tls12-allowed",
            Severity::Low,
            "config:[tls] min_version".to_string(),
            "[tls] min_version = \"1.2\": TLS 1.2 handshakes are accepted".to_string(),
            None,
            None,
        );
    }
}

/// `audit-log-disabled`, `audit-log-inconsistent`, `audit-log-no-recent-checkpoint`.
fn audit_log(f: &Facts, out: &mut Out) {
    let a = &f.audit;
    if !a.enabled {
        out.push(
            "audit-log-disabled",
            Severity::High,
            "config:[audit] enabled".to_string(),
            "[audit] enabled = false: security events and admin actions leave no \
             tamper-evident record"
                .to_string(),
            None,
            None,
        );
    }
    if let Some(why) = &a.refusing {
        out.push(
            "audit-log-inconsistent",
            Severity::Critical,
            "audit:log".to_string(),
            format!("the audit log refuses to sign checkpoints: {why}"),
            None,
            None,
        );
        // A log that refuses to sign has no recent checkpoint; that is said above.
        return;
    }
    if !a.enabled {
        return;
    }
    let interval = i64::try_from(a.checkpoint_interval_secs).unwrap_or(i64::MAX);
    let max_age = interval.saturating_mul(10).max(60);
    let evidence = match a.checkpoint_at {
        None if a.entries > 1 => Some(format!(
            "the audit log has {} entries and no signed checkpoint",
            a.entries
        )),
        None => None,
        Some(at) => {
            let covered = a.checkpoint_size.unwrap_or(0);
            let age = i128::from(f.now) - i128::from(at);
            (a.entries > covered && age > i128::from(max_age)).then(|| {
                format!(
                    "the audit log has {} entries; the latest checkpoint covers {covered} and \
                     was signed at {}, {} ago (expected within {} s)",
                    a.entries,
                    fmt_time(at),
                    fmt_span(age),
                    max_age
                )
            })
        }
    };
    if let Some(e) = evidence {
        out.push(
            "audit-log-no-recent-checkpoint",
            Severity::Medium,
            "audit:checkpoint".to_string(),
            e,
            None,
            None,
        );
    }
}

/// `key-file-permissions`, `root-ca-key-online`.
fn files(f: &Facts, out: &mut Out) {
    for k in &f.key_files {
        if k.mode & 0o077 != 0 {
            out.push(
                "key-file-permissions",
                Severity::High,
                format!("file:{}", k.path),
                format!(
                    "{} has mode {:04o}: group or others may access the private key",
                    k.path,
                    k.mode & 0o7777
                ),
                None,
                Some(&k.path),
            );
        }
    }
    if f.root_key_online {
        out.push(
            "root-ca-key-online",
            Severity::Medium,
            "file:ca/root.key".to_string(),
            "the root CA's private key is in the data directory (ca/root.key): whoever takes \
             the gateway can issue CAs"
                .to_string(),
            None,
            None,
        );
    }
}
