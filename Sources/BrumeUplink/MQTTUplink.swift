import BrumeConfig
import BrumeCore
import BrumeMQTT
import BrumeStore
import Logging
import Synchronization

public enum UplinkState: String, Sendable { case connecting, online, offline, stopped }

public final class UplinkStats: Sendable {
    public let batchesSent = Counter()
    public let batchesAcked = Counter()
    public let readingsAcked = Counter()
    public let bytesSent = Counter()
    /// Batches sent again after a reconnect or restart (same id, same bytes).
    public let resends = Counter()
    public let publishErrors = ReasonCounters()
    /// Publish → PUBACK latency of the last acknowledged batch, in microseconds.
    public let lastAckLatencyMicros = Gauge<Int64>(0)
    /// When delivery last resumed after a disconnect (ms since epoch).
    public let lastConnectMillis = Gauge<Int64?>(nil)
    /// When the last batch was acknowledged (ms since epoch).
    public let lastAckMillis = Gauge<Int64?>(nil)
    /// Called with every publish → PUBACK latency (metrics histograms).
    public let latencyObserver = Locked<(@Sendable (Duration) -> Void)?>(nil)
    /// Bytes of the encoded batches before compression (bytesSent is what went on the wire).
    public let bytesUncompressed = Counter()
    /// Readings of batches the endpoint refused for good (dead letters).
    public let deadLettered = Counter()
    public init() {}
}

/// The sync loop for an MQTT uplink: outbox → batches (v1 wire format) → QoS1
/// publish with a bounded in-flight window → PUBACK → outbox ack.
///
/// Every batch is recorded in the outbox before it is published; after a
/// reconnect or a restart the unacknowledged ones are resent first, byte for
/// byte (same id), then new batches follow. All state changes happen on the
/// loop's task; the MQTT network thread only posts events and pokes the loop.
public final class MQTTUplink: Uplink, Sendable {
    public let config: UplinkConfig
    public let gatewayID: String
    public let stats = UplinkStats()
    private let outbox: Outbox
    /// This uplink's cursor in the outbox.
    private let key: String
    private let match: [Glob]
    private let bandwidth: ByteRateLimiter?
    private let logger: Logger
    private let now: @Sendable () -> Int64
    private let client: MQTTClient
    private let telemetryTopic: String
    private let statusTopic: String

    struct Events {
        var connectedGeneration: UInt64?
        var reloadNeeded = false
        var acks: [(UInt64, Int32)] = []
    }
    final class EventBox: Sendable {
        let m = Mutex(Events())
        func withLock<R>(_ body: (inout Events) -> R) -> R { m.withLock { body(&$0) } }
    }
    private let events = EventBox()
    private let poke: AsyncStream<Void>.Continuation
    private let pokes: AsyncStream<Void>

    public init(config: UplinkConfig, gatewayID: String, password: String?, outbox: Outbox, logger: Logger,
                now: @escaping @Sendable () -> Int64 = wallClockMillis) {
        self.config = config
        self.gatewayID = gatewayID
        self.outbox = outbox
        self.key = outbox.uplinkKey(config.name)
        self.match = config.match.compactMap { try? Glob.parse($0).get() }
        self.bandwidth = config.maxBytesPerSecond.map { ByteRateLimiter(bytesPerSecond: $0) }
        var logger = logger
        logger[metadataKey: "uplink.name"] = "\(config.name)"
        self.logger = logger
        self.now = now
        telemetryTopic = "\(config.topicPrefix)/telemetry"
        statusTopic = "\(config.topicPrefix)/status"
        (pokes, poke) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let conn = config.connection
        let events = self.events
        let poke = self.poke
        let statusTopic = self.statusTopic
        let gw = gatewayID
        let stats = self.stats
        let handlers = MQTTHandlers(
            onConnect: { client, gen, _ in
                let status = WireFormat.encodeStatus(state: "online", gateway: gw, at: now())
                _ = try? client.publish(topic: statusTopic, payload: status, qos: 1, retain: true)
                stats.lastConnectMillis.set(now())
                events.withLock {
                    $0.connectedGeneration = gen
                    $0.reloadNeeded = true
                    $0.acks.removeAll()
                }
                poke.yield()
            },
            onDisconnect: { _, _ in
                events.withLock { $0.connectedGeneration = nil }
                poke.yield()
            },
            onPublished: { gen, mid in
                events.withLock { $0.acks.append((gen, mid)) }
                poke.yield()
            })
        let options = MQTTClientOptions(
            host: conn.url.host, port: conn.url.port, clientID: conn.clientID, cleanSession: true,
            keepAlive: conn.keepAliveSeconds, username: conn.username, password: password,
            tls: conn.tls.map { MQTTTLS(caFile: $0.caFile, certFile: $0.certFile, keyFile: $0.keyFile, verifyHostname: $0.verifyHostname) },
            will: MQTTWill(topic: statusTopic, payload: WireFormat.encodeStatus(state: "offline", gateway: gatewayID, at: 0), qos: 1, retain: true),
            maxInflight: config.maxInflight + 2)
        var opts = options
        opts.alternates = conn.alternates.map { MQTTBrokerAddress(host: $0.host, port: $0.port) }
        client = MQTTClient(options: opts, logger: logger, handlers: handlers)
    }

