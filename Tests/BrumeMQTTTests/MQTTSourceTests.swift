import BrumeCore
import BrumeTestKit
import Foundation
import Logging
import Synchronization
import Testing
@testable import BrumeMQTT

/// Publishes with a real client (QoS1, waits for the PUBACK).
final class TestPublisher: Sendable {
    let client: MQTTClient
    let acked = Atomic<Int>(0)
    init(port: Int) throws {
        let box = Box()
        client = MQTTClient(options: MQTTClientOptions(host: "127.0.0.1", port: port, clientID: "test-pub-\(UUID().uuidString.prefix(6))"),
                            logger: Logger(label: "pub"), handlers: MQTTHandlers(onPublished: { _, _, _ in box.n.add(1, ordering: .relaxed) }))
        self.box = box
        client.start()
        guard TestKit.waitUntil(timeout: 10, { client.isConnected }) else { throw TestError("publisher cannot connect") }
    }
    final class Box: Sendable { let n = Atomic<Int>(0) }
    let box: Box
    func publish(_ topic: String, _ payload: String) throws {
        let before = box.n.load(ordering: .relaxed)
        try client.publish(topic: topic, payload: Array(payload.utf8), qos: 1)
        _ = TestKit.waitUntil(timeout: 5) { box.n.load(ordering: .relaxed) > before }
    }
    deinit { client.stop() }
}

func sourceConfig(port: Int, subscribe: [String], device: String = "{1}", metric: String = "{2}", payload: PayloadFormat = .number,
                  clientID: String = "brume-test-src", persistent: Bool = true) -> MQTTSourceOptions {
    MQTTSourceOptions(
        client: MQTTClientOptions(host: "127.0.0.1", port: port, clientID: clientID, cleanSession: !persistent, keepAlive: 30),
        subscribe: subscribe, qos: 1, device: try! TopicTemplate.parse(device).get(), metric: try! TopicTemplate.parse(metric).get(),
        payload: payload, ackAfterCommit: true)
}

