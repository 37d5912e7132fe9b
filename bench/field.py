#!/usr/bin/env python3
"""Disk bytes per reading at field rates (see bench/field.sh).

For each rate (1, 10, 100, 1,000 readings/s) and cloud state (online: the cloud broker up;
offline: down for the whole case): a fresh field broker (Mosquitto's default in-flight window,
20), cloud broker and gateway with the
shipped default configuration (QoS1 MQTT source with ack after commit; one MQTT uplink), the
load generator at that rate, and /proc/PID/io write_bytes of the gateway over the steady part
(after a warm-up). Prints one JSON record per case and a table: bytes per reading and GB/day.
`--variant NAME='[buffer] lines'` runs every case again with those settings (e.g. before/after);
`NAME='[buffer] lines|[[source]] lines'` sets source keys too (e.g. `mqtt_version = "3.1.1"`).
`--block` (root) puts the data folder on an ext4 file system on a loop device and also reports
what reached the block device (/proc/diskstats sectors written, `sync` at both ends of the
window: journal and metadata included) — what an SD card would see.
"""
import argparse, json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos  # noqa: E402


def write_bytes(pid):
    for line in open(f"/proc/{pid}/io"):
        k, v = line.split(":")
        if k == "write_bytes": return int(v)
    return 0


class LoopFS:
    """An ext4 file system on a loop device: the block layer's view of the gateway's writes."""
    def __init__(self, size_mb=1024):
        self.img = tempfile.mktemp(prefix="brume-field-", suffix=".img")
        subprocess.check_call(["truncate", "-s", f"{size_mb}M", self.img])
        self.dev = subprocess.check_output(["losetup", "-f", "--show", self.img]).decode().strip()
        subprocess.check_call(["mkfs.ext4", "-q", "-F", self.dev])
        self.mnt = tempfile.mkdtemp(prefix="brume-loop-")
        subprocess.check_call(["mount", "-o", "noatime", self.dev, self.mnt])

    def sectors_written(self):
        subprocess.call(["sync"])
        name = os.path.basename(self.dev)
        for line in open("/proc/diskstats"):
            f = line.split()
            if f[2] == name: return int(f[9])
        return 0

    def close(self):
        subprocess.call(["umount", self.mnt])
        subprocess.call(["losetup", "-d", self.dev])
        os.unlink(self.img)
        os.rmdir(self.mnt)


def case(rate, online, seconds, buffer_extra, source_extra="", loop=None, warm=3.0):
    sc = chaos.Scenario(f"field-{rate}-{'on' if online else 'off'}")
    try:
        # The field broker as installed: Mosquitto's defaults (max_inflight_messages 20).
        field = chaos.Broker(sc, "field", inflight=20)
        cloud = chaos.Broker(sc, "cloud")
        if not online: cloud.stop()
        data = os.path.join(loop.mnt if loop else sc.tmp, f"var-{rate}-{int(online)}-{time.monotonic_ns()}")
        cfg = f"""[gateway]
id = "gw-field"
data_dir = "{data}"
[api]
enabled = false
[buffer]
{buffer_extra}
[uplink.cloud]
kind = "mqtt"
url = "{cloud.url}"
[[source]]
name = "load"
kind = "mqtt"
url = "{field.url}"
subscribe = ["load/+/+"]
payload = {{ json = {{ value = "/v", time = "/ts" }} }}
{source_extra}
"""
        gw = chaos.Gateway(sc, cfg)
        gw.start(wait_connected=False)
        gw.wait_log('msg="MQTT connected"', count=2 if online else 1, timeout=10)
        n = int(rate * (seconds + warm + 2))
        load = chaos.Load(sc, field, n, rate=rate)
        time.sleep(warm)
        b0 = loop.sectors_written() if loop else 0
        w0, t0, s0 = write_bytes(gw.pid), time.monotonic(), load.seq_at(time.monotonic())
        time.sleep(seconds)
        w1, t1, s1 = write_bytes(gw.pid), time.monotonic(), load.seq_at(time.monotonic())
        b1 = loop.sectors_written() if loop else 0
        readings = max(1, s1 - s0)
        per = (w1 - w0) / readings
        rec = {"rate": rate, "cloud": "online" if online else "offline", "seconds": round(t1 - t0, 1), "readings": readings,
               "write_bytes": w1 - w0, "bytes_per_reading": round(per, 1),
               "gb_per_day": round((w1 - w0) / (t1 - t0) * 86400 / 1e9, 3)}
        if loop:
            blk = (b1 - b0) * 512
            rec.update({"block_bytes": blk, "block_bytes_per_reading": round(blk / readings, 1),
                        "block_gb_per_day": round(blk / (t1 - t0) * 86400 / 1e9, 3)})
        gw.term()
        return rec
    finally:
        sc.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rates", default="1,10,100,1000")
    ap.add_argument("--variant", action="append", default=[], help='NAME=[buffer] lines, e.g. before=\'hold = "0s"\'')
    ap.add_argument("--only-variants", action="store_true", help="do not run the default configuration")
    ap.add_argument("--block", action="store_true", help="data folder on a loop device: also the block layer's bytes")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before the window (the WAL reaches its steady size after wal_autocheckpoint commits)")
    ap.add_argument("--cloud", default="online,offline", help="online, offline or both")
    a = ap.parse_args()
    chaos.BIN = a.bin
    variants = ([] if a.only_variants else [("default", "")]) + [tuple(v.split("=", 1)) for v in a.variant]
    loop = LoopFS() if a.block else None
    out = []
    try:
        for name, extra in variants:
            buf, _, src = extra.partition("|")
            for rate in [int(r) for r in a.rates.split(",")]:
                for online in [c == "online" for c in a.cloud.split(",")]:
                    rec = case(rate, online, a.seconds, buf.replace("\\n", "\n"), src.replace("\\n", "\n"), loop, a.warmup)
                    rec["variant"] = name
                    print(json.dumps(rec), flush=True)
                    out.append(rec)
    finally:
        if loop: loop.close()
    if a.block:
        print("\n| variant | rate | cloud | write_bytes/reading | GB/day | block layer bytes/reading | block GB/day |\n|---|---|---|---|---|---|---|")
        for r in out:
            print(f"| {r['variant']} | {r['rate']}/s | {r['cloud']} | {r['bytes_per_reading']:,} | {r['gb_per_day']} | {r['block_bytes_per_reading']:,} | {r['block_gb_per_day']} |")
        return
    print("\n| variant | rate | cloud | bytes/reading | GB/day |\n|---|---|---|---|---|")
    for r in out:
        print(f"| {r['variant']} | {r['rate']}/s | {r['cloud']} | {r['bytes_per_reading']:,} | {r['gb_per_day']} |")


if __name__ == "__main__":
    main()
