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

    init(extraBuffer: String = "") throws {
        field = try Mosquitto(dir: dir, name: "field")
        cloud = try Mosquitto(dir: dir, name: "cloud")
        config = "\(dir)/gateway.toml"
        try """
        [gateway]
        id = "gw-e2e"
        data_dir = "\(dir)/var"

        [buffer]
        commit_interval = "50ms"
        \(extraBuffer)

        [uplink.cloud]
        kind = "mqtt"
        url = "\(cloud.url)"
        batch_max_readings = 500
        batch_max_delay = "200ms"

        [[source]]
        name = "load"
        kind = "mqtt"
        url = "\(field.url)"
        subscribe = ["load/+/+"]
        device = "{1}"
        metric = "{2}"
        payload = { json = { value = "/v", time = "/ts" } }
        """.write(toFile: config, atomically: true, encoding: .utf8)
    }

    func startCounter(expect: Int, first: Int = 1, timeout: Int = 180) throws {
        counter = try Child(TestKit.product("firmware-sim"),
                            ["cloud", "--broker", cloud.url, "--topic", "brume/+/telemetry", "--expect", "\(expect)", "--first", "\(first)",
                             "--timeout", "\(timeout)", "--ready-file", "\(dir)/cloud.ready"],
                            dir: dir, name: "cloud-counter")
        guard TestKit.waitUntil(timeout: 20, { FileManager.default.fileExists(atPath: "\(dir)/cloud.ready") }) else {
            throw TestError("cloud counter did not subscribe: \(counter!.stderr)")
        }
    }

    func startGateway() throws {
        gatewayRuns += 1
        let g = try Child(TestKit.product("brume"), ["run", "--config", config], dir: dir, name: "brume-\(gatewayRuns)")
        gateway = g
        guard TestKit.waitUntil(timeout: 20, { g.stderr.contains("msg=\"MQTT connected\"") && g.stderr.contains("source.name=load") }) else {
            throw TestError("gateway did not connect: \(g.stderr)")
        }
    }

    func loadgen(count: Int, rate: Int = 0, start: Int = 1, name: String = "loadgen") throws -> Child {
        try Child(TestKit.product("firmware-sim"),
                  ["loadgen", "--broker", field.url, "--count", "\(count)", "--start", "\(start)", "--devices", "10", "--rate", "\(rate)"],
                  dir: dir, name: name)
    }

    func report(timeout: Double = 180) throws -> CloudReport {
        guard let c = counter else { throw TestError("no counter") }
        guard c.wait(timeout: timeout) != nil else {
            c.terminate()
            c.wait(timeout: 5)
            throw TestError("cloud counter did not finish in \(timeout)s: \(c.stdout.suffix(400)) gateway: \(gateway?.stderr.suffix(2000) ?? "")")
        }
        return try CloudReport.parse(c.stdout)
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

    @Test func killNineTwiceLosesNothingAndResendsIdenticalBatches() throws {
        let rig = try Rig()
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
        #expect(r.duplicates <= 500 * r.duplicate_batches, "duplicates only as resent whole batches")
        print("e2e kill -9 ×2: duplicate batches=\(r.duplicate_batches) duplicate readings=\(r.duplicates)")
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 10) == 0)
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
