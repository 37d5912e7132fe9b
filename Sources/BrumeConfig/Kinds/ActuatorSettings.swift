import BrumeCore
import BrumeRules

#if canImport(Glibc)
import Glibc
#endif

extension Builder {
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
                case .gpio(let g):
                    for k in ["write", "reply", "topic", "ack_topic", "ack_payload"] where r.table[k] != nil {
                        r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" does not apply to an actuator via a GPIO source; use line = N (one of its outputs)"); ok = false
                    }
                    if let line = r.int("line", range: 0...65_535) {
                        if g.outputs.contains(where: { $0.line == Int(line) }) {
                            target = .gpio(source: via, line: Int(line))
                        } else {
                            r.error(r.position(of: "line"), "line \(line) is not an output of GPIO source \"\(via)\" (its outputs: \(g.outputs.isEmpty ? "none" : g.outputs.map { "\($0.line)" }.joined(separator: ", "))); declare it in its outputs = [{ line = \(line), safe = false }]"); ok = false
                        }
                    } else if r.table["line"] == nil {
                        r.error(r.table.position, "an actuator via GPIO source \"\(via)\" needs line = N (one of its outputs)"); ok = false
                    } else { ok = false }
                case .lorawan(let l):
                    for k in ["write", "reply", "topic", "ack_topic", "ack_payload"] where r.table[k] != nil {
                        r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" does not apply to an actuator via a LoRaWAN source; use lorawan = { device = \"...\", fport = N, values = { open = \"01\" } }"); ok = false
                    }
                    if !l.downlinks { r.error(r.position(of: "via"), "LoRaWAN source \"\(via)\" has downlinks = false: it sends nothing to its devices"); ok = false }
                    if let lt = r.subtable("lorawan", context: "\(r.context) lorawan") {
                        let device = lt.string("device", required: true)
                        let fport = lt.int("fport", range: 1...223)
                        if fport == nil && lt.table["fport"] == nil { lt.error(lt.table.position, "missing required key \"fport\" (1-223: the port the device's firmware listens on)"); ok = false }
                        var values: [String: String] = [:]
                        if let vt = lt.subtable("values", context: "\(r.context) lorawan values") {
                            for e in vt.table.entries {
                                let k = e.key
                                guard case .string(let hex) = e.node.value else { vt.error(e.node.position, "the payload of \"\(k)\" must be a hex string like \"01\""); ok = false; continue }
                                let u = Array(hex.utf8)
                                if u.isEmpty || u.count % 2 != 0 || u.count > 102 || !u.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0 | 0x20) }) {
                                    vt.error(e.node.position, "the payload of \"\(k)\" must be 1 to 51 bytes in hex (the smallest LoRaWAN downlink at DR0), got \"\(hex)\""); ok = false; continue
                                }
                                values[k] = hex.lowercased()
                            }
                            vt.markAllKnown()
                            vt.finish()
                        } else {
                            lt.error(lt.table.position, "missing required key \"values\": the payload of each value, like values = { open = \"01\", close = \"00\" }"); ok = false
                        }
                        lt.finish()
                        if let device, !l.devices.contains(where: { $0.device == device }) {
                            lt.error(lt.position(of: "device"), "\"\(device)\" is not a device of LoRaWAN source \"\(via)\" (its devices: \(l.devices.map(\.device).joined(separator: ", ")))"); ok = false
                        } else if let device, let fport, ok {
                            target = .lorawan(source: via, device: device, fport: Int(fport), values: values)
                        }
                    } else {
                        r.error(r.table.position, "an actuator via LoRaWAN source \"\(via)\" needs lorawan = { device = \"...\", fport = N, values = { open = \"01\", close = \"00\" } }"); ok = false
                    }
                case .board, .onewire:
                    r.error(r.position(of: "via"), "\"\(via)\" is a sensor-only source: it drives nothing"); ok = false
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
        if case .lorawan(_, _, _, let values) = target {
            // Every value the actuator accepts has its payload.
            let keys: [String]
            switch accepts {
            case .oneOf(let xs): keys = xs
            case .bool: keys = ["true", "false"]
            default:
                r.error(r.position(of: given.first ?? "type"), "a LoRaWAN downlink sends a payload per value: use accepts = [...] (or type = \"bool\") with lorawan.values for each"); return nil
            }
            let missing = keys.filter { values[$0] == nil }
            if !missing.isEmpty {
                r.error(r.position(of: "lorawan"), "lorawan.values has no payload for \(missing.map { "\"\($0)\"" }.joined(separator: ", "))"); return nil
            }
        }
        if case .gpio = target, accepts != .bool {
            r.error(r.position(of: given.first ?? "type"), "a GPIO output is on or off: use type = \"bool\""); return nil
        }
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
}
