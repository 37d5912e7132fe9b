#!/usr/bin/env python3
"""Mock of the gateway's status API, to develop and screenshot the live status page.

    scripts/status-page-preview.py [PORT] [--mode full|sparse|down|flaky]

Serves (python3 stdlib only):
  /                 Sources/BrumeRuntime/API/status.html (re-read on every request)
  /api/v1/status    a realistic status JSON whose counters and values change over time
  /api/v1/stream    server-sent events, one JSON reading every 300 ms

Modes: full (default); sparse (most fields null/absent, plus hostile names, to check graceful
rendering and escaping);
down (status answers 503, to see the "connection lost" banner); flaky (503 every other 10 s).

Screenshot:
  chromium --headless --no-sandbox --virtual-time-budget=3000 \
      --screenshot=/tmp/status.png --window-size=1280,1800 http://127.0.0.1:8099/
"""

import argparse
import json
import math
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, "..", "Sources", "BrumeRuntime", "API", "status.html")

T0 = time.time()
LOCK = threading.Lock()
rng = random.Random(7)


def now_ms():
    return int(time.time() * 1000)


def elapsed():
    return time.time() - T0


START_MS = now_ms() - (3 * 3600 + 17 * 60 + 4) * 1000  # "started 3h 17m ago"

# Devices: source -> device -> {metric: (base, amplitude, decimals|kind)}
DEVICES = {
    "field": {
        "boiler": {"temperature": (71.5, 2.0, 1), "pressure": (2.1, 0.15, 2), "burner_on": ("bool",), "mode": ("str", ["heat", "eco"])},
        "greenhouse-1": {"temperature": (24.2, 1.5, 1), "humidity": (61.0, 5.0, 1), "co2": (620, 80, 0)},
        "pump-2": {"flow_lpm": (12.4, 1.0, 2)},
    },
    "meters-bus": {
        "meter1": {"voltage": (230.1, 2.0, 1), "current": (4.2, 1.2, 2), "power_w": (960, 250, 0), "energy_kwh": ("counter", 18234.2)},
        "meter2": {"voltage": (229.4, 2.0, 1), "current": (1.1, 0.4, 2), "power_w": (250, 80, 0)},
        "meter5": {},
    },
    "gps": {
        "gps1": {"lat": (48.85661, 0.00002, 6), "lon": (2.35222, 0.00002, 6), "sats": (9, 2, 0), "fix": ("bool_true",)},
    },
}
STALE = {"pump-2": 75_000}  # this device last reported 75 s before the page loaded... and never again
OFFLINE = {"meter5"}
SOURCE_OF = {d: s for s, devs in DEVICES.items() for d in devs}

latest = {}  # (dev, metric) -> (value, t_ms)


def gen_value(dev, metric):
    spec = DEVICES[SOURCE_OF[dev]][dev][metric]
    x = elapsed()
    if spec[0] == "bool":
        return (int(x / 20) % 3) != 0
    if spec[0] == "bool_true":
        return True
    if spec[0] == "str":
        return spec[1][int(x / 45) % len(spec[1])]
    if spec[0] == "counter":
        return round(spec[1] + x * 0.00027, 3)
    base, amp, dec = spec
    v = base + amp * math.sin(x / 17.0 + len(metric)) + rng.uniform(-amp, amp) * 0.15
    return int(round(v)) if dec == 0 else round(v, dec)


def seed():
    t = now_ms()
    for dev, src in SOURCE_OF.items():
        for metric in DEVICES[src][dev]:
            age = STALE.get(dev, rng.randint(200, 4000))
            latest[(dev, metric)] = (gen_value(dev, metric), t - age)


seed()


def emit_reading():
    """Pick a live device metric, give it a new value; returns the SSE payload."""
    with LOCK:
        choices = [k for k in latest if k[0] not in OFFLINE and k[0] not in STALE]
        dev, metric = rng.choice(choices)
        v, t = gen_value(dev, metric), now_ms()
        latest[(dev, metric)] = (v, t)
    return {"dev": dev, "m": metric, "t": t, "v": v}


