import BrumeCore
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Request/response polling for devices that only answer queries.
public struct SerialPoll: Sendable, Hashable {
    public var request: [UInt8]
    public var everyMillis: Int64
    public var timeoutMillis: Int64
    public var retries: Int
    public init(request: [UInt8], everyMillis: Int64, timeoutMillis: Int64, retries: Int) {
        self.request = request
        self.everyMillis = everyMillis
        self.timeoutMillis = timeoutMillis
        self.retries = retries
    }
}

public struct SerialSourceOptions: Sendable {
    public var name: String
    public var port: PortSpec
    public var settings: SerialSettings
    public var format: SerialFormat
    public var device: String
    public var maxFrame: Int
    public var poll: SerialPoll?
    public var reconnectInitial: Duration
    public var reconnectMax: Duration

    public init(name: String, port: PortSpec, settings: SerialSettings, format: SerialFormat, device: String, maxFrame: Int = 512,
                poll: SerialPoll? = nil, reconnectInitial: Duration = .milliseconds(200), reconnectMax: Duration = .seconds(5)) {
        self.name = name
        self.port = port
        self.settings = settings
        self.format = format
        self.device = device
        self.maxFrame = maxFrame
        self.poll = poll
        self.reconnectInitial = reconnectInitial
        self.reconnectMax = reconnectMax
    }
}

/// Reads a serial device: termios port → line framer → frame decoder →
/// readings → pipeline. A vanished port, a read error or EOF puts the source in
/// the `disconnected` state; it retries with jittered backoff (no busy loop, no
/// log storm) and resumes when the device returns, by path or USB identity.
///
/// Bytes read from a serial line are gone from the device: readings not yet
/// committed when the gateway crashes are lost (one commit interval at most).
public final class SerialSource: Source, @unchecked Sendable {
    // @unchecked: `thread` is touched by start/stop only; `port` is guarded by `portLock`.
    public let options: SerialSourceOptions
    public let stats = SourceStats()
    /// Times the device went away.
    public let disconnects = Counter()
    /// Times the port was opened.
    public let opens = Counter()
    private let stateGauge = Gauge<SourceState>(.starting)
    private let currentPath = Gauge<String?>(nil)
    private let sink: any ReadingSink
    private let logger: Logger
    private let now: @Sendable () -> Int64
    private let running = Atomic<Bool>(false)
    private let limiter = LogRateLimiter(burst: 5, interval: .seconds(30))
    private let portLock = Mutex<SerialPort?>(nil)
    /// Commands waiting for a reply line that contains `expect`.
    private let replyWaiters = Mutex<[(expect: [UInt8], waiter: Waiter<String>)]>([])
    private var thread: pthread_t?

    public init(options: SerialSourceOptions, sink: any ReadingSink, logger: Logger, now: @escaping @Sendable () -> Int64 = wallClockMillis) {
        self.options = options
        self.sink = sink
        self.logger = logger.forSource(options.name)
        self.now = now
    }

    public var name: String { options.name }
    public var state: SourceState { stateGauge.current }
    /// The device path in use (after resolving a USB identity), if open.
    public var path: String? { currentPath.current }

