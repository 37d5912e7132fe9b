#!/usr/bin/env python3
"""Backlog benchmark (issue 9): N readings buffered during a cloud outage, then the drain
when the cloud returns while live traffic keeps flowing; startup time with an empty outbox
and with the backlog.

  1. brume starts with the cloud broker down: startup (empty) = spawn -> /readyz 200.
  2. firmware-sim loadgen publishes N readings (seq 1..N) into the field broker as fast as it
     can; brume commits them to the outbox (the cloud is away).
  3. brume is stopped (SIGTERM) and started again: startup (backlog) = spawn -> /readyz 200,
     and spawn -> field connection up.
  4. The cloud broker and its counter are up before that restart, so the drain starts with it; a
     live load of L readings at R readings/s starts at the same moment (seq N+1..N+L); drain
     rate = N / (restart -> outbox back to live size), with the cloud counter checking that all
     N+L readings arrive, none lost, no unexpected duplicates.

Usage: bench/backlog.sh [--readings N] [--live-rate R] [--batch B]
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import free_port, wait_port, proc_stat  # noqa: E402

BIN = None


def start_broker(d, port):
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n"
                "max_queued_messages 20000000\nmax_queued_bytes 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n")
    p = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "a"))
    wait_port(port)
    return p


def api(port, path, timeout=2):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


def wait_ready(port, t0, timeout=60):
    while time.monotonic() - t0 < timeout:
        try:
            if api(port, "/readyz", 0.5)[0] == 200:
                return time.monotonic() - t0
        except Exception:
            pass
        time.sleep(0.005)
    raise RuntimeError("brume did not become ready")


def buffered(port):
    return json.loads(api(port, "/api/v1/status", 10)[1])["buffer"]["readings"]


def main():
    global BIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=10_000_000)
    ap.add_argument("--live-rate", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=5000, help="uplink batch_max_readings during the drain")
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    BIN = a.bin
    tmp = tempfile.mkdtemp(prefix="brume-backlog-")
    n = a.readings
    fport, cport, aport = free_port(), free_port(), free_port()
    field = start_broker(os.path.join(tmp, "field"), fport)
    cloud = None
    data = os.path.join(tmp, "var")
    cfg = os.path.join(tmp, "gateway.toml")
    with open(cfg, "w") as f:
        f.write(f"""[gateway]
