import BrumeCore

/// A Modbus bus: one serial line (RTU) or one TCP connection, and its devices.
public struct ModbusSourceConfig: Sendable, Hashable {
    public enum Transport: Sendable, Hashable {
        case rtu(port: PortSpec, baud: Int, dataBits: Int, parity: String, stopBits: Int, rs485: Bool)
        case tcp(host: String, port: Int)
    }
    public var transport: Transport
    public var devices: [ModbusDeviceConfig]
    public var interFrameDelayMillis: Int64
    public var maxSpan: Int
    public var maxGap: Int
    public var offlineAfter: Int
    public var backoffMaxMillis: Int64
}

public struct ModbusDeviceConfig: Sendable, Hashable {
    /// The device name of its readings.
    public var name: String
    public var unit: UInt8
    public var timeoutMillis: Int64
    public var retries: Int
    public var points: [ModbusPoint]
}

extension Builder {
    /// `kind = "modbus"`: `port` (RTU) or `url = "tcp://host:502"`, bus settings, then
    /// `[[source.device]]` tables each with `points = [ { metric, table, address, type ... } ]`.
    func buildModbus(_ r: TableReader, name: String) -> ModbusSourceConfig? {
        var ok = true
        let hasPort = r.table["port"] != nil
        let hasURL = r.table["url"] != nil
        var transport: ModbusSourceConfig.Transport?
        var baud = 9600
        if hasPort && hasURL {
            r.error(r.table.entry("url")!.keyPosition, "give either \"port\" (Modbus RTU on a serial line) or \"url\" (Modbus TCP), not both")
            _ = r.node("url")
            ok = false
        } else if !hasPort && !hasURL {
            r.error(r.table.position, "a modbus source needs port = \"/dev/ttyUSB0\" (RTU) or url = \"tcp://192.168.1.50:502\" (TCP)")
            ok = false
        }
        let rtuKeys = ["baud", "data_bits", "parity", "stop_bits", "rs485"]
        if hasPort {
            let port = portSpec(r, ok: &ok)
            baud = baudRate(r, default: 9600, ok: &ok)
            let dataBits = Int(r.int("data_bits", range: 7...8) ?? 8)
            let parity = r.oneOf("parity", ["none", "even", "odd"]) ?? "none"
            let stopBits = Int(r.int("stop_bits", range: 1...2) ?? 1)
            let rs485 = r.bool("rs485") ?? false
            if let port { transport = .rtu(port: port, baud: baud, dataBits: dataBits, parity: parity, stopBits: stopBits, rs485: rs485) }
        } else if hasURL, let u = r.string("url") {
            if let (host, port) = parseModbusURL(u) {
                transport = .tcp(host: host, port: port)
            } else {
                r.error(r.position(of: "url"), "\"url\" must look like \"tcp://192.168.1.50:502\" (port 502 by default), got \"\(u)\"")
                ok = false
            }
            for k in rtuKeys where r.table[k] != nil {
                r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" applies to Modbus RTU (port = ...), not to Modbus TCP")
                _ = r.node(k)
                ok = false
            }
        }
        // Bus-wide defaults, each overridable per device (and poll/orders per point).
        let timeout = r.duration("timeout", min: 10) ?? 500
        let retries = Int(r.int("retries", range: 0...5) ?? 1)
        let poll = r.duration("poll", min: 10) ?? 1000
        let wordOrder = r.oneOf("word_order", ["big", "little"]).flatMap(ModbusOrder.init(rawValue:)) ?? .big
        let byteOrder = r.oneOf("byte_order", ["big", "little"]).flatMap(ModbusOrder.init(rawValue:)) ?? .big
        // RTU: 3.5 characters of silence between frames (11 bits each), at least 2 ms; TCP: none.
        let defaultDelay: Int64 = hasPort ? max(2, Int64((3.5 * 11 * 1000 / Double(baud)).rounded(.up))) : 0
        let interFrame = r.duration("inter_frame_delay") ?? defaultDelay
        let maxSpan = Int(r.int("max_span", range: 1...2000) ?? 125)
        let maxGap = Int(r.int("max_gap", range: 0...125) ?? 0)
        let offlineAfter = Int(r.int("offline_after", range: 1...100) ?? 3)
        let backoffMax = r.duration("backoff_max", min: 100) ?? 60_000

