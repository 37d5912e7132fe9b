import BrumeCore
import Synchronization

/// A command for an actuator, decided locally by a trigger.
public struct TriggeredCommand: Sendable, Hashable {
    public var trigger: String
    public var actuator: String
    public var value: Value
    /// Engine clock (ms since the epoch) when the trigger fired.
    public var at: Int64
    public init(trigger: String, actuator: String, value: Value, at: Int64) {
        self.trigger = trigger
        self.actuator = actuator
        self.value = value
        self.at = at
    }
}

/// An event for the cloud, raised by a trigger. The runtime sends events ahead of telemetry.
public struct RuleEvent: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable { case fired, cleared }
    public var trigger: String
    public var kind: Kind
    public var at: Int64
    /// The trigger's `event` text, or its `when` expression when it has none.
    public var detail: String
    /// The values of the streams the trigger reads, at that moment.
    public var values: [String: Value]
    public init(trigger: String, kind: Kind, at: Int64, detail: String, values: [String: Value] = [:]) {
        self.trigger = trigger
        self.kind = kind
        self.at = at
        self.detail = detail
        self.values = values
    }
}

/// What one call to the engine produced, in order.
public struct RulesOutput: Sendable, Hashable {
    public var readings: [Reading]
    public var events: [RuleEvent]
    public var commands: [TriggeredCommand]
    public init(readings: [Reading] = [], events: [RuleEvent] = [], commands: [TriggeredCommand] = []) {
        self.readings = readings
        self.events = events
        self.commands = commands
    }
    public var isEmpty: Bool { readings.isEmpty && events.isEmpty && commands.isEmpty }
}

/// Counters of one rule (or trigger, or derived metric).
public struct RuleStats: Sendable, Hashable {
    /// Readings that matched the rule (triggers: evaluations; derived: computations attempted).
    public var `in`: Int64 = 0
    /// Readings the rule emitted: passed raw readings, flags, aggregates (triggers: firings).
    public var out: Int64 = 0
    /// Readings removed: by drop_if, by an evaluation error under `onError = .drop`, or late.
    public var dropped: Int64 = 0
    /// Readings held back by the deadband or the rate limit (and never released).
    public var suppressed: Int64 = 0
    /// Readings too late for every window they belong to (also counted in `dropped`).
    public var late: Int64 = 0
    /// Evaluation errors (a trigger waiting for a stream's first value is not an error).
    public var errors: Int64 = 0
    /// The most recent evaluation error, for `brume status`.
    public var lastError: String?
    public init() {}
}

/// The rules engine: readings in, readings/events/commands out. Pure logic driven by an
/// injected clock (ms since the epoch); thread-safe (one lock; calls are serialized).
///
/// Call `process` with incoming readings, `tick` periodically (e.g. every 100 ms) for
/// time-based output (window closes, heartbeats, debounce and cooldown expiries), and `flush`
/// at shutdown to emit every open window.
public final class RulesEngine: Sendable {
    let compiled: CompiledRules
    /// The user function of each rule that runs one (aligned with `compiled.rules`).
    let functions: [(any RuleFunction)?]
    private let clock: @Sendable () -> Int64
    private let state: Mutex<EngineState>

    /// `functions`: the implementation of each user function the rules name (`RuleSpec.function`),
    /// by name. A function rule without one lets readings pass and counts an error.
    public init(rules: CompiledRules, functions: [String: any RuleFunction] = [:], clock: @escaping @Sendable () -> Int64) {
        self.compiled = rules
        self.functions = rules.rules.map { r in r.function.flatMap { functions[$0.name] } }
        self.clock = clock
        self.state = Mutex(EngineState(rules))
    }

    /// The names of the user functions the rules run, in order.
    public var functionNames: [String] { compiled.rules.compactMap { $0.function?.name } }

    public func process(_ readings: [Reading]) -> RulesOutput {
        let ctx = Ctx(c: compiled, fns: functions, now: clock())
        return state.withLock { s in
            var out = RulesOutput()
            out.readings.reserveCapacity(readings.count)
            for r in readings { s.flow(r, from: 0, derived: false, ctx, &out) }
            return out
        }
    }

