import BrumeCore
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One device (unit) on a bus and its register map.
public struct ModbusDeviceOptions: Sendable, Hashable {
    public var name: String
    public var unit: UInt8
    public var points: [ModbusPoint]
    public var timeoutMillis: Int64
    public var retries: Int
    public init(name: String, unit: UInt8, points: [ModbusPoint], timeoutMillis: Int64, retries: Int) {
        self.name = name
        self.unit = unit
        self.points = points
        self.timeoutMillis = timeoutMillis
        self.retries = retries
    }
}

public struct ModbusBusOptions: Sendable {
    public var name: String
    public var transport: ModbusTransport
    public var devices: [ModbusDeviceOptions]
    /// Quiet time on the bus after every transaction (RTU: ≥ 3.5 characters).
    public var interFrameDelayMillis: Int64
    /// Items one request may span (registers or bits), and the largest hole between two points it may cover.
    public var maxSpan: Int
    public var maxGap: Int
    /// Failed polls in a row after which a device is backed off and only probed.
    public var offlineAfter: Int
    /// The longest wait between two probes of a silent device.
    public var backoffMaxMillis: Int64
    /// Finds the serial device path of an RTU port (USB identity → /dev/ttyUSBn).
    public var resolvePort: @Sendable (PortSpec) -> String?

    public init(name: String, transport: ModbusTransport, devices: [ModbusDeviceOptions], interFrameDelayMillis: Int64 = 2, maxSpan: Int = 125,
                maxGap: Int = 0, offlineAfter: Int = 3, backoffMaxMillis: Int64 = 60_000,
                resolvePort: @escaping @Sendable (PortSpec) -> String? = { if case .path(let p) = $0 { return p } else { return nil } }) {
        self.name = name
        self.transport = transport
        self.devices = devices
        self.interFrameDelayMillis = interFrameDelayMillis
        self.maxSpan = maxSpan
        self.maxGap = maxGap
        self.offlineAfter = offlineAfter
        self.backoffMaxMillis = backoffMaxMillis
        self.resolvePort = resolvePort
    }
}

/// Per-device statistics (status page, metrics, tests).
public struct ModbusDeviceStats: Sendable, Hashable {
    public enum Health: String, Sendable { case unknown, online, offline }
    public var name: String
    public var unit: UInt8
    public var health: Health = .unknown
    /// Transactions sent (retries included), and answered.
    public var requests: Int64 = 0
    public var responses: Int64 = 0
    public var timeouts: Int64 = 0
    public var badResponses: Int64 = 0
    /// Exception responses by code.
    public var exceptions: [Int: Int64] = [:]
    public var latencyMillisTotal: Double = 0
    public var latencyMillisMax: Double = 0
    public var consecutiveFailures: Int = 0
    /// Wall-clock time of the next probe while offline.
    public var nextProbeMillis: Int64?
    public var lastReadingMillis: Int64?
    /// The last error of each point that has one (metric → message); cleared when it reads again.
    public var pointErrors: [String: String] = [:]
    /// Polls that started late by more than their interval (the bus is overbooked).
    public var overruns: Int64 = 0

    public var latencyMillisAvg: Double? { responses > 0 ? latencyMillisTotal / Double(responses) : nil }
    /// Response times as a histogram (Prometheus `brume_modbus_latency_seconds`): counts per
    /// bucket of `latencyBounds` (seconds), the last one above them all (+Inf); not cumulative.
    public var latencyBuckets: [Int64] = Array(repeating: 0, count: ModbusDeviceStats.latencyBounds.count + 1)
    public static let latencyBounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
}

/// A Modbus bus (one serial line or one TCP connection) and its devices.
///
/// One scheduler thread per bus issues every request, so there is never more
/// than one request in flight on the line: polls in due order, actuator writes
/// first, a quiet time after each transaction. A device that stops answering is
/// backed off (its polls become single probes at a growing interval) so it
/// cannot eat the bus time of the devices that still answer.
public final class ModbusBus: Source, @unchecked Sendable {
    // @unchecked: `thread` is touched by start/stop only; the scheduler state is
    // confined to the bus thread; shared state is behind Mutexes.
    public let options: ModbusBusOptions
    public let stats = SourceStats()
    private let stateGauge = Gauge<SourceState>(.starting)
    private let sink: any ReadingSink
    private let logger: Logger
    private let now: @Sendable () -> Int64
    private let running = Atomic<Bool>(false)
    private let limiter = LogRateLimiter(burst: 5, interval: .seconds(30))
    private let deviceStats: Mutex<[ModbusDeviceStats]>
    private let writes = Mutex<[PendingWrite]>([])
    private let blocksByDevice: [[ModbusBlock]]
    private var wake: (r: Int32, w: Int32) = (-1, -1)
    private var thread: pthread_t?