        var devices: [ModbusDeviceConfig] = []
        var deviceNames: [String: SourcePosition] = [:]
        var units: [UInt8: (String, SourcePosition)] = [:]
        var deviceTables: [(TOMLTable, String)] = []
        if let n = r.node("device") {
            if case .array(let items) = n.value {
                for (i, item) in items.enumerated() {
                    guard case .table(let t) = item.value else { r.error(item.position, "devices are declared as [[source.device]] tables"); ok = false; continue }
                    var label = "device #\(i + 1)"
                    if case .string(let nm)? = t["name"]?.value { label = "device \"\(nm)\"" }
                    deviceTables.append((t, label))
                }
            } else {
                r.error(n.position, "devices are declared as [[source.device]] tables")
                ok = false
            }
        } else {
            r.error(r.table.position, "a modbus source needs at least one [[source.device]] with name, unit and points")
            ok = false
        }
        for (dt, label) in deviceTables {
            let dctx = TableReader(dt, context: "\(r.context) \(label)", sink: sink)
            guard let dev = buildModbusDevice(dctx, tcp: !hasPort, poll: poll, timeout: timeout, retries: retries,
                                              wordOrder: wordOrder, byteOrder: byteOrder) else { ok = false; dctx.finish(); continue }
            dctx.finish()
            if let first = deviceNames[dev.name] {
                dctx.error(dctx.position(of: "name"), "duplicate device name \"\(dev.name)\" on this bus (first at \(dctx.sink.place(first)))")
                ok = false
            } else { deviceNames[dev.name] = dctx.position(of: "name") }
            if let (other, at) = units[dev.unit] {
                dctx.error(dctx.position(of: "unit"), "unit \(dev.unit) is already device \"\(other)\" (\(at)): two devices on one bus cannot share a unit id")
                ok = false
            } else { units[dev.unit] = (dev.name, dctx.position(of: "unit")) }
            devices.append(dev)
        }
        guard ok, let transport, !devices.isEmpty else { return nil }
        return ModbusSourceConfig(transport: transport, devices: devices, interFrameDelayMillis: interFrame, maxSpan: maxSpan, maxGap: maxGap,
                                  offlineAfter: offlineAfter, backoffMaxMillis: backoffMax)
    }

    func buildModbusDevice(_ r: TableReader, tcp: Bool, poll: Int64, timeout: Int64, retries: Int,
                           wordOrder: ModbusOrder, byteOrder: ModbusOrder) -> ModbusDeviceConfig? {
        var ok = true
        let name = r.string("name", required: true)
        if let n = name, n.isEmpty || !n.unicodeScalars.allSatisfy(isNameScalar) {
            r.error(r.position(of: "name"), "\"name\" must be non-empty and use only letters, digits, '.', '_' and '-'")
            ok = false
        }
        // RTU: 1...247 (0 is broadcast, which never answers); TCP: 0...255 (255 or 1 for a device that ignores it).
        let unit = r.int("unit", range: tcp ? 0...255 : 1...247)
        if r.table["unit"] == nil { r.error(r.table.position, "missing required key \"unit\" (the Modbus unit id, \(tcp ? "0-255" : "1-247"))"); ok = false }
        let devPoll = r.duration("poll", min: 10) ?? poll
        let devTimeout = r.duration("timeout", min: 10) ?? timeout
        let devRetries = r.int("retries", range: 0...5).map(Int.init) ?? retries
        let wo = r.oneOf("word_order", ["big", "little"]).flatMap(ModbusOrder.init(rawValue:)) ?? wordOrder
        let bo = r.oneOf("byte_order", ["big", "little"]).flatMap(ModbusOrder.init(rawValue:)) ?? byteOrder
        if devTimeout * Int64(devRetries + 1) > devPoll {
            sink.warning(r.table["timeout"] != nil ? r.position(of: "timeout") : r.table.position,
                         "\(r.context): timeout × (1 + retries) = \(Units.formatDuration(devTimeout * Int64(devRetries + 1))) is longer than the poll interval \(Units.formatDuration(devPoll)): a silent device would use the whole bus until it is backed off")
        }
        var points: [ModbusPoint] = []
        var metrics: [String: SourcePosition] = [:]
        if let n = r.node("points") {
            if case .array(let items) = n.value, !items.isEmpty {
                for (i, item) in items.enumerated() {
                    guard case .table(let pt) = item.value else { r.error(item.position, "\"points\" entries must be tables like { metric = \"voltage\", table = \"input_register\", address = 0, type = \"float32\" }"); ok = false; continue }
                    var label = "point #\(i + 1)"
                    if case .string(let m)? = pt["metric"]?.value { label = "point \"\(m)\"" }
                    let pr = TableReader(pt, context: "\(r.context) \(label)", sink: sink)
                    if let p = buildPoint(pr, poll: devPoll, wordOrder: wo, byteOrder: bo) {
                        if let first = metrics[p.metric] {
                            pr.error(pr.position(of: "metric"), "duplicate metric \"\(p.metric)\" on this device (first at \(pr.sink.place(first)))")
                            ok = false
                        } else { metrics[p.metric] = pr.position(of: "metric") }
                        points.append(p)
                    } else { ok = false }
                    pr.finish()
                }
            } else {
                r.error(n.position, "\"points\" must be a non-empty array of tables: points = [ { metric = \"voltage\", table = \"input_register\", address = 0, type = \"float32\" } ]")
                ok = false
            }
        } else {
            r.error(r.table.position, "missing required key \"points\" (the registers to read)")
            ok = false
        }
        guard ok, let name, let unit else { return nil }
        return ModbusDeviceConfig(name: name, unit: UInt8(unit), timeoutMillis: devTimeout, retries: devRetries, points: points)
    }

    func buildPoint(_ r: TableReader, poll: Int64, wordOrder: ModbusOrder, byteOrder: ModbusOrder) -> ModbusPoint? {
        var ok = true
        let metric = r.string("metric", required: true)
        if let m = metric, m.isEmpty || m.contains("/") {
            r.error(r.position(of: "metric"), "\"metric\" must be non-empty and contain no '/'")
            ok = false
        }
        let tableName = r.oneOf("table", ModbusTable.allCases.map(\.rawValue))
        if r.table["table"] == nil { r.error(r.table.position, "missing required key \"table\" (\"coil\", \"discrete_input\", \"input_register\" or \"holding_register\")"); ok = false }
        let table = tableName.flatMap(ModbusTable.init(rawValue:))
        let address = r.int("address", range: 0...65535)
        if r.table["address"] == nil { r.error(r.table.position, "missing required key \"address\" (0-based protocol address)"); ok = false }
        let typeName = r.oneOf("type", ModbusDataType.allCases.map(\.rawValue))
        var type = typeName.flatMap(ModbusDataType.init(rawValue:)) ?? ((table?.isBit ?? false) ? .bool : .uint16)
        let bit = r.int("bit", range: 0...15).map(Int.init)
        let wo = r.oneOf("word_order", ["big", "little"]).flatMap(ModbusOrder.init(rawValue:)) ?? wordOrder
        let bo = r.oneOf("byte_order", ["big", "little"]).flatMap(ModbusOrder.init(rawValue:)) ?? byteOrder
        let scale = r.number("scale") ?? 1
        let offset = r.number("offset") ?? 0
        let unitName = r.string("unit")
        let pointPoll = r.duration("poll", min: 10) ?? poll
        if scale == 0 { r.error(r.position(of: "scale"), "\"scale\" must not be 0"); ok = false }
        if let table {
            if table.isBit {
                if typeName != nil && type != .bool { r.error(r.position(of: "type"), "a \(table.rawValue) holds one bit: type must be \"bool\" (or left out)"); ok = false }
                for k in ["bit", "word_order", "byte_order", "scale", "offset"] where r.table[k] != nil {
                    r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" does not apply to a \(table.rawValue) (one bit)")
                    ok = false
                }
                type = .bool
            } else {
                if bit != nil && type != .bool { r.error(r.position(of: "bit"), "\"bit\" picks one bit of a register: it needs type = \"bool\""); ok = false }
                if type == .bool && (r.table["scale"] != nil || r.table["offset"] != nil) { r.error(r.table.position, "\(r.context): a bool has no scale or offset"); ok = false }
            }
            if let a = address, Int(a) + (table.isBit ? 1 : type.words) > 65536 {
                r.error(r.position(of: "address"), "a value of type \(type.rawValue) (\(type.words) registers) at \(a) runs past the last address 65535")
                ok = false
            }
            // 40001-style references are a classic mistake: the protocol address of register 40001 is 0.
            if let a = address {
                let ranges: [ModbusTable: ClosedRange<Int64>] = [.holdingRegister: 40001...49999, .inputRegister: 30001...39999, .discreteInput: 10001...19999]
                if let rg = ranges[table], rg.contains(a) {
                    sink.warning(r.position(of: "address"), "\(r.context): address \(a) looks like a Modicon reference; the protocol address of \(table.rawValue) \(a) is \(a - rg.lowerBound) (addresses are 0-based)")
                }
            }
        }
        guard ok, let metric, let table, let address else { return nil }
        return ModbusPoint(metric: metric, table: table, address: UInt16(address),
                           encoding: ModbusEncoding(type: type, wordOrder: wo, byteOrder: bo, bit: bit, scale: scale, offset: offset),
                           unit: unitName, pollMillis: pointPoll)
    }

    /// `modbus = { device = "pump", table = "holding_register", address = 10, type = "uint16", ... }` of an actuator.
    func buildModbusWrite(_ r: TableReader, bus: ModbusSourceConfig, busName: String) -> ModbusWriteSpec? {
        var ok = true
        var unit: UInt8?
        var deviceName = ""
        var defaults = (ModbusOrder.big, ModbusOrder.big)
        if let d = r.string("device") {
            if let dev = bus.devices.first(where: { $0.name == d }) {
                unit = dev.unit
                deviceName = d
                if let p = dev.points.first { defaults = (p.encoding.wordOrder, p.encoding.byteOrder) }
            } else {
                var msg = "\"device\" names no device of source \"\(busName)\": \"\(d)\""
                if let s = suggestion(for: d, among: bus.devices.map(\.name)) { msg += " (did you mean \"\(s)\"?)" }
                r.error(r.position(of: "device"), msg)
                ok = false
            }
        }
        if let u = r.int("unit", range: 0...255) {
            if r.table["device"] != nil { r.error(r.position(of: "unit"), "give \"device\" or \"unit\", not both"); ok = false }
            unit = UInt8(u)
            deviceName = bus.devices.first { $0.unit == UInt8(u) }?.name ?? ""
        }
        if r.table["device"] == nil && r.table["unit"] == nil { r.error(r.table.position, "\(r.context): name the target with device = \"...\" (a [[source.device]]) or unit = N"); ok = false }
        let table = r.oneOf("table", ["coil", "holding_register"]).flatMap(ModbusTable.init(rawValue:))
        if r.table["table"] == nil { r.error(r.table.position, "\(r.context): missing required key \"table\" (\"coil\" or \"holding_register\": the writable tables)"); ok = false }
        let address = r.int("address", range: 0...65535)
        if r.table["address"] == nil { r.error(r.table.position, "\(r.context): missing required key \"address\""); ok = false }
        let type = r.oneOf("type", ModbusDataType.allCases.map(\.rawValue)).flatMap(ModbusDataType.init(rawValue:)) ?? (table == .coil ? .bool : .uint16)
        if table == .coil && type != .bool { r.error(r.position(of: "type"), "a coil holds one bit: type must be \"bool\""); ok = false }
        let wo = r.oneOf("word_order", ["big", "little"]).flatMap(ModbusOrder.init(rawValue:)) ?? defaults.0
        let bo = r.oneOf("byte_order", ["big", "little"]).flatMap(ModbusOrder.init(rawValue:)) ?? defaults.1
        let scale = r.number("scale") ?? 1
        if scale == 0 { r.error(r.position(of: "scale"), "\"scale\" must not be 0"); ok = false }
        let offset = r.number("offset") ?? 0
        let readBack = r.bool("read_back") ?? false
        let multiple = r.bool("write_multiple") ?? false
        var values: [String: Double] = [:]
        if let vt = r.subtable("values", context: "\(r.context) values") {
            for e in vt.table.entries {
                if let v = vt.number(e.key) { values[e.key] = v }
            }
        }
        guard ok, let unit, let table, let address else { return nil }
        return ModbusWriteSpec(unit: unit, device: deviceName, table: table, address: UInt16(address),
                               encoding: ModbusEncoding(type: type, wordOrder: wo, byteOrder: bo, scale: scale, offset: offset),
                               readBack: readBack, forceMultiple: multiple, values: values)
    }
}

/// "tcp://host:port" (port 502 by default) → (host, port).
func parseModbusURL(_ s: String) -> (String, Int)? {
    guard s.hasPrefix("tcp://") else { return nil }
    let rest = s.dropFirst(6)
    guard !rest.isEmpty, !rest.contains("/") else { return nil }
    if let colon = rest.lastIndex(of: ":") {
        let host = String(rest[..<colon])
        guard !host.isEmpty, let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        return (host, port)
    }
    return (String(rest), 502)
}