    public var state: UplinkState {
        switch client.state {
        case .connected: return .online
        case .connecting: return .connecting
        case .disconnected: return .offline
        case .stopped: return .stopped
        }
    }

    /// Runs until the task is cancelled. Then publishes an "offline" status
    /// and disconnects (unacknowledged batches stay in the outbox).
    public func run() async {
        client.start()
        let poke = self.poke
        await withTaskGroup(of: Void.self) { group in
            // A ticker: batch delays and reconnects need the loop to look again.
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(50))
                    poke.yield()
                }
            }
            group.addTask {
                for await _ in self.outbox.commits { poke.yield() }
            }
            var loop = LoopState()
            for await _ in pokes {
                if Task.isCancelled { break }
                pump(&loop)
            }
            group.cancelAll()
        }
    }

    /// Waits (bounded) for in-flight batches to be acknowledged, then disconnects.
    public func shutdown() async { await shutdown(drainTimeout: .seconds(2)) }

    public func shutdown(drainTimeout: Duration) async {
        let deadline = ContinuousClock.now + drainTimeout
        while ContinuousClock.now < deadline, client.isConnected, stats.batchesSent.current - stats.batchesAcked.current > 0 {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if client.isConnected {
            _ = try? client.publish(topic: statusTopic, payload: WireFormat.encodeStatus(state: "offline", gateway: gatewayID, at: now()), qos: 1, retain: true)
            try? await Task.sleep(for: .milliseconds(50))
        }
        client.stop()
        poke.finish()
    }

    struct LoopState {
        var generation: UInt64?
        var inflight: [Int32: (BatchRecord, UInt64)] = [:] // mid -> (batch, publish time ns)
        var resend: [BatchRecord] = []
        var resendIndex = 0
        var buffer: [UInt8] = []
    }

    private func pump(_ loop: inout LoopState) {
        let (gen, reload, acks): (UInt64?, Bool, [(UInt64, Int32)]) = events.withLock {
            let r = ($0.connectedGeneration, $0.reloadNeeded, $0.acks)
            $0.reloadNeeded = false
            $0.acks.removeAll(keepingCapacity: true)
            return r
        }
        // Acknowledgements first: they free the window.
        for (g, mid) in acks where g == loop.generation {
            if let (rec, t0) = loop.inflight.removeValue(forKey: mid) {
                outbox.ack(rec)
                stats.batchesAcked.add()
                stats.readingsAcked.add(Int64(rec.count))
                let nanos = monotonicNanos() - t0
                stats.lastAckLatencyMicros.set(Int64(nanos / 1000))
                stats.lastAckMillis.set(now())
                if let observe = stats.latencyObserver.withLock({ $0 }) { observe(.nanoseconds(Int64(nanos))) }
            }
        }
        if reload || gen != loop.generation {
            // New connection: what was in flight is lost with the old one.
            loop.generation = gen
            loop.inflight.removeAll()
            loop.resend = gen == nil ? [] : outbox.unackedBatches(uplink: key)
            loop.resendIndex = 0
            if !loop.resend.isEmpty {
                logger.info("resending unacknowledged batches", metadata: ["batches": "\(loop.resend.count)"])
            }
        }
        guard loop.generation != nil else { return }
        while loop.inflight.count < config.maxInflight {
            // A metered link: wait (the 50 ms tick pokes again) until the budget allows more.
            if let bandwidth, !bandwidth.mayTake() { return }
            let rec: BatchRecord
            var isResend = false
            if loop.resendIndex < loop.resend.count {
                rec = loop.resend[loop.resendIndex]
                loop.resendIndex += 1
                isResend = true
            } else {
                switch outbox.nextBatch(uplink: key, maxReadings: config.batchMaxReadings, maxDelayMillis: config.batchMaxDelayMillis) {
                case .batch(let r): rec = r
                case .waitUntil, .empty: return
                }
            }
            guard var readings = outbox.readings(of: rec) else {
                // Evicted or quarantined meanwhile: nothing left to send for it.
                outbox.ack(rec)
                continue
            }
            if !match.isEmpty {
                // Routing: this uplink carries only what its patterns match.
                readings = readings.filter { r in match.contains { $0.matches("\(r.device)/\(r.metric)") } }
                if readings.isEmpty { outbox.ack(rec); continue }
            }
            loop.buffer.removeAll(keepingCapacity: true)
            WireFormat.encodeTelemetry(gateway: gatewayID, batchID: WireFormat.batchID(gateway: gatewayID, first: rec.first, last: rec.last),
                                       historical: rec.historical, readings: readings, into: &loop.buffer)
            do throws(MQTTError) {
                let t0 = monotonicNanos()
                let (g, mid) = try client.publish(topic: telemetryTopic, payload: loop.buffer, qos: 1)
                guard g == loop.generation else {
                    // Reconnected underneath us: the reload will resend it.
                    return
                }
                loop.inflight[mid] = (rec, t0)
                stats.batchesSent.add()
                stats.bytesSent.add(Int64(loop.buffer.count))
                stats.bytesUncompressed.add(Int64(loop.buffer.count))
                bandwidth?.take(loop.buffer.count)
                if isResend { stats.resends.add() }
            } catch {
                stats.publishErrors.add(error.isNotConnected ? "not_connected" : "publish_failed")
                // Keep it for the next connection (it is recorded in the outbox).
                return
            }
        }
    }
}
