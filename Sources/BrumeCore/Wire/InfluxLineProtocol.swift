/// InfluxDB line protocol (1.x `/write`, 2.x `/api/v2/write`): one line per reading,
///   `temperature,device=boiler,gw=gw-01 value=71.5 1764169999000`
/// with the metric (or the device) as the measurement, `device`/`metric` and `gw` as tags,
/// one field `value` (float, boolean or string) and the reading's time in milliseconds
/// (write with `precision=ms`). Points of one device and metric at the same millisecond
/// overwrite each other in InfluxDB, as its series semantics say.
public enum InfluxLineProtocol {
    public enum Measurement: Sendable { case metric, device }

    public static func encode(_ readings: some Sequence<Reading>, gateway: String, measurement: Measurement = .metric, into out: inout [UInt8]) {
        for r in readings {
            switch measurement {
            case .metric:
                escape(r.metric, into: &out, measurement: true)
                out.append(contentsOf: ",device=".utf8)
                escape(r.device, into: &out, measurement: false)
            case .device:
                escape(r.device, into: &out, measurement: true)
                out.append(contentsOf: ",metric=".utf8)
                escape(r.metric, into: &out, measurement: false)
            }
            out.append(contentsOf: ",gw=".utf8)
            escape(gateway, into: &out, measurement: false)
            out.append(contentsOf: " value=".utf8)
            switch r.value {
            case .number(let d): WireFormat.appendNumber(d, to: &out)
            case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
            case .string(let s):
                out.append(UInt8(ascii: "\""))
                for b in s.utf8 {
                    if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                    if b == 10 { out.append(contentsOf: "\\n".utf8); continue }
                    out.append(b)
                }
                out.append(UInt8(ascii: "\""))
            }
            out.append(UInt8(ascii: " "))
            WireFormat.appendInteger(r.time, to: &out)
            out.append(10)
        }
    }

    /// Measurements escape commas and spaces; tag keys and values also equals signs.
    /// Newlines cannot be escaped: they become spaces.
    static func escape(_ s: String, into out: inout [UInt8], measurement: Bool) {
        if s.isEmpty { out.append(contentsOf: "_".utf8); return }
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: ","), UInt8(ascii: " "): out.append(UInt8(ascii: "\\")); out.append(b)
            case UInt8(ascii: "=") where !measurement: out.append(UInt8(ascii: "\\")); out.append(b)
            case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
            case 10, 13, 9: out.append(contentsOf: "\\ ".utf8)
            default: out.append(b)
            }
        }
    }
}
