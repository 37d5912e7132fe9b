import BrumeCore
import BrumeMQTT
import BrumeStore
import SwiftProtobuf

/// A Sparkplug B (3.0) edge node: Brume is the node `{edge node id}` of group `{group id}`,
/// and each Brume device a Sparkplug device of it.
///
/// - Each connection has a birth/death sequence number `bdSeq` (0–255, one more per CONNECT):
///   its will is `NDEATH` carrying it, and its first message `NBIRTH` (seq 0) carries the same
///   value with the metric `Node Control/Rebirth`.
/// - Before a device's first `DDATA` of a session, and again when it gains a metric or a
///   metric changes type, a `DBIRTH` declares all its metrics: name, alias, datatype and the
///   last value. `DDATA` then names metrics by alias only (and repeats the datatype, which
///   several decoders need).
/// - `seq` counts every NBIRTH/DBIRTH/DDATA of the session 0, 1, ... 255, 0 without gaps, in
///   the order they are published.
/// - A batch of backlog (historical) has `is_historical` on every metric.
/// - `NCMD` `Node Control/Rebirth` = true: NBIRTH and every DBIRTH again (seq from 0).
/// - `DCMD` writes (when enabled): each metric becomes a command for the actuator
///   `{device}/{metric}` through Brume's command path.
///
/// Brume publishes data at QoS 1 (the specification says 0): the broker's PUBACK is what
/// acknowledges readings in the outbox. A host subscribed at QoS 0 receives them at QoS 0.
public struct SparkplugLayout: MQTTLayout {
    public let group: String
    public let node: String
    public let commands: Bool
    /// The bdSeq of the current (or next) connection; -1 before the first.
    private(set) var bdSeq: Int = -1
    private var seq: UInt8 = 0
    private var nextAlias: UInt64 = 1
    struct MetricDef {
        var alias: UInt64
        var datatype: UInt32
        var last: (time: Int64, value: Value)
    }
    struct Device {
        var order: [String] = []
        var metrics: [String: MetricDef] = [:]
        /// Incremented when a metric is added or changes type: a new DBIRTH is due.
        var version = 0
    }
    private var devices: [String: Device] = [:]
    private var deviceOrder: [String] = []
    /// device → version announced by a DBIRTH in this session.
    private var born: [String: Int] = [:]

    public init(group: String, node: String, commands: Bool) {
        self.group = group
        self.node = node
        self.commands = commands
    }

    public static let namespace = "spBv1.0"
    var nodeTopicPrefix: String { "\(Self.namespace)/\(group)" }
    func topic(_ type: String, device: String? = nil) -> String {
        device.map { "\(nodeTopicPrefix)/\(type)/\(node)/\(topicLevel($0))" } ?? "\(nodeTopicPrefix)/\(type)/\(node)"
    }

    public var subscriptions: [String] {
        commands ? [topic("NCMD"), topic("DCMD", device: nil) + "/+"] : [topic("NCMD")]
    }

    public var publishesStatus: Bool { false }
    public var commandIDPrefix: String? { "spb:" }

    public mutating func nextWill() -> MQTTWill? {
        bdSeq = (bdSeq + 1) % 256
        var p = Sparkplug_Payload()
        p.timestamp = UInt64(max(0, wallClockMillis()))
        p.metrics = [Self.bdSeqMetric(bdSeq)]
        return MQTTWill(topic: topic("NDEATH"), payload: Self.bytes(p), qos: 1, retain: false)
    }

    static func bdSeqMetric(_ v: Int) -> Sparkplug_Payload.Metric {
        var m = Sparkplug_Payload.Metric()
        m.name = "bdSeq"
        m.datatype = DataType.int64
        m.longValue = UInt64(v)
        return m
    }

    enum DataType {
        static let int64: UInt32 = 4
        static let double: UInt32 = 10
        static let boolean: UInt32 = 11
        static let string: UInt32 = 12
    }

    static func datatype(of v: Value) -> UInt32 {
        switch v {
        case .number: return DataType.double
        case .bool: return DataType.boolean
        case .string: return DataType.string
        }
    }

