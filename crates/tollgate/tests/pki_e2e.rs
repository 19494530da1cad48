//! Device PKI end to end: EST enrollment with independent clients (curl + openssl), one-time
//! tokens, key policy, re-enrollment, CRLs and the enrollment agent.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::path::Path;
use std::process::Command;

use support::{csr, curl_post, device_files, p7_to_pem, sh, Server, P256};

/// A one-time token for `id` to join the sensors group.
fn sensor_token(s: &Server, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["--group", "sensors"];
    args.extend_from_slice(extra);
    support::token(s, id, &args)
}

#[test]
fn curl_and_openssl_enroll_with_a_token_and_the_certificate_publishes_with_mosquitto() {
    let s = Server::start();
    let dir = s.root.join("est");
    let t = sensor_token(&s, "sensor-9", &["--ttl", "1h"]);
    let req = csr(&dir, "sensor-9", "sensor-9", P256, "");
    let (code, body) = curl_post(&s, "simpleenroll", &req, &["-u", &format!("sensor-9:{t}")]);
    assert_eq!(code, 200, "{body}");
    let crt = p7_to_pem(&dir, &body, "issued");
    let text =
        String::from_utf8(sh(&dir, "openssl x509 -in issued.crt -noout -text").stdout).unwrap();
    assert!(
        text.contains("URI:urn:tollgate:device:sensor-9") && text.contains("CA:FALSE"),
        "{text}"
    );
    // The key never left the device: the certificate binds the CSR's key.
    let a = sh(&dir, "openssl x509 -in issued.crt -noout -pubkey");
    let b = sh(&dir, "openssl pkey -in sensor-9.key -pubout");
    assert_eq!(a.stdout, b.stdout);
    let dev = device_files(&s, &dir, "sensor-9", &crt);
    let out = s.mosquitto_pub(
        &dev,
        &[
            "-t",
            "devices/sensor-9/telemetry",
            "-m",
            "enrolled",
            "-q",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait_event("enrolled", |e| {
        e["type"] == "device_enrolled" && e["device"] == "sensor-9"
    });

    // cacerts and csrattrs, also under a label.
    for path in ["cacerts", "demo/cacerts"] {
        let out = sh(
            &dir,
            &format!(
                "curl -sf --cacert {} https://127.0.0.1:{}/.well-known/est/{path} | base64 -d | openssl pkcs7 -inform DER -print_certs | grep -c subject=",
                s.data.join("ca/root.crt").display(),
                s.admin_port
            ),
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{path}");
    }
    let out = sh(
        &dir,
        &format!("curl -sf --cacert {} https://127.0.0.1:{}/.well-known/est/csrattrs | base64 -d | openssl asn1parse -inform DER", s.data.join("ca/root.crt").display(), s.admin_port),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ecdsa-with-SHA256"),
        "{out:?}"
    );
}

#[test]
fn tokens_work_once_for_their_device_before_they_expire() {
    let s = Server::start();
    let dir = s.root.join("tokens");
    let t = sensor_token(&s, "sensor-1", &[]);
    let req = csr(&dir, "a", "sensor-1", P256, "");
    // No credentials: 401 with a challenge.
    assert_eq!(curl_post(&s, "simpleenroll", &req, &[]).0, 401);
    // A CSR naming another device is refused, and does not use up the token.
    let other = csr(&dir, "b", "sensor-2", P256, "");
    let (code, body) = curl_post(
        &s,
        "simpleenroll",
        &other,
        &["-u", &format!("sensor-1:{t}")],
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("does not name device"), "{body}");
    // Bearer works too (the device is named by the CSR).
    assert_eq!(
        curl_post(
            &s,
            "simpleenroll",
            &req,
            &["-H", &format!("Authorization: Bearer {t}")]
        )
        .0,
        200
    );
    // Reused: refused.
    let (code, body) = curl_post(&s, "simpleenroll", &req, &["-u", &format!("sensor-1:{t}")]);
    assert_eq!(code, 403);
    assert!(body.contains("already used"), "{body}");
    // A wrong token: refused.
    let t2 = sensor_token(&s, "sensor-3", &[]);
    let c3 = csr(&dir, "c", "sensor-3", P256, "");
    assert_eq!(
        curl_post(
            &s,
            "simpleenroll",
            &c3,
            &["-u", &format!("sensor-3:{}x", &t2[1..])]
        )
        .0,
        403
    );
    // Expired: refused.
    let t4 = sensor_token(&s, "sensor-4", &["--ttl", "1s"]);
    let c4 = csr(&dir, "d", "sensor-4", P256, "");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, body) = curl_post(&s, "simpleenroll", &c4, &["-u", &format!("sensor-4:{t4}")]);
    assert_eq!(code, 403);
    assert!(body.contains("expired"), "{body}");
    assert!(s.count_events("enrollment_refused") >= 4);
}

#[test]
fn weak_keys_sha1_signatures_ca_requests_and_garbage_are_refused_with_a_reason() {
    let s = Server::start();
    let dir = s.root.join("weak");
    let cases: &[(&str, &str, &str, &str)] = &[
        ("rsa1024", "-newkey rsa:1024", "", "at least 2048 bits"),
        ("sha1", "-newkey rsa:2048 -sha1", "", "SHA-1"),
        (
            "ca",
            P256,
            "-addext basicConstraints=critical,CA:TRUE",
            "CA certificates are refused",
        ),
        (
            "p521",
            "-newkey ec -pkeyopt ec_paramgen_curve:P-521",
            "",
            "unsupported key type",
        ),
    ];
    for (name, keyopts, extra, why) in cases {
        let t = sensor_token(&s, name, &[]);
        let req = csr(&dir, name, name, keyopts, extra);
        let (code, body) = curl_post(&s, "simpleenroll", &req, &["-u", &format!("{name}:{t}")]);
        assert_eq!(code, 400, "{name}: {body}");
        assert!(body.contains(why), "{name}: {body}");
    }
    let t = sensor_token(&s, "junk", &[]);
    std::fs::write(dir.join("junk.b64"), "this is not base64 !!!").unwrap();
    let (code, _) = curl_post(
        &s,
        "simpleenroll",
        &dir.join("junk.b64"),
        &["-u", &format!("junk:{t}")],
    );
    assert_eq!(code, 400);
    // RSA 2048 and P-384 are fine.
    for (name, keyopts) in [
        ("rsa2048", "-newkey rsa:2048"),
        ("p384", "-newkey ec -pkeyopt ec_paramgen_curve:P-384"),
    ] {
        let t = sensor_token(&s, name, &[]);
        let req = csr(&dir, name, name, keyopts, "");
        assert_eq!(
            curl_post(&s, "simpleenroll", &req, &["-u", &format!("{name}:{t}")]).0,
            200,
            "{name}"
        );
    }
}

#[test]
fn reenrollment_needs_a_valid_unrevoked_certificate_and_the_crl_lists_revocations() {
    let s = Server::start();
    let dir = s.root.join("renew");
    let t = sensor_token(&s, "sensor-1", &[]);
    let req = csr(&dir, "sensor-1", "sensor-1", P256, "");
    let (code, body) = curl_post(&s, "simpleenroll", &req, &["-u", &format!("sensor-1:{t}")]);
    assert_eq!(code, 200, "{body}");
    let crt = p7_to_pem(&dir, &body, "first");
    let key = dir.join("sensor-1.key");
    let with_cert = |req: &Path| {
        curl_post(
            &s,
            "simplereenroll",
            req,
            &[
                "--cert",
                crt.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
        )
    };
    // With the current certificate: a new one, with a rotated key if the CSR has one.
    let rotated = csr(&dir, "rotated", "sensor-1", P256, "");
    let (code, body) = with_cert(&rotated);
    assert_eq!(code, 200, "{body}");
    let second = p7_to_pem(&dir, &body, "second");
    let serial = |p: &Path| {
        String::from_utf8(
            sh(
                &dir,
                &format!("openssl x509 -in {} -noout -serial", p.display()),
            )
            .stdout,
        )
        .unwrap()
    };
    assert_ne!(serial(&crt), serial(&second));
    // Without a certificate: refused. For another device's name: refused.
    assert_eq!(curl_post(&s, "simplereenroll", &req, &[]).0, 403);
    let other = csr(&dir, "other", "sensor-2", P256, "");
    assert_eq!(with_cert(&other).0, 403);
    // Revoked: the TLS handshake itself fails (curl reports no HTTP status), and the CRL says so.
    s.revoke("sensor-1");
    assert_eq!(
        with_cert(&rotated).0,
        0,
        "revoked certificate refused at TLS"
    );
    let first_serial = serial(&crt).trim().trim_start_matches("serial=").to_owned();
    let out = sh(
        &dir,
        &format!("curl -sf --cacert {} https://127.0.0.1:{}/crl -o crl.der && openssl crl -inform DER -in crl.der -noout -text", s.data.join("ca/root.crt").display(), s.admin_port),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.to_uppercase().contains(&first_serial.to_uppercase()),
        "CRL lists {first_serial}:\n{text}"
    );
    // The CRL verifies against the issuing CA.
    let out = sh(
        &dir,
        &format!(
            "openssl crl -inform DER -in crl.der -noout -CAfile {} 2>&1",
            s.data.join("ca/issuing.crt").display()
        ),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verify OK"),
        "{out:?}"
    );
}

#[test]
fn the_agent_enrolls_renews_with_key_rotation_and_the_result_publishes() {
    let s = Server::start();
    let out_dir = s.root.join("agent");
    let t = sensor_token(&s, "sensor-7", &[]);
    let url = format!("https://127.0.0.1:{}", s.admin_port);
    let run = |args: &[&str]| Command::new(support::BIN).args(args).output().unwrap();
    let out = run(&[
        "agent",
        "enroll",
        "--server",
        &url,
        "--token",
        &t,
        "--id",
        "sensor-7",
        "--out",
        out_dir.to_str().unwrap(),
        "--cacert",
        s.data.join("ca/root.crt").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("sensor-7.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let dev = support::Device::from_files(
        "sensor-7",
        &out_dir,
        out_dir.join("sensor-7.crt"),
        out_dir.join("sensor-7.key"),
        out_dir.join("ca.crt"),
    );
    assert!(s
        .mosquitto_pub(
            &dev,
            &["-t", "devices/sensor-7/telemetry", "-m", "1", "-q", "1"]
        )
        .status
        .success());
    let key_before = std::fs::read(&dev.key).unwrap();
    let cert_before = std::fs::read(&dev.cert).unwrap();
    let out = run(&[
        "agent",
        "renew",
        "--server",
        &url,
        "--out",
        out_dir.to_str().unwrap(),
        "--rotate-key",
        "--reload",
        &format!("touch {}", out_dir.join("reloaded").display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::read(&dev.key).unwrap(), key_before, "key rotated");
    assert!(out_dir.join("reloaded").exists(), "the reload command ran");
    assert_ne!(
        std::fs::read(&dev.cert).unwrap(),
        cert_before,
        "certificate renewed"
    );
    assert!(s
        .mosquitto_pub(
            &dev,
            &["-t", "devices/sensor-7/telemetry", "-m", "2", "-q", "1"]
        )
        .status
        .success());
    // A token is single-use for the agent too.
    let again = run(&[
        "agent",
        "enroll",
        "--server",
        &url,
        "--token",
        &t,
        "--id",
        "sensor-7",
        "--out",
        s.root.join("again").to_str().unwrap(),
        "--cacert",
        s.data.join("ca/root.crt").to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_supplier_bootstrap_certificate_enrolls_once_and_never_opens_the_mqtt_port() {
    let s = Server::start();
    let dir = s.root.join("supplier");
    // The supplier's manufacturing CA and a device's IDevID, made with openssl like a factory would.
    let mfg = support::supplier_ca(&dir, "acme");
    let boot = support::bootstrap_cert(
        &dir,
        "acme",
        "idev",
        "ACME-0042",
        "URI:urn:tollgate:admin:mallory",
    );
    support::add_supplier(&s, "acme", &mfg, &["--group", "sensors"], &boot);
    let boot: Vec<&str> = boot.iter().map(String::as_str).collect();
    // The CSR must name the device of the bootstrap certificate (its serialNumber).
    let wrong = csr(&dir, "wrong", "someone-else", P256, "");
    let (code, body) = curl_post(&s, "simpleenroll", &wrong, &boot);
    assert_eq!(code, 403, "{body}");
    let good = csr(&dir, "op", "ACME-0042", P256, "");
    let (code, body) = curl_post(&s, "simpleenroll", &good, &boot);
    assert_eq!(code, 200, "{body}");
    let crt = p7_to_pem(&dir, &body, "operational");
    s.wait_event("bootstrap", |e| {
        e["type"] == "device_enrolled" && e["method"] == "bootstrap" && e["device"] == "ACME-0042"
    });
    // Once per hardware serial.
    let (code, body) = curl_post(&s, "simpleenroll", &good, &boot);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("already enrolled"), "{body}");
    // The operational certificate publishes; the bootstrap certificate is refused on MQTT.
    std::fs::rename(dir.join("op.key"), dir.join("ACME-0042.key")).unwrap();
    let dev = device_files(&s, &dir, "ACME-0042", &crt);
    assert!(s
        .mosquitto_pub(
            &dev,
            &["-t", "devices/ACME-0042/telemetry", "-m", "x", "-q", "1"]
        )
        .status
        .success());
    let idev = support::Device::from_files(
        "ACME-0042",
        &dir,
        dir.join("idev.crt"),
        dir.join("idev.key"),
        &dev.ca,
    );
    assert!(!s
        .mosquitto_pub(&idev, &["-t", "devices/ACME-0042/telemetry", "-m", "x"])
        .status
        .success());
    // Its admin-looking SAN buys nothing on the admin API, and it cannot re-enroll.
    let out = sh(&dir, &format!("curl -s -o /dev/null -w '%{{http_code}}' --cacert {} --cert idev.crt --key idev.key https://127.0.0.1:{}/api/v1/devices", s.data.join("ca/root.crt").display(), s.admin_port));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    assert_eq!(curl_post(&s, "simplereenroll", &good, &boot).0, 403);
    let show = s.cli(&["device", "show", "ACME-0042"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["bootstrap"]["supplier"], "acme");
    assert_eq!(v["bootstrap"]["model"], "Scanner-X2");
    assert_eq!(v["bootstrap"]["hardware_serial"], "ACME-0042");
}

#[test]
fn after_ca_rotate_devices_under_the_old_and_the_new_issuing_ca_both_work() {
    let mut s = Server::start();
    let old = s.add_device("old-1", &["sensors"]);
    s.stop();
    let out = Command::new(support::BIN)
        .args(["ca", "rotate", "--data"])
        .arg(&s.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // When the old CA stops being trusted, as a date (regression: it printed Unix seconds).
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("stays trusted until 20"), "{said}");
    assert!(said.contains("from now"), "{said}");
    s.spawn();
    let new = s.add_device("new-1", &["sensors"]);
    let issuer = |d: &support::Device| {
        String::from_utf8(
            sh(
                &d.dir,
                &format!("openssl x509 -in {} -noout -issuer", d.cert.display()),
            )
            .stdout,
        )
        .unwrap()
    };
    assert_ne!(
        issuer(&old),
        issuer(&new),
        "the new device is issued by the new CA"
    );
    for d in [&old, &new] {
        let out = s.mosquitto_pub(
            d,
            &[
                "-t",
                &format!("devices/{}/telemetry", d.id),
                "-m",
                "x",
                "-q",
                "1",
            ],
        );
        assert!(
            out.status.success(),
            "{}: {}",
            d.id,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Revocation still works for the old CA's devices (its CRL is still signed).
    s.revoke("old-1");
    assert!(!s
        .mosquitto_pub(&old, &["-t", "devices/old-1/telemetry", "-m", "x"])
        .status
        .success());
    let status = s.cli(&["ca", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["issuing"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["issuing"][0]["current"], true);
    assert!(v["issuing"][1]["trusted_until"]
        .as_str()
        .unwrap()
        .starts_with("20"));
    assert_eq!(v["devices"]["revoked"], 1);
    let out = sh(
        &old.dir,
        &format!("curl -sf --cacert {} https://127.0.0.1:{}/.well-known/est/cacerts | base64 -d | openssl pkcs7 -inform DER -print_certs | grep -c subject=", s.data.join("ca/root.crt").display(), s.admin_port),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3",
        "current, retired and root"
    );
}

#[test]
fn init_can_build_on_an_existing_root_ca() {
    let dir = support::temp_dir("import");
    std::fs::create_dir_all(&dir).unwrap();
    let out = sh(
        &dir,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root.key -out root.crt -days 3650 \
           -subj '/O=Example Corp/CN=Example OT Root' -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(support::BIN)
        .args(["init", "--data"])
        .arg(dir.join("data"))
        .arg("--import-ca")
        .arg(dir.join("root.crt"))
        .arg(dir.join("root.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sh(&dir, "openssl verify -CAfile root.crt data/ca/issuing.crt && openssl x509 -in data/ca/issuing.crt -noout -issuer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("OK") && text.contains("Example OT Root"),
        "{text}"
    );
    // A certificate that is not a CA is refused.
    let out = Command::new(support::BIN)
        .args(["init", "--data"])
        .arg(dir.join("data2"))
        .arg("--import-ca")
        .arg(dir.join("data/admin/admin.crt"))
        .arg(dir.join("data/admin/admin.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn strongswan_pki_enrolls_and_reenrolls_over_est_and_the_certificate_publishes() {
    let s = Server::start();
    let dir = s.root.join("swan");
    std::fs::create_dir_all(&dir).unwrap();
    let t = sensor_token(&s, "swan-1", &[]);
    let ca = s.data.join("ca/root.crt");
    let issuing = s.data.join("ca/issuing.crt");
    let url = format!("https://127.0.0.1:{}", s.admin_port);
    let out = sh(
        &dir,
        &format!(
            "pki --gen --type ecdsa --size 256 --outform pem > swan-1.key \
             && pki --req --type priv --in swan-1.key --dn 'CN=swan-1' --outform der > swan.req \
             && pki --est --url {url} --cacert {ca} --cacert {issuing} --userpass swan-1:{t} --in swan.req --outform pem > swan-1.crt",
            ca = ca.display(),
            issuing = issuing.display()
        ),
    );
    assert!(
        out.status.success(),
        "strongSwan pki --est: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = device_files(&s, &dir, "swan-1", &dir.join("swan-1.crt"));
    let pub_out = s.mosquitto_pub(
        &dev,
        &[
            "-t",
            "devices/swan-1/telemetry",
            "-m",
            "from strongswan",
            "-q",
            "1",
        ],
    );
    assert!(
        pub_out.status.success(),
        "{}",
        String::from_utf8_lossy(&pub_out.stderr)
    );
    // Re-enrollment authenticated by the current certificate.
    let out = sh(
        &dir,
        &format!(
            "pki --est --url {url} --cacert {ca} --cacert {issuing} --cert swan-1.crt --key swan-1.key --in swan.req --outform pem > renewed.crt \
             && openssl x509 -in renewed.crt -noout -serial && openssl x509 -in swan-1.crt -noout -serial",
            ca = ca.display(),
            issuing = issuing.display()
        ),
    );
    assert!(
        out.status.success(),
        "strongSwan re-enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serials: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(serials.len(), 2);
    assert_ne!(serials[0], serials[1]);
}

#[test]
fn a_key_on_the_weak_key_blocklist_is_refused() {
    // The blocklist uses openssl-vulnkey's format (Debian's 2008 weak keys ship in it): the
    // last 20 hex digits of SHA-1("Modulus=<HEX>\n").
    let dir = support::temp_dir("blocklist");
    std::fs::create_dir_all(&dir).unwrap();
    let out = sh(&dir, "openssl genrsa -out weak.key 2048 2>/dev/null && openssl rsa -in weak.key -noout -modulus | sha1sum | cut -c21-40 > weak-keys.txt");
    assert!(out.status.success());
    let s = Server::start_with(
        &[(
            "# weak_key_blocklist = \"weak-keys.txt\"",
            &format!(
                "weak_key_blocklist = \"{}\"",
                dir.join("weak-keys.txt").display()
            ),
        )],
        support::EXAMPLE_POLICY,
    );
    let t = sensor_token(&s, "weak-1", &[]);
    let out = sh(&dir, "openssl req -new -key weak.key -subj /CN=weak-1 -outform DER -out weak.der && base64 -w0 weak.der > weak.b64");
    assert!(out.status.success());
    let (code, body) = curl_post(
        &s,
        "simpleenroll",
        &dir.join("weak.b64"),
        &["-u", &format!("weak-1:{t}")],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("blocklist"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reenrollment_with_an_expired_certificate_is_refused() {
    let s = Server::start();
    let dir = s.root.join("expired");
    std::fs::create_dir_all(&dir).unwrap();
    // A certificate from our own issuing CA for a registered device, but already expired.
    s.add_device("old-timer", &["sensors"]);
    let old = s.expired_device("old-timer", &dir);
    let req = csr(&dir, "renew", "old-timer", P256, "");
    let (code, _) = curl_post(
        &s,
        "simplereenroll",
        &req,
        &[
            "--cert",
            old.cert.to_str().unwrap(),
            "--key",
            old.key.to_str().unwrap(),
        ],
    );
    assert_eq!(
        code, 0,
        "an expired client certificate fails the TLS handshake"
    );
}
