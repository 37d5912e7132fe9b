import BrumeCore
import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A board without a real-time clock: the gateway's wall clock says 1970 and the kernel says
/// "not synchronised" (faked: `BRUME_FAULT_CLOCK_OFFSET_FILE` moves this process's wall clock
/// and overrides the status the clock monitor reads; `BRUME_FAULT_BOOT_ID` fakes a reboot).
/// Real brokers, real brume, the cloud seen through `mosquitto_sub`.
@Suite(.serialized) struct ClockEndToEndTests {
    /// The wall clock of a Pi that booted without network: about two days after the epoch.
    static let in1970 = "-\(Int64(wallClockMillis()) - 2 * 86_400_000)"

    func makeRig(wait: String) throws -> (Rig, String) {
        let rig = try Rig(extraBuffer: "", extraSources: { _ in """
            [[source]]
            name = "plain"
            kind = "mqtt"
            url = "FIELD_URL"
            subscribe = ["plain/+/+"]
            device = "{1}"
            metric = "{2}"

            [clock]
            wait = "\(wait)"
            """ })
        let offsetFile = rig.dir + "/clock"
        rig.gatewayEnv["BRUME_FAULT_CLOCK_OFFSET_FILE"] = offsetFile
        return (rig, offsetFile)
    }

    /// A subscriber on the cloud broker: every telemetry document, one per line.
    func cloudSubscriber(_ rig: Rig) throws -> Child {
        let sub = try Child("/usr/bin/mosquitto_sub", ["-h", "127.0.0.1", "-p", "\(rig.cloud.port)", "-t", "brume/+/telemetry", "-q", "1", "-i", "clock-sub"],
                            dir: rig.dir, name: "sub")
        usleep(300_000)
        return sub
    }

