import BrumeCore
import BrumeRules
import BrumeFunctions

/// The typed configuration of one gateway, built from gateway.toml by
/// `ConfigLoader` after every check passed. Every key is documented in
/// docs/configuration.md with its type and default.
public struct GatewayConfig: Sendable {
    public var gateway: GatewaySection
    public var buffer: BufferSection
    public var log: LogSection
    public var uplinks: [UplinkConfig]
    public var sources: [SourceConfig]
    public var actuators: [ActuatorConfig] = []
    /// The local HTTP API (status page, metrics, live readings).
    public var api = APISection()
    /// What to do with readings stamped while the system clock is not synchronised.
    public var clock = ClockSection()
    /// Who may command the actuators: signatures, lifetimes, the journal's retention.
    public var commands = CommandsSection()
    /// Local rules, derived metrics and triggers, already compiled (checked).
    public var rules: RulesConfig = RulesConfig()
    /// User functions in WebAssembly, their modules loaded and checked.
    public var functions = FunctionsConfig()
    /// The files it was read from: the main file, then the conf.d files merged into it.
    public var files: [String] = []
    /// Their texts, in the same order (the running configuration's hash, `brume status`).
    public var texts: [String] = []
    /// Remote configuration and diagnostics.
    public var fleet = FleetSection()
}

public struct RulesConfig: Sendable {
    public var rules: [RuleSpec] = []
    public var derived: [DerivedSpec] = []
    public var triggers: [TriggerSpec] = []
    public var compiled: CompiledRules?
    public var isEmpty: Bool { rules.isEmpty && derived.isEmpty && triggers.isEmpty }
    public init() {}
}

/// A declared actuator: the only targets commands may have.
public struct ActuatorConfig: Sendable, Hashable {
    public enum Accepts: Sendable, Hashable {
        case oneOf([String])
        case range(Double, Double)
        case bool
        case number
        case string
    }
    public enum Via: Sendable, Hashable {
        /// Write `write` (with "{value}" replaced) to the serial source; optionally wait for a reply line containing `reply`.
        case serial(source: String, write: String, reply: String?)
        /// Publish `payload` to `topic` on the MQTT source's broker; optionally wait for `ackPayload` on `ackTopic`.
        case mqtt(source: String, topic: String, payload: String, ackTopic: String?, ackPayload: String?)
        /// Write a coil or holding register(s) on a device of the Modbus source, optionally reading it back.
        case modbus(source: String, write: ModbusWriteSpec)
        /// Set an output line of the GPIO source (true/1: active).
        case gpio(source: String, line: Int)
        /// A downlink to a Class A LoRaWAN device of the source, in the receive window after its
        /// next uplink: the payload (hex) of the command's value on `fport`.
        case lorawan(source: String, device: String, fport: Int, values: [String: String])

        /// The source the actuator goes through.
        public var sourceName: String {
            switch self {
            case .serial(let s, _, _), .mqtt(let s, _, _, _, _), .modbus(let s, _), .gpio(let s, _), .lorawan(let s, _, _, _): return s
            }
        }
    }
    public var name: String
    public var via: Via
    public var accepts: Accepts
    public var timeoutMillis: Int64
    public var safeValue: Value?
    public var safeAfterMillis: Int64?
    public var safeOnShutdown: Bool

    /// Why `value` is not acceptable, or nil.
    public func problem(with value: Value) -> String? {
        switch (accepts, value) {
        case (.oneOf(let xs), .string(let s)): return xs.contains(s) ? nil : "\"\(s)\" is not one of \(xs.map { "\"\($0)\"" }.joined(separator: ", "))"
        case (.oneOf(let xs), _): return "expected one of \(xs.map { "\"\($0)\"" }.joined(separator: ", "))"
        case (.range(let lo, let hi), .number(let d)): return (d >= lo && d <= hi) ? nil : "\(WireFormat.formatNumber(d)) is outside \(WireFormat.formatNumber(lo))...\(WireFormat.formatNumber(hi))"
        case (.range, _), (.number, .bool), (.number, .string): return "expected a number"
        case (.number, .number(let d)): return d.isFinite ? nil : "expected a finite number"
        case (.bool, .bool): return nil
        case (.bool, _): return "expected true or false"
        case (.string, .string(let s)):
            if s.utf8.count > 256 { return "string too long" }
            // A line end or escape sequence would end the device's command line or start another.
            if let bad = s.unicodeScalars.first(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) || $0 == "\u{2028}" || $0 == "\u{2029}" }) {
                return "contains a control character (U+\(String(bad.value, radix: 16, uppercase: true))): not sent to a device"
            }
            return nil
        case (.string, _): return "expected a string"
        }
    }
}

