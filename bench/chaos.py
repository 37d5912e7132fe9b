#!/usr/bin/env python3
"""Fault and chaos suite: real brokers, real processes, faults injected while a
steady load flows; the cloud counter (firmware-sim cloud) counts loss,
duplicates and resent batches. Each scenario prints one JSON record and a
PASS/FAIL verdict by the rules of docs/RELIABILITY.md.

Usage: bench/chaos.sh [SCENARIO ...] [--quick]     (no scenario: all of them)
Scenarios: kill9 power-cut io-error cloud-down field-restart serial-replug disk-full corrupt-db
           clock-jump clock-jump-restart sighup-storm uplink-flap
"""
import argparse, json, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time

BIN = None          # private copy of the binaries (another build may replace the originals)
RATE = 1000         # readings/s of the steady load (2 shared cores: keep headroom)
RSS_GROWTH_MAX_KB = 16 * 1024
RECOVERY_MAX_S = 2.0

# ---------------------------------------------------------------- helpers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import free_port, wait_port  # noqa: E402  (shared with the end-to-end benchmark)

def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None

def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Scenario:
    """Owns a temp dir and every process started in it; cleans up always."""
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix=f"brume-chaos-{name}-")
        self.procs = []
        self.mounts = []

    def spawn(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def cleanup(self, keep=False):
        for p in self.procs:
            try:
                for k in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split():
                    os.kill(int(k), signal.SIGKILL)
            except (OSError, ValueError):
                pass
            if p.poll() is None:
                try: p.kill()
                except OSError: pass
                try: p.wait(timeout=5)
                except Exception: pass
        for m in self.mounts:
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        if not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Broker:
    """Mosquitto as TestKit configures it: persistence, user root, big queues,
    max_inflight_messages 0, set_tcp_nodelay true; stop = SIGTERM (saves sessions)."""
    def __init__(self, sc, name, inflight=0):
        """`inflight`: max_inflight_messages (0: unlimited; 20 is Mosquitto's default, a field
        broker nobody tuned)."""
        self.sc, self.port = sc, free_port()
        self.dir = os.path.join(sc.tmp, name); os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nuser root\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {self.dir}/\nautosave_interval 1\nmax_queued_messages 10000000\n"
                    f"max_queued_bytes 0\nmax_inflight_messages {inflight}\nset_tcp_nodelay true\n")
        self.p, self.starts = None, 0
        self.start()

    @property
    def url(self): return f"mqtt://127.0.0.1:{self.port}"

    def start(self):
        self.starts += 1
        self.p = self.sc.spawn(["mosquitto", "-c", self.conf], stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(self.dir, f"log-{self.starts}"), "w"))
        wait_port(self.port)

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate(); self.p.wait(timeout=10)
        self.p = None


class Gateway:
    """brume run; stderr is read by a thread that timestamps every log line
    (monotonic) and appends it to gateway.log."""
    def __init__(self, sc, config_text, env=None, preexec=None):
        self.sc = sc
        self.cfg = os.path.join(sc.tmp, "gateway.toml")
        self.write_config(config_text)
        self.logpath = os.path.join(sc.tmp, "gateway.log")
        self.lines = []          # (monotonic, start#, line)
        self.lock = threading.Lock()
        self.p, self.starts, self.env, self.preexec = None, 0, env, preexec
        self.wrapper = []
        self.exit_codes = []

    def write_config(self, text):
        tmp = self.cfg + ".tmp"
        with open(tmp, "w") as f: f.write(text)
        os.rename(tmp, self.cfg)   # atomic: a reload never reads half a file

    def start(self, wait_connected=True, conns=2):
        self.starts += 1
        n = self.starts
        env = dict(os.environ, **(self.env or {}))
        self.p = self.sc.spawn(self.wrapper + [f"{BIN}/brume", "run", "--config", self.cfg], stderr=subprocess.PIPE, text=True,
                               env=env, preexec_fn=self.preexec)
        p = self.p
        def reader():
            with open(self.logpath, "a") as f:
                for line in p.stderr:
                    t = time.monotonic()
                    with self.lock: self.lines.append((t, n, line.rstrip("\n")))
                    f.write(f"[start {n}] {line}"); f.flush()
        threading.Thread(target=reader, daemon=True).start()
        if wait_connected:
            self.wait_log('msg="MQTT connected"', count=conns, since_start=n, timeout=10)
        return p

    def wait_log(self, pattern, count=1, since_start=None, since_t=0, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.find(pattern, since_start, since_t)) >= count: return True
            time.sleep(0.01)
        return False

    def find(self, pattern, since_start=None, since_t=0):
        with self.lock:
            return [(t, l) for (t, n, l) in self.lines if pattern in l and (since_start is None or n == since_start) and t >= since_t]

    @property
    def pid(self):
        """The gateway's pid (under a wrapper such as `faketime`, its child: signals go there)."""
        if not self.wrapper: return self.p.pid
        for _ in range(200):
            try:
                kids = open(f"/proc/{self.p.pid}/task/{self.p.pid}/children").read().split()
                if kids: return int(kids[0])
            except OSError:
                break
            time.sleep(0.01)
        return self.p.pid

    def alive(self): return self.p is not None and self.p.poll() is None

    def kill9(self):
        os.kill(self.pid, signal.SIGKILL); self.exit_codes.append(self.p.wait())

    def term(self, timeout=30):
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try: self.exit_codes.append(self.p.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL); self.p.kill(); self.exit_codes.append(("timeout", self.p.wait()))
        else:
            self.exit_codes.append(self.p.returncode)
        time.sleep(0.1)  # let the reader thread flush the last lines

    def errors(self):
        """Warnings and errors: a count per message, and the first line of each."""
        out = {}
        with self.lock:
            for (_, _, l) in self.lines:
                if "level=error" in l or "level=critical" in l or "level=warning" in l:
                    m = re.search(r'msg="([^"]*)"', l)
                    k = m.group(1) if m else l[:80]
                    if k in out: out[k]["count"] += 1
                    else: out[k] = {"count": 1, "first": l[:400]}
        return out


BATCH_RE = re.compile(r"^cloud: batch (\S+) (\d+) readings(?: \(historical\))?\s+\S+?/seq=(\d+)")

