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
        case .lorawan(let l): return ["UDP port \(l.host):\(l.port)"] + l.devices.map { "LoRaWAN DevAddr \($0.devAddr)" }
        case .gpio(let g): return (g.inputs.map(\.line) + g.outputs.map(\.line)).map { "GPIO line \($0) of \(g.chip)" }
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
        ("lorawan", { b, r, name, _ in b.buildLoRaWAN(r, name: name).map { .lorawan($0) } }),
        ("gpio", { b, r, name, _ in b.buildGPIO(r, name: name).map { .gpio($0) } }),
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
        switch payload {
        case .jsonObject?, .function?: metricDefault = ""
        default: metricDefault = "{2}"
        }
        let metric = template("metric", default: metricDefault)
        if let metric, metric.parts.isEmpty, let payload {
            switch payload {
            case .jsonObject, .function: break
            default:
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
            if t["function"] != nil {
                // Checked against the [[function]]s once they are built (ConfigLoader).
                guard let name = pr.string("function") else { return nil }
                if t["json"] != nil { pr.error(t.position, "a payload is decoded by a function or as JSON, not both") }
                return .function(name: name)
            }
            guard let j = pr.subtable("json", context: "\(r.context) payload.json") else {
                if t.entries.isEmpty { pr.error(t.position, "expected { json = { value = \"/v\", time = \"/ts\" } } or { function = \"NAME\" }") }
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

extension Builder {
    /// `kind = "lorawan"`: listen = "127.0.0.1:1700" (the packet forwarder's server), devices =
    /// [{ dev_addr = "26011BDA", device = "...", nwk_s_key = "32 hex", app_s_key = "32 hex" }, ...].
    func buildLoRaWAN(_ r: TableReader, name: String) -> LoRaWANSourceConfig? {
        var ok = true
        var host = "127.0.0.1", port = 1700
        if let l = r.string("listen") {
            // IPv4 only: Semtech forwarders speak UDP over IPv4.
            let parts = l.split(separator: ":", omittingEmptySubsequences: false)
            var a = in_addr()
            if parts.count == 2, let p = Int(parts[1]), (0...65535).contains(p), inet_pton(AF_INET, String(parts[0]), &a) == 1 {
                host = String(parts[0])
                port = p
            } else {
                r.error(r.position(of: "listen"), "\"listen\" must be IPV4:PORT like \"127.0.0.1:1700\" (the packet forwarder on this board) or \"0.0.0.0:1700\", got \"\(l)\""); ok = false
            }
        }
        var gateways: [String] = []
        for (g, pos) in r.stringArray("gateways") ?? [] {
            guard g.utf8.count == 16, UInt64(g, radix: 16) != nil else {
                r.error(pos, "a gateway is its 16-hex-digit EUI as in the forwarder's global_conf.json (gateway_ID), like \"AA555A0000000000\", got \"\(g)\""); ok = false; continue
            }
            gateways.append(g.uppercased())
        }
        let signal = r.bool("signal") ?? true
        let downlinks = r.bool("downlinks") ?? true
        var devices: [LoRaWANSourceConfig.Device] = []
        var seen: [String: SourcePosition] = [:]
        var seenNames: [String: SourcePosition] = [:]
        if let n = r.node("devices") {
            guard case .array(let items) = n.value, !items.isEmpty else {
                r.error(n.position, "\"devices\" must be a list like [{ dev_addr = \"26011BDA\", device = \"field-3\", nwk_s_key = \"...\", app_s_key = \"...\" }]")
                return nil
            }
            for it in items {
                guard case .table(let t) = it.value else { r.error(it.position, "each device is a table { dev_addr = \"26011BDA\", device = \"...\", nwk_s_key = \"...\", app_s_key = \"...\" }"); ok = false; continue }
                let dr = TableReader(t, context: "\(r.context) device", sink: sink)
                defer { dr.finish() }
                let addr = dr.string("dev_addr", required: true)
                let device = dr.string("device", required: true)
                let nwk = dr.string("nwk_s_key", required: true)
                let app = dr.string("app_s_key", required: true)
                let codec = dr.oneOf("codec", ["cayenne", "raw"]) ?? "cayenne"
                let reset = dr.bool("allow_counter_reset") ?? false
                _ = dr.string("dev_eui") // a label for the technician; not used to decode
                guard let addr, let device, let nwk, let app else { ok = false; continue }
                let upper = addr.uppercased()
                if upper.utf8.count != 8 || UInt32(upper, radix: 16) == nil {
                    dr.error(dr.position(of: "dev_addr"), "\"dev_addr\" must be 8 hex digits as the network server shows it, like \"26011BDA\", got \"\(addr)\""); ok = false
                } else if let first = seen[upper] {
                    dr.error(dr.position(of: "dev_addr"), "DevAddr \(upper) is listed twice (first at \(sink.place(first)))"); ok = false
                } else {
                    seen[upper] = dr.position(of: "dev_addr")
                }
                if device.isEmpty || !device.unicodeScalars.allSatisfy(isNameScalar) {
                    dr.error(dr.position(of: "device"), "\"device\" must be non-empty and use only letters, digits, '.', '_' and '-', got \"\(device)\""); ok = false
                } else if let first = seenNames[device] {
                    dr.error(dr.position(of: "device"), "device \"\(device)\" is named twice (first at \(sink.place(first)))"); ok = false
                } else {
                    seenNames[device] = dr.position(of: "device")
                }
                for (k, v) in [("nwk_s_key", nwk), ("app_s_key", app)] where v.utf8.count != 32 || !v.utf8.allSatisfy({ isHexDigit($0) }) {
                    // The value is a secret: never repeated in a diagnostic.
                    dr.error(dr.position(of: k), "\"\(k)\" must be the 128-bit session key as 32 hex digits (it has \(v.utf8.count) characters\(v.utf8.allSatisfy({ isHexDigit($0) }) ? "" : ", not all hex"); ${credential:NAME} keeps it out of this file)"); ok = false
                }
                devices.append(.init(devAddr: upper, device: device, nwkSKey: nwk, appSKey: app, codec: codec, allowCounterReset: reset))
            }
        } else {
            r.error(r.table.position, "missing required key \"devices\": the LoRaWAN devices to decode, like devices = [{ dev_addr = \"26011BDA\", device = \"field-3\", nwk_s_key = \"...\", app_s_key = \"...\" }]"); ok = false
        }
        return ok ? LoRaWANSourceConfig(host: host, port: port, gateways: gateways, signal: signal, downlinks: downlinks, devices: devices) : nil
    }
}

private func isHexDigit(_ c: UInt8) -> Bool {
    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(c) || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(c)
}

extension Builder {
    /// `kind = "gpio"`: chip = "gpiochip0", inputs = [{ line = 17, metric = "door_open" }, { line = 27,
    /// metric = "water_m3", counter = "falling", scale = 0.001 }], outputs = [{ line = 22, safe = false }].
    func buildGPIO(_ r: TableReader, name: String) -> GPIOSourceConfig? {
        var ok = true
        let chip = r.string("chip") ?? "gpiochip0"
        if chip.isEmpty { r.error(r.position(of: "chip"), "\"chip\" names the GPIO chip like \"gpiochip0\" (gpiodetect lists them)"); ok = false }
        let interval = r.duration("interval", min: 1000) ?? 10_000
        let defaultDevice = r.string("device") ?? name
        var lines: [Int: SourcePosition] = [:]
        func claim(_ line: Int, _ pos: SourcePosition, _ tr: TableReader) -> Bool {
            if let first = lines[line] { tr.error(pos, "line \(line) is used twice (first at \(sink.place(first)))"); return false }
            lines[line] = pos
            return true
        }
        var inputs: [GPIOSourceConfig.Input] = []
        var outputs: [GPIOSourceConfig.Output] = []
        func items(_ key: String, _ example: String) -> [TOMLNode] {
            guard let n = r.node(key) else { return [] }
            guard case .array(let xs) = n.value else { r.error(n.position, "\"\(key)\" must be a list like \(example)"); ok = false; return [] }
            return xs
        }
        for it in items("inputs", "[{ line = 17, metric = \"door_open\" }]") {
            guard case .table(let t) = it.value else { r.error(it.position, "each input is a table { line = N, metric = \"...\" }"); ok = false; continue }
            let ir = TableReader(t, context: "\(r.context) input", sink: sink)
            defer { ir.finish() }
            let line = ir.int("line", range: 0...65_535)
            if line == nil && t["line"] == nil { ir.error(t.position, "missing required key \"line\" (the line offset on the chip: GPIO17 is line 17 of gpiochip0 on a Pi)") }
            let metric = ir.string("metric", required: true)
            let device = ir.string("device") ?? defaultDevice
            let counter = ir.oneOf("counter", ["rising", "falling"])
            let scale = ir.number("scale") ?? 1
            if t["scale"] != nil && t["counter"] == nil { ir.error(ir.position(of: "scale"), "\"scale\" is for pulse counters (counter = \"falling\")"); ok = false }
            if !(scale > 0) || !scale.isFinite { ir.error(ir.position(of: "scale"), "\"scale\" must be above 0 (the quantity of one pulse, like 0.001 m³)"); ok = false }
            let debounce = ir.duration("debounce") ?? (counter == nil ? 50 : 5)
            if debounce > 10_000 { ir.error(ir.position(of: "debounce"), "\"debounce\" must be at most \"10s\""); ok = false }
            let bias = ir.oneOf("bias", ["as-is", "disable", "pull-up", "pull-down"]) ?? "as-is"
            let activeLow = ir.bool("active_low") ?? false
            guard let line, let metric else { ok = false; continue }
            for (k, v) in [("device", device), ("metric", metric)] where v.isEmpty || !v.unicodeScalars.allSatisfy(isNameScalar) {
                ir.error(ir.position(of: k), "\"\(k)\" must be non-empty and use only letters, digits, '.', '_' and '-', got \"\(v)\""); ok = false
            }
            if !claim(Int(line), ir.position(of: "line"), ir) { ok = false; continue }
            inputs.append(.init(line: Int(line), device: device, metric: metric, counter: counter, scale: scale, debounceMillis: debounce, bias: bias, activeLow: activeLow))
        }
        for it in items("outputs", "[{ line = 22, safe = false }]") {
            guard case .table(let t) = it.value else { r.error(it.position, "each output is a table { line = N, safe = false }"); ok = false; continue }
            let orr = TableReader(t, context: "\(r.context) output", sink: sink)
            defer { orr.finish() }
            let line = orr.int("line", range: 0...65_535)
            if line == nil && t["line"] == nil { orr.error(t.position, "missing required key \"line\"") }
            let safe = orr.bool("safe")
            if safe == nil && t["safe"] == nil { orr.error(t.position, "missing required key \"safe\": the level the output takes at start, at stop and when the gateway cannot reach it (false: off)"); ok = false }
            let activeLow = orr.bool("active_low") ?? false
            guard let line, let safe else { ok = false; continue }
            if !claim(Int(line), orr.position(of: "line"), orr) { ok = false; continue }
            outputs.append(.init(line: Int(line), safe: safe, activeLow: activeLow))
        }
        if inputs.isEmpty && outputs.isEmpty && r.node("inputs") == nil && r.node("outputs") == nil {
            r.error(r.table.position, "a GPIO source needs inputs = [{ line = 17, metric = \"door_open\" }] or outputs = [{ line = 22, safe = false }]"); ok = false
        }
        let metrics = Dictionary(grouping: inputs, by: { "\($0.device)/\($0.metric)" }).filter { $0.value.count > 1 }
        for (m, xs) in metrics.sorted(by: { $0.key < $1.key }) {
            r.error(r.position(of: "inputs"), "lines \(xs.map { "\($0.line)" }.joined(separator: " and ")) would both be \(m): give each its own metric or device"); ok = false
        }
        return ok ? GPIOSourceConfig(chip: chip, intervalMillis: interval, inputs: inputs, outputs: outputs) : nil
    }
}
