import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A field broker, a cloud broker, the cloud counter and a brume gateway, all
/// real processes on loopback.
final class Rig {
    let dir = TestKit.tempDir("brume-e2e")
    let field: Mosquitto
    let cloud: Mosquitto
    var gateway: Child?
    var counter: Child?
    var gatewayRuns = 0
    let config: String
    /// Environment of the next gateway started (fault injection).
    var gatewayEnv: [String: String] = [:]

    /// The port of the gateway's local API ([api] listen).
    let apiPort: Int

    init(extraBuffer: String = "", extraSources: (String) -> String = { _ in "" }, mqttSource: Bool = true, api: ((Int) -> String)? = nil,
         uplinkExtra: String = "", sourceExtra: String = "") throws {
        field = try Mosquitto(dir: dir, name: "field")
        cloud = try Mosquitto(dir: dir, name: "cloud")
        config = "\(dir)/gateway.toml"
        apiPort = TestKit.freePort()
        let apiSection = api?(apiPort) ?? "[api]\nlisten = \"127.0.0.1:\(apiPort)\""
        try """
        [gateway]
        id = "gw-e2e"
        data_dir = "\(dir)/var"

        \(apiSection)

        [buffer]
        commit_interval = "50ms"
        \(extraBuffer)

        [uplink.cloud]
        kind = "mqtt"
        url = "\(cloud.url)"
        batch_max_delay = "200ms"
        \(uplinkExtra.contains("batch_max_readings") ? "" : "batch_max_readings = 500")
        \(uplinkExtra)

        \(mqttSource ? """
        [[source]]
        name = "load"
        kind = "mqtt"
        url = "\(field.url)"
        subscribe = ["load/+/+"]
        device = "{1}"
        metric = "{2}"
        payload = { json = { value = "/v", time = "/ts" } }
        \(sourceExtra)
        """ : "")
        \(extraSources(dir).replacingOccurrences(of: "FIELD_URL", with: field.url))
        """.write(toFile: config, atomically: true, encoding: .utf8)
    }

    /// `seqMetric`: count only readings of that metric (other sources' integral values would
    /// look like sequence numbers).
    func startCounter(expect: Int, first: Int = 1, timeout: Int = 180, seqMetric: String? = nil) throws {
        counter = try Child(TestKit.product("firmware-sim"),
                            ["cloud", "--broker", cloud.url, "--topic", "brume/+/telemetry", "--expect", "\(expect)", "--first", "\(first)",
                             "--timeout", "\(timeout)", "--ready-file", "\(dir)/cloud.ready"] + (seqMetric.map { ["--seq-metric", $0] } ?? []),
                            dir: dir, name: "cloud-counter")
        guard TestKit.waitUntil(timeout: 20, { FileManager.default.fileExists(atPath: "\(dir)/cloud.ready") }) else {
            throw TestError("cloud counter did not subscribe: \(counter!.stderr)")
        }
    }

    func startGateway(ready: String = "source.name=load") throws {
        gatewayRuns += 1
        let g = try Child(TestKit.product("brume"), ["run", "--config", config], dir: dir, name: "brume-\(gatewayRuns)", env: gatewayEnv)
        gateway = g
        guard TestKit.waitUntil(timeout: 20, { g.stderr.contains("uplink.name=cloud") && g.stderr.contains(ready) }) else {
            throw TestError("gateway did not connect: \(g.stderr)")
        }
        // The local API binds in its own task: wait for it too (tests and the CLI talk to it).
        guard TestKit.waitUntil(timeout: 20, { g.stderr.contains("local API listening") || g.stderr.contains("local API disabled") }),
              !g.stderr.contains("local API disabled") else {
            throw TestError("the gateway's local API did not come up: \(g.stderr.suffix(1500))")
        }
    }

    func loadgen(count: Int, rate: Int = 0, start: Int = 1, name: String = "loadgen") throws -> Child {
        try Child(TestKit.product("firmware-sim"),
                  ["loadgen", "--broker", field.url, "--count", "\(count)", "--start", "\(start)", "--devices", "10", "--rate", "\(rate)"],
                  dir: dir, name: name)
    }

