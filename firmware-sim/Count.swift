import ArgumentParser
import BrumeCore
import BrumeMQTT
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A plain subscriber: counts messages on a topic filter. The benchmark's
/// ceiling is the load generator into the field broker read by this.
struct Count: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Count messages on a topic filter (the benchmark's plain subscriber).")

    @Option(help: "Broker URL.") var broker = "mqtt://127.0.0.1:1883"
    @Option(help: "Topic filter.") var topic = "load/#"
    @Option(help: "QoS.") var qos: Int32 = 1
    @Option(help: "Stop after this many messages.") var expect = 100_000
    @Option(help: "Give up after this many seconds.") var timeout: Double = 300
    @Option(help: "Create this file once subscribed.") var readyFile: String?

    func run() throws {
        let (host, port) = try parseBroker(broker)
        let box = CountBox()
        let client = MQTTClient(options: MQTTClientOptions(host: host, port: port, clientID: "firmware-sim-count-\(getpid())", cleanSession: true),
                                logger: simLogger("count"),
                                handlers: MQTTHandlers(onMessage: { _, payload, _, _ in
                                    let n = box.count.add(1, ordering: .relaxed).newValue
                                    box.bytes.add(payload.count, ordering: .relaxed)
                                    if n == 1 { box.first.store(Int(monotonicNanos()), ordering: .relaxed) }
                                    box.last.store(Int(monotonicNanos()), ordering: .relaxed)
                                }))
        client.addSubscription(topic, qos: qos)
        client.start()
        try waitConnected(client)
        sleepMillis(100)
        if let readyFile { _ = fclose(fopen(readyFile, "w")) }
        let t0 = monotonicNanos()
        while box.count.load(ordering: .relaxed) < expect && Double(monotonicNanos() - t0) / 1e9 < timeout { sleepMillis(5) }
        client.stop()
        let n = box.count.load(ordering: .relaxed)
        let secs = Double(box.last.load(ordering: .relaxed) - box.first.load(ordering: .relaxed)) / 1e9
        print("{\"messages\":\(n),\"bytes\":\(box.bytes.load(ordering: .relaxed)),\"seconds\":\(secs),\"rate\":\(Int(Double(n) / max(secs, 1e-9)))}")
    }
}

final class CountBox: Sendable {
    let count = Atomic<Int>(0)
    let bytes = Atomic<Int>(0)
    let first = Atomic<Int>(0)
    let last = Atomic<Int>(0)
}
