import BrumeCore
import BrumeRules

#if canImport(Glibc)
import Glibc
#endif

/// Why a configuration could not be used.
public enum ConfigFailure: Error, Sendable {
    /// The file could not be read (exit code 2 for `brume check`).
    case unreadable(path: String, reason: String)
    /// The file was read; these are every problem found (exit code 1).
    case invalid([Diagnostic])
}

/// gateway.toml → `GatewayConfig`. Pure: reads the text, opens nothing else
/// (files named in the config, like password_file, are checked at start).
public enum ConfigLoader {
    public static func load(path: String) -> Result<(GatewayConfig, [Diagnostic]), ConfigFailure> {
        switch readFile(path) {
        case .failure(let reason): return .failure(.unreadable(path: path, reason: reason.description))
        case .success(let text): return parse(text: text, file: path)
        }
    }

    /// Returns the configuration and its warnings, or every error at once.
    public static func parse(text: String, file: String) -> Result<(GatewayConfig, [Diagnostic]), ConfigFailure> {
        let sink = DiagnosticSink(file: file)
        let root: TOMLTable
        do {
            root = try TOMLParser.parse(text)
        } catch {
            return .failure(.invalid([Diagnostic(file: file, position: error.position, message: "TOML syntax error: \(error.message)")]))
        }
        let config = Builder(sink: sink).build(root)
        let sorted = sink.items.sorted()
        if sink.hasErrors || config == nil { return .failure(.invalid(sorted)) }
        return .success((config!, sorted))
    }

    public static func readFile(_ path: String) -> Result<String, ConfigProblem> {
        guard let f = fopen(path, "rb") else { return .failure(ConfigProblem(String(cString: strerror(errno)))) }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n > 0 { bytes.append(contentsOf: buf[0..<n]) }
            if n < buf.count {
                if ferror(f) != 0 { return .failure(ConfigProblem(String(cString: strerror(errno)))) }
                break
            }
            if bytes.count > 4 << 20 { return .failure(ConfigProblem("file is larger than 4 MiB")) }
        }
        guard let s = String(validating: bytes, as: UTF8.self) else { return .failure(ConfigProblem("file is not valid UTF-8")) }
        return .success(s)
    }
}

/// Reads one TOML table, remembering which keys were used so that the rest
/// are reported as unknown (with a suggestion).
final class TableReader {
    let table: TOMLTable
    let context: String
    let sink: DiagnosticSink
    private var known: [String] = []

    init(_ table: TOMLTable, context: String, sink: DiagnosticSink) {
        self.table = table
        self.context = context
        self.sink = sink
    }

    private func note(_ key: String) { known.append(key) }

    func error(_ pos: SourcePosition, _ msg: String) { sink.error(pos, context.isEmpty ? msg : "\(context): \(msg)") }
    func warning(_ pos: SourcePosition, _ msg: String) { sink.warning(pos, context.isEmpty ? msg : "\(context): \(msg)") }

    func node(_ key: String) -> TOMLNode? {
        note(key)
        return table[key]
    }

    func position(of key: String) -> SourcePosition { table.entry(key)?.node.position ?? table.position }

    private func typeError(_ key: String, _ n: TOMLNode, expected: String) {
        error(n.position, "\"\(key)\" must be \(expected), not \(article(n.typeName))")
    }

    func string(_ key: String, required: Bool = false) -> String? {
        guard let n = node(key) else {
            if required { error(table.position, "missing required key \"\(key)\"") }
            return nil
        }
        guard case .string(let s) = n.value else { typeError(key, n, expected: "a string"); return nil }
        return s
    }

    func bool(_ key: String) -> Bool? {
        guard let n = node(key) else { return nil }
        guard case .bool(let b) = n.value else { typeError(key, n, expected: "true or false"); return nil }
        return b
    }

    func int(_ key: String, range: ClosedRange<Int64>) -> Int64? {
        guard let n = node(key) else { return nil }
        guard case .integer(let i) = n.value else { typeError(key, n, expected: "an integer"); return nil }
        guard range.contains(i) else { error(n.position, "\"\(key)\" must be between \(range.lowerBound) and \(range.upperBound), got \(i)"); return nil }
        return i
    }

    func number(_ key: String) -> Double? {
        guard let n = node(key) else { return nil }
        switch n.value {
        case .integer(let i): return Double(i)
        case .float(let d) where d.isFinite: return d
        default: typeError(key, n, expected: "a finite number"); return nil
        }
    }

    func duration(_ key: String, min: Int64 = 0) -> Int64? {
        guard let n = node(key) else { return nil }
        guard case .string(let s) = n.value else { typeError(key, n, expected: "a duration string like \"500ms\", \"1s\", \"5m\", \"7d\""); return nil }
        guard let ms = Units.parseDuration(s) else {
            error(n.position, "\"\(key)\": invalid duration \"\(s)\" (examples: \"250ms\", \"1s\", \"5m\", \"1h\", \"7d\", \"1m30s\")")
            return nil
        }
        if ms < min { error(n.position, "\"\(key)\" must be at least \"\(Units.formatDuration(min))\", got \"\(s)\""); return nil }
        // Durations feed timers and schedules (poll + interval, nanoseconds for the kernel): a
        // bound that no real setting reaches keeps every such sum far from overflow.
        if ms > TableReader.maxDuration {
            error(n.position, "\"\(key)\" must be at most \"\(Units.formatDuration(TableReader.maxDuration))\", got \"\(s)\""); return nil
        }
        return ms
    }

    /// 10 years.
    static let maxDuration: Int64 = 3650 * 86_400_000
    /// 1 PiB.
    static let maxSize: Int64 = 1 << 50

    func size(_ key: String, min: Int64 = 0) -> Int64? {
        guard let n = node(key) else { return nil }
        let bytes: Int64?
        switch n.value {
        case .integer(let i): bytes = i
        case .string(let s):
            bytes = Units.parseSize(s)
            if bytes == nil { error(n.position, "\"\(key)\": invalid size \"\(s)\" (examples: \"512KiB\", \"256MiB\", \"1GiB\", \"100MB\")"); return nil }
        default: typeError(key, n, expected: "a size like \"256MiB\""); return nil
        }
        if let b = bytes, b < min { error(n.position, "\"\(key)\" must be at least \"\(Units.formatSize(min))\", got \"\(Units.formatSize(b))\""); return nil }
        if let b = bytes, b > TableReader.maxSize {
            error(n.position, "\"\(key)\" must be at most \"\(Units.formatSize(TableReader.maxSize))\", got \"\(Units.formatSize(b))\""); return nil
        }
        return bytes
    }

