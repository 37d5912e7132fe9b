import BrumeCore
import CMosquitto
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// TLS settings for an MQTT connection (libmosquitto `mosquitto_tls_set`).
public struct MQTTTLS: Sendable, Hashable {
    public var caFile: String?
    public var caPath: String?
    public var certFile: String?
    public var keyFile: String?
    /// Verify that the broker certificate matches the host name (default true).
    public var verifyHostname: Bool

    public init(caFile: String? = nil, caPath: String? = nil, certFile: String? = nil, keyFile: String? = nil, verifyHostname: Bool = true) {
        self.caFile = caFile
        self.caPath = caPath
        self.certFile = certFile
        self.keyFile = keyFile
        self.verifyHostname = verifyHostname
    }
}

/// A last-will message, published by the broker if the connection drops.
public struct MQTTWill: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: Int32
    public var retain: Bool
    public init(topic: String, payload: [UInt8], qos: Int32 = 1, retain: Bool = true) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

public struct MQTTBrokerAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) { self.host = host; self.port = port }
    public var description: String { "\(host):\(port)" }
}

/// Which MQTT version to speak.
public enum MQTTProtocolVersion: String, Sendable, CaseIterable {
    /// MQTT 5 where the broker speaks it, else 3.1.1 (decided at each connect).
    case auto
    case v5
    case v311 = "v3.1.1"
}

/// MQTT 5 properties of a publish (ignored on a 3.1.1 connection).
public struct MQTTPublishProperties: Sendable, Hashable {
    public var contentType: String?
    public var userProperties: [(String, String)] = []
    public var messageExpirySeconds: UInt32?
    public init(contentType: String? = nil, userProperties: [(String, String)] = [], messageExpirySeconds: UInt32? = nil) {
        self.contentType = contentType
        self.userProperties = userProperties
        self.messageExpirySeconds = messageExpirySeconds
    }
    public static func == (a: Self, b: Self) -> Bool {
        a.contentType == b.contentType && a.messageExpirySeconds == b.messageExpirySeconds
            && a.userProperties.map { [$0.0, $0.1] } == b.userProperties.map { [$0.0, $0.1] }
    }
    public func hash(into h: inout Hasher) {
        h.combine(contentType)
        h.combine(messageExpirySeconds)
        for (k, v) in userProperties { h.combine(k); h.combine(v) }
    }
}

public struct MQTTClientOptions: Sendable {
    public var host: String
    public var port: Int
    public var clientID: String
    /// false: the broker keeps the session (subscriptions and queued QoS1
    /// messages) while we are away.
    public var cleanSession: Bool
    public var keepAlive: Int
    public var username: String?
    public var password: String?
    public var tls: MQTTTLS?
    public var will: MQTTWill?
    /// The will of each new connection, asked before each CONNECT (overrides `will`): a
    /// Sparkplug NDEATH carries the bdSeq of the connection it belongs to.
    public var willProvider: (@Sendable () -> MQTTWill?)?
    /// libmosquitto's in-flight window for outgoing QoS1 messages.
    public var maxInflight: Int
    public var reconnectInitial: Duration
    public var reconnectMax: Duration
    /// Other brokers of the same cluster, tried in turn after `host:port` fails (failover).
    public var alternates: [MQTTBrokerAddress] = []
    /// 3.1.1 by default; `.auto` tries MQTT 5 first (PUBACK reason codes: a broker that drops a
    /// publish, e.g. denied by an ACL or over its size limit, says so instead of acknowledging).
    public var protocolVersion: MQTTProtocolVersion = .v311
    /// MQTT 5: how many QoS1 messages the broker may send before we acknowledge them (the
    /// Receive Maximum of CONNECT; libmosquitto's default is 20). With acknowledgements held
    /// until a commit, this window decides how many readings one commit can carry.
    public var receiveMaximum: Int = 20

    public init(host: String, port: Int, clientID: String, cleanSession: Bool = true, keepAlive: Int = 30,
                username: String? = nil, password: String? = nil, tls: MQTTTLS? = nil, will: MQTTWill? = nil,
                maxInflight: Int = 32, reconnectInitial: Duration = .milliseconds(100), reconnectMax: Duration = .seconds(2)) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.cleanSession = cleanSession
        self.keepAlive = keepAlive
        self.username = username
        self.password = password
        self.tls = tls
        self.will = will
        self.maxInflight = maxInflight
        self.reconnectInitial = reconnectInitial
        self.reconnectMax = reconnectMax
    }
}

