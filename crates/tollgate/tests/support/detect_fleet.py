#!/usr/bin/env python3
"""A small fleet of real MQTT devices (paho-mqtt over mTLS) with steady telemetry, and attacks
injected on a schedule, for the detection end-to-end tests.

The plan (JSON on stdin):
  {"host", "port", "ca", "server_name" (optional, for TLS to a non-loopback address),
   "period": seconds between reports, "duration": seconds to run,
   "devices": [{"id", "cert", "key", "bind" (optional source address), "echo": bool}],
   "attacks": [{"at": seconds after start, "op": ..., "device": index, ...}]}
Each device connects (MQTT 5), subscribes to commands/<id>/# (and to its own telemetry when
"echo", so the broker sends it data), and publishes ~120 bytes to telemetry/<id>/state every
period with +-20 % jitter, reconnecting if the server closes the connection.
Attack ops: spike (rate x, for secs), probe, scan, flap (times), silence, clone (second client
with the same certificate from bind2, same client id: session-takeover ping-pong, for secs),
new_source (reconnect from bind2).
Each attack's onset is written to stderr as "ONSET <op> <device id> <unix ms>"; the test reads it.
"""
import json
import random
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def now_ms():
    return int(time.time() * 1000)


def say(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Device:
    def __init__(self, plan, spec):
        self.plan = plan
        self.spec = spec
        self.id = spec["id"]
        self.rate = 1.0
        self.payload = 120
        self.silent = False
        self.stop = False
        self.bind = spec.get("bind", "")
        self.client = None
        self.lock = threading.Lock()

    def make(self, bind):
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.id,
                        protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=self.plan["ca"], certfile=self.spec["cert"], keyfile=self.spec["key"],
                  tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if self.plan.get("server_name"):
            # Dialled by address; the certificate names the server differently.
            c.tls_insecure_set(True)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        echo = self.spec.get("echo", False)

        def on_connect(client, userdata, flags, rc, props=None):
            client.subscribe("commands/%s/#" % self.id, qos=1)
            if echo:
                client.subscribe("telemetry/%s/#" % self.id, qos=0)
        c.on_connect = on_connect
        c.connect_async(self.plan["host"], self.plan["port"], keepalive=30, bind_address=bind)
        c.loop_start()
        return c

    def start(self):
        with self.lock:
            self.client = self.make(self.bind)
        threading.Thread(target=self.run, daemon=True).start()

    def reconnect_from(self, bind):
        with self.lock:
            old = self.client
            self.client = None
        try:
            old.disconnect()
            old.loop_stop()
        except Exception:
            pass
        with self.lock:
            self.client = self.make(bind)

    def run(self):
        seq = 0
        while not self.stop:
            period = self.plan["period"] / self.rate
            time.sleep(period * random.uniform(0.8, 1.2))
            if self.silent:
                continue
            seq += 1
            body = json.dumps({"seq": seq, "t": now_ms(), "temp": round(random.uniform(20, 25), 2),
                               "pad": "x" * max(0, self.payload + random.randint(-10, 10) - 60)})
            with self.lock:
                c = self.client
            if c is not None and c.is_connected():
                c.publish("telemetry/%s/state" % self.id, body, qos=0)


def attack(plan, devices, a):
    d = devices[a["device"]]
    op = a["op"]
    say("ONSET %s %s %d" % (op, d.id, now_ms()))
    if op == "spike":
        d.payload = a.get("payload", 2000)
        d.rate = a.get("x", 25)
        time.sleep(a.get("secs", 60))
        d.rate, d.payload = 1.0, 120
    elif op == "probe":
        c = d.client
        for i in range(30):
            c.publish("telemetry/not-%s-%d/state" % (d.id, i), "x", qos=1)
            time.sleep(0.05)
        for f in ["admin/#", "telemetry/+/secrets", "$SYS/#"]:
            c.subscribe(f, qos=0)
    elif op == "scan":
        c = d.client
        for f in ["#", "+/#", "+/+", "+/+/+", "telemetry/#", "telemetry/+/state", "telemetry/+/+",
                  "commands/#", "commands/+/+", "+/%s/#" % d.id, "config/#", "ota/+", "+/state",
                  "site/+/+/#", "plant/#"]:
            c.subscribe(f, qos=0)
            time.sleep(0.05)
    elif op == "flap":
        for _ in range(a.get("times", 9)):
            d.reconnect_from(d.bind)
            time.sleep(a.get("every", 1.5))
    elif op == "silence":
        d.silent = True
    elif op == "clone":
        twin = Device(plan, dict(d.spec, bind=a["bind2"]))
        twin.client = twin.make(a["bind2"])
        time.sleep(a.get("secs", 30))
        twin.client.disconnect()
        twin.client.loop_stop()
    elif op == "new_source":
        d.bind = a["bind2"]
        d.reconnect_from(a["bind2"])


def main():
    plan = json.load(sys.stdin)
    devices = [Device(plan, s) for s in plan["devices"]]
    for d in devices:
        d.start()
        time.sleep(0.05)
    say("READY %d" % now_ms())
    start = time.time()
    for a in sorted(plan.get("attacks", []), key=lambda a: a["at"]):
        delay = start + a["at"] - time.time()
        if delay > 0:
            time.sleep(delay)
        threading.Thread(target=attack, args=(plan, devices, a), daemon=True).start()
    end = start + plan["duration"]
    while time.time() < end:
        time.sleep(0.2)
    for d in devices:
        d.stop = True
    say("DONE %d" % now_ms())


if __name__ == "__main__":
    main()