public struct GatewaySection: Sendable, Hashable {
    /// Identifies this gateway to the cloud (`gw` in every batch). Required.
    public var id: String
    /// Where the outbox and other state live. Default "/var/lib/brume".
    public var dataDir: String
}

public struct BufferSection: Sendable, Hashable {
    public var maxBytes: Int64
    public var maxAgeMillis: Int64
    public var whenFull: String
    public var commitIntervalMillis: Int64
    public var synchronous: String
    /// `fault_restart_after`: a storage fault only a restart clears (I/O error, corruption,
    /// the data folder gone) is waited out this long before the watchdog stops being fed; the
    /// gateway exits by itself half as long again later.
    public var faultRestartAfterMillis: Int64 = 30_000
    /// `hold`: readings of sources that deliver them again (QoS1 MQTT, acknowledged after
    /// commit) wait in memory this long for the cloud's acknowledgement before they are
    /// committed; "0s": committed within `commit_interval` like every other reading.
    public var holdMillis: Int64 = 2_000
}

/// `[clock]`: boards without a real-time clock stamp readings with 1970 or a stale time until
/// NTP synchronises the system clock.
public struct ClockSection: Sendable, Hashable {
    public enum Unsynchronised: String, Sendable, Hashable, CaseIterable {
        /// Readings stamped while the clock is not synchronised wait (up to `wait`) and are
        /// corrected once it is; after `wait`, or across a reboot, they are sent flagged.
        case correct
        /// Sent at once, flagged `"clock":"unsynced"` (never corrected).
        case flag
        /// The system clock is trusted as it is (an RTC and no NTP by design): nothing marked.
        case trust
    }
    /// `unsynchronised`: "correct" (default), "flag" or "trust".
    public var unsynchronised: Unsynchronised = .correct
    /// `wait`: how long readings stamped by an unsynchronised clock wait for the sync.
    public var waitMillis: Int64 = 600_000
    public init() {}
}

/// `[fleet]`: what a backend may do to this gateway over its uplink (docs/fleet.md).
public struct FleetSection: Sendable, Hashable {
    /// `remote_config`: accept signed configuration pushes on PREFIX/config/set.
    public var remoteConfig = false
    /// `health_window`: how long a pushed configuration has to prove healthy before it is
    /// rolled back by itself.
    public var healthWindowMillis: Int64 = 60_000
    /// `health`: what healthy means: "uplinks" (every uplink online, a batch acknowledged since
    /// the push or nothing to send) or "uplinks_and_sources" (and no source disconnected).
    public var healthSources = true
    /// `diagnostics`: answer PREFIX/diagnostics/request (status, logs, ports, outbox).
    public var diagnostics = false
    /// `updates`: accept signed package offers on PREFIX/update/offer (installed by the
    /// brume-update unit, rolled back when not healthy).
    public var updates = false
    /// `update_window`: how long a newly installed package has to prove healthy.
    public var updateWindowMillis: Int64 = 120_000
    /// `update_ca_file`: the CA that signs the package server's certificate (default: the system's).
    public var updateCAFile: String?
    public init() {}
    public var enabled: Bool { remoteConfig || diagnostics || updates }
}

/// `[commands]`: commands from the cloud drive real actuators; who may send them.
public struct CommandsSection: Sendable, Hashable {
    /// `keys`: key id → Ed25519 public key (32 bytes, base64) of the backends that sign commands.
    public var publicKeys: [String: [UInt8]] = [:]
    /// `signatures`: "required" (the default once keys are set) or "optional" (signed ones are
    /// checked, unsigned ones accepted: a migration); without keys, commands are unsigned.
    public var requireSignatures = false
    /// `signatures = "off"`: unsigned commands on purpose (no warning from brume check).
    public var unsignedAcknowledged = false
    /// `max_lifetime`: a command's `expires` may be at most this far ahead (signed commands must
    /// carry one): with the journal's retention beyond it, a replay is always expired.
    public var maxLifetimeMillis: Int64 = 86_400_000
    /// `retention`: finished commands are forgotten after this long (the journal stays small).
    public var retentionMillis: Int64 = 7 * 86_400_000
    public init() {}
}