public enum MQTTConnectionState: String, Sendable {
    case connecting, connected, disconnected, stopped
}

/// What the client tells its owner. All callbacks run on the client's network
/// thread: they must be quick and never block for long (hand work off).
public struct MQTTHandlers: Sendable {
    /// Connected (CONNACK accepted). `generation` increases with every new
    /// connection; publish ids (mids) are only meaningful within one generation.
    public var onConnect: @Sendable (_ client: MQTTClient, _ generation: UInt64, _ sessionPresent: Bool) -> Void
    public var onDisconnect: @Sendable (_ generation: UInt64, _ reason: String) -> Void
    /// A message arrived. The pointers are valid only during the call.
    public var onMessage: @Sendable (_ topic: UnsafePointer<CChar>, _ payload: UnsafeRawBufferPointer, _ qos: Int32, _ retained: Bool) -> Void
    /// A QoS1 publish was answered (PUBACK) by the broker. `reasonCode` is the MQTT 5 reason
    /// code (0x00 success, 0x10 no matching subscribers, >= 0x80 refused: not delivered); on an
    /// MQTT 3.1.1 connection it is always 0, which does not prove the broker kept the message.
    public var onPublished: @Sendable (_ generation: UInt64, _ mid: Int32, _ reasonCode: Int32) -> Void
    /// When set, acknowledgements of received QoS1 messages are held back until
    /// this returns: the client reads a burst of messages, calls the gate (which
    /// waits until their readings are committed to the outbox), and only then
    /// writes the PUBACKs. A crash before the commit leaves the messages
    /// unacknowledged at the broker, which redelivers them (persistent session).
    /// Returning false means "never acknowledge these": the client is being stopped while
    /// they are not durable (a full disk), so it drops the connection without writing the
    /// PUBACKs, and the broker delivers them again to the next session.
    public var ackGate: (@Sendable (AckGateContext) -> Bool)?
    /// A connection attempt failed before CONNACK was accepted (TCP, TLS, the broker's refusal);
    /// the client tries again after its backoff. For `brume check --connect`.
    public var onConnectFailed: @Sendable (_ reason: String) -> Void = { _ in }

    public init(onConnect: @escaping @Sendable (MQTTClient, UInt64, Bool) -> Void = { _, _, _ in },
                onDisconnect: @escaping @Sendable (UInt64, String) -> Void = { _, _ in },
                onMessage: @escaping @Sendable (UnsafePointer<CChar>, UnsafeRawBufferPointer, Int32, Bool) -> Void = { _, _, _, _ in },
                onPublished: @escaping @Sendable (UInt64, Int32, Int32) -> Void = { _, _, _ in },
                ackGate: (@Sendable (AckGateContext) -> Bool)? = nil) {
        self.ackGate = ackGate
        self.onConnect = onConnect
        self.onDisconnect = onDisconnect
        self.onMessage = onMessage
        self.onPublished = onPublished
    }
}

/// What the ack gate knows while it waits: how many messages wait for their acknowledgement,
/// how many the broker may send unacknowledged (its window), and whether more are arriving.
public struct AckGateContext: Sendable {
    /// Messages received since the last acknowledgements were written.
    public var waiting: Int
    /// The most QoS1 messages the broker sends before it waits for acknowledgements: our
    /// Receive Maximum on MQTT 5; on 3.1.1 unknown, Mosquitto's default (20) assumed.
    public var window: Int
    let socket: Int32

    public init(waiting: Int, window: Int, socket: Int32 = -1) {
        self.waiting = waiting
        self.window = window
        self.socket = socket
    }

    /// More bytes wait on the connection (the broker is still sending).
    public func moreArriving() -> Bool {
        guard socket >= 0 else { return false }
        var p = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) > 0
    }
}

