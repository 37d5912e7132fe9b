import BrumeCore
import BrumeMQTT
import BrumeTestKit
import Foundation
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real InfluxDB 1.x (Debian `influxdb`) on loopback, in a temporary directory.
final class Influx {
    let port = TestKit.freePort()
    let child: Child
    init(dir: String) throws {
        let d = "\(dir)/influx"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        try """
        reporting-disabled = true
        bind-address = "127.0.0.1:\(TestKit.freePort())"
        [meta]
          dir = "\(d)/meta"
        [data]
          dir = "\(d)/data"
          wal-dir = "\(d)/wal"
        [http]
          enabled = true
          bind-address = "127.0.0.1:\(port)"
          log-enabled = false
        """.write(toFile: "\(d)/influxdb.conf", atomically: true, encoding: .utf8)
        child = try Child("/usr/bin/influxd", ["-config", "\(d)/influxdb.conf"], dir: d, name: "influxd")
        guard TestKit.waitUntil(timeout: 30, { TestKit.canConnect(port: port) }) else { throw TestError("influxd did not start: \(child.stderr.suffix(500))") }
        usleep(300_000)
        let r = try TestHTTP.request("POST", port: port, path: "/query?q=CREATE%20DATABASE%20brume")
        guard r.status == 200 else { throw TestError("CREATE DATABASE: \(r.status) \(r.body)") }
    }
    /// SELECT count(value) FROM measurement.
    func count(_ measurement: String) -> Int {
        guard let r = try? TestHTTP.request(port: port, path: "/query?db=brume&q=SELECT%20count(value)%20FROM%20%22\(measurement)%22"),
              let v = try? JSONParser.parse(Array(r.body.utf8)) else { return -1 }
        return Int(v["results"]?[0]?["series"]?[0]?["values"]?[0]?[1]?.number ?? 0)
    }
    func distinctValues(_ measurement: String) -> Int {
        guard let r = try? TestHTTP.request(port: port, path: "/query?db=brume&q=SELECT%20count(distinct(value))%20FROM%20%22\(measurement)%22"),
              let v = try? JSONParser.parse(Array(r.body.utf8)) else { return -1 }
        return Int(v["results"]?[0]?["series"]?[0]?["values"]?[0]?[1]?.number ?? 0)
    }
    deinit { child.terminate(); _ = child.wait(timeout: 5) }
}

@Suite(.serialized) struct SinksEndToEndTests {
    /// Two uplinks at once: the cloud broker (MQTT) and a local InfluxDB (HTTP, line protocol,
    /// gzip). The cloud is down 30 s: InfluxDB keeps receiving meanwhile; afterwards both have
    /// every reading exactly once.
    @Test func influxAndCloudTogetherOneDownThirtySeconds() throws {
        let dir = TestKit.tempDir()
        let influx = try Influx(dir: dir)
        let rig = try Rig(extraSources: { _ in """
            [uplink.influx]
            kind = "http"
            url = "http://127.0.0.1:\(influx.port)/write?db=brume"
            format = "influx"
            batch_max_readings = 1000
            batch_max_delay = "200ms"
            """ })
        let n = 40_000
        try rig.startCounter(expect: n, timeout: 240)
        try rig.startGateway()
        let lg = try rig.loadgen(count: n, rate: 1000)
        usleep(3_000_000)
        rig.cloud.stop()
        let seqAtStop = influx.count("seq")
        usleep(30_000_000)
        // The cloud has been away for 30 s: InfluxDB was not held back by it.
        let seqDuringOutage = influx.count("seq")
        #expect(seqDuringOutage > seqAtStop + 20_000, "influx kept flowing: \(seqAtStop) → \(seqDuringOutage)")
        let s = try statusJSON(rig)
        let cloud = s["uplinks"]?.elements.first { $0["name"]?.string == "cloud" }
        let inf = s["uplinks"]?.elements.first { $0["name"]?.string == "influx" }
        #expect((cloud?["backlog"]?.number ?? 0) > 20_000, "the cloud's backlog waits in the outbox")
        #expect((inf?["backlog"]?.number ?? 99_999) < 5_000)
        #expect((inf?["compression_ratio"]?.number ?? 0) > 3, "gzip: \(inf?["compression_ratio"] ?? .null)")
        try rig.cloud.start()
        #expect(lg.wait(timeout: 60) == 0)
        let r = try rig.report(timeout: 240)
        #expect(r.unique == n && r.missing == 0, "cloud: \(r)")
        #expect(r.mismatched_duplicate_batches == 0)
        #expect(TestKit.waitUntil(timeout: 30) { influx.count("seq") == n }, "influx has \(influx.count("seq")) of \(n)")
        #expect(influx.distinctValues("seq") == n, "every sequence number once in InfluxDB")
        // Both acknowledged everything: the outbox is empty.
        #expect(TestKit.waitUntil(timeout: 10) { ((try? statusJSON(rig))?["buffer"]?["readings"]?.number ?? 1) == 0 })
    }

