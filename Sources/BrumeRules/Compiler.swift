import BrumeCore

/// A linear unit conversion `(v + pre) * mul + post`.
public struct UnitConversion: Sendable, Hashable {
    public let name: String
    let pre: Double
    let mul: Double
    let post: Double

    public func apply(_ v: Double) -> Double { (v + pre) * mul + post }

    /// The supported conversions, by config name.
    public static let table: [String: UnitConversion] = {
        var t: [String: UnitConversion] = [:]
        func add(_ name: String, pre: Double = 0, mul: Double, post: Double = 0) {
            t[name] = UnitConversion(name: name, pre: pre, mul: mul, post: post)
        }
        add("c_to_f", mul: 1.8, post: 32)
        add("f_to_c", pre: -32, mul: 5.0 / 9.0)
        add("c_to_k", mul: 1, post: 273.15)
        add("k_to_c", mul: 1, post: -273.15)
        add("f_to_k", pre: -32, mul: 5.0 / 9.0, post: 273.15)
        add("k_to_f", pre: -273.15, mul: 1.8, post: 32)
        add("pa_to_hpa", mul: 0.01)
        add("hpa_to_pa", mul: 100)
        add("pa_to_kpa", mul: 0.001)
        add("kpa_to_pa", mul: 1000)
        add("bar_to_kpa", mul: 100)
        add("kpa_to_bar", mul: 0.01)
        add("psi_to_kpa", mul: 6.894757293168361)
        add("kpa_to_psi", mul: 1 / 6.894757293168361)
        add("bar_to_psi", mul: 14.503773773020924)
        add("psi_to_bar", mul: 1 / 14.503773773020924)
        add("m_to_ft", mul: 1 / 0.3048)
        add("ft_to_m", mul: 0.3048)
        add("mm_to_in", mul: 1 / 25.4)
        add("in_to_mm", mul: 25.4)
        add("mps_to_kmh", mul: 3.6)
        add("kmh_to_mps", mul: 1 / 3.6)
        add("mps_to_knots", mul: 3600.0 / 1852.0)
        add("knots_to_mps", mul: 1852.0 / 3600.0)
        add("l_to_gal", mul: 1 / 3.785411784)
        add("gal_to_l", mul: 3.785411784)
        add("wh_to_kwh", mul: 0.001)
        add("kwh_to_wh", mul: 1000)
        add("w_to_kw", mul: 0.001)
        add("kw_to_w", mul: 1000)
        add("ms_to_s", mul: 0.001)
        add("s_to_ms", mul: 1000)
        add("ratio_to_percent", mul: 100)
        add("percent_to_ratio", mul: 0.01)
        return t
    }()

    public static var names: [String] { table.keys.sorted() }
}

final class CompiledRule: Sendable {
    let spec: RuleSpec
    let name: String
    let globs: [Glob]
    let dropIf: Program?
    let flagIf: Program?
    let conversion: UnitConversion?
    let value: Program?
    let window: WindowBuffer.Config?
    let reportOnChange: Bool
    let stateful: Bool
    /// The user function the rule runs (`spec.function`), bound by the engine.
    var function: FunctionRef? { spec.function }

    init(spec: RuleSpec, name: String, globs: [Glob], dropIf: Program?, flagIf: Program?, conversion: UnitConversion?,
         value: Program?, window: WindowBuffer.Config?) {
        self.spec = spec
        self.name = name
        self.globs = globs
        self.dropIf = dropIf
        self.flagIf = flagIf
        self.conversion = conversion
        self.value = value
        self.window = window
        reportOnChange = spec.deadband != nil || spec.heartbeatMillis != nil
        stateful = reportOnChange || spec.minIntervalMillis != nil || window != nil
    }

    func matches(_ key: String) -> Bool { globs.contains { $0.matches(key) } }
}

final class CompiledDerived: Sendable {
    let spec: DerivedSpec
    let key: String
    let program: Program
    init(spec: DerivedSpec, key: String, program: Program) {
        self.spec = spec
        self.key = key
        self.program = program
    }
}

final class CompiledTrigger: Sendable {
    let spec: TriggerSpec
    let when: Program
    let clear: Program?
    let streams: [String]
    init(spec: TriggerSpec, when: Program, clear: Program?, streams: [String]) {
        self.spec = spec
        self.when = when
        self.clear = clear
        self.streams = streams
    }
}

