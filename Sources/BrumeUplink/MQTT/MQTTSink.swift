import BrumeCore
import BrumeMQTT
import BrumeStore
import CompressNIO
import Logging
import NIOCore
import Synchronization

/// How an MQTT uplink lays out batches (docs/wire-format.md).
public enum MQTTSinkFormat: Sendable {
    /// Brume's v1 JSON, one message per batch on `{prefix}/telemetry`.
    case brume
    /// SenML JSON (RFC 8428), one message per batch on `{prefix}/senml`.
    case senml
    /// Several messages per batch, with per-session state (Sparkplug B, ThingsBoard, per reading).
    case layout(any MQTTLayout)
}

/// What an MQTT uplink needs (the Runtime maps `[uplink.*] kind = "mqtt"` to it).
public struct MQTTSinkOptions: Sendable {
    /// The broker connection; `protocolVersion` is `.auto` by default for uplinks.
    public var client: MQTTClientOptions
    /// `brume/{gateway}` already resolved: telemetry goes to `{prefix}/telemetry`, the retained
    /// status to `{prefix}/status`.
    public var topicPrefix: String
    /// Batches published and not yet acknowledged, at most.
    public var window: Int
    /// gzip the v1 JSON (metered links): published to `{prefix}/telemetry/gzip`, with the
    /// MQTT 5 user property `content-encoding: gzip`.
    public var gzip: Bool
    public var format: MQTTSinkFormat
    public init(client: MQTTClientOptions, topicPrefix: String, window: Int, gzip: Bool = false, format: MQTTSinkFormat = .brume) {
        self.client = client
        self.topicPrefix = topicPrefix
        self.window = window
        self.gzip = gzip
        self.format = format
    }
}

/// An MQTT uplink: v1 JSON batches published at QoS1; the broker's PUBACK is the outcome.
///
/// On an MQTT 5 connection the PUBACK carries a reason code: a broker that drops a publish
/// (an ACL denying the topic, a message over `message_size_limit`) says so, and the batch is
/// not acknowledged. Batches carry the batch and gateway ids as user properties and their
/// content type. On a 3.1.1 connection (a broker without MQTT 5) a PUBACK is all there is.
public final class MQTTSink: BatchSink, Sendable {
    public let options: MQTTSinkOptions
    public let client: MQTTClient
    public let gatewayID: String
    private let telemetryTopic: String
    private let statusTopic: String
    private let now: @Sendable () -> Int64
    private let connected = AtomicBox() // generation of the current connection, 0 = none
    /// Publishes waiting for their PUBACK, and PUBACKs that beat the registration (the network
    /// thread may answer before `publish` returns; no lock is held across the publish).
    struct Pending {
        var waiting: [Int32: @Sendable (DeliveryOutcome) -> Void] = [:]
        /// mid → (reason code, publishes started when it arrived): a mid is reused after 65,535
        /// publishes, so an entry counts only for a publish started before it arrived.
        var early: [Int32: (reason: Int32, epoch: UInt64)] = [:]
        var epoch: UInt64 = 0
        mutating func clear() { waiting.removeAll(); early.removeAll() }
    }
    private let pending = Locked(Pending())
    private let pokeBox = CallbackSlot<Void>()
    /// The layout of a multi-message format, under the lock that orders its publishes.
    private let layout: Locked<any MQTTLayout>?
    private let publishesStatus: Bool
    /// Commands that arrived through the layout (Sparkplug DCMD, ThingsBoard RPC).
    public let commandSlot = CallbackSlot<[Command]>()
    /// Messages on the layout's subscriptions that were not understood, by reason.
    public let inboundRejected = ReasonCounters()
    private let inboundLimiter = LogRateLimiter(burst: 3, interval: .seconds(60))
    private let logger: Logger

    final class AtomicBox: Sendable {
        let value = Atomic<UInt64>(0)
        func load(ordering: AtomicLoadOrdering) -> UInt64 { value.load(ordering: .acquiring) }
        func store(_ v: UInt64, ordering: AtomicStoreOrdering) { value.store(v, ordering: .releasing) }
    }