    /// `expectMissing`: that many sequence numbers will never come (dropped before the gateway
    /// could read them): the counter cannot reach its target, so it is stopped (it reports on
    /// SIGTERM) once 10 s passed without it.
    func report(timeout: Double = 180, expectMissing: Int = 0) throws -> CloudReport {
        guard let c = counter else { throw TestError("no counter") }
        if expectMissing > 0 {
            if c.wait(timeout: 10) == nil { c.terminate() }
            guard c.wait(timeout: 10) != nil else { throw TestError("cloud counter did not stop") }
            return try CloudReport.parse(c.stdout)
        }
        guard c.wait(timeout: timeout) != nil else {
            c.terminate()
            c.wait(timeout: 5)
            printGatewayLog()
            throw TestError("cloud counter did not finish in \(timeout)s: \(c.stdout.suffix(400)) gateway: \(gateway?.stderr.suffix(2000) ?? "")")
        }
        return try CloudReport.parse(c.stdout)
    }

    /// What the gateway said beyond info (a failed test's evidence).
    func printGatewayLog() {
        let said = (gateway?.stderr ?? "").split(separator: "\n").filter {
            $0.contains(" warning ") || $0.contains(" notice ") || $0.contains(" error ") || $0.contains("resend") || $0.contains("backlog")
        }
        print("gateway log:\n" + said.suffix(60).joined(separator: "\n"))
    }

    deinit {
        gateway?.kill9()
        counter?.kill9()
    }
}