    public func start() {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        logger.info("serial source starting", metadata: ["serial.port": "\(options.port)", "serial.baud": "\(options.settings.baud)"])
        thread = DedicatedThread.start("serial-\(options.name)") { self.runLoop() }
    }

    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        if let t = thread { pthread_join(t, nil); thread = nil }
        stateGauge.set(.stopped)
    }

    /// Writes to the device (the actuator command path). Fails when it is not connected.
    public func write(_ bytes: [UInt8]) throws(SerialError) {
        try portLock.withLock { (port: inout SerialPort?) throws(SerialError) in
            guard let p = port else { throw SerialError(path: "\(options.port)", operation: "write (device disconnected) to", code: ENODEV) }
            try p.write(bytes)
        }
    }

    public enum RequestError: Error, Sendable, Equatable { case disconnected, writeFailed(String), timeout }

    /// Writes a command to the device and, with `expect`, waits for a reply line
    /// that contains it (that line is not decoded as a reading).
    public func request(_ bytes: [UInt8], expect: String?, timeout: Duration) async -> Result<String, RequestError> {
        let waiter = Waiter<String>()
        if let expect { replyWaiters.withLock { $0.append((Array(expect.utf8), waiter)) } }
        defer { if expect != nil { replyWaiters.withLock { $0.removeAll { $0.waiter === waiter } } } }
        do {
            try write(bytes)
        } catch {
            return .failure(error.code == ENODEV ? .disconnected : .writeFailed("\(error)"))
        }
        guard expect != nil else { return .success("") }
        guard let reply = await waiter.wait(timeout: timeout) else { return .failure(.timeout) }
        return .success(reply)
    }

    /// A frame that answers a pending request goes to it instead of the decoder.
    private func takeReply(_ frame: UnsafeRawBufferPointer) -> Bool {
        replyWaiters.withLock { ws in
            guard let i = ws.firstIndex(where: { w in !w.waiter.isDone && contains(frame, w.expect) }) else { return false }
            let w = ws.remove(at: i)
            w.waiter.resume(String(decoding: frame, as: UTF8.self))
            return true
        }
    }

    private func note(_ reason: String, _ message: Logger.Message, _ md: Logger.Metadata = [:]) {
        stats.errors.add(reason)
        if let n = limiter.admit() {
            var md = md
            md["reason"] = "\(reason)"
            if n > 0 { md["suppressed"] = "\(n)" }
            logger.warning(message, metadata: md)
        }
    }

    private func sleepInterruptibly(_ d: Duration) {
        var ms = Int64(d.components.seconds) * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        while ms > 0 && running.load(ordering: .acquiring) {
            usleep(UInt32(min(ms, 50) * 1000))
            ms -= 50
        }
    }

    private func runLoop() {
        var backoff = Backoff(initial: options.reconnectInitial, maximum: options.reconnectMax)
        var framer = LineFramer(maxFrameLength: options.maxFrame)
        var decoder = FrameDecoder(format: options.format, device: options.device)
        var buffer = [UInt8](repeating: 0, count: 4096)
        var everConnected = false
        while running.load(ordering: .acquiring) {
            let path: String
            switch PortDiscovery.resolve(options.port) {
            case .found(let p): path = p
            case .notFound:
                stateGauge.set(.disconnected)
                if let n = limiter.admit() { logger.warning("serial device not present", metadata: ["serial.port": "\(options.port)", "suppressed": "\(n)"]) }
                sleepInterruptibly(.milliseconds(250))
                continue
            case .ambiguous(let paths):
                stateGauge.set(.disconnected)
                if let n = limiter.admit() {
                    logger.error("several serial ports match this USB identity: add usb_serial to tell them apart",
                                 metadata: ["serial.port": "\(options.port)", "matches": "\(paths)", "suppressed": "\(n)"])
                }
                sleepInterruptibly(backoff.next())
                continue
            }
            let port: SerialPort
            do {
                port = try SerialPort.open(path: path, settings: options.settings)
            } catch where error.isMissing {
                // Unplugged: look again soon (a stat, cheap), so a replug is noticed quickly.
                stateGauge.set(.disconnected)
                if let n = limiter.admit() { logger.warning("serial device not present", metadata: ["serial.path": "\(path)", "suppressed": "\(n)"]) }
                sleepInterruptibly(.milliseconds(100))
                continue
            } catch {
                stateGauge.set(.disconnected)
                if let n = limiter.admit() {
                    logger.warning("cannot open serial port", metadata: ["serial.path": "\(path)", "error": "\(error)", "suppressed": "\(n)"])
                }
                sleepInterruptibly(backoff.next())
                continue
            }
            portLock.withLock { $0 = port }
            currentPath.set(path)
            opens.add()
            stateGauge.set(.connected)
            backoff.reset()
            logger.info(everConnected ? "serial device back" : "serial port open", metadata: ["serial.path": "\(path)"])
            everConnected = true
            framer.reset()
            decoder.reset()

            var nextPoll = now()
            var awaiting: (deadline: Int64, attempt: Int)?
            var out: [Reading] = []
            var closedReason: Int32?
            while running.load(ordering: .acquiring) {
                if let poll = options.poll {
                    let t = now()
                    if let a = awaiting, t >= a.deadline {
                        note("poll_timeout", "serial device did not answer the poll request in time", ["serial.path": "\(path)", "attempt": "\(a.attempt)"])
                        awaiting = a.attempt < poll.retries ? (t, a.attempt + 1) : nil
                        if awaiting != nil { nextPoll = t }
                    }
                    if t >= nextPoll {
                        do {
                            try port.write(poll.request)
                        } catch {
                            closedReason = error.code
                            break
                        }
                        let attempt = awaiting?.attempt ?? 0
                        awaiting = (t + poll.timeoutMillis, attempt)
                        if attempt == 0 { nextPoll = t + poll.everyMillis } else { nextPoll = max(nextPoll, t + poll.everyMillis) }
                    }
                }
                let result = buffer.withUnsafeMutableBytes { port.read(into: $0, timeoutMillis: 100) }
                switch result {
                case .timeout:
                    continue
                case .closed(let e):
                    closedReason = e
                case .data(let n):
                    let receivedAt = now()
                    var frames = 0
                    buffer.withUnsafeBytes { raw in
                        framer.push(UnsafeRawBufferPointer(rebasing: raw[0..<n]), onFrame: { frame in
                            frames += 1
                            if takeReply(frame) { return }
                            stats.messages.add()
                            do throws(FrameError) {
                                try decoder.decode(frame, receivedAt: receivedAt, into: &out)
                            } catch where error.reason == .unsupported {
                                // A valid sentence we do not decode (NMEA GST, GBS, TXT...): counted, not a fault.
                                stats.errors.add(error.reason.rawValue)
                            } catch {
                                note(error.reason.rawValue, "bad serial frame dropped", ["serial.path": "\(path)", "error": "\(error.message)"])
                            }
                        }, onDrop: { reason in
                            note(reason.rawValue, "bad serial frame dropped", ["serial.path": "\(path)"])
                        })
                    }
                    if frames > 0 { awaiting = nil }
                    if !out.isEmpty {
                        stats.readings.add(Int64(out.count))
                        stats.lastReadingMillis.set(out[out.count - 1].time)
                        sink.accept(out, from: options.name)
                        out.removeAll(keepingCapacity: true)
                    }
                }
                if closedReason != nil { break }
            }
            portLock.withLock { $0 = nil }
            port.close()
            currentPath.set(nil)
            framer.reset(onDrop: { reason in stats.errors.add(reason.rawValue) })
            guard running.load(ordering: .acquiring) else { break }
            disconnects.add()
            stateGauge.set(.disconnected)
            logger.warning("serial device disconnected: retrying", metadata: [
                "serial.path": "\(path)", "error": "\(closedReason.map { $0 == 0 ? "end of file" : String(cString: strerror($0)) } ?? "")",
            ])
            sleepInterruptibly(backoff.next())
        }
        stateGauge.set(.stopped)
    }
}

func contains(_ hay: UnsafeRawBufferPointer, _ needle: [UInt8]) -> Bool {
    if needle.isEmpty { return true }
    if hay.count < needle.count { return false }
    for i in 0...(hay.count - needle.count) {
        var j = 0
        while j < needle.count && hay[i + j] == needle[j] { j += 1 }
        if j == needle.count { return true }
    }
    return false
}
