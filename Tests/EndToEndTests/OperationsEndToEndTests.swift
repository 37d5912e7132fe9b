import BrumeCore
import BrumeMQTT
import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs the brume CLI against a rig's config; returns (exit status, stdout, stderr).
func brumeCLI(_ rig: Rig, _ args: [String], name: String, stdin: String? = nil, timeout: Double = 20) throws -> (Int32?, String, String) {
    let c = try Child(TestKit.product("brume"), args + ["--config", rig.config], dir: rig.dir, name: name)
    let status = c.wait(timeout: timeout)
    if status == nil { c.kill9() }
    return (status, c.stdout, c.stderr)
}

func statusJSON(_ rig: Rig) throws -> JSONValue {
    let r = try TestHTTP.request(port: rig.apiPort, path: "/api/v1/status")
    guard r.status == 200 else { throw TestError("status \(r.status): \(r.body)") }
    return try JSONParser.parse(Array(r.body.utf8))
}

extension JSONValue {
    var number: Double? { if case .number(let d) = self { return d } else { return nil } }
    var elements: [JSONValue] { if case .array(let a) = self { return a } else { return [] } }
    var string: String? { if case .string(let s) = self { return s } else { return nil } }
    var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
}

func source(_ status: JSONValue, _ name: String) -> JSONValue? {
    status["sources"]?.elements.first { $0["name"]?.string == name }
}

/// A metric's value in Prometheus text (the first series whose line starts with `prefix`).
/// The value of the series `prefix` (its name and labels as written, without the `gateway` label
/// every series carries).
func metric(_ text: String, _ prefix: String) -> Double? {
    for raw in text.split(separator: "\n") where !raw.hasPrefix("#") {
        var line = String(raw)
        if let r = line.firstRange(of: "gateway=\"") , let end = line[r.upperBound...].firstIndex(of: "\"") {
            var after = line.index(after: end)
            if after < line.endIndex, line[after] == "," { after = line.index(after: after) }
            line.removeSubrange(r.lowerBound..<after)
            line = line.replacingOccurrences(of: ",}", with: "}").replacingOccurrences(of: "{}", with: "")
        }
        guard line.hasPrefix(prefix) else { continue }
        if let v = line.split(separator: " ").last.flatMap({ Double($0) }) { return v }
    }
    return nil
}

