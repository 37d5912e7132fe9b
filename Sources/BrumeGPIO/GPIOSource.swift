import BrumeCore
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `[[source]] kind = "gpio"`: input lines as state readings and pulse counters, output lines
/// as actuators (set to their safe state at start and at stop). One thread waits for edges.
public final class GPIOSource: Source {
    public struct Input: Sendable {
        public enum Mode: Sendable { case state, counter(rising: Bool, scale: Double) }
        public var line: Int
        public var device: String
        public var metric: String
        public var mode: Mode
        public var debounceNanos: UInt64
        public var bias: GPIOBias
        public var activeLow: Bool
        public init(line: Int, device: String, metric: String, mode: Mode, debounceNanos: UInt64, bias: GPIOBias, activeLow: Bool) {
            self.line = line; self.device = device; self.metric = metric; self.mode = mode
            self.debounceNanos = debounceNanos; self.bias = bias; self.activeLow = activeLow
        }
    }

    public struct Output: Sendable {
        public var line: Int
        public var safe: Bool
        public var activeLow: Bool
        public init(line: Int, safe: Bool, activeLow: Bool) { self.line = line; self.safe = safe; self.activeLow = activeLow }
    }

    public struct Options: Sendable {
        public var chip: String
        public var inputs: [Input]
        public var outputs: [Output]
        public var intervalMillis: Int64
        public var countsPath: String
        public init(chip: String, inputs: [Input], outputs: [Output], intervalMillis: Int64, countsPath: String) {
            self.chip = chip; self.inputs = inputs; self.outputs = outputs; self.intervalMillis = intervalMillis; self.countsPath = countsPath
        }
    }

    public let name: String
    public let stats = SourceStats()
    let options: Options
    let sink: any ReadingSink
    let logger: Logger
    private let stateGauge = Gauge<SourceState>(.starting)
    private let worker = WorkerThread()
    private let chip = Mutex<(any GPIOChip)?>(nil)
    private let limiter = LogRateLimiter(burst: 5, interval: .seconds(60))
    /// Status: per input ("device/metric") its last value; per output ("line N") its level.
    public let latest = Locked<[String: Value]>([:])

    public init(name: String, options: Options, sink: any ReadingSink, logger: Logger) {
        self.name = name
        self.options = options
        self.sink = sink
        self.logger = logger.forSource(name)
    }

    public var state: SourceState { stateGauge.current }

    public static func openChip(_ descr: String) throws(GPIOError) -> any GPIOChip {
        if descr.hasPrefix("simulated:") { return try SimulatedChip(dir: String(descr.dropFirst("simulated:".count))) }
        return try LibGPIODChip(descr)
    }

    /// Opens the chip and requests every line (outputs in their safe state); nil if impossible.
    private func setUp() -> (any GPIOChip)? {
        do {
            let c = try Self.openChip(options.chip)
            do {
                for o in options.outputs {
                    try c.requestOutput(line: o.line, initial: o.safe, activeLow: o.activeLow, consumer: "brume-\(name)")
                    latest.withLock { $0["line \(o.line)"] = .bool(o.safe) }
                }
                for i in options.inputs { try c.requestInput(line: i.line, bias: i.bias, activeLow: i.activeLow, consumer: "brume-\(name)") }
            } catch {
                c.close()
                throw error
            }
            if options.chip.hasPrefix("simulated:") { logger.warning("GPIO: a simulated chip (tests and demos only): no real line is read or driven", metadata: ["gpio.chip": "\(c.label)"]) }
            logger.info("GPIO source started", metadata: ["gpio.chip": "\(c.label)", "gpio.inputs": "\(options.inputs.count)", "gpio.outputs": "\(options.outputs.count)"])
            return c
        } catch {
            stats.errors.add("chip_unavailable")
            if limiter.admit() != nil { logger.error("GPIO: cannot use the chip (trying again every 5 s)", metadata: ["error": "\(error)"]) }
            return nil
        }
    }

