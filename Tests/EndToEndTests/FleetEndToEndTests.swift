import BrumeCore
import BrumeMQTT
import BrumeTestKit
import Foundation
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the backend sees of a gateway's fleet channel: the retained config state and the
/// diagnostics answers.
final class FleetWatcher: Sendable {
    let client: MQTTClient
    let last = Locked<[String: String]>([:])
    init(port: Int, prefix: String) throws {
        let box = last
        client = MQTTClient(options: MQTTClientOptions(host: "127.0.0.1", port: port, clientID: "backend-\(UUID().uuidString.prefix(6))"),
                            logger: Logger(label: "backend"),
                            handlers: MQTTHandlers(onMessage: { t, p, _, _ in
                                let topic = String(cString: t)
                                let body = String(decoding: UnsafeRawBufferPointer(p), as: UTF8.self)
                                box.withLock { $0[topic] = body }
                            }))
        client.addSubscription("\(prefix)/config/state", qos: 1)
        client.addSubscription("\(prefix)/diagnostics/response", qos: 1)
        client.start()
        guard TestKit.waitUntil(timeout: 10, { client.isConnected }) else { throw TestError("backend cannot connect") }
    }
    func json(_ topic: String) -> JSONValue? { last.withLock { $0[topic] }.flatMap { try? JSONParser.parse($0) } }
    func publish(_ topic: String, _ body: String) {
        Array(body.utf8).withUnsafeBytes { _ = try? client.publish(topic: topic, payload: $0, qos: 1) }
    }
    deinit { client.stop() }
}

