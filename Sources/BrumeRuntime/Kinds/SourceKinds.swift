import BrumeConfig
import BrumeFunctions
import BrumeCore
import Logging

/// What status, metrics and the periodic status log show of one device beyond its readings
/// (Modbus: requests, timeouts, latency ...). Filled in by the source's kind.
struct DeviceDetails: Sendable {
    struct Sample: Sendable {
        var name: String
        var labels: [(String, String)]
        var value: Double
    }
    var name: String
    /// "online", "offline", "connecting"; nil: judged by the freshness of its readings.
    var state: String?
    /// Shown under the kind's name in the device's status object.
    var status: JSONValue
    var counters: [Sample] = []
    var gauges: [Sample] = []
    /// A Prometheus histogram: `counts` per bucket of `bounds`, the last one +Inf (not cumulative).
    struct Histogram: Sendable {
        var name: String
        var bounds: [Double]
        var counts: [Int64]
        var sum: Double
    }
    var histograms: [Histogram] = []
    /// One line of the periodic status log.
    var summary: String
}

/// A running source: the adapter, and what its kind adds (details, actuator drivers).
/// Built only by `SourceKinds.make`, so nothing else needs to know the adapter's type.
struct RunningSource: Sendable {
    let config: SourceConfig
    let source: any Source
    /// "mqtt", "serial", "modbus" ...
    let kind: String
    let details: @Sendable () -> [DeviceDetails]
    /// The driver of an actuator that goes through this source; nil if the actuator's `via`
    /// is not of this kind.
    let driver: @Sendable (ActuatorConfig) -> ActuatorDriver?

    init(config: SourceConfig, source: any Source, kind: String, details: @escaping @Sendable () -> [DeviceDetails] = { [] },
         driver: @escaping @Sendable (ActuatorConfig) -> ActuatorDriver? = { _ in nil }) {
        self.config = config
        self.source = source
        self.kind = kind
        self.details = details
        self.driver = driver
    }

    var name: String { source.name }
    var state: SourceState { source.state }
    var stats: SourceStats { source.stats }
    func start() { source.start() }
    func stop() { source.stop() }
}

/// Source kinds: `[[source]]` configuration → a running source. Adding a kind: its adapter
/// module, its settings in `BrumeConfig/Kinds/`, and one case here (the switch is exhaustive,
/// so a kind the configuration knows cannot be forgotten).
enum SourceKinds {
    /// `functions`: where a source's payload decoder function is found (`payload = { function }`).
    static func make(_ s: SourceConfig, dataDir: String, sink: any ReadingSink, functions: FunctionDirectory, logger: Logger) throws -> RunningSource {
        switch s.kind {
        case .mqtt(let m): return try MQTTSourceKind.make(s, m, sink: sink, functions: functions, logger: logger)
        case .serial(let c): return SerialSourceKind.make(s, c, sink: sink, logger: logger)
        case .modbus(let m): return ModbusSourceKind.make(s, m, sink: sink, logger: logger)
        case .board(let b): return BoardSourceKind.make(s, b, dataDir: dataDir, sink: sink, logger: logger)
        case .onewire(let o): return OneWireSourceKind.make(s, o, sink: sink, logger: logger)
        case .lorawan(let l): return LoRaWANSourceKind.make(s, l, dataDir: dataDir, sink: sink, logger: logger)
        case .gpio(let g): return GPIOSourceKind.make(s, g, dataDir: dataDir, sink: sink, logger: logger)
        }
    }

    /// The device drivers of the actuators, bound to the sources that reach them.
    static func drivers(_ actuators: [ActuatorConfig], sources: [RunningSource]) -> [String: ActuatorDriver] {
        var out: [String: ActuatorDriver] = [:]
        for act in actuators {
            for s in sources where s.name == act.via.sourceName {
                if let d = s.driver(act) { out[act.name] = d }
            }
        }
        return out
    }
}
