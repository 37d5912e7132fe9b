import BrumeCore
import BrumeRules

#if canImport(Glibc)
import Glibc
#endif

extension Builder {
    /// `window = { kind = "tumbling", size = "1m" }` of a [[rule]] or a [[function]].
    func windowSpec(_ r: TableReader) -> WindowSpec? {
        var window: WindowSpec?
        if let w = r.subtable("window", context: "\(r.context) window") {
            let kind = w.oneOf("kind", ["tumbling", "hopping", "sliding", "session", "count"])
            let size = w.duration("size", min: 1)
            let hop = w.duration("hop", min: 1)
            let gap = w.duration("gap", min: 1)
            let n = w.int("count", range: 1...1_000_000)
            switch kind {
            case "tumbling"?: if let size { window = WindowSpec(.tumbling(sizeMillis: size)) } else { w.error(w.table.position, "a tumbling window needs size = \"1m\"") }
            case "hopping"?: if let size, let hop { window = WindowSpec(.hopping(sizeMillis: size, hopMillis: hop)) } else { w.error(w.table.position, "a hopping window needs size and hop") }
            case "sliding"?: if let size { window = WindowSpec(.sliding(sizeMillis: size)) } else { w.error(w.table.position, "a sliding window needs size") }
            case "session"?: if let gap { window = WindowSpec(.session(gapMillis: gap)) } else { w.error(w.table.position, "a session window needs gap = \"5m\"") }
            case "count"?: if let n { window = WindowSpec(.count(n: Int(n))) } else { w.error(w.table.position, "a count window needs count = N") }
            default: if w.table["kind"] == nil { w.error(w.table.position, "missing required key \"kind\"") }
            }
            w.finish()
        }
        return window
    }

    /// `functionRules`: the steps of the [[function]]s that run in the rules (ahead of the [[rule]]s).
    func buildRules(root: TOMLTable, top: TableReader, actuators: [ActuatorConfig], functionRules: [RuleSpec] = []) -> RulesConfig {
        var cfg = RulesConfig()
        for (t, r) in tables(top, "rule") {
            defer { r.finish() }
            let name = r.string("name")
            var match: [String] = []
            if let m = r.stringArray("match") { match = m.map(\.0) } else { r.error(t.position, "missing required key \"match\" (e.g. match = \"*/temperature\")") }
            let window = windowSpec(r)
            var emit: [Aggregate] = []
            if let es = r.stringArray("emit") {
                for (e, pos) in es {
                    if let a = Aggregate(rawValue: e) { emit.append(a) } else {
                        var msg = "unknown aggregate \"\(e)\" (one of \(quoted(Aggregate.allCases.map(\.rawValue))))"
                        if let sug = suggestion(for: e, among: Aggregate.allCases.map(\.rawValue)) { msg = "unknown aggregate \"\(e)\" (did you mean \"\(sug)\"?)" }
                        r.error(pos, msg)
                    }
                }
            }
            func number(_ key: String) -> Double? {
                guard let n = r.node(key) else { return nil }
                switch n.value {
                case .integer(let i): return Double(i)
                case .float(let d): return d
                default: r.error(n.position, "\"\(key)\" must be a number"); return nil
                }
            }
            let spec = RuleSpec(
                name: name, match: match, span: span(t.position),
                dropIf: exprText(r, "drop_if"), flagIf: exprText(r, "flag_if"),
                scale: number("scale"), offset: number("offset"), convert: r.string("convert"), value: exprText(r, "value"),
                deadband: number("deadband"), heartbeatMillis: r.duration("heartbeat", min: 1), minIntervalMillis: r.duration("min_interval", min: 1),
                window: window, emit: emit, keepRaw: r.bool("keep_raw") ?? false,
                lateToleranceMillis: r.duration("late_tolerance") ?? 0,
                onError: ErrorPolicy(rawValue: r.oneOf("on_error", ["drop", "pass"]) ?? "drop") ?? .drop)
            cfg.rules.append(spec)
        }
        for (t, r) in tables(top, "derived") {
            defer { r.finish() }
            let device = r.string("device", required: true)
            let metric = r.string("metric", required: true)
            var inputs: [String: String] = [:]
            if let it = r.subtable("inputs", context: "\(r.context) inputs") {
                for e in it.table.entries {
                    if case .string(let s) = e.node.value { inputs[e.key] = s } else { it.error(e.node.position, "input \"\(e.key)\" must be a \"device/metric\" string") }
                }
                it.markAllKnown()
                it.finish()
            } else { r.error(t.position, "missing required key \"inputs\" (e.g. inputs = { t = \"greenhouse/temperature\", rh = \"greenhouse/humidity\" })") }
            let value = exprText(r, "value")
            if value == nil && t["value"] == nil { r.error(t.position, "missing required key \"value\" (an expression of the inputs, e.g. \"dewpoint(t, rh)\")") }
            if let device, let metric, let value {
                cfg.derived.append(DerivedSpec(device: device, metric: metric, inputs: inputs, expr: value, span: span(t.position)))
            }
        }
        for (i, (t, r)) in tables(top, "trigger").enumerated() {
            defer { r.finish() }
            let name = r.string("name") ?? "trigger#\(i + 1)"
            let when = exprText(r, "when")
            if when == nil && t["when"] == nil { r.error(t.position, "missing required key \"when\" (e.g. when = \"boiler/temperature > 90\")") }
            var actuator: String?
            var value: Value?
            if let th = r.subtable("then", context: "\(r.context) then") {
                actuator = th.string("actuator", required: true)
                if let n = th.node("value") {
                    switch n.value {
                    case .string(let s): value = .string(s)
                    case .integer(let x): value = .number(Double(x))
                    case .float(let d): value = .number(d)
                    case .bool(let b): value = .bool(b)
                    default: th.error(n.position, "\"value\" must be a string, a number or a boolean")
                    }
                } else { th.error(th.table.position, "missing required key \"value\"") }
                if let a = actuator {
                    if let act = actuators.first(where: { $0.name == a }) {
                        if let v = value, let why = act.problem(with: v) { th.error(th.position(of: "value"), "\"value\" is not acceptable for actuator \"\(a)\": \(why)") }
                    } else {
                        var msg = "\"actuator\" names no declared actuator: \"\(a)\""
                        if let sug = suggestion(for: a, among: actuators.map(\.name)) { msg += " (did you mean \"\(sug)\"?)" }
                        th.error(th.position(of: "actuator"), msg)
                    }
                }
                th.finish()
            }
            let event = r.string("event")
            if t["then"] == nil && event == nil { r.error(t.position, "a trigger needs then = { actuator = \"...\", value = ... } and/or event = \"...\"") }
            let clear = exprText(r, "clear")
            let forMillis = r.duration("for") ?? 0
            let cooldown = r.duration("cooldown") ?? 0
            if let when {
                cfg.triggers.append(TriggerSpec(name: name, when: when, clear: clear, forMillis: forMillis,
                                                cooldownMillis: cooldown, actuator: actuator, commandValue: value, event: event, span: span(t.position)))
            }
        }
        cfg.rules.insert(contentsOf: functionRules, at: 0)
        if cfg.isEmpty { return cfg }
        switch RulesCompiler.compile(rules: cfg.rules, derived: cfg.derived, triggers: cfg.triggers) {
        case .success(let c): cfg.compiled = c
        case .failure(let diags):
            for d in diags.all { sink.error(SourcePosition(line: d.span.line, column: d.span.column, file: d.span.file), d.message) }
        }
        return cfg
    }
}