    public init(options: MQTTSinkOptions, gatewayID: String, logger: Logger, now: @escaping @Sendable () -> Int64 = wallClockMillis) {
        self.options = options
        self.gatewayID = gatewayID
        self.now = now
        self.logger = logger
        switch options.format {
        case .brume, .layout: telemetryTopic = options.gzip ? "\(options.topicPrefix)/telemetry/gzip" : "\(options.topicPrefix)/telemetry"
        case .senml: telemetryTopic = "\(options.topicPrefix)/senml"
        }
        statusTopic = "\(options.topicPrefix)/status"
        var opts = options.client
        let layout: Locked<any MQTTLayout>?
        if case .layout(let l) = options.format { layout = Locked(l) } else { layout = nil }
        self.layout = layout
        publishesStatus = layout?.withLock { $0.publishesStatus } ?? true
        if publishesStatus {
            opts.will = MQTTWill(topic: statusTopic, payload: WireFormat.encodeStatus(state: "offline", gateway: gatewayID, at: 0), qos: 1, retain: true)
        }
        if let layout {
            opts.willProvider = { [will = opts.will] in layout.withLock { $0.nextWill() } ?? will }
        }
        // Births and announcements travel with the batches: room for them in the window.
        opts.maxInflight = options.window * (layout == nil ? 1 : 4) + 2
        let statusTopic = self.statusTopic
        let connected = self.connected
        let pending = self.pending
        let pokeBox = self.pokeBox
        let gw = gatewayID
        let publishesStatus = self.publishesStatus
        let inbound = InboundBox()
        let handlers = MQTTHandlers(
            onConnect: { client, gen, _ in
                if publishesStatus {
                    let status = WireFormat.encodeStatus(state: "online", gateway: gw, at: now())
                    _ = try? client.publish(topic: statusTopic, payload: status, qos: 1, retain: true)
                }
                // A new session: its births go before any batch (the loop sends once `connected` is set).
                layout?.withLock { l in
                    for m in l.sessionStarted(now: now()) { _ = try? client.publish(topic: m.topic, payload: m.payload, qos: 1, retain: m.retain) }
                }
                pending.withLock { $0.clear() }
                connected.store(gen, ordering: .releasing)
                pokeBox(())
            },
            onDisconnect: { _, _ in
                connected.store(0, ordering: .releasing)
                // What was in flight is gone with the connection: the loop resends it.
                pending.withLock { $0.clear() }
                pokeBox(())
            },
            onMessage: { topic, payload, _, _ in inbound.sink?.received(String(cString: topic), payload) },
            onPublished: { gen, mid, reason in
                guard connected.load(ordering: .acquiring) == gen else { return }
                let done = pending.withLock { p -> (@Sendable (DeliveryOutcome) -> Void)? in
                    if let d = p.waiting.removeValue(forKey: mid) { return d }
                    p.early[mid] = (reason, p.epoch)
                    return nil
                }
                done?(MQTTSink.outcome(reason: reason))
            })
        client = MQTTClient(options: opts, logger: logger, handlers: handlers)
        for f in layout?.withLock({ $0.subscriptions }) ?? [] { client.addSubscription(f, qos: 1) }
        inbound.sink = self
    }

    final class InboundBox: @unchecked Sendable {
        // Set once, before the client starts.
        weak var sink: MQTTSink?
    }

    /// A message on one of the layout's subscriptions (network thread).
    private func received(_ topic: String, _ payload: UnsafeRawBufferPointer) {
        guard let layout else { return }
        var commands: [Command] = []
        layout.withLock { l in
            let what = l.received(topic: topic, payload: payload, now: now())
            var replies: [MQTTOutMessage] = []
            switch what {
            case .none: break
            case .rebirth:
                logger.notice("uplink: rebirth requested: births published again", metadata: ["topic": "\(topic)"])
                replies = l.rebirth(now: now())
            case .commands(let cmds, let r):
                commands = cmds
                replies = r
            case .invalid(let reason, let detail, let r):
                inboundRejected.add(reason)
                if let n = inboundLimiter.admit() {
                    logger.warning("uplink: a message on a command topic was refused", metadata: ["topic": "\(topic)", "reason": "\(reason)", "detail": "\(detail)", "suppressed": "\(n)"])
                }
                replies = r
            }
            for m in replies { _ = try? client.publish(topic: m.topic, payload: m.payload, qos: 1, retain: m.retain) }
        }
        if !commands.isEmpty { commandSlot(commands) }
    }