    func oneOf(_ key: String, _ choices: [String]) -> String? {
        guard let n = node(key) else { return nil }
        guard case .string(let s) = n.value else { typeError(key, n, expected: "one of \(quoted(choices))"); return nil }
        guard choices.contains(s) else {
            var msg = "\"\(key)\" must be one of \(quoted(choices)), got \"\(s)\""
            if let sug = suggestion(for: s, among: choices) { msg += " (did you mean \"\(sug)\"?)" }
            error(n.position, msg)
            return nil
        }
        return s
    }

    func stringArray(_ key: String) -> [(String, SourcePosition)]? {
        guard let n = node(key) else { return nil }
        guard case .array(let items) = n.value else {
            if case .string(let s) = n.value { return [(s, n.position)] }
            typeError(key, n, expected: "an array of strings")
            return nil
        }
        var out: [(String, SourcePosition)] = []
        for it in items {
            guard case .string(let s) = it.value else { error(it.position, "\"\(key)\" must contain strings only, found \(article(it.typeName))"); continue }
            out.append((s, it.position))
        }
        return out
    }

    func subtable(_ key: String, context sub: String) -> TableReader? {
        guard let n = node(key) else { return nil }
        guard case .table(let t) = n.value else { typeError(key, n, expected: "a table"); return nil }
        return TableReader(t, context: sub, sink: sink)
    }

    /// Used when the kind is unknown: which keys are valid cannot be said.
    func markAllKnown() { known.append(contentsOf: table.entries.map(\.key)) }

    /// Reports every key not read.
    func finish() {
        for e in table.entries where !known.contains(e.key) {
            var msg = "unknown key \"\(e.key)\""
            if let s = suggestion(for: e.key, among: known) { msg += " (did you mean \"\(s)\"?)" }
            error(e.keyPosition, msg)
        }
    }
}

func article(_ typeName: String) -> String {
    let vowels: Set<Character> = ["a", "e", "i", "o", "u"]
    return (typeName.first.map { vowels.contains($0) } ?? false ? "an " : "a ") + typeName
}

func quoted(_ xs: [String]) -> String { xs.map { "\"\($0)\"" }.joined(separator: ", ") }

/// Builds the typed configuration, reporting every problem on the way.
struct Builder {
    let sink: DiagnosticSink

