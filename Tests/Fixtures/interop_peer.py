#!/usr/bin/env python3
"""Independent northbound peers for Brume's interop tests (paho-mqtt, pysparkplug).

  record   subscribe and write one JSON line per message to --out (appending), until killed.
           --sparkplug: decode Sparkplug B with pysparkplug, as a host application would:
           aliases resolved from the births it saw, seq and bdSeq reported as they came.
           --shared: the subscription is an MQTT 5 shared subscription ($share/...).
  publish  publish JSON lines {"topic":..., "payload": text} from --input (QoS 1), then exit.
  ncmd-rebirth / dcmd   Sparkplug commands as a host sends them (pysparkplug encodes).
  send     one raw message (text payload).
  http-record  an HTTP endpoint taking POSTs (gzip or not) and answering 204: one JSON line per
           request to --out with the path, Content-Type, X-Brume-Batch and the body.
"""
import argparse
import base64
import json
import sys
import time

import paho.mqtt.client as mqtt


def client(args, protocol=mqtt.MQTTv311):
    c = mqtt.Client(client_id=args.client_id or "", protocol=protocol)
    c.connect("127.0.0.1", args.port, keepalive=30)
    return c


def record(args):
    births = {}
    out = open(args.out, "a", buffering=1)
    if args.sparkplug:
        import pysparkplug as spb

    def on_connect(c, userdata, flags, rc, properties=None):
        c.subscribe(args.topic, qos=args.qos)

    def on_subscribe(c, userdata, mid, granted, properties=None):
        if args.ready:
            open(args.ready, "w").write("ok\n")

    def on_message(c, userdata, msg):
        line = {"topic": msg.topic, "retain": bool(msg.retain), "at": int(time.time() * 1000)}
        props = getattr(msg, "properties", None)
        if props is not None and getattr(props, "UserProperty", None):
            line["user"] = dict(props.UserProperty)
        if args.sparkplug:
            parts = msg.topic.split("/")
            kind = parts[2]
            line["type"] = kind
            node = parts[3]
            device = parts[4] if len(parts) > 4 else None
            line["device"] = device
            key = (node, device)
            try:
                if kind == "NBIRTH":
                    p = spb.NBirth.decode(msg.payload)
                    for k in [k for k in births if k[0] == node]:  # a new node session
                        del births[k]
                    births[key] = p
                elif kind == "DBIRTH":
                    p = spb.DBirth.decode(msg.payload)
                    births[key] = p
                elif kind == "DDATA":
                    p = spb.DData.decode(msg.payload, birth=births.get(key))
                elif kind == "NDEATH":
                    p = spb.NDeath.decode(msg.payload)
                    line["bdSeq"] = p.bd_seq_metric.value
                    out.write(json.dumps(line) + "\n")
                    return
                elif kind == "DCMD":
                    p = spb.DCmd.decode(msg.payload)
                elif kind == "NCMD":
                    p = spb.NCmd.decode(msg.payload)
                else:
                    return
            except Exception as e:  # an undecodable payload is a finding, not a crash
                line["error"] = repr(e)
                out.write(json.dumps(line) + "\n")
                return
            if hasattr(p, "seq"):
                line["seq"] = p.seq
            line["metrics"] = [{"name": m.name, "alias": m.alias, "value": m.value, "ts": m.timestamp,
                                "datatype": int(m.datatype), "hist": m.is_historical} for m in p.metrics]
        else:
            try:
                line["payload"] = msg.payload.decode("utf-8")
            except UnicodeDecodeError:
                line["payload_b64"] = base64.b64encode(msg.payload).decode()
        out.write(json.dumps(line) + "\n")

    # 3.1.1 recorders keep their session (QoS 1): what is published while the broker restarts
    # and they reconnect is queued for them, as for a real backend.
    if args.v5:
        c = mqtt.Client(client_id=args.client_id or "", protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(client_id=args.client_id or "", protocol=mqtt.MQTTv311, clean_session=False)
    c.reconnect_delay_set(min_delay=1, max_delay=2)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect("127.0.0.1", args.port, keepalive=30)
    c.loop_forever(retry_first_connection=True)


def publish(args):
    c = client(args)
    c.loop_start()
    infos = []
    for line in open(args.input):
        m = json.loads(line)
        infos.append(c.publish(m["topic"], m["payload"], qos=1))
    for i in infos:
        i.wait_for_publish(timeout=30)
    c.loop_stop()
    c.disconnect()


def sparkplug_command(args):
    import pysparkplug as spb
    now = spb.get_current_timestamp()
    if args.cmd == "ncmd-rebirth":
        topic = f"spBv1.0/{args.group}/NCMD/{args.node}"
        payload = spb.NCmd(timestamp=now, metrics=(spb.Metric(timestamp=now, name="Node Control/Rebirth",
                                                              datatype=spb.DataType.BOOLEAN, value=True),)).encode(include_dtypes=True)
    else:
        topic = f"spBv1.0/{args.group}/DCMD/{args.node}/{args.device}"
        value = float(args.value)
        payload = spb.DCmd(timestamp=now, metrics=(spb.Metric(timestamp=now, name=args.metric,
                                                              datatype=spb.DataType.DOUBLE, value=value),)).encode(include_dtypes=True)
    c = client(args)
    c.loop_start()
    c.publish(topic, payload, qos=0).wait_for_publish(timeout=10)
    time.sleep(0.2)
    c.loop_stop()
    c.disconnect()


def send(args):
    c = client(args)
    c.loop_start()
    c.publish(args.topic, args.payload, qos=1).wait_for_publish(timeout=10)
    c.loop_stop()
    c.disconnect()


def http_record(args):
    import gzip
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    out = open(args.out, "a", buffering=1)

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            out.write(json.dumps({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                  "batch": self.headers.get("X-Brume-Batch"), "payload": body.decode("utf-8")}) + "\n")
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), H)
    if args.ready:
        open(args.ready, "w").write("ok\n")
    server.serve_forever()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["record", "publish", "ncmd-rebirth", "dcmd", "send", "http-record"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", default="#")
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--ready")
    ap.add_argument("--input")
    ap.add_argument("--payload", default="")
    ap.add_argument("--client-id")
    ap.add_argument("--sparkplug", action="store_true")
    ap.add_argument("--v5", action="store_true")
    ap.add_argument("--group")
    ap.add_argument("--node")
    ap.add_argument("--device")
    ap.add_argument("--metric")
    ap.add_argument("--value")
    args = ap.parse_args()
    if args.cmd == "record":
        record(args)
    elif args.cmd == "publish":
        publish(args)
    elif args.cmd == "http-record":
        http_record(args)
    elif args.cmd in ("ncmd-rebirth", "dcmd"):
        sparkplug_command(args)
    else:
        send(args)


if __name__ == "__main__":
    sys.exit(main())