    /// `influx_measurement = "device"` against a real InfluxDB: a field per metric, so a device
    /// with a string and a number metric is written whole (one `value` field for both was a
    /// field-type conflict: InfluxDB refused the batch and it was dead-lettered).
    @Test func influxDeviceMeasurementKeepsAFieldPerMetric() throws {
        let dir = TestKit.tempDir()
        let influx = try Influx(dir: dir)
        let rig = try Rig(extraSources: { _ in """
            [uplink.influx]
            kind = "http"
            url = "http://127.0.0.1:\(influx.port)/write?db=brume"
            format = "influx"
            influx_measurement = "device"
            batch_max_delay = "200ms"
            """ })
        try rig.startGateway()
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        let readings = sampleReadings(from: 0, count: 20, base: base)
        try publishField(rig, readings)
        func rows(_ q: String) -> [JSONValue] {
            guard let r = try? TestHTTP.request(port: influx.port, path: "/query?db=brume&q=" + q),
                  let v = try? JSONParser.parse(Array(r.body.utf8)) else { return [] }
            return v["results"]?[0]?["series"]?[0]?["values"]?.elements ?? []
        }
        // One point per reading (distinct sub-millisecond times), one field per metric.
        #expect(TestKit.waitUntil(timeout: 30) { rows("SELECT%20temp%20FROM%20boiler").count == 20 && rows("SELECT%20state%20FROM%20boiler").count == 20
                    && rows("SELECT%20open%20FROM%20door").count == 20 },
                "boiler \(rows("SELECT%20temp%20FROM%20boiler").count)+\(rows("SELECT%20state%20FROM%20boiler").count), door \(rows("SELECT%20open%20FROM%20door").count)")
        #expect(rows("SELECT%20temp%20FROM%20boiler").compactMap { $0[1]?.number } == readings.filter { $0.metric == "temp" }.map { if case .number(let d) = $0.value { d } else { -1 } })
        #expect(rows("SELECT%20state%20FROM%20boiler").compactMap { $0[1]?.string }.count == 20, "the string metric beside the number one")
        let s = try statusJSON(rig)["uplinks"]?.elements.first { $0["name"]?.string == "influx" }
        #expect(s?["dead_lettered"]?.number == 0, "\(s ?? .null)")
    }

    /// HTTPS with a test CA and client certificate (mTLS), OAuth2 client credentials, gzip,
    /// and an endpoint that answers 401, 429 (Retry-After), 500 and 400 along the way.
    @Test func httpsOAuth2RetriesAndDeadLetters() throws {
        let dir = TestKit.tempDir()
        let pki = try TestPKI(dir: dir)
        let port = TestKit.freePort()
        let script = fixturesDirectory() + "/https_ingest.py"
        let server = try Child("/usr/bin/python3", [script, "--port", "\(port)", "--cert", pki.serverCert, "--key", pki.serverKey, "--ca", pki.ca,
                                                    "--require-client-cert", "--log", "\(dir)/ingest.log", "--stats", "\(dir)/stats.json", "--ttl", "3"],
                               dir: dir, name: "https")
        defer { server.terminate() }
        #expect(TestKit.waitUntil(timeout: 10) { TestKit.canConnect(port: port) })
        try "s3cret\n".write(toFile: "\(dir)/client.secret", atomically: true, encoding: .utf8)
        chmod("\(dir)/client.secret", 0o600)
        let rig = try Rig(extraSources: { _ in """
            [uplink.ingest]
            kind = "http"
            url = "https://127.0.0.1:\(port)/ingest"
            batch_max_readings = 200
            batch_max_delay = "200ms"
            [uplink.ingest.oauth2]
            token_url = "https://127.0.0.1:\(port)/oauth/token"
            client_id = "gw-e2e"
            client_secret_file = "\(dir)/client.secret"
            [uplink.ingest.tls]
            ca_file = "\(pki.ca)"
            cert_file = "\(pki.clientCert)"
            key_file = "\(pki.clientKey)"
            """ })
        try rig.startGateway()
        let field = try MQTTClient.testPublisher(port: rig.field.port)
        // 3000 readings over ~6 s (tokens live 3 s: refreshed along the way), one poisoned batch in the middle.
        for i in 1...3000 {
            let dev = i == 1500 ? "poison" : "dev\(i % 5)"
            try field.publish(topic: "load/\(dev)/seq", payload: Array(#"{"v":\#(i),"ts":\#(1_764_000_000_000 + i)}"#.utf8), qos: 1)
            if i % 100 == 0 { usleep(200_000) }
        }
        func accepted() -> [Int] {
            executedValues("\(dir)/ingest.log").flatMap { line -> [Int] in
                guard let j = try? JSONParser.parse(Array(line.utf8)) else { return [] }
                return j["readings"]?.elements.compactMap { $0[2]?.number.map(Int.init) } ?? []
            }
        }
        func stats() -> JSONValue { (try? JSONParser.parse(Array(((try? String(contentsOfFile: "\(dir)/stats.json", encoding: .utf8)) ?? "{}").utf8))) ?? .null }
        // Everything but the poisoned batch arrives, each reading once (batches deduplicated by id).
        #expect(TestKit.waitUntil(timeout: 60) { Set(accepted()).count >= 2800 && ((try? statusJSON(rig))?["buffer"]?["readings"]?.number ?? 1) == 0 },
                "accepted \(Set(accepted()).count); \(stats()); gateway: \(rig.gateway!.stderr.suffix(1500))")
        let lines = executedValues("\(dir)/ingest.log").compactMap { try? JSONParser.parse(Array($0.utf8)) }
        let batchIDs = lines.compactMap { $0["batch"]?.string }
        #expect(Set(batchIDs).count == batchIDs.count, "no batch accepted twice")
        #expect(lines.allSatisfy { $0["batch"]?.string == $0["header"]?.string }, "X-Brume-Batch carries the batch id")
        let got = Set(accepted())
        #expect(!got.contains(1500))
        let lost = Set(1...3000).subtracting(got)
        // Only the poisoned batch's readings are missing, and they are in the dead-letter table.
        let st = try statusJSON(rig)
        let up = st["uplinks"]?.elements.first { $0["name"]?.string == "ingest" }
        #expect(Double(lost.count) == up?["dead_lettered"]?.number, "lost \(lost.count), dead-lettered \(up?["dead_lettered"] ?? .null)")
        #expect(lost.count <= 200)
        let (ds, dl, de) = try brumeCLI(rig, ["buffer", "dead-letters", "--export", dir], name: "dead-letters")
        #expect(ds == 0, "\(de)")
        #expect(dl.contains("400") && dl.contains("ingest"), "\(dl)")
        // The server saw: a revoked token (401) → a new token; 429 and 500 retried; gzip bodies; our client certificate.
        let sv = stats()
        #expect((sv["tokens_issued"]?.number ?? 0) >= 3, "tokens refreshed before expiry and after the 401: \(sv)")
        #expect(sv["status"]?["429"]?.number == 1 && sv["status"]?["500"]?.number == 1 && sv["status"]?["400"]?.number ?? 0 >= 1)
        #expect((sv["gzip"]?.number ?? 0) > 0 && sv["plain"]?.number == 0)
        #expect(sv["client_cert"]?.string == "gw-e2e", "mTLS: the gateway presented its client certificate")
        // Secrets stay out of the log and the status.
        #expect(!rig.gateway!.stderr.contains("s3cret") && !rig.gateway!.stderr.contains("tok-"))
        #expect(!(try TestHTTP.request(port: rig.apiPort, path: "/api/v1/status").body.contains("s3cret")))
    }

    /// The cloud broker requires client certificates: the gateway connects with its own;
    /// a client without one is refused. The uplink lists a dead node first: failover.
    @Test func mqttsWithClientCertificatesAndFailover() throws {
        let dir = TestKit.tempDir()
        let pki = try TestPKI(dir: dir)
        let secure = try Mosquitto(dir: dir, name: "secure", tls: pki, requireClientCert: true)
        let dead = TestKit.freePort()
        let rig = try Rig(extraSources: { _ in """
            [uplink.secure]
            kind = "mqtt"
            urls = ["mqtts://127.0.0.1:\(dead)", "mqtts://127.0.0.1:\(secure.port)"]
            topic_prefix = "secure/{gateway}"
            batch_max_delay = "100ms"
            [uplink.secure.tls]
            ca_file = "\(pki.ca)"
            cert_file = "\(pki.clientCert)"
            key_file = "\(pki.clientKey)"
            """ })
        // Without a client certificate, the broker refuses.
        let anon = try Child("/usr/bin/mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(secure.port)", "--cafile", pki.ca, "-t", "x", "-m", "1"], dir: dir, name: "anon")
        #expect(anon.wait(timeout: 10) != 0, "a client without a certificate must be refused")
        let rogue = try Child("/usr/bin/mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(secure.port)", "--cafile", pki.ca, "--cert", pki.rogueCert, "--key", pki.rogueKey,
                                                         "-t", "x", "-m", "1"], dir: dir, name: "rogue")
        #expect(rogue.wait(timeout: 10) != 0, "a certificate from another CA must be refused")
        // A subscriber with a client certificate collects what the gateway sends.
        let got = Locked<Set<Int>>([])
        let sub = MQTTClient(options: MQTTClientOptions(host: "127.0.0.1", port: secure.port, clientID: "secure-sub", cleanSession: true,
                                                        tls: MQTTTLS(caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey, verifyHostname: true)),
                             logger: Logger(label: "secure-sub"),
                             handlers: MQTTHandlers(onMessage: { _, p, _, _ in
                                 if let b = try? TelemetryBatch.decode(p) {
                                     got.withLock { s in for r in b.readings { if case .number(let v) = r.value { s.insert(Int(v)) } } }
                                 }
                             }))
        sub.addSubscription("secure/+/telemetry", qos: 1)
        sub.start()
        defer { sub.stop() }
        #expect(TestKit.waitUntil(timeout: 10) { sub.isConnected }, "a client with a certificate of the CA connects")
        usleep(500_000)
        try rig.startCounter(expect: 2000)
        try rig.startGateway()
        let lg = try rig.loadgen(count: 2000, rate: 2000)
        #expect(lg.wait(timeout: 30) == 0)
        let r = try rig.report(timeout: 60)
        #expect(r.unique == 2000)
        #expect(TestKit.waitUntil(timeout: 15) { ((try? statusJSON(rig))?["buffer"]?["readings"]?.number ?? 1) == 0 }, "the secure uplink acknowledged everything too")
        #expect(TestKit.waitUntil(timeout: 10) { got.withLock { $0.count } == 2000 }, "the secure uplink delivered \(got.withLock { $0.count }) of 2000")
        #expect(rig.gateway!.stderr.contains("127.0.0.1:\(dead)"), "the dead node was tried (and failed over)")
    }

    /// Routing: a second MQTT uplink carries only what its patterns match; the primary carries
    /// everything; the outbox empties once both are done.
    @Test func routingByMatchPatterns() throws {
        let dir = TestKit.tempDir()
        let second = try Mosquitto(dir: dir, name: "second")
        let rig = try Rig(extraSources: { _ in """
            [uplink.dev1-only]
            kind = "mqtt"
            url = "\(second.url)"
            topic_prefix = "second/{gateway}"
            match = ["dev1/*", "dev2/seq"]
            batch_max_delay = "100ms"
            """ })
        let collector = try TelemetryCollector(port: second.port, topic: "second/+/telemetry")
        try rig.startCounter(expect: 3000)
        try rig.startGateway()
        let lg = try rig.loadgen(count: 3000, rate: 3000)
        #expect(lg.wait(timeout: 30) == 0)
        let r = try rig.report(timeout: 60)
        #expect(r.unique == 3000, "the primary carries everything")
        #expect(TestKit.waitUntil(timeout: 10) { ((try? statusJSON(rig))?["buffer"]?["readings"]?.number ?? 1) == 0 })
        let got = collector.readings.withLock { $0 }
        #expect(Set(got.map(\.device)) == ["dev1", "dev2"], "\(Set(got.map(\.device)))")
        // The load generator spreads sequence numbers round robin over dev0...dev9: 300 each.
        #expect(got.count == 600, "dev1 and dev2, each reading once: \(got.count)")
    }

    /// A metered link: the uplink keeps to its byte budget.
    @Test func bandwidthCapHoldsTheUplinkToItsBudget() throws {
        let rig = try Rig(extraSources: { _ in "" }, uplinkExtra: "max_bytes_per_second = \"16KiB\"\nbatch_max_readings = 100\n")
        try rig.startCounter(expect: 3000)
        try rig.startGateway()
        let t0 = Date()
        let lg = try rig.loadgen(count: 3000, rate: 0)
        #expect(lg.wait(timeout: 30) == 0)
        let r = try rig.report(timeout: 120)
        let secs = Date().timeIntervalSince(t0)
        #expect(r.unique == 3000)
        let rate = Double(r.bytes) / secs
        #expect(rate < 16 * 1024 * 1.3, "\(Int(rate)) bytes/s over a 16 KiB/s cap")
        #expect(secs > Double(r.bytes) / (16 * 1024) * 0.7, "\(secs) s for \(r.bytes) bytes")
    }
}
