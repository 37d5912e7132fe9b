#!/usr/bin/env python3
"""Instructions per reading, end to end, and where they go (valgrind's callgrind).

callgrind counts instructions, not seconds: the same binary and input give the same count
whatever else the shared machine does. The gateway runs the shipped defaults (as bench/e2e.py:
durable outbox, ack after commit, MQTT 5 sources, batches of 500 to a cloud broker); the load is
`mosquitto_pub -l` (QoS 0 or 1) on one topic. Counters are zeroed once both connections are up
and dumped once the cloud has every reading: startup and shutdown are not counted, the
gateway's own timers during the load are.

Usage: bench/callgrind.sh [--readings N] [--qos 0|1] [--keep DIR]
"""
import argparse, os, re, shutil, signal, subprocess, sys, tempfile, time
import e2e

# Stages: (label, regex on the demangled function name). Inclusive cost of the outermost
# matching frame; stages nest (receive includes decode, rules and the outbox append), so the
# table lists each with its parent.
STAGES = [
    ("MQTT source thread: libmosquitto read loop, incl. callbacks", r"^MQTTClient\.pumpGated"),
    ("  receive callback (bridging, topic mapping, decode, pipeline)", r"^MessageReceiver\.receive\(topic:payload:qos:\)$"),
    ("    payload decode", r"^(specialized )?PayloadDecoder\.decode"),
    ("    pipeline: dedup, latest values, rules, outbox append", r"^Pipeline\.accept\(_:from:redelivery:\)$"),
    ("      latest values (status/API)", r"^LatestValues\.record"),
    ("      rules", r"^(specialized )?Rules(Engine)?\.process|^CompiledRules\.process"),
    ("      outbox append (memory)", r"^Outbox\.append"),
    ("  ack gate: wait until durable, PUBACK (QoS 1)", r"^MessageReceiver\.waitUntilDurable"),
    ("outbox writer thread: group commit", r"^(partial apply for )?closure #2 in Outbox\.start\(\)$"),
    ("  segment encoding", r"^(specialized )?(static )?SegmentCodec\.encode"),
    ("  sqlite3_step (all statements)", r"^sqlite3_step$"),
    ("sync loop: batches, encoding, publish", r"^SyncLoop\.pump\(_:\)$"),
    ("  next batch from the database lane", r"^SyncLoop\.nextBatch\(_:\)$"),
    ("  segment decode (readings of a batch)", r"^Outbox\.readings\(of:\)$"),
    ("  batch encoding (v1 JSON)", r"^(static )?WireFormat\.encodeTelemetry"),
    ("  publish (mosquitto_publish_v5)", r"^mosquitto_publish(_v5)?$"),
    ("malloc/free (self, everywhere)", None),
]


def annotate(outfile):
    """function name -> (self Ir, inclusive Ir), demangled."""
    txt = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", outfile],
                         capture_output=True, text=True, check=True).stdout
    incl = {}
    total = None
    for line in txt.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+PROGRAM TOTALS", line) or re.match(r"^\s*([\d,]+)\s+PROGRAM TOTALS", line)
        if m and total is None:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?):(.*)$", line)
        if m:
            ir = int(m.group(1).replace(",", ""))
            fn = m.group(3).strip()
            fn = re.sub(r"\s*\[[^\]]*\]$", "", fn)
            incl[fn] = max(incl.get(fn, 0), ir)
    txt_self = subprocess.run(["callgrind_annotate", "--threshold=100", outfile], capture_output=True, text=True, check=True).stdout
    selfc = {}
    for line in txt_self.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?):(.*)$", line)
        if m:
            fn = re.sub(r"\s*\[[^\]]*\]$", "", m.group(3).strip())
            selfc[fn] = selfc.get(fn, 0) + int(m.group(1).replace(",", ""))
    return total, incl, selfc