    /// The command ids the layout's commands carry (`spb:`, `tb:`), nil when it has none.
    public var commandIDPrefix: String? { layout?.withLock { $0.commandIDPrefix } }

    /// Publishes the layout's answer to a command's result: nil when it has none for this
    /// state, false when it could not be published now (not connected: asked again later).
    public func publishReply(to result: CommandResult) -> Bool? {
        guard let m = layout?.withLock({ $0.reply(to: result) }) else { return nil }
        return (try? client.publish(topic: m.topic, payload: m.payload, qos: 1, retain: m.retain)) != nil
    }

    public var kind: String { "mqtt" }
    public var endpoint: String {
        ([MQTTBrokerAddress(host: options.client.host, port: options.client.port)] + options.client.alternates).map(\.description).joined(separator: ",")
    }
    public var window: Int { options.window }
    public var connection: UInt64? {
        let g = connected.load(ordering: .acquiring)
        return g == 0 ? nil : g
    }
    public var state: UplinkState {
        switch client.state {
        case .connected: return .online
        case .connecting: return .connecting
        case .disconnected: return .offline
        case .stopped: return .stopped
        }
    }
    /// The broker's Maximum Packet Size less the PUBLISH overhead (fixed header, topic, packet
    /// id, properties), when it set one.
    public var maxBodyBytes: Int? {
        // Layouts publish a batch as several smaller messages (a reading or a device each).
        guard layout == nil else { return nil }
        let m = client.brokerMaxPacketSize.load(ordering: .relaxed)
        return m > 0 ? max(64, m - telemetryTopic.utf8.count - gatewayID.utf8.count * 2 - 200) : nil
    }

    public func start(poke: @escaping @Sendable () -> Void) {
        pokeBox.set { _ in poke() }
        client.start()
    }

    public func stop(drain: Duration) async {
        if client.isConnected {
            layout?.withLock { l in
                for m in l.stopping(now: now()) { _ = try? client.publish(topic: m.topic, payload: m.payload, qos: 1, retain: m.retain) }
            }
        }
        if client.isConnected && publishesStatus {
            _ = try? client.publish(topic: statusTopic, payload: WireFormat.encodeStatus(state: "offline", gateway: gatewayID, at: now()), qos: 1, retain: true)
            try? await Task.sleep(for: .milliseconds(50))
        }
        client.stop()
    }

    public func encode(_ batch: BatchRecord, id: String, readings: [Reading], seqs: [Int64]?, into body: inout [UInt8]) -> Int {
        switch options.format {
        case .brume: WireFormat.encodeTelemetry(gateway: gatewayID, batchID: id, historical: batch.historical, readings: readings, into: &body)
        case .senml: SenML.encode(gateway: gatewayID, readings: readings, into: &body)
        case .layout:
            let t = now()
            for m in layout!.withLock({ $0.encode(batch, readings: readings, now: t) }) { MessageFrames.append(m, to: &body) }
            return body.count
        }
        let plain = body.count
        if options.gzip {
            var buffer = ByteBuffer(bytes: body)
            if let z = try? buffer.compress(with: .gzip()) { body = Array(z.readableBytesView) }
        }
        return plain
    }

    public func deliver(_ batch: EncodedBatch, done: @escaping @Sendable (DeliveryOutcome) -> Void) {
        var user = [("batch", batch.id), ("gw", gatewayID)]
        if options.gzip { user.append(("content-encoding", "gzip")) }
        if let layout {
            deliver(batch, layout: layout, properties: MQTTPublishProperties(userProperties: user), done: done)
            return
        }
        let props = MQTTPublishProperties(contentType: { if case .senml = options.format { return "application/senml+json" }; return "application/json" }(),
                                          userProperties: user)
        let epoch = pending.withLock { p -> UInt64 in
            p.epoch += 1
            return p.epoch
        }
        do throws(MQTTError) {
            let (gen, mid) = try client.publish(topic: telemetryTopic, payload: batch.body, qos: 1, properties: props)
            guard gen == connected.load(ordering: .acquiring) else { return } // reconnected meanwhile: resent
            let early = pending.withLock { p -> Int32? in
                if let e = p.early.removeValue(forKey: mid), e.epoch >= epoch { return e.reason }
                p.waiting[mid] = done
                return nil
            }
            if let early { done(MQTTSink.outcome(reason: early)) }
        } catch {
            if error.isOversize {
                done(.tooLarge(detail: "\(batch.body.count) bytes is over the broker's Maximum Packet Size (\(client.brokerMaxPacketSize.load(ordering: .relaxed)))"))
            } else {
                done(.retry(reason: error.isNotConnected ? "not_connected" : "publish_failed", detail: "\(error)", after: nil))
            }
        }
    }