/// Rules, derived metrics and triggers, checked and compiled; give them to a `RulesEngine`.
public struct CompiledRules: Sendable {
    let rules: [CompiledRule]
    let derived: [CompiledDerived]
    let triggers: [CompiledTrigger]
    /// Input stream → derived metrics that read it.
    let derivedByInput: [String: [Int]]
    /// Stream → triggers that read it.
    let triggersByStream: [String: [Int]]

    /// Statistics keys of the rules, in declared order (`name` or `rule#N`).
    public var ruleNames: [String] { rules.map(\.name) }
    public var triggerNames: [String] { triggers.map(\.spec.name) }
    /// Every `device/metric` stream an expression reads (triggers, derived metrics, rules).
    public var referencedStreams: Set<String> {
        var s = Set<String>()
        for r in rules { for p in [r.dropIf, r.flagIf, r.value] { if let p { s.formUnion(p.streams) } } }
        for d in derived { s.formUnion(d.program.streams) }
        for t in triggers { s.formUnion(t.streams) }
        return s
    }
}

public enum RulesCompiler {
    /// Largest number of windows one reading may fall in (hopping: size / hop).
    public static let maxWindowsPerReading: Int64 = 1000

    /// What is wrong with a window's sizes, if anything (aggregates aside).
    static func windowProblem(_ kind: WindowSpec.Kind) -> String? {
        switch kind {
        case .tumbling(let s), .sliding(let s):
            if s <= 0 { return "window size must be longer than 0" }
        case .hopping(let s, let h):
            if s <= 0 { return "window size must be longer than 0" }
            if h <= 0 { return "window hop must be longer than 0" }
            if h > s { return "window hop (\(h) ms) is longer than its size (\(s) ms): readings between windows would be lost; use hop <= size" }
            if (s - 1) / h + 1 > maxWindowsPerReading { return "window hop is too small for its size: each reading would be in more than \(maxWindowsPerReading) windows" }
        case .session(let g):
            if g <= 0 { return "session gap must be longer than 0" }
        case .count(let n):
            if n <= 0 { return "count window size must be at least 1" }
        }
        return nil
    }

