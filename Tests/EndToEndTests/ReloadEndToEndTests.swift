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

/// Collects the telemetry readings that reach the cloud broker.
final class TelemetryCollector: Sendable {
    let client: MQTTClient
    let readings = Locked<[Reading]>([])
    init(port: Int, persistent: Bool = false, topic: String = "brume/+/telemetry") throws {
        let box = readings
        client = MQTTClient(options: MQTTClientOptions(host: "127.0.0.1", port: port, clientID: "telemetry-\(UUID().uuidString.prefix(6))", cleanSession: !persistent),
                            logger: Logger(label: "telemetry"),
                            handlers: MQTTHandlers(onMessage: { _, p, _, _ in
                                if let b = try? TelemetryBatch.decode(p) { box.withLock { $0.append(contentsOf: b.readings) } }
                            }))
        client.addSubscription(topic, qos: 1)
        client.start()
        guard TestKit.waitUntil(timeout: 10, { client.isConnected }) else { throw TestError("collector cannot connect") }
        usleep(200_000)
    }
    func values(_ metric: String) -> [Double] {
        readings.withLock { $0 }.compactMap { r in
            guard r.metric == metric, case .number(let d) = r.value else { return nil }
            return d
        }
    }
    deinit { client.stop() }
}

@Suite(.serialized) struct ReloadEndToEndTests {
    static let rule = """
        [[rule]]
        name = "avg3"
        match = "boiler/temperature"
        window = { kind = "count", count = 3 }
        emit = ["avg"]
        keep_raw = true

        """

    @Test func sighupSwapsRulesKeepingStateAndRejectsABadConfig() throws {
        let rig = try Rig(extraSources: { _ in ReloadEndToEndTests.rule + """
            [[source]]
            name = "plant"
            kind = "mqtt"
            url = "FIELD_URL"
            subscribe = ["plant/+/+"]
            """ }, mqttSource: false)
        try rig.startGateway(ready: "source.name=plant")
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        let field = try MQTTClient.testPublisher(port: rig.field.port)
        let g = rig.gateway!
        for t in [10.0, 20.0] { try field.publish(topic: "plant/boiler/temperature", payload: Array(WireFormat.formatNumber(t).utf8), qos: 1) }
        #expect(TestKit.waitUntil(timeout: 5) { cloud.values("temperature").count == 2 })

        // A broken config: rejected, the running one stays.
        let good = try String(contentsOfFile: rig.config, encoding: .utf8)
        try (good + "\n[[rule]]\nmatch = \"x/y\"\ndrop_if = \"value >\"\n").write(toFile: rig.config, atomically: true, encoding: .utf8)
        g.signal(SIGHUP)
        #expect(TestKit.waitUntil(timeout: 5) { g.stderr.contains("reload rejected: the configuration has 1 error(s)") })
        #expect(g.stderr.contains("gateway.toml:"), "the same file:line:col diagnostics as brume check")

        // A valid change: a new rule; the unchanged window keeps its two readings.
        try (good + "\n[[rule]]\nname = \"pressure\"\nmatch = \"boiler/pressure\"\nscale = 10.0\n").write(toFile: rig.config, atomically: true, encoding: .utf8)
        g.signal(SIGHUP)
        #expect(TestKit.waitUntil(timeout: 5) { g.stderr.contains("configuration reloaded") })
        try field.publish(topic: "plant/boiler/temperature", payload: Array("30".utf8), qos: 1)
        try field.publish(topic: "plant/boiler/pressure", payload: Array("1.5".utf8), qos: 1)
        #expect(TestKit.waitUntil(timeout: 5) { cloud.values("temperature.avg") == [20] }, "avg: \(cloud.values("temperature.avg"))")
        #expect(TestKit.waitUntil(timeout: 5) { cloud.values("pressure") == [15] })

        // A change elsewhere needs a restart: rejected as a whole.
        try (good.replacingOccurrences(of: "batch_max_readings = 500", with: "batch_max_readings = 100")).write(toFile: rig.config, atomically: true, encoding: .utf8)
        g.signal(SIGHUP)
        #expect(TestKit.waitUntil(timeout: 5) { g.stderr.contains("[uplink] changed: restart brume to apply") })
        #expect(g.isRunning)
        field.stop()
    }
}