public struct LogSection: Sendable, Hashable {
    public var level: String
}

/// `[api]`: the local HTTP server for technicians and Prometheus.
public struct APISection: Sendable, Hashable {
    public var enabled = true
    public var host = "127.0.0.1"
    public var port = 9669
    /// Required when `host` is not a loopback address: requests need `Authorization: Bearer <token>`.
    public var tokenFile: String?
    /// The gateway's own health as readings (device = "brume"), every this often; nil: off.
    public var selfTelemetryMillis: Int64?
    public init() {}

    public var isLoopback: Bool { host == "127.0.0.1" || host == "::1" || host == "localhost" || host.hasPrefix("127.") }
}

public struct TLSConfig: Sendable, Hashable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public var verifyHostname: Bool
}

public struct MQTTConnection: Sendable, Hashable {
    public var url: BrokerURL
    /// Other nodes of the broker cluster (`urls = [...]` after the first): failover order.
    public var alternates: [BrokerURL] = []
    public var clientID: String
    public var username: String?
    public var passwordFile: String?
    public var tls: TLSConfig?
    public var keepAliveSeconds: Int
}

public struct UplinkConfig: Sendable, Hashable {
    public enum Kind: String, Sendable { case mqtt, http }
    public var name: String
    public var kind: Kind
    /// kind = "mqtt": the broker connection.
    public var mqtt: MQTTConnection?
    /// kind = "http": the endpoint.
    public var http: HTTPSinkConfig?
    /// The MQTT connection (kind = "mqtt" only).
    public var connection: MQTTConnection { mqtt! }
    /// Which readings this uplink carries ("device/metric" globs); empty: all.
    public var match: [String] = []
    /// Bandwidth cap in bytes per second (metered links); nil: none.
    public var maxBytesPerSecond: Int64?
    /// What the status and logs show: the URL, never credentials.
    public var endpoint: String {
        switch kind {
        case .mqtt: return ([mqtt!.url] + mqtt!.alternates).map(\.description).joined(separator: ",")
        case .http: return http!.displayURL
        }
    }
    /// Topic prefix; "{gateway}" is replaced by the gateway id.
    public var topicPrefix: String
    public var batchMaxReadings: Int
    public var batchMaxDelayMillis: Int64
    /// Batches published and not yet acknowledged, at most.
    public var maxInflight: Int
    public var historicalAfterMillis: Int64
    /// `batch_max_bytes`: no batch larger than this (encoded, before compression); nil: none.
    public var batchMaxBytes: Int?
    /// `mqtt_version`: "auto" (MQTT 5 where the broker speaks it), "5" or "3.1.1".
    public var mqttVersion: String = "auto"
    /// `compression` (MQTT): "none" or "gzip" (to `{prefix}/telemetry/gzip`).
    public var compression: String = "none"
    /// `max_bytes_per_day`: a daily budget for a metered link; nil: none.
    public var maxBytesPerDay: Int64?
    /// `format` (MQTT): how batches are laid out on the wire (docs/wire-format.md).
    public var format: MQTTFormatConfig = .brume
    /// Whether this uplink's connection carries Brume's v1 commands (`{prefix}/commands`).
    public var carriesV1Commands: Bool { kind == .mqtt && format == .brume }
}

/// How an MQTT uplink lays out telemetry (`format = ...`).
public enum MQTTFormatConfig: Sendable, Hashable {
    /// Brume's v1 JSON batches on `{prefix}/telemetry` (the default).
    case brume
    /// SenML (RFC 8428) JSON packs on `{prefix}/senml`.
    case senml
    /// One message per reading on a topic template (Node-RED, Telegraf, Home Assistant).
    case perReading(PerReadingFormat)
    /// A Sparkplug B edge node (`spBv1.0/{group}/...`).
    case sparkplugB(SparkplugFormat)
    /// The ThingsBoard gateway API (`v1/gateway/telemetry`, `connect`, `rpc`).
    case thingsboard(ThingsBoardFormat)