    public init(options: ModbusBusOptions, sink: any ReadingSink, logger: Logger, now: @escaping @Sendable () -> Int64 = wallClockMillis) {
        self.options = options
        self.sink = sink
        self.logger = logger.forSource(options.name)
        self.now = now
        self.deviceStats = Mutex(options.devices.map { ModbusDeviceStats(name: $0.name, unit: $0.unit) })
        self.blocksByDevice = options.devices.map { ModbusBlock.plan($0.points, maxSpan: options.maxSpan, maxGap: options.maxGap) }
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            wake = (fds[0], fds[1])
        }
    }

    deinit {
        if wake.r >= 0 { close(wake.r); close(wake.w) }
    }

    public var name: String { options.name }
    public var state: SourceState { stateGauge.current }
    /// Statistics of every device, in configuration order.
    public var devices: [ModbusDeviceStats] { deviceStats.withLock { $0 } }
    /// The read requests planned for each device (for `brume check` and tests).
    public var plannedBlocks: [[ModbusBlock]] { blocksByDevice }

    public func start() {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        logger.info("modbus bus starting", metadata: ["modbus.transport": "\(options.transport)", "modbus.devices": "\(options.devices.count)",
                                                      "modbus.requests_per_cycle": "\(blocksByDevice.map(\.count).reduce(0, +))"])
        thread = DedicatedThread.start("modbus-\(options.name)") { self.runLoop() }
    }

    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        signalWake()
        if let t = thread { pthread_join(t, nil); thread = nil }
        stateGauge.set(.stopped)
        for w in writes.withLock({ let x = $0; $0 = []; return x }) { w.waiter.resume(.failure(.io("the gateway is shutting down"))) }
    }

    // MARK: Writes (the actuator path)

    private struct PendingWrite: Sendable {
        var spec: ModbusWriteSpec
        var items: [UInt16]
        var waiter: Waiter<Result<String, ModbusFailure>>
    }

    /// Writes a value to a device, ahead of any pending poll, and (with
    /// `readBack`) reads it back. Never runs after `timeout` has passed.
    public func write(_ spec: ModbusWriteSpec, items: [UInt16], timeout: Duration) async -> Result<String, ModbusFailure> {
        let waiter = Waiter<Result<String, ModbusFailure>>()
        guard running.load(ordering: .acquiring) else { return .failure(.io("the bus is not running")) }
        writes.withLock { $0.append(PendingWrite(spec: spec, items: items, waiter: waiter)) }
        signalWake()
        guard let r = await waiter.wait(timeout: timeout) else { return .failure(.timeout) }
        return r
    }

    private func signalWake() {
        var b: UInt8 = 1
        _ = Glibc.write(wake.w, &b, 1)
    }

    // MARK: The scheduler

    private struct Slot {
        var device: Int
        var block: Int
        var due: UInt64 // monotonic ns
    }

    private final class DeviceRun {
        var blocks: [ModbusBlock]
        var due: [UInt64]
        var offline = false
        var failures = 0
        var backoff: Backoff
        var nextProbe: UInt64 = 0
        init(blocks: [ModbusBlock], backoff: Backoff) {
            self.blocks = blocks
            self.due = Array(repeating: 0, count: blocks.count)
            self.backoff = backoff
        }
    }

    private func runLoop() {
        let link = ModbusLink(transport: options.transport)
        var reconnect = Backoff(initial: .milliseconds(200), maximum: .seconds(5))
        let start = monotonicNanos()
        let runs: [DeviceRun] = blocksByDevice.enumerated().map { i, blocks in
            let poll = blocks.map(\.pollMillis).min() ?? 1000
            let r = DeviceRun(blocks: blocks, backoff: Backoff(initial: .milliseconds(max(100, poll)), maximum: .milliseconds(max(poll, options.backoffMaxMillis))))
            // Spread the first polls of the devices over a few ms so they do not all fall due at once.
            for b in r.due.indices { r.due[b] = start + UInt64(i) * 1_000_000 }
            return r
        }
        while running.load(ordering: .acquiring) {
            if !link.isOpen {
                var path: String?
                if case .rtu(let spec, _, _, _, _, _) = options.transport { path = options.resolvePort(spec) }
                do {
                    try link.open(path: path)
                    stateGauge.set(.connected)
                    reconnect = Backoff(initial: .milliseconds(200), maximum: .seconds(5))
                    logger.info("modbus bus connected", metadata: ["modbus.transport": "\(options.transport)", "serial.path": "\(link.path ?? "-")"])
                } catch {
                    stateGauge.set(.disconnected)
                    note("connect_failed", "cannot open the Modbus bus: \(error)", [:])
                    sleepInterruptibly(nanos: reconnect.next().nanos)
                    continue
                }
            }
            // Writes first: a command waits for at most the transaction in progress.
            if let w = writes.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
                if !w.waiter.isDone { performWrite(w, link: link) }
                quiet()
                continue
            }
            guard let slot = nextSlot(runs) else {
                sleepInterruptibly(nanos: 1_000_000_000)
                continue
            }
            let t = monotonicNanos()
            if slot.due > t {
                sleepInterruptibly(nanos: slot.due - t)
                continue // re-check writes and the stop flag
            }
            poll(slot, runs: runs, link: link)
            quiet()
        }
        link.close()
    }

    /// The slot due first: every block of an online device, one probe per offline device.
    private func nextSlot(_ runs: [DeviceRun]) -> Slot? {
        var best: Slot?
        for (d, r) in runs.enumerated() where !r.blocks.isEmpty {
            if r.offline {
                if best == nil || r.nextProbe < best!.due { best = Slot(device: d, block: 0, due: r.nextProbe) }
                continue
            }
            for (b, due) in r.due.enumerated() where best == nil || due < best!.due {
                best = Slot(device: d, block: b, due: due)
            }
        }
        return best
    }

    private func quiet() {
        if options.interFrameDelayMillis > 0 { sleepInterruptibly(nanos: UInt64(options.interFrameDelayMillis) * 1_000_000, wakeOnWrite: false) }
    }

    /// Sleeps until the time passes, a write is queued or the bus stops.
    private func sleepInterruptibly(nanos: UInt64, wakeOnWrite: Bool = true) {
        guard wake.r >= 0 else { usleep(UInt32(min(nanos / 1000, 1_000_000))); return }
        if !wakeOnWrite {
            var ts = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
            _ = nanosleep(&ts, nil)
            return
        }
        var pfd = pollfd(fd: wake.r, events: Int16(POLLIN), revents: 0)
        let ms = Int32(min((nanos + 999_999) / 1_000_000, 1000))
        if Glibc.poll(&pfd, 1, ms) > 0 {
            var buf = [UInt8](repeating: 0, count: 64)
            while Glibc.read(wake.r, &buf, 64) > 0 {}
        }
    }

    private func poll(_ slot: Slot, runs: [DeviceRun], link: ModbusLink) {
        let run = runs[slot.device]
        let dev = options.devices[slot.device]
        let block = run.blocks[slot.block]
        let probing = run.offline
        let result = transact(device: slot.device, retries: probing ? 0 : dev.retries, link: link) { link.read(block.table, start: block.start, count: block.count) }
        let t = monotonicNanos()
        let interval = UInt64(block.pollMillis) * 1_000_000
        switch result {
        case .success(let items):
            stats.messages.add()
            if run.offline || run.failures > 0 {
                if run.offline {
                    logger.notice("modbus device answers again", metadata: ["modbus.device": "\(dev.name)", "modbus.unit": "\(dev.unit)"])
                    // Every block of the device falls due now.
                    for b in run.due.indices { run.due[b] = t }
                }
                run.offline = false
                run.failures = 0
                run.backoff = Backoff(initial: run.backoff.initial, maximum: run.backoff.maximum)
            }
            deliver(block, items: items, device: slot.device)
            updateStats(slot.device) { $0.health = .online; $0.consecutiveFailures = 0; $0.nextProbeMillis = nil }
            reschedule(run, slot.block, interval: interval, now: t, device: slot.device)
        case .failure(.io(let why)):
            note("io_error", "modbus bus I/O error: reconnecting", ["error": "\(why)"])
            link.close()
            stateGauge.set(.disconnected)
        case .failure(.exception(let code)) where code == 2 && block.points.count > 1:
            // The device refuses a read across several points (a hole in its map):
            // read those points one by one from now on, so the error lands on the right point.
            let singles = block.points.map { i in
                let p = dev.points[i]
                return ModbusBlock(table: p.table, start: p.address, count: p.count, pollMillis: p.pollMillis, points: [i])
            }
            logger.notice("modbus device refuses a block read: reading its points separately", metadata: [
                "modbus.device": "\(dev.name)", "modbus.table": "\(block.table.rawValue)", "modbus.range": "\(block.start)..<\(Int(block.start) + block.count)"])
            run.blocks.remove(at: slot.block)
            run.due.remove(at: slot.block)
            run.blocks.append(contentsOf: singles)
            run.due.append(contentsOf: singles.map { _ in t })
        case .failure(let f):
            if case .exception(let code) = f {
                // The device is alive; the points of this block are not readable.
                stats.errors.add(ModbusException.name(code))
                if run.offline {
                    run.offline = false
                    for b in run.due.indices { run.due[b] = t }
                }
                run.failures = 0
                let names = block.points.map { dev.points[$0].metric }
                updateStats(slot.device) { s in
                    s.health = .online
                    s.consecutiveFailures = 0
                    for n in names { s.pointErrors[n] = "exception \(code): \(ModbusException.reason(code))" }
                }
                if let n = limiter.admit() {
                    logger.warning("modbus exception", metadata: ["modbus.device": "\(dev.name)", "modbus.unit": "\(dev.unit)", "modbus.table": "\(block.table.rawValue)",
                                                                  "modbus.address": "\(block.start)", "modbus.count": "\(block.count)", "modbus.points": "\(names.joined(separator: ","))",
                                                                  "reason": "\(ModbusException.name(code))", "error": "\(f)", "suppressed": "\(n)"])
                }
                reschedule(run, slot.block, interval: interval, now: t, device: slot.device)
                return
            }
            stats.errors.add(f.reason)
            run.failures += 1
            let failures = run.failures
            if run.offline || run.failures >= options.offlineAfter {
                let wasOffline = run.offline
                run.offline = true
                let delay = run.backoff.next()
                run.nextProbe = t + delay.nanos
                let probeAt = now() + Int64(delay.nanos / 1_000_000)
                updateStats(slot.device) { $0.health = .offline; $0.consecutiveFailures = failures; $0.nextProbeMillis = probeAt }
                if !wasOffline {
                    logger.warning("modbus device not answering: backing off, probing it now and then", metadata: [
                        "modbus.device": "\(dev.name)", "modbus.unit": "\(dev.unit)", "error": "\(f)", "failures": "\(failures)",
                        "modbus.next_probe_ms": "\(delay.nanos / 1_000_000)"])
                }
            } else {
                updateStats(slot.device) { $0.consecutiveFailures = failures }
                if let n = limiter.admit() {
                    logger.warning("modbus poll failed", metadata: ["modbus.device": "\(dev.name)", "modbus.unit": "\(dev.unit)", "error": "\(f)",
                                                                    "reason": "\(f.reason)", "suppressed": "\(n)"])
                }
                reschedule(run, slot.block, interval: interval, now: t, device: slot.device)
            }
        }
    }

    /// Next due time without drift; a poll that fell behind by a whole interval skips ahead.
    private func reschedule(_ run: DeviceRun, _ b: Int, interval: UInt64, now t: UInt64, device: Int) {
        var next = run.due[b] + interval
        if next + interval < t {
            updateStats(device) { $0.overruns += 1 }
            next = t + interval
        }
        run.due[b] = next
    }

    /// One request with retries; counts every attempt in the device statistics.
    private func transact(device d: Int, retries: Int, link: ModbusLink, _ body: () -> Result<[UInt16], ModbusFailure>) -> Result<[UInt16], ModbusFailure> {
        let dev = options.devices[d]
        var attempt = 0
        while true {
            link.prepare(unit: dev.unit, timeoutMillis: dev.timeoutMillis)
            let t0 = monotonicNanos()
            let r = body()
            let ms = Double(monotonicNanos() - t0) / 1e6
            updateStats(d) { s in
                s.requests += 1
                switch r {
                case .success:
                    s.responses += 1
                    s.latencyMillisTotal += ms
                    s.latencyMillisMax = max(s.latencyMillisMax, ms)
                    s.latencyBuckets[ModbusDeviceStats.latencyBounds.firstIndex { ms / 1000 <= $0 } ?? ModbusDeviceStats.latencyBounds.count] += 1
                case .failure(.timeout): s.timeouts += 1
                case .failure(.exception(let c)):
                    s.responses += 1
                    s.exceptions[c, default: 0] += 1
                case .failure(.badResponse): s.badResponses += 1
                case .failure(.io), .failure(.readBack): break
                }
            }
            guard case .failure(let f) = r, f.retryable, attempt < retries, running.load(ordering: .relaxed) else { return r }
            if case .failure(.badResponse) = r { link.flush() }
            if case .failure(.timeout) = r { link.flush() }
            attempt += 1
            quiet()
        }
    }

    private func deliver(_ block: ModbusBlock, items: [UInt16], device d: Int) {
        let dev = options.devices[d]
        let t = now()
        var readings: [Reading] = []
        readings.reserveCapacity(block.points.count)
        var bad: [(String, String)] = []
        for i in block.points {
            let p = dev.points[i]
            let off = Int(p.address) - Int(block.start)
            let words = items[off..<(off + p.count)]
            let v: Value = p.table.isBit ? .bool(words.first! != 0) : p.encoding.decode(words)
            if case .number(let x) = v, !x.isFinite {
                bad.append((p.metric, "not a finite number (\(p.encoding.type.rawValue) \(p.encoding.orderName) of registers \(words.map { hex4($0) }.joined(separator: " ")))"))
                continue
            }
            readings.append(Reading(device: dev.name, metric: p.metric, time: t, value: v))
        }
        let names = Set(readings.map(\.metric))
        updateStats(d) { s in
            s.lastReadingMillis = t
            for n in names { s.pointErrors[n] = nil }
            for (m, why) in bad { s.pointErrors[m] = why }
        }
        for _ in bad { stats.errors.add("not_a_number") }
        if !readings.isEmpty {
            sink.accept(readings, from: options.name, redelivery: .never)
            stats.readings.add(Int64(readings.count))
            stats.lastReadingMillis.set(t)
        }
    }

    private func performWrite(_ w: PendingWrite, link: ModbusLink) {
        guard let d = options.devices.firstIndex(where: { $0.unit == w.spec.unit && $0.name == w.spec.device })
            ?? options.devices.firstIndex(where: { $0.unit == w.spec.unit }) else {
            // A unit without polled points: write with the bus defaults.
            link.prepare(unit: w.spec.unit, timeoutMillis: options.devices.first?.timeoutMillis ?? 500)
            w.waiter.resume(writeOnce(w, link: link))
            return
        }
        let dev = options.devices[d]
        var attempt = 0
        var result: Result<String, ModbusFailure>
        repeat {
            link.prepare(unit: dev.unit, timeoutMillis: dev.timeoutMillis)
            updateStats(d) { $0.requests += 1 }
            result = writeOnce(w, link: link)
            if case .failure(let f) = result, f.retryable, attempt < dev.retries, !w.waiter.isDone {
                link.flush()
                attempt += 1
                quiet()
                continue
            }
            break
        } while true
        if case .failure(.io) = result { link.close(); stateGauge.set(.disconnected) }
        w.waiter.resume(result)
    }

    private func writeOnce(_ w: PendingWrite, link: ModbusLink) -> Result<String, ModbusFailure> {
        let s = w.spec
        switch link.write(s.table, start: s.address, items: w.items, forceMultiple: s.forceMultiple) {
        case .failure(let f): return .failure(f)
        case .success: break
        }
        let what = "\(s.table.rawValue) \(s.address)\(w.items.count > 1 ? "..\(Int(s.address) + w.items.count - 1)" : "")"
        guard s.readBack else { return .success("wrote \(what) = \(w.items.map { s.table.isBit ? String($0) : "0x" + hex4($0) }.joined(separator: " "))") }
        quiet()
        switch link.read(s.table, start: s.address, count: w.items.count) {
        case .failure(let f): return .failure(.readBack("wrote \(what) but could not read it back: \(f)"))
        case .success(let got):
            let want = s.table.isBit ? w.items.map { $0 != 0 ? UInt16(1) : 0 } : w.items
            if got != want {
                return .failure(.readBack("read back \(got.map { "0x" + hex4($0) }.joined(separator: " ")) from \(what), expected \(want.map { "0x" + hex4($0) }.joined(separator: " ")) (the device did not keep the value)"))
            }
            return .success("wrote \(what), read back")
        }
    }

    private func updateStats(_ d: Int, _ body: (inout ModbusDeviceStats) -> Void) {
        deviceStats.withLock { body(&$0[d]) }
    }

    private func note(_ reason: String, _ message: Logger.Message, _ md: Logger.Metadata) {
        stats.errors.add(reason)
        if let n = limiter.admit() {
            var md = md
            md["reason"] = "\(reason)"
            if n > 0 { md["suppressed"] = "\(n)" }
            logger.warning(message, metadata: md)
        }
    }
}

extension Duration {
    var nanos: UInt64 {
        let c = components
        return UInt64(max(0, c.seconds)) * 1_000_000_000 + UInt64(max(0, c.attoseconds) / 1_000_000_000)
    }
}