    func build(_ root: TOMLTable) -> GatewayConfig? {
        let top = TableReader(root, context: "", sink: sink)
        let topKeys = ["gateway", "buffer", "log", "api", "uplink", "source", "actuator", "rule", "derived", "trigger"]

        // [gateway]
        var gwID = ""
        var dataDir = "/var/lib/brume"
        if let g = top.subtable("gateway", context: "[gateway]") {
            if let id = g.string("id", required: true) {
                if id.isEmpty || !id.unicodeScalars.allSatisfy(isNameScalar) {
                    g.error(g.position(of: "id"), "\"id\" must be non-empty and use only letters, digits, '.', '_' and '-', got \"\(id)\"")
                } else { gwID = id }
            }
            if let d = g.string("data_dir") {
                if d.isEmpty { g.error(g.position(of: "data_dir"), "\"data_dir\" must not be empty") } else { dataDir = d }
            }
            g.finish()
        } else {
            sink.error(root.position, "missing [gateway] table (it needs at least id = \"...\")")
        }

        // [buffer]
        var buffer = BufferSection(maxBytes: 256 << 20, maxAgeMillis: 7 * 86_400_000, whenFull: "drop_oldest", commitIntervalMillis: 50, synchronous: "full")
        if let b = top.subtable("buffer", context: "[buffer]") {
            if let v = b.size("max_bytes", min: 64 << 10) { buffer.maxBytes = v }
            if let v = b.duration("max_age", min: 1000) { buffer.maxAgeMillis = v }
            if let v = b.oneOf("when_full", ["drop_oldest", "drop_newest"]) { buffer.whenFull = v }
            if let v = b.duration("commit_interval", min: 1) {
                if v > 10_000 { b.error(b.position(of: "commit_interval"), "\"commit_interval\" must be at most \"10s\", got \"\(Units.formatDuration(v))\"") }
                else { buffer.commitIntervalMillis = v }
            }
            if let v = b.oneOf("synchronous", ["normal", "full"]) { buffer.synchronous = v }
            if let v = b.duration("fault_restart_after", min: 1000) {
                if v > 86_400_000 { b.error(b.position(of: "fault_restart_after"), "\"fault_restart_after\" must be at most \"1d\", got \"\(Units.formatDuration(v))\"") }
                else { buffer.faultRestartAfterMillis = v }
            }
            b.finish()
        }

        // [api]
        var api = APISection()
        if let a = top.subtable("api", context: "[api]") {
            if let e = a.bool("enabled") { api.enabled = e }
            if let l = a.string("listen") {
                if let colon = l.lastIndex(of: ":"), let port = Int(l[l.index(after: colon)...]), (1...65535).contains(port), colon > l.startIndex {
                    var host = String(l[..<colon])
                    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                    api.host = host
                    api.port = port
                } else {
                    a.error(a.position(of: "listen"), "\"listen\" must be HOST:PORT like \"127.0.0.1:9669\" or \"0.0.0.0:9669\", got \"\(l)\"")
                }
            }
            api.tokenFile = a.string("token_file")
            if let t = a.duration("self_telemetry", min: 1000) { api.selfTelemetryMillis = t }
            if api.enabled && !api.isLoopback && api.tokenFile == nil {
                a.error(a.position(of: "listen"), "listening on \(api.host) (not loopback) needs token_file = \"/etc/brume/api.token\": anyone on the network could read the gateway's data otherwise")
            }
            a.finish()
        }

        // [log]
        var log = LogSection(level: "info")
        if let l = top.subtable("log", context: "[log]") {
            if let v = l.oneOf("level", ["trace", "debug", "info", "notice", "warning", "error", "critical"]) { log.level = v }
            l.finish()
        }

        // [uplink.NAME]
        var uplinks: [UplinkConfig] = []
        if let u = top.node("uplink") {
            if case .table(let t) = u.value {
                for e in t.entries {
                    guard case .table(let ut) = e.node.value else {
                        sink.error(e.keyPosition, "[uplink]: \"\(e.key)\" must be a table [uplink.\(e.key)]")
                        continue
                    }
                    if let up = buildUplink(name: e.key, TableReader(ut, context: "[uplink.\(e.key)]", sink: sink), gateway: gwID) {
                        uplinks.append(up)
                    }
                }
                if t.entries.count > 8 {
                    sink.error(t.entries[8].keyPosition, "[uplink.\(t.entries[8].key)]: at most 8 uplinks")
                }
            } else {
                sink.error(u.position, "\"uplink\" must be tables like [uplink.cloud]")
            }
        }
        if top.table["uplink"] == nil {
            sink.error(root.position, "no uplink configured: add an [uplink.NAME] table with kind = \"mqtt\" and url = \"mqtt://host:port\"")
        }
        for up in uplinks where up.kind == .mqtt {
            let ids = uplinks.filter { $0.kind == .mqtt && $0.name != up.name && $0.connection.clientID == up.connection.clientID && $0.connection.url == up.connection.url }
            if let other = ids.first, other.name > up.name {
                sink.error(root.entry("uplink")?.keyPosition ?? root.position, "[uplink.\(other.name)] and [uplink.\(up.name)] use the same client_id on \(up.connection.url): give each its own")
            }
        }

        // [[source]]
        var sources: [SourceConfig] = []
        var names: [String: SourcePosition] = [:]
        var claims: [String: (String, SourcePosition)] = [:]
        if let s = top.node("source") {
            if case .array(let items) = s.value {
                for (i, item) in items.enumerated() {
                    guard case .table(let st) = item.value else {
                        sink.error(item.position, "[[source]] entries must be tables")
                        continue
                    }
                    var label = "[[source]] #\(i + 1)"
                    if case .string(let n)? = st["name"]?.value { label = "[[source]] \"\(n)\"" }
                    let r = TableReader(st, context: label, sink: sink)
                    if case .string(let n)? = st["name"]?.value {
                        if let first = names[n] {
                            r.error(r.position(of: "name"), "duplicate source name \"\(n)\" (first defined at \(first))")
                        } else {
                            names[n] = r.position(of: "name")
                        }
                    }
                    if let src = buildSource(r, gateway: gwID) {
                        let key: String
                        switch src.kind {
                        case .serial, .modbus: key = "port"
                        case .mqtt: key = "client_id"
                        }
                        let at = st[key] != nil ? r.position(of: key) : st.position
                        for claim in resourceClaims(src) {
                            if let (other, pos) = claims[claim] {
                                r.error(at, "\(claim) is already used by source \"\(other)\" (\(pos)); give each source its own \(key == "port" ? "port" : "client_id")")
                            } else {
                                claims[claim] = (src.name, at)
                            }
                        }
                        sources.append(src)
                    }
                }
            } else {
                sink.error(s.position, "sources are declared as [[source]] tables")
            }
        }
        for up in uplinks where up.kind == .mqtt {
            let claim = "MQTT client id \"\(up.connection.clientID)\" on \(up.connection.url)"
            if let (other, _) = claims[claim] {
                var at = root.entry("uplink")?.keyPosition ?? root.position
                if case .table(let ut)? = root["uplink"]?.value, case .table(let t)? = ut[up.name]?.value {
                    at = t["client_id"]?.position ?? t.position
                }
                sink.error(at, "[uplink.\(up.name)]: \(claim) is already used by source \"\(other)\"; give the uplink its own client_id")
            }
        }
        for e in root.entries where !topKeys.contains(e.key) {
            do {
                var msg = "unknown table [\(e.key)]"
                if let sug = suggestion(for: e.key, among: topKeys) { msg += " (did you mean [\(sug == "source" ? "[source]" : sug)]?)" }
                sink.error(e.keyPosition, msg)
            }
        }
        // [[actuator]]
        var actuators: [ActuatorConfig] = []
        if let a = top.node("actuator") {
            if case .array(let items) = a.value {
                var seen: [String: SourcePosition] = [:]
                for item in items {
                    guard case .table(let at) = item.value else { sink.error(item.position, "[[actuator]] entries must be tables"); continue }
                    var label = "[[actuator]]"
                    if case .string(let n)? = at["name"]?.value { label = "[[actuator]] \"\(n)\"" }
                    let r = TableReader(at, context: label, sink: sink)
                    if let act = buildActuator(r, sources: sources) {
                        if let first = seen[act.name] { r.error(r.position(of: "name"), "duplicate actuator name \"\(act.name)\" (first defined at \(first))") }
                        else { seen[act.name] = r.position(of: "name") }
                        actuators.append(act)
                    }
                    r.finish()
                }
            } else {
                sink.error(a.position, "actuators are declared as [[actuator]] tables")
            }
        }
        let rules = buildRules(root: root, top: top, actuators: actuators)
        if (!actuators.isEmpty || !rules.triggers.isEmpty) && !uplinks.isEmpty && !uplinks.contains(where: { $0.kind == .mqtt }) {
            sink.error(root.entry("actuator")?.keyPosition ?? root.entry("trigger")?.keyPosition ?? root.position,
                       "actuators and triggers report through an MQTT uplink (commands arrive on it): add an [uplink.NAME] with kind = \"mqtt\"")
        }
        if sink.hasErrors { return nil }
        var config = GatewayConfig(gateway: GatewaySection(id: gwID, dataDir: dataDir), buffer: buffer, log: log, uplinks: uplinks, sources: sources)
        config.actuators = actuators
        config.rules = rules
        config.api = api
        return config
    }

    /// The position of the first character inside a string value's quotes.
    func exprText(_ r: TableReader, _ key: String) -> ExprText? {
        guard let e = r.table.entry(key) else { _ = r.node(key); return nil }
        guard let s = r.string(key) else { return nil }
        let text = r.table.entry(key).map { _ in s } ?? s
        let quote = 1 // "..." and '...' (multi-line strings: the column is approximate)
        return ExprText(text, at: SourceSpan(line: e.node.position.line, column: e.node.position.column + quote))
    }

    func span(_ pos: SourcePosition) -> SourceSpan { SourceSpan(line: pos.line, column: pos.column) }

    func tables(_ top: TableReader, _ key: String) -> [(TOMLTable, TableReader)] {
        guard let n = top.node(key) else { return [] }
        guard case .array(let items) = n.value else { sink.error(n.position, "\(key)s are declared as [[\(key)]] tables"); return [] }
        var out: [(TOMLTable, TableReader)] = []
        for (i, item) in items.enumerated() {
            guard case .table(let t) = item.value else { sink.error(item.position, "[[\(key)]] entries must be tables"); continue }
            var label = "[[\(key)]] #\(i + 1)"
            if case .string(let nm)? = t["name"]?.value { label = "[[\(key)]] \"\(nm)\"" }
            out.append((t, TableReader(t, context: label, sink: sink)))
        }
        return out
    }

