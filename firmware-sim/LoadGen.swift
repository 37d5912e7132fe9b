import ArgumentParser
import BrumeCore

#if canImport(Glibc)
import Glibc
#endif

/// Publishes K readings as fast as possible, each carrying a sequence number
/// (the value) and its send time (ts), so a cloud counter can count loss,
/// duplicates, order and latency.
///
/// Topic `PREFIX/devD/seq`, payload `{"v":SEQ,"ts":MILLIS}`; reading SEQ goes to
/// device SEQ % devices, so per-device sequences are increasing.
struct LoadGen: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "loadgen", abstract: "Publish K sequence-numbered readings as fast as possible (or at --rate).")

    @Option(help: "Field broker URL.") var broker = "mqtt://127.0.0.1:1883"
    @Option(help: "Readings to publish.") var count = 100_000
    @Option(help: "First sequence number.") var start = 1
    @Option(help: "Devices (sequence numbers are spread round-robin).") var devices = 10
    @Option(help: "Readings per second in total (0: as fast as possible).") var rate: Double = 0
    @Option(help: "QoS (0 or 1).") var qos: Int32 = 1
    @Option(help: "Topic prefix.") var prefix = "load"
    @Option(help: "In-flight QoS1 window.") var window = 2000

    func run() throws {
        let (host, port) = try parseBroker(broker)
        let pub = WindowedPublisher(host: host, port: port, clientID: "firmware-sim-loadgen-\(getpid())", window: window)
        try pub.start()
        var sent = 0
        let t0 = monotonicNanos()
        var payload: [UInt8] = []
        let topics = (0..<devices).map { "\(prefix)/dev\($0)/seq" }
        // A device never stamps two readings with the same millisecond (as real ones do not;
        // time-series stores such as InfluxDB would merge them), even when the generator bursts.
        var lastTs = [Int64](repeating: 0, count: devices)
        for i in 0..<count {
            let seq = start + i
            let d = seq % devices
            let ts = max(wallClockMillis(), lastTs[d] + 1)
            lastTs[d] = ts
            payload.removeAll(keepingCapacity: true)
            payload.append(contentsOf: "{\"v\":\(seq),\"ts\":\(ts)}".utf8)
            pub.publish(topic: topics[d], payload: payload, qos: qos, sent: &sent)
            if rate > 0 {
                let due = t0 + UInt64(Double(i + 1) / rate * 1e9)
                let now = monotonicNanos()
                if due > now { usleep(UInt32((due - now) / 1000)) }
            }
        }
        pub.drain(sent: sent, timeout: 120)
        let secs = Double(monotonicNanos() - t0) / 1e9
        print("{\"published\":\(sent),\"seconds\":\(secs),\"rate\":\(Int(Double(sent) / max(secs, 1e-9)))}")
        pub.client.stop()
    }
}