    public func tick() -> RulesOutput {
        let ctx = Ctx(c: compiled, fns: functions, now: clock())
        return state.withLock { s in
            var out = RulesOutput()
            s.tick(ctx, &out)
            return out
        }
    }

    public func flush() -> RulesOutput {
        let ctx = Ctx(c: compiled, fns: functions, now: clock())
        return state.withLock { s in
            var out = RulesOutput()
            s.flush(ctx, &out)
            return out
        }
    }

    /// Statistics by rule name (or `rule#N`), `trigger:<name>` and `derived:<device>/<metric>`.
    public func stats() -> [String: RuleStats] {
        state.withLock { s in
            var d: [String: RuleStats] = [:]
            for (i, r) in compiled.rules.enumerated() { d[r.name] = s.rules[i].stats }
            for (i, t) in compiled.triggers.enumerated() { d["trigger:\(t.spec.name)"] = s.triggers[i].stats }
            for (i, x) in compiled.derived.enumerated() { d["derived:\(x.key)"] = s.derivedStats[i] }
            return d
        }
    }

    /// After a reload: takes over the state (windows, deadband, rate limit, trigger phase,
    /// statistics) of every rule and trigger whose spec is unchanged, and the latest stream values.
    /// Rules are matched by spec equality, in order (two identical rules pair up in order).
    public func carryState(from old: RulesEngine) {
        guard old !== self else { return }
        let snapshot = old.state.withLock { $0 }
        // Positions in the file are not part of a rule's identity: a comment or a rule added
        // above must not cost the open windows of the rules below.
        let oldRules = old.compiled.rules.map(\.spec.identity)
        let oldTriggers = old.compiled.triggers.map(\.spec.identity)
        state.withLock { s in
            var used = Set<Int>()
            for (i, r) in compiled.rules.enumerated() {
                let id = r.spec.identity
                if let j = oldRules.indices.first(where: { !used.contains($0) && oldRules[$0] == id }) {
                    used.insert(j)
                    s.rules[i] = snapshot.rules[j]
                }
            }
            used = []
            for (i, t) in compiled.triggers.enumerated() {
                let id = t.spec.identity
                if let j = oldTriggers.indices.first(where: { !used.contains($0) && oldTriggers[$0] == id }) {
                    used.insert(j)
                    s.triggers[i] = snapshot.triggers[j]
                }
            }
            s.latest.merge(snapshot.latest) { current, _ in current }
        }
    }
}

struct Ctx {
    let c: CompiledRules
    let fns: [(any RuleFunction)?]
    let now: Int64
}

enum Stage: Int, Comparable {
    case validate, transform, report, rateLimit, window
    static func < (a: Stage, b: Stage) -> Bool { a.rawValue < b.rawValue }
}

struct StreamState: Sendable {
    var device: String
    var metric: String
    var lastSent: Value?
    var lastSentAt: Int64 = 0
    var held: Reading?
    var lastPass: Int64?
    var window: WindowBuffer?
}

struct RuleRuntime: Sendable {
    var streams: [String: StreamState] = [:]
    var stats = RuleStats()
}

/// Trigger phases (pure; the engine feeds it condition results and the clock).
struct TriggerMachine: Sendable, Hashable {
    enum Phase: Sendable, Hashable { case idle, pending(since: Int64), active }
    enum Action: Sendable, Hashable { case fire, clear }
    var phase: Phase = .idle
    var lastFired: Int64?

    /// Which condition to evaluate now: `when` (false) or `clear` (true).
    func wantsClear(hasClear: Bool) -> Bool { phase == .active && hasClear }

    /// Feeds the value of the condition asked for (nil when it could not be evaluated).
    mutating func step(_ cond: Bool?, hasClear: Bool, now: Int64, forMillis: Int64, cooldown: Int64) -> Action? {
        guard let cond else { return nil }
        switch phase {
        case .active:
            // cond is `clear` when there is one, else `when`.
            if hasClear ? cond : !cond {
                phase = .idle
                return .clear
            }
            return nil
        case .idle:
            guard cond else { return nil }
            phase = .pending(since: now)
            return checkPending(now: now, forMillis: forMillis, cooldown: cooldown)
        case .pending:
            guard cond else { phase = .idle; return nil }
            return checkPending(now: now, forMillis: forMillis, cooldown: cooldown)
        }
    }