    /// Checks and compiles everything, reporting every problem at once, in file order.
    public static func compile(rules: [RuleSpec], derived: [DerivedSpec], triggers: [TriggerSpec]) -> Result<CompiledRules, RuleDiagnostics> {
        var diags: [RuleDiagnostic] = []
        var outRules: [CompiledRule] = []
        var names: [String: SourceSpan] = [:]

        let functionSteps = rules.prefix { $0.function != nil }.count
        for (position, spec) in rules.enumerated() {
            // `rule#N` counts the [[rule]]s only (the function steps come first).
            let idx = position - functionSteps
            if let fn = spec.function {
                // Made by the config layer from a [[function]], which checked its keys.
                let name = "function:\(fn.name)"
                func err(_ m: String) { diags.append(RuleDiagnostic(span: spec.span, message: "function \"\(fn.name)\": \(m)")) }
                if let prev = names[name] { err("defined twice (first at \(prev))") }
                names[name] = spec.span
                var globs: [Glob] = []
                if spec.match.isEmpty { err("match is empty: give at least one \"device/metric\" pattern, e.g. \"pump-*/flow\"") }
                for m in spec.match {
                    switch Glob.parse(m) {
                    case .success(let g): globs.append(g)
                    case .failure(let e): err("match pattern \"\(m)\" \(e.reason)")
                    }
                }
                var window: WindowBuffer.Config?
                switch (fn.mode, spec.window) {
                case (.window, nil): err("run = \"window\" needs a window, e.g. window = { kind = \"tumbling\", size = \"1m\" }")
                case (.window, let w?):
                    if let problem = windowProblem(w.kind) { err(problem) } else { window = WindowBuffer.Config(w.kind) }
                case (.reading, _?): err("a window needs run = \"window\"")
                case (.reading, nil): break
                }
                outRules.append(CompiledRule(spec: spec, name: name, globs: globs, dropIf: nil, flagIf: nil,
                                             conversion: nil, value: nil, window: window))
                continue
            }
            let name = spec.name ?? "rule#\(idx + 1)"
            let label = spec.name.map { "rule \"\($0)\"" } ?? "rule #\(idx + 1)"
            func err(_ m: String) { diags.append(RuleDiagnostic(span: spec.span, message: "\(label): \(m)")) }
            if let name = spec.name {
                if name.isEmpty { err("name is empty") }
                if let prev = names[name] { err("duplicate rule name (first used at \(prev))") }
                names[name] = spec.span
            }
            var globs: [Glob] = []
            if spec.match.isEmpty { err("match is empty: give at least one \"device/metric\" pattern, e.g. \"*/temperature\"") }
            for m in spec.match {
                switch Glob.parse(m) {
                case .success(let g): globs.append(g)
                case .failure(let e): err("match pattern \"\(m)\" \(e.reason)")
                }
            }
            let dropIf = spec.dropIf.flatMap { condition($0, "drop_if", .rule, &diags) }
            let flagIf = spec.flagIf.flatMap { condition($0, "flag_if", .rule, &diags) }
            let value = spec.value.flatMap { ExprCompiler.compile($0, env: .rule, diags: &diags) }
            if let s = spec.scale, !s.isFinite { err("scale must be a finite number") }
            if let o = spec.offset, !o.isFinite { err("offset must be a finite number") }
            var conversion: UnitConversion?
            if let c = spec.convert {
                if let conv = UnitConversion.table[c] { conversion = conv } else {
                    var m = "unknown conversion \"\(c)\""
                    if let s = suggest(c, among: UnitConversion.names) { m += " (did you mean \"\(s)\"?)" }
                    else { m += "; known: \(UnitConversion.names.joined(separator: ", "))" }
                    err(m)
                }
            }
            if let d = spec.deadband, !(d >= 0 && d.isFinite) { err("deadband must be 0 or more") }
            if let h = spec.heartbeatMillis, h <= 0 { err("heartbeat must be longer than 0") }
            if let m = spec.minIntervalMillis, m <= 0 { err("min_interval must be longer than 0") }
            if spec.lateToleranceMillis < 0 { err("late_tolerance must be 0 or more") }
            var window: WindowBuffer.Config?
            if let w = spec.window {
                var ok = true
                switch w.kind {
                case .tumbling(let s), .sliding(let s):
                    if s <= 0 { err("window size must be longer than 0"); ok = false }
                case .hopping(let s, let h):
                    if s <= 0 { err("window size must be longer than 0"); ok = false }
                    if h <= 0 { err("window hop must be longer than 0"); ok = false }
                    else if s > 0 && h > s { err("window hop (\(h) ms) is longer than its size (\(s) ms): readings between windows would be lost; use hop <= size"); ok = false }
                    else if s > 0 && (s - 1) / h + 1 > maxWindowsPerReading {
                        err("window hop is too small for its size: each reading would be in more than \(maxWindowsPerReading) windows"); ok = false
                    }
                case .session(let g):
                    if g <= 0 { err("session gap must be longer than 0"); ok = false }
                case .count(let n):
                    if n <= 0 { err("count window size must be at least 1"); ok = false }
                    else if n == 1 {
                        let pct = spec.emit.filter { [.p50, .p90, .p99, .stddev].contains($0) }
                        if !pct.isEmpty {
                            err("\(pct.map(\.rawValue).joined(separator: ", ")) over a count window of 1 is meaningless; use a larger window")
                        }
                    }
                }
                if spec.emit.isEmpty { err("window has nothing to emit: add emit = [\"avg\", ...] (one of \(Aggregate.allCases.map(\.rawValue).joined(separator: ", ")))") }
                if Set(spec.emit).count != spec.emit.count { err("emit lists an aggregate twice") }
                if ok { window = WindowBuffer.Config(w.kind) }
            } else {
                if !spec.emit.isEmpty { err("emit needs a window, e.g. window = { kind = \"tumbling\", size = \"1m\" }") }
                if spec.keepRaw { err("keep_raw needs a window") }
                if spec.lateToleranceMillis != 0 { err("late_tolerance needs a window") }
            }
            outRules.append(CompiledRule(spec: spec, name: name, globs: globs, dropIf: dropIf, flagIf: flagIf,
                                         conversion: conversion, value: value, window: window))
        }

        var outDerived: [CompiledDerived] = []
        var derivedKeys: [String: SourceSpan] = [:]
        for d in derived {
            let key = "\(d.device)/\(d.metric)"
            func err(_ m: String) { diags.append(RuleDiagnostic(span: d.span, message: "derived \"\(key)\": \(m)")) }
            var ok = true
            if d.device.isEmpty || d.metric.isEmpty || d.device.contains("/") || d.metric.contains("/") {
                err("device and metric must be non-empty and without \"/\""); ok = false
            }
            if let prev = derivedKeys[key] { err("defined twice (first at \(prev))") }
            derivedKeys[key] = d.span
            var env = ExprEnv(bindings: ["time": .time])
            env.unavailable = [
                "value": "a derived metric reads the streams named in its inputs",
                "device": "a derived metric reads the streams named in its inputs",
                "metric": "a derived metric reads the streams named in its inputs",
            ]
            for (v, path) in d.inputs.sorted(by: { $0.key < $1.key }) {
                let parts = path.split(separator: "/", omittingEmptySubsequences: false)
                if !isIdentifier(v) || ["time", "true", "false", "and", "or", "not"].contains(v) || ExprCompiler.functionNames.contains(v) {
                    err("input name \"\(v)\" must be a plain name (letters, digits, _) that is not a keyword or function"); ok = false
                } else if parts.count != 2 || parts.contains(where: \.isEmpty) {
                    err("input \"\(v)\" = \"\(path)\" must name one stream as \"device/metric\""); ok = false
                    env.bindings[v] = .stream(path)   // keep compiling the expression without a cascade
                } else if path == key {
                    err("input \"\(v)\" reads the derived metric itself"); ok = false
                    env.bindings[v] = .stream(path)
                } else {
                    env.bindings[v] = .stream(path)
                }
            }
            if let p = ExprCompiler.compile(d.expr, env: env, diags: &diags) {
                if p.streams.isEmpty { err("the expression reads no input stream, so it would never be computed"); ok = false }
                if p.streams.contains(key) { err("the expression reads the derived metric itself"); ok = false }
                if ok { outDerived.append(CompiledDerived(spec: d, key: key, program: p)) }
            }
        }

        var outTriggers: [CompiledTrigger] = []
        var triggerNames: [String: SourceSpan] = [:]
        for t in triggers {
            func err(_ m: String) { diags.append(RuleDiagnostic(span: t.span, message: "trigger \"\(t.name)\": \(m)")) }
            if t.name.isEmpty { err("name is empty") }
            if let prev = triggerNames[t.name] { err("duplicate trigger name (first used at \(prev))") }
            triggerNames[t.name] = t.span
            let when = condition(t.when, "when", .trigger, &diags)
            let clear = t.clear.flatMap { condition($0, "clear", .trigger, &diags) }
            if t.forMillis < 0 { err("for must be 0 or more") }
            if t.cooldownMillis < 0 { err("cooldown must be 0 or more") }
            if t.actuator == nil && t.event == nil { err("does nothing: set an actuator command and/or an event") }
            if t.actuator != nil && t.commandValue == nil { err("actuator \"\(t.actuator!)\" needs a value to send") }
            if t.actuator == nil && t.commandValue != nil { err("a command value needs an actuator") }
            if let when, when.streams.isEmpty { diags.append(RuleDiagnostic(span: t.when.span, message: "trigger \"\(t.name)\": when reads no stream; name one as device/metric, e.g. boiler/temperature > 90")) }
            if let when, t.clear == nil || clear != nil, !when.streams.isEmpty, t.forMillis >= 0, t.cooldownMillis >= 0 {
                let streams = when.streams.union(clear?.streams ?? [])
                outTriggers.append(CompiledTrigger(spec: t, when: when, clear: clear, streams: streams.sorted()))
            }
        }

        if !diags.isEmpty {
            let ordered = diags.enumerated().sorted {
                ($0.element.span.line, $0.element.span.column, $0.offset) < ($1.element.span.line, $1.element.span.column, $1.offset)
            }
            return .failure(RuleDiagnostics(ordered.map(\.element)))
        }
        var byInput: [String: [Int]] = [:]
        for (i, d) in outDerived.enumerated() { for s in d.program.streams.sorted() { byInput[s, default: []].append(i) } }
        var byStream: [String: [Int]] = [:]
        for (i, t) in outTriggers.enumerated() { for s in t.streams { byStream[s, default: []].append(i) } }
        return .success(CompiledRules(rules: outRules, derived: outDerived, triggers: outTriggers,
                                      derivedByInput: byInput, triggersByStream: byStream))
    }

    private static func condition(_ e: ExprText, _ field: String, _ env: ExprEnv, _ diags: inout [RuleDiagnostic]) -> Program? {
        guard let p = ExprCompiler.compile(e, env: env, diags: &diags) else { return nil }
        if p.type != .bool && p.type != .dynamic {
            diags.append(RuleDiagnostic(span: e.span, message: "\(field) must be a condition (true or false), but this expression gives \(p.type.article)"))
            return nil
        }
        return p
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, Lexer.isIdentStart(f) else { return false }
        return s.unicodeScalars.allSatisfy(Lexer.isIdentChar)
    }
}
