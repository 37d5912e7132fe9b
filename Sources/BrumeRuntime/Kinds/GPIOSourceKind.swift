import BrumeConfig
import BrumeCore
import BrumeGPIO
import Logging

/// `[[source]] kind = "gpio"`: inputs as contact states and pulse counters, outputs driven by
/// actuators (BrumeGPIO).
enum GPIOSourceKind {
    static func options(_ s: SourceConfig, _ c: GPIOSourceConfig, dataDir: String) -> GPIOSource.Options {
        GPIOSource.Options(
            chip: c.chip,
            inputs: c.inputs.map { i in
                GPIOSource.Input(line: i.line, device: i.device, metric: i.metric,
                                 mode: i.counter.map { .counter(rising: $0 == "rising", scale: i.scale) } ?? .state,
                                 debounceNanos: UInt64(i.debounceMillis) * 1_000_000, bias: GPIOBias(rawValue: i.bias) ?? .asIs, activeLow: i.activeLow)
            },
            outputs: c.outputs.map { GPIOSource.Output(line: $0.line, safe: $0.safe, activeLow: $0.activeLow) },
            intervalMillis: c.intervalMillis, countsPath: "\(dataDir)/gpio-\(s.name).counts")
    }

    static func make(_ s: SourceConfig, _ c: GPIOSourceConfig, dataDir: String, sink: any ReadingSink, logger: Logger) -> RunningSource {
        let src = GPIOSource(name: s.name, options: options(s, c, dataDir: dataDir), sink: sink, logger: logger)
        return RunningSource(config: s, source: src, kind: "gpio", details: {
            let latest = src.latest.withLock { $0 }
            let ins = c.inputs.map { i in
                DeviceDetails(name: "\(i.device)/\(i.metric)", state: nil,
                              status: .object([JSONMember(key: "line", value: .number(Double(i.line))),
                                               JSONMember(key: "value", value: latest["\(i.device)/\(i.metric)"].map(jsonValue) ?? .null)]),
                              summary: "line \(i.line) \(i.counter == nil ? "contact" : "pulse counter"): \(latest["\(i.device)/\(i.metric)"].map { "\($0)" } ?? "not read yet")")
            }
            let outs = c.outputs.map { o in
                DeviceDetails(name: "line \(o.line)", state: nil,
                              status: .object([JSONMember(key: "line", value: .number(Double(o.line))),
                                               JSONMember(key: "value", value: latest["line \(o.line)"].map(jsonValue) ?? .null)]),
                              summary: "output line \(o.line): \(latest["line \(o.line)"].map { "\($0)" } ?? "not set") (safe \(o.safe))")
            }
            return ins + outs
        }, driver: { act in
            guard case .gpio(_, let line) = act.via else { return nil }
            return { value in
                let on: Bool
                switch value {
                case .bool(let b): on = b
                case .number(let d) where d == 0 || d == 1: on = d == 1
                default: return .failure(DriverFailure(detail: "a GPIO output takes true or false"))
                }
                switch src.drive(line: line, on) {
                case .success(let r): return .success(r)
                case .failure(let e): return .failure(DriverFailure(detail: "\(e)"))
                }
            }
        })
    }

    static func jsonValue(_ v: Value) -> JSONValue {
        switch v {
        case .bool(let b): .bool(b)
        case .number(let d): .number(d)
        case .string(let s): .string(s)
        }
    }
}
