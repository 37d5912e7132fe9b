import BrumeCore
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Reads sensors from a (field) MQTT broker: subscribes to topic filters, maps
/// topic levels to device and metric, decodes payloads into readings and hands
/// them to the pipeline.
///
/// QoS1 subscriptions use a persistent session by default, so readings
/// published while the gateway restarts wait at the broker, and (with
/// `ack = "after_commit"`, the default) a message is acknowledged to the broker
/// only once its readings are committed to the outbox: a crash before the
/// commit leaves it at the broker, which delivers it again.
/// What an MQTT source needs (the Runtime maps `[[source]] kind = "mqtt"` to it).
public struct MQTTSourceOptions: Sendable {
    /// The field broker connection (`cleanSession` false keeps the session while away).
    public var client: MQTTClientOptions
    public var subscribe: [String]
    public var qos: Int
    public var device: TopicTemplate
    public var metric: TopicTemplate
    public var payload: PayloadFormat
    /// QoS1: acknowledge a message only once its readings are durable.
    public var ackAfterCommit: Bool
    /// The user decoder of a `.function` payload.
    public var payloadFunction: (any PayloadFunction)?

    public init(client: MQTTClientOptions, subscribe: [String], qos: Int, device: TopicTemplate, metric: TopicTemplate,
                payload: PayloadFormat, ackAfterCommit: Bool) {
        self.client = client
        self.subscribe = subscribe
        self.qos = qos
        self.device = device
        self.metric = metric
        self.payload = payload
        self.ackAfterCommit = ackAfterCommit
    }
}

public final class MQTTSource: Source {
    public let name: String
    public let options: MQTTSourceOptions
    public let stats = SourceStats()
    private let client: MQTTClient
    private let logger: Logger
    private let receiver: MessageReceiver

    public init(name: String, options config: MQTTSourceOptions, sink: any ReadingSink, logger: Logger,
                now: @escaping @Sendable () -> Int64 = wallClockMillis) {
        self.name = name
        self.options = config
        let lg = logger.forSource(name)
        self.logger = lg
        let receiver = MessageReceiver(name: name, config: config, sink: sink, stats: stats, logger: lg, now: now)
        self.receiver = receiver
        let gate: (@Sendable (AckGateContext) -> Bool)? = (config.qos > 0 && config.ackAfterCommit) ? { @Sendable ctx in receiver.waitUntilDurable(ctx) } : nil
        let handlers = MQTTHandlers(onConnect: { _, _, _ in receiver.connectedAt.store(monotonicNanos(), ordering: .relaxed) },
                                    onMessage: { topic, payload, qos, _ in receiver.receive(topic: topic, payload: payload, qos: qos) },
                                    ackGate: gate)
        client = MQTTClient(options: config.client, logger: lg, handlers: handlers)
        for f in config.subscribe { client.addSubscription(f, qos: Int32(config.qos)) }
    }

    public var state: SourceState {
        switch client.state {
        case .connected: return .connected
        case .connecting: return .starting
        case .disconnected: return .disconnected
        case .stopped: return .stopped
        }
    }

    public var connects: Int64 { client.connects.current }

    public enum RequestError: Error, Sendable, Equatable { case disconnected, publishFailed(String), timeout }

    /// Also subscribe to a topic on which actuators acknowledge commands.
    public func addAckSubscription(_ topic: String) {
        receiver.ackFilters.withLock { $0.append(topic) }
        client.addSubscription(topic, qos: 1)
    }

    /// Publishes a command to a device and, with `ackTopic`, waits for its
    /// acknowledgement: a message on that topic whose payload is `ackPayload`
    /// (any payload when nil).
    public func request(topic: String, payload: [UInt8], ackTopic: String?, ackPayload: String?, timeout: Duration) async -> Result<String, RequestError> {
        let waiter = Waiter<String>()
        if let ackTopic { receiver.ackWaiters.withLock { $0.append((ackTopic, ackPayload.map { Array($0.utf8) }, waiter)) } }
        defer { if ackTopic != nil { receiver.ackWaiters.withLock { $0.removeAll { $0.waiter === waiter } } } }
        do {
            try client.publish(topic: topic, payload: payload, qos: 1)
        } catch {
            return .failure(error.isNotConnected ? .disconnected : .publishFailed("\(error)"))
        }
        guard ackTopic != nil else { return .success("") }
        guard let ack = await waiter.wait(timeout: timeout) else { return .failure(.timeout) }
        return .success(ack)
    }

