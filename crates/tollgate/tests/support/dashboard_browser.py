#!/usr/bin/env python3
"""Drive Tollgate's dashboard in real Chromium (Playwright) while real MQTT clients (paho-mqtt,
over mTLS) connect, publish and attack, and check what a person would see.

Started by tests/dashboard_browser_e2e.rs with one JSON argument: {"bin", "data", "admin_port",
"mqtt_port", "shots", "devices": {id: {"cert", "key", "ca"}}}. The devices are enrolled by the
test beforehand; this script signs in with one-time URLs from `tollgate dashboard login`.
Each check prints "OK <what>"; the first failure raises, and the exit status is non-zero.
Screenshots of every page go to the "shots" directory.
"""
import json
import os
import ssl
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import expect, sync_playwright

ARGS = json.loads(sys.argv[1])
BASE = "https://127.0.0.1:%d" % ARGS["admin_port"]
SHOTS = ARGS["shots"]
os.makedirs(SHOTS, exist_ok=True)
TIMEOUT_MS = 30_000


def ok(what):
    print("OK " + what, flush=True)


def login_url(*extra):
    out = subprocess.run([ARGS["bin"], "dashboard", "login", "--data", ARGS["data"], *extra],
                         check=True, capture_output=True, text=True)
    url = out.stdout.strip()
    assert url.startswith(BASE + "/dashboard/login?token="), url
    return url


class Device:
    """A device's live MQTT connection (paho, MQTT 5), recording what it receives."""

    def __init__(self, dev_id, subscribe=None):
        files = ARGS["devices"][dev_id]
        self.id = dev_id
        self.received = []
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.acks = {}
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=dev_id,
                        protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=files["ca"], certfile=files["cert"], keyfile=files["key"],
                  tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = lambda c, u, f, rc, p=None: self.connected.set()
        c.on_subscribe = lambda c, u, mid, rcs, p=None: self.subscribed.set()
        c.on_message = self.on_message
        c.on_publish = self.on_publish
        self.client = c
        c.connect("127.0.0.1", ARGS["mqtt_port"], keepalive=30)
        c.loop_start()
        assert self.connected.wait(15), "%s did not connect" % dev_id
        if subscribe:
            c.subscribe(subscribe, qos=1)
            assert self.subscribed.wait(15), "%s got no SUBACK" % dev_id

    def on_message(self, c, u, msg):
        with self.cond:
            self.received.append((msg.topic, msg.payload.decode(errors="replace")))
            self.cond.notify_all()

    def on_publish(self, c, u, mid, rc, props=None):
        with self.cond:
            self.acks[mid] = int(getattr(rc, "value", rc))
            self.cond.notify_all()

    def publish(self, topic, payload):
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        with self.cond:
            assert self.cond.wait_for(lambda: info.mid in self.acks, 15), "no PUBACK"
            return self.acks[info.mid]

    def wait_for(self, payload, seconds):
        with self.cond:
            return self.cond.wait_for(lambda: any(p == payload for _, p in self.received), seconds)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def shot(page, name):
    path = os.path.join(SHOTS, name + ".png")
    page.screenshot(path=path, full_page=True)
    print("SHOT " + path, flush=True)


CONSOLE = {}


def no_csp_violations(page, name):
    bad = [m for m in CONSOLE.get(id(page), []) if "Content Security Policy" in m or "Refused to" in m
           or m.startswith("pageerror")]
    assert not bad, "%s: CSP violations in the console: %s" % (name, bad)