    public var name: String {
        switch self {
        case .brume: return "brume"
        case .senml: return "senml"
        case .perReading: return "per_reading"
        case .sparkplugB: return "sparkplug_b"
        case .thingsboard: return "thingsboard"
        }
    }
}

public struct PerReadingFormat: Sendable, Hashable {
    /// Topic with `{gateway}`, `{device}`, `{metric}`.
    public var topic: String
    /// `value = "plain"` (the value as text) or `"json"` (`{"t":...,"v":...}`).
    public var json: Bool
    public var retain: Bool
    /// Home Assistant MQTT discovery prefix (`homeassistant_discovery = true`); nil: off.
    public var discoveryPrefix: String?
    public init(topic: String, json: Bool = false, retain: Bool = false, discoveryPrefix: String? = nil) {
        self.topic = topic
        self.json = json
        self.retain = retain
        self.discoveryPrefix = discoveryPrefix
    }
}

public struct SparkplugFormat: Sendable, Hashable {
    public var groupID: String
    public var edgeNodeID: String
    /// DCMD writes go to the command path (actuator `{device}/{metric}`).
    public var commands: Bool
    public init(groupID: String, edgeNodeID: String, commands: Bool = false) {
        self.groupID = groupID
        self.edgeNodeID = edgeNodeID
        self.commands = commands
    }
}

public struct ThingsBoardFormat: Sendable, Hashable {
    /// Server-side RPC to a device goes to the command path (actuator `{device}/{method}`).
    public var rpc: Bool
    public init(rpc: Bool = false) { self.rpc = rpc }
}

public struct SourceConfig: Sendable, Hashable {
    public var name: String
    public var kind: Kind
    public enum Kind: Sendable, Hashable {
        case mqtt(MQTTSourceConfig)
        case serial(SerialSourceConfig)
        case modbus(ModbusSourceConfig)
        case board(BoardSourceConfig)
        case onewire(OneWireSourceConfig)
        case lorawan(LoRaWANSourceConfig)
        case gpio(GPIOSourceConfig)
    }
}

/// `kind = "gpio"`: lines of one GPIO chip: inputs (contacts, pulse counters) and outputs.
public struct GPIOSourceConfig: Sendable, Hashable {
    public struct Input: Sendable, Hashable {
        public var line: Int
        public var device: String
        public var metric: String
        /// nil: a state input; "rising"/"falling": a pulse counter on that edge.
        public var counter: String?
        public var scale: Double
        public var debounceMillis: Int64
        /// "as-is", "disable", "pull-up", "pull-down".
        public var bias: String
        public var activeLow: Bool
    }
    public struct Output: Sendable, Hashable {
        public var line: Int
        public var safe: Bool
        public var activeLow: Bool
    }
    /// What `gpiod_chip_open_lookup` takes ("gpiochip0", a path, a label); "simulated:DIR" in tests.
    public var chip: String
    public var intervalMillis: Int64
    public var inputs: [Input]
    public var outputs: [Output]
}

/// `kind = "lorawan"`: the server of a Semtech UDP packet forwarder; the devices it decodes.
public struct LoRaWANSourceConfig: Sendable, Hashable {
    public struct Device: Sendable, Hashable {
        /// 8 hex digits, upper case.
        public var devAddr: String
        public var device: String
        /// 32 hex digits each (secrets: never printed).
        public var nwkSKey: String
        public var appSKey: String
        /// "cayenne" or "raw".
        public var codec: String
        public var allowCounterReset: Bool
    }
    public var host: String
    public var port: Int
    /// Forwarder EUIs (16 hex digits, upper case) allowed to send; empty: any.
    public var gateways: [String]
    public var signal: Bool
    /// Answers with downlinks (actuator commands, ACKs of confirmed uplinks); false beside a
    /// network server that does.
    public var downlinks: Bool
    public var devices: [Device]
}

/// `kind = "onewire"`: DS18B20-style probes on the kernel's w1 bus, by ROM id.
public struct OneWireSourceConfig: Sendable, Hashable {
    public struct Probe: Sendable, Hashable {
        public var id: String
        public var device: String
        public var metric: String
    }
    public var probes: [Probe]
    public var intervalMillis: Int64
    /// `/sys/bus/w1/devices` (a copy of it in tests).
    public var root: String
}

