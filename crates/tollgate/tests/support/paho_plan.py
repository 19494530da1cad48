#!/usr/bin/env python3
"""Run a plan of MQTT steps with paho-mqtt over mTLS and print the results as JSON.

The plan (JSON on stdin) is {"host", "port", "ca", "cert", "key", "steps": [...]}; each step is
an object with "op": connect | subscribe | unsubscribe | publish | publish_until_ok |
publish_repeat | publish_many | expect | sleep | wait_file | wait_disconnect | disconnect | drop
(close the socket without DISCONNECT). Results are one JSON object per step, in order, on stdout
at the end; with "progress": true each result is also written to stderr as it completes
("PAHO-STEP {"step": i, "result": ...}"), so a test can wait for a step (a SUBACK, say) as a
readiness signal, and "wait_file" lets the test tell the client when to go on.
Used by the Rust integration tests so that a real, independent MQTT client drives Tollgate.
"""
import json
import os
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def rc_value(rc):
    try:
        return int(rc.value)
    except AttributeError:
        try:
            return int(rc)
        except Exception:
            return str(rc)


class Runner:
    def __init__(self, plan):
        self.plan = plan
        self.cond = threading.Condition()
        self.connack = None
        self.disconnect = None
        self.subacks = {}
        self.pubacks = {}
        self.pub_reasons = {}
        self.pub_times = {}
        self.messages = []
        self.client = None

    def make_client(self, step):
        version = mqtt.MQTTv5 if step.get("version", 5) == 5 else mqtt.MQTTv311
        kwargs = dict(callback_api_version=CallbackAPIVersion.VERSION2,
                      client_id=step.get("client_id", ""), protocol=version)
        if version == mqtt.MQTTv311:
            kwargs["clean_session"] = step.get("clean", True)
        c = mqtt.Client(**kwargs)
        c.tls_set(ca_certs=self.plan["ca"], certfile=step.get("cert", self.plan["cert"]),
                  keyfile=step.get("key", self.plan["key"]), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self.on_connect
        c.on_disconnect = self.on_disconnect
        c.on_subscribe = self.on_subscribe
        c.on_publish = self.on_publish
        c.on_message = self.on_message
        if "will" in step:
            w = step["will"]
            props = None
            if version == mqtt.MQTTv5 and "delay" in w:
                props = Properties(PacketTypes.WILLMESSAGE)
                props.WillDelayInterval = w["delay"]
            c.will_set(w["topic"], w.get("payload", ""), qos=w.get("qos", 0), retain=w.get("retain", False), properties=props)
        self.version = version
        return c

    def on_connect(self, c, u, flags, rc, props):
        with self.cond:
            self.connack = {"rc": rc_value(rc), "session_present": bool(flags.session_present)}
            if props is not None and hasattr(props, "AssignedClientIdentifier"):
                self.connack["assigned"] = props.AssignedClientIdentifier
            if props is not None and hasattr(props, "ServerKeepAlive"):
                self.connack["server_keep_alive"] = props.ServerKeepAlive
            if props is not None and hasattr(props, "ReceiveMaximum"):
                self.connack["receive_maximum"] = props.ReceiveMaximum
            if props is not None and hasattr(props, "MaximumPacketSize"):
                self.connack["maximum_packet_size"] = props.MaximumPacketSize
            self.cond.notify_all()

    def on_disconnect(self, c, u, flags, rc, props):
        with self.cond:
            self.disconnect = {"rc": rc_value(rc), "at": time.time()}
            self.cond.notify_all()

    def on_subscribe(self, c, u, mid, rcs, props):
        with self.cond:
            self.subacks[mid] = [rc_value(r) for r in rcs]
            self.cond.notify_all()

    def on_publish(self, c, u, mid, rc, props):
        with self.cond:
            self.pubacks[mid] = rc_value(rc)
            self.pub_times[mid] = time.time()
            if props is not None and hasattr(props, "ReasonString"):
                self.pub_reasons[mid] = props.ReasonString
            self.cond.notify_all()

    def on_message(self, c, u, m):
        with self.cond:
            entry = {"topic": m.topic, "payload": m.payload.decode("utf-8", "replace"),
                     "qos": m.qos, "retain": bool(m.retain), "at": time.time()}
            props = getattr(m, "properties", None)
            if props is not None:
                if hasattr(props, "UserProperty"):
                    entry["user_properties"] = [list(p) for p in props.UserProperty]
                if hasattr(props, "ResponseTopic"):
                    entry["response_topic"] = props.ResponseTopic
                if hasattr(props, "CorrelationData"):
                    entry["correlation_data"] = props.CorrelationData.decode()
                if hasattr(props, "MessageExpiryInterval"):
                    entry["message_expiry"] = props.MessageExpiryInterval
                if hasattr(props, "SubscriptionIdentifier"):
                    entry["subscription_ids"] = props.SubscriptionIdentifier
                # paho does not resolve server topic aliases: "topic" is what came over the
                # wire (empty for an alias alone); the test resolves it.
                if hasattr(props, "TopicAlias"):
                    entry["topic_alias"] = props.TopicAlias
            self.messages.append(entry)
            self.cond.notify_all()

    def wait(self, pred, timeout):
        end = time.time() + timeout
        with self.cond:
            while not pred():
                left = end - time.time()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def publish_props(self, s):
        props = None
        if self.version == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            for k, v in s.get("user_properties", []):
                props.UserProperty = (k, v)
            if "response_topic" in s:
                props.ResponseTopic = s["response_topic"]
            if "correlation_data" in s:
                props.CorrelationData = s["correlation_data"].encode()
            if "message_expiry" in s:
                props.MessageExpiryInterval = s["message_expiry"]
            if "topic_alias" in s:
                props.TopicAlias = s["topic_alias"]
        return props

    def publish_acked(self, topic, payload, qos, retain, props, t):
        """Publish; for QoS > 0 wait for the acknowledgement. Returns the step result."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos == 0:
            return {"at": time.time()}
        self.wait(lambda: info.mid in self.pubacks, t)
        out = {"rc": self.pubacks.get(info.mid), "at": self.pub_times.get(info.mid)}
        if info.mid in self.pub_reasons:
            out["reason"] = self.pub_reasons[info.mid]
        return out

    def step(self, s):
        op = s["op"]
        t = s.get("timeout", 5)
        if op == "connect":
            self.connack = None
            self.disconnect = None
            self.client = self.make_client(s)
            props = None
            kwargs = {}
            if self.version == mqtt.MQTTv5:
                props = Properties(PacketTypes.CONNECT)
                if "session_expiry" in s:
                    props.SessionExpiryInterval = s["session_expiry"]
                if "maximum_packet_size" in s:
                    props.MaximumPacketSize = s["maximum_packet_size"]
                if "receive_maximum" in s:
                    props.ReceiveMaximum = s["receive_maximum"]
                if "topic_alias_maximum" in s:
                    props.TopicAliasMaximum = s["topic_alias_maximum"]
                kwargs["clean_start"] = s.get("clean", True)
                kwargs["properties"] = props
            try:
                self.client.connect(self.plan["host"], self.plan["port"], keepalive=s.get("keepalive", 30), **kwargs)
            except Exception as e:
                return {"error": type(e).__name__ + ": " + str(e)}
            self.client.loop_start()
            ok = self.wait(lambda: self.connack is not None or self.disconnect is not None, t)
            if self.connack is not None:
                return self.connack
            return {"error": "no CONNACK" if not ok else "disconnected", "disconnect": self.disconnect}
        if op == "subscribe":
            opts = mqtt.SubscribeOptions(qos=s.get("qos", 0), noLocal=s.get("no_local", False)) if self.version == mqtt.MQTTv5 else s.get("qos", 0)
            props = None
            if self.version == mqtt.MQTTv5 and "sub_id" in s:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = s["sub_id"]
            topics = [(f, opts) for f in s["filters"]]
            rc, mid = self.client.subscribe(topics, properties=props) if props else self.client.subscribe(topics)
            self.wait(lambda: mid in self.subacks, t)
            return {"codes": self.subacks.get(mid)}
        if op == "unsubscribe":
            self.client.unsubscribe(s["filters"])
            time.sleep(0.2)
            return {}
        if op == "publish":
            payload = "x" * s["payload_size"] if "payload_size" in s else s.get("payload", "")
            out = self.publish_acked(s["topic"], payload, s.get("qos", 0), s.get("retain", False),
                                     self.publish_props(s), t)
            return out if s.get("qos", 0) > 0 else {}
        if op == "publish_until_ok":
            # Publish (QoS 1) every "interval" seconds until acknowledged with success (0), for
            # at most "timeout" seconds: measures when a permission takes effect.
            end = time.time() + t
            attempts = 0
            codes = []
            while True:
                attempts += 1
                r = self.publish_acked(s["topic"], s.get("payload", ""), 1, False, None, t)
                codes.append(r.get("rc"))
                if r.get("rc") == 0 or time.time() >= end:
                    r["attempts"] = attempts
                    r["codes"] = codes
                    return r
                time.sleep(s.get("interval", 0.05))
        if op == "publish_repeat":
            # Publish PAYLOAD-1, PAYLOAD-2, ... every "interval" seconds until "until_file"
            # exists (at most "timeout" seconds).
            end = time.time() + t
            n = 0
            while time.time() < end and not os.path.exists(s["until_file"]):
                n += 1
                self.publish_acked(s["topic"], "%s-%d" % (s.get("payload", "m"), n), s.get("qos", 1), False, None, t)
                time.sleep(s.get("interval", 0.05))
            return {"sent": n, "stopped": os.path.exists(s["until_file"])}
        if op == "publish_many":
            # "count" QoS 0 publishes as fast as the client can send them.
            for i in range(s["count"]):
                info = self.client.publish(s["topic"], s.get("payload", str(i)), qos=0)
                if info.rc == mqtt.MQTT_ERR_NO_CONN:
                    return {"error": "not connected", "sent": i}
            return {"sent": s["count"]}
        if op == "wait_file":
            end = time.time() + t
            while not os.path.exists(s["path"]):
                if time.time() >= end:
                    return {"ok": False}
                time.sleep(0.01)
            return {"ok": True, "at": time.time()}
        if op == "expect":
            n = s.get("count", 1)
            self.wait(lambda: len(self.messages) >= n, t)
            got = list(self.messages)
            self.messages.clear()
            return {"messages": got}
        if op == "sleep":
            time.sleep(s["seconds"])
            return {}
        if op == "wait_disconnect":
            self.wait(lambda: self.disconnect is not None, t)
            return {"disconnect": self.disconnect}
        if op == "check_connected":
            # Still connected, not disconnected by the server since the last connect?
            return {"connected": self.disconnect is None and self.client.is_connected(),
                    "disconnect": self.disconnect}
        if op == "disconnect":
            self.client.disconnect()
            time.sleep(0.1)
            self.client.loop_stop()
            return {}
        if op == "drop":
            # Close the socket without DISCONNECT, so the server publishes the will.
            self.client.loop_stop()
            sock = self.client.socket()
            if sock is not None:
                sock.close()
            return {}
        return {"error": "unknown op " + op}


def main():
    plan = json.load(sys.stdin)
    r = Runner(plan)
    out = []
    for i, s in enumerate(plan["steps"]):
        res = r.step(s)
        out.append(res)
        if plan.get("progress"):
            sys.stderr.write("PAHO-STEP " + json.dumps({"step": i, "result": res}) + "\n")
            sys.stderr.flush()
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