    public func start() {
        worker.start("gpio-\(name)") { [self] in
            let saved = Self.loadCounts(options.countsPath, logger: logger)
            var logic = GPIOLogic(
                states: options.inputs.compactMap { i in if case .state = i.mode { .init(line: i.line, debounceNanos: i.debounceNanos) } else { nil } },
                counters: options.inputs.compactMap { i in
                    if case .counter(let rising, _) = i.mode { .init(line: i.line, rising: rising, debounceNanos: i.debounceNanos, pulses: saved[i.line] ?? 0) } else { nil }
                })
            let stateInputs = options.inputs.filter { if case .state = $0.mode { true } else { false } }
            let counterInputs = options.inputs.filter { if case .counter = $0.mode { true } else { false } }
            var c: (any GPIOChip)?
            var nextTry = ContinuousClock.now
            var lastReport = monotonicNanos()
            var reportedPulses = logic.counters.map(\.pulses)
            var persisted = reportedPulses
            let interval = UInt64(options.intervalMillis) * 1_000_000
            while worker.isRunning {
                if c == nil {
                    guard ContinuousClock.now >= nextTry else { usleep(100_000); continue }
                    c = setUp()
                    chip.withLock { $0 = c }
                    stateGauge.set(c == nil ? .disconnected : .connected)
                    nextTry = ContinuousClock.now + .seconds(5)
                    continue
                }
                guard let chipNow = c else { continue }
                let now0 = monotonicNanos()
                let untilSettle = logic.nextSettle.map { $0 > now0 ? Int32(min(200, ($0 - now0) / 1_000_000 + 1)) : 0 } ?? 200
                do {
                    let edges = try chipNow.waitEdges(timeoutMillis: untilSettle)
                    stats.messages.add(Int64(edges.count))
                    for e in edges { logic.edge(e) }
                } catch {
                    stats.errors.add("chip_error")
                    if limiter.admit() != nil { logger.error("GPIO: reading edges failed: reopening the chip", metadata: ["error": "\(error)"]) }
                    chip.withLock { $0 = nil }
                    chipNow.close()
                    c = nil
                    stateGauge.set(.disconnected)
                    continue
                }
                let now = monotonicNanos()
                var readings: [Reading] = []
                let wall = wallClockMillis()
                for (i, v) in logic.settled(now: now, level: { try? chipNow.value(line: $0) }) {
                    let input = stateInputs[i]
                    readings.append(Reading(device: input.device, metric: input.metric, time: wall, value: .bool(v)))
                    latest.withLock { $0["\(input.device)/\(input.metric)"] = .bool(v) }
                }
                if now &- lastReport >= interval {
                    let seconds = Double(now &- lastReport) / 1e9
                    lastReport = now
                    let pulses = logic.counters.map(\.pulses)
                    // On disk first: a total that went out is never above what a restart starts from.
                    if pulses != persisted, Self.saveCounts(Dictionary(uniqueKeysWithValues: zip(counterInputs.map(\.line), pulses)), to: options.countsPath, logger: logger) {
                        persisted = pulses
                    }
                    for (k, input) in counterInputs.enumerated() {
                        guard case .counter(_, let scale) = input.mode, persisted[k] == pulses[k] else { continue }
                        let total = Double(pulses[k]) * scale
                        let rate = Double(pulses[k] &- reportedPulses[k]) * scale / seconds
                        readings.append(Reading(device: input.device, metric: input.metric, time: wall, value: .number(total)))
                        readings.append(Reading(device: input.device, metric: "\(input.metric)_rate", time: wall, value: .number(rate)))
                        latest.withLock { $0["\(input.device)/\(input.metric)"] = .number(total) }
                        reportedPulses[k] = pulses[k]
                    }
                    // The state of each contact at every interval too: the cloud knows it without waiting for a change.
                    for (i, s) in logic.states.enumerated() where s.reported != nil && !readings.contains(where: { $0.metric == stateInputs[i].metric && $0.device == stateInputs[i].device }) {
                        readings.append(Reading(device: stateInputs[i].device, metric: stateInputs[i].metric, time: wall, value: .bool(s.reported!)))
                    }
                }
                if !readings.isEmpty {
                    stats.readings.add(Int64(readings.count))
                    stats.lastReadingMillis.set(wall)
                    sink.accept(readings, from: name, redelivery: .never)
                }
            }
            let pulses = logic.counters.map(\.pulses)
            if pulses != persisted { _ = Self.saveCounts(Dictionary(uniqueKeysWithValues: zip(counterInputs.map(\.line), pulses)), to: options.countsPath, logger: logger) }
            if let c {
                // Stopping: no command reaches the chip any more, then the outputs go back to their safe state.
                chip.withLock { $0 = nil }
                for o in options.outputs { try? c.set(line: o.line, o.safe) }
                c.close()
            }
        }
    }

    public func stop() {
        guard worker.stop() else { return }
        stateGauge.set(.stopped)
    }

    /// An actuator command: the output line to `value`, read back.
    public func drive(line: Int, _ value: Bool) -> Result<String, GPIOError> {
        chip.withLock { c -> Result<String, GPIOError> in
            guard let c else { return .failure(GPIOError("the GPIO chip is not open")) }
            do throws(GPIOError) {
                try c.set(line: line, value)
                latest.withLock { $0["line \(line)"] = .bool(value) }
                return .success("line \(line) set to \(value ? 1 : 0)")
            } catch {
                return .failure(error)
            }
        }
    }

    // MARK: - pulse counts on disk ("LINE PULSES" per line)

    static func loadCounts(_ path: String, logger: Logger) -> [Int: UInt64] {
        guard let text = readSmallFile(path, limit: 1 << 20) else { return [:] }
        var out: [Int: UInt64] = [:]
        for l in text.split(separator: "\n") {
            let f = l.split(separator: " ")
            guard f.count == 2, let line = Int(f[0]), let n = UInt64(f[1]) else {
                logger.warning("GPIO: a line of the pulse-count file is not understood (skipped)", metadata: ["path": "\(path)"])
                continue
            }
            out[line] = n
        }
        return out
    }

    static func saveCounts(_ counts: [Int: UInt64], to path: String, logger: Logger) -> Bool {
        let text = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)\n" }.joined()
        if let why = atomicWrite(text, to: path, mode: 0o600) {
            logger.error("GPIO: cannot write the pulse counts (totals are held back until it can)", metadata: ["path": "\(path)", "error": "\(why)"])
            return false
        }
        return true
    }
}
