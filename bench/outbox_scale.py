#!/usr/bin/env python3
"""The outbox with a million one-reading segments (see bench/outbox-scale.sh).

1. A release gateway commits one reading; its segment row is then copied N times with sqlite3
   (first_seq = last_seq = k, created_ms one second apart): what a long outage at one reading
   per commit leaves behind.
2. Each hot query is timed the old way (a scan of the segment table) and the new way (the
   primary key), median of 7, with Python's sqlite3 (the system libsqlite3, as brume links).
3. The gateway runs on that file with the cloud broker down: time to "brume starting", CPU per
   second while idle (age eviction runs every second), GET /api/v1/status latency (stats());
   then the cloud broker starts and the drain of N readings is timed (an ack per batch removes
   segments).
Prints one JSON record.
"""
import argparse, json, os, sqlite3, statistics, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos  # noqa: E402  (brokers, gateway, cloud counter)


def timed(db, sql, args=(), runs=7):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        db.execute(sql, args).fetchall()
        out.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(out), 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--segments", type=int, default=1_000_000)
    a = ap.parse_args()
    chaos.BIN = a.bin
    n = a.segments
    sc = chaos.Scenario("outbox-scale")
    rec = {"bench": "outbox-scale", "segments": n}
    try:
        field = chaos.Broker(sc, "field")
        cloudb = chaos.Broker(sc, "cloud")
        cloudb.stop()                      # away until the drain
        cloud_port = cloudb.port
        data = os.path.join(sc.tmp, "var")
        api = chaos.free_port()
        cfg = f"""[gateway]
id = "gw-scale"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[uplink.cloud]
kind = "mqtt"
url = "mqtt://127.0.0.1:{cloud_port}"
batch_max_readings = 500
batch_max_delay = "100ms"
[[source]]
name = "load"
kind = "mqtt"
url = "{field.url}"
subscribe = ["load/+/+"]
payload = {{ json = {{ value = "/v", time = "/ts" }} }}
"""
        gw = chaos.Gateway(sc, cfg)
        gw.start(wait_connected=False)
        gw.wait_log('msg="MQTT connected"', count=1, timeout=10)
        subprocess.run(["mosquitto_pub", "-p", str(field.port), "-q", "1", "-t", "load/d1/seq", "-m", '{"v":1,"ts":1764169999000}'], check=True)
        time.sleep(1.0)
        gw.term()
        path = os.path.join(data, "outbox.db")
        db = sqlite3.connect(path)
        first = db.execute("SELECT first_seq, created_ms, data FROM segment ORDER BY first_seq LIMIT 1").fetchone()
        assert first, "no segment committed"
        t0 = time.monotonic()
        now_ms = int(time.time() * 1000)
        base = now_ms - n * 500           # two readings per second, ending now (younger than max_age = 7 d)
        db.execute("DELETE FROM segment")
        db.execute(f"""WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
                       INSERT INTO segment(first_seq, last_seq, count, bytes, created_ms, data)
                       SELECT i, i, 1, length(?1), {base} + i * 500, ?1 FROM k""", (first[2],))
        db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (n + 1,))
        db.execute("UPDATE meta SET value = 0 WHERE key = 'done_seq'")
        db.execute("UPDATE meta SET value = ? WHERE key = 'committed'", (n,))
        db.execute("DELETE FROM meta WHERE key LIKE 'cursor:%'")
        db.execute("DELETE FROM batch")
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rec["fill_s"] = round(time.monotonic() - t0, 2)
        rec["file_mb"] = round(os.path.getsize(path) / 1e6, 1)
        deep = n * 9 // 10
        cutoff = base  # nothing older: the common case, every second
        q = {
            "age eviction (every second)": (
                "SELECT MAX(last_seq) FROM segment WHERE created_ms < ? AND last_seq > 0", (cutoff,),
                "SELECT last_seq, created_ms FROM segment ORDER BY first_seq LIMIT 1", ()),
            "segment removal (every ack of a 500-reading batch)": (
                "SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM segment WHERE last_seq <= ?", (500,),
                "SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM segment WHERE first_seq <= ?1 AND last_seq <= ?1", (500,)),
            "oldest reading (every status / metrics request)": (
                "SELECT MIN(created_ms) FROM segment WHERE last_seq > ?", (0,),
                "SELECT created_ms FROM segment ORDER BY first_seq LIMIT 1", ()),
            "segment at a sequence 90% deep (a batch of a lagging uplink)": (
                "SELECT first_seq, last_seq, created_ms, data FROM segment WHERE last_seq >= ? ORDER BY first_seq LIMIT 1", (deep,),
                """SELECT first_seq, last_seq, created_ms, data FROM segment
                   WHERE first_seq >= COALESCE((SELECT MAX(first_seq) FROM segment WHERE first_seq <= ?1), ?1) AND last_seq >= ?1
                   ORDER BY first_seq LIMIT 1""", (deep,)),
        }
        rec["queries_ms"] = {name: {"before": timed(db, old, oa), "after": timed(db, new, na)} for name, (old, oa, new, na) in q.items()}
        db.close()
        # The gateway on that file, cloud away.
        t_start = time.monotonic()
        gw.start(wait_connected=False)
        gw.wait_log("brume starting", since_start=gw.starts, timeout=120)
        rec["startup_ms"] = round((gw.find("brume starting", since_start=gw.starts)[0][0] - t_start) * 1000)
        time.sleep(3)
        def cpu():
            f = open(f"/proc/{gw.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        c0, w0 = cpu(), time.monotonic()
        time.sleep(20)
        rec["idle_cpu_percent_cloud_down"] = round((cpu() - c0) / (time.monotonic() - w0) * 100, 2)
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            urllib.request.urlopen(f"http://127.0.0.1:{api}/api/v1/status", timeout=10).read()
            lat.append((time.perf_counter() - t) * 1000)
        rec["status_ms_median"] = round(statistics.median(lat), 2)
        # The cloud comes back: the drain.
        cloudb.start()
        counter = chaos.Cloud(sc, cloudb, first=1)
        t_up = time.monotonic()
        last, last_t = -1, time.monotonic()
        while counter.readings() < n and time.monotonic() - t_up < 600:
            time.sleep(0.2)
            if counter.readings() != last:
                last, last_t = counter.readings(), time.monotonic()
            elif time.monotonic() - last_t > 10:
                break  # no progress for 10 s
        rec["drain_s"] = round((last_t if counter.readings() < n else time.monotonic()) - t_up, 1)
        rec["drained"] = counter.readings()
        rec["drain_readings_per_s"] = round(counter.readings() / max(0.001, rec["drain_s"]))
        gw.term()
        rec["gateway_exit_codes"] = gw.exit_codes
    finally:
        sc.cleanup()
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