/// `kind = "board"`: the board's own health (SoC temperature, throttling, SD writes, clock).
public struct BoardSourceConfig: Sendable, Hashable {
    public var intervalMillis: Int64
    /// The device name of the readings (default: the gateway id).
    public var device: String
    /// Where /sys and /proc are read ("/"; a copy of a board's tree for tests).
    public var root: String
    /// The block device whose writes are counted (nil: the one holding data_dir).
    public var disk: String?
}

public struct SerialSourceConfig: Sendable, Hashable {
    public var port: PortSpec
    public var baud: Int
    public var dataBits: Int
    public var parity: String
    public var stopBits: Int
    public var flowControl: String
    public var format: SerialFormat
    /// Device name of the readings (default: the source name).
    public var device: String
    public var maxFrame: Int
    public var poll: SerialPollConfig?
}

public struct SerialPollConfig: Sendable, Hashable {
    public var send: String
    public var everyMillis: Int64
    public var timeoutMillis: Int64
    public var retries: Int
}

public struct MQTTSourceConfig: Sendable, Hashable {
    public var connection: MQTTConnection
    public var subscribe: [String]
    public var qos: Int
    /// Template for the device name: literal text and "{N}" topic levels (0-based).
    public var device: TopicTemplate
    public var metric: TopicTemplate
    public var payload: PayloadFormat
    /// Keep the broker session while the gateway is away (QoS1 readings wait at the broker).
    public var persistentSession: Bool
    /// QoS1: acknowledge a message to the broker only once its readings are
    /// committed to the outbox (no loss on a crash; default true).
    public var ackAfterCommit: Bool
    /// `mqtt_version`: "auto" (MQTT 5 where the broker speaks it), "5" or "3.1.1".
    public var mqttVersion: String = "auto"
    /// `receive_maximum` (MQTT 5): QoS1 messages the broker may send before Brume acknowledges
    /// them — the window that lets a commit per second carry a second of readings.
    public var receiveMaximum: Int = 1000
}

/// An HTTP(S) ingestion endpoint (`kind = "http"`).
public struct HTTPSinkConfig: Sendable, Hashable {
    public enum Format: String, Sendable { case json, influx, senml }
    public enum Auth: Sendable, Hashable {
        case none
        case bearer(tokenFile: String)
        /// InfluxDB 2.x API token: `Authorization: Token ...`.
        case token(tokenFile: String)
        case oauth2(tokenURL: String, clientID: String, clientSecretFile: String, scope: String?)
    }
    public var url: String
    public var format: Format
    public var gzip: Bool
    public var timeoutMillis: Int64
    public var auth: Auth
    public var tls: TLSConfig?
    /// InfluxDB line protocol: what becomes the measurement ("metric" or "device").
    public var influxMeasurement: String
    /// The URL for logs and status: query parameters that carry credentials (InfluxDB's
    /// `u`/`p`, `token`, `api_key` ...) are masked.
    public var displayURL: String {
        guard let q = url.firstIndex(of: "?") else { return url }
        let secret: Set<String> = ["p", "u", "password", "pass", "token", "access_token", "api_key", "apikey", "key", "secret", "auth"]
        let params = url[url.index(after: q)...].split(separator: "&").map { kv -> String in
            let name = kv.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
            return secret.contains(name.lowercased()) ? "\(name)=***" : String(kv)
        }
        return String(url[..<q]) + "?" + params.joined(separator: "&")
    }

    /// The value of `name=` in a URL's query string, if any.
    public static func queryValue(_ name: String, in url: String) -> String? {
        guard let q = url.firstIndex(of: "?") else { return nil }
        for kv in url[url.index(after: q)...].split(separator: "&") {
            let parts = kv.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.first == Substring(name) { return parts.count > 1 ? String(parts[1]) : "" }
        }
        return nil
    }

    public init(url: String, format: Format = .json, gzip: Bool = true, timeoutMillis: Int64 = 10_000, auth: Auth = .none, tls: TLSConfig? = nil,
                influxMeasurement: String = "metric") {
        self.url = url
        self.format = format
        self.gzip = gzip
        self.timeoutMillis = timeoutMillis
        self.auth = auth
        self.tls = tls
        self.influxMeasurement = influxMeasurement
    }
}
