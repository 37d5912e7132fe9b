/// SenML (RFC 8428) JSON: a batch as one pack of records, for SenML consumers (LwM2M
/// servers, Eclipse Leshan, many time-series ingestors).
///
///     [{"bn":"gw-01:","bt":1764170000.123,"n":"boiler/temperature","v":71.5},
///      {"n":"boiler/state","t":0.5,"vs":"heating"},
///      {"n":"door/open","t":1.002,"vb":true}]
///
/// - The base name is the gateway id and `:`; a record's name is `device/metric`, so the
///   resolved name (`bn` + `n`) is `gw-01:boiler/temperature`.
/// - The base time is the first reading's time; each later record's `t` is its offset in
///   seconds, written with millisecond decimals exactly (no binary floating point rounding),
///   possibly negative (readings are in outbox order, not time order).
/// - Numbers go in `v`, booleans in `vb`, strings in `vs`.
///
/// Deterministic, like the v1 encoders: a resent batch is the same bytes. What SenML has no
/// field for is not written: the batch id (MQTT 5 user property `batch`, HTTP header
/// `X-Brume-Batch`) and the `"clock":"unsynced"` flag (use the v1 format where readings
/// stamped by an unsynchronised clock must be told apart).
public enum SenML {
    public static func encode(gateway: String, readings: [Reading], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        guard let base = readings.first?.time else {
            out.append(UInt8(ascii: "]"))
            return
        }
        for (i, r) in readings.enumerated() {
            if i == 0 {
                out.append(contentsOf: "{\"bn\":".utf8)
                WireFormat.appendString(gateway + ":", to: &out)
                out.append(contentsOf: ",\"bt\":".utf8)
                appendSeconds(millis: base, to: &out)
                out.append(contentsOf: ",\"n\":".utf8)
            } else {
                out.append(contentsOf: ",{\"n\":".utf8)
            }
            WireFormat.appendString(r.device + "/" + r.metric, to: &out)
            if i > 0, r.time != base {
                out.append(contentsOf: ",\"t\":".utf8)
                // Both times are from the outbox (validated ms since the epoch): no overflow.
                appendSeconds(millis: r.time &- base, to: &out)
            }
            switch r.value {
            case .number(let d):
                out.append(contentsOf: ",\"v\":".utf8)
                WireFormat.appendNumber(d, to: &out)
            case .bool(let b):
                out.append(contentsOf: b ? ",\"vb\":true".utf8 : ",\"vb\":false".utf8)
            case .string(let s):
                out.append(contentsOf: ",\"vs\":".utf8)
                WireFormat.appendString(s, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
    }

    /// Milliseconds as seconds with up to three decimals, exactly: 1764170000123 → 1764170000.123,
    /// 500 → 0.5, -1500 → -1.5, 2000 → 2.
    public static func appendSeconds(millis: Int64, to out: inout [UInt8]) {
        let negative = millis < 0
        let m = millis.magnitude
        if negative { out.append(UInt8(ascii: "-")) }
        out.append(contentsOf: String(m / 1000).utf8)
        var frac = m % 1000
        guard frac != 0 else { return }
        var digits = 3
        while frac % 10 == 0 { frac /= 10; digits -= 1 }
        out.append(UInt8(ascii: "."))
        let s = String(frac)
        for _ in 0..<(digits - s.utf8.count) { out.append(UInt8(ascii: "0")) }
        out.append(contentsOf: s.utf8)
    }
}
