import BrumeConfig
import BrumeCore
import BrumeOneWire
import Logging

/// `[[source]] kind = "onewire"`: DS18B20 probes by ROM id (BrumeOneWire); each probe a device in
/// status with its last outcome.
enum OneWireSourceKind {
    static func make(_ s: SourceConfig, _ c: OneWireSourceConfig, sink: any ReadingSink, logger: Logger) -> RunningSource {
        let src = OneWireSource(name: s.name, root: c.root, probes: c.probes.map { .init(id: $0.id, device: $0.device, metric: $0.metric) },
                                intervalMillis: c.intervalMillis, sink: sink, logger: logger)
        return RunningSource(config: s, source: src, kind: "onewire", details: {
            let latest = src.latest.withLock { $0 }
            return c.probes.map { p in
                let o = latest[p.id]
                let (state, text): (String?, String) = switch o {
                case .celsius(let t)?: ("online", "\(t) °C")
                case .refused(let why)?: ("online", "refused: \(why)")
                case .missing?: ("offline", "missing from the bus")
                case nil: (nil, "not read yet")
                }
                return DeviceDetails(name: "\(p.device)/\(p.metric)", state: state,
                                     status: .object([JSONMember(key: "id", value: .string(p.id)), JSONMember(key: "last", value: .string(text))]),
                                     summary: "\(p.id) \(text)")
            }
        })
    }
}
