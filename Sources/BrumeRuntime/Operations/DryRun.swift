import BrumeConfig
import BrumeCore
import BrumeFunctions
import BrumeRules
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `brume test`: the configured sources and rules for a few seconds, without the outbox, the
/// uplinks or the actuators. Every reading is printed with what the rules decided about it, like
/// `telegraf --test`: for a technician at a new site ("does the sensor answer, is the parsing
/// right, which rule drops what").
///
/// Nothing leaves the board: readings are not stored, trigger commands are printed and not
/// sent. An MQTT source connects with its own client id (`ID-test-PID`) and a clean session, so
/// it neither takes over the running gateway's connection nor consumes its queued messages.
public struct DryRun: Sendable {
    public struct Summary: Sendable {
        /// Readings per source, in the order of the configuration.
        public var readings: [(source: String, count: Int64, errors: [String: Int64], state: String)]
        /// Readings that left the rules (kept, transformed, aggregated, derived).
        public var kept: Int64
        public var dropped: Int64
        public var commands: Int64
        /// True when every source tested produced at least one reading.
        public var everySourceDelivered: Bool { readings.allSatisfy { $0.count > 0 } }
    }

    public let config: GatewayConfig
    public let sources: [SourceConfig]

    /// `only`: source names (all when empty). Unknown names are the caller's to refuse.
    public init(config: GatewayConfig, only: [String] = []) {
        self.config = config
        sources = config.sources.filter { only.isEmpty || only.contains($0.name) }.map(DryRun.isolated)
    }

    /// A source as the dry run opens it: MQTT with its own client id and a clean session.
    static func isolated(_ s: SourceConfig) -> SourceConfig {
        var s = s
        if case .mqtt(var m) = s.kind {
            // Never the gateway's own id, even when its id is 128 bytes long: the base is cut.
            let suffix = "-test-\(getpid())"
            m.connection.clientID = String(m.connection.clientID.utf8.prefix(128 - suffix.utf8.count))! + suffix
            m.persistentSession = false
            s.kind = .mqtt(m)
        }
        return s
    }

    /// Runs for `seconds`, printing each line with `print` (one call per line, never
    /// concurrently); returns what was seen. Log lines of the sources go to `logger`.
    public func run(seconds: Double, logger: Logger, print: @escaping @Sendable (String) -> Void) async throws -> Summary {
        // Functions run for real (their own instances: nothing dead-lettered in a dry run).
        let functions = FunctionDirectory(logger: logger, deadLetterDirectory: nil)
        let functionSet = try functions.prepare(config.functions.specs)
        functions.install(functionSet)
        let engine = config.rules.compiled.map { RulesEngine(rules: $0, functions: FunctionDirectory.ruleFunctions(functionSet), clock: wallClockMillis) }
        let sink = DryRunSink(engine: engine, config: config, print: print)
        var running: [RunningSource] = []
        for s in sources { running.append(try SourceKinds.make(s, dataDir: config.gateway.dataDir, sink: sink, functions: functions, logger: logger)) }
        print("dry run of \(sources.count) source\(sources.count == 1 ? "" : "s") for \(WireFormat.formatNumber(seconds)) s: nothing is stored or sent, actuators are not driven")
        for r in running { r.start() }
        let end = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < end {
            try? await Task.sleep(for: .milliseconds(100))
            if let engine { sink.emitLocked(engine.tick(), cause: "window or timer") }
        }
        for r in running { r.stop() }
        if let engine { sink.emitLocked(engine.flush(), cause: "end of the dry run: open windows") }
        return Summary(readings: running.map { r in (r.name, r.stats.readings.current, r.stats.errors.snapshot, r.state.rawValue) },
                       kept: sink.kept.current, dropped: sink.dropped.current, commands: sink.commands.current)
    }
}

/// The dry run's pipeline: rules reading by reading, so each decision can be named.
final class DryRunSink: ReadingSink, Sendable {
    let engine: RulesEngine?
    let windows: Set<String>
    let print: @Sendable (String) -> Void
    let lock = Locked(())
    let kept = Counter()
    let dropped = Counter()
    let commands = Counter()