/// Remote configuration with automatic rollback, and remote diagnostics, end to end: real
/// Mosquitto brokers, the real gateway process, pushes signed with `brume sign-config` as a
/// backend would, readings flowing throughout.
@Suite(.serialized) struct FleetEndToEndTests {
    @Test func pushesAreCheckedAppliedRefusedAndRolledBackWithoutLosingAReading() throws {
        let keys = TestKit.tempDir("brume-keys")
        let k = try Child(TestKit.product("brume"), ["keygen", "--kid", "backend", "--out", keys], dir: keys, name: "keygen")
        #expect(k.wait(timeout: 10) == 0)
        let pub = try #require(k.stdout.split(separator: "\n").first { $0.hasPrefix("backend = ") }).dropFirst("backend = \"".count).dropLast()
        let rig = try Rig(extraSources: { _ in """

            [commands.keys]
            backend = "\(pub)"

            [fleet]
            remote_config = true
            diagnostics = true
            health_window = "10s"
            health = "uplinks"
            """ })
        let prefix = "brume/gw-e2e"
        let backend = try FleetWatcher(port: rig.cloud.port, prefix: prefix)
        let total = 6000
        try rig.startCounter(expect: total)
        try rig.startGateway()
        let pid = rig.gateway!.pid
        let load = try rig.loadgen(count: total, rate: 100)
        defer { load.terminate() }
        let original = try String(contentsOfFile: rig.config, encoding: .utf8)

        func push(_ text: String, version: Int, sign: Bool = true) throws {
            let file = "\(rig.dir)/push-\(version).toml"
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            let s = try Child(TestKit.product("brume"), ["sign-config", "--key", "\(keys)/backend.key", "--kid", "backend", "--gateway", "gw-e2e",
                                                        "--version", "\(version)", file], dir: rig.dir, name: "sign-\(version)")
            #expect(s.wait(timeout: 10) == 0, "brume sign-config: \(s.stderr)")
            var body = s.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            if !sign, let r = body.range(of: ",\"kid\":") { body = String(body[..<r.lowerBound]) + "}" }
            backend.publish("\(prefix)/config/set", body)
        }
        func state(_ pred: (JSONValue) -> Bool, timeout: Double = 20) -> JSONValue? {
            var found: JSONValue?
            _ = TestKit.waitUntil(timeout: timeout) {
                if let j = backend.json("\(prefix)/config/state"), pred(j) { found = j; return true }
                return false
            }
            return found
        }
        func last(_ j: JSONValue) -> (Int, String, String) {
            (Int(j["last"]?["version"]?.number ?? -1), j["last"]?["outcome"]?.string ?? "", j["last"]?["reason"]?.string ?? "")
        }

        // The channel reports at connect: version 0 (the local file).
        let initial = try #require(state({ $0["version"]?.number == 0 }), "no retained config state")
        #expect(initial["phase"]?.string == "good")

        // 1. A good push (a rule more): applied by a reload, kept once healthy.
        let v1 = original + "\n[[rule]]\nname = \"fleet-v1\"\nmatch = \"nothing/*\"\ndrop_if = \"value > 1\"\n"
        try push(v1, version: 1)
        let applied = try #require(state({ $0["version"]?.number == 1 && $0["phase"]?.string == "good" }), "v1 not applied: \(backend.json("\(prefix)/config/state")?.description ?? "-")")
        #expect(last(applied) == (1, "applied", ""))
        let status = try JSONParser.parse(Array(try TestHTTP.request(port: rig.apiPort, path: "/api/v1/status").body.utf8))
        #expect(status["gateway"]?["config"]?["origin"]?.string == "remote v1")
        #expect(status["gateway"]?["config"]?["sha256"]?.string == applied["sha256"]?.string)

        // 2. A push with an error: refused with FILE:LINE:COL diagnostics, v1 stays.
        let bad = original + "\n[[rule]]\nmatch = \"x/*\"\ndrop_if = \"valeu > 1\"\n"
        try push(bad, version: 2)
        let refused = try #require(state({ last($0).0 == 2 }), "v2 not answered")
        #expect(last(refused) == (2, "refused", "invalid"))
        #expect(refused["version"]?.number == 1)
        let line = bad.split(separator: "\n", omittingEmptySubsequences: false).count - 1
        let detail = refused["last"]?["detail"]?.elements.compactMap(\.string) ?? []
        #expect(detail == ["push-v2.toml:\(line):12: unknown variable \"valeu\" (did you mean \"value\"?)"], "\(detail)")

        // 3. Unsigned, replayed, protected: refused, each with its reason.
        // An unsigned message is counted and logged, never stored nor published: whoever may publish
        // on the topic cannot overwrite the retained report or wear the SD card with it.
        try push(v1 + "\n# unsigned\n", version: 5, sign: false)
        #expect(TestKit.waitUntil(timeout: 10) {
            let body = (try? TestHTTP.request(port: rig.apiPort, path: "/api/v1/status").body) ?? ""
            let st = try? JSONParser.parse(Array(body.utf8))
            return st?["gateway"]?["config"]?["fleet"]?["refused"]?["unsigned"]?.number == 1
        })
        #expect(last(backend.json("\(prefix)/config/state")!).0 == 2, "the retained report still tells of v2")
        try push(v1, version: 1)
        #expect(state({ last($0) == (1, "refused", "replayed") }) != nil, "\(backend.json("\(prefix)/config/state")?.description ?? "-")")
        let otherAPI = v1.replacingOccurrences(of: "listen = \"127.0.0.1:\(rig.apiPort)\"", with: "listen = \"0.0.0.0:\(rig.apiPort)\"\ntoken_file = \"/etc/hostname\"")
        #expect(otherAPI != v1)
        try push(otherAPI, version: 6)
        let protected = try #require(state({ last($0).0 == 6 }))
        #expect(last(protected) == (6, "refused", "protected"))
        // Nor may it make the gateway read a local file the technician did not name as a secret.
        let leak = v1.replacingOccurrences(of: "batch_max_delay = \"200ms\"", with: "batch_max_delay = \"200ms\"\nusername = \"x\"\npassword_file = \"/etc/hostname\"")
        #expect(leak != v1)
        try push(leak, version: 6)
        #expect(state({ last($0).0 == 6 && ($0["last"]?["detail"]?.elements.first?.string ?? "").contains("/etc/hostname") }) != nil,
                "\(backend.json("\(prefix)/config/state")?.description ?? "-")")

        // 4. A push that breaks the uplink (a port nobody listens on): it needs a restart in place,
        //    never gets healthy, and is rolled back by itself; same process id throughout.
        let dead = TestKit.freePort()
        let broken = v1.replacingOccurrences(of: "url = \"\(rig.cloud.url)\"", with: "url = \"mqtt://127.0.0.1:\(dead)\"")
        #expect(broken != v1)
        try push(broken, version: 7)
        let rolled = try #require(state({ last($0).0 == 7 }, timeout: 60), "v7 not rolled back: \(rig.gateway!.stderr.suffix(3000))")
        #expect(last(rolled) == (7, "rolled_back", "unhealthy"), "\(rolled)")
        #expect(rolled["version"]?.number == 1 && rolled["phase"]?.string == "good")
        #expect(rolled["last"]?["detail"]?.elements.first?.string?.contains("uplink cloud is") == true, "\(rolled)")
        #expect(rig.gateway!.isRunning && rig.gateway!.pid == pid)
        #expect(rig.gateway!.stderr.components(separatedBy: "restarting in place").count - 1 >= 2, "one restart to apply, one to roll back")
        // The rolled-back push, replayed: refused (versions never go back, even after a rollback).
        try push(broken, version: 7)
        #expect(state({ last($0) == (7, "refused", "replayed") }) != nil, "\(backend.json("\(prefix)/config/state")?.description ?? "-")")

        // 5. Diagnostics on request.
        backend.publish("\(prefix)/diagnostics/request", "{\"id\":\"d-1\",\"log_lines\":20}")
        _ = TestKit.waitUntil(timeout: 15) { backend.json("\(prefix)/diagnostics/response")?["id"]?.string == "d-1" }
        let diag = try #require(backend.json("\(prefix)/diagnostics/response"))
        #expect(diag["status"]?["gateway"]?["id"]?.string == "gw-e2e")
        #expect(diag["outbox"]?["buffered_readings"]?.number != nil)
        let logs = diag["logs"]?.elements.compactMap(\.string) ?? []
        #expect(!logs.isEmpty && logs.count <= 20 && logs.allSatisfy { $0.hasPrefix("ts=") } && logs.contains { $0.contains("msg=\"brume starting\"") },
                "at most the last 20 log lines as written, since the restart in place: \(logs)")
        backend.publish("\(prefix)/diagnostics/request", "{\"id\":\"d-2\"}")
        _ = TestKit.waitUntil(timeout: 10) { backend.json("\(prefix)/diagnostics/response")?["id"]?.string == "d-2" }
        #expect(backend.json("\(prefix)/diagnostics/response")?["error"]?.string?.hasPrefix("rate_limited") == true)

        // Nothing lost across the restarts: the outbox spans both configurations.
        let report = try rig.report(timeout: 180)
        #expect(report.missing == 0, "\(report)")
        #expect(report.unique == total)
    }

    @Test func boardHealthReachesTheCloudAsReadingsAndTheMetricsAsGauges() throws {
        let board = TestKit.tempDir("brume-board")
        // As a Raspberry Pi 4 writes them: 48.3 °C, under-voltage now and since boot.
        let files = [
            "/sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
            "/sys/class/thermal/thermal_zone0/temp": "48312\n",
            "/sys/devices/platform/soc/soc:firmware/get_throttled": "0x50005\n",
            "/proc/diskstats": " 179       0 mmcblk0 40188 11963 2698746 38440 156872 218125 7283344 2418684 0 352136 2491440 0 0 0 0 11530 34315\n",
            "/proc/meminfo": "MemTotal:        3884164 kB\nMemAvailable:    3352720 kB\n",
            "/proc/uptime": "86411.52 341017.66\n",
        ]
        for (path, text) in files {
            try FileManager.default.createDirectory(atPath: board + (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: board + path, atomically: true, encoding: .utf8)
        }
        let rig = try Rig(extraSources: { _ in """
            [[source]]
            name = "board"
            kind = "board"
            interval = "1s"
            root = "\(board)"
            disk = "mmcblk0"
            """ })
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway(ready: "source.name=board")
        func reading(_ metric: String) -> Reading? { cloud.readings.withLock { $0 }.last { $0.device == "gw-e2e" && $0.metric == metric } }
        #expect(TestKit.waitUntil(timeout: 20) { reading("soc_temperature") != nil && reading("uptime_seconds") != nil })
        #expect(reading("soc_temperature")?.value == .number(48.312))
        #expect(reading("under_voltage")?.value == .bool(true))
        #expect(reading("throttled")?.value == .bool(true))
        #expect(reading("disk_written_bytes")?.value == .number(7_283_344 * 512))
        #expect(reading("memory_available_bytes")?.value == .number(3_352_720 * 1024))
        if case .number(let free)? = reading("disk_free_bytes")?.value { #expect(free > 0) } else { Issue.record("no disk_free_bytes") }
        #expect(reading("load1") == nil, "no /proc/loadavg in this tree: absent, not an error")
        let m = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect(metric(m, #"brume_board_soc_temperature_celsius{source="board",device="gw-e2e"}"#) == 48.312, "\(m.split(separator: "\n").filter { $0.contains("board") })")
        #expect(metric(m, #"brume_board_under_voltage{source="board",device="gw-e2e"}"#) == 1)
        #expect(metric(m, #"brume_source_errors_total{source="board"}"#) == nil, "missing files are not errors")
    }
}