    private mutating func checkPending(now: Int64, forMillis: Int64, cooldown: Int64) -> Action? {
        guard case .pending(let since) = phase else { return nil }
        guard now - since >= forMillis else { return nil }
        if let last = lastFired, now - last < cooldown { return nil }
        phase = .active
        lastFired = now
        return .fire
    }
}

struct TriggerRuntime: Sendable {
    var machine = TriggerMachine()
    var stats = RuleStats()
}

struct EngineState: Sendable {
    var rules: [RuleRuntime]
    var triggers: [TriggerRuntime]
    var derivedStats: [RuleStats]
    var latest: [String: Value] = [:]
    var matchCache: [String: [Int]] = [:]
    /// Scratch evaluation stack, reused by every evaluation.
    var stack: [Value] = []
    static let matchCacheLimit = 100_000

    init(_ c: CompiledRules) {
        rules = Array(repeating: RuleRuntime(), count: c.rules.count)
        triggers = Array(repeating: TriggerRuntime(), count: c.triggers.count)
        derivedStats = Array(repeating: RuleStats(), count: c.derived.count)
    }

    mutating func matching(_ key: String, _ c: CompiledRules) -> [Int] {
        if let m = matchCache[key] { return m }
        let m = c.rules.indices.filter { c.rules[$0].matches(key) }
        if matchCache.count >= EngineState.matchCacheLimit { matchCache.removeAll(keepingCapacity: true) }
        matchCache[key] = m
        return m
    }

    // MARK: reading flow

    /// Runs `r` through the rules from index `start` on, then delivers it.
    mutating func flow(_ r0: Reading, from start: Int, derived: Bool, _ ctx: Ctx, _ out: inout RulesOutput) {
        var r = r0
        let key = r.device + "/" + r.metric
        for i in matching(key, ctx.c) where i >= start {
            var extras: [Reading] = []
            let next = apply(i, r, key: key, from: .validate, ctx, &extras)
            emit(i, extras, next, derived: derived, ctx, &out)
            guard let next else { return }
            r = next
        }
        deliver(r, key: key, derived: derived, ctx, &out)
    }

    /// Counts a rule's output and sends its extra readings through the following rules.
    mutating func emit(_ i: Int, _ extras: [Reading], _ next: Reading?, derived: Bool, _ ctx: Ctx, _ out: inout RulesOutput) {
        rules[i].stats.out += Int64(extras.count) + (next == nil ? 0 : 1)
        for e in extras { flow(e, from: i + 1, derived: derived, ctx, &out) }
    }

    mutating func deliver(_ r: Reading, key: String, derived: Bool, _ ctx: Ctx, _ out: inout RulesOutput) {
        out.readings.append(r)
        latest[key] = r.value
        if !derived, let ds = ctx.c.derivedByInput[key] {
            for d in ds { computeDerived(d, at: r.time, ctx, &out) }
        }
        if let ts = ctx.c.triggersByStream[key] {
            for t in ts { evaluateTrigger(t, ctx, &out) }
        }
    }

    mutating func computeDerived(_ d: Int, at time: Int64, _ ctx: Ctx, _ out: inout RulesOutput) {
        let cd = ctx.c.derived[d]
        // Wait quietly until every input has a value.
        guard cd.program.streams.allSatisfy({ latest[$0] != nil }) else { return }
        derivedStats[d].in += 1
        do {
            let v = try cd.program.run(EvalScope(reading: nil, now: time, latest: latest), stack: &stack)
            derivedStats[d].out += 1
            flow(Reading(device: cd.spec.device, metric: cd.spec.metric, time: time, value: v), from: 0, derived: true, ctx, &out)
        } catch {
            derivedStats[d].errors += 1
            derivedStats[d].lastError = error.description
        }
    }

