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

/// gateway.toml → `GatewayConfig`. Reads the text and, for `[[function]]`s, their modules (loaded
/// and checked: an invalid module is a diagnostic at its key); opens nothing else (files named in
/// the config, like password_file, are checked at start). Operator tools (`unresolved: .ignore`)
/// do not open modules either.
public enum ConfigLoader {

    /// `path`, then `conf.d/*.toml` next to it, merged; `${...}` references resolved from
    /// `environment` (the process's by default). See Includes.swift for the rules.
    public static func load(path: String, environment: [String: String]? = nil, unresolved: UnresolvedReferences = .error) -> Result<(GatewayConfig, [Diagnostic]), ConfigFailure> {
        let dir = Includes.directory(for: path)
        var includes: [String] = []
        switch Includes.files(in: dir) {
        case .success(let f): includes = f
        case .failure(let reason): return .failure(.unreadable(path: dir, reason: reason.description))
        }
        var texts: [(String, String)] = []
        for file in [path] + includes {
            switch readFile(file) {
            case .failure(let reason): return .failure(.unreadable(path: file, reason: reason.description))
            case .success(let text): texts.append((file, text))
            }
        }
        return parse(files: texts, environment: environment ?? Interpolator.processEnvironment(), unresolved: unresolved)
    }

    /// `path`'s conf.d merged into `mainText` instead of `path`'s own text: a configuration
    /// pushed by the backend (kept in the data folder, shown as `mainName`).
    /// `interpolateMain: false`: `${...}` in the main text stays as written (a pushed file must not
    /// pull the board's environment or credentials into values it could send away).
    public static func load(path: String, mainText: String, mainName: String, environment: [String: String]? = nil,
                            interpolateMain: Bool = true) -> Result<(GatewayConfig, [Diagnostic]), ConfigFailure> {
        let dir = Includes.directory(for: path)
        var texts: [(String, String)] = [(mainName, mainText)]
        switch Includes.files(in: dir) {
        case .failure(let reason): return .failure(.unreadable(path: dir, reason: reason.description))
        case .success(let includes):
            for file in includes {
                switch readFile(file) {
                case .failure(let reason): return .failure(.unreadable(path: file, reason: reason.description))
                case .success(let text): texts.append((file, text))
                }
            }
        }
        return parse(files: texts, environment: environment ?? Interpolator.processEnvironment(), interpolateMain: interpolateMain,
                     baseDirectory: folder(of: path))
    }

    /// What a `${...}` that cannot be resolved is.
    public enum UnresolvedReferences: Sendable {
        /// An error (the daemon, `brume check`).
        case error
        /// Not a problem: the value stays as written and its own diagnostics are dropped. For
        /// operator tools (`brume status`, `tail`...) run from a shell without the unit's
        /// environment or credentials; they only need the other settings.
        case ignore
    }

    /// Returns the configuration and its warnings, or every error at once.
    public static func parse(text: String, file: String, environment: [String: String] = [:]) -> Result<(GatewayConfig, [Diagnostic]), ConfigFailure> {
        parse(files: [(file, text)], environment: environment)
    }

    /// Several files (the main one first), merged in order.
    /// `baseDirectory`: where relative module paths start (default: the first file's folder).
    public static func parse(files: [(name: String, text: String)], environment: [String: String], unresolved: UnresolvedReferences = .error,
                             interpolateMain: Bool = true, baseDirectory: String? = nil) -> Result<(GatewayConfig, [Diagnostic]), ConfigFailure> {
        let sink = DiagnosticSink(files: files.map(\.name))
        var root = TOMLTable()
        for (i, f) in files.enumerated() {
            do {
                var t = try TOMLParser.parse(f.text)
                if i == 0 { root = t } else {
                    Includes.renumber(&t, file: i)
                    Includes.merge(&root, t)
                }
            } catch {
                var pos = error.position
                pos.file = i
                sink.error(pos, "TOML syntax error: \(error.message)")
            }
        }
        if sink.hasErrors { return .failure(.invalid(sink.items.sorted())) }
        Interpolator(environment: environment, lenient: unresolved == .ignore, skipFile: interpolateMain ? nil : 0).apply(&root, sink: sink)
        let config = sink.hasErrors ? nil : Builder(sink: sink, baseDirectory: baseDirectory ?? Self.folder(of: files.first?.name ?? ""),
                                                    loadModules: unresolved == .error).build(root)
        let sorted = sink.items.sorted()
        guard !sink.hasErrors, var config else { return .failure(.invalid(sorted)) }
        config.files = files.map(\.name)
        config.texts = files.map(\.text)
        return .success((config, sorted))
    }

    /// The folder of a file path ("." for a bare name).
    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
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

/// Builds the typed configuration, reporting every problem on the way.
struct Builder {
    let sink: DiagnosticSink
    /// Where relative paths in the configuration (a function's module) start: the main file's folder.
    var baseDirectory = "."
    /// false (operator tools): `[[function]]` modules are neither read nor checked.
    var loadModules = true