    /// A layout's batch: its messages in order, births first; done when every one is acknowledged.
    private func deliver(_ batch: EncodedBatch, layout: Locked<any MQTTLayout>, properties: MQTTPublishProperties,
                         done: @escaping @Sendable (DeliveryOutcome) -> Void) {
        let frames = MessageFrames.decode(batch.body)
        guard !frames.isEmpty else { done(.accepted); return }
        let group = AckGroup(count: frames.count, done: done)
        let epoch = pending.withLock { p -> UInt64 in
            p.epoch += 1
            return p.epoch
        }
        let t = now()
        var failure: MQTTError?
        var stale = false
        layout.withLock { l in
            for m in l.prepare(frames, now: t) {
                do throws(MQTTError) {
                    let (gen, mid) = try client.publish(topic: m.topic, payload: m.payload, qos: 1, retain: m.retain, properties: m.tracked ? properties : nil)
                    guard m.tracked else { continue }
                    guard gen == connected.load(ordering: .acquiring) else { stale = true; return } // reconnected meanwhile: resent
                    let early = pending.withLock { p -> Int32? in
                        if let e = p.early.removeValue(forKey: mid), e.epoch >= epoch { return e.reason }
                        p.waiting[mid] = { group.report($0) }
                        return nil
                    }
                    if let early { group.report(MQTTSink.outcome(reason: early)) }
                } catch {
                    failure = error
                    return
                }
            }
        }
        if stale { return }
        if let error = failure {
            if error.isOversize {
                group.fail(.tooLarge(detail: "a message of the batch is over the broker's Maximum Packet Size (\(client.brokerMaxPacketSize.load(ordering: .relaxed)))"))
            } else {
                group.fail(.retry(reason: error.isNotConnected ? "not_connected" : "publish_failed", detail: "\(error)", after: nil))
            }
        }
    }

    /// The messages of one batch: the first refusal, or accepted once all are acknowledged.
    final class AckGroup: Sendable {
        private let state: Mutex<(remaining: Int, finished: Bool)>
        private let done: @Sendable (DeliveryOutcome) -> Void
        init(count: Int, done: @escaping @Sendable (DeliveryOutcome) -> Void) {
            state = Mutex((count, false))
            self.done = done
        }
        func report(_ outcome: DeliveryOutcome) {
            let finish: DeliveryOutcome? = state.withLock { s in
                guard !s.finished else { return nil }
                if outcome != .accepted { s.finished = true; return outcome }
                s.remaining -= 1
                if s.remaining == 0 { s.finished = true; return .accepted }
                return nil
            }
            if let finish { done(finish) }
        }
        func fail(_ outcome: DeliveryOutcome) {
            if state.withLock({ s in defer { s.finished = true }; return !s.finished }) { done(outcome) }
        }
    }

    /// MQTT 5 PUBACK reason codes (3.1.1: always 0).
    static func outcome(reason: Int32) -> DeliveryOutcome {
        switch reason {
        case 0x00, 0x10: return .accepted // success; "no matching subscribers" is accepted too
        case 0x87: return .misconfigured(reason: "not_authorized", detail: "the broker refuses our publishes to the telemetry topic (not authorized: check its ACL for this client)")
        case 0x90: return .misconfigured(reason: "topic_invalid", detail: "the broker refuses the telemetry topic name (check topic_prefix)")
        case 0x95: return .tooLarge(detail: "the broker refused the batch as too large (message_size_limit)")
        case 0x97: return .retry(reason: "quota_exceeded", detail: "the broker's quota is exceeded", after: nil)
        case 0x99: return .rejected(reason: "payload_format_invalid", status: Int(reason), detail: "the broker refused the payload format")
        default:
            return .misconfigured(reason: "puback_\(reason)", detail: "the broker refused the batch (MQTT reason code \(reason))")
        }
    }
}