    func buildRules(root: TOMLTable, top: TableReader, actuators: [ActuatorConfig]) -> RulesConfig {
        var cfg = RulesConfig()
        for (t, r) in tables(top, "rule") {
            defer { r.finish() }
            let name = r.string("name")
            var match: [String] = []
            if let m = r.stringArray("match") { match = m.map(\.0) } else { r.error(t.position, "missing required key \"match\" (e.g. match = \"*/temperature\")") }
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
        if cfg.isEmpty { return cfg }
        switch RulesCompiler.compile(rules: cfg.rules, derived: cfg.derived, triggers: cfg.triggers) {
        case .success(let c): cfg.compiled = c
        case .failure(let diags):
            for d in diags.all { sink.error(SourcePosition(line: d.span.line, column: d.span.column), d.message) }
        }
        return cfg
    }

    func buildActuator(_ r: TableReader, sources: [SourceConfig]) -> ActuatorConfig? {
        var ok = true
        let name = r.string("name", required: true)
        if let n = name, n.isEmpty || !n.unicodeScalars.allSatisfy({ isNameScalar($0) || $0 == "/" }) {
            r.error(r.position(of: "name"), "\"name\" must be non-empty and use only letters, digits, '.', '_', '-' and '/'")
            ok = false
        }
        let via = r.string("via", required: true)
        let write = r.string("write")
        let reply = r.string("reply")
        let topic = r.string("topic")
        let payload = r.string("payload") ?? "{value}"
        let ackTopic = r.string("ack_topic")
        let ackPayload = r.string("ack_payload")
        let timeout = r.duration("timeout", min: 10) ?? 5000
        var target: ActuatorConfig.Via?
        if let via {
            if let src = sources.first(where: { $0.name == via }) {
                switch src.kind {
                case .serial:
                    if write == nil { r.error(r.table.position, "an actuator via serial source \"\(via)\" needs write = \"...{value}...\\n\"") ; ok = false }
                    for k in ["topic", "ack_topic", "ack_payload"] where r.table[k] != nil { r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" is for actuators via an MQTT source; \"\(via)\" is a serial source"); ok = false }
                    if let write { target = .serial(source: via, write: write, reply: reply) }
                case .modbus(let bus):
                    for k in ["write", "reply", "topic", "ack_topic", "ack_payload"] where r.table[k] != nil {
                        r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" does not apply to an actuator via a Modbus source; use modbus = { device = \"...\", table = \"holding_register\", address = N }"); ok = false
                    }
                    if let mt = r.subtable("modbus", context: "\(r.context) modbus") {
                        if let spec = buildModbusWrite(mt, bus: bus, busName: via) { target = .modbus(source: via, write: spec) } else { ok = false }
                        mt.finish()
                    } else if r.table["modbus"] == nil {
                        r.error(r.table.position, "an actuator via Modbus source \"\(via)\" needs modbus = { device = \"...\", table = \"coil\" or \"holding_register\", address = N }")
                        ok = false
                    }
                case .mqtt(let m):
                    if topic == nil { r.error(r.table.position, "an actuator via MQTT source \"\(via)\" needs topic = \"...\""); ok = false }
                    for k in ["write", "reply"] where r.table[k] != nil { r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" is for actuators via a serial source; \"\(via)\" is an MQTT source"); ok = false }
                    if let t = topic, t.contains("+") || t.contains("#") { r.error(r.position(of: "topic"), "\"topic\" must not contain wildcards"); ok = false }
                    if let t = ackTopic, t.contains("+") || t.contains("#") { r.error(r.position(of: "ack_topic"), "\"ack_topic\" must be one exact topic (no wildcards): the acknowledgement is matched on it"); ok = false }
                    if ackPayload != nil && ackTopic == nil { r.error(r.position(of: "ack_payload"), "\"ack_payload\" needs \"ack_topic\""); ok = false }
                    if ackTopic != nil && m.qos == 0 { /* acks still work with qos 0 subscriptions */ }
                    if let topic { target = .mqtt(source: via, topic: topic, payload: payload, ackTopic: ackTopic, ackPayload: ackPayload) }
                }
            } else {
                var msg = "\"via\" names no source: \"\(via)\""
                if let s = suggestion(for: via, among: sources.map(\.name)) { msg += " (did you mean \"\(s)\"?)" }
                r.error(r.position(of: "via"), msg)
                ok = false
            }
        }
        // What values are accepted: exactly one of accepts, range, type.
        var accepts: ActuatorConfig.Accepts?
        let given = ["accepts", "range", "type"].filter { r.table[$0] != nil }
        if given.count > 1 { r.error(r.table.entry(given[1])!.keyPosition, "use only one of \"accepts\", \"range\" and \"type\""); ok = false }
        if let list = r.stringArray("accepts") {
            if list.isEmpty { r.error(r.position(of: "accepts"), "\"accepts\" needs at least one value"); ok = false } else { accepts = .oneOf(list.map(\.0)) }
        }
        if let n = r.node("range") {
            var nums: [Double] = []
            var allNumbers = true
            if case .array(let items) = n.value {
                for it in items {
                    switch it.value {
                    case .integer(let i): nums.append(Double(i))
                    case .float(let d): nums.append(d)
                    default: allNumbers = false
                    }
                }
            }
            if !allNumbers { nums = [] }
            if nums.count == 2 && nums[0] <= nums[1] { accepts = .range(nums[0], nums[1]) }
            else { r.error(n.position, "\"range\" must be [min, max] with min ≤ max, e.g. range = [0, 100]"); ok = false }
        }
        if let t = r.oneOf("type", ["number", "bool", "string"]) {
            accepts = t == "number" ? .number : t == "bool" ? .bool : .string
        }
        if accepts == nil && given.isEmpty { r.error(r.table.position, "declare what the actuator accepts: accepts = [\"open\", \"close\"], range = [0, 100] or type = \"bool\""); ok = false }
        var safeValue: Value?
        if let n = r.node("safe_value") {
            switch n.value {
            case .string(let s): safeValue = .string(s)
            case .integer(let i): safeValue = .number(Double(i))
            case .float(let d): safeValue = .number(d)
            case .bool(let b): safeValue = .bool(b)
            default: r.error(n.position, "\"safe_value\" must be a string, a number or a boolean"); ok = false
            }
        }
        let safeAfter = r.duration("safe_after", min: 1000)
        let safeOnShutdown = r.bool("safe_on_shutdown") ?? false
        if (safeAfter != nil || safeOnShutdown) && safeValue == nil {
            r.error(r.position(of: safeAfter != nil ? "safe_after" : "safe_on_shutdown"), "a safe state needs safe_value = ...")
            ok = false
        }
        guard ok, let name, let target, let accepts else { return nil }
        if case .modbus(_, let spec) = target {
            // Every value the actuator accepts must become registers.
            var probes: [(Value, String)] = []
            switch accepts {
            case .oneOf(let xs): probes = xs.map { (.string($0), "accepts") }
            case .range(let lo, let hi): probes = [(.number(lo), "range"), (.number(hi), "range")]
            case .bool: probes = [(.bool(true), "type")]
            case .string: r.error(r.position(of: "type"), "a Modbus register cannot take arbitrary strings: use accepts = [...] with modbus.values = { ... }"); return nil
            case .number: break
            }
            for (v, key) in probes {
                if case .failure(let why) = spec.items(for: v) {
                    r.error(r.position(of: key), "\(v.quotedIfString) cannot be written to \(spec.table.rawValue) \(spec.address): \(why)")
                    return nil
                }
            }
        }
        let act = ActuatorConfig(name: name, via: target, accepts: accepts, timeoutMillis: timeout, safeValue: safeValue, safeAfterMillis: safeAfter, safeOnShutdown: safeOnShutdown)
        if let v = safeValue, let why = act.problem(with: v) {
            r.error(r.position(of: "safe_value"), "\"safe_value\" is not acceptable for this actuator: \(why)")
            return nil
        }
        return act
    }

    func resourceClaims(_ s: SourceConfig) -> [String] {
        switch s.kind {
        case .mqtt(let m): return ["MQTT client id \"\(m.connection.clientID)\" on \(m.connection.url)"]
        case .serial(let c): return ["serial port \(c.port)"]
        case .modbus(let m):
            if case .rtu(let port, _, _, _, _, _) = m.transport { return ["serial port \(port)"] }
            return []
        }
    }

    /// `port = "/dev/ttyUSB0"` or `port = { usb_vid_pid = "0403:6001", usb_serial = "..." }`.
    func portSpec(_ r: TableReader, ok: inout Bool) -> PortSpec? {
        var port: PortSpec?
        if let n = r.node("port") {
            switch n.value {
            case .string(let p):
                if p.isEmpty || !p.hasPrefix("/") { r.error(n.position, "\"port\" must be an absolute device path like \"/dev/ttyUSB0\", got \"\(p)\"") } else { port = .path(p) }
            case .table(let t):
                let pr = TableReader(t, context: "\(r.context) port", sink: sink)
                var vid: UInt16?
                var pid: UInt16?
                if let vp = pr.string("usb_vid_pid") {
                    let parts = vp.split(separator: ":")
                    if parts.count == 2, let v = UInt16(parts[0], radix: 16), let p = UInt16(parts[1], radix: 16), parts[0].count == 4, parts[1].count == 4 {
                        vid = v
                        pid = p
                    } else {
                        pr.error(pr.position(of: "usb_vid_pid"), "\"usb_vid_pid\" must look like \"0403:6001\" (hex vendor:product, see `brume ports`), got \"\(vp)\"")
                        ok = false
                    }
                }
                let serial = pr.string("usb_serial")
                if serial?.isEmpty == true { pr.error(pr.position(of: "usb_serial"), "\"usb_serial\" must not be empty"); ok = false }
                pr.finish()
                if vid == nil && serial == nil && ok {
                    pr.error(t.position, "name the device by usb_vid_pid = \"0403:6001\" and/or usb_serial = \"A6008isP\" (see `brume ports`)")
                } else if ok {
                    port = .usb(vid: vid, pid: pid, serial: serial)
                }
            default:
                r.error(n.position, "\"port\" must be a device path or { usb_vid_pid = \"...\", usb_serial = \"...\" }, not \(article(n.typeName))")
            }
        } else {
            r.error(r.table.position, "missing required key \"port\" (e.g. port = \"/dev/ttyUSB0\")")
        }
        return port
    }

    /// `baud`: a standard rate.
    func baudRate(_ r: TableReader, default d: Int, ok: inout Bool) -> Int {
        var baud = d
        if let b = r.int("baud", range: 50...4_000_000) {
            if [50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000,
                576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000].contains(Int(b)) {
                baud = Int(b)
            } else {
                r.error(r.position(of: "baud"), "\"baud\" \(b) is not a standard rate (e.g. 9600, 19200, 38400, 57600, 115200)")
                ok = false
            }
        }
        return baud
    }

    func buildSerial(_ r: TableReader, name: String) -> SerialSourceConfig? {
        var ok = true
        let port = portSpec(r, ok: &ok)
        let baud = baudRate(r, default: 9600, ok: &ok)
        let dataBits = Int(r.int("data_bits", range: 5...8) ?? 8)
        let parity = r.oneOf("parity", ["none", "even", "odd"]) ?? "none"
        let stopBits = Int(r.int("stop_bits", range: 1...2) ?? 1)
        let flow = r.oneOf("flow_control", ["none", "rtscts", "xonxoff"]) ?? "none"
        let device = r.string("device") ?? name
        if device.isEmpty { r.error(r.position(of: "device"), "\"device\" must not be empty"); ok = false }
        let maxFrame = Int(r.int("max_frame", range: 16...65536) ?? 512)
        func byte(_ key: String, default d: UInt8, allowed: [String]) -> UInt8 {
            guard let v = r.string(key) else { return d }
            guard allowed.contains(v) else {
                r.error(r.position(of: key), "\"\(key)\" must be one of \(quoted(allowed)), got \"\(v)\"")
                ok = false
                return d
            }
            return v.utf8.first!
        }
        var format: SerialFormat?
        let formatName = r.oneOf("format", ["kv", "csv", "jsonl", "nmea"])
        if formatName == nil && r.table["format"] == nil { r.error(r.table.position, "missing required key \"format\" (\"kv\", \"csv\", \"jsonl\" or \"nmea\")") }
        // Format-specific keys: read them all, then complain about those that do not apply.
        let kvSep = byte("kv_separator", default: UInt8(ascii: ","), allowed: [",", ";", " ", "\t", "&"])
        let kvAssign = byte("kv_assign", default: UInt8(ascii: "="), allowed: ["=", ":"])
        let timeKey = r.string("time_key")
        let columns = r.stringArray("columns")?.map(\.0)
        let csvDelim = byte("csv_delimiter", default: UInt8(ascii: ","), allowed: [",", ";", "\t", "|", " "])
        let timeColumn = r.string("time_column")
        let deviceColumn = r.string("device_column")
        let requireChecksum = r.bool("require_checksum") ?? true
        let payload: PayloadFormat? = r.table["payload"] != nil ? payloadFormat(r) : .jsonObject(time: nil)
        let specific: [String: [String]] = [
            "kv": ["kv_separator", "kv_assign", "time_key"], "csv": ["columns", "csv_delimiter", "time_column", "device_column"],
            "jsonl": ["payload"], "nmea": ["require_checksum"],
        ]
        if let f = formatName {
            for (other, keys) in specific where other != f {
                for k in keys where r.table[k] != nil {
                    r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" applies to format = \"\(other)\", not \"\(f)\"")
                    ok = false
                }
            }
            switch f {
            case "kv": format = .kv(pairSeparator: kvSep, assign: kvAssign, timeKey: timeKey)
            case "csv":
                if let c = columns, c.isEmpty { r.error(r.position(of: "columns"), "\"columns\" must name at least one column (or leave it out to read a header line)"); ok = false }
                format = .csv(columns: columns, delimiter: csvDelim, timeColumn: timeColumn, deviceColumn: deviceColumn)
            case "jsonl": if let payload { format = .jsonl(payload) } else { ok = false }
            default: format = .nmea(requireChecksum: requireChecksum)
            }
        }
        var poll: SerialPollConfig?
        if let p = r.subtable("poll", context: "\(r.context) poll") {
            let send = p.string("send", required: true)
            let every = p.duration("every", min: 10) ?? 5000
            let timeout = p.duration("timeout", min: 10) ?? 1000
            let retries = Int(p.int("retries", range: 0...10) ?? 1)
            if timeout >= every {
                p.error(p.table["timeout"] != nil ? p.position(of: "timeout") : p.position(of: "every"),
                        "\(p.table["timeout"] == nil ? "the default " : "")\"timeout\" (\"\(Units.formatDuration(timeout))\") must be shorter than \"every\" (\"\(Units.formatDuration(every))\")")
                ok = false
            }
            p.finish()
            if let send, !send.isEmpty { poll = SerialPollConfig(send: send, everyMillis: every, timeoutMillis: timeout, retries: retries) }
            else {
                if send != nil { p.error(p.position(of: "send"), "\"send\" must not be empty (the request the device answers, e.g. \"READ?\\r\\n\")") }
                ok = false
            }
        }
        guard ok, let port, let format else { return nil }
        return SerialSourceConfig(port: port, baud: baud, dataBits: dataBits, parity: parity, stopBits: stopBits, flowControl: flow,
                                  format: format, device: device, maxFrame: maxFrame, poll: poll)
    }

    func connection(_ r: TableReader, defaultClientID: String, allowSeveral: Bool = false) -> MQTTConnection? {
        var alternates: [BrokerURL] = []
        let urlText: String
        if allowSeveral, r.table["urls"] != nil {
            if r.table["url"] != nil {
                r.error(r.table.entry("urls")!.keyPosition, "give \"url\" or \"urls\", not both")
                _ = r.node("url")
                _ = r.node("urls")
                return nil
            }
            guard let list = r.stringArray("urls"), !list.isEmpty else { r.error(r.position(of: "urls"), "\"urls\" needs at least one broker URL"); return nil }
            var parsed: [BrokerURL] = []
            for (u, pos) in list {
                switch BrokerURL.parse(u) {
                case .success(let b): parsed.append(b)
                case .failure(let why): r.error(pos, "invalid url \"\(u)\": \(why)")
                }
            }
            guard parsed.count == list.count else { return nil }
            if Set(parsed.map(\.tls)).count > 1 { r.error(r.position(of: "urls"), "the brokers of \"urls\" must all be mqtt:// or all mqtts://"); return nil }
            urlText = list[0].0
            alternates = Array(parsed.dropFirst())
        } else {
            guard let u = r.string("url", required: true) else { return nil }
            urlText = u
        }
        let url: BrokerURL
        switch BrokerURL.parse(urlText) {
        case .success(let u): url = u
        case .failure(let why): r.error(r.position(of: "url"), "invalid url \"\(urlText)\": \(why)"); return nil
        }
        let clientID = r.string("client_id") ?? defaultClientID
        if clientID.isEmpty || clientID.utf8.count > 128 { r.error(r.position(of: "client_id"), "\"client_id\" must be 1 to 128 bytes") }
        let username = r.string("username")
        let passwordFile = r.string("password_file")
        if passwordFile != nil && username == nil { r.error(r.position(of: "password_file"), "\"password_file\" needs \"username\" too") }
        var keepAlive = r.duration("keepalive", min: 5000) ?? 30_000
        if keepAlive > 65_535_000 {
            r.error(r.position(of: "keepalive"), "\"keepalive\" is at most 65535 s (18h12m15s), the MQTT limit")
            keepAlive = 65_535_000
        }
        var tls: TLSConfig?
        if let t = r.subtable("tls", context: "\(r.context) tls") {
            tls = TLSConfig(caFile: t.string("ca_file"), certFile: t.string("cert_file"), keyFile: t.string("key_file"), verifyHostname: t.bool("verify_hostname") ?? true)
            if (tls!.certFile == nil) != (tls!.keyFile == nil) {
                let at = t.table["cert_file"]?.position ?? t.table["key_file"]?.position ?? t.table.position
                t.error(at, "\"cert_file\" and \"key_file\" go together (the client certificate and its key)")
            }
            t.finish()
        }
        if url.tls && tls == nil { tls = TLSConfig(caFile: nil, certFile: nil, keyFile: nil, verifyHostname: true) }
        if !url.tls && tls != nil { r.error(r.position(of: "url"), "a tls table needs an mqtts:// url, got \"\(urlText)\"") }
        var conn = MQTTConnection(url: url, clientID: clientID, username: username, passwordFile: passwordFile, tls: tls, keepAliveSeconds: Int(keepAlive / 1000))
        conn.alternates = alternates
        return conn
    }

    func buildUplink(name: String, _ r: TableReader, gateway: String) -> UplinkConfig? {
        defer { r.finish() }
        if !name.unicodeScalars.allSatisfy(isNameScalar) { r.error(r.table.position, "uplink name \"\(name)\" may use only letters, digits, '.', '_' and '-'") }
        guard let kindName = r.oneOf("kind", ["mqtt", "http"]) else {
            if r.table["kind"] == nil { r.error(r.table.position, "missing required key \"kind\" (\"mqtt\" or \"http\")") }
            r.markAllKnown()
            return nil
        }
        let maxReadings = r.int("batch_max_readings", range: 1...50_000) ?? 500
        let maxDelay = r.duration("batch_max_delay", min: 0) ?? 1000
        let inflight = r.int("max_inflight", range: 1...1000) ?? 8
        let hist = r.duration("historical_after", min: 0) ?? 10_000
        var match: [String] = []
        if let m = r.stringArray("match") {
            for (g, pos) in m {
                if case .failure(let e) = Glob.parse(g) { r.error(pos, "\"match\": \"\(g)\" \(e)") } else { match.append(g) }
            }
        }
        var cap: Int64?
        if let c = r.size("max_bytes_per_second", min: 1024) { cap = c }
        let maxBytes = r.size("batch_max_bytes", min: 1024).map { Int(min($0, 256 << 20)) }
        if kindName == "http" {
            guard let http = buildHTTPSink(r) else { return nil }
            var up = UplinkConfig(name: name, kind: .http, mqtt: nil, http: http, topicPrefix: "", batchMaxReadings: Int(maxReadings),
                                  batchMaxDelayMillis: maxDelay, maxInflight: 1, historicalAfterMillis: hist)
            up.match = match
            up.maxBytesPerSecond = cap
            up.batchMaxBytes = maxBytes
            return up
        }
        let version = r.oneOf("mqtt_version", ["auto", "5", "3.1.1"]) ?? "auto"
        let conn = connection(r, defaultClientID: "brume-\(gateway)-\(name)", allowSeveral: true)
        let prefix = r.string("topic_prefix") ?? "brume/{gateway}"
        if prefix.contains("+") || prefix.contains("#") || prefix.isEmpty { r.error(r.position(of: "topic_prefix"), "\"topic_prefix\" must be a non-empty topic without wildcards") }
        guard let conn else { return nil }
        var up = UplinkConfig(name: name, kind: .mqtt, mqtt: conn, http: nil, topicPrefix: prefix.replacingAll("{gateway}", with: gateway),
                              batchMaxReadings: Int(maxReadings), batchMaxDelayMillis: maxDelay, maxInflight: Int(inflight), historicalAfterMillis: hist)
        up.match = match
        up.maxBytesPerSecond = cap
        up.batchMaxBytes = maxBytes
        up.mqttVersion = version
        return up
    }

    func buildHTTPSink(_ r: TableReader) -> HTTPSinkConfig? {
        var ok = true
        guard let url = r.string("url", required: true) else { return nil }
        let lower = url.lowercased()
        if !(lower.hasPrefix("http://") || lower.hasPrefix("https://")) || url.count < 10 {
            r.error(r.position(of: "url"), "\"url\" must be an http:// or https:// URL, got \"\(url)\""); ok = false
        }
        if let at = url.firstIndex(of: "@"), let scheme = url.firstRange(of: "://"), at > scheme.upperBound, !url[scheme.upperBound..<at].contains("/") {
            r.error(r.position(of: "url"), "credentials do not belong in the URL: use bearer_token_file or [oauth2]"); ok = false
        }
        let format = r.oneOf("format", ["json", "influx"]).flatMap(HTTPSinkConfig.Format.init(rawValue:)) ?? .json
        let gzip = r.bool("gzip") ?? true
        let timeout = r.duration("timeout", min: 100) ?? 10_000
        let measurement = r.oneOf("influx_measurement", ["metric", "device"]) ?? "metric"
        if format != .influx && r.table["influx_measurement"] != nil {
            r.error(r.table.entry("influx_measurement")!.keyPosition, "\"influx_measurement\" applies to format = \"influx\""); ok = false
        }
        var auth = HTTPSinkConfig.Auth.none
        let bearer = r.string("bearer_token_file")
        if let b = bearer { auth = .bearer(tokenFile: b) }
        if let o = r.subtable("oauth2", context: "\(r.context) oauth2") {
            if bearer != nil { o.error(o.table.position, "use bearer_token_file or [oauth2], not both"); ok = false }
            let tokenURL = o.string("token_url", required: true)
            let clientID = o.string("client_id", required: true)
            let secret = o.string("client_secret_file", required: true)
            let scope = o.string("scope")
            if let t = tokenURL, !t.lowercased().hasPrefix("http") { o.error(o.position(of: "token_url"), "\"token_url\" must be an http(s) URL"); ok = false }
            o.finish()
            if let tokenURL, let clientID, let secret { auth = .oauth2(tokenURL: tokenURL, clientID: clientID, clientSecretFile: secret, scope: scope) } else { ok = false }
        }
        var tls: TLSConfig?
        if let t = r.subtable("tls", context: "\(r.context) tls") {
            tls = TLSConfig(caFile: t.string("ca_file"), certFile: t.string("cert_file"), keyFile: t.string("key_file"), verifyHostname: t.bool("verify_hostname") ?? true)
            if (tls!.certFile == nil) != (tls!.keyFile == nil) {
                t.error(t.table["cert_file"]?.position ?? t.table["key_file"]?.position ?? t.table.position, "\"cert_file\" and \"key_file\" go together (the client certificate and its key)"); ok = false
            }
            t.finish()
            if !lower.hasPrefix("https://") { r.error(r.position(of: "url"), "a tls table needs an https:// url, got \"\(url)\""); ok = false }
        }
        if format == .influx, let p = HTTPSinkConfig.queryValue("precision", in: url) {
            // Brume stamps readings with millisecond times, several per millisecond in a burst;
            // InfluxDB keeps one point per series and timestamp.
            switch p {
            case "u", "us", "n", "ns": break
            case "ms":
                r.warning(r.position(of: "url"), "precision=ms: readings of one series stamped in the same millisecond (a burst) overwrite each other in InfluxDB; leave precision out (brume writes microseconds) or use precision=u")
            case "s", "m", "h":
                r.error(r.position(of: "url"), "precision=\(p) cannot hold the readings' millisecond times: readings of a series within one \(p == "s" ? "second" : p == "m" ? "minute" : "hour") would overwrite each other; leave precision out (brume writes microseconds)"); ok = false
            default:
                r.error(r.position(of: "url"), "unknown precision=\(p) (InfluxDB takes n, u, ms, s; 2.x ns, us, ms, s)"); ok = false
            }
        }
        guard ok else { return nil }
        return HTTPSinkConfig(url: url, format: format, gzip: gzip, timeoutMillis: timeout, auth: auth, tls: tls, influxMeasurement: measurement)
    }

    func buildSource(_ r: TableReader, gateway: String) -> SourceConfig? {
        defer { r.finish() }
        let name = r.string("name", required: true)
        if let n = name, n.isEmpty || !n.unicodeScalars.allSatisfy(isNameScalar) {
            r.error(r.position(of: "name"), "\"name\" must be non-empty and use only letters, digits, '.', '_' and '-'")
        }
        if case .string("serial")? = r.table["kind"]?.value {
            _ = r.node("kind")
            guard let serial = buildSerial(r, name: name ?? "serial"), let name else { return nil }
            return SourceConfig(name: name, kind: .serial(serial))
        }
        if case .string("modbus")? = r.table["kind"]?.value {
            _ = r.node("kind")
            guard let bus = buildModbus(r, name: name ?? "modbus"), let name else { return nil }
            return SourceConfig(name: name, kind: .modbus(bus))
        }
        guard r.oneOf("kind", ["mqtt", "serial", "modbus"]) != nil else {
            if r.table["kind"] == nil { r.error(r.table.position, "missing required key \"kind\" (\"mqtt\", \"serial\" or \"modbus\")") }
            r.markAllKnown()
            return nil
        }
        let conn = connection(r, defaultClientID: "brume-\(gateway)-\(name ?? "source")")
        var filters: [String] = []
        var maxLevels: Int? = 0
        if let subs = r.stringArray("subscribe") {
            if subs.isEmpty { r.error(r.position(of: "subscribe"), "\"subscribe\" needs at least one topic filter") }
            for (f, pos) in subs {
                if let why = topicFilterProblem(f) { r.error(pos, "invalid topic filter \"\(f)\": \(why)"); maxLevels = nil; continue }
                filters.append(f)
                let levels = f.split(separator: "/", omittingEmptySubsequences: false)
                if levels.last == "#" { maxLevels = nil } else if let m = maxLevels { maxLevels = max(m, levels.count) }
            }
        } else {
            maxLevels = nil
            r.error(r.table.position, "missing required key \"subscribe\" (e.g. subscribe = [\"sensors/+/+\"])")
        }
        if filters.isEmpty { maxLevels = nil }
        let qos = r.int("qos", range: 0...1) ?? 1
        func template(_ key: String, default d: String) -> TopicTemplate? {
            let given = r.string(key)
            let text = given ?? d
            switch TopicTemplate.parse(text) {
            case .success(let t):
                if let ml = maxLevels, let used = t.maxLevel, used >= ml {
                    let levels = ml == 1 ? "1 level" : "\(ml) levels"
                    if given == nil {
                        r.error(r.position(of: "subscribe"), "the default \(key) = \"\(d)\" needs topics with at least \(used + 1) levels but the subscribed topics have \(levels): set \(key) = \"...\" (a name, or {0} to {\(ml - 1)})")
                    } else {
                        r.error(r.position(of: key), "\"\(key)\" uses topic level {\(used)} but the subscribed topics have only \(levels) ({0} to {\(ml - 1)})")
                    }
                    return nil
                }
                return t
            case .failure(let why): r.error(r.position(of: key), "\"\(key)\": \(why)"); return nil
            }
        }
        let payload = payloadFormat(r)
        if payload == nil { maxLevels = nil } // a broken payload says nothing about the metric
        let device = template("device", default: "{1}")
        let metricDefault: String
        if case .jsonObject? = payload { metricDefault = "" } else { metricDefault = "{2}" }
        let metric = template("metric", default: metricDefault)
        if let metric, metric.parts.isEmpty, let payload {
            if case .jsonObject = payload {} else {
                r.error(r.position(of: "metric"), "\"metric\" is empty: with this payload every reading needs a metric name (e.g. metric = \"{2}\" or \"temperature\")")
            }
        }
        let persistent = r.bool("persistent_session") ?? true
        let ackAfterCommit = r.oneOf("ack", ["after_commit", "on_receipt"]).map { $0 == "after_commit" } ?? true
        if qos == 0 {
            for k in ["ack", "persistent_session"] where r.table[k] != nil {
                sink.warning(r.table.entry(k)!.keyPosition, "\(r.context): \"\(k)\" has no effect with qos = 0")
            }
        }
        guard let name, let conn, let device, let metric, let payload, !filters.isEmpty else { return nil }
        return SourceConfig(name: name, kind: .mqtt(MQTTSourceConfig(connection: conn, subscribe: filters, qos: Int(qos), device: device, metric: metric, payload: payload, persistentSession: persistent, ackAfterCommit: ackAfterCommit)))
    }

    func payloadFormat(_ r: TableReader) -> PayloadFormat? {
        guard let n = r.node("payload") else { return .number }
        switch n.value {
        case .string(let s):
            switch s {
            case "number": return .number
            case "json": return .jsonObject(time: nil)
            default:
                r.error(n.position, "\"payload\" must be \"number\", \"json\" or { json = { value = \"/pointer\", time = \"/pointer\" } }, got \"\(s)\"")
                return nil
            }
        case .table(let t):
            let pr = TableReader(t, context: "\(r.context) payload", sink: sink)
            defer { pr.finish() }
            guard let j = pr.subtable("json", context: "\(r.context) payload.json") else {
                if t.entries.isEmpty { pr.error(t.position, "expected { json = { value = \"/v\", time = \"/ts\" } }") }
                return nil
            }
            defer { j.finish() }
            func pointer(_ key: String) -> JSONPointer?? {
                guard let s = j.string(key) else { return .some(nil) }
                do { return .some(try JSONPointer(s)) } catch {
                    j.error(j.position(of: key), "\"\(key)\": invalid JSON pointer \"\(s)\": it must start with \"/\" (like \"/v\" or \"/data/temp\")")
                    return nil
                }
            }
            let valueP = pointer("value")
            let timeP = pointer("time")
            guard let value = valueP, let time = timeP else { return nil }
            if let value { return .jsonValue(value: value, time: time) }
            return .jsonObject(time: time)
        default:
            r.error(n.position, "\"payload\" must be \"number\", \"json\" or a table, not \(article(n.typeName))")
            return nil
        }
    }
}

func isNameScalar(_ c: Unicode.Scalar) -> Bool {
    (c.isASCII && c.properties.isAlphabetic) || ("0"..."9").contains(c) || c == "." || c == "_" || c == "-"
}

/// MQTT 3.1.1 topic filter rules.
func topicFilterProblem(_ f: String) -> String? {
    if f.isEmpty { return "empty" }
    if f.utf8.count > 65535 { return "longer than 65535 bytes" }
    let levels = f.split(separator: "/", omittingEmptySubsequences: false)
    for (i, l) in levels.enumerated() {
        if l.contains("#") && (l != "#" || i != levels.count - 1) { return "\"#\" must be a whole level and the last one" }
        if l.contains("+") && l != "+" { return "\"+\" must be a whole level" }
    }
    return nil
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        out += rest
        return out
    }
}

extension Value {
    /// "boost" with quotes, 21.5 and true without: for messages.
    var quotedIfString: String {
        if case .string(let s) = self { return "\"\(s)\"" }
        return description
    }
}
