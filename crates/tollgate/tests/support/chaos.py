#!/usr/bin/env python3
"""Clients for the crash fault-injection test: numbered QoS 1 and QoS 2 messages from persistent
publishers to persistent subscribers, through broker restarts, then an account of every message.

The plan (JSON on stdin): {"host", "port", "ca", "stop_file", "topic_fmt",
"publishers": [{"id", "cert", "key"}], "subscribers": [{"id", "cert", "key"}], "filter",
"interval_ms", "inflight", "drain_secs"}.

Every client is MQTT 3.1.1 with clean session 0 and paho's own reconnect loop. Subscribers
subscribe once, on their first connection: after that their subscription must come from the
broker's restored session. Publishers send "<publisher>:<seq>:<qos>" payloads, alternating
QoS 1 and QoS 2, until stop_file exists; then everyone drains. A message counts as acknowledged
once paho reports it published (PUBACK for QoS 1, PUBCOMP for QoS 2; a QoS 2 message whose PUBREC
arrived before a crash completes after the reconnect, since paho resends the PUBREL).

Prints one JSON report: sent, acknowledged, delivered, duplicated (extra copies, QoS 1 allowed),
duplicated_qos2 (must be 0), lost (acknowledged but missing at some subscriber: must be 0).
"""
import json
import os
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def done(info):
    # MessageInfo.is_published() raises when publish() ran while disconnected, yet paho keeps
    # such a QoS 1/2 message and sends it after the reconnect: read the flag itself.
    with info._condition:
        return info._published


def patch_paho_qos2_resend():
    """Work around a paho-mqtt 2.x client bug that this test would otherwise blame on the broker.

    paho resets in-flight messages at the start of every reconnect *attempt*. A QoS 2 message
    awaiting PUBCOMP becomes "resend PUBREL"; if that attempt fails (the broker is still down)
    the next reset finds neither "wait for PUBCOMP" nor "wait for PUBREC" and turns it into a
    fresh PUBLISH without DUP. The broker released that packet id already, so by the protocol it
    is a new message, delivered again. Keep "resend PUBREL" across failed attempts.
    """
    orig = mqtt.Client._messages_reconnect_reset_out

    def reset_out(self):
        with self._out_message_mutex:
            keep = [m for m in self._out_messages.values()
                    if m.qos == 2 and m.state == mqtt.mqtt_ms_resend_pubrel]
        orig(self)
        with self._out_message_mutex:
            for m in keep:
                m.state = mqtt.mqtt_ms_resend_pubrel

    mqtt.Client._messages_reconnect_reset_out = reset_out


def make_client(plan, dev):
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=dev["id"],
                    protocol=mqtt.MQTTv311, clean_session=False)
    c.tls_set(ca_certs=plan["ca"], certfile=dev["cert"], keyfile=dev["key"],
              tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.reconnect_delay_set(0.05, 0.5)
    c.max_inflight_messages_set(plan.get("inflight", 20))
    c.max_queued_messages_set(0)
    return c


class Subscriber:
    def __init__(self, plan, dev):
        self.id = dev["id"]
        self.lock = threading.Lock()
        self.counts = {}
        self.seen = {}
        self.subscribed = threading.Event()
        self.connects = 0
        self.client = make_client(plan, dev)
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self.on_message
        self.filter = plan["filter"]

    def on_connect(self, c, u, flags, rc, props):
        if rc.is_failure:
            return
        self.connects += 1
        if self.connects == 1:
            c.subscribe(self.filter, qos=2)

    def on_message(self, c, u, m):
        key = m.payload.decode()
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self.seen.setdefault(key, []).append((m.mid, m.qos, m.dup, self.connects))


class Publisher:
    def __init__(self, plan, dev):
        self.id = dev["id"]
        self.topic = plan["topic_fmt"].format(id=dev["id"])
        self.sent = []  # (key, qos, MessageInfo)
        self.client = make_client(plan, dev)
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and self.connected.set()
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.interval = plan.get("interval_ms", 3) / 1000.0
        self.inflight = plan.get("inflight", 20)

    def pending(self):
        return sum(1 for (_, _, i) in list(self.sent) if not done(i))

    def run(self, stop_file):
        seq = 0
        while not os.path.exists(stop_file):
            if not self.connected.wait(0.05):
                continue
            # Keep at most `inflight` unacknowledged messages: paho resends those on reconnect.
            if self.pending() >= self.inflight:
                time.sleep(0.002)
                continue
            seq += 1
            qos = 1 if seq % 2 else 2
            key = f"{self.id}:{seq}:{qos}"
            info = self.client.publish(self.topic, key.encode(), qos=qos)
            self.sent.append((key, qos, info))
            time.sleep(self.interval)


def main():
    plan = json.load(sys.stdin)
    patch_paho_qos2_resend()
    subs = [Subscriber(plan, d) for d in plan["subscribers"]]
    pubs = [Publisher(plan, d) for d in plan["publishers"]]
    for s in subs:
        s.client.connect_async(plan["host"], plan["port"], keepalive=5)
        s.client.loop_start()
    for s in subs:
        if not s.subscribed.wait(20):
            print(json.dumps({"error": f"{s.id} never subscribed"}))
            sys.exit(2)
    for p in pubs:
        p.client.connect_async(plan["host"], plan["port"], keepalive=5)
        p.client.loop_start()
    for p in pubs:
        if not p.connected.wait(20):
            print(json.dumps({"error": f"{p.id} never connected"}))
            sys.exit(2)
    # Readiness signal for the test: every subscriber holds its subscription (SUBACK) and every
    # publisher is connected, so the broker may be killed from now on.
    sys.stderr.write("CHAOS-READY\n")
    sys.stderr.flush()
    threads = [threading.Thread(target=p.run, args=(plan["stop_file"],)) for p in pubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Drain: every in-flight publish completes, then every acknowledged message arrives.
    drain = time.time() + plan.get("drain_secs", 30)
    while time.time() < drain and any(p.pending() for p in pubs):
        time.sleep(0.05)
    acked = [(k, q) for p in pubs for (k, q, i) in p.sent if done(i)]

    def missing():
        out = []
        for s in subs:
            with s.lock:
                out.extend((s.id, k) for (k, _) in acked if k not in s.counts)
        return out

    while time.time() < drain and missing():
        time.sleep(0.1)
    time.sleep(0.5)  # late duplicates, if any, arrive now
    lost = missing()
    qos_of = {k: q for (k, q) in acked}
    duplicated = duplicated_qos2 = delivered = 0
    dup_examples = []
    for s in subs:
        with s.lock:
            for k, n in s.counts.items():
                delivered += 1
                duplicated += n - 1
                if n > 1 and qos_of.get(k, int(k.rsplit(":", 1)[1])) == 2:
                    duplicated_qos2 += n - 1
                    dup_examples.append((s.id, k, n, s.seen.get(k)))
    report = {
        "sent": sum(len(p.sent) for p in pubs),
        "acknowledged": len(acked),
        "acknowledged_qos2": sum(1 for (_, q) in acked if q == 2),
        "still_pending": sum(p.pending() for p in pubs),
        "subscribers": len(subs),
        "delivered": delivered,
        "duplicated": duplicated,
        "duplicated_qos2": duplicated_qos2,
        "lost": len(lost),
        "lost_examples": lost[:10],
        "duplicated_qos2_examples": dup_examples[:10],
        "subscriber_connects": [s.connects for s in subs],
    }
    for c in [s.client for s in subs] + [p.client for p in pubs]:
        c.disconnect()
        c.loop_stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
