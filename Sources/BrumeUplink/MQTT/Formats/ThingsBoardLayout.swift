import BrumeCore
import BrumeMQTT
import BrumeStore

/// The ThingsBoard gateway MQTT API: Brume in the place of the ThingsBoard IoT Gateway.
/// Connect with the gateway device's access token as `username`.
///
/// - A batch is one message to `v1/gateway/telemetry`:
///   `{"boiler":[{"ts":1764170000123,"values":{"temperature":71.5,"state":"heating"}}],"door":[...]}`
///   (readings of a device with the same time share an entry; a metric twice at one time
///   gets its own entry).
/// - Before a device's first telemetry of a session: `v1/gateway/connect` `{"device":"boiler"}`.
/// - Server-side RPC (`rpc = true`): `v1/gateway/rpc` `{"device":"boiler","data":{"id":7,
///   "method":"valve","params":"close"}}` becomes the command `tb:boiler:7` for the actuator
///   `boiler/valve` (params: a number, boolean or string, or `{"value": ...}`), through the
///   command path (allowlist, ranges, journal, at most once); when it is done, failed, expired
///   or rejected, the reply goes to `v1/gateway/rpc`:
///   `{"device":"boiler","id":7,"data":{"success":true,"state":"done","detail":"..."}}`.
public struct ThingsBoardLayout: MQTTLayout {
    public let rpc: Bool
    private var connected: Set<String> = []

    public init(rpc: Bool) { self.rpc = rpc }

    public static let telemetryTopic = "v1/gateway/telemetry"
    public static let connectTopic = "v1/gateway/connect"
    public static let rpcTopic = "v1/gateway/rpc"

    public var subscriptions: [String] { rpc ? [Self.rpcTopic] : [] }
    public var publishesStatus: Bool { false }
    public var commandIDPrefix: String? { "tb:" }
    public mutating func nextWill() -> MQTTWill? { nil }