def demangle_names(names):
    p = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(names), capture_output=True, text=True)
    out = p.stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--readings", type=int, default=20_000)
    ap.add_argument("--qos", default="0", choices=["0", "1"])
    ap.add_argument("--keep", help="keep the callgrind output here")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    e2e.BIN = a.bin
    n = a.readings
    tmp = tempfile.mkdtemp(prefix="brume-profile-")
    field, fport = e2e.broker(tmp, "field")
    cloud, cport = e2e.broker(tmp, "cloud")
    cfg = os.path.join(tmp, "gateway.toml")
    e2e.write_gateway_config(cfg, f"{tmp}/var", fport, cport, load="pub")
    ready = os.path.join(tmp, "cloud.ready")
    counter = subprocess.Popen([f"{a.bin}/firmware-sim", "cloud", "--broker", f"mqtt://127.0.0.1:{cport}", "--expect", str(n),
                                "--client-id", "profile-cloud", "--ready-file", ready, "--timeout", "1200"],
                               stdout=subprocess.PIPE, text=True)
    while not os.path.exists(ready): time.sleep(0.02)
    # valgrind 3.19 cannot read the toolchain's DWARF ("possibly corrupted debuginfo"): profile a
    # copy without debug information; the symbol table names the functions.
    exe = os.path.join(tmp, "brume")
    subprocess.run(["objcopy", "--strip-debug", f"{a.bin}/brume", exe], check=True)
    out = os.path.join(tmp, "callgrind.out")
    logpath = os.path.join(tmp, "brume.log")
    g = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
                          "--collect-atstart=yes", exe, "run", "--config", cfg],
                         stderr=open(logpath, "w"), stdout=subprocess.DEVNULL)
    try:
        for _ in range(6000):
            if open(logpath).read().count('msg="MQTT connected"') >= 2: break
            time.sleep(0.05)
        else:
            raise RuntimeError("gateway did not connect under valgrind: " + open(logpath).read()[-2000:])
        time.sleep(2)
        subprocess.run(["callgrind_control", "-z", str(g.pid)], check=True, capture_output=True)
        t0 = time.monotonic()
        finish = e2e.publish({"0": "pub0", "1": "pub1"}[a.qos], fport, n, tmp)
        report, _ = counter.communicate(timeout=1500)
        finish()
        subprocess.run(["callgrind_control", "-d", str(g.pid)], check=True, capture_output=True)
        elapsed = time.monotonic() - t0
        g.send_signal(signal.SIGTERM); g.wait(timeout=120)
    finally:
        if g.poll() is None: g.kill()
        for p in (field, cloud): p.terminate(); p.wait()
    r = e2e.json.loads(report.strip().splitlines()[-1])
    dumps = sorted(f for f in os.listdir(tmp) if f.startswith("callgrind.out") and not f.endswith("callgrind.out"))
    dump = os.path.join(tmp, dumps[0]) if dumps else out
    total, incl, selfc = annotate(dump)
    names = list(set(incl) | set(selfc))
    dm = demangle_names(names)
    incl_d, self_d = {}, {}
    for k, v in incl.items(): incl_d[dm.get(k, k)] = max(incl_d.get(dm.get(k, k), 0), v)
    for k, v in selfc.items(): self_d[dm.get(k, k)] = self_d.get(dm.get(k, k), 0) + v
    print(f"readings {n} at QoS {a.qos}: lost {r['missing']}, duplicates {r['duplicates']}, {elapsed:.1f} s under valgrind")
    print(f"instructions per reading, end to end: {total / n:,.0f}\n")
    print("stage (inclusive instructions per reading; stages nest)")
    for label, rx in STAGES:
        if rx is None:
            best = sum(v for k, v in self_d.items() if re.match(r"^(_int_)?(malloc|free|realloc|calloc)$|^_int_free$|^_int_malloc$", k))
        else:
            best = max((v for k, v in incl_d.items() if re.search(rx, k)), default=0)
        print(f"  {best / n:10,.0f}  {label}")
    print(f"\ntop {a.top} functions by own instructions per reading")
    # (After a zeroing, callgrind books the threads' root frames -- clone, start_thread, the
    # thread bodies -- with their whole thread as own cost: left out.)
    own = [(k, v) for k, v in self_d.items() if v < 0.2 * total]
    for k, v in sorted(own, key=lambda kv: -kv[1])[:a.top]:
        print(f"  {v / n:10,.1f}  {k[:150]}")
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
        shutil.copy(dump, os.path.join(a.keep, f"callgrind-qos{a.qos}-{n}.out"))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