@Suite(.serialized) struct GatewayEndToEndTests {
    @Test func hundredThousandReadingsArriveOnceInOrder() throws {
        let rig = try Rig()
        try rig.startCounter(expect: 100_000)
        try rig.startGateway()
        let gen = try rig.loadgen(count: 100_000)
        #expect(gen.wait(timeout: 120) == 0)
        let r = try rig.report()
        #expect(r.unique == 100_000)
        #expect(r.missing == 0)
        #expect(r.duplicates == 0)
        #expect(r.duplicate_batches == 0)
        #expect(r.out_of_order == 0)
        #expect(r.undecodable == 0)
        if r.duplicate_batches > 0 || r.out_of_order > 0 || r.missing > 0 { rig.printGatewayLog() }
        // A clean shutdown drains and exits 0.
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 10) == 0)
        print("e2e 100k: batches=\(r.batches) latency p50=\(r.latency_ms.p50)ms p99=\(r.latency_ms.p99)ms")
    }

    @Test func cloudBrokerOutageLosesNothing() throws {
        let rig = try Rig()
        try rig.startCounter(expect: 30_000)
        try rig.startGateway()
        let gen = try rig.loadgen(count: 30_000, rate: 3000)
        usleep(2_000_000)
        rig.cloud.stop()
        usleep(10_000_000)
        let restarted = Date()
        try rig.cloud.start()
        // Time to resume: the gateway reports its reconnection in its log.
        let g = rig.gateway!
        let resumed = TestKit.waitUntil(timeout: 15) {
            g.stderr.split(separator: "\n").filter { $0.contains("msg=\"MQTT connected\"") && $0.contains("uplink.name=cloud") }.count >= 2
        }
        let resumeSeconds = Date().timeIntervalSince(restarted)
        #expect(resumed, "the uplink did not reconnect")
        #expect(resumeSeconds < 5, "delivery resumed \(resumeSeconds)s after the broker returned")
        print("e2e outage: uplink reconnected \(String(format: "%.2f", resumeSeconds))s after the cloud broker returned")
        #expect(gen.wait(timeout: 60) == 0)
        let r = try rig.report()
        #expect(r.unique == 30_000)
        #expect(r.missing == 0)
        #expect(r.mismatched_duplicate_batches == 0)
        #expect(r.duplicates <= 500 * r.duplicate_batches)
        #expect(r.hist_batches > 0, "backlog batches are flagged historical")
    }

    /// With `hold = "0s"` every reading is committed before its source is acknowledged: a batch
    /// resent after a crash is the batch sent before, and readings come twice only as whole
    /// resent batches. With the default hold, readings in flight from memory at the crash come
    /// again under a new batch id (at least once; bounded by the in-flight window).
    @Test(arguments: [true, false])
    func killNineTwiceLosesNothingAndResendsIdenticalBatches(strict: Bool) throws {
        let rig = try Rig(extraBuffer: strict ? #"hold = "0s""# : "")
        try rig.startCounter(expect: 30_000)
        try rig.startGateway()
        let gen = try rig.loadgen(count: 30_000, rate: 5000)
        for _ in 0..<2 {
            usleep(1_500_000)
            rig.gateway!.kill9()
            usleep(500_000)
            try rig.startGateway()
        }
        #expect(gen.wait(timeout: 60) == 0)
        let r = try rig.report()
        #expect(r.unique == 30_000)
        #expect(r.missing == 0)
        #expect(r.mismatched_duplicate_batches == 0, "a resent batch must be byte-for-byte the batch sent before")
        if strict {
            #expect(r.duplicates <= 500 * r.duplicate_batches, "duplicates only as resent whole batches")
        } else {
            // At most the live window (8 batches of up to 500) per kill, beyond whole resent batches.
            #expect(r.duplicates <= 500 * r.duplicate_batches + 2 * 8 * 500, "duplicates bounded by the live window")
        }
        print("e2e kill -9 ×2 (hold \(strict ? "0s" : "2s")): duplicate batches=\(r.duplicate_batches) duplicate readings=\(r.duplicates)")
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 10) == 0)
    }

    @Test func eightSerialDevicesAt115200LoseNothing() throws {
        let perDevice = 1500
        let rig = try Rig(extraSources: { dir in
            (0..<8).map { k in """
            [[source]]
            name = "serial\(k)"
            kind = "serial"
            port = "\(dir)/tty\(k)"
            baud = 115200
            format = "kv"
            device = "dev\(k)"
            """ }.joined(separator: "\n\n")
        }, mqttSource: false)
        // The devices appear first (a gateway would otherwise wait for them, which is fine too).
        var devices: [Child] = []
        for k in 0..<8 {
            devices.append(try Child(TestKit.product("firmware-sim"),
                                     ["serial", "--link", "\(rig.dir)/tty\(k)", "--rate", "250", "--count", "\(perDevice)", "--start", "\(1 + k * perDevice)", "--delay", "2"],
                                     dir: rig.dir, name: "serial\(k)"))
        }
        #expect(TestKit.waitUntil(timeout: 10) { (0..<8).allSatisfy { FileManager.default.fileExists(atPath: "\(rig.dir)/tty\($0)") } })
        try rig.startCounter(expect: 8 * perDevice)
        try rig.startGateway(ready: "source.name=serial7")
        for d in devices { #expect(d.wait(timeout: 60) == 0) }
        // A wire does not wait for a slow reader: lines the gateway did not read in time (a
        // starved CI machine) are dropped on the wire, as on a real UART, and counted by the
        // device. Everything the gateway read must arrive.
        let wireDropped = devices.map { d -> Int in
            guard let j = d.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
                  let r = j.range(of: "\"dropped\":") else { return 0 }
            return Int(j[r.upperBound...].prefix { $0.isNumber }) ?? 0
        }.reduce(0, +)
        #expect(wireDropped <= 8 * perDevice / 10, "the gateway fell far behind a 115200-baud line: \(wireDropped) lines dropped on the wire")
        let r = try rig.report(timeout: 60, expectMissing: wireDropped)
        #expect(r.unique == 8 * perDevice - wireDropped)
        #expect(r.missing == wireDropped)
        #expect(r.duplicates == 0)
        #expect(r.out_of_order == 0)
        let cpu = cpuSeconds(rig.gateway!.pid)
        print("e2e serial ×8 at 250 lines/s each (~11 kB/s: a saturated 115200-baud line): \(r.readings) readings, gateway CPU \(String(format: "%.2f", cpu)) s, \(String(format: "%.1f", cpu / Double(r.readings) * 1e6)) µs/reading (debug build)")
    }

    @Test func invalidConfigExitsOneWithDiagnostics() throws {
        let dir = TestKit.tempDir()
        try "[gateway]\nid = \"x\"\nbaud = 9600\n".write(toFile: "\(dir)/bad.toml", atomically: true, encoding: .utf8)
        let run = try Child(TestKit.product("brume"), ["run", "--config", "\(dir)/bad.toml"], dir: dir, name: "run")
        #expect(run.wait(timeout: 10) == 1)
        #expect(run.stderr.contains("\(dir)/bad.toml:3:1: [gateway]: unknown key \"baud\""))
        let missing = try Child(TestKit.product("brume"), ["check", "\(dir)/nope.toml"], dir: dir, name: "check")
        #expect(missing.wait(timeout: 10) == 2)
    }
}

/// User + system CPU seconds of a process so far.
func cpuSeconds(_ pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
