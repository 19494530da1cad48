//! `tollgate-bench compliance`: how long the control plane takes to evaluate a fleet's
//! supply-chain compliance, and how much an advisory import re-evaluates.
//!
//! Builds (once per work directory) a synthetic fleet: devices spread over models' firmware,
//! one CycloneDX SBOM per (model, firmware) with components drawn from a package universe in
//! four ecosystems, and OSV advisories over the same universe with the range shapes real
//! records use (introduced/fixed pairs, last_affected, versions lists, aliases, a few
//! withdrawn). Everything is generated here from a fixed seed; nothing is copied from a real
//! database. Then, in one process and through the control plane's own API (no HTTP): open
//! (load advisories and SBOMs), evaluate the whole fleet cold and warm, and import one advisory
//! that hits some SBOMs and one that hits none.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use tollgate_control::Control;
use tollgate_registry::{DeviceStore, Inventory, Registry, SqliteRegistry};

use crate::rng::Rng;

/// Arguments of `tollgate-bench compliance`.
#[derive(Debug, clap::Args)]
pub struct ComplianceArgs {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// (model, firmware) SBOMs.
    #[arg(long, default_value_t = 200)]
    sboms: usize,
    /// Components per SBOM.
    #[arg(long, default_value_t = 500)]
    components: usize,
    /// Advisories in the database.
    #[arg(long, default_value_t = 50_000)]
    advisories: usize,
    /// Measured repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Work directory (the fleet is built once and reused).
    #[arg(long, default_value = "target/bench-compliance")]
    work: PathBuf,
    /// Write the report (JSON and Markdown) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

const ECOSYSTEMS: [(&str, &str); 4] = [
    ("pypi", "PyPI"),
    ("npm", "npm"),
    ("cargo", "crates.io"),
    ("maven", "Maven"),
];

/// The package universe: 4 × 5,000 names.
const PACKAGES_PER_ECOSYSTEM: usize = 5_000;

/// (package URL without version, OSV ecosystem, OSV name) of package `n` of ecosystem `eco`.
fn package(eco: usize, n: usize) -> (String, &'static str, String) {
    let (purl_type, osv) = ECOSYSTEMS[eco % ECOSYSTEMS.len()];
    if purl_type == "maven" {
        let g = n % 97;
        (
            format!("pkg:maven/org.example.g{g}/lib{n}"),
            osv,
            format!("org.example.g{g}:lib{n}"),
        )
    } else {
        (format!("pkg:{purl_type}/lib-{n}"), osv, format!("lib-{n}"))
    }
}

fn version(major: usize, minor: usize, patch: usize) -> String {
    format!("{major}.{minor}.{patch}")
}

/// A package one SBOM in ten carries: what the "hit" advisory names.
const HOT: &str = "pkg:pypi/hot-lib";

fn sbom_doc(rng: &mut Rng, index: usize, components: usize) -> String {
    let mut comps = Vec::with_capacity(components);
    if index.is_multiple_of(10) {
        comps.push(serde_json::json!({
            "type": "library", "bom-ref": "hot", "name": "hot-lib", "version": "1.0.0",
            "purl": format!("{HOT}@1.0.0"), "supplier": {"name": "Example Upstream"},
        }));
    }
    for i in comps.len()..components {
        let eco = rng.below(ECOSYSTEMS.len());
        let n = rng.below(PACKAGES_PER_ECOSYSTEM);
        let (purl, _, _) = package(eco, n);
        let v = version(rng.below(4), rng.below(20), rng.below(10));
        let name = purl.rsplit('/').next().unwrap_or("x").to_owned();
        comps.push(serde_json::json!({
            "type": "library", "bom-ref": format!("c{i}"), "name": name, "version": v,
            "purl": format!("{purl}@{v}"), "supplier": {"name": "Example Upstream"},
        }));
    }
    serde_json::json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {
            "timestamp": "2026-11-30T10:00:00Z",
            "authors": [{"name": "bench"}],
            "supplier": {"name": "acme"},
            "component": {"type": "firmware", "name": "fw", "version": "1"}
        },
        "components": comps,
    })
    .to_string()
}