    /// Handles an evaluation error of rule `i`; returns whether the reading goes on.
    mutating func failed(_ i: Int, _ e: EvalError, _ ctx: Ctx) -> Bool {
        rules[i].stats.errors += 1
        rules[i].stats.lastError = e.description
        if ctx.c.rules[i].spec.onError == .drop {
            rules[i].stats.dropped += 1
            return false
        }
        return true
    }

    /// Applies rule `i` to `r` from `stage` on. Returns the reading that goes on (nil: consumed);
    /// appends extra readings (flags, aggregates) to `extras`.
    mutating func apply(_ i: Int, _ r0: Reading, key: String, from stage: Stage, _ ctx: Ctx, _ extras: inout [Reading]) -> Reading? {
        let rule = ctx.c.rules[i]
        var r = r0
        if stage <= .validate, let fn = rule.function, fn.mode == .reading {
            rules[i].stats.in += 1
            guard let impl = ctx.fns[i] else {
                rules[i].stats.errors += 1
                rules[i].stats.lastError = "function \"\(fn.name)\" is not loaded"
                return r
            }
            switch impl.apply(r) {
            case .keep(let more):
                extras.append(contentsOf: more)
                return r
            case .replace(let out):
                if out.isEmpty { rules[i].stats.dropped += 1 }
                // A map (one reading of the same stream) goes on in place of the input.
                if out.count == 1, out[0].device == r.device, out[0].metric == r.metric { return out[0] }
                extras.append(contentsOf: out)
                return nil
            case .failed(let message, let passOn):
                rules[i].stats.errors += 1
                rules[i].stats.lastError = message
                if passOn { return r }
                rules[i].stats.dropped += 1
                return nil
            }
        }
        if stage <= .validate {
            rules[i].stats.in += 1
            if let p = rule.dropIf {
                do {
                    if try cond(p, r, ctx) {
                        rules[i].stats.dropped += 1
                        return nil
                    }
                } catch {
                    if !failed(i, error, ctx) { return nil }
                }
            }
            if let p = rule.flagIf {
                do {
                    if try cond(p, r, ctx) {
                        extras.append(Reading(device: r.device, metric: r.metric + ".flag", time: r.time, value: .bool(true)))
                    }
                } catch {
                    if !failed(i, error, ctx) { return nil }
                }
            }
        }
        if stage <= .transform {
            if rule.spec.scale != nil || rule.spec.offset != nil || rule.conversion != nil {
                if case .number(var v) = r.value {
                    if let s = rule.spec.scale { v *= s }
                    if let o = rule.spec.offset { v += o }
                    if let c = rule.conversion { v = c.apply(v) }
                    if v.isFinite {
                        r.value = .number(v)
                    } else if !failed(i, EvalError(kind: .nonFinite, span: rule.spec.span, message: "scale/offset/convert gave a non-finite number"), ctx) {
                        return nil
                    }
                } else if !failed(i, EvalError(kind: .typeMismatch, span: rule.spec.span, message: "scale/offset/convert needs a number, got \(Program.typeName(r.value)) \"\(r.value)\""), ctx) {
                    return nil
                }
            }
            if let p = rule.value {
                do {
                    r.value = try p.run(EvalScope(reading: r, now: ctx.now, latest: latest), stack: &stack)
                } catch {
                    if !failed(i, error, ctx) { return nil }
                }
            }
        }
        if !rule.stateful { return r }
        if rules[i].streams[key] == nil {
            rules[i].streams[key] = StreamState(device: r.device, metric: r.metric,
                                                window: rule.window.map { WindowBuffer(config: $0, tolerance: rule.spec.lateToleranceMillis, keepTimes: rule.function != nil) })
        }
        if stage <= .report, rule.reportOnChange {
            let send: Bool
            do {
                var st = rules[i].streams[key]!
                let changed: Bool
                switch (st.lastSent, r.value) {
                case (nil, _): changed = true
                case (.number(let a)?, .number(let b)): changed = Swift.abs(b - a) > (rule.spec.deadband ?? 0)
                case (let last?, let v): changed = last != v
                }
                let heartbeatDue = rule.spec.heartbeatMillis.map { ctx.now - st.lastSentAt >= $0 } ?? false
                if changed || heartbeatDue {
                    if st.held != nil { rules[i].stats.suppressed += 1 }   // superseded, never sent
                    st.lastSent = r.value
                    st.lastSentAt = ctx.now
                    st.held = nil
                    send = true
                } else {
                    // Without a heartbeat the reading is gone; with one, it is held until the
                    // heartbeat is due (a newer held reading replaces an older one).
                    if rule.spec.heartbeatMillis == nil || st.held != nil { rules[i].stats.suppressed += 1 }
                    st.held = rule.spec.heartbeatMillis == nil ? nil : r
                    send = false
                }
                rules[i].streams[key] = st
            }
            if !send { return nil }
        }
        if stage <= .rateLimit, let interval = rule.spec.minIntervalMillis {
            // Times come from payloads: subtract without trapping (a reading far before the last
            // one is "too soon", far after it is not).
            if let last = rules[i].streams[key]!.lastPass,
               case let (gap, overflow) = r.time.subtractingReportingOverflow(last), overflow ? r.time < last : gap < interval {
                rules[i].stats.suppressed += 1
                return nil
            }
            rules[i].streams[key]!.lastPass = r.time
        }
        if rule.window != nil {
            guard case .number(let v) = r.value else {
                // A window function's raw readings go on: a string or a bool is not its business.
                if rule.function != nil && rule.spec.keepRaw { return r }
                let e = EvalError(kind: .typeMismatch, span: rule.spec.span, message: "a window aggregates numbers, got \(Program.typeName(r.value)) \"\(r.value)\"")
                return failed(i, e, ctx) ? r : nil
            }
            guard let closed = rules[i].streams[key]!.window!.add(Sample(t: r.time, v: v), now: ctx.now) else {
                rules[i].stats.late += 1
                rules[i].stats.dropped += 1
                return nil
            }
            windowOutput(i, closed, device: r.device, metric: r.metric, ctx, into: &extras)
            return rule.spec.keepRaw ? r : nil
        }
        return r
    }

