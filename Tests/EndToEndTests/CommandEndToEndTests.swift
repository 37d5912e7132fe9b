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

/// The cloud side of the command path: publishes commands, collects results.
final class CloudCommander: Sendable {
    let client: MQTTClient
    let results = Mutex<[String: [String]]>([:]) // id -> states in arrival order
    let anonymous = Mutex<[String]>([])           // results without id (detail)
    let details = Mutex<[String: String]>([:])

    init(port: Int, prefix: String = "brume/gw-e2e") throws {
        let box = Box()
        client = MQTTClient(options: MQTTClientOptions(host: "127.0.0.1", port: port, clientID: "cloud-commander-\(UUID().uuidString.prefix(6))", cleanSession: true, maxInflight: 1000),
                            logger: Logger(label: "commander"),
                            handlers: MQTTHandlers(onMessage: { _, payload, _, _ in box.owner?.ingest(payload) }))
        client.addSubscription("\(prefix)/commands/result", qos: 1)
        self.prefix = prefix
        box.owner = nil
        self.box = box
        box.owner = self
        client.start()
        guard TestKit.waitUntil(timeout: 10, { client.isConnected }) else { throw TestError("commander cannot connect") }
        usleep(200_000)
    }
    let prefix: String
    let box: Box
    final class Box: @unchecked Sendable { weak var owner: CloudCommander? }

    func ingest(_ payload: UnsafeRawBufferPointer) {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any], let state = obj["state"] as? String else { return }
        let detail = obj["detail"] as? String ?? ""
        if let id = obj["id"] as? String {
            results.withLock { $0[id, default: []].append(state) }
            details.withLock { $0[id] = detail }
        } else {
            anonymous.withLock { $0.append(detail) }
        }
    }

    func send(_ json: String) throws {
        while true {
            do {
                try client.publish(topic: "\(prefix)/commands", payload: Array(json.utf8), qos: 1)
                return
            } catch {
                usleep(10_000)
            }
        }
    }

    static let finals: Set<String> = ["done", "failed", "expired", "rejected"]
    func finalState(_ id: String) -> String? { results.withLock { $0[id]?.last(where: { CloudCommander.finals.contains($0) }) } }
    func allFinal(_ ids: some Sequence<String>) -> Bool { ids.allSatisfy { finalState($0) != nil } }

    deinit { client.stop() }
}

func executedValues(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
}

@Suite(.serialized) struct CommandEndToEndTests {
    func rig(actuatorArgs: [String] = [], extra: String = "", actuatorExtra: String = "") throws -> (Rig, Child, String) {
        let rig = try Rig(extraSources: { _ in extra + """
            [[source]]
            name = "plant"
            kind = "mqtt"
            url = "FIELD_URL"
            subscribe = ["plant/+/+"]

            [[actuator]]
            name = "boiler/setpoint"
            via = "plant"
            topic = "actuators/setpoint/set"
            ack_topic = "actuators/setpoint/state"
            range = [0, 100000]
            timeout = "2s"
            \(actuatorExtra)
            """ }, mqttSource: false)
        let log = "\(rig.dir)/executed.log"
        let act = try Child(TestKit.product("firmware-sim"),
                            ["actuator", "--broker", rig.field.url, "--topic", "actuators/setpoint/set", "--state-topic", "actuators/setpoint/state",
                             "--log", log, "--ready-file", "\(rig.dir)/actuator.ready"] + actuatorArgs, dir: rig.dir, name: "actuator")
        #expect(TestKit.waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: "\(rig.dir)/actuator.ready") })
        return (rig, act, log)
    }