    public func start() {
        logger.info("MQTT source starting", metadata: ["mqtt.broker": "\(options.client.host):\(options.client.port)", "mqtt.subscribe": "\(options.subscribe)"])
        client.start()
    }

    /// Stops receiving; messages already handed to the sink are in the pipeline.
    public func stop() {
        // A gate waiting on a full disk gives up (without acknowledging) so that stop and
        // reload finish in bounded time.
        receiver.stopping.store(true, ordering: .releasing)
        client.stop()
    }
}

/// Turns one MQTT message into readings (runs on the client's network thread).
final class MessageReceiver: Sendable {
    let name: String
    let device: TopicTemplate
    let metric: TopicTemplate
    let decoder: PayloadDecoder
    let sink: any ReadingSink
    let stats: SourceStats
    let logger: Logger
    let now: @Sendable () -> Int64
    let limiter = LogRateLimiter(burst: 5, interval: .seconds(30))
    let lastTicket = Atomic<UInt64>(0)
    /// The source is stopping: stop waiting for durability.
    let stopping = Atomic<Bool>(false)
    /// When the current connection came up: a broker redelivers right after it.
    let connectedAt = Atomic<UInt64>(0)
    static let redeliveryWindowNanos: UInt64 = 10_000_000_000
    let filters: [String]
    let redeliverable: Bool
    let ackFilters = Mutex<[String]>([])
    let ackWaiters = Mutex<[(topic: String, payload: [UInt8]?, waiter: Waiter<String>)]>([])

    init(name: String, config: MQTTSourceOptions, sink: any ReadingSink, stats: SourceStats, logger: Logger, now: @escaping @Sendable () -> Int64) {
        self.name = name
        self.device = config.device
        self.metric = config.metric
        self.decoder = PayloadDecoder(format: config.payload, function: config.payloadFunction)
        self.filters = config.subscribe
        // Acknowledged on receipt, a lost message is not delivered again.
        self.redeliverable = config.qos > 0 && config.ackAfterCommit
        self.sink = sink
        self.stats = stats
        self.logger = logger
        self.now = now
    }

    /// `qos`: the message's, as delivered (the lower of the publisher's and the subscription's).
    func receive(topic topicPtr: UnsafePointer<CChar>, payload: UnsafeRawBufferPointer, qos: Int32 = 1) {
        let topic = String(cString: topicPtr)
        // An actuator's acknowledgement?
        let acked: Bool = ackWaiters.withLock { ws in
            guard let i = ws.firstIndex(where: { w in !w.waiter.isDone && w.topic == topic && (w.payload == nil || w.payload!.elementsEqual(payload)) }) else { return false }
            ws.remove(at: i).waiter.resume(String(decoding: payload, as: UTF8.self))
            return true
        }
        if !filters.contains(where: { topicMatches(filter: $0, topic: topic) }) {
            // Only on an ack subscription: not telemetry of this source.
            _ = acked
            return
        }
        stats.messages.add()
        guard let (d, m) = names(of: topic) else {
            drop("topic_mapping", "MQTT topic does not map to a device/metric: message dropped",
                 ["mqtt.topic": "\(topic)", "device": "\(device)", "metric": "\(metric)"])
            return
        }
        var out: [Reading] = []
        do throws(PayloadError) {
            try decoder.decode(payload, device: d, metric: m, receivedAt: now(), into: &out)
        } catch {
            drop(error.reason.rawValue, "malformed MQTT payload dropped", ["mqtt.topic": "\(topic)", "error": "\(error.message)"])
            return
        }
        guard !out.isEmpty else { return }
        if out.contains(where: { $0.metric.isEmpty }) {
            drop("topic_mapping", "reading without a metric name dropped (set metric = \"{N}\")", ["mqtt.topic": "\(topic)"])
            return
        }
        stats.readings.add(Int64(out.count))
        stats.lastReadingMillis.set(out[out.count - 1].time)
        // QoS 0 is never redelivered — also a QoS 0 message on a QoS 1 subscription (the publisher
        // chose QoS 0): it must not wait in memory for a redelivery that never comes. QoS1 is,
        // right after a reconnect.
        let redelivery: Redelivery
        if !redeliverable || qos == 0 {
            redelivery = .never
        } else if monotonicNanos() &- connectedAt.load(ordering: .relaxed) < MessageReceiver.redeliveryWindowNanos {
            redelivery = .likely
        } else {
            redelivery = .possible
        }
        lastTicket.store(sink.accept(out, from: name, redelivery: redelivery), ordering: .relaxed)
    }

