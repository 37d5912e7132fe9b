import BrumeConfig
import BrumeCore
import BrumeFunctions
import BrumeMQTT
import Logging

/// `[[source]] kind = "mqtt"`: a field broker's topics → readings; actuators published to it.
enum MQTTSourceKind {
    static func make(_ s: SourceConfig, _ m: MQTTSourceConfig, sink: any ReadingSink, functions: FunctionDirectory, logger: Logger) throws -> RunningSource {
        var client = UplinkKinds.mqttClientOptions(m.connection, password: try Gateway.secret(m.connection.passwordFile, logger: logger),
                                                   cleanSession: !(m.persistentSession && m.qos > 0), maxInflight: 32)
        client.protocolVersion = m.mqttVersion == "3.1.1" ? .v311 : m.mqttVersion == "5" ? .v5 : .auto
        client.receiveMaximum = m.receiveMaximum
        var options = MQTTSourceOptions(client: client, subscribe: m.subscribe, qos: m.qos, device: m.device, metric: m.metric,
                                        payload: m.payload, ackAfterCommit: m.ackAfterCommit)
        if case .function(let name) = m.payload { options.payloadFunction = functions.decoder(named: name) }
        let src = MQTTSource(name: s.name, options: options, sink: sink, logger: logger)
        return RunningSource(config: s, source: src, kind: "mqtt", driver: { act in
            guard case .mqtt(_, let topic, let payload, let ackTopic, let ackPayload) = act.via else { return nil }
            if let ackTopic { src.addAckSubscription(ackTopic) }
            let timeout = Duration.milliseconds(act.timeoutMillis)
            return { value in
                switch await src.request(topic: topic, payload: Array(render(payload, value).utf8), ackTopic: ackTopic,
                                         ackPayload: ackTopic == nil ? nil : render(ackPayload ?? "{value}", value), timeout: timeout) {
                case .success(let r): return .success(r.isEmpty ? "published" : "acknowledged: \(r)")
                case .failure(.timeout): return .failure(DriverFailure(detail: "no acknowledgement within \(act.timeoutMillis) ms"))
                case .failure(.disconnected): return .failure(DriverFailure(detail: "field broker disconnected"))
                case .failure(.publishFailed(let e)): return .failure(DriverFailure(detail: "publish failed: \(e)"))
                }
            }
        })
    }
}