fn advisory_doc(rng: &mut Rng, i: usize, eco: usize, n: usize, modified: &str) -> String {
    let (_, osv_eco, osv_name) = package(eco, n);
    let shape = rng.below(10);
    let mut affected = serde_json::json!({"package": {"ecosystem": osv_eco, "name": osv_name}});
    let (a, b) = (rng.below(4), rng.below(20));
    match shape {
        0..=5 => {
            affected["ranges"] = serde_json::json!([{"type": "ECOSYSTEM", "events": [
                {"introduced": version(a, 0, 0)}, {"fixed": version(a, b, rng.below(10))}]}]);
        }
        6 | 7 => {
            affected["ranges"] = serde_json::json!([{"type": "ECOSYSTEM", "events": [
                {"introduced": "0"}, {"last_affected": version(a, b, 0)}]}]);
        }
        8 => {
            affected["versions"] =
                serde_json::json!((0..10).map(|p| version(a, b, p)).collect::<Vec<_>>());
        }
        _ => {
            affected["ranges"] = serde_json::json!([{"type": "ECOSYSTEM", "events": [
                {"introduced": version(a, b, 0)}, {"fixed": version(a, b, 5)},
                {"introduced": version(a + 1, 0, 0)}, {"fixed": version(a + 1, 2, 0)}]}]);
        }
    }
    let score = [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
        "CVSS:3.1/AV:L/AC:H/PR:L/UI:R/S:U/C:L/I:N/A:N",
    ][rng.below(3)];
    let mut doc = serde_json::json!({
        "schema_version": "1.6.0",
        "id": format!("BENCH-{i:06}"),
        "modified": modified,
        "aliases": [format!("CVE-2099-{i:06}")],
        "summary": "synthetic advisory",
        "severity": [{"type": "CVSS_V3", "score": score}],
        "affected": [affected],
    });
    if i.is_multiple_of(200) {
        doc["withdrawn"] = "2026-01-01T00:00:00Z".into();
    }
    doc.to_string()
}

fn control(data: &Path) -> Result<(Arc<Control>, Arc<dyn Registry>)> {
    let registry: Arc<dyn Registry> = Arc::new(SqliteRegistry::open(&data.join("registry.db"))?);
    let (events, _dispatcher) = tollgate_events::EventBus::new(1024, 1);
    let cp = Control::open(
        crate::runner::control_config(data, time::Duration::days(30)),
        Arc::clone(&registry),
        events,
    )?;
    Ok((cp, registry))
}