    /// What closed windows of rule `i` emit: aggregates, or what its window function returns.
    mutating func windowOutput(_ i: Int, _ closed: [ClosedWindow], device: String, metric: String, _ ctx: Ctx, into extras: inout [Reading]) {
        let rule = ctx.c.rules[i]
        guard let fn = rule.function else {
            aggregates(closed, device: device, metric: metric, rule.spec.emit, into: &extras)
            return
        }
        for w in closed where !w.samples.isEmpty {
            guard let impl = ctx.fns[i] else {
                rules[i].stats.errors += 1
                rules[i].stats.lastError = "function \"\(fn.name)\" is not loaded"
                continue
            }
            let samples = w.samples.map { WindowSample(time: $0.t, value: $0.v) }
            switch impl.window(device: device, metric: metric, end: w.time, samples: samples) {
            case .keep(let out), .replace(let out): extras.append(contentsOf: out)
            case .failed(let message, _):
                rules[i].stats.errors += 1
                rules[i].stats.lastError = message
            }
        }
    }

    func aggregates(_ closed: [ClosedWindow], device: String, metric: String, _ emit: [Aggregate], into extras: inout [Reading]) {
        for w in closed where !w.values.isEmpty {
            let vals = AggregateMath.compute(emit, w.values)
            for (a, v) in zip(emit, vals) {
                extras.append(Reading(device: device, metric: metric + "." + a.rawValue, time: w.time, value: .number(v)))
            }
        }
    }

    mutating func cond(_ p: Program, _ r: Reading, _ ctx: Ctx) throws(EvalError) -> Bool {
        let v = try p.run(EvalScope(reading: r, now: ctx.now, latest: latest), stack: &stack)
        if case .bool(let b) = v { return b }
        throw EvalError(kind: .typeMismatch, span: p.spans.last ?? SourceSpan(line: 0, column: 0),
                        message: "condition gave \(Program.typeName(v)) \"\(v)\" instead of true/false")
    }

