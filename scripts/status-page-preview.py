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

Screenshots (full page, after the page has polled and streamed for --wait seconds):

    scripts/status-page-preview.py --screenshot /tmp/status.png               # desktop, 1280 px
    scripts/status-page-preview.py --screenshot /tmp/phone.png --width 390 --mobile [--dark]

This drives headless Chromium over the DevTools protocol (apt-get install -y chromium).
Plain `chromium --headless --screenshot=...` shoots right after the load event, usually before
the first /api/v1/status answer has rendered, and `--virtual-time-budget` never finishes while
the page holds its EventSource open, hence this mode.
"""

import argparse
import base64
import json
import math
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
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
            while True:
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


class DevTools:
    """Just enough of a WebSocket client (RFC 6455) to speak the Chrome DevTools protocol."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.rf = self.sock.makefile("rb")
        status = self.rf.readline()
        if b" 101 " not in status:
            raise RuntimeError(f"devtools websocket refused: {status!r}")
        while self.rf.readline() not in (b"\r\n", b""):
            pass
        self.next_id = 0

    def _send(self, text):
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self):
        msg = b""
        while True:
            b0, b1 = self.rf.read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self.rf.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.rf.read(8))[0]
            mask = self.rf.read(4) if b1 & 0x80 else None
            data = self.rf.read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if b0 & 0x0F == 8:
                raise EOFError("devtools closed the connection")
            if b0 & 0x0F in (0, 1, 2):
                msg += data
                if b0 & 0x80:
                    return msg.decode()

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            m = json.loads(self._recv())
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})


def screenshot(url, out, width, mobile, dark, wait, segment):
    chrome = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
    if not chrome:
        raise SystemExit("no chromium found: apt-get install -y chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="brume-shot-")
    proc = subprocess.Popen([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ws_url = None
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as r:
                    ws_url = next((t["webSocketDebuggerUrl"] for t in json.load(r) if t.get("type") == "page"), None)
                if ws_url:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if not ws_url:
            raise SystemExit("chromium did not start its DevTools endpoint")
        dt = DevTools(ws_url)
        dt.call("Emulation.setDeviceMetricsOverride", width=width, height=900,
                deviceScaleFactor=2 if mobile else 1, mobile=mobile)
        if dark:
            dt.call("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "dark"}])
        dt.call("Page.navigate", url=url)
        time.sleep(wait)
        height = int(dt.call("Page.getLayoutMetrics")["cssContentSize"]["height"] + 0.999)
        step = segment or height
        files = []
        for i, y in enumerate(range(0, height, step)):
            shot = dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                           clip={"x": 0, "y": y, "width": width, "height": min(step, height - y), "scale": 1})
            name = out if not segment else f"{os.path.splitext(out)[0]}-{i}.png"
            with open(name, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            files.append(name)
        print(f"{width}x{height} css px -> {' '.join(files)}")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("port", nargs="?", type=int, default=8099)
    ap.add_argument("--mode", choices=["full", "sparse", "down", "flaky"], default="full")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--screenshot", metavar="OUT.png", help="serve, take a full-page screenshot, exit")
    ap.add_argument("--width", type=int, default=1280, help="screenshot viewport width in CSS px")
    ap.add_argument("--mobile", action="store_true", help="screenshot as a phone (touch, 2x pixels)")
    ap.add_argument("--dark", action="store_true", help="screenshot with prefers-color-scheme: dark")
    ap.add_argument("--wait", type=float, default=3.5, help="seconds between navigation and screenshot")
    ap.add_argument("--segment", type=int, default=0, metavar="PX",
                    help="split the screenshot into OUT-0.png, OUT-1.png, ... of PX CSS px each")
    ap.add_argument("--url", help="screenshot this page (e.g. a running gateway: http://127.0.0.1:9669/) instead of the mock")
    a = ap.parse_args()
    if a.url:
        if not a.screenshot:
            raise SystemExit("--url needs --screenshot OUT.png")
        screenshot(a.url, a.screenshot, a.width, a.mobile, a.dark, a.wait, a.segment)
        return
    Handler.mode = a.mode
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    url = f"http://{a.host}:{a.port}/"
    if a.screenshot:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        screenshot(url, a.screenshot, a.width, a.mobile, a.dark, a.wait, a.segment)
        srv.shutdown()
        return
    print(f"status page preview ({a.mode}) on {url}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
