#!/usr/bin/env python3
"""End-to-end benchmark: the ceiling (load generator -> field broker -> plain
subscriber) and Brume (load generator -> field broker -> brume -> cloud broker
-> cloud counter), in the same run, on the same machine. Prints medians and
ratios; the machines are shared and noisy, so compare ratios, not absolutes.

Loads (--loads, alternated within each run, medians per load):
  loadgen  firmware-sim loadgen, QoS1, JSON {"v":SEQ,"ts":MS} on 10 devices (the original)
  pub0     mosquitto_pub -l (the C client) at QoS0: N one-number messages on one topic
  pub1     mosquitto_pub -l at QoS1 (its default 20 in flight)
The ceiling of a load is what a plain subscriber gets from the same broker with the same
publisher (firmware-sim count for loadgen, mosquitto_sub for the C client), in the same run.

Usage: bench/e2e.sh [--readings N] [--runs R] [--soak SECONDS] [--loads loadgen,pub0,pub1]
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

BIN = None

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} not up")

def broker(dirpath, name):
    port = free_port()
    d = os.path.join(dirpath, name); os.makedirs(d)
    conf = os.path.join(d, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n"
                "max_queued_messages 10000000\nmax_queued_bytes 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n")
    p = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
    wait_port(port)
    return p, port

def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    user, sys_ = int(fields[11]) / ticks, int(fields[12]) / ticks
    status = open(f"/proc/{pid}/status").read()
    def kb(key):
        for line in status.splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        return 0
    io = {}
    try:
        for line in open(f"/proc/{pid}/io"):
            k, v = line.split(":"); io[k] = int(v)
    except OSError:
        pass
    return {"cpu": cpu, "user": user, "sys": sys_, "rss_kb": kb("VmRSS:"), "anon_kb": kb("RssAnon:"), "hwm_kb": kb("VmHWM:"), "write_bytes": io.get("write_bytes", 0)}

SAMPLE_EVERY = 30  # seconds between VmRSS samples during a load
RATE = 0  # --rate: loadgen's readings per second (0: as fast as the broker acknowledges)

def loadgen(port, count, start=1):
    out = subprocess.run([f"{BIN}/firmware-sim", "loadgen", "--broker", f"mqtt://127.0.0.1:{port}", "--count", str(count),
                          "--start", str(start), "--devices", "10", "--rate", str(RATE)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

def seq_file(tmp, n):
    path = os.path.join(tmp, f"seq-{n}.txt")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("".join(f"{i}\n" for i in range(1, n + 1)))
    return path

def publish(load, port, n, tmp):
    """Starts publishing readings 1...n with the given load; returns a function that waits
    for the publisher to finish (call it once the readings have arrived)."""
    if load == "loadgen":
        loadgen(port, n)
        return lambda: None
    qos = {"pub0": "0", "pub1": "1"}[load]
    p = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", qos, "-t", "load/dev0/seq",
                          "-i", f"bench-pub-{time.monotonic_ns()}", "-l"], stdin=subprocess.PIPE)
    data = open(seq_file(tmp, n), "rb").read()
    # Standard input stays open until the readings have arrived: mosquitto_pub 2.0.11 exits at
    # end of input without waiting for the PUBACKs of its last QoS1 messages (the broker then
    # drops them, logging a bogus "out of memory", mosquitto#3253).
    writer = threading.Thread(target=lambda: p.stdin.write(data) and p.stdin.flush(), daemon=True)
    writer.start()
    def finish():
        writer.join(); p.stdin.close(); p.wait(timeout=30)
        assert p.returncode == 0, p.returncode
    return finish

def ceiling(tmp, n, load="loadgen"):
    bp, port = broker(tmp, f"ceiling-{time.monotonic_ns()}")
    try:
        if load != "loadgen":
            # The C clients end to end: mosquitto_pub -> broker -> mosquitto_sub (QoS1 subscription,
            # as Brume's), timed from the first publish to the n-th message received.
            sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", "load/#",
                                    "-C", str(n), "-i", f"bench-sub-{time.monotonic_ns()}"],
                                   stdout=subprocess.DEVNULL)
            time.sleep(0.5)  # subscribed (no ready signal from mosquitto_sub)
            t0 = time.monotonic()
            finish = publish(load, port, n, tmp)
            sub.wait(timeout=300)
            t1 = time.monotonic()
            finish()
            assert sub.returncode == 0, sub.returncode
            return n / (t1 - t0)
        ready = os.path.join(tmp, f"count-{time.monotonic_ns()}.ready")
        c = subprocess.Popen([f"{BIN}/firmware-sim", "count", "--broker", f"mqtt://127.0.0.1:{port}", "--topic", "load/#",
                              "--expect", str(n), "--ready-file", ready], stdout=subprocess.PIPE, text=True)
        while not os.path.exists(ready): time.sleep(0.02)
        t0 = time.monotonic()
        loadgen(port, n)
        out, _ = c.communicate(timeout=300)
        t1 = time.monotonic()
        r = json.loads(out.strip().splitlines()[-1])
        assert r["messages"] >= n, r
        return n / (t1 - t0)
    finally:
        bp.terminate(); bp.wait()

EXTRA_CONFIG = ""   # --extra-config: appended to the gateway's configuration (rules, functions)

def write_gateway_config(path, data, fport, cport, load="loadgen", commit_interval=None):
    """The benchmarks' gateway: shipped defaults but batch_max_delay 100 ms (PERFORMANCE.md)."""
    with open(path, "w") as f:
        f.write(f"""[gateway]
id = "gw-bench"
data_dir = "{data}"
{f'[buffer]{chr(10)}commit_interval = "{commit_interval}"' if commit_interval else ''}
[uplink.cloud]
kind = "mqtt"
url = "mqtt://127.0.0.1:{cport}"
batch_max_readings = 500
batch_max_delay = "100ms"
[[source]]
name = "load"
kind = "mqtt"
url = "mqtt://127.0.0.1:{fport}"
subscribe = ["load/+/+"]
payload = {'{ json = { value = "/v", time = "/ts" } }' if load == "loadgen" else '"number"'}
""" + EXTRA_CONFIG)

