import BrumeCore
import BrumeMQTT
import BrumeStore

/// One message per reading on a topic of its own (`topic = "site/{device}/{metric}"`), for
/// Node-RED, Telegraf's `mqtt_consumer`, Home Assistant and anything that reads one value per
/// topic.
///
/// - `value = "plain"`: the value as text (`71.5`, `true`, `heating`); `"json"`:
///   `{"t":1764170000123,"v":71.5}` (with `"clock":"unsynced"` as in v1, `"hist":true` for
///   backlog).
/// - `retain = true`: the broker keeps the last value of each topic for late subscribers.
///   With a backlog, the retained value is the last one *sent*, which can be older than
///   the last one read (live readings overtake the backlog); use `value = "json"` and `t`.
/// - `homeassistant_discovery = true`: before a metric's first reading of a session, a
///   retained discovery config on `{discovery_prefix}/sensor|binary_sensor/brume_{gw}/{device}_{metric}/config`
///   (Home Assistant MQTT discovery), with the uplink's status topic as availability.
public struct PerReadingLayout: MQTTLayout {
    public struct Format: Sendable {
        /// Topic with `{device}` and `{metric}` (`{gateway}` already replaced).
        public var topic: String
        public var json: Bool
        public var retain: Bool
        public var discoveryPrefix: String?
        public init(topic: String, json: Bool, retain: Bool, discoveryPrefix: String?) {
            self.topic = topic
            self.json = json
            self.retain = retain
            self.discoveryPrefix = discoveryPrefix
        }
    }
    public let format: Format
    public let gateway: String
    public let statusTopic: String
    private var announced: Set<String> = []
    private var kinds: [String: String] = [:] // key → "number" | "bool" | "string" of the last reading

    public init(format: Format, gateway: String, statusTopic: String) {
        self.format = format
        self.gateway = gateway
        self.statusTopic = statusTopic
    }

    public var subscriptions: [String] { [] }
    public var publishesStatus: Bool { true }
    public var commandIDPrefix: String? { nil }
    public mutating func nextWill() -> MQTTWill? { nil }

    func topic(device: String, metric: String) -> String {
        format.topic.replacingAll("{device}", with: topicLevel(device)).replacingAll("{metric}", with: metric.isEmpty ? "_" : metric.filter { $0 != "+" && $0 != "#" })
    }

    public mutating func encode(_ batch: BatchRecord, readings: [Reading], now: Int64) -> [MQTTOutMessage] {
        readings.map { r in
            var p: [UInt8] = []
            if format.json {
                p.append(contentsOf: "{\"t\":".utf8)
                WireFormat.appendInteger(r.time, to: &p)
                p.append(contentsOf: ",\"v\":".utf8)
                WireFormat.appendValue(r.value, to: &p)
                if r.unsyncedBootMillis != nil { p.append(contentsOf: ",\"clock\":\"unsynced\"".utf8) }
                if batch.historical { p.append(contentsOf: ",\"hist\":true".utf8) }
                p.append(UInt8(ascii: "}"))
            } else {
                p.append(contentsOf: r.value.description.utf8)
            }
            let key = r.device + "\t" + r.metric
            switch r.value {
            case .number: kinds[key] = "number"
            case .bool: kinds[key] = "bool"
            case .string: kinds[key] = "string"
            }
            return MQTTOutMessage(topic: topic(device: r.device, metric: r.metric), payload: p, retain: format.retain, key: key)
        }
    }

    public mutating func sessionStarted(now: Int64) -> [MQTTOutMessage] {
        announced.removeAll()
        return []
    }

    public mutating func prepare(_ messages: [MQTTOutMessage], now: Int64) -> [MQTTOutMessage] {
        guard format.discoveryPrefix != nil else { return messages }
        var out: [MQTTOutMessage] = []
        for m in messages {
            if !announced.contains(m.key), let d = discovery(m.key) {
                announced.insert(m.key)
                out.append(d)
            }
            out.append(m)
        }
        return out
    }

    public mutating func rebirth(now: Int64) -> [MQTTOutMessage] { announced.sorted().compactMap(discovery) }

    /// Home Assistant ids: letters, digits, `_` and `-`.
    static func haID(_ s: String) -> String {
        String(s.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") ? $0 : "_" })
    }

    func discovery(_ key: String) -> MQTTOutMessage? {
        guard let prefix = format.discoveryPrefix, let tab = key.firstIndex(of: "\t") else { return nil }
        let device = String(key[..<tab]), metric = String(key[key.index(after: tab)...])
        let kind = kinds[key] ?? "number"
        let component = kind == "bool" ? "binary_sensor" : "sensor"
        let node = "brume_" + Self.haID(gateway)
        let object = Self.haID(device) + "_" + Self.haID(metric)
        var p: [UInt8] = []
        func field(_ k: String, _ v: String, first: Bool = false) {
            if !first { p.append(UInt8(ascii: ",")) }
            WireFormat.appendString(k, to: &p)
            p.append(UInt8(ascii: ":"))
            WireFormat.appendString(v, to: &p)
        }
        p.append(UInt8(ascii: "{"))
        field("name", metric, first: true)
        field("unique_id", node + "_" + object)
        field("object_id", node + "_" + object)
        field("state_topic", topic(device: device, metric: metric))
        if format.json { field("value_template", "{{ value_json.v }}") }
        if kind == "bool" {
            field("payload_on", "true")
            field("payload_off", "false")
        } else if kind == "number" {
            field("state_class", "measurement")
        }
        field("availability_topic", statusTopic)
        field("availability_template", "{{ value_json.state }}")
        field("payload_available", "online")
        field("payload_not_available", "offline")
        p.append(contentsOf: ",\"device\":{\"identifiers\":[".utf8)
        WireFormat.appendString(node + "_" + Self.haID(device), to: &p)
        p.append(UInt8(ascii: "]"))
        field("name", device)
        field("via_device", node)
        field("manufacturer", "Brume gateway \(gateway)")
        p.append(contentsOf: "}}".utf8)
        return MQTTOutMessage(topic: "\(prefix)/\(component)/\(node)/\(object)/config", payload: p, retain: true, key: key, tracked: false)
    }

    public mutating func received(topic: String, payload: UnsafeRawBufferPointer, now: Int64) -> LayoutInbound { .none }
    public func reply(to result: CommandResult) -> MQTTOutMessage? { nil }
    public mutating func stopping(now: Int64) -> [MQTTOutMessage] { [] }
}
