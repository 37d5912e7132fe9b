import ArgumentParser
import BrumeCore
import BrumeMQTT
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The "cloud": subscribes to the telemetry topic, decodes v1 batches and
/// counts what arrived. Readings whose value is an integer are taken as
/// load-generator sequence numbers: received, unique, duplicates, missing,
/// out of order per device. Batches seen twice are compared byte for byte.
struct Cloud: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Count telemetry arriving at the cloud broker (loss, duplicates, order, latency).")

    @Option(help: "Cloud broker URL.") var broker = "mqtt://127.0.0.1:18831"
    @Option(help: "Telemetry topic filter.") var topic = "brume/+/telemetry"
    @Option(help: "MQTT client id (persistent session: batches wait at the broker while we are away).") var clientID = "brume-cloud-counter"
    @Option(help: "Stop once this many distinct sequence numbers arrived (0: never).") var expect = 0
    @Option(help: "First expected sequence number (for --expect and missing counts).") var first = 1
    @Option(help: "Stop after this many seconds without a message, once one arrived (0: never).") var idleTimeout: Double = 0
    @Option(help: "Stop after this many seconds in all (0: never).") var timeout: Double = 0
    @Option(help: "Write the JSON report here as well as on stdout.") var report: String?
    @Option(help: "Create this file once subscribed.") var readyFile: String?
    @Flag(help: "Print a line per batch.") var follow = false
    @Option(help: "Only readings of this metric carry sequence numbers (empty: every integer value).") var seqMetric = "seq"

    func run() throws {
        let (host, port) = try parseBroker(broker)
        let counter = CloudCounter(first: first, seqMetric: seqMetric)
        let follow = self.follow
        let handlers = MQTTHandlers(onMessage: { _, payload, _, _ in
            counter.ingest(payload, follow: follow)
        })
        let client = MQTTClient(options: MQTTClientOptions(host: host, port: port, clientID: clientID, cleanSession: false, maxInflight: 100),
                                logger: simLogger("cloud"), handlers: handlers)
        client.addSubscription(topic, qos: 1)
        signal(SIGTERM) { _ in cloudStop.store(true, ordering: .relaxed) }
        signal(SIGINT) { _ in cloudStop.store(true, ordering: .relaxed) }
        client.start()
        try waitConnected(client)
        sleepMillis(100) // let SUBACK arrive
        if let readyFile { _ = fclose(fopen(readyFile, "w")) }
        if follow { print("cloud: listening on \(broker) \(topic)") ; flushStdout() }
        let t0 = monotonicNanos()
        while !cloudStop.load(ordering: .relaxed) {
            sleepMillis(20)
            let s = counter.snapshotCounts()
            if expect > 0 && s.unique >= expect { sleepMillis(300); break }
            let now = monotonicNanos()
            if timeout > 0 && Double(now - t0) / 1e9 > timeout { break }
            if idleTimeout > 0, s.lastMessageNanos > 0, Double(now - s.lastMessageNanos) / 1e9 > idleTimeout { break }
        }
        client.stop()
        if follow { print(counter.humanSummary()) }
        let json = counter.reportJSON(expect: expect)
        print(json)
        if let report, let f = fopen(report, "w") {
            fputs(json + "\n", f)
            fclose(f)
        }
    }
}

let cloudStop = Atomic<Bool>(false)

final class CloudCounter: Sendable {
    struct State {
        var batches = 0
        var histBatches = 0
        var batchHashes: [String: UInt64] = [:]
        var duplicateBatches = 0
        var mismatchedDuplicates = 0
        var undecodable = 0
        var readings = 0
        var seen: [UInt8] = []      // index seq - first → times seen (saturating)
        var unique = 0
        var duplicates = 0
        var nonSequence = 0
        var outOfOrder = 0
        var lastPerDevice: [String: Int] = [:]
        /// Readings per device (the demo's closing line).
        var perDevice: [String: Int] = [:]
        var latencies: [Int64] = []
        var lastMessageNanos: UInt64 = 0
        var firstMessageNanos: UInt64 = 0
        var bytes = 0
    }
    let state = Mutex(State())
    let first: Int
    let seqMetric: String

    init(first: Int, seqMetric: String = "") {
        self.first = first
        self.seqMetric = seqMetric
    }