    @Test func thousandCommandsRunAtMostOnceAndExpiredNever() throws {
        let (rig, actuator, log) = try rig()
        try rig.startGateway(ready: "source.name=plant")
        let cloud = try CloudCommander(port: rig.cloud.port)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var ids: [String] = []
        var expiredIDs: Set<String> = []
        for i in 1...1000 {
            let id = "c-\(i)"
            ids.append(id)
            if i % 10 == 0 {
                expiredIDs.insert(id)
                try cloud.send(#"{"id":"\#(id)","actuator":"boiler/setpoint","value":\#(i),"expires":\#(now - 1000)}"#)
            } else {
                try cloud.send(#"{"id":"\#(id)","actuator":"boiler/setpoint","value":\#(i),"expires":\#(now + 600_000)}"#)
            }
            if i % 7 == 0 { // a repeated id: must not run again
                try cloud.send(#"{"id":"c-\#(i - 3)","actuator":"boiler/setpoint","value":\#(i - 3)}"#)
            }
        }
        let done = TestKit.waitUntil(timeout: 120) { cloud.allFinal(ids) }
        #expect(done, "not every command reached a final state: \(ids.filter { cloud.finalState($0) == nil }.prefix(10))")
        let executed = executedValues(log)
        #expect(executed.count == Set(executed).count, "a command ran twice: \(Dictionary(grouping: executed, by: { $0 }).filter { $0.value.count > 1 }.keys.prefix(5))")
        for id in expiredIDs {
            #expect(cloud.finalState(id) == "expired")
            #expect(!executed.contains(String(id.dropFirst(2))), "expired command \(id) ran")
        }
        let doneCount = ids.filter { cloud.finalState($0) == "done" }.count
        #expect(doneCount == 900)
        #expect(executed.count == 900)
        #expect(rig.gateway!.isRunning)
        #expect(actuator.isRunning)
    }

    @Test func hostileCommandsAreRejectedWithReasons() throws {
        let (rig, actuator, log) = try rig()
        try rig.startGateway(ready: "source.name=plant")
        let cloud = try CloudCommander(port: rig.cloud.port)
        try cloud.send(#"{"id":"h1","actuator":"boiler/nope","value":1}"#)
        try cloud.send(#"{"id":"h2","actuator":"boiler/setpoint","value":"hot"}"#)
        try cloud.send(#"{"id":"h3","actuator":"boiler/setpoint","value":1e9}"#)
        try cloud.send(#"{"id":"h4","actuator":"boiler/setpoint","value":"# + String(repeating: "9", count: 1_000_000) + "}")
        try cloud.send(#"{"id":"h5","actuator":"#)
        try cloud.send(#"{"actuator":"boiler/setpoint","value":5}"#)
        try cloud.send(#"{"id":"ok","actuator":"boiler/setpoint","value":42}"#)
        #expect(TestKit.waitUntil(timeout: 20) { cloud.allFinal(["h1", "h2", "h3", "ok"]) && cloud.anonymous.withLock { $0.count } >= 3 })
        #expect(cloud.finalState("h1") == "rejected")
        #expect(cloud.details.withLock { $0["h1"] ?? "" }.hasPrefix("unknown_actuator"))
        #expect(cloud.details.withLock { $0["h2"] ?? "" }.hasPrefix("wrong_type"))
        #expect(cloud.details.withLock { $0["h3"] ?? "" }.hasPrefix("out_of_range"))
        let anon = cloud.anonymous.withLock { $0 }
        #expect(anon.contains { $0.hasPrefix("too_large") })
        #expect(anon.contains { $0.hasPrefix("malformed") })
        #expect(anon.contains { $0.hasPrefix("missing_id") })
        #expect(cloud.finalState("ok") == "done")
        #expect(executedValues(log) == ["42"], "only the valid command reached the device")
        #expect(rig.gateway!.isRunning)
        #expect(actuator.isRunning)
    }

    @Test func localTriggerActsWithTheCloudDownAndReportsLater() throws {
        let (rig, actuator, log) = try rig(extra: """
            [[rule]]
            name = "avg3"
            match = "boiler/temperature"
            window = { kind = "count", count = 3 }
            emit = ["avg", "max"]
            keep_raw = true

            [[trigger]]
            name = "overheat"
            when = "boiler/temperature > 90"
            clear = "boiler/temperature < 85"
            then = { actuator = "boiler/setpoint", value = 0 }
            event = "boiler overheating"


            """)
        try rig.startGateway(ready: "source.name=plant")
        // Persistent sessions at the cloud broker: what is published while we reconnect waits for us.
        let events = try EventCollector(port: rig.cloud.port)
        let telemetry = try TelemetryCollector(port: rig.cloud.port, persistent: true)
        usleep(300_000)
        rig.cloud.stop() // the cloud is away: the trigger must still act
        let field = try MQTTClient.testPublisher(port: rig.field.port)
        for t in [80.0, 92.0, 95.0, 93.0, 84.0, 91.0] {
            try field.publish(topic: "plant/boiler/temperature", payload: Array(WireFormat.formatNumber(t).utf8), qos: 1)
            usleep(100_000)
        }
        // Fired at 92, cleared at 84 (hysteresis: 95 and 93 do not fire again), fired again at 91.
        #expect(TestKit.waitUntil(timeout: 10) { executedValues(log).count == 2 }, "executed: \(executedValues(log))")
        #expect(executedValues(log) == ["0", "0"])
        // The cloud returns: the events and the telemetry (raw + aggregates) arrive.
        try rig.cloud.start()
        #expect(TestKit.waitUntil(timeout: 15) { events.bodies.withLock { $0.count } >= 3 }, "events: \(events.bodies.withLock { $0 })")
        let kinds = events.bodies.withLock { $0 }.compactMap { b -> String? in
            guard let o = try? JSONSerialization.jsonObject(with: Data(b.utf8)) as? [String: Any] else { return nil }
            return o["kind"] as? String
        }
        #expect(kinds == ["fired", "cleared", "fired"])
        // 6 raw readings, and avg/max of the two full count windows (80,92,95 and 93,84,91).
        #expect(TestKit.waitUntil(timeout: 15) { telemetry.values("temperature").count == 6 && telemetry.values("temperature.avg").count == 2 })
        #expect(telemetry.values("temperature.max") == [95, 93])
        #expect(actuator.isRunning)
    }

    @Test func safeStateAfterTheCloudIsGoneForSafeAfter() throws {
        let (rig, actuator, log) = try rig(actuatorExtra: "safe_value = 7\nsafe_after = \"2s\"")
        try rig.startGateway(ready: "source.name=plant")
        usleep(500_000)
        #expect(executedValues(log).isEmpty)
        let t0 = Date()
        rig.cloud.stop()
        #expect(TestKit.waitUntil(timeout: 10) { executedValues(log) == ["7"] }, "executed: \(executedValues(log))")
        let after = Date().timeIntervalSince(t0)
        #expect(after >= 1.5, "the safe value came \(after)s after the outage began, before safe_after")
        usleep(1_500_000)
        #expect(executedValues(log) == ["7"], "the safe state is applied once per outage")
        #expect(actuator.isRunning)
    }

    /// MQTT 5: a command without "expires" sent with a Message Expiry Interval expires with its
    /// message: queued behind a slow device past it, it is never run.
    @Test func messageExpiryIntervalExpiresAQueuedCommand() throws {
        let (rig, actuator, log) = try rig(actuatorArgs: ["--late-ms", "1500"])
        try rig.startGateway(ready: "source.name=plant")
        let cloud = try CloudCommander(port: rig.cloud.port)
        try cloud.send(#"{"id":"x-1","actuator":"boiler/setpoint","value":1}"#)
        try cloud.send(#"{"id":"x-2","actuator":"boiler/setpoint","value":2}"#)
        // As a backend speaking MQTT 5 sends it (mosquitto_pub, the C client).
        let pub = try Child("/usr/bin/mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(rig.cloud.port)", "-V", "mqttv5", "-q", "1",
                                                        "-D", "publish", "message-expiry-interval", "2",
                                                        "-t", "brume/gw-e2e/commands", "-m", #"{"id":"x-3","actuator":"boiler/setpoint","value":3}"#],
                            dir: rig.dir, name: "pub-expiring")
        #expect(pub.wait(timeout: 10) == 0, "\(pub.stderr)")
        try cloud.send(#"{"id":"x-4","actuator":"boiler/setpoint","value":4}"#)
        #expect(TestKit.waitUntil(timeout: 30) { cloud.allFinal(["x-1", "x-2", "x-3", "x-4"]) })
        #expect(cloud.finalState("x-3") == "expired", "\(cloud.results.withLock { $0 })")
        #expect(["x-1", "x-2", "x-4"].allSatisfy { cloud.finalState($0) == "done" })
        #expect(executedValues(log) == ["1", "2", "4"])
        #expect(actuator.isRunning)
    }

    @Test func killNineNeverRunsACommandTwice() throws {
        let (rig, actuator, log) = try rig(actuatorArgs: ["--late-ms", "20"])
        try rig.startGateway(ready: "source.name=plant")
        let cloud = try CloudCommander(port: rig.cloud.port)
        let ids = (1...300).map { "k-\($0)" }
        for (i, id) in ids.enumerated() { try cloud.send(#"{"id":"\#(id)","actuator":"boiler/setpoint","value":\#(i + 1)}"#) }
        for _ in 0..<3 {
            usleep(700_000)
            rig.gateway!.kill9()
            usleep(300_000)
            try rig.startGateway(ready: "source.name=plant")
        }
        #expect(TestKit.waitUntil(timeout: 90) { cloud.allFinal(ids) }, "missing: \(ids.filter { cloud.finalState($0) == nil }.prefix(10))")
        let executed = executedValues(log)
        #expect(executed.count == Set(executed).count, "a command ran twice after kill -9")
        let states = Dictionary(grouping: ids, by: { cloud.finalState($0) ?? "none" }).mapValues(\.count)
        print("e2e commands kill -9 ×3: final states \(states), executed \(executed.count)")
        // A command is done only if the device ran it.
        #expect(ids.filter { cloud.finalState($0) == "done" }.allSatisfy { executed.contains(String($0.dropFirst(2))) })
        #expect(actuator.isRunning)
    }
}

extension MQTTClient {
    static func testPublisher(port: Int) throws -> MQTTClient {
        let c = MQTTClient(options: MQTTClientOptions(host: "127.0.0.1", port: port, clientID: "test-pub-\(UUID().uuidString.prefix(6))"),
                           logger: Logger(label: "pub"), handlers: MQTTHandlers())
        c.start()
        guard TestKit.waitUntil(timeout: 10, { c.isConnected }) else { throw TestError("publisher cannot connect") }
        return c
    }
}

/// Subscribes (persistent session) to the gateway's events topic.
final class EventCollector: Sendable {
    let client: MQTTClient
    let bodies = Mutex<[String]>([])
    init(port: Int) throws {
        let box = Locked<[String]>([])
        client = MQTTClient(options: MQTTClientOptions(host: "127.0.0.1", port: port, clientID: "events-\(UUID().uuidString.prefix(6))", cleanSession: false),
                            logger: Logger(label: "events"),
                            handlers: MQTTHandlers(onMessage: { _, p, _, _ in box.withLock { $0.append(String(decoding: p, as: UTF8.self)) } }))
        self.box = box
        client.addSubscription("brume/gw-e2e/events", qos: 1)
        client.start()
        guard TestKit.waitUntil(timeout: 10, { client.isConnected }) else { throw TestError("event collector cannot connect") }
        Thread.detachNewThread { [box, weak self] in
            while let s = self {
                let b = box.withLock { $0 }
                s.bodies.withLock { $0 = b }
                usleep(50_000)
            }
        }
    }
    let box: Locked<[String]>
    deinit { client.stop() }
}