    init(engine: RulesEngine?, config: GatewayConfig, print: @escaping @Sendable (String) -> Void) {
        self.engine = engine
        self.print = print
        var w = Set<String>()
        for (i, r) in config.rules.rules.enumerated() where r.window != nil { w.insert(r.name ?? "rule#\(i + 1)") }
        windows = w
    }

    static func time(_ ms: Int64) -> String {
        var t = time_t(ms / 1000)
        var tmv = tm()
        localtime_r(&t, &tmv)
        func p(_ v: Int32, _ n: Int = 2) -> String { let s = String(v); return String(repeating: "0", count: max(0, n - s.count)) + s }
        return "\(p(tmv.tm_hour)):\(p(tmv.tm_min)):\(p(tmv.tm_sec)).\(p(Int32(ms % 1000), 3))"
    }

    static func text(_ r: Reading) -> String {
        var v = r.value.description
        if case .string = r.value { v = "\"\(v)\"" }
        return "\(r.device)/\(r.metric) = \(v)\(r.unsyncedBootMillis != nil ? " (clock not synchronised)" : "")"
    }

    func accept(_ readings: [Reading], from source: String, redelivery: Redelivery) -> UInt64 {
        lock.withLock { _ in
            for r in readings {
                let head = "\(DryRunSink.time(r.time))  [\(source)] \(DryRunSink.text(r))"
                guard let engine else {
                    kept.add(1)
                    print("\(head)  → kept (no rules)")
                    continue
                }
                let before = engine.stats()
                let out = engine.process([r])
                let after = engine.stats()
                var notes: [String] = []
                for name in after.keys.sorted() {
                    guard let a = after[name] else { continue }
                    let b = before[name] ?? RuleStats()
                    if a.in == b.in && a.errors == b.errors { continue }
                    let label = name.hasPrefix("trigger:") ? "trigger \"\(name.dropFirst(8))\"" : name.hasPrefix("derived:") ? "derived \(name.dropFirst(8))" : "rule \"\(name)\""
                    if a.errors > b.errors { notes.append("\(label): error: \(a.lastError ?? "?")") }
                    if a.late > b.late { notes.append("dropped by \(label): too late for its window") }
                    else if a.dropped > b.dropped { notes.append("dropped by \(label)") }
                    if a.suppressed > b.suppressed { notes.append("held back by \(label) (deadband or min_interval)") }
                    if !name.contains(":") && windows.contains(name) && a.dropped == b.dropped { notes.append("into the window of \(label)") }
                }
                let passedUnchanged = out.readings.contains(r)
                if passedUnchanged { kept.add(1) }
                if notes.isEmpty && out.readings.isEmpty { notes.append("no output") }
                if out.readings.isEmpty && !notes.contains(where: { $0.hasPrefix("into the window") || $0.hasPrefix("held back") }) { dropped.add(1) }
                print("\(head)  → \(passedUnchanged ? "kept" : "not kept")\(notes.isEmpty ? "" : ": " + notes.joined(separator: "; "))")
                emit(RulesOutput(readings: out.readings.filter { $0 != r }, events: out.events, commands: out.commands), cause: nil)
            }
        }
        return 0
    }

    func emitLocked(_ out: RulesOutput, cause: String?) {
        if out.isEmpty { return }
        lock.withLock { _ in emit(out, cause: cause) }
    }

    /// Readings, events and commands the rules produced (under the lock).
    func emit(_ out: RulesOutput, cause: String?) {
        if out.isEmpty { return }
        let from = cause.map { " (\($0))" } ?? ""
        for r in out.readings {
            kept.add(1)
            print("    ↳ \(DryRunSink.text(r)) at \(DryRunSink.time(r.time))\(from)")
        }
        for e in out.events { print("    ↳ trigger \"\(e.trigger)\" \(e.kind.rawValue): \(e.detail)\(from)") }
        for c in out.commands {
            commands.add(1)
            print("    ↳ trigger \"\(c.trigger)\" would command actuator \"\(c.actuator)\" = \(c.value) (dry run: not sent)\(from)")
        }
    }

    func waitDurable(_ ticket: UInt64, timeout: Duration) -> Bool { true }
    func flushNow() {}
    func commitSoon() {}
}
