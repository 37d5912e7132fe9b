/// InfluxDB line protocol (1.x `/write`, 2.x `/api/v2/write`): one line per reading,
///   `temperature,device=boiler,gw=gw-01 value=71.5 1764169999000`
/// with the metric as the measurement, `device` and `gw` as tags, one field `value` (float,
/// boolean or string) and the reading's time in the write's precision; or (`influx_measurement =
/// "device"`) the device as the measurement and the metric as the field:
///   `boiler,gw=gw-01 temperature=71.5 1764169999000`
/// (a field per metric: a string metric and a number metric of one device do not conflict). A reading whose time could not be corrected after the gateway's clock was
/// unsynchronised carries the tag `clock=unsynced`.
///
/// InfluxDB keeps one point per series and timestamp, and Brume stamps readings on receipt
/// with millisecond resolution, so a burst puts several readings of one series in one
/// millisecond. At microsecond or nanosecond precision the digits below the millisecond
/// carry the reading's outbox sequence number modulo 1,000 (a resend writes the same
/// timestamps: InfluxDB overwrites, no duplicates) and such readings stay distinct points.
/// At millisecond precision they overwrite each other; `brume check` says so.
public enum InfluxLineProtocol {
    public enum Measurement: Sendable { case metric, device }
    public enum Precision: String, Sendable, CaseIterable {
        case seconds = "s", milliseconds = "ms", microseconds = "u", nanoseconds = "n"
        /// InfluxDB's `precision=` names (1.x: n, u, ms, s; 2.x: ns, us, ms, s); nil for
        /// coarser ones (m, h) or unknown ones.
        public init?(urlValue v: String) {
            switch v {
            case "s": self = .seconds
            case "ms": self = .milliseconds
            case "u", "us", "µ": self = .microseconds
            case "n", "ns": self = .nanoseconds
            default: return nil
            }
        }
    }

    /// `seq(i)`: the outbox sequence number of the i-th reading (the sub-millisecond digits).
    public static func encode(_ readings: some Sequence<Reading>, gateway: String, measurement: Measurement = .metric,
                              precision: Precision = .milliseconds, seq: (Int) -> Int64 = { Int64($0) }, into out: inout [UInt8]) {
        for (i, r) in readings.enumerated() {
            switch measurement {
            case .metric:
                escape(r.metric, into: &out, measurement: true)
                out.append(contentsOf: ",device=".utf8)
                escape(r.device, into: &out, measurement: false)
            case .device:
                escape(r.device, into: &out, measurement: true)
            }
            out.append(contentsOf: ",gw=".utf8)
            escape(gateway, into: &out, measurement: false)
            // Stamped by an unsynchronised clock and never corrected: a tag, so queries can leave it out.
            if r.unsyncedBootMillis != nil { out.append(contentsOf: ",clock=unsynced".utf8) }
            // The device as the measurement: one field per metric (`boiler temperature=71.5,...`), so
            // a device with a string and a number metric has no field-type conflict.
            if case .device = measurement {
                out.append(UInt8(ascii: " "))
                escape(r.metric, into: &out, measurement: false)
                out.append(UInt8(ascii: "="))
            } else {
                out.append(contentsOf: " value=".utf8)
            }
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
            WireFormat.appendInteger(timestamp(r.time, precision: precision, seq: seq(i)), to: &out)
            out.append(10)
        }
    }

    /// A reading's time (ms) in `precision`, saturating (a payload may carry any Int64).
    static func timestamp(_ ms: Int64, precision: Precision, seq: Int64) -> Int64 {
        let sub = seq % 1000 < 0 ? seq % 1000 + 1000 : seq % 1000
        switch precision {
        case .seconds: return ms / 1000
        case .milliseconds: return ms
        case .microseconds, .nanoseconds:
            let scale: Int64 = precision == .microseconds ? 1000 : 1_000_000
            let (t, o1) = ms.multipliedReportingOverflow(by: scale)
            let (u, o2) = t.addingReportingOverflow(sub * (scale / 1000))
            if o1 || o2 { return ms < 0 ? Int64.min : Int64.max }
            return u
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
