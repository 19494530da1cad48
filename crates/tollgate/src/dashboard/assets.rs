//! The dashboard's static files, embedded in the binary: our stylesheet and script, and the
//! vendored uPlot (see `vendor/VENDOR.md`, refreshed by `scripts/vendor-dashboard`).
//!
//! Each is served at `/dashboard/static/VERSION/NAME`, where VERSION is a hash of all of them,
//! with a year-long immutable cache: a new binary with other files has other URLs. There is
//! nothing secret here, so no session is needed. This module must not serve anything that is
//! not in [`FILES`].

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Name, media type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("static/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/app.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("vendor/uPlot.min.css"),
    ),
];

/// A hash of every file: the version in their URLs.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for (name, _, bytes) in FILES {
            ctx.update(name.as_bytes());
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        }
        ctx.finish()
            .as_ref()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// The URL of file `name`.
pub fn url(name: &str) -> String {
    format!("/dashboard/static/{}/{name}", version())
}

/// `GET /dashboard/static/{version}/{file}`.
pub async fn serve(Path((v, file)): Path<(String, String)>) -> Response {
    let found = FILES.iter().find(|(n, _, _)| *n == file);
    match found {
        Some((_, ty, bytes)) if v == version() => (
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_files_match_their_recorded_checksums() {
        let record = include_str!("vendor/VENDOR.md");
        let vendored: &[(&str, &[u8])] = &[
            (
                "uPlot.iife.min.js",
                include_bytes!("vendor/uPlot.iife.min.js"),
            ),
            ("uPlot.min.css", include_bytes!("vendor/uPlot.min.css")),
            ("uPlot.LICENSE", include_bytes!("vendor/uPlot.LICENSE")),
        ];
        for (name, bytes) in vendored {
            let row = record
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap_or_else(|| panic!("VENDOR.md has no row for {name}"));
            let recorded = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
            let actual: String = ring::digest::digest(&ring::digest::SHA256, bytes)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(recorded, actual, "{name} differs from its recorded SHA-256");
        }
    }

    #[test]
    fn urls_carry_the_version() {
        assert_eq!(version().len(), 16);
        assert!(url("app.js").contains(version()));
    }
}
