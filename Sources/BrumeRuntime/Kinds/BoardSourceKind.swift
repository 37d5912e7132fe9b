import BrumeBoard
import BrumeConfig
import BrumeCore
import Logging

/// `[[source]] kind = "board"`: the board's health (BrumeBoard) as readings, and as gauges in
/// status and metrics (`brume_board_*{source,device}`, MetricsExporter.help lists them).
enum BoardSourceKind {
    static func metricName(_ metric: String) -> String {
        metric == "soc_temperature" ? "brume_board_soc_temperature_celsius" : "brume_board_\(metric)"
    }

    static func make(_ s: SourceConfig, _ c: BoardSourceConfig, dataDir: String, sink: any ReadingSink, logger: Logger) -> RunningSource {
        let options = BoardHealth.Options(root: c.root, dataDir: dataDir, disk: c.disk, clock: c.root == "/")
        let src = BoardSource(name: s.name, device: c.device, intervalMillis: c.intervalMillis, options: options, sink: sink, logger: logger)
        return RunningSource(config: s, source: src, kind: "board", details: {
            let samples = src.latest.withLock { $0 }
            guard !samples.isEmpty else { return [] }
            var gauges: [DeviceDetails.Sample] = []
            var members: [JSONMember] = []
            for x in samples {
                let v: Double
                switch x.value {
                case .number(let d): v = d
                case .bool(let b): v = b ? 1 : 0
                case .string: continue
                }
                gauges.append(DeviceDetails.Sample(name: BoardSourceKind.metricName(x.metric), labels: [], value: v))
                members.append(JSONMember(key: x.metric, value: .number(v)))
            }
            let temp = samples.first { $0.metric == "soc_temperature" }.map { " \($0.value) °C" } ?? ""
            let flags = samples.filter { ["under_voltage", "throttled"].contains($0.metric) && $0.value == .bool(true) }.map(\.metric)
            return [DeviceDetails(name: c.device, state: nil, status: .object(members), gauges: gauges,
                                  summary: "board\(temp)\(flags.isEmpty ? "" : " " + flags.joined(separator: ","))")]
        })
    }
}