class Cloud:
    """firmware-sim cloud --follow: every batch line is timestamped here, so
    recovery times are measured on arrival at the cloud."""
    def __init__(self, sc, broker, first=1, seq_metric="seq"):
        self.sc = sc
        ready = os.path.join(sc.tmp, f"cloud-{time.monotonic_ns()}.ready")
        self.report_path = os.path.join(sc.tmp, "cloud-report.json")
        self.p = sc.spawn([f"{BIN}/firmware-sim", "cloud", "--broker", broker.url, "--follow", "--first", str(first),
                           "--client-id", f"chaos-cloud-{os.getpid()}-{time.monotonic_ns()}", "--ready-file", ready,
                           "--report", self.report_path, "--seq-metric", seq_metric],
                          stdout=subprocess.PIPE, stderr=open(os.path.join(sc.tmp, "cloud.err"), "w"), text=True)
        self.batches = []   # (monotonic, batch_id, n, first_seq)
        self.report = None
        self.lock = threading.Lock()
        def reader():
            for line in self.p.stdout:
                t = time.monotonic()
                m = BATCH_RE.match(line)
                if m:
                    with self.lock: self.batches.append((t, m.group(1), int(m.group(2)), int(m.group(3))))
                elif line.startswith('{"batches"'):
                    self.report = json.loads(line)
        self.thread = threading.Thread(target=reader, daemon=True); self.thread.start()
        end = time.time() + 10
        while not os.path.exists(ready):
            if time.time() > end: raise RuntimeError("cloud counter not ready")
            time.sleep(0.02)

    def readings(self):
        with self.lock: return sum(b[2] for b in self.batches)

    def first_after(self, t):
        with self.lock:
            for b in self.batches:
                if b[0] >= t: return b[0]
        return None

    def first_seq_at_least(self, t, seq):
        """First arrival after t of a batch holding a reading with seq >= seq (the backlog is drained)."""
        with self.lock:
            for b in self.batches:
                if b[0] >= t and b[3] + b[2] - 1 >= seq: return b[0]
        return None

    def wait_max_seq(self, seq, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if any(b[3] + b[2] - 1 >= seq for b in self.batches): return True
            time.sleep(0.05)
        return False

    def wait_quiet(self, quiet=2.0, timeout=120):
        """Until no batch arrived for `quiet` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock: last = self.batches[-1][0] if self.batches else 0
            if time.monotonic() - last >= quiet: return True
            time.sleep(0.1)
        return False

    def finish(self):
        self.p.send_signal(signal.SIGTERM)
        try: self.p.wait(timeout=20)
        except subprocess.TimeoutExpired: self.p.kill()
        self.thread.join(timeout=5)
        if self.report is None and os.path.exists(self.report_path):
            self.report = json.loads(open(self.report_path).read())
        return self.report


class Load:
    """firmware-sim loadgen at a fixed rate; seq of reading i ≈ start + (t - t0) * rate."""
    def __init__(self, sc, broker, count, rate=RATE, start=1):
        self.count, self.rate, self.start_seq = count, rate, start
        self.out = os.path.join(sc.tmp, f"loadgen-{start}.out")
        self.t0 = time.monotonic()
        self.p = sc.spawn([f"{BIN}/firmware-sim", "loadgen", "--broker", broker.url, "--count", str(count),
                           "--start", str(start), "--devices", "10", "--rate", str(rate)],
                          stdout=open(self.out, "w"), stderr=subprocess.DEVNULL)

    def seq_at(self, t):
        return self.start_seq + int(min(self.count, max(0, (t - self.t0) * self.rate)))

    def wait(self, timeout=300):
        """Its report, or None if it had to be stopped: after a broker restart the generator
        waits up to 120 s for PUBACKs of messages lost in flight (its own loss, not the gateway's)."""
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill(); self.p.wait(); return None
        try: return json.loads(open(self.out).read().strip().splitlines()[-1])
        except Exception: return None


def mqtt_config(data, cloud, field, extra="", rules=""):
    return f"""[gateway]
id = "gw-chaos"
data_dir = "{data}"
{extra}
[uplink.cloud]
kind = "mqtt"
url = "{cloud.url}"
batch_max_readings = 500
batch_max_delay = "100ms"
[[source]]
name = "load"
kind = "mqtt"
url = "{field.url}"
subscribe = ["load/+/+"]
payload = {{ json = {{ value = "/v", time = "/ts" }} }}
{rules}"""


# Readings held in memory (the outbox's hold) and in flight in live batches when the process
# dies come again under a new batch id: at most the live window (8 batches of up to 500) per kill.
LIVE_WINDOW = 8 * 500

def verdict(rec, allowed_missing=0, recovery_applies=True, kills=0):
    """The PASS/FAIL rules (docs/RELIABILITY.md)."""
    r = rec["cloud"] or {}
    reasons = []
    if rec.get("generated") is None or not r:
        reasons.append("no cloud report")
    else:
        if r["missing"] > allowed_missing:
            reasons.append(f"lost {r['missing']} > allowed {allowed_missing}")
        if r["mismatched_duplicate_batches"] > 0:
            reasons.append(f"{r['mismatched_duplicate_batches']} mismatched duplicate batches")
        if r["duplicates"] > 500 * r["duplicate_batches"] + kills * LIVE_WINDOW:
            reasons.append(f"{r['duplicates']} duplicate readings > 500 x {r['duplicate_batches']} duplicate batches + {kills} kills x {LIVE_WINDOW}")
    if recovery_applies:
        rs = rec.get("recovery_s")
        if rs is None: reasons.append("no recovery observed")
        elif rs > RECOVERY_MAX_S: reasons.append(f"recovery {rs:.2f} s > {RECOVERY_MAX_S} s")
    if rec.get("rss_before_kb") and rec.get("rss_after_kb") and rec["rss_after_kb"] - rec["rss_before_kb"] > RSS_GROWTH_MAX_KB:
        reasons.append(f"RSS grew {rec['rss_after_kb'] - rec['rss_before_kb']} kB")
    bad_exits = [c for c in rec.get("gateway_exit_codes", []) if c not in (0, -9)]
    if bad_exits:
        reasons.append(f"unclean gateway exit(s): {bad_exits} (0 = clean SIGTERM, -9 = our kill -9)")
    if rec.get("crashed"):
        reasons.append(f"gateway crashed: {rec['crashed']}")
    rec["fail_reasons"] = reasons
    rec["result"] = "PASS" if not reasons else "FAIL"
    return rec


def summarize(rec, cloud_rep):
    rec["cloud"] = cloud_rep
    if cloud_rep:
        rec.update(delivered_unique=cloud_rep["unique"], lost=cloud_rep["missing"], duplicate_readings=cloud_rep["duplicates"],
                   duplicate_batches=cloud_rep["duplicate_batches"], mismatched_duplicate_batches=cloud_rep["mismatched_duplicate_batches"],
                   hist_batches=cloud_rep["hist_batches"])
    return rec

def r2(x): return None if x is None else round(x, 3)


# ---------------------------------------------------------------- a common MQTT scaffold

class MqttRig:
    def __init__(self, sc, extra="", rules="", data=None, env=None, preexec=None):
        self.sc = sc
        self.extra = extra
        self.field = Broker(sc, "field")
        self.cloudb = Broker(sc, "cloud")
        self.cloud = Cloud(sc, self.cloudb)
        self.data = data or os.path.join(sc.tmp, "var")
        self.gw = Gateway(sc, mqtt_config(self.data, self.cloudb, self.field, extra, rules), env=env, preexec=preexec)
        self.gw.start()
        time.sleep(1.0)
        self.rss_before = rss_kb(self.gw.pid)

    def finish(self, rec, n, drain_timeout=120):
        """Wait until every generated reading could have arrived, then stop and report."""
        self.cloud.wait_max_seq(n, drain_timeout)
        self.cloud.wait_quiet(1.5, timeout=drain_timeout)
        rec["rss_after_kb"] = rss_kb(self.gw.pid) if self.gw.alive() else None
        rec["rss_before_kb"] = self.rss_before
        if not self.gw.alive():
            rec["crashed"] = f"exit {self.gw.p.returncode}"
        self.gw.term()
        rec["gateway_exit_codes"] = self.gw.exit_codes
        rep = self.cloud.finish()
        # The counter reports missing up to max(seq seen); readings after the last one seen are missing too.
        if rep and rec.get("generated"):
            seen_max = rep["unique"] + rep["missing"]
            if seen_max < rec["generated"]:
                rep["missing"] += rec["generated"] - seen_max
        rec["gateway_warnings_errors"] = self.gw.errors()
        rec["logs"] = self.sc.tmp
        return summarize(rec, rep)


# ---------------------------------------------------------------- scenarios

def s_kill9(sc, quick):
    kills = 5 if quick else 20
    interval = 2.0
    rig = MqttRig(sc)
    n = int((kills * (interval + 0.5) + 4) * RATE)   # a cycle is 0.3 s down + interval up + the kill itself
    load = Load(sc, rig.field, n)
    recov, resent = [], 0
    time.sleep(1.5)
    for i in range(kills):
        rig.gw.kill9()
        time.sleep(0.3)
        rig.gw.start(wait_connected=False)
        t_up = time.monotonic()
        # Recovery: from the restart until the cloud sees readings generated after the restart.
        want = load.seq_at(t_up)
        rig.cloud.wait_max_seq(want, 10)
        t = rig.cloud.first_seq_at_least(t_up, want)
        recov.append(None if t is None else t - t_up)
        time.sleep(max(0, interval - (time.monotonic() - t_up)))
    resent = len(rig.gw.find("resending unacknowledged batches"))
    gen = load.wait()
    rec = {"scenario": "kill9", "quick": quick, "kills": kills, "kill_interval_s": interval, "rate": RATE, "generated": n,
           "loadgen": gen, "restarts_that_resent_batches": resent,
           "recovery_s_each": [r2(x) for x in recov],
           "recovery_s": None if None in recov else r2(max(recov)),
           "recovery_definition": "restart -> first batch at the cloud holding a reading generated after the restart (max over kills)"}
    rig.finish(rec, n)
    return verdict(rec, kills=kills)


def outage(rig, load, down_s, flap_every=None):
    """Stops the cloud broker for down_s (or flaps it every flap_every s); returns (t_end)."""
    if flap_every is None:
        rig.cloudb.stop(); time.sleep(down_s); rig.cloudb.start()
    else:
        # down, up, down, ... every flap_every s for down_s; the fault ends at the last start
        end = time.monotonic() + down_s
        up = True
        while time.monotonic() < end:
            if up: rig.cloudb.stop()
            else: rig.cloudb.start()
            up = not up
            if time.monotonic() + flap_every >= end and up: break
            time.sleep(flap_every)
        if not up: rig.cloudb.start()
    return time.monotonic()


def cloud_fault(sc, quick, name, down_s, flap_every=None):
    rig = MqttRig(sc)
    pre, post = 4.0, 6.0
    n = int((pre + down_s + post) * RATE)
    load = Load(sc, rig.field, n)
    time.sleep(pre)
    t_start = time.monotonic()
    t_end = outage(rig, load, down_s, flap_every)
    s_end = load.seq_at(t_end)
    rig.cloud.wait_max_seq(s_end, 60)
    t_first = rig.cloud.first_after(t_end)
    t_drain = rig.cloud.first_seq_at_least(t_end, s_end)
    ups = [t for (t, l) in rig.gw.find('msg="MQTT connected"', since_t=t_end) if "uplink.name" in l]
    gen = load.wait()
    rec = {"scenario": name, "quick": quick, "rate": RATE, "generated": n, "loadgen": gen, "fault_s": r2(t_end - t_start),
           "flap_every_s": flap_every,
           "uplink_reconnected_s": r2(ups[0] - t_end) if ups else None,
           "recovery_s": r2(t_first - t_end) if t_first else None,
           "drain_s": r2(t_drain - t_end) if t_drain else None,
           "recovery_definition": "broker back -> first batch at the cloud counter (the counter reconnects too); drain_s: -> first batch holding the reading generated at that moment"}
    rig.finish(rec, n)
    return verdict(rec)


def s_cloud_down(sc, quick):
    return cloud_fault(sc, quick, "cloud-down", 10 if quick else 60)


def s_uplink_flap(sc, quick):
    return cloud_fault(sc, quick, "uplink-flap", 10 if quick else 20, flap_every=2.0)


def s_field_restart(sc, quick):
    restarts = 2 if quick else 5
    rig = MqttRig(sc)
    # A witness: a plain persistent-session subscriber on the field broker, to tell the
    # generator's own losses (in flight when its broker went away) from the gateway's.
    witness_out = os.path.join(sc.tmp, "witness.out")
    witness = sc.spawn(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(rig.field.port), "-q", "1", "-c", "-i", "chaos-witness",
                        "-t", "load/#"], stdout=open(witness_out, "w"), stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    interval = 4.0
    n = int((2 + restarts * interval + 3) * RATE)
    load = Load(sc, rig.field, n)
    time.sleep(2)
    recov = []
    for i in range(restarts):
        rig.field.stop(); rig.field.start()
        t_end = time.monotonic()
        want = load.seq_at(t_end) + 1
        rig.cloud.wait_max_seq(want, 15)
        t = rig.cloud.first_seq_at_least(t_end, want)
        recov.append(None if t is None else t - t_end)
        time.sleep(max(0, interval - (time.monotonic() - t_end)))
    gen = load.wait(timeout=max(1, load.t0 + n / RATE + 5 - time.monotonic()))
    time.sleep(2)
    witness.terminate(); witness.wait()
    wseen = set()
    for line in open(witness_out):
        m = re.search(r'"v":(\d+)', line)
        if m: wseen.add(int(m.group(1)))
    rec = {"scenario": "field-restart", "quick": quick, "restarts": restarts, "rate": RATE, "generated": n, "loadgen": gen,
           "recovery_s_each": [r2(x) for x in recov], "recovery_s": None if None in recov else r2(max(recov)),
           "recovery_definition": "field broker back -> first batch at the cloud holding a reading published after it came back",
           "witness_unique": len(wseen), "generator_lost": n - len(wseen & set(range(1, n + 1)))}
    rig.finish(rec, n)
    # Readings the field broker never accepted (the generator's in-flight window at the restart) are not the gateway's.
    return verdict(rec, allowed_missing=rec["generator_lost"])


def s_serial_replug(sc, quick):
    cloudb = Broker(sc, "cloud")
    cloud = Cloud(sc, cloudb)
    link = os.path.join(sc.tmp, "ttyCHAOS")
    data = os.path.join(sc.tmp, "var")
    gw = Gateway(sc, f"""[gateway]
id = "gw-chaos"
data_dir = "{data}"
[uplink.cloud]
kind = "mqtt"
url = "{cloudb.url}"
batch_max_readings = 500
batch_max_delay = "100ms"
[[source]]
name = "ser"
kind = "serial"
port = "{link}"
baud = 115200
format = "kv"
device = "ser"
""")
    procs = 3 if quick else 6
    per, rate, replug_after = (200, 50, 1.0) if quick else (500, 50, 1.0)
    # Replugs: each device process unplugs once in the middle (--unplug-after), and
    # ends (pty closed = unplug); the next process is the replug.
    events = []   # (monotonic, target) of the link: a new pty = a replug
    stop = threading.Event()
    def watch():
        last = None
        while not stop.is_set():
            try: cur = os.readlink(link)
            except OSError: cur = None
            if cur != last:
                events.append((time.monotonic(), cur)); last = cur
            time.sleep(0.005)
    threading.Thread(target=watch, daemon=True).start()
    gw.start(wait_connected=False)
    gw.wait_log('msg="MQTT connected"', timeout=10)
    time.sleep(0.5)
    rss_before = rss_kb(gw.pid)
    seq = 1
    outs = []
    for i in range(procs):
        out = subprocess.run([f"{BIN}/firmware-sim", "serial", "--link", link, "--format", "kv", "--rate", str(rate),
                              "--count", str(per), "--start", str(seq), "--unplug-after", str(per // 2),
                              "--replug-after", str(replug_after)], capture_output=True, text=True)
        try: outs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        except Exception: outs.append({"raw": out.stdout[-300:], "err": out.stderr[-300:]})
        seq += per
        time.sleep(0.5)   # unplugged between two device processes
    stop.set()
    n = seq - 1
    cloud.wait_max_seq(n, 30)
    cloud.wait_quiet(1.5, 30)
    # Recovery per replug: the link points at a new pty -> gateway logs "serial device back".
    backs = [t for (t, _) in gw.find("serial device back")]
    replugs = [t for (t, cur) in events if cur is not None][1:]
    recov = []
    for t in replugs:
        nxt = [b for b in backs if b >= t]
        recov.append(None if not nxt else nxt[0] - t)
    rec = {"scenario": "serial-replug", "quick": quick, "device_processes": procs, "lines_each": per, "line_rate": rate,
           "generated": n, "unplugs": sum(o.get("unplugs", 0) for o in outs) + procs, "replugs": len(replugs),
           "sim_dropped_lines": sum(o.get("dropped", 0) for o in outs),
           "recovery_s_each": [r2(x) for x in recov], "recovery_s": None if (not recov or None in recov) else r2(max(recov)),
           "recovery_definition": "device link re-pointed to a new pty -> gateway logs 'serial device back'",
           "rss_before_kb": rss_before, "rss_after_kb": rss_kb(gw.pid) if gw.alive() else None}
    if not gw.alive(): rec["crashed"] = f"exit {gw.p.returncode}"
    gw.term()
    rec["gateway_exit_codes"] = gw.exit_codes
    rep = cloud.finish()
    if rep and rep["unique"] + rep["missing"] < n: rep["missing"] += n - (rep["unique"] + rep["missing"])
    rec["gateway_warnings_errors"] = gw.errors()
    rec["logs"] = sc.tmp
    summarize(rec, rep)
    # Lines the simulator could not write (nobody had the port open) are the wire's loss, not the gateway's.
    verdict(rec, allowed_missing=rec["sim_dropped_lines"])
    # Each kv line is seq + temperature + humidity: the counter checks seq; the other two are
    # counted here (non_sequence), since a line is never split, all three must arrive.
    if rep:
        rec["other_readings_expected"] = 2 * (n - rec["sim_dropped_lines"])
        rec["other_readings_received"] = rep["non_sequence"]
        if rep["non_sequence"] < rec["other_readings_expected"]:
            rec["fail_reasons"].append(f"{rec['other_readings_expected'] - rep['non_sequence']} temperature/humidity readings missing")
            rec["result"] = "FAIL"
    return rec


def s_disk_full(sc, quick):
    img = os.path.join(sc.tmp, "disk.img")
    mnt = os.path.join(sc.tmp, "mnt")
    os.makedirs(mnt)
    size_mb = 16
    subprocess.run(["dd", "if=/dev/zero", f"of={img}", "bs=1M", f"count={size_mb}", "status=none"], check=True)
    mode = "loop"
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", img], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", img, mnt], check=True, capture_output=True)
        sc.mounts.append(mnt)
    except (subprocess.CalledProcessError, FileNotFoundError):
        mode = "rlimit"
    data = os.path.join(mnt, "var")
    filler = os.path.join(mnt, "filler")
    leave_kb = 1024
    if mode == "loop":
        st = os.statvfs(mnt)
        free = st.f_bavail * st.f_frsize
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - leave_kb * 1024))
        os.sync()
        # hold = "0s": readings are committed as they come, so the full disk is met (with the
        # default hold and the cloud online, nothing would be written at all).
        rig = MqttRig(sc, data=data, extra='[buffer]\nhold = "0s"\n')
    else:
        # Fallback: the gateway's file size limit (SIGXFSZ must be ignored, or the kernel kills it).
        def lim():
            import resource
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (leave_kb * 1024, leave_kb * 1024))
        rig = MqttRig(sc, preexec=lim, extra='[buffer]\nhold = "0s"\n')
    # > 62 s in all: the write_error count is only in memory, visible in the 60 s "status" line
    full_s, after_s = (20, 45) if quick else (45, 35)
    n = int((full_s + after_s) * RATE)
    load = Load(sc, rig.field, n)
    t0 = time.monotonic()
    time.sleep(full_s)
    full_errors = rig.gw.find("outbox commit failed")
    # With the disk still full: a reload that restarts the MQTT source, then SIGTERM, must each
    # finish within 5 s (the source's ack gate gives up without acknowledging; the broker
    # keeps the messages for the next session).
    t_hup = time.monotonic()
    rig.gw.write_config(mqtt_config(rig.data, rig.cloudb, rig.field, rig.extra).replace('subscribe = ["load/+/+"]', 'subscribe = ["load/+/+"]\nkeepalive = "31s"'))
    os.kill(rig.gw.pid, signal.SIGHUP)
    reloaded = rig.gw.wait_log("configuration reloaded", since_t=t_hup, timeout=30)
    reload_s = time.monotonic() - t_hup if reloaded else None
    t_term = time.monotonic()
    rig.gw.term(timeout=30)
    term_s = time.monotonic() - t_term
    rig.gw.start(wait_connected=False)   # restarts while the disk is still full
    time.sleep(2)
    t_space = time.monotonic()
    if mode == "loop":
        os.unlink(filler)   # space returns
    else:
        rig.gw.alive() and subprocess.run(["prlimit", "--pid", str(rig.gw.pid), "--fsize=unlimited"])
    s_space = load.seq_at(t_space)
    rig.cloud.wait_max_seq(s_space + 1, 30)
    t_first = rig.cloud.first_seq_at_least(t_space, s_space + 1)
    gen = load.wait()
    statuses = [l for (_, l) in rig.gw.find('msg=status')]
    du = subprocess.run(["du", "-sk", data], capture_output=True, text=True).stdout.strip()
    rec = {"scenario": "disk-full", "quick": quick, "mode": mode, "fs_mb": size_mb, "free_kb_at_start": leave_kb,
           "rate": RATE, "generated": n, "loadgen": gen, "full_phase_s": full_s,
           "first_write_error_after_s": r2(full_errors[0][0] - t0) if full_errors else None,
           "commit_failed_log_lines": len(full_errors),
           "recovery_s": r2(t_first - t_space) if t_first else None,
           "recovery_definition": "space freed -> first batch at the cloud holding a reading generated after that",
           "status_lines": statuses[-2:], "data_dir_du": du,
           "reload_while_full_s": r2(reload_s), "sigterm_while_full_s": r2(term_s)}
    rig.finish(rec, n)
    # Readings refused while the disk was full are lost by design if counted as write_error;
    # the count comes from the status line (in memory only) when present.
    m = re.findall(r"write_error:(\d+)", " ".join(statuses))
    rec["write_error_counted"] = int(m[-1]) if m else None
    ev = sqlite(os.path.join(data, "outbox.db"), "SELECT reason||'='||readings FROM eviction") if mode == "loop" else ""
    rec["evictions_in_db"] = ev
    allowed = rec["write_error_counted"] or 0
    verdict(rec, allowed_missing=allowed)
    if reload_s is None or reload_s > 5: rec["fail_reasons"].append(f"reload with the disk full took {reload_s} s (> 5 s or never)"); rec["result"] = "FAIL"
    if term_s > 5: rec["fail_reasons"].append(f"SIGTERM with the disk full took {term_s:.1f} s (> 5 s)"); rec["result"] = "FAIL"
    if rec["write_error_counted"] is None and rec.get("lost", 0) > 0:
        rec["fail_reasons"].append("no status line: losses not matched to a counter"); rec["result"] = "FAIL"
    return rec