    func ingest(_ payload: UnsafeRawBufferPointer, follow: Bool) {
        let now = wallClockMillis()
        let batch: TelemetryBatch
        do { batch = try TelemetryBatch.decode(payload) } catch {
            state.withLock { $0.undecodable += 1 }
            return
        }
        var h: UInt64 = 0xcbf29ce484222325
        for b in payload { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        state.withLock { s in
            s.lastMessageNanos = monotonicNanos()
            if s.firstMessageNanos == 0 { s.firstMessageNanos = s.lastMessageNanos }
            s.bytes += payload.count
            if let prev = s.batchHashes[batch.batchID] {
                s.duplicateBatches += 1
                if prev != h { s.mismatchedDuplicates += 1 }
            } else {
                s.batchHashes[batch.batchID] = h
            }
            s.batches += 1
            if batch.historical { s.histBatches += 1 }
            for r in batch.readings {
                s.readings += 1
                s.perDevice[r.device, default: 0] += 1
                // Replayed logs carry their own (old) timestamps: not a latency.
                if abs(now - r.time) < 3_600_000 { s.latencies.append(now - r.time) }
                guard seqMetric.isEmpty || r.metric == seqMetric, case .number(let v) = r.value, v == v.rounded(), v >= Double(first), v < 1e12 else {
                    s.nonSequence += 1
                    continue
                }
                let idx = Int(v) - first
                if idx >= s.seen.count { s.seen.append(contentsOf: repeatElement(0, count: max(idx + 1 - s.seen.count, s.seen.count))) }
                if s.seen[idx] == 0 { s.unique += 1 } else { s.duplicates += 1 }
                if s.seen[idx] < 255 { s.seen[idx] += 1 }
                let key = r.device
                if let last = s.lastPerDevice[key], Int(v) < last, s.seen[idx] == 1 { s.outOfOrder += 1 }
                s.lastPerDevice[key] = max(s.lastPerDevice[key] ?? 0, Int(v))
            }
        }
        if follow {
            let sample = batch.readings.prefix(3).map { "\($0.device)/\($0.metric)=\($0.value)" }.joined(separator: " ")
            print("cloud: batch \(batch.batchID) \(batch.readings.count) readings\(batch.historical ? " (historical)" : "")  \(sample)\(batch.readings.count > 3 ? " ..." : "")")
            flushStdout()
        }
    }

    func snapshotCounts() -> (unique: Int, lastMessageNanos: UInt64) {
        state.withLock { ($0.unique, $0.lastMessageNanos) }
    }

    func humanSummary() -> String {
        state.withLock { s in
            var lat = s.latencies
            lat.sort()
            let p50 = lat.isEmpty ? 0 : lat[(lat.count - 1) / 2]
            let p99 = lat.isEmpty ? 0 : lat[Int(Double(lat.count - 1) * 0.99)]
            let devices = s.perDevice.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            return "cloud: received \(s.readings) readings in \(s.batches) batches (\(s.duplicateBatches) resent, \(s.mismatchedDuplicates) differing, \(s.undecodable) undecodable); latency from the sensor's timestamp p50 \(p50) ms, p99 \(p99) ms"
                + (devices.isEmpty ? "" : "\ncloud: readings per device: \(devices)")
        }
    }

    func reportJSON(expect: Int) -> String {
        state.withLock { s in
            var lat = s.latencies
            lat.sort()
            func pct(_ p: Double) -> Int64 { lat.isEmpty ? 0 : lat[min(lat.count - 1, Int(Double(lat.count - 1) * p))] }
            var missing = 0
            var maxSeq = 0
            for (i, c) in s.seen.enumerated() where c > 0 { maxSeq = i + 1 }
            let upper = max(expect, maxSeq)
            for i in 0..<upper where i >= s.seen.count || s.seen[i] == 0 { missing += 1 }
            return "{\"batches\":\(s.batches),\"hist_batches\":\(s.histBatches),\"duplicate_batches\":\(s.duplicateBatches),\"mismatched_duplicate_batches\":\(s.mismatchedDuplicates),\"undecodable\":\(s.undecodable),\"readings\":\(s.readings),\"unique\":\(s.unique),\"duplicates\":\(s.duplicates),\"missing\":\(missing),\"out_of_order\":\(s.outOfOrder),\"non_sequence\":\(s.nonSequence),\"bytes\":\(s.bytes),\"seconds\":\(Double(s.lastMessageNanos &- s.firstMessageNanos) / 1e9),\"latency_ms\":{\"p50\":\(pct(0.5)),\"p90\":\(pct(0.9)),\"p99\":\(pct(0.99)),\"max\":\(lat.last ?? 0)}}"
        }
    }
}
