import BrumeConfig
import BrumeCore
import BrumeMQTT
import BrumeStore
import BrumeUplink
import Logging

/// A running uplink: its configuration (status, reload) and its sync loop.
public struct RunningUplink: Sendable {
    public let config: UplinkConfig
    public let loop: SyncLoop
    public var state: UplinkState { loop.state }
    public var stats: UplinkStats { loop.stats }
    func run() async { await loop.run() }
    func shutdown() async { await loop.shutdown() }
}

/// Uplink kinds: `[uplink.*]` configuration → a sink for the one sync loop.
enum UplinkKinds {
    static func make(_ u: UplinkConfig, gatewayID: String, outbox: Outbox, logger: Logger) throws -> RunningUplink {
        var lg = logger
        lg[metadataKey: "uplink.name"] = "\(u.name)"
        let sink: any BatchSink
        switch u.kind {
        case .mqtt:
            var client = mqttClientOptions(u.connection, password: try Gateway.secret(u.connection.passwordFile, logger: logger))
            client.protocolVersion = MQTTProtocolVersion(rawValue: u.mqttVersion == "3.1.1" ? "v3.1.1" : u.mqttVersion == "5" ? "v5" : "auto") ?? .auto
            let format: MQTTSinkFormat
            switch u.format {
            case .brume: format = .brume
            case .senml: format = .senml
            case .perReading(let f):
                format = .layout(PerReadingLayout(format: .init(topic: f.topic, json: f.json, retain: f.retain, discoveryPrefix: f.discoveryPrefix),
                                                  gateway: gatewayID, statusTopic: "\(u.topicPrefix)/status"))
            case .sparkplugB(let f): format = .layout(SparkplugLayout(group: f.groupID, node: f.edgeNodeID, commands: f.commands))
            case .thingsboard(let f): format = .layout(ThingsBoardLayout(rpc: f.rpc))
            }
            sink = MQTTSink(options: MQTTSinkOptions(client: client, topicPrefix: u.topicPrefix, window: u.maxInflight, gzip: u.compression == "gzip",
                                                     format: format),
                            gatewayID: gatewayID, logger: lg)
        case .http:
            do {
                sink = try HTTPSink(options: try httpOptions(u.http!, logger: logger), gatewayID: gatewayID, logger: lg)
            } catch {
                throw StartupError("uplink \(u.name): \(error)")
            }
        }
        var sync = SyncOptions(name: u.name, batchMaxReadings: u.batchMaxReadings, batchMaxDelayMillis: u.batchMaxDelayMillis,
                               batchMaxBytes: u.batchMaxBytes, match: u.match, maxBytesPerSecond: u.maxBytesPerSecond)
        sync.maxBytesPerDay = u.maxBytesPerDay
        return RunningUplink(config: u, loop: SyncLoop(options: sync, sink: sink, gatewayID: gatewayID, outbox: outbox, logger: logger))
    }

    /// An MQTT connection of the configuration as client options (uplinks, commands).
    static func mqttClientOptions(_ conn: MQTTConnection, password: String?, clientIDSuffix: String = "", cleanSession: Bool = true,
                                  maxInflight: Int = 32) -> MQTTClientOptions {
        var o = MQTTClientOptions(host: conn.url.host, port: conn.url.port, clientID: conn.clientID + clientIDSuffix, cleanSession: cleanSession,
                                  keepAlive: conn.keepAliveSeconds, username: conn.username, password: password,
                                  tls: conn.tls.map { MQTTTLS(caFile: $0.caFile, certFile: $0.certFile, keyFile: $0.keyFile, verifyHostname: $0.verifyHostname) },
                                  maxInflight: maxInflight)
        o.alternates = conn.alternates.map { MQTTBrokerAddress(host: $0.host, port: $0.port) }
        return o
    }

    static func httpOptions(_ h: HTTPSinkConfig, logger: Logger) throws -> HTTPSinkOptions {
        let auth: HTTPSinkOptions.Auth
        switch h.auth {
        case .none: auth = .none
        case .bearer(let file): auth = .bearer(token: try Gateway.secret(file, logger: logger) ?? "")
        case .token(let file): auth = .token(try Gateway.secret(file, logger: logger) ?? "")
        case .oauth2(let url, let id, let file, let scope):
            auth = .oauth2(tokenURL: url, clientID: id, clientSecret: try Gateway.secret(file, logger: logger) ?? "", scope: scope)
        }
        var url = h.url
        var precision = InfluxLineProtocol.Precision.milliseconds
        if h.format == .influx {
            if let p = HTTPSinkConfig.queryValue("precision", in: url) {
                precision = InfluxLineProtocol.Precision(urlValue: p) ?? .milliseconds
            } else {
                // Microseconds: readings stamped in the same millisecond stay distinct points.
                url += (url.contains("?") ? "&" : "?") + (url.contains("/api/v2/") ? "precision=us" : "precision=u")
                precision = .microseconds
            }
        }
        return HTTPSinkOptions(url: url, displayURL: HTTPSinkConfig(url: url).displayURL, format: HTTPSinkOptions.Format(rawValue: h.format.rawValue) ?? .json, gzip: h.gzip,
                               timeoutMillis: h.timeoutMillis, auth: auth,
                               tls: h.tls.map { HTTPSinkOptions.TLS(caFile: $0.caFile, certFile: $0.certFile, keyFile: $0.keyFile, verifyHostname: $0.verifyHostname) },
                               influxMeasurement: h.influxMeasurement == "device" ? .device : .metric, influxPrecision: precision)
    }
}