def sqlite(db, sql):
    return subprocess.run(["sqlite3", db, sql], capture_output=True, text=True).stdout.strip()


def s_corrupt_db(sc, quick):
    rig = MqttRig(sc)
    n = int((14 if quick else 30) * RATE)
    load = Load(sc, rig.field, n)
    db = os.path.join(rig.data, "outbox.db")
    rounds = []
    time.sleep(1.5)
    for how in ["overwrite", "truncate"]:
        rig.cloudb.stop()                       # build a backlog in the outbox
        time.sleep(2.5 if quick else 6)
        rig.gw.term()                           # clean stop: the WAL is checkpointed into outbox.db
        buffered = int(sqlite(db, "SELECT COALESCE(SUM(count),0) FROM segment WHERE last_seq > (SELECT value FROM meta WHERE key='done_seq')") or 0)
        meta = sqlite(db, "SELECT key||'='||value FROM meta")
        size = os.path.getsize(db)
        with open(db, "r+b") as f:
            if how == "overwrite":
                f.seek(size // 2); f.write(os.urandom(8192))
            else:
                f.truncate(size // 2)
        t_restart = time.monotonic()
        rig.gw.start(wait_connected=False)
        rig.cloudb.start()
        ok = rig.gw.wait_log('msg="MQTT connected"', count=2, since_start=rig.gw.starts, timeout=10)
        want = load.seq_at(time.monotonic())
        rig.cloud.wait_max_seq(want, 20)
        t = rig.cloud.first_seq_at_least(t_restart, want)
        logs = [l for (_, l) in rig.gw.find("corrupt", since_start=rig.gw.starts)] + \
               [l for (_, l) in rig.gw.find("level=error", since_start=rig.gw.starts)]
        rounds.append({"corruption": how, "db_bytes": size, "buffered_in_file": buffered, "meta_before": meta,
                       "started": rig.gw.alive(), "connected": ok,
                       "flowing_again_s": r2(t - t_restart) if t else None, "log": sorted(set(logs))[:10]})
        time.sleep(1.5)
    gen = load.wait()
    final_meta = sqlite(db, "SELECT key||'='||value FROM meta") if os.path.exists(db) else None
    aside = [f for f in os.listdir(rig.data) if "corrupt" in f]
    rec = {"scenario": "corrupt-db", "quick": quick, "rate": RATE, "generated": n, "loadgen": gen, "rounds": rounds,
           "moved_aside": aside, "recovery_s": max((r["flowing_again_s"] or 99) for r in rounds),
           "recovery_definition": "restart on the corrupted file -> first batch at the cloud holding a reading generated after the restart"}
    rig.finish(rec, n)
    rec["final_meta"] = sqlite(db, "SELECT key||'='||value FROM meta")
    rec["final_evictions"] = sqlite(db, "SELECT reason||'='||readings FROM eviction")
    allowed = sum(r["buffered_in_file"] for r in rounds)
    return verdict(rec, allowed_missing=allowed, recovery_applies=True)


def s_clock_jump(sc, quick):
    """The wall clock jumps while the gateway runs, as when NTP corrects a board without RTC or
    a technician sets the date: +1h, then back 2h, then +8d (past max_age = 7d, with the cloud
    down so a backlog waits in the outbox), then back to the true time. The gateway's clock
    follows an offset file (BRUME_FAULT_CLOCK_OFFSET_FILE, a fault-injection hook read every
    100 ms; monotonic time is untouched, as in a real jump). Batches are sent on their delay
    only (batch_max_readings is huge), so a batch timer fooled by the jump would stall delivery.
    Pass: nothing lost (no age eviction of a young backlog), delivery resumes within 2 s of each jump."""
    offset_file = os.path.join(sc.tmp, "clock-offset")
    with open(offset_file, "w") as f:
        f.write("0\n")
    orig = mqtt_config
    rig = MqttRig.__new__(MqttRig)
    rig.sc = sc
    rig.field = Broker(sc, "field")
    rig.cloudb = Broker(sc, "cloud")
    rig.cloud = Cloud(sc, rig.cloudb)
    rig.data = os.path.join(sc.tmp, "var")
    cfg = orig(rig.data, rig.cloudb, rig.field, extra="[buffer]\nmax_age = \"7d\"\n").replace("batch_max_readings = 500", "batch_max_readings = 50000")
    rig.gw = Gateway(sc, cfg, env={"BRUME_FAULT_CLOCK_OFFSET_FILE": offset_file})
    rig.gw.start()
    time.sleep(1.0)
    rig.rss_before = rss_kb(rig.gw.pid)
    jumps = ["+1h", "-1h", "+8d", "0"]
    hold = 3.0 if quick else 8.0
    n = int((2 + len(jumps) * (hold + 1) + 3) * RATE)
    load = Load(sc, rig.field, n)
    time.sleep(2)
    recov, runs = [], []
    for off in jumps:
        backlog = off == "+8d"
        if backlog:
            rig.cloudb.stop(); time.sleep(hold)
        with open(offset_file, "w") as f:
            f.write(off + "\n")
        time.sleep(0.3)  # the hook polls every 100 ms
        if backlog:
            rig.cloudb.start()
        t_jump = time.monotonic()
        want = load.seq_at(t_jump) + 1
        rig.cloud.wait_max_seq(want, 15)
        t = rig.cloud.first_seq_at_least(t_jump, want)
        recov.append(None if t is None else t - t_jump)
        runs.append({"offset": off, "cloud_down_before": backlog, "flowing_again_s": r2(recov[-1])})
        time.sleep(max(0, hold - (time.monotonic() - t_jump)))
    gen = load.wait(timeout=max(1, load.t0 + n / RATE + 5 - time.monotonic()))
    rec = {"scenario": "clock-jump", "quick": quick, "mode": "live jumps of the gateway's wall clock (fault-injection offset file)",
           "jumps": runs, "rate": RATE, "generated": n, "loadgen": gen,
           "recovery_s_each": [r2(x) for x in recov], "recovery_s": None if None in recov else r2(max(recov)),
           "recovery_definition": "jump (and, for +8d, the cloud back) -> first batch at the cloud holding a reading generated after it"}
    rig.finish(rec, n)
    db = os.path.join(rig.data, "outbox.db")
    ev = sqlite(db, "SELECT reason||'='||readings FROM eviction")
    rec["evictions"] = ev
    jumped = len(rig.gw.find("wall clock jumped"))
    rec["jumps_seen_by_gateway"] = jumped
    res = verdict(rec, allowed_missing=0)
    if jumped < len(jumps):
        res["result"] = "FAIL"; res.setdefault("fail_reasons", []).append(f"the gateway saw {jumped} of {len(jumps)} jumps")
    return res


def s_clock_jump_restart(sc, quick):
    """The wall clock jumps between two runs of the gateway (a board without RTC whose clock
    NTP corrects at boot): libfaketime's `faketime -f OFFSET` wrapper, one fixed offset per run.
    A live jump inside one run (FAKETIME_TIMESTAMP_FILE with LD_PRELOAD) is not usable here:
    preloaded without the wrapper's FAKETIME_SHARED, libfaketime makes the Swift binary lose its
    argv (`brume run --config F` prints the top-level usage)."""
    if not shutil.which("faketime"):
        return {"scenario": "clock-jump-restart", "result": "NOT RUN", "why": "faketime missing (apt-get install faketime)"}
    probe = subprocess.run(["faketime", "-f", "+3650d", f"{BIN}/brume", "check", "/dev/null"], capture_output=True, text=True)
    os.environ["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    rig = MqttRig(sc)
    # offsets of successive runs; the cloud is down before each restart so the outbox holds a backlog
    offsets = ["-1h", "+0", "+1h", "+8d"]
    hold = 2.0 if quick else 5.0
    n = int((2 + len(offsets) * (hold + 3) + 3) * RATE)
    load = Load(sc, rig.field, n)
    time.sleep(2)
    db = os.path.join(rig.data, "outbox.db")
    runs, recov = [], []
    for off in offsets:
        rig.cloudb.stop(); time.sleep(hold)
        rig.gw.term()
        buffered = sqlite(db, "SELECT COALESCE(SUM(count),0) FROM segment WHERE last_seq > (SELECT value FROM meta WHERE key='done_seq')")
        rig.gw.wrapper = ["faketime", "-f", off]
        rig.gw.start(wait_connected=False)
        rig.cloudb.start()
        t_up = time.monotonic()
        ok = rig.gw.wait_log('msg="MQTT connected"', count=2, since_start=rig.gw.starts, timeout=10)
        want = load.seq_at(time.monotonic())
        rig.cloud.wait_max_seq(want, 15)
        t = rig.cloud.first_seq_at_least(t_up, want)
        recov.append(None if t is None else t - t_up)
        first = rig.gw.find("brume starting", since_start=rig.gw.starts)
        runs.append({"offset": off, "connected": ok, "buffered_before": buffered, "flowing_again_s": r2(recov[-1]),
                     "start_line_clock": first[0][1][:27] if first else None,
                     "warnings": sorted({re.search(r'msg="([^"]*)"', l).group(1) for (_, l) in rig.gw.find("level=warning", since_start=rig.gw.starts)
                                         if 'msg="' in l} - {"MQTT connection lost", "MQTT connect failed"})})
        time.sleep(1.0)
    gen = load.wait()
    rec = {"scenario": "clock-jump-restart", "quick": quick, "mode": "restart under faketime -f OFFSET (jump between runs)",
           "faketime_probe": probe.stdout.strip()[:80], "runs": runs, "rate": RATE, "generated": n, "loadgen": gen,
           "recovery_s_each": [r2(x) for x in recov], "recovery_s": None if None in recov else r2(max(recov)),
           "recovery_definition": "restart under the new clock -> first batch at the cloud holding a reading generated after it"}
    rig.finish(rec, n)
    ev = sqlite(db, "SELECT reason||'='||readings FROM eviction")
    rec["evictions"] = ev
    counted = sum(int(x.split("=")[1]) for x in ev.split() if "=" in x)
    return verdict(rec, allowed_missing=counted)


def s_sighup_storm(sc, quick):
    rule = lambda i, k: "".join(f"""
[[rule]]
name = "storm-{i}-{j}"
match = "dev*/seq"
flag_if = "value < -{i + 1}"
""" for j in range(k))
    # The last valid file is observable: its rule flags every 100th reading (seq.flag readings reach the cloud).
    final_rule = """
[[rule]]
name = "final"
match = "dev*/seq"
flag_if = "value % 100 == 0"
"""
    rig = MqttRig(sc, rules=rule(0, 1))
    base = mqtt_config(rig.data, rig.cloudb, rig.field)
    hups, dur = 50, 5.0
    n = int((2 + dur + 4) * RATE)
    load = Load(sc, rig.field, n)
    time.sleep(2)
    t0 = time.monotonic()
    last_valid_rules = None
    for i in range(hups):
        valid = i % 2 == 1          # alternate; the 50th (last) is valid
        if not valid:
            text = base + rule(i, 1) + ('\n[[rule]]\nname = "broken"\nmatch = "dev*/seq"\ndrop_if = "valu > 3"\n' if i % 4 == 0
                                        else "\n[[rule\nname = \n")
        elif i == hups - 1:
            text = base + final_rule; last_valid_rules = 1
        else:
            k = 1 + i % 3; text = base + rule(i, k); last_valid_rules = k
        rig.gw.write_config(text)
        os.kill(rig.gw.pid, signal.SIGHUP)
        time.sleep(max(0, t0 + (i + 1) * dur / hups - time.monotonic()))
    t_end = time.monotonic()
    time.sleep(1)
    reloaded = rig.gw.find("configuration reloaded")
    rejected = rig.gw.find("reload rejected: ")
    last = reloaded[-1][1] if reloaded else ""
    m = re.search(r"rules=(\d+)", last)
    gen = load.wait()
    rec = {"scenario": "sighup-storm", "quick": quick, "sighups": hups, "over_s": dur, "rate": RATE, "generated": n, "loadgen": gen,
           "reloads_applied": len(reloaded), "reloads_rejected": len(rejected), "last_reload_line": last,
           "final_rules_expected": last_valid_rules, "final_rules_logged": int(m.group(1)) if m else None,
           "alive_after_storm": rig.gw.alive(), "recovery_s": None}
    rig.finish(rec, n)
    rep = rec["cloud"] or {}
    # Flags from the final rule: one per 100 readings received after the storm (non_sequence readings).
    rec["flag_readings_at_cloud"] = rep.get("non_sequence")
    verdict(rec, recovery_applies=False)
    if rec["final_rules_logged"] != last_valid_rules or not rep.get("non_sequence"):
        rec["fail_reasons"].append("final configuration is not the last valid one"); rec["result"] = "FAIL"
    if rec["reloads_applied"] + rec["reloads_rejected"] < hups:
        rec["note"] = f"{hups - rec['reloads_applied'] - rec['reloads_rejected']} SIGHUPs coalesced (signals are not queued)"
    return rec


def s_power_cut(sc, quick, sync=None):
    """Power cuts: the gateway runs with BRUME_FAULT_POWERCUT=1 (a test VFS keeps every SQLite
    write that was not fsynced in the process's memory), so each kill -9 loses exactly what a
    power cut would. Readings flow (QoS1 source, ack after commit) and commands are sent
    meanwhile; after every cut the gateway restarts on what reached the "card"."""
    cuts = 20 if quick else 200
    rnd = random.Random(int(os.environ.get("POWERCUT_SEED", "7")))
    extra = f'[buffer]\nsynchronous = "{sync}"\n' if sync else ""
    actuator = """
[[actuator]]
name = "boiler/setpoint"
via = "load"
topic = "actuators/setpoint/set"
ack_topic = "actuators/setpoint/state"
range = [0, 1000000]
timeout = "2s"
"""
    rig = MqttRig(sc, extra=extra, rules=actuator, env={"BRUME_FAULT_POWERCUT": "1"})
    executed = os.path.join(sc.tmp, "executed.log")
    ready = os.path.join(sc.tmp, "actuator.ready")
    act = sc.spawn([f"{BIN}/firmware-sim", "actuator", "--broker", rig.field.url, "--topic", "actuators/setpoint/set",
                    "--state-topic", "actuators/setpoint/state", "--log", executed, "--ready-file", ready, "--late-ms", "20"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 10
    while not os.path.exists(ready) and time.time() < end: time.sleep(0.02)
    mean_up = 0.65
    n = int((cuts * (mean_up + 0.35) + 6) * RATE)
    load = Load(sc, rig.field, n)
    sent = 0
    not_opened = 0
    time.sleep(1.0)
    for i in range(cuts):
        # A command now and then, so that cuts also land inside the command path.
        for _ in range(2):
            sent += 1
            subprocess.run(["mosquitto_pub", "-p", str(rig.cloudb.port), "-q", "1", "-t", "brume/gw-chaos/commands",
                            "-m", json.dumps({"id": f"pc-{sent}", "actuator": "boiler/setpoint", "value": sent})],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.05, 2 * mean_up))   # the cut lands anywhere: commits, checkpoints, acks, batches
        rig.gw.kill9()
        rig.gw.start(wait_connected=False)
        if not rig.gw.wait_log('msg="MQTT connected"', count=1, since_start=rig.gw.starts, timeout=10):
            not_opened += 1
    gen = load.wait()
    rec = {"scenario": "power-cut" if not sync else f"power-cut-{sync}", "quick": quick, "cuts": cuts, "rate": RATE, "generated": n, "loadgen": gen,
           "synchronous": sync or "default"}
    rig.finish(rec, n)
    act.terminate()
    runs = [l.strip() for l in open(executed)] if os.path.exists(executed) else []
    rec["commands_sent"] = sent
    rec["commands_executed"] = len(runs)
    rec["commands_run_twice"] = len(runs) - len(set(runs))
    corrupt = [l for (_, _, l) in rig.gw.lines if "is corrupt" in l or "cannot open the command journal" in l or "cannot open the outbox" in l]
    rec["databases_not_opening"] = len(corrupt) + not_opened
    rec["batch_id_conflicts"] = rec.get("mismatched_duplicate_batches")
    verdict(rec, recovery_applies=False)
    # A power cut may lose a batch's record (not fsynced) after it was sent: its readings go
    # again under a new run's id (at least once, docs/wire-format.md). What must hold is that
    # no id ever names two batches (mismatched duplicates, checked by verdict).
    rec["fail_reasons"] = [r for r in rec["fail_reasons"] if "duplicate readings >" not in r]
    rec["result"] = "PASS" if not rec["fail_reasons"] else "FAIL"
    if rec["commands_run_twice"]: rec["fail_reasons"].append(f"{rec['commands_run_twice']} commands ran twice")
    if rec["databases_not_opening"]: rec["fail_reasons"].append(f"{rec['databases_not_opening']} starts with a database that would not open: {corrupt[:2]}")
    if rec["fail_reasons"]: rec["result"] = "FAIL"
    return rec


def s_io_error(sc, quick):
    """A failing SD card: the power-cut VFS makes every write and fsync of the outbox fail with
    an I/O error while a flag file exists (BRUME_FAULT_IOERR_FILE). Expected: /readyz turns
    not ready within ~1 s, the gateway exits with status 4 once the fault has lasted
    fault_restart_after x 1.5 (3 s here), nothing is acknowledged meanwhile, and after the
    restart (as systemd's Restart=on-failure would; the card works again) nothing is lost."""
    flag = os.path.join(sc.tmp, "ioerr")
    api = free_port()
    # hold = "0s": every reading is committed, so the failing card is met at once (with the
    # default hold and the cloud online, readings acknowledged from memory are never written,
    # and the fault shows at the first commit: an outage, a slow cloud, a serial reading).
    extra = f'[api]\nlisten = "127.0.0.1:{api}"\n[buffer]\nfault_restart_after = "3s"\nhold = "0s"\n'
    rig = MqttRig(sc, extra=extra, env={"BRUME_FAULT_POWERCUT": "1", "BRUME_FAULT_IOERR_FILE": flag})
    n = int(20 * RATE)
    load = Load(sc, rig.field, n)
    time.sleep(3)
    open(flag, "w").close()
    t_fault = time.monotonic()
    t_notready = None
    while time.monotonic() - t_fault < 10 and t_notready is None:
        try:
            import urllib.request
            urllib.request.urlopen(f"http://127.0.0.1:{api}/readyz", timeout=1).read()
        except Exception as e:
            if getattr(e, "code", None) == 503: t_notready = time.monotonic()
        time.sleep(0.1)
    try:
        code = rig.gw.p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    t_exit = time.monotonic()
    rig.gw.exit_codes.append(code)
    os.unlink(flag)
    rig.gw.start(wait_connected=False)
    t_up = time.monotonic()
    gen = load.wait()
    rec = {"scenario": "io-error", "quick": quick, "rate": RATE, "generated": n, "loadgen": gen,
           "not_ready_after_s": r2(t_notready - t_fault) if t_notready else None,
           "exit_code": code, "exit_after_s": r2(t_exit - t_fault),
           "storage_fault_logged": len(rig.gw.find("outbox storage fault")) > 0}
    want = load.seq_at(t_up)
    rig.cloud.wait_max_seq(want, 20)
    rec["recovery_s"] = r2((rig.cloud.first_seq_at_least(t_up, want) or t_up) - t_up)
    rig.finish(rec, n)
    rec["gateway_exit_codes"] = [c for c in rec["gateway_exit_codes"] if c != 4]
    verdict(rec, kills=1)  # the exit on the fault is a stop without a clean drain
    if code != 4: rec["fail_reasons"].append(f"exit code {code}, expected 4"); rec["result"] = "FAIL"
    if t_notready is None or t_notready - t_fault > 2: rec["fail_reasons"].append("/readyz did not turn not ready within 2 s"); rec["result"] = "FAIL"
    return rec


def s_power_cut_normal(sc, quick):
    """The same cuts with synchronous = "normal": what the fsync per commit buys (evidence)."""
    return s_power_cut(sc, quick, sync="normal")


SCENARIOS = {
    "kill9": s_kill9, "power-cut": s_power_cut, "power-cut-normal": s_power_cut_normal, "io-error": s_io_error, "cloud-down": s_cloud_down, "field-restart": s_field_restart, "serial-replug": s_serial_replug,
    "disk-full": s_disk_full, "corrupt-db": s_corrupt_db, "clock-jump": s_clock_jump, "clock-jump-restart": s_clock_jump_restart, "sighup-storm": s_sighup_storm,
    "uplink-flap": s_uplink_flap,
}


def main():
    global BIN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", help=f"any of: {' '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="short CI parameters")
    ap.add_argument("--bin", required=True, help="folder holding brume and firmware-sim")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs) even on PASS")
    ap.add_argument("--out", help="append each JSON record to this file (JSON lines)")
    a = ap.parse_args()
    names = a.scenarios or list(SCENARIOS)
    for s in names:
        if s not in SCENARIOS: ap.error(f"unknown scenario {s!r}; known: {' '.join(SCENARIOS)}")
    # Private copy: another build in the tree may replace the binaries while we run.
    priv = tempfile.mkdtemp(prefix="brume-chaos-bin-")
    for b in ("brume", "firmware-sim"):
        shutil.copy2(os.path.join(a.bin, b), priv)
    BIN = priv
    import hashlib
    ident = {b: {"mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(os.path.join(a.bin, b)))),
                 "sha256": hashlib.sha256(open(os.path.join(priv, b), "rb").read()).hexdigest()[:12]} for b in ("brume", "firmware-sim")}
    log(f"binaries: {ident}")
    results = []
    try:
        for s in names:
            log(f"scenario {s}{' (quick)' if a.quick else ''}")
            sc = Scenario(s)
            rec = {"scenario": s, "result": "ERROR", "logs": sc.tmp}
            try:
                rec = SCENARIOS[s](sc, a.quick)
            except BaseException as e:
                import traceback; traceback.print_exc()
                rec["error"] = repr(e)
                if isinstance(e, KeyboardInterrupt): sc.cleanup(keep=True); raise
            finally:
                sc.cleanup(keep=a.keep or rec.get("result") != "PASS")
            rec["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            rec["binaries"] = ident
            print(json.dumps(rec), flush=True)
            if a.out:
                with open(a.out, "a") as f: f.write(json.dumps(rec) + "\n")
            log(f"{s}: {rec.get('result')} {'; '.join(rec.get('fail_reasons', []))}")
            results.append(rec)
    finally:
        shutil.rmtree(priv, ignore_errors=True)
    print("\nSUMMARY")
    for r in results:
        print(f"  {r['scenario']:14} {r.get('result'):7} lost={r.get('lost')} dup={r.get('duplicate_readings')}/"
              f"{r.get('duplicate_batches')}b mismatched={r.get('mismatched_duplicate_batches')} recovery={r.get('recovery_s')} "
              f"rss={r.get('rss_before_kb')}->{r.get('rss_after_kb')} kB {'; '.join(r.get('fail_reasons', []))}")
    sys.exit(0 if all(r.get("result") in ("PASS", "NOT RUN") for r in results) else 1)


if __name__ == "__main__":
    main()