    func build(_ root: TOMLTable) -> GatewayConfig? {
        let top = TableReader(root, context: "", sink: sink)
        let topKeys = ["gateway", "buffer", "clock", "commands", "fleet", "log", "api", "uplink", "source", "actuator", "function", "rule", "derived", "trigger"]

        // [gateway]
        var gwID = ""
        var dataDir = "/var/lib/brume"
        if let g = top.subtable("gateway", context: "[gateway]") {
            if let id = g.string("id", required: true) {
                if id.isEmpty || !id.unicodeScalars.allSatisfy(isNameScalar) {
                    g.error(g.position(of: "id"), "\"id\" must be non-empty and use only letters, digits, '.', '_' and '-', got \"\(id)\"")
                } else {
                    gwID = id
                    let lower = id.lowercased()
                    if ["change-me", "changeme", "change_me", "placeholder", "example", "your-"].contains(where: { lower.contains($0) }) {
                        g.warning(g.position(of: "id"), "\"id\" = \"\(id)\" looks like a placeholder: every gateway left on it sends the same batch ids and the cloud cannot tell them apart (deduplication drops one's readings as the other's); give each board its own id (its host name, its site and number)")
                    }
                }
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
            if let v = b.duration("hold", min: 0) {
                if v > 60_000 { b.error(b.position(of: "hold"), "\"hold\" must be at most \"1m\" (the field broker keeps the messages unacknowledged meanwhile), got \"\(Units.formatDuration(v))\"") }
                else { buffer.holdMillis = v }
            }
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

        // [clock]
        var clock = ClockSection()
        if let c = top.subtable("clock", context: "[clock]") {
            if let v = c.oneOf("unsynchronised", ClockSection.Unsynchronised.allCases.map(\.rawValue)) { clock.unsynchronised = ClockSection.Unsynchronised(rawValue: v)! }
            if let v = c.duration("wait", min: 0) {
                if v > 7 * 86_400_000 { c.error(c.position(of: "wait"), "\"wait\" must be at most \"7d\" (readings wait in the outbox meanwhile), got \"\(Units.formatDuration(v))\"") }
                else { clock.waitMillis = v }
            }
            c.finish()
        }

        // [commands]
        var commandsSection = CommandsSection()
        if let c = top.subtable("commands", context: "[commands]") {
            if let k = c.subtable("keys", context: "[commands.keys]") {
                for e in k.table.entries {
                    guard case .string(let text) = e.node.value else {
                        k.error(e.keyPosition, "key \"\(e.key)\": expected the Ed25519 public key in base64 (a string)")
                        continue
                    }
                    if !e.key.unicodeScalars.allSatisfy(isNameScalar) || e.key.utf8.count > 64 {
                        k.error(e.keyPosition, "key id \"\(e.key)\" must use only letters, digits, '.', '_' and '-' (at most 64)")
                    } else if let raw = Base64.decode(text), raw.count == 32 {
                        commandsSection.publicKeys[e.key] = raw
                        k.markAllKnown()
                    } else {
                        k.error(e.node.position, "key \"\(e.key)\": expected an Ed25519 public key, 32 bytes in base64 (brume keygen writes one), got \"\(text.prefix(60))\"")
                    }
                }
            }
            commandsSection.requireSignatures = !commandsSection.publicKeys.isEmpty
            if let v = c.oneOf("signatures", ["required", "optional", "off"]) {
                if v == "required" && commandsSection.publicKeys.isEmpty {
                    c.error(c.position(of: "signatures"), "signatures = \"required\" needs at least one key in [commands.keys]")
                }
                if v == "off" && !commandsSection.publicKeys.isEmpty {
                    c.error(c.position(of: "signatures"), "signatures = \"off\" with keys in [commands.keys]: remove the keys, or use \"optional\" while backends move to signing")
                }
                commandsSection.requireSignatures = v == "required"
                commandsSection.unsignedAcknowledged = v == "off"
            }
            if let v = c.duration("max_lifetime", min: 1000) {
                if v > 30 * 86_400_000 { c.error(c.position(of: "max_lifetime"), "\"max_lifetime\" must be at most \"30d\", got \"\(Units.formatDuration(v))\"") }
                else { commandsSection.maxLifetimeMillis = v }
            }
            if let v = c.duration("retention", min: 60_000) {
                if v > 3650 * 86_400_000 { c.error(c.position(of: "retention"), "\"retention\" must be at most \"10y\"") }
                else { commandsSection.retentionMillis = v }
            }
            if commandsSection.retentionMillis <= commandsSection.maxLifetimeMillis {
                c.error(c.table.position, "\"retention\" (\(Units.formatDuration(commandsSection.retentionMillis))) must be longer than \"max_lifetime\" (\(Units.formatDuration(commandsSection.maxLifetimeMillis))): a command forgotten before it expires could be replayed")
            }
            c.finish()
        }

        // [fleet]
        var fleet = FleetSection()
        var fleetAt = root.position
        if let f = top.subtable("fleet", context: "[fleet]") {
            fleetAt = f.table.position
            if let v = f.bool("remote_config") { fleet.remoteConfig = v }
            if let v = f.duration("health_window", min: 10_000) {
                if v > 3_600_000 { f.error(f.position(of: "health_window"), "\"health_window\" must be at most \"1h\", got \"\(Units.formatDuration(v))\"") }
                else { fleet.healthWindowMillis = v }
            }
            if let v = f.oneOf("health", ["uplinks", "uplinks_and_sources"]) { fleet.healthSources = v == "uplinks_and_sources" }
            if let v = f.bool("diagnostics") { fleet.diagnostics = v }
            if let v = f.bool("updates") { fleet.updates = v }
            if let v = f.duration("update_window", min: 30_000) {
                if v > 3_600_000 { f.error(f.position(of: "update_window"), "\"update_window\" must be at most \"1h\", got \"\(Units.formatDuration(v))\"") }
                else { fleet.updateWindowMillis = v }
            }
            if let v = f.string("update_ca_file") {
                if !v.hasPrefix("/") { f.error(f.position(of: "update_ca_file"), "\"update_ca_file\" must be an absolute path, got \"\(v)\"") } else { fleet.updateCAFile = v }
            }
            f.finish()
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
                            r.error(r.position(of: "name"), "duplicate source name \"\(n)\" (first defined at \(sink.place(first)))")
                        } else {
                            names[n] = r.position(of: "name")
                        }
                    }
                    if let src = buildSource(r, gateway: gwID) {
                        let key: String
                        switch src.kind {
                        case .serial, .modbus, .board: key = "port"
                        case .onewire: key = "probes"
                        case .lorawan: key = st["listen"] != nil ? "listen" : "devices"
                        case .gpio: key = "chip"
                        case .mqtt: key = "client_id"
                        }
                        let at = st[key] != nil ? r.position(of: key) : st.position
                        for claim in resourceClaims(src) {
                            if let (other, pos) = claims[claim] {
                                r.error(at, "\(claim) is already used by source \"\(other)\" (\(sink.place(pos))); give each source its own \(key)")
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
                        if let first = seen[act.name] { r.error(r.position(of: "name"), "duplicate actuator name \"\(act.name)\" (first defined at \(sink.place(first)))") }
                        else { seen[act.name] = r.position(of: "name") }
                        actuators.append(act)
                    }
                    r.finish()
                }
            } else {
                sink.error(a.position, "actuators are declared as [[actuator]] tables")
            }
        }
        let (functions, functionRules) = buildFunctions(top: top)
        checkDecoders(root: root, functions: functions)
        let rules = buildRules(root: root, top: top, actuators: actuators, functionRules: functionRules)
        if (!actuators.isEmpty || !rules.triggers.isEmpty) && !uplinks.isEmpty && !uplinks.contains(where: { $0.kind == .mqtt }) {
            sink.error(root.entry("actuator")?.keyPosition ?? root.entry("trigger")?.keyPosition ?? root.position,
                       "actuators and triggers report through an MQTT uplink (commands arrive on it): add an [uplink.NAME] with kind = \"mqtt\"")
        }
        if !actuators.isEmpty && commandsSection.publicKeys.isEmpty && !commandsSection.unsignedAcknowledged {
            sink.warning(root.position, "actuators are declared and [commands.keys] is empty: commands are accepted unsigned — anyone who can publish to the uplink's PREFIX/commands drives them (see docs/security.md: brume keygen, [commands.keys])")
        }
        if (fleet.remoteConfig || fleet.updates) && commandsSection.publicKeys.isEmpty {
            sink.error(fleetAt, "[fleet]: \(fleet.remoteConfig ? "remote_config" : "updates") = true needs the backend's key in [commands.keys]: \(fleet.remoteConfig ? "configuration pushes" : "package offers") are signed, an unsigned one is refused (docs/fleet.md)")
        }
        if fleet.enabled && !uplinks.contains(where: { $0.carriesV1Commands }) {
            sink.error(fleetAt, "[fleet]: pushes and diagnostics travel over an MQTT uplink with format = \"brume\" (PREFIX/config/set): add one")
        }
        if sink.hasErrors { return nil }
        var config = GatewayConfig(gateway: GatewaySection(id: gwID, dataDir: dataDir), buffer: buffer, log: log, uplinks: uplinks, sources: sources)
        config.actuators = actuators
        config.rules = rules
        config.functions = functions
        config.api = api
        config.clock = clock
        config.commands = commandsSection
        config.fleet = fleet
        return config
    }

    /// The position of the first character inside a string value's quotes.
    func exprText(_ r: TableReader, _ key: String) -> ExprText? {
        guard let e = r.table.entry(key) else { _ = r.node(key); return nil }
        guard let s = r.string(key) else { return nil }
        let text = r.table.entry(key).map { _ in s } ?? s
        let quote = 1 // "..." and '...' (multi-line strings: the column is approximate)
        return ExprText(text, at: SourceSpan(line: e.node.position.line, column: e.node.position.column + quote, file: e.node.position.file))
    }

    func span(_ pos: SourcePosition) -> SourceSpan { SourceSpan(line: pos.line, column: pos.column, file: pos.file) }

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
}