    /// Device and metric of a topic, remembered for the topics seen last (a site's topics repeat:
    /// splitting and rendering each message's topic cost more than the rest of its path).
    private func names(of topic: String) -> (String, String)? {
        if let hit = topicNames.withLock({ $0[topic] }) { return hit }
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
        guard let d = device.render(levels: levels), !d.isEmpty, let m = metric.render(levels: levels) else { return nil }
        topicNames.withLock { cache in
            if cache.count >= MessageReceiver.topicCacheSize { cache.removeAll(keepingCapacity: true) }
            cache[topic] = (d, m)
        }
        return (d, m)
    }
    static let topicCacheSize = 4096
    let topicNames = Mutex<[String: (String, String)]>([:])

    private func drop(_ reason: String, _ message: Logger.Message, _ md: Logger.Metadata) {
        stats.errors.add(reason)
        if let n = limiter.admit() {
            var md = md
            md["reason"] = "\(reason)"
            if n > 0 { md["suppressed"] = "\(n)" }
            logger.warning(message, metadata: md)
        }
    }

    /// Messages waiting from which a pause in arrivals may mean the broker's window is full.
    static let stallCheckAfter = 16

    /// The ack gate: returns once every reading received so far is committed.
    /// True once everything received is durable; false if the source stops first (the
    /// messages are then never acknowledged, and the broker delivers them again).
    ///
    /// While it waits the broker sends at most its window of messages; once that many wait, the
    /// source stalls until the commit. So the outbox is asked to commit soon when the window is
    /// (nearly) full, or when at least 16 wait and nothing more arrives for 50 ms (a broker whose
    /// window is smaller than ours: EMQX caps it at its `max_inflight`, 32 by default). Otherwise
    /// one commit per commit window carries everything that arrived (an SD card at field rates).
    func waitUntilDurable(_ ctx: AckGateContext) -> Bool {
        let ticket = lastTicket.load(ordering: .relaxed)
        var waitedMillis = 0
        var asked = false
        var idle = 0
        if ctx.waiting >= max(1, ctx.window - max(4, ctx.window / 8)) {
            sink.commitSoon()
            asked = true
        }
        while !sink.waitDurable(ticket, timeout: .milliseconds(25)) {
            if stopping.load(ordering: .acquiring) {
                // Held readings are committed now, then acknowledged; a full disk still gives up.
                sink.flushNow()
                return sink.waitDurable(ticket, timeout: .seconds(1))
            }
            if !asked && ctx.waiting >= MessageReceiver.stallCheckAfter {
                idle = ctx.moreArriving() ? 0 : idle + 1
                if idle >= 2 {
                    sink.commitSoon()
                    asked = true
                }
            }
            waitedMillis += 25
            if waitedMillis % 5000 == 0, let n = limiter.admit() {
                logger.warning("outbox has not committed for a while: acknowledgements to the broker are held back",
                               metadata: ["waited_s": "\(waitedMillis / 1000)", "suppressed": "\(n)"])
            }
        }
        return true
    }
}
