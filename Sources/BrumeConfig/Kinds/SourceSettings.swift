import BrumeCore
import BrumeRules

#if canImport(Glibc)
import Glibc
#endif

extension Builder {
    func resourceClaims(_ s: SourceConfig) -> [String] {
        switch s.kind {
        case .mqtt(let m): return ["MQTT client id \"\(m.connection.clientID)\" on \(m.connection.url)"]
        case .serial(let c): return ["serial port \(c.port)"]
        case .modbus(let m):
            if case .rtu(let port, _, _, _, _, _) = m.transport { return ["serial port \(port)"] }
            return []
        case .board: return []
        case .onewire(let o): return o.probes.map { "1-Wire probe \($0.id)" }
        }
    }


    /// Source kinds of the configuration: `kind = "..."` → its settings parser. One line per
    /// kind (the runtime side is `BrumeRuntime/Kinds/SourceKinds.swift`).
    static let sourceKinds: [(name: String, parse: @Sendable (Builder, TableReader, _ name: String, _ gateway: String) -> SourceConfig.Kind?)] = [
        ("mqtt", { b, r, name, gw in b.buildMQTTSource(r, name: name, gateway: gw).map { .mqtt($0) } }),
        ("serial", { b, r, name, _ in b.buildSerial(r, name: name).map { .serial($0) } }),
        ("modbus", { b, r, name, _ in b.buildModbus(r, name: name).map { .modbus($0) } }),
        ("board", { b, r, _, gw in b.buildBoard(r, gateway: gw).map { .board($0) } }),
        ("onewire", { b, r, name, _ in b.buildOneWire(r, name: name).map { .onewire($0) } }),
    ]

