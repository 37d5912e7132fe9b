#!/usr/bin/env python3
"""Disk bytes per reading at field rates (see bench/field.sh).

For each rate (1, 10, 100, 1,000 readings/s) and cloud state (online: the cloud broker up;
offline: down for the whole case): a fresh field broker, cloud broker and gateway with the
shipped default configuration (QoS1 MQTT source with ack after commit; one MQTT uplink), the
load generator at that rate, and /proc/PID/io write_bytes of the gateway over the steady part
(after a warm-up). Prints one JSON record per case and a table: bytes per reading and GB/day.
`--variant NAME='[buffer] lines'` runs every case again with those settings (e.g. before/after).
"""
import argparse, json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos  # noqa: E402


def write_bytes(pid):
    for line in open(f"/proc/{pid}/io"):
        k, v = line.split(":")
        if k == "write_bytes": return int(v)
    return 0


def case(rate, online, seconds, buffer_extra):
    sc = chaos.Scenario(f"field-{rate}-{'on' if online else 'off'}")
    try:
        field = chaos.Broker(sc, "field")
        cloud = chaos.Broker(sc, "cloud")
        if not online: cloud.stop()
        data = os.path.join(sc.tmp, "var")
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
"""
        gw = chaos.Gateway(sc, cfg)
        gw.start(wait_connected=False)
        gw.wait_log('msg="MQTT connected"', count=2 if online else 1, timeout=10)
        warm = 3.0
        n = int(rate * (seconds + warm + 2))
        load = chaos.Load(sc, field, n, rate=rate)
        time.sleep(warm)
        w0, t0, s0 = write_bytes(gw.pid), time.monotonic(), load.seq_at(time.monotonic())
        time.sleep(seconds)
        w1, t1, s1 = write_bytes(gw.pid), time.monotonic(), load.seq_at(time.monotonic())
        readings = max(1, s1 - s0)
        per = (w1 - w0) / readings
        rec = {"rate": rate, "cloud": "online" if online else "offline", "seconds": round(t1 - t0, 1), "readings": readings,
               "write_bytes": w1 - w0, "bytes_per_reading": round(per, 1),
               "gb_per_day": round((w1 - w0) / (t1 - t0) * 86400 / 1e9, 3)}
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
    a = ap.parse_args()
    chaos.BIN = a.bin
    variants = [("default", "")] + [tuple(v.split("=", 1)) for v in a.variant]
    out = []
    for name, extra in variants:
        for rate in [int(r) for r in a.rates.split(",")]:
            for online in (True, False):
                rec = case(rate, online, a.seconds, extra.replace("\\n", "\n"))
                rec["variant"] = name
                print(json.dumps(rec), flush=True)
                out.append(rec)
    print("\n| variant | rate | cloud | bytes/reading | GB/day |\n|---|---|---|---|---|")
    for r in out:
        print(f"| {r['variant']} | {r['rate']}/s | {r['cloud']} | {r['bytes_per_reading']:,} | {r['gb_per_day']} |")


if __name__ == "__main__":
    main()