@Suite(.serialized) struct OperationsEndToEndTests {
    @Test func apiStatusMetricsLiveStreamAndTheCLI() throws {
        let rig = try Rig()
        try rig.startCounter(expect: 2000)
        try rig.startGateway()
        // Probes.
        #expect(try TestHTTP.request(port: rig.apiPort, path: "/healthz").body == "ok\n")
        #expect(TestKit.waitUntil(timeout: 5) { (try? TestHTTP.request(port: rig.apiPort, path: "/readyz").status) == 200 })
        // A live tail of one device, started before the readings flow.
        let tail = try Child(TestKit.product("brume"), ["tail", "--config", rig.config, "--match", "dev3/*", "--count", "20", "--json"], dir: rig.dir, name: "tail")
        usleep(500_000)
        let lg = try rig.loadgen(count: 2000, rate: 1000)
        #expect(lg.wait(timeout: 30) == 0)
        let report = try rig.report(timeout: 60)
        #expect(report.unique == 2000)
        #expect(tail.wait(timeout: 10) == 0, "brume tail: \(tail.stderr)")
        let lines = tail.stdout.split(separator: "\n")
        #expect(lines.count == 20)
        #expect(lines.allSatisfy { $0.hasPrefix(#"{"d":"dev3","m":""#) }, "\(lines.prefix(3))")

        // The status document: every device of the source, with its last value; the uplink; the buffer.
        let s = try statusJSON(rig)
        let load = try #require(source(s, "load"))
        #expect(load["state"]?.string == "connected")
        #expect(load["readings"]?.number == 2000)
        #expect(load["devices"]?.elements.count == 10)
        #expect(load["devices"]?.elements.allSatisfy { $0["state"]?.string == "online" && ($0["metrics"]?.elements.count ?? 0) >= 1 } == true)
        #expect(s["uplinks"]?[0]?["state"]?.string == "connected")
        #expect(s["uplinks"]?[0]?["readings_acked"]?.number == 2000)
        #expect(s["buffer"]?["readings"]?.number == 0)
        #expect(s["gateway"]?["id"]?.string == "gw-e2e")
        // Latest values, filtered.
        let latest = try JSONParser.parse(Array(try TestHTTP.request(port: rig.apiPort, path: "/api/v1/readings/latest?match=dev1/*").body.utf8))
        #expect(latest.elements.count >= 1 && latest.elements.allSatisfy { $0["device"]?.string == "dev1" })
        #expect(try TestHTTP.request(port: rig.apiPort, path: "/api/v1/readings/latest?match=a***").status == 400, "a bad glob is a clear 400")
        // Prometheus.
        let m = try TestHTTP.request(port: rig.apiPort, path: "/metrics")
        #expect(m.status == 200 && m.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        #expect(metric(m.body, #"brume_source_readings_total{source="load"}"#) == 2000)
        // Every series names its gateway (a fleet in one Prometheus); the exposition passes promtool.
        let series = m.body.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }
        #expect(series.count > 30 && series.allSatisfy { $0.contains(#"gateway="gw-e2e""#) }, "\(series.filter { !$0.contains("gateway=") }.prefix(3))")
        let promtoolPath = ["/usr/local/bin/promtool", "/usr/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }
        #expect(promtoolPath != nil, "promtool is not installed: scripts/install-deps.sh")
        if let promtoolPath {
            try m.body.write(toFile: "\(rig.dir)/metrics.txt", atomically: true, encoding: .utf8)
            let check = try Child("/bin/sh", ["-c", "'\(promtoolPath)' check metrics < '\(rig.dir)/metrics.txt'"], dir: rig.dir, name: "promtool")
            #expect(check.wait(timeout: 30) == 0, "promtool check metrics: \(check.stdout) \(check.stderr)")
        }
        #expect(metric(m.body, "brume_process_cpu_seconds_total") ?? 0 > 0)
        #expect(m.body.contains("# TYPE brume_process_cpu_seconds_total counter"))
        #expect(metric(m.body, #"brume_uplink_readings_acked_total{uplink="cloud"}"#) == 2000)
        #expect(metric(m.body, #"brume_uplink_up{uplink="cloud"}"#) == 1)
        #expect(metric(m.body, "brume_uplink_publish_latency_seconds_count") ?? 0 >= 1)
        #expect(metric(m.body, #"brume_device_last_reading_age_seconds{source="load",device="dev1"}"#) ?? 99 < 30)
        #expect(metric(m.body, "brume_process_resident_memory_bytes") ?? 0 > 1_000_000)
        #expect(m.body.contains("# HELP brume_outbox_readings"))
        // The page.
        let page = try TestHTTP.request(port: rig.apiPort, path: "/")
        #expect(page.status == 200 && page.body.contains("<html") && page.headers["content-type"]?.hasPrefix("text/html") == true)
        // brume status, human and JSON.
        let (st, out, err) = try brumeCLI(rig, ["status"], name: "status")
        #expect(st == 0, "\(err)")
        #expect(out.contains("gateway gw-e2e") && out.contains("load") && out.contains("mqtt connected") && out.contains("dev7"), "\(out)")
        let (stj, outj, _) = try brumeCLI(rig, ["status", "--json"], name: "status-json")
        #expect(stj == 0 && (try? JSONParser.parse(Array(outj.utf8)))?["sources"] != nil)
    }