def brume_run(tmp, n, soak, commit_interval=None, load="loadgen"):
    field, fport = broker(tmp, f"field-{time.monotonic_ns()}")
    cloud, cport = broker(tmp, f"cloud-{time.monotonic_ns()}")
    data = os.path.join(tmp, f"var-{time.monotonic_ns()}")
    cfg = os.path.join(tmp, "gateway.toml")
    write_gateway_config(cfg, data, fport, cport, load, commit_interval)
    ready = os.path.join(tmp, f"cloud-{time.monotonic_ns()}.ready")
    counter = subprocess.Popen([f"{BIN}/firmware-sim", "cloud", "--broker", f"mqtt://127.0.0.1:{cport}", "--expect", str(n),
                                "--client-id", f"bench-{time.monotonic_ns()}", "--ready-file", ready, "--timeout", str(int(max(600, n / RATE * 1.5 + 120 if RATE else 0)))],
                               stdout=subprocess.PIPE, text=True)
    while not os.path.exists(ready): time.sleep(0.02)
    logpath = os.path.join(tmp, f"brume-{time.monotonic_ns()}.log")
    log = open(logpath, "w")
    t_start = time.monotonic()
    g = subprocess.Popen([f"{BIN}/brume", "run", "--config", cfg], stderr=log)
    try:
        # Startup: until both connections are up (log line), bounded.
        for _ in range(500):
            log.flush()
            if open(logpath).read().count('msg="MQTT connected"') >= 2: break
            time.sleep(0.01)
        startup = time.monotonic() - t_start
        time.sleep(1.0)
        idle = proc_stat(g.pid)
        # VmRSS every 30 s while the load runs (a soak at --rate: flat or growing?).
        samples, sampling = [], threading.Event()
        def sample():
            while not sampling.wait(SAMPLE_EVERY):
                try:
                    st = proc_stat(g.pid)
                    samples.append([st["rss_kb"], st["anon_kb"]])
                except OSError:
                    return
        sampler = threading.Thread(target=sample, daemon=True); sampler.start()
        t0 = time.monotonic()
        finish = publish(load, fport, n, tmp)
        out, _ = counter.communicate(timeout=max(600, n / RATE * 1.5 + 180 if RATE else 0))
        t1 = time.monotonic() - 0.3  # the counter lingers 300 ms after the last reading
        busy = proc_stat(g.pid)
        sampling.set()
        finish()
        r = json.loads(out.strip().splitlines()[-1])
        soaked = None
        if soak > 0:
            time.sleep(soak)
            soaked = proc_stat(g.pid)
        g.send_signal(signal.SIGTERM); g.wait(timeout=30)
        return {
            "rate": n / (t1 - t0), "report": r, "startup_s": startup,
            "cpu_s_per_million": (busy["cpu"] - idle["cpu"]) / n * 1e6,
            "cpu_sys_s_per_million": (busy["sys"] - idle["sys"]) / n * 1e6,
            "rss_idle_kb": idle["rss_kb"], "rss_peak_kb": busy["hwm_kb"], "rss_after_soak_kb": soaked["rss_kb"] if soaked else None,
            "disk_bytes_per_reading": (busy["write_bytes"] - idle["write_bytes"]) / n,
            "uplink_bytes_per_reading": r["bytes"] / n, "rss_samples_kb": samples,
        }
    finally:
        if g.poll() is None: g.kill()
        for p in (field, cloud): p.terminate(); p.wait()