    func buildSource(_ r: TableReader, gateway: String) -> SourceConfig? {
        defer { r.finish() }
        let name = r.string("name", required: true)
        if let n = name, n.isEmpty || !n.unicodeScalars.allSatisfy(isNameScalar) {
            r.error(r.position(of: "name"), "\"name\" must be non-empty and use only letters, digits, '.', '_' and '-'")
        }
        let names = Builder.sourceKinds.map(\.name)
        guard let kindName = r.oneOf("kind", names), let kind = Builder.sourceKinds.first(where: { $0.name == kindName }) else {
            if r.table["kind"] == nil {
                r.error(r.table.position, "missing required key \"kind\" (\(names.map { "\"\($0)\"" }.joined(separator: ", ")))")
            }
            r.markAllKnown()
            return nil
        }
        guard let settings = kind.parse(self, r, name ?? kindName, gateway), let name else { return nil }
        return SourceConfig(name: name, kind: settings)
    }

    /// `kind = "mqtt"`: topics of a field broker → readings.
    func buildMQTTSource(_ r: TableReader, name: String, gateway: String) -> MQTTSourceConfig? {
        let conn = connection(r, defaultClientID: "brume-\(gateway)-\(name)")
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
        let version = r.oneOf("mqtt_version", ["auto", "5", "3.1.1"]) ?? "auto"
        let receiveMaximum = r.int("receive_maximum", range: 20...65535)
        if receiveMaximum != nil && version == "3.1.1" {
            sink.warning(r.table.entry("receive_maximum")!.keyPosition, "\(r.context): \"receive_maximum\" has no effect with mqtt_version = \"3.1.1\" (the broker's max_inflight_messages decides)")
        }
        guard let conn, let device, let metric, let payload, !filters.isEmpty else { return nil }
        var m = MQTTSourceConfig(connection: conn, subscribe: filters, qos: Int(qos), device: device, metric: metric, payload: payload,
                                 persistentSession: persistent, ackAfterCommit: ackAfterCommit)
        m.mqttVersion = version
        if let receiveMaximum { m.receiveMaximum = Int(receiveMaximum) }
        return m
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

extension Builder {
    /// `kind = "board"`: the board's health every `interval`.
    func buildBoard(_ r: TableReader, gateway: String) -> BoardSourceConfig? {
        let interval = r.duration("interval", min: 1000) ?? 30_000
        var device = gateway
        if let d = r.string("device") {
            if d.isEmpty || !d.unicodeScalars.allSatisfy(isNameScalar) { r.error(r.position(of: "device"), "\"device\" must be non-empty and use only letters, digits, '.', '_' and '-'") } else { device = d }
        }
        var root = "/"
        if let p = r.string("root") {
            if !p.hasPrefix("/") { r.error(r.position(of: "root"), "\"root\" must be an absolute path, got \"\(p)\"") } else { root = p }
        }
        var disk: String?
        if let d = r.string("disk") {
            if d.isEmpty || d.contains("/") { r.error(r.position(of: "disk"), "\"disk\" is a block device name as in /proc/diskstats, like \"mmcblk0\" or \"sda\", got \"\(d)\"") } else { disk = d }
        }
        return BoardSourceConfig(intervalMillis: interval, device: device, root: root, disk: disk)
    }
}

extension Builder {
    /// `kind = "onewire"`: probes = [{ id = "28-0316a2795bff", device = "boiler", metric = "flow_temperature" }, ...].
    func buildOneWire(_ r: TableReader, name: String) -> OneWireSourceConfig? {
        var ok = true
        let interval = r.duration("interval", min: 1000) ?? 10_000
        var root = "/sys/bus/w1/devices"
        if let p = r.string("root") {
            if !p.hasPrefix("/") { r.error(r.position(of: "root"), "\"root\" must be an absolute path, got \"\(p)\""); ok = false } else { root = p }
        }
        let defaultDevice = r.string("device") ?? name
        var probes: [OneWireSourceConfig.Probe] = []
        var seen: [String: SourcePosition] = [:]
        if let n = r.node("probes") {
            guard case .array(let items) = n.value, !items.isEmpty else {
                r.error(n.position, "\"probes\" must be a list like [{ id = \"28-0316a2795bff\", metric = \"flow_temperature\" }] (brume ports lists the probes found)")
                return nil
            }
            for it in items {
                guard case .table(let t) = it.value else { r.error(it.position, "each probe is a table { id = \"28-...\", metric = \"...\" }"); ok = false; continue }
                let pr = TableReader(t, context: "\(r.context) probe", sink: sink)
                defer { pr.finish() }
                let idText = pr.string("id", required: true)
                let device = pr.string("device") ?? defaultDevice
                let metric = pr.string("metric") ?? "temperature"
                guard let id = idText else { ok = false; continue }
                let lower = id.lowercased()
                guard lower.utf8.count == 15, Array(lower.utf8)[2] == UInt8(ascii: "-"),
                      lower.unicodeScalars.enumerated().allSatisfy({ i, c in i == 2 || ("0"..."9").contains(c) || ("a"..."f").contains(c) }) else {
                    pr.error(pr.position(of: "id"), "\"id\" must be a 1-Wire ROM id as the kernel names it, like \"28-0316a2795bff\" (family, dash, 12 hex digits), got \"\(id)\""); ok = false; continue
                }
                if let first = seen[lower] { pr.error(pr.position(of: "id"), "probe \(lower) is listed twice (first at \(sink.place(first)))"); ok = false; continue }
                seen[lower] = pr.position(of: "id")
                for (k, v) in [("device", device), ("metric", metric)] where v.isEmpty || !v.unicodeScalars.allSatisfy(isNameScalar) {
                    pr.error(pr.position(of: k), "\"\(k)\" must be non-empty and use only letters, digits, '.', '_' and '-', got \"\(v)\""); ok = false
                }
                probes.append(.init(id: lower, device: device, metric: metric))
            }
        } else {
            r.error(r.table.position, "missing required key \"probes\": the probes to read by ROM id, like probes = [{ id = \"28-0316a2795bff\", metric = \"flow_temperature\" }] (brume ports lists the probes found)")
            ok = false
        }
        let metrics = Dictionary(grouping: probes, by: { "\($0.device)/\($0.metric)" }).filter { $0.value.count > 1 }
        for (m, ps) in metrics.sorted(by: { $0.key < $1.key }) {
            r.error(r.position(of: "probes"), "probes \(ps.map(\.id).joined(separator: " and ")) would both be \(m): give each its own metric or device"); ok = false
        }
        return ok ? OneWireSourceConfig(probes: probes, intervalMillis: interval, root: root) : nil
    }
}