@Suite(.serialized) struct MQTTSourceTests {
    @Test func mapsTopicsAndPayloadsIntoReadings() throws {
        let dir = TestKit.tempDir()
        let broker = try Mosquitto(dir: dir)
        let sink = CollectingSink()
        let numbers = MQTTSource(name: "n", options: sourceConfig(port: broker.port, subscribe: ["sensors/+/+"], clientID: "n"), sink: sink, logger: Logger(label: "t"), now: { 42 })
        let multi = MQTTSource(name: "m", options: sourceConfig(port: broker.port, subscribe: ["nodes/#"], metric: "", payload: .jsonObject(time: try JSONPointer("/ts")), clientID: "m"), sink: sink, logger: Logger(label: "t"), now: { 42 })
        let pointer = MQTTSource(name: "p", options: sourceConfig(port: broker.port, subscribe: ["meters/+/+"], device: "meter-{1}", payload: .jsonValue(value: try JSONPointer("/data/v"), time: try JSONPointer("/ts")), clientID: "p"), sink: sink, logger: Logger(label: "t"), now: { 42 })
        for s in [numbers, multi, pointer] { s.start() }
        defer { for s in [numbers, multi, pointer] { s.stop() } }
        #expect(TestKit.waitUntil(timeout: 10) { [numbers, multi, pointer].allSatisfy { $0.state == .connected } })
        usleep(200_000) // SUBACK
        let pub = try TestPublisher(port: broker.port)
        try pub.publish("sensors/boiler/temperature", "71.5")
        try pub.publish("nodes/greenhouse", #"{"temperature":21.5,"humidity":40,"ts":"2026-11-26T18:09:45Z"}"#)
        try pub.publish("meters/7/power", #"{"data":{"v":1200},"ts":1764169999}"#)
        // Malformed: counted, dropped, nothing crashes, the stream goes on.
        try pub.publish("sensors/boiler/temperature", "hot")
        try pub.publish("nodes/greenhouse", "{not json")
        try pub.publish("meters/7/power", #"{"data":{}}"#)
        try pub.publish("sensors/boiler/pressure", "1.5")
        #expect(TestKit.waitUntil(timeout: 10) { sink.all.count >= 5 })
        let got = Set(sink.all)
        #expect(got == [
            Reading(device: "boiler", metric: "temperature", time: 42, value: .number(71.5)),
            Reading(device: "greenhouse", metric: "temperature", time: 1_795_716_585_000, value: .number(21.5)),
            Reading(device: "greenhouse", metric: "humidity", time: 1_795_716_585_000, value: .number(40)),
            Reading(device: "meter-7", metric: "power", time: 1_764_169_999_000, value: .number(1200)),
            Reading(device: "boiler", metric: "pressure", time: 42, value: .number(1.5)),
        ])
        #expect(numbers.stats.errors["not_a_number"] == 1)
        #expect(multi.stats.errors["invalid_json"] == 1)
        #expect(pointer.stats.errors["value_not_found"] == 1)
    }

    /// A QoS 0 message on a QoS 1 subscription is never delivered again: the outbox must not
    /// hold it in memory waiting for a redelivery (a crash would lose it silently).
    @Test func messagesPublishedAtQoS0AreNeverTakenAsRedeliverable() throws {
        let dir = TestKit.tempDir()
        let broker = try Mosquitto(dir: dir)
        let sink = CollectingSink()
        let src = MQTTSource(name: "s", options: sourceConfig(port: broker.port, subscribe: ["s/+/+"], clientID: "qos"), sink: sink, logger: Logger(label: "t"))
        src.start()
        defer { src.stop() }
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .connected })
        usleep(200_000)
        for (qos, value) in [("0", "1"), ("1", "2"), ("0", "3")] {
            let p = try Child("/usr/bin/mosquitto_pub", ["-p", "\(broker.port)", "-q", qos, "-t", "s/d/m", "-m", value], dir: dir, name: "pub\(value)")
            #expect(p.wait(timeout: 10) == 0)
            #expect(TestKit.waitUntil(timeout: 10) { sink.all.count == Int(value)! })
        }
        #expect(sink.all.map(\.value) == [.number(1), .number(2), .number(3)])
        let r = sink.redeliveryOfAll
        #expect(r.count == 3 && r[0] == .never && r[1] != .never && r[2] == .never, "\(r)")
    }

    @Test func persistentSessionKeepsReadingsPublishedWhileAway() throws {
        let dir = TestKit.tempDir()
        let broker = try Mosquitto(dir: dir)
        let sink = CollectingSink()
        let config = sourceConfig(port: broker.port, subscribe: ["s/+/+"], clientID: "persistent")
        var src = MQTTSource(name: "s", options: config, sink: sink, logger: Logger(label: "t"))
        src.start()
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .connected })
        usleep(200_000)
        src.stop()
        let pub = try TestPublisher(port: broker.port)
        for i in 1...50 { try pub.publish("s/d/m", "\(i)") }
        src = MQTTSource(name: "s", options: config, sink: sink, logger: Logger(label: "t"))
        src.start()
        defer { src.stop() }
        #expect(TestKit.waitUntil(timeout: 10) { sink.all.count == 50 })
        #expect(sink.all.map(\.value) == (1...50).map { .number(Double($0)) })
    }

    @Test func reconnectsAndResubscribesAfterBrokerRestart() throws {
        let dir = TestKit.tempDir()
        let broker = try Mosquitto(dir: dir)
        let sink = CollectingSink()
        // A clean session: after the restart the subscription must be made again.
        let src = MQTTSource(name: "s", options: sourceConfig(port: broker.port, subscribe: ["s/+/+"], clientID: "clean", persistent: false), sink: sink, logger: Logger(label: "t"))
        src.start()
        defer { src.stop() }
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .connected })
        broker.stop()
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .disconnected })
        try broker.start()
        #expect(TestKit.waitUntil(timeout: 15) { src.state == .connected && src.connects == 2 })
        usleep(300_000)
        let pub = try TestPublisher(port: broker.port)
        try pub.publish("s/d/m", "7")
        #expect(TestKit.waitUntil(timeout: 10) { sink.all.count == 1 })
    }
}
