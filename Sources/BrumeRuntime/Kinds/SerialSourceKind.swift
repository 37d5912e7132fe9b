import BrumeConfig
import BrumeCore
import BrumeSerial
import Logging

/// `[[source]] kind = "serial"`: a serial line's frames → readings; actuators written to it.
enum SerialSourceKind {
    static func make(_ s: SourceConfig, _ c: SerialSourceConfig, sink: any ReadingSink, logger: Logger) -> RunningSource {
        let settings = SerialSettings(baud: c.baud, dataBits: c.dataBits, parity: SerialSettings.Parity(rawValue: c.parity) ?? .none,
                                      stopBits: c.stopBits, flowControl: SerialSettings.FlowControl(rawValue: c.flowControl) ?? .none)
        let options = SerialSourceOptions(
            name: s.name, port: c.port, settings: settings, format: c.format, device: c.device, maxFrame: c.maxFrame,
            poll: c.poll.map { SerialPoll(request: Array($0.send.utf8), everyMillis: $0.everyMillis, timeoutMillis: $0.timeoutMillis, retries: $0.retries) })
        let src = SerialSource(options: options, sink: sink, logger: logger)
        return RunningSource(config: s, source: src, kind: "serial", driver: { act in
            guard case .serial(_, let write, let reply) = act.via else { return nil }
            let timeout = Duration.milliseconds(act.timeoutMillis)
            return { value in
                switch await src.request(Array(render(write, value).utf8), expect: reply.map { render($0, value) }, timeout: timeout) {
                case .success(let r): return .success(r.isEmpty ? "written" : "reply: \(r)")
                case .failure(.timeout): return .failure(DriverFailure(detail: "no reply from the device within \(act.timeoutMillis) ms"))
                case .failure(.disconnected): return .failure(DriverFailure(detail: "device disconnected"))
                case .failure(.writeFailed(let e)): return .failure(DriverFailure(detail: "write failed: \(e)"))
                }
            }
        })
    }
}
