// Tollgate dashboard: our only script. No build step, no framework.
//
// - Buttons (.act) call the same /api/v1 routes as the CLI, after a confirmation dialog, with
//   the session's CSRF token (from <meta name="csrf-token">) in X-CSRF-Token.
// - Live updates: /dashboard/events (server-sent events). An event makes the page fetch itself
//   again and swap its [data-live] parts; statistics snapshots feed the uPlot charts.
// - The audit page checks an entry's inclusion proof here, with WebCrypto SHA-256 (RFC 9162).
"use strict";

(function () {
  const meta = (name) => {
    const m = document.querySelector(`meta[name="${name}"]`);
    return m ? m.getAttribute("content") : "";
  };
  const csrf = meta("csrf-token");
  const body = document.body;
  const page = body.dataset.page || "";
  const device = body.dataset.device || "";

  // ---------------------------------------------------------------- API calls

  async function api(method, url, payload) {
    const init = {
      method,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
    };
    if (payload !== undefined && payload !== null) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const r = await fetch(url, init);
    let data = null;
    const text = await r.text();
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = text;
    }
    return { ok: r.ok, status: r.status, data };
  }

  function errorText(res) {
    const d = res.data;
    if (d && typeof d === "object") return d.detail || d.error || d.title || JSON.stringify(d);
    return String(d || res.status);
  }

  let toastTimer = null;
  function toast(text, bad) {
    const t = document.getElementById("toast");
    if (!t) return;
    t.textContent = text;
    t.className = bad ? "show bad" : "show";
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.className = ""), 6000);
  }

  // ---------------------------------------------------------------- confirmation dialog

  const dialog = document.getElementById("confirm");
  let pending = null;

  function ask(button) {
    if (!dialog) return;
    pending = button;
    document.getElementById("confirm-text").textContent = button.dataset.confirm || "Are you sure?";
    const field = button.dataset.field;
    const label = document.getElementById("confirm-field-label");
    const input = document.getElementById("confirm-field");
    if (field) {
      document.getElementById("confirm-field-name").textContent = field + " ";
      input.value = "";
      label.classList.remove("hidden");
    } else {
      label.classList.add("hidden");
    }
    document.getElementById("confirm-ok").textContent = button.textContent;
    dialog.showModal();
    if (field) input.focus();
  }

  async function confirmed() {
    const button = pending;
    pending = null;
    dialog.close();
    if (!button) return;
    let payload = null;
    try {
      payload = JSON.parse(button.dataset.body || "null");
    } catch (_) {
      payload = null;
    }
    const field = button.dataset.field;
    if (field && payload && typeof payload === "object") {
      const v = document.getElementById("confirm-field").value.trim();
      payload[field] = v || `${button.textContent.toLowerCase()} from the dashboard`;
    }
    button.disabled = true;
    try {
      const res = await api(button.dataset.method || "POST", button.dataset.url, payload);
      if (res.ok) {
        toast(`${button.textContent}: done.`);
      } else {
        toast(`${button.textContent} refused (${res.status}): ${errorText(res)}`, true);
      }
    } catch (e) {
      toast(`${button.textContent} failed: ${e}`, true);
    } finally {
      button.disabled = false;
    }
    refresh(true);
  }

  if (dialog) {
    document.getElementById("confirm-ok").addEventListener("click", confirmed);
    document.getElementById("confirm-cancel").addEventListener("click", () => {
      pending = null;
      dialog.close();
      if (deferred) refresh(true);
    });
    document.getElementById("confirm-field").addEventListener("keydown", (e) => {
      if (e.key === "Enter") confirmed();
    });
  }

  document.addEventListener("click", (e) => {
    const act = e.target.closest("button.act");
    if (act) {
      ask(act);
      return;
    }
    const proof = e.target.closest("button.check-proof");
    if (proof) checkProof(proof);
  });

  const signout = document.getElementById("signout");
  if (signout) {
    signout.addEventListener("click", async () => {
      await fetch("/dashboard/logout", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
      window.location.assign("/dashboard/login");
    });
  }

  // ---------------------------------------------------------------- live parts of the page

  let lastRefresh = 0;
  let timer = null;
  let deferred = false;

  function signedOut() {
    const s = document.getElementById("live-status");
    if (s) s.className = "live-status off";
    toast("The session has ended: sign in again with a new URL from `tollgate dashboard login`.", true);
  }

  // Fetch this page again and swap its [data-live] parts (at most once a second).
  function refresh(now) {
    if (dialog && dialog.open) {
      deferred = true;
      return;
    }
    deferred = false;
    const wait = now ? 0 : Math.max(0, 1000 - (Date.now() - lastRefresh));
    if (timer) return;
    timer = setTimeout(async () => {
      timer = null;
      lastRefresh = Date.now();
      try {
        // Marked as automatic: it does not keep the session from its idle timeout.
        const r = await fetch(window.location.href, {
          credentials: "same-origin",
          headers: { "X-Tollgate-Refresh": "1" },
        });
        if (r.status === 401) return signedOut();
        if (!r.ok) return;
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        if (dialog && dialog.open) {
          deferred = true;
          return;
        }
        document.querySelectorAll("[data-live][id]").forEach((old) => {
          const fresh = doc.getElementById(old.id);
          if (fresh) old.replaceWith(document.importNode(fresh, true));
        });
        body.dataset.refreshed = String((Number(body.dataset.refreshed) || 0) + 1);
      } catch (_) {
        /* the next event tries again */
      }
    }, wait);
  }

  // ---------------------------------------------------------------- charts

  const WINDOW = 300; // points kept: five minutes at one a second

  function makeChart(id, series) {
    const el = document.getElementById(id);
    if (!el || typeof uPlot === "undefined") return null;
    const data = [[]].concat(series.map(() => []));
    const opts = {
      width: Math.max(el.clientWidth, 300),
      height: 200,
      legend: { live: false },
      scales: { x: { time: true } },
      series: [{}].concat(
        series.map((s) => ({ label: s.label, stroke: s.color, width: 2, spanGaps: true }))
      ),
      axes: [{}, { size: 50 }],
    };
    const chart = new uPlot(opts, data, el);
    window.addEventListener("resize", () => chart.setSize({ width: Math.max(el.clientWidth, 300), height: 200 }));
    return { chart, data };
  }

  function push(c, t, values) {
    if (!c) return;
    c.data[0].push(t);
    values.forEach((v, i) => c.data[i + 1].push(v === undefined ? null : v));
    if (c.data[0].length > WINDOW) c.data.forEach((s) => s.shift());
    c.chart.setData(c.data);
  }

  // Per-second rates from successive counter totals.
  function rater() {
    let prev = null;
    return (snap, keys) => {
      const out = keys.map((k) => {
        if (!prev || snap[k] == null || prev[k] == null) return null;
        const dt = (snap.t - prev.t) / 1000;
        return dt > 0 ? Math.max(0, (snap[k] - prev[k]) / dt) : null;
      });
      prev = snap;
      return out;
    };
  }

  const fleetRates = makeChart("chart-rates", [
    { label: "in/s", color: "#2b7bb9" },
    { label: "out/s", color: "#3a9d5d" },
    { label: "denied/s", color: "#c0392b" },
  ]);
  const fleetRtt = makeChart("chart-rtt", [
    { label: "RTT p50 ms", color: "#2b7bb9" },
    { label: "RTT p99 ms", color: "#8e44ad" },
  ]);
  const devRates = makeChart("chart-device-rates", [
    { label: "in/s", color: "#2b7bb9" },
    { label: "out/s", color: "#3a9d5d" },
    { label: "denied/s", color: "#c0392b" },
  ]);
  const devRtt = makeChart("chart-device-rtt", [{ label: "RTT ms", color: "#2b7bb9" }]);
  const fleetRate = rater();
  const devRate = rater();

  function setText(id, text) {
    const el = document.getElementById(id);
    if (el) el.textContent = text;
  }

  function onStats(s) {
    if (s.t == null) {
      if (s.gap) refresh(false);
      return;
    }
    const t = s.t / 1000;
    const denied = (s.publish_denied || 0) + (s.subscribe_denied || 0);
    const r = fleetRate({ t: s.t, mi: s.messages_in, mo: s.messages_out, d: denied }, ["mi", "mo", "d"]);
    push(fleetRates, t, r);
    push(fleetRtt, t, [s.rtt_ms_p50, s.rtt_ms_p99]);
    setText("c-connections", String(s.connections));
    const fmt = (v) => (v == null ? "—" : v.toFixed(1));
    const pct = (v) => (v == null ? "—" : (v * 100).toFixed(2) + " %");
    setText("rtt-p50", fmt(s.rtt_ms_p50) + " ms");
    setText("rtt-p99", fmt(s.rtt_ms_p99) + " ms");
    setText("retrans-p50", pct(s.retrans_ratio_p50));
    setText("retrans-p99", pct(s.retrans_ratio_p99));
  }

  function onDevice(d) {
    const t = d.t / 1000;
    const [mi, mo, de] = devRate({ t: d.t, mi: d.messages_in, mo: d.messages_out, de: d.denied }, ["mi", "mo", "de"]);
    push(devRates, t, [mi, mo, de]);
    push(devRtt, t, [d.rtt_ms]);
  }

  // ---------------------------------------------------------------- the event stream

  function connect() {
    const status = document.getElementById("live-status");
    const url = "/dashboard/events" + (device ? "?device=" + encodeURIComponent(device) : "");
    const es = new EventSource(url);
    es.addEventListener("hello", () => {
      if (status) status.className = "live-status on";
      body.dataset.live = "on";
    });
    es.addEventListener("tollgate", (m) => {
      let e = null;
      try {
        e = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      body.dataset.lastEvent = e.type || "";
      refresh(false);
    });
    es.addEventListener("stats", (m) => {
      try {
        onStats(JSON.parse(m.data));
      } catch (_) {
        /* ignore a malformed snapshot */
      }
    });
    es.addEventListener("device", (m) => {
      try {
        onDevice(JSON.parse(m.data));
      } catch (_) {
        /* ignore */
      }
    });
    es.addEventListener("lagged", () => refresh(false));
    es.onerror = () => {
      if (status) status.className = "live-status off";
      body.dataset.live = "off";
      if (es.readyState === EventSource.CLOSED) {
        // Refused (the session ended) or the server went away: see which.
        fetch("/dashboard/events", { method: "HEAD", credentials: "same-origin" })
          .then((r) => (r.status === 401 ? signedOut() : setTimeout(connect, 3000)))
          .catch(() => setTimeout(connect, 3000));
      }
    };
  }
  if (page) connect();

  // ---------------------------------------------------------------- audit proofs (RFC 9162)

  function b64bytes(s) {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function concat(...parts) {
    const n = parts.reduce((a, p) => a + p.length, 0);
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const leafHash = (entry) => sha256(concat(Uint8Array.of(0), entry));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

  // RFC 9162 §2.1.3.2: the root a leaf and its inclusion proof lead to.
  async function rootFromProof(index, size, leaf, proof) {
    if (index >= size) throw new Error("index beyond the tree");
    let fn = index;
    let sn = size - 1;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0) throw new Error("the proof is too long");
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        if (fn % 2 === 0) {
          while (!(fn % 2 === 1 || fn === 0)) {
            fn = Math.floor(fn / 2);
            sn = Math.floor(sn / 2);
          }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error("the proof is too short");
    return r;
  }

  function equal(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  async function getJson(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }

  async function checkProof(button) {
    const index = Number(button.dataset.index);
    const out = button.parentElement.querySelector("output");
    const row = button.closest("tr");
    out.textContent = "checking…";
    out.className = "proof-result";
    try {
      // The entry's exact bytes, fetched on their own.
      const e = await getJson(`/api/v1/audit/entries?from=${index}&limit=1`);
      const entry = e.entries && e.entries[0];
      if (!entry || entry.index !== index) throw new Error("no such entry");
      const leaf = await leafHash(new TextEncoder().encode(entry.data));
      let verdict = null;
      for (let attempt = 0; attempt < 4 && !verdict; attempt++) {
        const p = await getJson(`/api/v1/audit/proof/inclusion?index=${index}`);
        const latest = await getJson("/api/v1/audit/checkpoint");
        const c = latest.checkpoint;
        if (!c || c.size !== p.size) continue; // a newer checkpoint was signed meanwhile
        // The signed note's own lines: origin, size, root.
        const lines = String(c.note || "").split("\n");
        if (lines[1] !== String(c.size) || lines[2] !== c.root) throw new Error("the checkpoint's note does not match it");
        const root = await rootFromProof(index, p.size, leaf, p.proof.map(b64bytes));
        verdict = { ok: equal(root, b64bytes(c.root)), size: c.size, root: hex(root), leaf: hex(leaf) };
      }
      if (!verdict) throw new Error("the checkpoint kept changing; try again");
      if (verdict.ok) {
        out.textContent = `✓ included: recomputed root ${verdict.root.slice(0, 16)}… over ${verdict.size} entries equals the signed checkpoint's`;
        out.className = "proof-result good";
        row.dataset.proof = "ok";
      } else {
        out.textContent = `✗ NOT included: the recomputed root ${verdict.root.slice(0, 16)}… differs from the checkpoint's`;
        out.className = "proof-result bad";
        row.dataset.proof = "failed";
      }
    } catch (err) {
      out.textContent = `✗ ${err.message || err}`;
      out.className = "proof-result bad";
      row.dataset.proof = "error";
    }
  }
})();