    func publish(_ rig: Rig, _ topic: String, _ payload: String) throws {
        let p = try Child("/usr/bin/mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(rig.field.port)", "-q", "1", "-t", topic, "-m", payload],
                          dir: rig.dir, name: "pub")
        #expect(p.wait(timeout: 10) == 0)
    }

    /// Readings received by the cloud: (device, metric, time, value, flagged).
    func received(_ sub: Child) -> [(d: String, m: String, t: Int64, v: Double, flagged: Bool)] {
        var out: [(String, String, Int64, Double, Bool)] = []
        for line in sub.stdout.split(separator: "\n") {
            guard let batch = try? TelemetryBatch.decode(Array(line.utf8)) else { continue }
            for r in batch.readings {
                guard case .number(let v) = r.value else { continue }
                out.append((r.device, r.metric, r.time, v, r.unsyncedBootMillis != nil))
            }
        }
        return out
    }

    func clockStatus(_ rig: Rig) throws -> JSONValue? { try statusJSON(rig)["clock"] }

    @Test func readingsStampedIn1970AreHeldThenCorrectedAtTheSync() throws {
        let (rig, offsetFile) = try makeRig(wait: "10m")
        try "\(Self.in1970) unsynced\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
        let sub = try cloudSubscriber(rig)
        defer { sub.kill9() }
        try rig.startGateway(ready: "source.name=plain")
        #expect(TestKit.waitUntil(timeout: 5) { (try? clockStatus(rig)?["trusted"]?.bool) == false })

        // Gateway-stamped readings (plain numbers) and a device that stamps its own, true time.
        var published: [Int64] = []
        for i in 1...10 {
            published.append(wallClockMillis())
            try publish(rig, "plain/pump\(i % 2)/seq", "\(i)")
        }
        let deviceTime = wallClockMillis()
        try publish(rig, "load/gps/fix", #"{"v":99,"ts":\#(deviceTime)}"#)
        // Held: nothing reaches the cloud while the clock is unknown.
        usleep(3_000_000)
        #expect(received(sub).isEmpty, "readings stamped by a 1970 clock went out: \(sub.stdout.prefix(300))")
        let waiting = try clockStatus(rig)
        #expect(waiting?["unsynced_readings"]?.string == "waiting")
        #expect(waiting?["synchronised"]?.bool == false)
        let metrics = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect(metric(metrics, "brume_clock_waiting") == 1)
        #expect(metric(metrics, "brume_clock_trusted") == 0)
        #expect(metric(metrics, "brume_clock_marked_readings_total") == 10)
        let (code, out, _) = try brumeCLI(rig, ["status"], name: "status")
        #expect(code == 0 && out.contains("clock   not synchronised: readings it stamps wait for NTP (10 stamped unsynchronised, waiting)"), "\(out)")

        // NTP synchronises the clock: it jumps to the true time.
        let synced = wallClockMillis()
        try "0 synced\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
        #expect(TestKit.waitUntil(timeout: 10) { received(sub).count >= 11 }, "nothing arrived after the sync: \(rig.gateway!.stderr.suffix(1500))")
        let got = received(sub)
        #expect(got.count == 11)
        #expect(got.allSatisfy { !$0.flagged })
        let plain = got.filter { $0.m == "seq" }.sorted { $0.v < $1.v }
        #expect(plain.count == 10)
        for (r, sent) in zip(plain, published) {
            // Corrected to the true time of receipt (publish + broker + gateway: well under 2 s).
            #expect(r.t >= sent - 50 && r.t <= sent + 2_000, "reading \(Int(r.v)) stamped \(r.t), published at \(sent)")
        }
        #expect(plain.allSatisfy { $0.t < synced + 50 }, "stamped before the sync, not at it")
        #expect(got.first { $0.m == "fix" }?.t == deviceTime, "the device's own time is untouched")
        let after = try clockStatus(rig)
        #expect(after?["unsynced_readings"]?.string == "corrected")
        #expect(after?["trusted"]?.bool == true)

        // Readings after the sync: stamped normally.
        let late = wallClockMillis()
        try publish(rig, "plain/pump0/seq", "11")
        #expect(TestKit.waitUntil(timeout: 10) { received(sub).count >= 12 })
        if let r = received(sub).first(where: { $0.v == 11 }) { #expect(abs(r.t - late) < 2_000 && !r.flagged) }
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 10) == 0)
    }

    @Test func aRebootBeforeTheSyncFlagsThemAndWaitRunsOut() throws {
        let (rig, offsetFile) = try makeRig(wait: "10m")
        try "\(Self.in1970) unsynced\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
        let sub = try cloudSubscriber(rig)
        defer { sub.kill9() }
        rig.gatewayEnv["BRUME_FAULT_BOOT_ID"] = "boot-1"
        try rig.startGateway(ready: "source.name=plain")
        for i in 1...5 { try publish(rig, "plain/pump/seq", "\(i)") }
        // Committed (the hold gives up when nothing acknowledges them), then a power cycle.
        #expect(TestKit.waitUntil(timeout: 10) { (try? statusJSON(rig)["buffer"]?["in_memory"]?.number) == 0 })
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 10) == 0)
        #expect(received(sub).isEmpty)

        // Another boot, the clock still unsynchronised, and a technician's short wait.
        let text = try String(contentsOfFile: rig.config, encoding: .utf8).replacingOccurrences(of: #"wait = "10m""#, with: #"wait = "2s""#)
        try text.write(toFile: rig.config, atomically: true, encoding: .utf8)
        rig.gatewayEnv["BRUME_FAULT_BOOT_ID"] = "boot-2"
        try rig.startGateway(ready: "source.name=plain")
        // The first boot's readings can never be corrected: they go at once, flagged, as stamped.
        #expect(TestKit.waitUntil(timeout: 10) { received(sub).count >= 5 })
        let first = received(sub)
        #expect(first.count == 5 && first.allSatisfy { $0.flagged && $0.t < 10 * 86_400_000 })
        #expect(rig.gateway!.stderr.contains("cannot be corrected"))
        // This boot's readings wait 2 s for a sync that does not come, then go flagged.
        let t0 = Date()
        for i in 6...8 { try publish(rig, "plain/pump/seq", "\(i)") }
        #expect(TestKit.waitUntil(timeout: 15) { received(sub).count >= 8 })
        #expect(Date().timeIntervalSince(t0) >= 1.5, "they did not wait for the clock")
        let all = received(sub)
        #expect(all.count == 8 && all.allSatisfy(\.flagged))
        #expect(Set(all.map { Int($0.v) }) == Set(1...8), "nothing lost, nothing twice")
        #expect(try clockStatus(rig)?["unsynced_readings"]?.string == "flagged")
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 10) == 0)
    }
}