    @Test func bufferStatsExportAndPurge() throws {
        let rig = try Rig()
        try rig.startGateway()
        rig.cloud.stop()
        let lg = try rig.loadgen(count: 500, rate: 2000)
        #expect(lg.wait(timeout: 30) == 0)
        // In the database (with the cloud away, held readings are committed within a second).
        #expect(TestKit.waitUntil(timeout: 10) {
            let b = (try? statusJSON(rig))?["buffer"]
            return (b?["readings"]?.number ?? 0) >= 500 && b?["in_memory"]?.number == 0
        })
        let (s1, stats, _) = try brumeCLI(rig, ["buffer", "stats", "--json"], name: "stats")
        #expect(s1 == 0)
        #expect((try? JSONParser.parse(Array(stats.utf8)))?["readings"]?.number == 500, "\(stats)")
        let (s2, export, exportErr) = try brumeCLI(rig, ["buffer", "export", "--since", "1h"], name: "export")
        #expect(s2 == 0, "\(exportErr)")
        let rows = export.split(separator: "\n").compactMap { try? JSONParser.parse(Array($0.utf8)) }
        #expect(rows.count == 500)
        #expect(Set(rows.compactMap { $0["seq"]?.number }).count == 500, "every buffered reading once, with its outbox sequence number")
        // Purge asks first; "no" keeps everything.
        let refuse = try Child(TestKit.product("brume"), ["buffer", "purge", "--config", rig.config], dir: rig.dir, name: "purge-no")
        #expect(refuse.wait(timeout: 10) == 1)
        #expect(((try statusJSON(rig))["buffer"]?["readings"]?.number ?? 0) == 500)
        let (s3, purged, purgeErr) = try brumeCLI(rig, ["buffer", "purge", "--yes"], name: "purge")
        #expect(s3 == 0, "\(purgeErr)")
        #expect(purged.contains("purged 500 readings"), "\(purged)")
        let after = try statusJSON(rig)
        #expect(after["buffer"]?["readings"]?.number == 0)
        #expect(after["buffer"]?["evicted"]?["purged"]?.number == 500)
        let m = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect(metric(m, #"brume_outbox_evicted_total{reason="purged"}"#) == 500)
        #expect(try TestHTTP.request("POST", port: rig.apiPort, path: "/api/v1/buffer/purge", headers: ["X-Brume-Request": "1"]).status == 400, "the API wants ?confirm=yes")
    }

    @Test func reloadAddsRemovesAndRestartsSourcesKeepingTheOthers() throws {
        let dir = TestKit.tempDir()
        let serialLink = "\(dir)/tty-probe"
        let serial = try Child(TestKit.product("firmware-sim"), ["serial", "--link", serialLink, "--rate", "20"], dir: dir, name: "probe")
        defer { serial.terminate() }
        #expect(TestKit.waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: serialLink) })
        let probe = """
            [[source]]
            name = "probe"
            kind = "serial"
            port = "\(serialLink)"
            format = "kv"

            [[rule]]
            name = "probe-seq-aside"
            match = "probe/seq"
            drop_if = "value >= 0"          # the probe counts too: keep its numbers out of the cloud counter's
            """
        let rig = try Rig(extraSources: { _ in probe })
        let original = try String(contentsOfFile: rig.config, encoding: .utf8)
        // Only the load's sequence numbers: the probe's and the plant's integral values are not.
        try rig.startCounter(expect: 6000, seqMetric: "seq")
        try rig.startGateway(ready: "source.name=probe")
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        // MQTT load flows through every reload: not one reading may be lost.
        let lg = try rig.loadgen(count: 6000, rate: 1000)
        usleep(1_000_000)
        #expect(TestKit.waitUntil(timeout: 5) { cloud.values("seq").count > 0 || cloud.readings.withLock { $0.contains { $0.device == "probe" } } })

        // 1. Remove the serial source, add an MQTT source on other topics, add a rule.
        let added = original.replacingOccurrences(of: probe, with: """
            [[source]]
            name = "plant"
            kind = "mqtt"
            url = "\(rig.field.url)"
            subscribe = ["plant/+/+"]

            [[rule]]
            name = "plant-double"
            match = "boiler/temperature"
            scale = 2.0
            """)
        try added.write(toFile: rig.config, atomically: true, encoding: .utf8)
        let (r1, out1, err1) = try brumeCLI(rig, ["reload"], name: "reload-1")
        #expect(r1 == 0, "\(out1) \(err1)")
        #expect(out1.contains("sources added: plant") && out1.contains("sources removed: probe") && out1.contains("1 sources unchanged"), "\(out1)")
        let field = try MQTTClient.testPublisher(port: rig.field.port)
        try field.publish(topic: "plant/boiler/temperature", payload: Array("21".utf8), qos: 1)
        #expect(TestKit.waitUntil(timeout: 10) { cloud.readings.withLock { $0.contains { $0.device == "boiler" && $0.value == .number(42) } } },
                "the new source reads and the new rule applies")
        let s1 = try statusJSON(rig)
        #expect(source(s1, "probe") == nil)
        #expect(source(s1, "plant")?["state"]?.string == "connected")
        // The load source was not restarted: its counter kept counting from the start.
        let loadBefore = source(s1, "load")?["readings"]?.number ?? 0
        #expect(loadBefore > 1000)

        // 2. A broken file: rejected with its diagnostics, the running configuration stays.
        try (added + "\n[[source]]\nname = \"bad\"\nkind = \"mqtt\"\nbaud = 9600\n").write(toFile: rig.config, atomically: true, encoding: .utf8)
        let (r2, out2, err2) = try brumeCLI(rig, ["reload"], name: "reload-2")
        #expect(r2 == 1)
        #expect(err2.contains("unknown key \"baud\""), "the same diagnostics as brume check: \(out2) \(err2)")
        // SIGHUP with the same broken file: rejected in the daemon, visible in status and metrics.
        rig.gateway!.signal(SIGHUP)
        #expect(TestKit.waitUntil(timeout: 5) { (try? statusJSON(rig))?["gateway"]?["config"]?["reloads_rejected"]?.number == 1 })
        let s2 = try statusJSON(rig)
        #expect(s2["gateway"]?["config"]?["last_reload"]?["ok"] == .bool(false))
        #expect(s2["gateway"]?["config"]?["last_reload"]?["errors"]?.elements.contains { $0.string?.contains("unknown key \"baud\"") == true } == true)
        #expect(source(s2, "plant") != nil, "still running the last good configuration")
        let m = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect(metric(m, #"brume_config_reloads_total{result="rejected"}"#) == 1)
        #expect(metric(m, #"brume_config_reloads_total{result="applied"}"#) == 1)

        // 3. A change that needs a restart is refused as a whole.
        try added.replacingOccurrences(of: "commit_interval = \"50ms\"", with: "commit_interval = \"100ms\"").write(toFile: rig.config, atomically: true, encoding: .utf8)
        let (r3, out3, _) = try brumeCLI(rig, ["reload"], name: "reload-3")
        #expect(r3 == 1)
        #expect(out3.contains("[buffer] changed: restart brume to apply"), "\(out3)")

        // 4. Back to the original: the serial source returns, plant goes.
        try original.write(toFile: rig.config, atomically: true, encoding: .utf8)
        let (r4, out4, _) = try brumeCLI(rig, ["reload"], name: "reload-4")
        #expect(r4 == 0 && out4.contains("sources added: probe") && out4.contains("sources removed: plant"), "\(out4)")
        #expect(TestKit.waitUntil(timeout: 10) { source((try? statusJSON(rig)) ?? .null, "probe")?["state"]?.string == "connected" })

        #expect(lg.wait(timeout: 30) == 0)
        let report = try rig.report(timeout: 60)
        #expect(report.unique == 6000, "no MQTT reading lost across four reloads")
        #expect(report.missing == 0)
        #expect(report.duplicates == 0)
        let loadAfter = source(try statusJSON(rig), "load")?["readings"]?.number ?? 0
        #expect(loadAfter >= 6000)
    }

    @Test func selfTelemetryReachesTheCloud() throws {
        let rig = try Rig(api: { port in "[api]\nlisten = \"127.0.0.1:\(port)\"\nself_telemetry = \"1s\"" })
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway()
        #expect(TestKit.waitUntil(timeout: 10) { cloud.readings.withLock { $0.filter { $0.device == "brume" && $0.metric == "rss_bytes" }.count >= 2 } })
        let r = cloud.readings.withLock { $0 }.filter { $0.device == "brume" }
        #expect(Set(r.map(\.metric)).isSuperset(of: ["rss_bytes", "cpu_seconds", "outbox_readings", "uplink_up", "sources_connected"]))
        #expect(r.contains { $0.metric == "uplink_up" && $0.value == .number(1) })
    }

    @Test func beyondLoopbackTheAPIWantsItsToken() throws {
        let tokenDir = TestKit.tempDir()
        let tokenFile = "\(tokenDir)/api.token"
        try "s3cret-t0ken\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        chmod(tokenFile, 0o600)
        let rig = try Rig(api: { port in "[api]\nlisten = \"0.0.0.0:\(port)\"\ntoken_file = \"\(tokenFile)\"" })
        try rig.startGateway()
        #expect(TestKit.waitUntil(timeout: 5) { (try? TestHTTP.request(port: rig.apiPort, path: "/healthz").status) == 200 }, "probes need no token")
        #expect(try TestHTTP.request(port: rig.apiPort, path: "/api/v1/status").status == 401)
        #expect(try TestHTTP.request(port: rig.apiPort, path: "/metrics", headers: ["Authorization": "Bearer wrong"]).status == 401)
        #expect(try TestHTTP.request(port: rig.apiPort, path: "/api/v1/status", headers: ["Authorization": "Bearer s3cret-t0ken"]).status == 200)
        #expect(try TestHTTP.request(port: rig.apiPort, path: "/?token=s3cret-t0ken").status == 200)
        let (st, out, err) = try brumeCLI(rig, ["status"], name: "status")
        #expect(st == 0, "the CLI reads the token file: \(err)")
        #expect(out.contains("gateway gw-e2e"))
        // The token never shows in the status or the log.
        let s = try TestHTTP.request(port: rig.apiPort, path: "/api/v1/status", headers: ["Authorization": "Bearer s3cret-t0ken"]).body
        #expect(!s.contains("s3cret"))
        #expect(!rig.gateway!.stderr.contains("s3cret"))
    }
}