fn build(args: &ComplianceArgs, data: &Path) -> Result<()> {
    let marker = data.join(".built");
    let spec = format!(
        "{} {} {} {}",
        args.devices, args.sboms, args.components, args.advisories
    );
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(spec.as_str()) {
        return Ok(());
    }
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    eprintln!("building the fleet ({spec}); once per work directory...");
    tollgate_control::ca::init(data, &tollgate_control::InitOptions::default())?;
    std::fs::write(
        data.join("compliance.toml"),
        "[[rule]]\nid = \"no-high-vulns\"\nmax_severity = \"medium\"\naction = \"quarantine\"\n\n\
         [[rule]]\nid = \"no-critical-grace\"\nmax_severity = \"high\"\ngrace = { critical = \"72h\" }\naction = \"report\"\n",
    )?;
    let (cp, registry) = control(data)?;
    registry.add_supplier(
        &tollgate_registry::Supplier {
            name: "acme".into(),
            ca_pem: String::new(),
            groups: vec![],
            allow_reenroll: false,
        },
        0,
    )?;
    let mut rng = Rng(0x5EED_0FC0_FFEE);
    let models = (args.sboms / 4).max(1);
    for m in 0..models {
        cp.put_model(
            &tollgate_control::compliance::ModelView {
                supplier: "acme".into(),
                name: format!("model-{m}"),
                scheme: "semver".into(),
                firmware_order: vec![],
                min_firmware: None,
                sboms: vec![],
                devices: 0,
            },
            "bench",
        )?;
    }
    let t = Instant::now();
    for s in 0..args.sboms {
        let doc = sbom_doc(&mut rng, s, args.components);
        cp.import_sbom(
            Some("acme"),
            &format!("model-{}", s % models),
            &format!("1.{}.0", s / models),
            doc.as_bytes(),
            "bench",
        )?;
    }
    eprintln!(
        "  {} SBOMs imported in {:.1}s",
        args.sboms,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut batch = Vec::new();
    for i in 0..args.advisories {
        let eco = rng.below(ECOSYSTEMS.len());
        let n = rng.below(PACKAGES_PER_ECOSYSTEM);
        batch.push(advisory_doc(&mut rng, i, eco, n, "2026-11-01T00:00:00Z").into_bytes());
        if batch.len() == 2000 {
            cp.import_advisories(&batch, "bench")?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        cp.import_advisories(&batch, "bench")?;
    }
    eprintln!(
        "  {} advisories imported in {:.1}s",
        args.advisories,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for d in 0..args.devices {
        let id = format!("dev-{d:05}");
        registry.create_device(&id, &["fleet".to_owned()], 0)?;
        let s = rng.below(args.sboms);
        registry.set_inventory(&Inventory {
            device: id,
            supplier: Some("acme".into()),
            model: Some(format!("model-{}", s % models)),
            firmware: Some(format!("1.{}.0", s / models)),
            updated_at: 0,
            ..Default::default()
        })?;
    }
    eprintln!(
        "  {} devices registered in {:.1}s",
        args.devices,
        t.elapsed().as_secs_f64()
    );
    drop(cp);
    std::fs::write(&marker, spec)?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct Run {
    open_ms: f64,
    cold_evaluation_ms: f64,
    warm_evaluation_ms: f64,
    devices: usize,
    noncompliant: usize,
    quarantined: usize,
    hit_import_ms: f64,
    hit_reevaluated: usize,
    miss_import_ms: f64,
    miss_reevaluated: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

pub fn run(args: ComplianceArgs) -> Result<std::process::ExitCode> {
    let data = args.work.join("data");
    build(&args, &data).context("building the fleet")?;
    let mut runs = Vec::new();
    // Advisory ids and `modified` times unique to this invocation, so a re-run on the same work
    // directory imports them again instead of skipping them as unchanged.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for r in 0..args.runs {
        // Every run starts from the same state: no compliance quarantine held, so the cold
        // evaluation quarantines the whole fleet (the worst case: every device changes state).
        {
            let registry = SqliteRegistry::open(&data.join("registry.db"))?;
            let changes: Vec<tollgate_registry::QuarantineChange> = registry
                .quarantines()?
                .into_iter()
                .filter(|(_, q)| q.source.starts_with("compliance:"))
                .map(|(device, q)| tollgate_registry::QuarantineChange {
                    device,
                    set: vec![],
                    remove: vec![q.source],
                })
                .collect();
            registry.apply_quarantines(&changes)?;
        }
        let t = Instant::now();
        let (cp, _registry) = control(&data)?;
        let open_ms = ms(t);
        let t = Instant::now();
        let cold = cp.evaluate_fleet(None, "bench", None)?;
        let cold_evaluation_ms = ms(t);
        let t = Instant::now();
        cp.evaluate_fleet(None, "bench", None)?;
        let warm_evaluation_ms = ms(t);
        // One advisory for the package one SBOM in ten names.
        let mut rng = Rng(0x0BAD_C0DE + r as u64);
        let stamp =
            time::OffsetDateTime::from_unix_timestamp(i64::try_from(nonce).unwrap_or(0) + r as i64)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| "2026-12-02T00:00:00Z".into());
        let hit = serde_json::json!({
            "id": format!("BENCH-HOT-{nonce}-{r}"), "modified": stamp,
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "PyPI", "name": "hot-lib"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0.0"}]}]}],
        })
        .to_string();
        let t = Instant::now();
        let h = cp.import_advisories(&[hit.into_bytes()], "bench")?;
        let hit_import_ms = ms(t);
        // One for a package in no SBOM (outside the universe).
        let miss = advisory_doc(
            &mut rng,
            950_000 + r,
            1,
            PACKAGES_PER_ECOSYSTEM + 7 + r,
            &stamp,
        );
        let t = Instant::now();
        let m = cp.import_advisories(&[miss.into_bytes()], "bench")?;
        let miss_import_ms = ms(t);
        runs.push(Run {
            open_ms,
            cold_evaluation_ms,
            warm_evaluation_ms,
            devices: cold.devices,
            noncompliant: cold.noncompliant,
            quarantined: cold.quarantined,
            hit_import_ms,
            hit_reevaluated: h.reevaluated,
            miss_import_ms,
            miss_reevaluated: m.reevaluated,
        });
        eprintln!(
            "run {}: {}",
            r + 1,
            serde_json::to_string(runs.last().unwrap_or(&runs[0]))?
        );
    }
    let med = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let summary = serde_json::json!({
        "fleet": {
            "devices": args.devices, "sboms": args.sboms,
            "components_per_sbom": args.components, "advisories": args.advisories,
        },
        "runs": runs.len(),
        "median_ms": {
            "open (load advisories and SBOMs)": med(|r| r.open_ms),
            "cold evaluation (assess every SBOM, every device)": med(|r| r.cold_evaluation_ms),
            "warm evaluation (no input changed)": med(|r| r.warm_evaluation_ms),
            "import 1 advisory hitting SBOMs": med(|r| r.hit_import_ms),
            "import 1 advisory hitting nothing": med(|r| r.miss_import_ms),
        },
        "devices_noncompliant": runs.first().map(|r| r.noncompliant),
        "devices_quarantined": runs.first().map(|r| r.quarantined),
        "reevaluated_by_hit": runs.iter().map(|r| r.hit_reevaluated).collect::<Vec<_>>(),
        "reevaluated_by_miss": runs.iter().map(|r| r.miss_reevaluated).collect::<Vec<_>>(),
        "all": runs,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