def main():
    global BIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--soak", type=float, default=0)
    ap.add_argument("--commit-interval", help='[buffer] commit_interval for brume (default "50ms")')
    ap.add_argument("--loads", default="loadgen,pub0,pub1", help="comma-separated: loadgen, pub0, pub1")
    ap.add_argument("--sample-every", type=float, default=30, help="seconds between VmRSS samples during a load")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the ceiling runs (a soak at a fixed --rate)")
    ap.add_argument("--rate", type=float, default=0, help="loadgen readings per second (a soak: --readings 6000000 --rate 10000)")
    ap.add_argument("--bin", required=True)
    ap.add_argument("--extra-config", help="a TOML file appended to the gateway's configuration (bench/rules-functions.sh makes one)")
    a = ap.parse_args()
    BIN = a.bin
    global EXTRA_CONFIG
    if a.extra_config:
        EXTRA_CONFIG = "\n" + open(a.extra_config).read()
    global RATE, SAMPLE_EVERY
    RATE = a.rate
    SAMPLE_EVERY = a.sample_every
    tmp = tempfile.mkdtemp(prefix="brume-bench-")
    loads = a.loads.split(",")
    results = {}
    per_load = {l: ([], []) for l in loads}
    for i in range(a.runs):
        for load in loads:
            ceilings, runs = per_load[load]
            ceilings.append(a.rate if a.no_ceiling else ceiling(tmp, a.readings, load))
            last = i == a.runs - 1 and load == loads[-1]
            runs.append(brume_run(tmp, a.readings, a.soak if last else 0, a.commit_interval, load))
            r = runs[-1]
            print(f"run {i+1} {load}: ceiling {ceilings[-1]:,.0f}/s  brume {r['rate']:,.0f}/s  ratio {r['rate'] / ceilings[-1]:.2f}"
                  f"  (lost {r['report']['missing']}, dup {r['report']['duplicates']}, cpu {r['cpu_s_per_million']:.2f} s/M)", flush=True)
    for load in loads:
        results[load] = summary(a, *per_load[load])
    print(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)

def summary(a, ceilings, runs):
    med = lambda k: statistics.median(r[k] for r in runs)
    ceil = statistics.median(ceilings)
    res = {
        "readings": a.readings, "runs": a.runs, "cpus": os.cpu_count(),
        "ceiling_per_s": ceil, "brume_per_s": med("rate"), "ratio": med("rate") / ceil,
        "ratios": [r["rate"] / c for r, c in zip(runs, ceilings)],
        "cpu_s_per_million": med("cpu_s_per_million"), "cpu_sys_s_per_million": med("cpu_sys_s_per_million"), "rss_idle_kb": med("rss_idle_kb"), "rss_peak_kb": med("rss_peak_kb"),
        "rss_after_soak_kb": runs[-1]["rss_after_soak_kb"], "rss_samples_kb": runs[-1]["rss_samples_kb"], "disk_bytes_per_reading": med("disk_bytes_per_reading"),
        "uplink_bytes_per_reading": med("uplink_bytes_per_reading"), "startup_s": med("startup_s"),
        "latency_ms_p50": statistics.median(r["report"]["latency_ms"]["p50"] for r in runs),
        "latency_ms_p99": statistics.median(r["report"]["latency_ms"]["p99"] for r in runs),
        "lost": sum(r["report"]["missing"] for r in runs), "duplicates": sum(r["report"]["duplicates"] for r in runs),
    }
    return res

if __name__ == "__main__":
    main()