    // MARK: triggers

    mutating func evaluateTrigger(_ t: Int, _ ctx: Ctx, _ out: inout RulesOutput) {
        let ct = ctx.c.triggers[t]
        let spec = ct.spec
        let useClear = triggers[t].machine.wantsClear(hasClear: ct.clear != nil)
        let program = useClear ? ct.clear! : ct.when
        triggers[t].stats.in += 1
        var result: Bool?
        do {
            let v = try program.run(EvalScope(reading: nil, now: ctx.now, latest: latest), stack: &stack)
            if case .bool(let b) = v { result = b } else {
                triggers[t].stats.errors += 1
                triggers[t].stats.lastError = "condition gave \(Program.typeName(v)) \"\(v)\" instead of true/false"
            }
        } catch {
            if error.kind != .missingStream {
                triggers[t].stats.errors += 1
                triggers[t].stats.lastError = error.description
            }
        }
        guard let action = triggers[t].machine.step(result, hasClear: ct.clear != nil, now: ctx.now,
                                                    forMillis: spec.forMillis, cooldown: spec.cooldownMillis) else { return }
        var values: [String: Value] = [:]
        for s in ct.streams { values[s] = latest[s] }
        switch action {
        case .fire:
            triggers[t].stats.out += 1
            if let a = spec.actuator, let v = spec.commandValue {
                out.commands.append(TriggeredCommand(trigger: spec.name, actuator: a, value: v, at: ctx.now))
            }
            if spec.event != nil || spec.actuator == nil {
                out.events.append(RuleEvent(trigger: spec.name, kind: .fired, at: ctx.now, detail: spec.event ?? spec.when.text, values: values))
            }
        case .clear:
            if spec.event != nil {
                out.events.append(RuleEvent(trigger: spec.name, kind: .cleared, at: ctx.now, detail: spec.event ?? "", values: values))
            }
        }
    }

    // MARK: time

    mutating func tick(_ ctx: Ctx, _ out: inout RulesOutput) {
        for i in ctx.c.rules.indices {
            let rule = ctx.c.rules[i]
            guard rule.stateful, !rules[i].streams.isEmpty else { continue }
            let hb = rule.spec.heartbeatMillis
            var due: [String] = []
            for (key, st) in rules[i].streams {
                let heartbeat = hb.map { st.held != nil && ctx.now - st.lastSentAt >= $0 } ?? false
                if heartbeat || (st.window?.due(now: ctx.now) ?? false) { due.append(key) }
            }
            if due.isEmpty { continue }
            due.sort()
            for key in due {
                var extras: [Reading] = []
                var next: Reading?
                if let hb, var st = rules[i].streams[key], let held = st.held, ctx.now - st.lastSentAt >= hb {
                    st.held = nil
                    st.lastSent = held.value
                    st.lastSentAt = ctx.now
                    rules[i].streams[key] = st
                    next = apply(i, held, key: key, from: .rateLimit, ctx, &extras)
                }
                if let closed = rules[i].streams[key]?.window?.advance(now: ctx.now), let st = rules[i].streams[key] {
                    windowOutput(i, closed, device: st.device, metric: st.metric, ctx, into: &extras)
                }
                emit(i, extras, next, derived: false, ctx, &out)
                if let next { flow(next, from: i + 1, derived: false, ctx, &out) }
            }
        }
        for t in ctx.c.triggers.indices { evaluateTrigger(t, ctx, &out) }
    }

    mutating func flush(_ ctx: Ctx, _ out: inout RulesOutput) {
        for i in ctx.c.rules.indices where ctx.c.rules[i].window != nil {
            for key in rules[i].streams.keys.sorted() {
                guard var st = rules[i].streams[key], st.window != nil else { continue }
                let closed = st.window!.flush()
                if st.held != nil { rules[i].stats.suppressed += 1; st.held = nil }
                rules[i].streams[key] = st
                var extras: [Reading] = []
                windowOutput(i, closed, device: st.device, metric: st.metric, ctx, into: &extras)
                emit(i, extras, nil, derived: false, ctx, &out)
            }
        }
    }
}
