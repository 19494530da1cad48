#!/usr/bin/env python3
"""Run a plan of MQTT steps with paho-mqtt over mTLS and print the results as JSON.

The plan (JSON on stdin) is {"host", "port", "ca", "cert", "key", "steps": [...]}; each step is
an object with "op": connect | subscribe | unsubscribe | publish | expect | sleep | disconnect |
drop (close the socket without DISCONNECT). Results are one JSON object per step, in order.
Used by the Rust integration tests so that a real, independent MQTT client drives Tollgate.
"""
import json
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
            self.cond.notify_all()

    def on_message(self, c, u, m):
        with self.cond:
            entry = {"topic": m.topic, "payload": m.payload.decode("utf-8", "replace"),
                     "qos": m.qos, "retain": bool(m.retain)}
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
            payload = "x" * s["payload_size"] if "payload_size" in s else s.get("payload", "")
            info = self.client.publish(s["topic"], payload, qos=s.get("qos", 0), retain=s.get("retain", False), properties=props)
            if s.get("qos", 0) > 0:
                self.wait(lambda: info.mid in self.pubacks, t)
                return {"rc": self.pubacks.get(info.mid)}
            return {}
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
    for s in plan["steps"]:
        out.append(r.step(s))
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