id = "gw-backlog"
data_dir = "{data}"
[buffer]
max_bytes = "2GiB"
[api]
listen = "127.0.0.1:{aport}"
[uplink.cloud]
kind = "mqtt"
url = "mqtt://127.0.0.1:{cport}"
batch_max_readings = {a.batch}
batch_max_delay = "100ms"
max_inflight = 16
[[source]]
name = "load"
kind = "mqtt"
url = "mqtt://127.0.0.1:{fport}"
subscribe = ["load/+/+"]
payload = {{ json = {{ value = "/v", time = "/ts" }} }}
""")
    procs = []
    res = {"readings": n, "live_rate": a.live_rate, "batch_max_readings": a.batch}

    def spawn_brume(tag):
        log = open(os.path.join(tmp, f"brume-{tag}.log"), "w")
        t0 = time.monotonic()
        g = subprocess.Popen([f"{BIN}/brume", "run", "--config", cfg], stderr=log)
        procs.append(g)
        return g, t0, log.name

    try:
        g, t0, _ = spawn_brume("fill")
        res["startup_empty_s"] = round(wait_ready(aport, t0), 4)
        # Fill the outbox.
        t_fill = time.monotonic()
        gen = subprocess.run([f"{BIN}/firmware-sim", "loadgen", "--broker", f"mqtt://127.0.0.1:{fport}", "--count", str(n),
                              "--start", "1", "--devices", "10"], capture_output=True, text=True, check=True)
        while buffered(aport) < n:
            time.sleep(0.5)
        res["fill_rate"] = round(n / (time.monotonic() - t_fill))
        res["outbox_bytes"] = json.loads(api(aport, "/api/v1/status", 10)[1])["buffer"]["bytes"]
        res["outbox_file_bytes"] = os.path.getsize(os.path.join(data, "outbox.db"))
        t_stop = time.monotonic()
        g.send_signal(signal.SIGTERM); g.wait(timeout=120)
        res["shutdown_s"] = round(time.monotonic() - t_stop, 3)
        # The cloud and its counter come first (a subscriber that connected after the first
        # batches would miss them), then brume restarts with the backlog and drains at once.
        live = max(a.live_rate * 20, 1000)
        ready = os.path.join(tmp, "cloud.ready")
        cloud = start_broker(os.path.join(tmp, "cloud"), cport)
        counter = subprocess.Popen([f"{BIN}/firmware-sim", "cloud", "--broker", f"mqtt://127.0.0.1:{cport}", "--expect", str(n + live),
                                    "--client-id", "backlog-counter", "--ready-file", ready, "--timeout", "900"],
                                   stdout=subprocess.PIPE, text=True)
        while not os.path.exists(ready):
            time.sleep(0.01)
        g, t0, logname = spawn_brume("drain")
        res["startup_backlog_s"] = round(wait_ready(aport, t0), 4)
        for _ in range(2000):
            if open(logname).read().count('msg="MQTT connected"') >= 2:
                break
            time.sleep(0.005)
        res["startup_backlog_to_connected_s"] = round(time.monotonic() - t0, 4)
        t_up = t0
        idle = proc_stat(g.pid)
        lg = subprocess.Popen([f"{BIN}/firmware-sim", "loadgen", "--broker", f"mqtt://127.0.0.1:{fport}", "--count", str(live),
                               "--start", str(n + 1), "--devices", "10", "--rate", str(a.live_rate)],
                              stdout=subprocess.PIPE, text=True)
        # Drained: the outbox is back to what live traffic keeps in it (one batch delay's worth).
        samples = []
        while True:
            b = buffered(aport)
            samples.append((time.monotonic() - t_up, b))
            if b <= max(2 * a.live_rate, a.batch):
                break
            if time.monotonic() - t_up > 900:
                raise RuntimeError(f"no drain after 900 s: {b} buffered")
            time.sleep(0.25)
        drain_s = time.monotonic() - t_up
        busy = proc_stat(g.pid)
        res["drain_s"] = round(drain_s, 2)
        res["drain_rate"] = round(n / drain_s)
        res["drain_cpu_s_per_million"] = round((busy["cpu"] - idle["cpu"]) / n * 1e6, 2)
        res["rss_peak_kb"] = busy["hwm_kb"]
        lg.wait(timeout=120)
        out, _ = counter.communicate(timeout=900)
        r = json.loads(out.strip().splitlines()[-1])
        res["cloud"] = {k: r[k] for k in ("readings", "unique", "duplicates", "missing", "batches", "duplicate_batches", "hist_batches")}
        res["cloud"]["latency_ms"] = r.get("latency_ms")
        g.send_signal(signal.SIGTERM); g.wait(timeout=60)
        res["ok"] = r["unique"] == n + live and r["missing"] == 0
        print(json.dumps(res, indent=1))
        tgt = lambda ok: "✔" if ok else "✘"
        print(f"\nbacklog {n:,} readings: drain {res['drain_rate']:,} readings/s with {a.live_rate}/s live "
              f"(target ≥ 100,000 {tgt(res['drain_rate'] >= 100_000)}); startup empty {res['startup_empty_s'] * 1000:.0f} ms "
              f"(≤ 200 {tgt(res['startup_empty_s'] <= 0.2)}), with backlog {res['startup_backlog_s'] * 1000:.0f} ms "
              f"(≤ 1000 {tgt(res['startup_backlog_s'] <= 1.0)}); lost {r['missing']}, duplicates {r['duplicates']}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in (field, cloud):
            if p:
                p.terminate(); p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