def open_page(context):
    page = context.new_page()
    log = CONSOLE.setdefault(id(page), [])
    page.on("console", lambda m: log.append(m.text))
    page.on("pageerror", lambda e: log.append("pageerror: %s" % e))
    page.set_default_timeout(TIMEOUT_MS)
    return page


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox"])
        admin = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
        page = open_page(admin)

        # 1. Sign in with a one-time URL: the token leaves the address bar for a cookie.
        url = login_url()
        page.goto(url)
        expect(page).to_have_url(BASE + "/dashboard/")
        expect(page.locator("h1")).to_have_text("Fleet")
        cookies = [c for c in admin.cookies() if c["name"] == "__Host-tollgate-session"]
        assert len(cookies) == 1, cookies
        c = cookies[0]
        assert c["httpOnly"] and c["secure"] and c["sameSite"] == "Strict" and c["path"] == "/", c
        ok("signed in with a one-time URL; the session cookie is HttpOnly, Secure, SameSite=Strict")
        # The same URL again, in a fresh browser: refused.
        other = browser.new_context(ignore_https_errors=True)
        replay = other.new_page()
        resp = replay.goto(url)
        assert resp.status == 401, resp.status
        expect(replay.locator("body")).to_contain_text("already used")
        other.close()
        ok("the sign-in URL does not work twice")

        # 2. A device that connects appears on the fleet page without a reload.
        expect(page.locator("body")).to_have_attribute("data-live", "on")
        page.evaluate("window.__notReloaded = true")
        backend = Device("backend-1", subscribe="devices/+/telemetry")
        cam = Device("cam-1", subscribe="devices/cam-1/commands/#")
        expect(page.locator('#connections-table tr[data-device="cam-1"]')).to_be_visible()
        assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
        ok("cam-1 appeared on the fleet page without a reload")
        assert cam.publish("devices/cam-1/telemetry", "before") == 0
        assert backend.wait_for("before", 10), "the backend did not get cam-1's telemetry"
        ok("cam-1's telemetry reaches the backend before the quarantine")
        time.sleep(2.5)  # two statistics snapshots: the charts have points
        shot(page, "01-fleet")
        no_csp_violations(page, "fleet")

        # 3. Quarantine cam-1 from its page: click, confirm; its live connection is confined.
        page.goto(BASE + "/dashboard/devices/cam-1")
        expect(page.locator("h1")).to_have_text("Device cam-1")
        expect(page.locator("#device-state-badge")).to_have_text("active")
        expect(page.locator("body")).to_have_attribute("data-live", "on")
        page.evaluate("window.__notReloaded = true")
        page.get_by_role("button", name="Quarantine").click()
        dialog = page.locator("dialog#confirm")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("Quarantine cam-1?")
        page.fill("#confirm-field", "suspicious firmware, seen from the dashboard test")
        shot(page, "02-device-confirm")
        page.click("#confirm-ok")
        expect(page.locator("#device-state-badge")).to_have_text("quarantined")
        expect(page.locator("#device-state")).to_contain_text("suspicious firmware")
        assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
        ok("the device page shows cam-1 quarantined")
        rc = cam.publish("devices/cam-1/telemetry", "after")
        assert rc >= 0x80, "cam-1's publish was accepted after the quarantine (reason %#x)" % rc
        assert not backend.wait_for("after", 3), "the backend got cam-1's telemetry after the quarantine"
        ok("cam-1's live connection is confined: PUBACK reason %#x, nothing delivered" % rc)
        time.sleep(2.5)
        shot(page, "03-device-quarantined")
        no_csp_violations(page, "device")

        # 4. An authorization-probing attack raises an alert that appears live.
        page.goto(BASE + "/dashboard/alerts")
        expect(page.locator("body")).to_have_attribute("data-live", "on")
        page.evaluate("window.__notReloaded = true")
        prober = Device("prober-1")
        for i in range(40):
            prober.client.publish("devices/other-%d/telemetry" % i, "x", qos=0)
            time.sleep(0.02)
        row = page.locator("#alerts-active tr.alert-row", has_text="authorization_probing")
        expect(row).to_be_visible(timeout=60_000)
        expect(row).to_contain_text("prober-1")
        assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
        ok("the probing alert appeared on the alerts page without a reload")
        shot(page, "04-alerts")
        no_csp_violations(page, "alerts")

        # 5. An audit entry's inclusion proof checks in the page.
        page.goto(BASE + "/dashboard/audit")
        first = page.locator("#audit-table tbody tr").first
        first.locator("button.check-proof").click()
        expect(first).to_have_attribute("data-proof", "ok")
        expect(first.locator("output")).to_contain_text("included")
        # And an older one, whose proof is longer.
        older = page.locator("#audit-table tbody tr").nth(7)
        older.locator("button.check-proof").click()
        expect(older).to_have_attribute("data-proof", "ok")
        ok("two audit entries' inclusion proofs check against the signed checkpoint in the page")
        shot(page, "05-audit")
        no_csp_violations(page, "audit")

        # 6. The other pages render.
        for name, path, heading in [
            ("06-devices", "/dashboard/devices?state=quarantined", "Devices"),
            ("07-compliance", "/dashboard/compliance", "Compliance"),
            ("08-findings", "/dashboard/findings", "Configuration findings"),
            ("09-policy", "/dashboard/policy?device=cam-1&action=publish&topic=devices/cam-1/telemetry", "Policy"),
        ]:
            page.goto(BASE + path)
            expect(page.locator("h1")).to_have_text(heading)
            shot(page, name)
            no_csp_violations(page, name)
        page.goto(BASE + "/dashboard/compliance")
        hit = page.locator("#by-advisory tr", has_text="PYSEC-2021-108")
        expect(hit).to_contain_text("acme")
        expect(hit).to_contain_text("Scanner-X2")
        expect(hit).to_contain_text("cam-1")
        page.goto(BASE + "/dashboard/devices/cam-1")
        expect(page.locator("section.panel", has_text="Vulnerable SBOM components")).to_contain_text("urllib3")
        page.goto(BASE + "/dashboard/devices?supplier=acme")
        expect(page.locator('#devices-table tr[data-device="cam-1"]')).to_be_visible()
        expect(page.locator('#devices-table tr[data-device="prober-1"]')).to_have_count(0)
        page.goto(BASE + "/dashboard/devices?state=quarantined")
        expect(page.locator('#devices-table tr[data-device="cam-1"]')).to_be_visible()
        expect(page.locator('#devices-table tr[data-device="backend-1"]')).to_have_count(0)
        page.goto(BASE + "/dashboard/policy?device=cam-1&action=publish&topic=devices/cam-1/telemetry")
        expect(page.locator("#explain-result")).to_contain_text("quarantined")
        ok("the compliance page shows which supplier, model and device an advisory hits; devices filter; "
           "findings and the policy explain tool render")

        # 7. A viewer sees no buttons, and the API refuses it.
        viewer = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
        vpage = open_page(viewer)
        vpage.goto(login_url("--role", "viewer"))
        expect(vpage).to_have_url(BASE + "/dashboard/")
        vpage.goto(BASE + "/dashboard/devices/cam-1")
        expect(vpage.locator("#device-state-badge")).to_have_text("quarantined")
        expect(vpage.locator("button.act")).to_have_count(0)
        vpage.goto(BASE + "/dashboard/alerts")
        expect(vpage.locator("button.act")).to_have_count(0)
        status = vpage.evaluate("""async () => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const r = await fetch('/api/v1/devices/cam-1/release', {method: 'POST',
                headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'}, body: '{}'});
            return r.status;
        }""")
        assert status == 403, "the viewer's release got %s" % status
        read = vpage.evaluate("async () => (await fetch('/api/v1/devices/cam-1')).status")
        assert read == 200, read
        ok("a viewer sees no action buttons; the API refuses its change (403) and serves its read")
        vpage.goto(BASE + "/dashboard/devices/cam-1")
        shot(vpage, "10-viewer-device")

        # 8. Sign out: the session is over.
        page.goto(BASE + "/dashboard/")
        page.click("#signout")
        expect(page.locator("body")).to_contain_text("Sign-in needed")
        resp = page.goto(BASE + "/dashboard/")
        assert resp.status == 401, resp.status
        ok("signing out ends the session")

        for d in (cam, backend, prober):
            d.close()
        browser.close()


if __name__ == "__main__":
    main()