public struct MQTTError: Error, Sendable, CustomStringConvertible {
    public var code: Int32
    public var operation: String
    public var description: String {
        "\(operation): \(String(cString: mosquitto_strerror(code)))"
    }
    public var isNotConnected: Bool { code == Int32(MOSQ_ERR_NO_CONN.rawValue) || code == Int32(MOSQ_ERR_CONN_LOST.rawValue) }
    /// The message is larger than the broker's Maximum Packet Size (MQTT 5 CONNACK).
    public var isOversize: Bool { code == Int32(MOSQ_ERR_OVERSIZE_PACKET.rawValue) }
}

private let libraryInit: Void = {
    _ = mosquitto_lib_init()
}()

/// A small MQTT 5 / 3.1.1 client over libmosquitto.
///
/// One network thread per client runs `mosquitto_loop` and does its own
/// reconnection with jittered exponential backoff (libmosquitto's built-in
/// reconnect has no jitter). Every connection attempt uses a fresh
/// `struct mosquitto`, so nothing queued inside the library survives a
/// disconnect: owners (the uplink) resend what was not acknowledged
/// themselves, which keeps resends explicit and batch-exact.
public final class MQTTClient: @unchecked Sendable {
    // @unchecked: `handle` and `generation` are guarded by `lock`; the rest is immutable or atomic.
    public let options: MQTTClientOptions
    private let handlers: MQTTHandlers
    private let logger: Logger
    private let lock = Mutex<Void>(())
    private var handle: OpaquePointer?
    private var generation: UInt64 = 0
    private let running = Atomic<Bool>(false)
    private let connectedFlag = Atomic<Bool>(false)
    private let stateGauge = Gauge<MQTTConnectionState>(.disconnected)
    private let errorLimiter = LogRateLimiter(burst: 3, interval: .seconds(30))
    private var thread: pthread_t?
    private let subscriptionsLock = Mutex<[(String, Int32)]>([])
    /// Wakes the gated network loop when another thread queued a publish
    /// (libmosquitto's own wake-up pipe is private to mosquitto_loop).
    private let wakePipe: (read: Int32, write: Int32) = {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return (-1, -1) }
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }()
    /// Number of successful connections (for status and tests).
    public let connects = Counter()
    public let connectFailures = Counter()
    /// The broker in use or being tried (failover moves it along `alternates`).
    public let currentBroker = Gauge<MQTTBrokerAddress?>(nil)
    /// The protocol of the current (or last) connection: 5 or 4 (3.1.1).
    public let negotiatedVersion = Atomic<Int32>(0)
    /// The broker's Maximum Packet Size (MQTT 5 CONNACK), 0 when it set none.
    public let brokerMaxPacketSize = Atomic<Int>(0)
    /// `.auto`: the broker refused MQTT 5, so speak 3.1.1 from now on.
    private let fellBack = Atomic<Bool>(false)

    public init(options: MQTTClientOptions, logger: Logger, handlers: MQTTHandlers) {
        _ = libraryInit
        self.options = options
        self.handlers = handlers
        self.logger = logger
    }

    deinit {
        if let h = handle { mosquitto_destroy(h) }
        if wakePipe.read >= 0 { close(wakePipe.read); close(wakePipe.write) }
    }

    public var state: MQTTConnectionState { stateGauge.current }
    public var isConnected: Bool { connectedFlag.load(ordering: .acquiring) }

    /// Subscriptions made now and re-made after every reconnect.
    public func addSubscription(_ filter: String, qos: Int32) {
        subscriptionsLock.withLock { $0.append((filter, qos)) }
    }

    public func start() {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        stateGauge.set(.connecting)
        thread = DedicatedThread.start("mqtt-\(options.clientID)") { self.runLoop() }
    }

    /// Disconnects cleanly (the will is not published) and joins the thread.
    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
        stateGauge.set(.stopped)
    }

    /// Publishes a message. Returns the message id, which `onPublished`
    /// reports with the same generation when the broker acknowledges it.
    @discardableResult
    public func publish(topic: String, payload: UnsafeRawBufferPointer, qos: Int32, retain: Bool = false,
                        properties: MQTTPublishProperties? = nil) throws(MQTTError) -> (generation: UInt64, mid: Int32) {
        var mid: Int32 = 0
        let (gen, rc): (UInt64, Int32) = lock.withLock { _ in
            guard let h = handle, connectedFlag.load(ordering: .acquiring) else {
                return (generation, Int32(MOSQ_ERR_NO_CONN.rawValue))
            }
            guard payload.count <= Int(Int32.max) else { return (generation, Int32(MOSQ_ERR_PAYLOAD_SIZE.rawValue)) }
            if let properties, negotiatedVersion.load(ordering: .relaxed) == MQTT_PROTOCOL_V5 {
                var props: OpaquePointer? = nil
                if let ct = properties.contentType { _ = mosquitto_property_add_string(&props, Int32(MQTT_PROP_CONTENT_TYPE.rawValue), ct) }
                if let e = properties.messageExpirySeconds { _ = mosquitto_property_add_int32(&props, Int32(MQTT_PROP_MESSAGE_EXPIRY_INTERVAL.rawValue), e) }
                for (k, v) in properties.userProperties { _ = mosquitto_property_add_string_pair(&props, Int32(MQTT_PROP_USER_PROPERTY.rawValue), k, v) }
                defer { mosquitto_property_free_all(&props) }
                return (generation, mosquitto_publish_v5(h, &mid, topic, Int32(payload.count), payload.baseAddress, qos, retain, props))
            }
            return (generation, mosquitto_publish(h, &mid, topic, Int32(payload.count), payload.baseAddress, qos, retain))
        }
        if rc != 0 { throw MQTTError(code: rc, operation: "publish to \(topic)") }
        if handlers.ackGate != nil && wakePipe.write >= 0 {
            var one: UInt8 = 1
            _ = write(wakePipe.write, &one, 1)
        }
        return (gen, mid)
    }

    @discardableResult
    public func publish(topic: String, payload: [UInt8], qos: Int32, retain: Bool = false,
                        properties: MQTTPublishProperties? = nil) throws(MQTTError) -> (generation: UInt64, mid: Int32) {
        var result: Result<(generation: UInt64, mid: Int32), MQTTError> = .failure(MQTTError(code: 0, operation: ""))
        payload.withUnsafeBytes { buf in
            do throws(MQTTError) { result = .success(try publish(topic: topic, payload: buf, qos: qos, retain: retain, properties: properties)) }
            catch { result = .failure(error) }
        }
        return try result.get()
    }

    // MARK: - network thread

    /// CONNECT. A persistent session on MQTT 5 needs a Session Expiry Interval (0, the default,
    /// ends the session at the disconnect): "never expires", as a 3.1.1 persistent session.
    private func connect(_ h: OpaquePointer, _ broker: MQTTBrokerAddress) -> Int32 {
        guard negotiatedVersion.load(ordering: .relaxed) == MQTT_PROTOCOL_V5, !options.cleanSession else {
            return mosquitto_connect(h, broker.host, Int32(broker.port), Int32(options.keepAlive))
        }
        var props: OpaquePointer? = nil
        _ = mosquitto_property_add_int32(&props, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), UInt32.max)
        defer { mosquitto_property_free_all(&props) }
        return mosquitto_connect_bind_v5(h, broker.host, Int32(broker.port), Int32(options.keepAlive), nil, props)
    }

    private func runLoop() {
        var backoff = Backoff(initial: options.reconnectInitial, maximum: options.reconnectMax)
        let brokers = [MQTTBrokerAddress(host: options.host, port: options.port)] + options.alternates
        var index = 0
        while running.load(ordering: .acquiring) {
            guard let h = makeHandle() else {
                sleepInterruptibly(backoff.next())
                continue
            }
            let broker = brokers[index % brokers.count]
            currentBroker.set(broker)
            let rc = connect(h, broker)
            if rc != 0 {
                connectFailures.add()
                let reason = rc == Int32(MOSQ_ERR_ERRNO.rawValue) ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(rc))
                logRateLimited("MQTT connect failed", reason: reason)
                handlers.onConnectFailed(reason)
                destroyHandle()
                stateGauge.set(.disconnected)
                // Failover: the next broker of the cluster, after the (jittered) backoff.
                if brokers.count > 1 { index += 1 }
                sleepInterruptibly(backoff.next())
                continue
            }
            // Pump the connection until it drops or we are stopped.
            var loopRC: Int32 = 0
            let connectedAtStart = connects.current
            while running.load(ordering: .acquiring) {
                if let gate = handlers.ackGate {
                    loopRC = pumpGated(h, gate: gate)
                } else {
                    loopRC = mosquitto_loop(h, 100, 1)
                }
                if loopRC != 0 { break }
            }
            let wasConnected = connectedFlag.exchange(false, ordering: .acquiringAndReleasing)
            if abandoned {
                // Messages received but not durable: close the socket without a DISCONNECT,
                // so their queued PUBACKs are never written (the broker redelivers them).
                abandoned = false
                deliveredSinceWrite = 0
                destroyHandle()
                let gen = lock.withLock { _ in generation }
                if wasConnected { handlers.onDisconnect(gen, "acknowledgements abandoned") }
                if !running.load(ordering: .acquiring) { break }
                stateGauge.set(.disconnected)
                sleepInterruptibly(backoff.next())
                continue
            }
            if !running.load(ordering: .acquiring) {
                // Graceful stop: DISCONNECT so the broker does not publish the will.
                if wasConnected {
                    _ = mosquitto_disconnect(h)
                    _ = mosquitto_loop(h, 100, 1)
                }
                destroyHandle()
                let gen = lock.withLock { _ in generation }
                if wasConnected { handlers.onDisconnect(gen, "stopped") }
                break
            }
            let reason = loopRC == Int32(MOSQ_ERR_ERRNO.rawValue) ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(loopRC))
            let gen = lock.withLock { _ in generation }
            destroyHandle()
            stateGauge.set(.disconnected)
            if wasConnected {
                handlers.onDisconnect(gen, reason)
                logger.warning("MQTT connection lost", metadata: ["mqtt.broker": "\(currentBroker.current.map { "\($0)" } ?? "\(options.host):\(options.port)")", "mqtt.client_id": "\(options.clientID)", "error": "\(reason)"])
            } else {
                logRateLimited("MQTT connection refused or dropped before CONNACK", reason: reason)
                handlers.onConnectFailed(reason)
            }
            if connects.current > connectedAtStart { backoff.reset() } else if brokers.count > 1 { index += 1 }
            sleepInterruptibly(backoff.next())
        }
        stateGauge.set(.stopped)
    }

    /// Messages delivered to `onMessage` since the last write (network thread only).
    private var deliveredSinceWrite = 0
    /// MQTT 5: the Message Expiry Interval left on the message being delivered (seconds, as the
    /// broker forwards it: what remains of the sender's), nil when it has none. Valid only
    /// inside `onMessage`, on the network thread.
    public private(set) var currentMessageExpiry: UInt32?

    /// One round of the network loop with acknowledgements held back: read a
    /// burst, let the gate make it durable, then write (PUBACKs, pings,
    /// subscriptions). libmosquitto queues its PUBACK before calling us back
    /// and, in threaded mode, writes queued packets only in the write phase.
    /// The gate refused: the connection must be dropped without writing anything.
    private var abandoned = false

    private func pumpGated(_ h: OpaquePointer, gate: @Sendable (AckGateContext) -> Bool) -> Int32 {
        let sock = mosquitto_socket(h)
        if sock < 0 { return Int32(MOSQ_ERR_NO_CONN.rawValue) }
        var fds = [pollfd(fd: sock, events: Int16(POLLIN) | (mosquitto_want_write(h) ? Int16(POLLOUT) : 0), revents: 0),
                   pollfd(fd: wakePipe.read, events: Int16(POLLIN), revents: 0)]
        let n = poll(&fds, 2, 100)
        if n < 0 && errno != EINTR { return Int32(MOSQ_ERR_ERRNO.rawValue) }
        if fds[1].revents != 0 {
            var drained = [UInt8](repeating: 0, count: 64)
            _ = read(wakePipe.read, &drained, drained.count)
        }
        let pfd = fds[0]
        if n > 0 && pfd.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            var rc = mosquitto_loop_read(h, 1)
            if rc != 0 { return rc }
            var burst = 1
            while burst < 20_000 {
                var more = pollfd(fd: sock, events: Int16(POLLIN), revents: 0)
                if poll(&more, 1, 0) <= 0 { break }
                rc = mosquitto_loop_read(h, 1)
                if rc != 0 { return rc }
                burst += 1
            }
        }
        if deliveredSinceWrite > 0 {
            let v5 = negotiatedVersion.load(ordering: .relaxed) == MQTT_PROTOCOL_V5
            guard gate(AckGateContext(waiting: deliveredSinceWrite, window: v5 ? options.receiveMaximum : 20, socket: sock)) else {
                abandoned = true
                return Int32(MOSQ_ERR_CONN_LOST.rawValue)
            }
            deliveredSinceWrite = 0
        }
        if mosquitto_want_write(h) {
            let rc = mosquitto_loop_write(h, 1)
            if rc != 0 { return rc }
        }
        return mosquitto_loop_misc(h)
    }

    private func logRateLimited(_ message: Logger.Message, reason: String) {
        if let suppressed = errorLimiter.admit() {
            var md: Logger.Metadata = ["mqtt.broker": "\(currentBroker.current.map { "\($0)" } ?? "\(options.host):\(options.port)")", "mqtt.client_id": "\(options.clientID)", "error": "\(reason)"]
            if suppressed > 0 { md["suppressed"] = "\(suppressed)" }
            logger.warning(message, metadata: md)
        }
    }

    private func sleepInterruptibly(_ d: Duration) {
        var remaining = Int64(d.components.seconds) * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        while remaining > 0 && running.load(ordering: .acquiring) {
            let step = min(remaining, 50)
            usleep(UInt32(step * 1000))
            remaining -= step
        }
    }

    private func makeHandle() -> OpaquePointer? {
        let userdata = Unmanaged.passUnretained(self).toOpaque()
        guard let h = mosquitto_new(options.clientID, options.cleanSession, userdata) else {
            logRateLimited("mosquitto_new failed", reason: String(cString: strerror(errno)))
            return nil
        }
        mosquitto_threaded_set(h, true)
        let v5 = options.protocolVersion == .v5 || (options.protocolVersion == .auto && !fellBack.load(ordering: .relaxed))
        _ = mosquitto_int_option(h, MOSQ_OPT_PROTOCOL_VERSION, v5 ? MQTT_PROTOCOL_V5 : Int32(MQTT_PROTOCOL_V311))
        negotiatedVersion.store(v5 ? MQTT_PROTOCOL_V5 : Int32(MQTT_PROTOCOL_V311), ordering: .relaxed)
        // No Nagle: small packets (PUBACKs, command acknowledgements) must not
        // wait 40 ms for a delayed TCP ACK.
        _ = mosquitto_int_option(h, MOSQ_OPT_TCP_NODELAY, 1)
        _ = mosquitto_max_inflight_messages_set(h, UInt32(max(0, options.maxInflight)))
        if v5 { _ = mosquitto_int_option(h, MOSQ_OPT_RECEIVE_MAXIMUM, Int32(min(65535, max(1, options.receiveMaximum)))) }
        if let u = options.username { _ = mosquitto_username_pw_set(h, u, options.password) }
        if let will = options.willProvider?() ?? options.will {
            _ = will.payload.withUnsafeBytes { mosquitto_will_set(h, will.topic, Int32($0.count), $0.baseAddress, will.qos, will.retain) }
        }
        if let tls = options.tls {
            // Without a CA file, trust the operating system's CA certificates.
            let useOSCerts = tls.caFile == nil && tls.caPath == nil
            if useOSCerts { _ = mosquitto_int_option(h, MOSQ_OPT_TLS_USE_OS_CERTS, 1) }
            let rc = useOSCerts && tls.certFile == nil ? 0 : mosquitto_tls_set(h, tls.caFile, tls.caPath, tls.certFile, tls.keyFile, nil)
            if rc != 0 {
                logRateLimited("MQTT TLS setup failed (check ca_file, cert_file, key_file)", reason: String(cString: mosquitto_strerror(rc)))
                handlers.onConnectFailed("TLS setup failed (check ca_file, cert_file, key_file): \(String(cString: mosquitto_strerror(rc)))")
                mosquitto_destroy(h)
                return nil
            }
            _ = mosquitto_tls_insecure_set(h, !tls.verifyHostname)
        }
        mosquitto_connect_v5_callback_set(h) { _, obj, rc, flags, props in
            var maxPacket: UInt32 = 0
            if let props { _ = mosquitto_property_read_int32(props, Int32(MQTT_PROP_MAXIMUM_PACKET_SIZE.rawValue), &maxPacket, false) }
            Unmanaged<MQTTClient>.fromOpaque(obj!).takeUnretainedValue().didConnect(rc: rc, flags: flags, maxPacket: Int(maxPacket))
        }
        mosquitto_message_v5_callback_set(h) { _, obj, msg, props in
            guard let msg else { return }
            let client = Unmanaged<MQTTClient>.fromOpaque(obj!).takeUnretainedValue()
            client.deliveredSinceWrite += 1
            let m = msg.pointee
            let payload = UnsafeRawBufferPointer(start: m.payload, count: Int(m.payloadlen))
            var expiry: UInt32 = 0
            if let props, mosquitto_property_read_int32(props, Int32(MQTT_PROP_MESSAGE_EXPIRY_INTERVAL.rawValue), &expiry, false) != nil {
                client.currentMessageExpiry = expiry
            }
            client.handlers.onMessage(UnsafePointer(m.topic), payload, m.qos, m.retain)
            client.currentMessageExpiry = nil
        }
        mosquitto_publish_v5_callback_set(h) { _, obj, mid, reason, _ in
            let client = Unmanaged<MQTTClient>.fromOpaque(obj!).takeUnretainedValue()
            client.handlers.onPublished(client.generation, mid, reason)
        }
        lock.withLock { _ in
            handle = h
            generation += 1
        }
        return h
    }

    private func destroyHandle() {
        let h: OpaquePointer? = lock.withLock { _ in
            let h = handle
            handle = nil
            return h
        }
        if let h { mosquitto_destroy(h) }
    }

    private func didConnect(rc: Int32, flags: Int32, maxPacket: Int) {
        guard rc == 0, let h = handle else {
            connectFailures.add()
            // A 3.1.1 broker answers an MQTT 5 CONNECT with "unacceptable protocol version" (1);
            // an MQTT 5 broker that is configured for 3.1.1 only, with reason code 132.
            if options.protocolVersion == .auto, negotiatedVersion.load(ordering: .relaxed) == MQTT_PROTOCOL_V5,
               rc == 1 || rc == Int32(MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION.rawValue) {
                fellBack.store(true, ordering: .relaxed)
                logger.notice("MQTT broker does not speak MQTT 5: falling back to 3.1.1 (a PUBACK then does not prove the broker kept a message)",
                              metadata: ["mqtt.broker": "\(currentBroker.current.map { "\($0)" } ?? "\(options.host):\(options.port)")"])
                return
            }
            let reason = negotiatedVersion.load(ordering: .relaxed) == MQTT_PROTOCOL_V5
                ? String(cString: mosquitto_reason_string(rc)) : String(cString: mosquitto_connack_string(rc))
            logRateLimited("MQTT broker refused the connection", reason: reason)
            handlers.onConnectFailed("the broker refused the connection: \(reason)")
            return
        }
        brokerMaxPacketSize.store(maxPacket, ordering: .relaxed)
        // With a persistent session the broker kept our subscriptions; subscribing
        // again would make it resend every retained message (duplicate readings).
        let sessionPresent = flags & 1 == 1
        let subs = (options.cleanSession || !sessionPresent) ? subscriptionsLock.withLock({ $0 }) : []
        for (filter, qos) in subs {
            let src = mosquitto_subscribe(h, nil, filter, qos)
            if src != 0 {
                logger.error("MQTT subscribe failed", metadata: ["mqtt.filter": "\(filter)", "error": "\(String(cString: mosquitto_strerror(src)))"])
            }
        }
        connectedFlag.store(true, ordering: .releasing)
        connects.add()
        stateGauge.set(.connected)
        logger.info("MQTT connected", metadata: ["mqtt.broker": "\(currentBroker.current.map { "\($0)" } ?? "\(options.host):\(options.port)")", "mqtt.client_id": "\(options.clientID)", "mqtt.session_present": "\(flags & 1 == 1)", "mqtt.version": "\(negotiatedVersion.load(ordering: .relaxed) == MQTT_PROTOCOL_V5 ? "5" : "3.1.1")"])
        handlers.onConnect(self, generation, flags & 1 == 1)
    }
}
