import BrumeConfig
import BrumeCore
import BrumeModbus
import BrumeSerial
import Logging

/// `[[source]] kind = "modbus"`: one bus (RTU or TCP) polled by its scheduler; per-device
/// statistics in status and metrics; actuators written as coils or registers.
enum ModbusSourceKind {
    static func make(_ s: SourceConfig, _ c: ModbusSourceConfig, sink: any ReadingSink, logger: Logger) -> RunningSource {
        let transport: ModbusTransport = switch c.transport {
        case .rtu(let port, let baud, let bits, let parity, let stop, let rs485): .rtu(port: port, baud: baud, parity: parity, dataBits: bits, stopBits: stop, rs485: rs485)
        case .tcp(let host, let port): .tcp(host: host, port: port)
        }
        let options = ModbusBusOptions(
            name: s.name, transport: transport,
            devices: c.devices.map { ModbusDeviceOptions(name: $0.name, unit: $0.unit, points: $0.points, timeoutMillis: $0.timeoutMillis, retries: $0.retries) },
            interFrameDelayMillis: c.interFrameDelayMillis, maxSpan: c.maxSpan, maxGap: c.maxGap, offlineAfter: c.offlineAfter,
            backoffMaxMillis: c.backoffMaxMillis,
            resolvePort: { spec in if case .found(let p) = PortDiscovery.resolve(spec) { return p } else { return nil } })
        let bus = ModbusBus(options: options, sink: sink, logger: logger)
        return RunningSource(config: s, source: bus, kind: "modbus", details: { bus.devices.map(details) }, driver: { act in
            guard case .modbus(_, let spec) = act.via else { return nil }
            let timeout = Duration.milliseconds(act.timeoutMillis)
            return { value in
                let items: [UInt16]
                switch spec.items(for: value) {
                case .success(let i): items = i
                case .failure(let why): return .failure(DriverFailure(detail: "cannot encode the value: \(why)"))
                }
                switch await bus.write(spec, items: items, timeout: timeout) {
                case .success(let r): return .success(r)
                case .failure(let f): return .failure(DriverFailure(detail: "\(f)"))
                }
            }
        })
    }

    static func details(_ st: ModbusDeviceStats) -> DeviceDetails {
        func num(_ v: Int64?) -> JSONValue { v.map { .number(Double($0)) } ?? .null }
        let fields: [(String, JSONValue)] = [
            ("unit", num(Int64(st.unit))), ("requests", num(st.requests)), ("responses", num(st.responses)), ("timeouts", num(st.timeouts)),
            ("bad_responses", num(st.badResponses)),
            ("exceptions", .object(st.exceptions.sorted { $0.key < $1.key }.map { JSONMember(key: "\($0.key)", value: .number(Double($0.value))) })),
            ("latency_ms_avg", st.latencyMillisAvg.map { .number(($0 * 10).rounded() / 10) } ?? .null),
            ("latency_ms_max", st.responses > 0 ? .number((st.latencyMillisMax * 10).rounded() / 10) : .null),
            ("consecutive_failures", num(Int64(st.consecutiveFailures))), ("next_probe_ms", num(st.nextProbeMillis)),
            ("overruns", num(st.overruns)),
            ("point_errors", .object(st.pointErrors.sorted { $0.key < $1.key }.map { JSONMember(key: $0.key, value: .string($0.value)) })),
        ]
        let status: JSONValue = .object(fields.map { JSONMember(key: $0.0, value: $0.1) })
        var counters: [DeviceDetails.Sample] = [
            .init(name: "brume_modbus_requests_total", labels: [], value: Double(st.requests)),
            .init(name: "brume_modbus_timeouts_total", labels: [], value: Double(st.timeouts)),
        ]
        for (code, n) in st.exceptions { counters.append(.init(name: "brume_modbus_exceptions_total", labels: [("code", "\(code)")], value: Double(n))) }
        let gauges: [DeviceDetails.Sample] = [.init(name: "brume_modbus_device_up", labels: [], value: st.health == .online ? 1 : 0)]
        let latency = DeviceDetails.Histogram(name: "brume_modbus_latency_seconds", bounds: ModbusDeviceStats.latencyBounds,
                                              counts: st.latencyBuckets, sum: st.latencyMillisTotal / 1000)
        let summary = "\(st.health.rawValue) unit=\(st.unit) requests=\(st.requests) timeouts=\(st.timeouts) exceptions=\(st.exceptions.values.reduce(0, &+)) latency_ms=\(st.latencyMillisAvg.map { String(Int($0.rounded())) } ?? "-")"
        return DeviceDetails(name: st.name, state: st.health == .unknown ? "connecting" : st.health.rawValue, status: status,
                             counters: counters, gauges: gauges, histograms: [latency], summary: summary)
    }
}