    static func set(_ v: Value, on m: inout Sparkplug_Payload.Metric) {
        switch v {
        case .number(let d): m.doubleValue = d
        case .bool(let b): m.booleanValue = b
        case .string(let s): m.stringValue = s
        }
    }

    static func bytes(_ p: Sparkplug_Payload) -> [UInt8] {
        (try? p.serializedBytes()) ?? []
    }

    public mutating func encode(_ batch: BatchRecord, readings: [Reading], now: Int64) -> [MQTTOutMessage] {
        // One DDATA per device, in the order devices first appear; metrics in reading order.
        var order: [String] = []
        var byDevice: [String: [Sparkplug_Payload.Metric]] = [:]
        for r in readings {
            let type = Self.datatype(of: r.value)
            var dev = devices[r.device] ?? { deviceOrder.append(r.device); return Device() }()
            var def: MetricDef
            if let d = dev.metrics[r.metric] {
                def = d
                if d.datatype != type { def.datatype = type; dev.version += 1 }
            } else {
                def = MetricDef(alias: nextAlias, datatype: type, last: (r.time, r.value))
                nextAlias += 1
                dev.order.append(r.metric)
                dev.version += 1
            }
            def.last = (r.time, r.value)
            dev.metrics[r.metric] = def
            devices[r.device] = dev
            var m = Sparkplug_Payload.Metric()
            m.alias = def.alias
            m.timestamp = UInt64(max(0, r.time))
            m.datatype = type
            if batch.historical { m.isHistorical = true }
            Self.set(r.value, on: &m)
            if byDevice[r.device] == nil { order.append(r.device) }
            byDevice[r.device, default: []].append(m)
        }
        return order.map { device in
            var p = Sparkplug_Payload()
            p.timestamp = UInt64(max(0, now))
            p.metrics = byDevice[device]!
            return MQTTOutMessage(topic: topic("DDATA", device: device), payload: Self.bytes(p), key: device)
        }
    }

    private mutating func nextSeq() -> UInt64 {
        let s = seq
        seq = seq &+ 1
        return UInt64(s)
    }

    /// `payload` (without seq) with `seq` appended: protobuf fields may come in any order.
    private mutating func withSeq(_ payload: [UInt8]) -> [UInt8] {
        var out = payload
        out.append(0x18) // field 3, varint
        var v = nextSeq()
        repeat {
            let b = UInt8(v & 0x7F)
            v >>= 7
            out.append(v == 0 ? b : b | 0x80)
        } while v != 0
        return out
    }

    public mutating func sessionStarted(now: Int64) -> [MQTTOutMessage] {
        born.removeAll()
        seq = 0
        return [nbirth(now: now)]
    }

    private mutating func nbirth(now: Int64) -> MQTTOutMessage {
        var p = Sparkplug_Payload()
        p.timestamp = UInt64(max(0, now))
        var rebirth = Sparkplug_Payload.Metric()
        rebirth.name = "Node Control/Rebirth"
        rebirth.datatype = DataType.boolean
        rebirth.booleanValue = false
        p.metrics = [Self.bdSeqMetric(max(0, bdSeq)), rebirth]
        p.seq = nextSeq()
        return MQTTOutMessage(topic: topic("NBIRTH"), payload: Self.bytes(p), key: "", tracked: false)
    }

    private mutating func dbirth(_ device: String, now: Int64) -> MQTTOutMessage? {
        guard let dev = devices[device] else { return nil }
        var p = Sparkplug_Payload()
        p.timestamp = UInt64(max(0, now))
        p.metrics = dev.order.compactMap { name in
            guard let d = dev.metrics[name] else { return nil }
            var m = Sparkplug_Payload.Metric()
            m.name = name
            m.alias = d.alias
            m.timestamp = UInt64(max(0, d.last.time))
            m.datatype = d.datatype
            Self.set(d.last.value, on: &m)
            return m
        }
        p.seq = nextSeq()
        born[device] = dev.version
        return MQTTOutMessage(topic: topic("DBIRTH", device: device), payload: Self.bytes(p), key: device, tracked: false)
    }