    public mutating func encode(_ batch: BatchRecord, readings: [Reading], now: Int64) -> [MQTTOutMessage] {
        var order: [String] = []
        // device → entries (time, metric names in the entry, JSON of the values so far)
        var entries: [String: [(ts: Int64, names: Set<String>, values: [UInt8])]] = [:]
        for r in readings {
            if entries[r.device] == nil { order.append(r.device) }
            var list = entries[r.device] ?? []
            if let last = list.last, last.ts == r.time, !last.names.contains(r.metric) {
                list[list.count - 1].names.insert(r.metric)
                list[list.count - 1].values.append(UInt8(ascii: ","))
                append(r, to: &list[list.count - 1].values)
            } else {
                var v: [UInt8] = []
                append(r, to: &v)
                list.append((r.time, [r.metric], v))
            }
            entries[r.device] = list
        }
        var out: [UInt8] = [UInt8(ascii: "{")]
        for (i, d) in order.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            WireFormat.appendString(d, to: &out)
            out.append(contentsOf: ":[".utf8)
            for (k, e) in entries[d]!.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: "{\"ts\":".utf8)
                WireFormat.appendInteger(e.ts, to: &out)
                out.append(contentsOf: ",\"values\":{".utf8)
                out.append(contentsOf: e.values)
                out.append(contentsOf: "}}".utf8)
            }
            out.append(UInt8(ascii: "]"))
        }
        out.append(UInt8(ascii: "}"))
        return [MQTTOutMessage(topic: Self.telemetryTopic, payload: out, key: order.joined(separator: "\n"))]
    }

    private func append(_ r: Reading, to out: inout [UInt8]) {
        WireFormat.appendString(r.metric, to: &out)
        out.append(UInt8(ascii: ":"))
        WireFormat.appendValue(r.value, to: &out)
    }

    public mutating func sessionStarted(now: Int64) -> [MQTTOutMessage] {
        connected.removeAll()
        return []
    }

    public mutating func prepare(_ messages: [MQTTOutMessage], now: Int64) -> [MQTTOutMessage] {
        var out: [MQTTOutMessage] = []
        for m in messages {
            for d in m.key.split(separator: "\n").map(String.init) where !connected.contains(d) {
                connected.insert(d)
                out.append(connectMessage(d))
            }
            out.append(m)
        }
        return out
    }

    private func connectMessage(_ device: String) -> MQTTOutMessage {
        var p = Array("{\"device\":".utf8)
        WireFormat.appendString(device, to: &p)
        p.append(UInt8(ascii: "}"))
        return MQTTOutMessage(topic: Self.connectTopic, payload: p, key: device, tracked: false)
    }

    public mutating func rebirth(now: Int64) -> [MQTTOutMessage] { connected.sorted().map(connectMessage) }

    public mutating func received(topic: String, payload: UnsafeRawBufferPointer, now: Int64) -> LayoutInbound {
        guard rpc, topic == Self.rpcTopic else { return .none }
        guard payload.count <= CommandParser.maxBytes, let o = try? JSONParser.parse(payload), case .object = o else {
            return .invalid(reason: "bad_rpc", detail: "an RPC request that is not a JSON object of at most \(CommandParser.maxBytes) bytes", replies: [])
        }
        // Our own replies come back on the same topic where the broker is shared (no "no local" on 3.1.1).
        if o["id"] != nil, o["data"]?["success"] != nil { return .none }
        guard case .string(let device)? = o["device"], let data = o["data"], case .object = data, let idValue = data["id"],
              case .number(let idNumber) = idValue, idNumber.rounded() == idNumber, abs(idNumber) < 1e15 else {
            return .invalid(reason: "bad_rpc", detail: "an RPC request needs \"device\" and \"data\" with a numeric \"id\"", replies: [])
        }
        let id = Int64(idNumber)
        guard case .string(let method)? = data["method"], !method.isEmpty else {
            return .invalid(reason: "bad_rpc", detail: "RPC \(id) to \(device) has no \"method\"",
                            replies: [replyMessage(device: device, id: id, success: false, state: "rejected", detail: "bad_rpc: no \"method\"")])
        }
        var params = data["params"] ?? .null
        if case .object = params, let v = params["value"] { params = v }
        let value: Value
        switch params {
        case .number(let d): value = .number(d)
        case .bool(let b): value = .bool(b)
        case .string(let s): value = .string(s)
        default:
            return .invalid(reason: "bad_rpc", detail: "RPC \(id) to \(device): params must be a number, boolean, string or {\"value\": ...}",
                            replies: [replyMessage(device: device, id: id, success: false, state: "rejected",
                                                   detail: "bad_value: params must be a number, boolean, string or {\"value\": ...}")])
        }
        return .commands([Command(id: "tb:\(device):\(id)", actuator: "\(device)/\(method)", value: value, expires: nil, origin: "thingsboard")], replies: [])
    }

    public func reply(to result: CommandResult) -> MQTTOutMessage? {
        guard result.state.isFinal, let id = result.id, id.hasPrefix("tb:") else { return nil }
        let rest = id.dropFirst(3)
        guard let colon = rest.lastIndex(of: ":"), let n = Int64(rest[rest.index(after: colon)...]) else { return nil }
        return replyMessage(device: String(rest[..<colon]), id: n, success: result.state == .done, state: result.state.rawValue, detail: result.detail)
    }

    private func replyMessage(device: String, id: Int64, success: Bool, state: String, detail: String) -> MQTTOutMessage {
        var p = Array("{\"device\":".utf8)
        WireFormat.appendString(device, to: &p)
        p.append(contentsOf: ",\"id\":".utf8)
        WireFormat.appendInteger(id, to: &p)
        p.append(contentsOf: ",\"data\":{\"success\":\(success),\"state\":".utf8)
        WireFormat.appendString(state, to: &p)
        p.append(contentsOf: ",\"detail\":".utf8)
        WireFormat.appendString(detail, to: &p)
        p.append(contentsOf: "}}".utf8)
        return MQTTOutMessage(topic: Self.rpcTopic, payload: p, key: device, tracked: false)
    }

    public mutating func stopping(now: Int64) -> [MQTTOutMessage] { [] }
}