def device_json(src, dev, n):
    metrics = [
        {"metric": m, "value": latest[(dev, m)][0], "time_ms": latest[(dev, m)][1]}
        for m in DEVICES[src][dev]
    ]
    last = max((m["time_ms"] for m in metrics), default=None)
    state = "offline" if dev in OFFLINE else ("stale" if dev in STALE else "online")
    d = {"name": dev, "state": state, "last_reading_ms": last, "metrics": metrics, "modbus": None}
    x = elapsed()
    if dev == "meter1":
        req = 400 + int(x * 2)
        d["modbus"] = {"unit": 1, "requests": req, "responses": req - 1 - int(x / 300), "timeouts": 1 + int(x / 300),
                       "exceptions": {"2": 1}, "latency_ms_avg": round(8.2 + math.sin(x / 9), 1), "latency_ms_max": 31.0,
                       "consecutive_failures": 0}
    elif dev == "meter2":
        req = 380 + int(x * 2)
        d["modbus"] = {"unit": 2, "requests": req, "responses": req, "timeouts": 0, "exceptions": {},
                       "latency_ms_avg": round(6.9 + math.sin(x / 7) * 0.5, 1), "latency_ms_max": 19.4, "consecutive_failures": 0}
    elif dev == "meter5":
        fails = 20 + int(x / 30)
        d["modbus"] = {"unit": 5, "requests": fails, "responses": 0, "timeouts": fails, "exceptions": {},
                       "latency_ms_avg": None, "latency_ms_max": None, "consecutive_failures": fails,
                       "next_probe_ms": n + 30_000 - int(x * 1000) % 30_000}
    return d


def status_full():
    n, x = now_ms(), elapsed()
    with LOCK:
        field = [device_json("field", d, n) for d in DEVICES["field"]]
        bus = [device_json("meters-bus", d, n) for d in DEVICES["meters-bus"]]
        gps = [device_json("gps", d, n) for d in DEVICES["gps"]]
    buffered = int(1234 + 900 * math.sin(x / 40) ** 2)
    return {
        "now_ms": n,
        "gateway": {
            "id": "gw-demo-01", "version": "0.4.0", "started_ms": START_MS, "pid": 1234,
            "config": {
                "path": "/etc/brume/gateway.toml", "loaded_ms": START_MS, "reloads": 2, "reloads_rejected": 1,
                "last_reload": {"ok": False, "at_ms": n - 15 * 60_000 - int(x * 1000), "message": "rejected: 2 errors",
                                "errors": ['gateway.toml:12:3: unknown key "bad" (did you mean "baud"?)',
                                           "gateway.toml:40:11: rule \"overheat\": unknown metric \"temprature\" (did you mean \"temperature\"?)"]},
            },
        },
        "uplinks": [
            {"name": "cloud", "kind": "mqtt", "state": "connected", "url": "mqtts://iot.example.net:8883",
             "batches_acked": 120 + int(x / 2), "readings_acked": 54000 + int(x * 11), "bytes_sent": 2_800_000 + int(x * 4100),
             "last_ack_ms": n - int((x * 1000) % 2000), "inflight": 1},
            {"name": "site-archive", "kind": "mqtt", "state": "connecting", "url": "mqtt://10.0.4.2:1883",
             "batches_acked": 7, "readings_acked": 3100, "bytes_sent": 161_000, "last_ack_ms": n - 42 * 60_000, "inflight": 0},
        ],
        "buffer": {"readings": buffered, "bytes": buffered * 370, "max_bytes": 268435456,
                   "oldest_ms": n - 2000 - int(7000 * math.sin(x / 40) ** 2), "evicted": {"max_age": 0, "max_bytes": 12}},
        "sources": [
            {"name": "field", "kind": "mqtt", "state": "connected", "messages": 5000 + int(x * 2),
             "readings": 5000 + int(x * 2.6), "errors": {"invalid_json": 3 + int(x / 120), "unknown_topic": 1},
             "last_reading_ms": max(d["last_reading_ms"] or 0 for d in field), "devices": field},
            {"name": "meters-bus", "kind": "modbus", "state": "connected", "messages": 800 + int(x * 4),
             "readings": 3200 + int(x * 10), "errors": {"timeout": 14 + int(x / 30), "exception_2": 1},
             "last_reading_ms": max(d["last_reading_ms"] or 0 for d in bus), "devices": bus},
            {"name": "gps", "kind": "serial", "state": "connected", "messages": 9100 + int(x), "readings": 36400 + int(x * 4),
             "errors": {"bad_checksum": 2}, "last_reading_ms": gps[0]["last_reading_ms"], "devices": gps},
        ],
        "rules": [
            {"name": "boiler-sanity", "in": 1000 + int(x), "out": 990 + int(x), "dropped": 10, "errors": 0},
            {"name": "co2-avg-1m", "in": 2400 + int(x / 3), "out": 40 + int(x / 60), "dropped": 0, "errors": 0},
            {"name": "overheat", "in": 1000 + int(x), "out": 2, "dropped": 0, "errors": 0},
            {"name": "kwh-derive", "in": 800 + int(x), "out": 795 + int(x), "dropped": 0, "errors": 5},
        ],
        "commands": {
            "counts": {"succeeded": 3, "failed": 1, "pending": 1},
            "recent": [
                {"id": "c-17", "actuator": "boiler/valve", "value": "close", "state": "succeeded", "detail": "reply: OK close",
                 "updated_ms": n - 9_000 - int(x * 1000), "origin": "cloud"},
                {"id": "c-18", "actuator": "greenhouse-1/vent", "value": 40, "state": "pending", "detail": "sent, awaiting reply",
                 "updated_ms": n - 2_000, "origin": "rule:overheat"},
                {"id": "c-16", "actuator": "pump-2/speed", "value": 120, "state": "failed",
                 "detail": "value 120 outside declared range 0..100", "updated_ms": n - 600_000, "origin": "cloud"},
                {"id": "c-15", "actuator": "boiler/burner", "value": True, "state": "succeeded", "detail": "reply: OK",
                 "updated_ms": n - 3_600_000, "origin": "cloud"},
            ],
        },
        "recent_errors": [
            {"at_ms": n - 3000 - int((x * 1000) % 20000), "source": "gps", "reason": "bad_checksum",
             "message": "NMEA checksum mismatch: $GPGGA,123519,4807.038,N,01131.000,E*47"},
            {"at_ms": n - 31_000, "source": "meters-bus", "reason": "timeout", "message": "meter5 (unit 5): no response in 500 ms"},
            {"at_ms": n - 95_000, "source": "field", "reason": "invalid_json",
             "message": "brume/field/boiler/state: unexpected '<' at byte 0: \"<html><body>502 Bad Gateway</body></html>\""},
            {"at_ms": n - 400_000, "source": "meters-bus", "reason": "exception_2", "message": "meter1 (unit 1): illegal data address 0x0110"},
        ],
        "process": {"rss_bytes": 20_000_000 + int(x * 1000) % 400_000, "cpu_seconds": 12.5 + x * 0.02},
    }


HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'


def status_sparse():
    """Most fields absent or null: the page must still render."""
    n = now_ms()
    return {
        "now_ms": n,
        "gateway": {"id": None, "version": "0.4.0", "started_ms": None, "config": None},
        "uplinks": [{"name": "cloud", "state": None}],
        "buffer": {"readings": 0, "bytes": None, "max_bytes": None, "oldest_ms": None, "evicted": None},
        "sources": [{"name": "field", "kind": "mqtt", "state": "connecting", "errors": None,
                     "devices": [{"name": "boiler", "state": None, "metrics": None, "modbus": None},
                                 # hostile names from the field must show as text, never as markup
                                 {"name": HOSTILE, "state": "online", "last_reading_ms": n,
                                  "metrics": [{"metric": HOSTILE, "value": HOSTILE, "time_ms": n}], "modbus": None}]}],
        "recent_errors": [{"at_ms": n, "source": HOSTILE, "reason": HOSTILE, "message": HOSTILE}],
        "rules": None, "commands": None, "process": None,
    }


class Handler(BaseHTTPRequestHandler):
    mode = "full"
    stream_seconds = 0.0  # > 0: end each SSE response after this long (the page reconnects)

    def log_message(self, fmt, *args):  # quiet
        pass

    def send(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            with open(PAGE, "rb") as f:
                self.send(200, "text/html; charset=utf-8", f.read())
        elif path == "/api/v1/status":
            down = self.mode == "down" or (self.mode == "flaky" and int(elapsed() / 10) % 2 == 1)
            if down:
                self.send(503, "application/json", b'{"error":"unavailable"}')
                return
            s = status_sparse() if self.mode == "sparse" else status_full()
            self.send(200, "application/json", json.dumps(s).encode())
        elif path == "/api/v1/stream":
            self.stream()
        else:
            self.send(404, "text/plain; charset=utf-8", b"not found\n")

    def stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "keep-alive")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        try:
            self.wfile.write(b"retry: 2000\n\n")
            self.wfile.flush()
            started = time.time()
            while not self.stream_seconds or time.time() - started < self.stream_seconds:
                if self.mode == "down":
                    self.wfile.write(b": keepalive\n\n")
                elif self.mode == "sparse":
                    r = {"dev": HOSTILE, "m": HOSTILE, "t": now_ms(), "v": HOSTILE}
                    self.wfile.write(b"data: " + json.dumps(r).encode() + b"\n\n")
                else:
                    self.wfile.write(b"data: " + json.dumps(emit_reading()).encode() + b"\n\n")
                self.wfile.flush()
                time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("port", nargs="?", type=int, default=8099)
    ap.add_argument("--mode", choices=["full", "sparse", "down", "flaky"], default="full")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--stream-seconds", type=float, default=0.0,
                    help="end each SSE response after this many seconds (0: never); lets "
                         "chromium --virtual-time-budget finish, which waits for open requests")
    a = ap.parse_args()
    Handler.mode = a.mode
    Handler.stream_seconds = a.stream_seconds
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    print(f"status page preview ({a.mode}) on http://{a.host}:{a.port}/", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