    public mutating func prepare(_ messages: [MQTTOutMessage], now: Int64) -> [MQTTOutMessage] {
        var out: [MQTTOutMessage] = []
        for var m in messages {
            if let v = devices[m.key]?.version, born[m.key] != v, let b = dbirth(m.key, now: now) { out.append(b) }
            m.payload = withSeq(m.payload)
            out.append(m)
        }
        return out
    }

    public mutating func rebirth(now: Int64) -> [MQTTOutMessage] {
        var out = sessionStarted(now: now)
        for d in deviceOrder { if let b = dbirth(d, now: now) { out.append(b) } }
        return out
    }

    public mutating func received(topic t: String, payload: UnsafeRawBufferPointer, now: Int64) -> LayoutInbound {
        let parts = t.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0] == Self.namespace, parts[1] == group, parts[3] == node else { return .none }
        guard payload.count <= 64 * 1024 else {
            return .invalid(reason: "too_large", detail: "\(parts[2]) of \(payload.count) bytes on \(t) (at most 64 KiB)", replies: [])
        }
        let p: Sparkplug_Payload
        do {
            p = try Sparkplug_Payload(serializedBytes: Array(payload))
        } catch {
            return .invalid(reason: "bad_sparkplug_payload", detail: "\(parts[2]) on \(t) is not a Sparkplug B payload: \(error)", replies: [])
        }
        switch (parts[2], parts.count) {
        case ("NCMD", 4):
            if p.metrics.contains(where: { $0.name == "Node Control/Rebirth" && $0.booleanValue }) { return .rebirth }
            return .invalid(reason: "unsupported_ncmd", detail: "NCMD metrics \(p.metrics.map(\.name)) are not supported (only Node Control/Rebirth)", replies: [])
        case ("DCMD", 5) where commands:
            let device = String(parts[4])
            guard let dev = devices.first(where: { topicLevel($0.key) == device }) else {
                // Not born here: its metric names are what the command says.
                return .commands(p.metrics.compactMap { command(device: device, name: $0.hasName ? $0.name : nil, metric: $0, payload: p, now: now) }, replies: [])
            }
            return .commands(p.metrics.compactMap { m in
                let name = m.hasName ? m.name : dev.value.metrics.first(where: { $0.value.alias == m.alias })?.key
                return command(device: dev.key, name: name, metric: m, payload: p, now: now)
            }, replies: [])
        default:
            return .none
        }
    }

    private func command(device: String, name: String?, metric m: Sparkplug_Payload.Metric, payload p: Sparkplug_Payload, now: Int64) -> Command? {
        let value: Value
        switch m.value {
        case .doubleValue(let d): value = .number(d)
        case .floatValue(let f): value = .number(Double(f))
        case .intValue(let i):
            // Int8/16/32 travel as uint32 holding the two's complement.
            value = .number([1, 2, 3].contains(m.datatype) ? Double(Int32(bitPattern: i)) : Double(i))
        case .longValue(let l): value = .number(m.datatype == 4 ? Double(Int64(bitPattern: l)) : Double(l))
        case .booleanValue(let b): value = .bool(b)
        case .stringValue(let s): value = .string(s)
        default: value = .string("") // no value: refused by the actuator's checks
        }
        let name = name ?? "alias-\(m.alias)"
        let stamp = p.hasTimestamp ? p.timestamp : UInt64(max(0, now))
        return Command(id: "spb:\(device):\(name):\(stamp)", actuator: "\(device)/\(name)", value: value, expires: nil, origin: "sparkplug")
    }

    public func reply(to result: CommandResult) -> MQTTOutMessage? { nil }

    public mutating func stopping(now: Int64) -> [MQTTOutMessage] {
        var p = Sparkplug_Payload()
        p.timestamp = UInt64(max(0, now))
        p.metrics = [Self.bdSeqMetric(max(0, bdSeq))]
        return [MQTTOutMessage(topic: topic("NDEATH"), payload: Self.bytes(p), key: "", tracked: false)]
    }
}
