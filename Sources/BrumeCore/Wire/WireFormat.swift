// Wire format v1: the JSON documents the gateway exchanges with the cloud.
//
// All encoders write compact JSON (no spaces), fields in the order shown, and are
// deterministic: the same inputs always give the same bytes (a resent batch is byte-for-byte
// the same batch).
//
// Strings: UTF-8; `"` and `\` are escaped as `\"` and `\\`; control characters as `\n`, `\r`,
// `\t`, `\b`, `\f` or `\u00XX` (lowercase hex); everything else (including non-ASCII and
// U+007F) is written as is.
//
// Numbers: see `WireFormat.formatNumber`.

/// Wire format v1 encoders (telemetry batches, status) and the JSON text helpers they use.
public enum WireFormat {
    /// The wire format version written in `"v"`.
    public static let version = 1

    private static let twoTo53: Double = 9_007_199_254_740_992

    /// JSON text of a number, deterministic and shortest round-trip.
    ///
    /// - Integral values with |x| <= 2^53 are written as integers without ".0": `71`, `-3`, `0`;
    ///   negative zero is written `-0` (valid JSON that reads back as -0.0).
    /// - Other finite values use Swift's shortest round-trip representation, which is always
    ///   valid JSON: `71.5`, `0.1`, `1e-05`, `1e+21`, `5e-324`, `1.7976931348623157e+308`.
    /// - Non-finite values (never produced by Brume, which rejects them at the input) are written
    ///   as `null` so the document stays valid JSON.
    public static func formatNumber(_ d: Double) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(24)
        appendNumber(d, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `formatNumber(d)` to `out` without creating a String for the common cases.
    public static func appendNumber(_ d: Double, to out: inout [UInt8]) {
        guard d.isFinite else {
            out.append(contentsOf: "null".utf8)
            return
        }
        if d.magnitude <= twoTo53 && d.rounded(.towardZero) == d {
            if d == 0 && d.sign == .minus {
                out.append(UInt8(ascii: "-"))
                out.append(UInt8(ascii: "0"))
            } else {
                appendInteger(Int64(d), to: &out)
            }
            return
        }
        out.append(contentsOf: d.description.utf8)
    }

    /// Appends a reading's value as JSON: `formatNumber`, `true`/`false`, or a quoted string.
    public static func appendValue(_ v: Value, to out: inout [UInt8]) {
        switch v {
        case .number(let d): appendNumber(d, to: &out)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .string(let s): appendString(s, to: &out)
        }
    }

    /// Appends the decimal digits of `v` to `out`.
    public static func appendInteger(_ v: Int64, to out: inout [UInt8]) {
        if v < 0 { out.append(UInt8(ascii: "-")) }
        appendUnsigned(v.magnitude, minDigits: 1, to: &out)
    }

    private static func appendUnsigned(_ value: UInt64, minDigits: Int, to out: inout [UInt8]) {
        // Digits right to left, two at a time, into a stack buffer (20 digits hold UInt64.max),
        // then one append: a 13-digit millisecond time is written for every reading.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(20, minDigits)) { buf in
            let start = digitPairs.withUTF8Buffer { pairs -> Int in
                var mag = value
                var i = buf.count
                while mag >= 100 {
                    let q = mag / 100
                    let p = Int(truncatingIfNeeded: mag &- q &* 100) &* 2
                    i -= 2
                    buf[i] = pairs[p]
                    buf[i + 1] = pairs[p + 1]
                    mag = q
                }
                if mag >= 10 {
                    let p = Int(truncatingIfNeeded: mag) &* 2
                    i -= 2
                    buf[i] = pairs[p]
                    buf[i + 1] = pairs[p + 1]
                } else {
                    i -= 1
                    buf[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: mag)
                }
                while buf.count - i < minDigits {
                    i -= 1
                    buf[i] = UInt8(ascii: "0")
                }
                return i
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buf[start...]))
        }
    }

    private static let digitPairs: StaticString = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

    /// Appends `s` as a JSON string literal (quotes included) to `out`.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // withUTF8 also reaches a small (inline) string's bytes without allocating.
        var s = s
        s.withUTF8 { appendEscaped($0, to: &out) }
        out.append(UInt8(ascii: "\""))
    }

    private static let hexDigits: StaticString = "0123456789abcdef"

    private static func appendEscaped(_ b: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        var runStart = 0
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            if c >= 0x20 && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") {
                i += 1
                continue
            }
            if i > runStart { out.append(contentsOf: UnsafeBufferPointer(rebasing: b[runStart..<i])) }
            out.append(UInt8(ascii: "\\"))
            switch c {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case 0x0A: out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "t"))
            case 0x08: out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(UInt8(ascii: "f"))
            default:
                let hex = hexDigits.utf8Start
                out.append(UInt8(ascii: "u"))
                out.append(UInt8(ascii: "0"))
                out.append(UInt8(ascii: "0"))
                out.append(hex[Int(c >> 4)])
                out.append(hex[Int(c & 0xF)])
            }
            i += 1
            runStart = i
        }
        if n > runStart { out.append(contentsOf: UnsafeBufferPointer(rebasing: b[runStart..<n])) }
    }

    /// The id of a batch of outbox sequence numbers `first...last` formed by outbox run `run`:
    /// `"\(gateway):\(run, 16 hex digits):\(first, 12 digits zero-padded)-\(last, 12 digits)"`,
    /// e.g. `gw-demo-01:5f3a9c0e12ab44d1:000000001200-000000001699`.
    ///
    /// The run is a random 64-bit number drawn each time the outbox is opened and stored with
    /// every batch it forms: sequence numbers may repeat after a power cut (unsynced writes
    /// lost), a wiped data folder or a restored backup, but a run never does, so an id names one
    /// batch for the life of a gateway id. A recorded batch keeps its run: resent after a crash
    /// it is byte for byte the same. Run 0 (batches recorded by brume before runs existed) keeps
    /// the old form `gateway:first-last`. Longer numbers keep all their digits; a negative
    /// number gets a "-" before its padded digits.
    public static func batchID(gateway: String, run: UInt64, first: Int64, last: Int64) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(gateway.utf8.count + 43)
        out.append(contentsOf: gateway.utf8)
        out.append(UInt8(ascii: ":"))
        if run != 0 {
            let hex = hexDigits.utf8Start
            for shift in stride(from: 60, through: 0, by: -4) { out.append(hex[Int((run >> UInt64(shift)) & 0xF)]) }
            out.append(UInt8(ascii: ":"))
        }
        appendPadded(first, to: &out)
        out.append(UInt8(ascii: "-"))
        appendPadded(last, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private static func appendPadded(_ v: Int64, to out: inout [UInt8]) {
        if v < 0 { out.append(UInt8(ascii: "-")) }
        appendUnsigned(v.magnitude, minDigits: 12, to: &out)
    }

    /// Appends a telemetry batch document to `out`, exactly:
    ///
    /// ```
    /// {"v":1,"gw":"gw-demo-01","batch":"gw-demo-01:000000001200-000000001699","hist":false,
    ///  "readings":[{"d":"boiler","m":"temperature","t":1764169999000,"v":71.5},...]}
    /// ```
    /// (on one line, no spaces). `d` device, `m` metric, `t` ms since the epoch (integer),
    /// `v` a number (`formatNumber`), `true`/`false` or a string. `hist` is true for backlog.
    /// A reading stamped by the gateway while its clock was not synchronised, and that could not
    /// be corrected (the gateway rebooted, or the clock stayed unsynchronised past `[clock] wait`),
    /// ends with `,"clock":"unsynced"`: its `t` is the board's clock, not the true time.
    public static func encodeTelemetry(gateway: String, batchID: String, historical: Bool,
                                       readings: [Reading], into out: inout [UInt8]) {
        out.reserveCapacity(out.count + 64 + readings.count * 56)
        appendASCII(#"{"v":1,"gw":"#, to: &out)
        appendString(gateway, to: &out)
        appendASCII(#","batch":"#, to: &out)
        appendString(batchID, to: &out)
        appendASCII(historical ? #","hist":true,"readings":["# : #","hist":false,"readings":["#, to: &out)
        var first = true
        // `{"d":DEVICE,"m":METRIC,"t":` of the previous reading: consecutive readings mostly
        // share both names, which are then copied instead of escaped again.
        var head: [UInt8] = []
        var headDevice = "", headMetric = ""
        for r in readings {
            if !first { out.append(UInt8(ascii: ",")) }
            if first || r.device != headDevice || r.metric != headMetric {
                head.removeAll(keepingCapacity: true)
                appendASCII(#"{"d":"#, to: &head)
                appendString(r.device, to: &head)
                appendASCII(#","m":"#, to: &head)
                appendString(r.metric, to: &head)
                appendASCII(#","t":"#, to: &head)
                headDevice = r.device
                headMetric = r.metric
            }
            first = false
            out.append(contentsOf: head)
            appendInteger(r.time, to: &out)
            appendASCII(#","v":"#, to: &out)
            appendValue(r.value, to: &out)
            if r.unsyncedBootMillis != nil { appendASCII(#","clock":"unsynced""#, to: &out) }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
        out.append(UInt8(ascii: "}"))
    }

    /// A literal's bytes (a short String literal is stored inline and would be appended byte by byte).
    @inline(__always)
    static func appendASCII(_ s: StaticString, to out: inout [UInt8]) {
        s.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    /// A status document, exactly `{"state":"online","gw":"gw-demo-01","at":1764169999000}`
    /// followed by the `extra` string fields in order (`,"key":"value"`) before the closing brace.
    /// `at` is ms since the epoch. (The MQTT will is the fixed `{"state":"offline"}`.)
    public static func encodeStatus(state: String, gateway: String, at: Int64, extra: [(String, String)] = []) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + gateway.utf8.count)
        out.append(contentsOf: #"{"state":"#.utf8)
        appendString(state, to: &out)
        out.append(contentsOf: #","gw":"#.utf8)
        appendString(gateway, to: &out)
        out.append(contentsOf: #","at":"#.utf8)
        appendInteger(at, to: &out)
        for (key, value) in extra {
            out.append(UInt8(ascii: ","))
            appendString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendString(value, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }
}

/// Why a wire document could not be decoded.
public struct WireError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// A decoded telemetry batch (see `WireFormat.encodeTelemetry` for the JSON shape).
public struct TelemetryBatch: Sendable, Hashable {
    public var version: Int
    public var gateway: String
    public var batchID: String
    public var historical: Bool
    public var readings: [Reading]

    public init(version: Int = WireFormat.version, gateway: String, batchID: String, historical: Bool, readings: [Reading]) {
        self.version = version
        self.gateway = gateway
        self.batchID = batchID
        self.historical = historical
        self.readings = readings
    }

    /// The wire bytes of this batch (`WireFormat.encodeTelemetry`).
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        WireFormat.encodeTelemetry(gateway: gateway, batchID: batchID, historical: historical, readings: readings, into: &out)
        return out
    }

    /// Decodes a telemetry document.
    ///
    /// Required: `v` (must be 1), `gw` (string), `batch` (string), `hist` (bool), `readings`
    /// (array of objects each with `d` string, `m` string, `t` integer number, `v` number, bool
    /// or string). Unknown fields are ignored (forward compatibility); a wrong type, a missing
    /// field or another version is an error naming the field, e.g. `readings[3].t: expected an integer`.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> TelemetryBatch {
        let doc: JSONValue
        do throws(JSONError) {
            doc = try JSONParser.parse(bytes)
        } catch {
            throw WireError("telemetry is not valid JSON: \(error)")
        }
        guard case .object = doc else { throw WireError("telemetry must be a JSON object, got \(doc.kindName)") }

        guard let v = doc["v"] else { throw WireError("v: missing") }
        guard case .number(let vd) = v, vd == vd.rounded(), vd.magnitude < 1e9 else {
            throw WireError("v: expected an integer version, got \(v.kindName)")
        }
        guard Int(vd) == WireFormat.version else { throw WireError("v: unsupported version \(Int(vd)), expected \(WireFormat.version)") }
        let gateway = try string(doc, "gw", "gw")
        let batchID = try string(doc, "batch", "batch")
        guard let h = doc["hist"] else { throw WireError("hist: missing") }
        guard case .bool(let historical) = h else { throw WireError("hist: expected a bool, got \(h.kindName)") }
        guard let rs = doc["readings"] else { throw WireError("readings: missing") }
        guard case .array(let elements) = rs else { throw WireError("readings: expected an array, got \(rs.kindName)") }

        var readings: [Reading] = []
        readings.reserveCapacity(elements.count)
        for (i, element) in elements.enumerated() {
            let path = "readings[\(i)]"
            guard case .object = element else { throw WireError("\(path): expected an object, got \(element.kindName)") }
            let device = try string(element, "d", path + ".d")
            let metric = try string(element, "m", path + ".m")
            guard let t = element["t"] else { throw WireError("\(path).t: missing") }
            guard case .number(let td) = t, td == td.rounded(), td >= -9.2e18, td <= 9.2e18 else {
                throw WireError("\(path).t: expected an integer, got \(t)")
            }
            guard let v = element["v"] else { throw WireError("\(path).v: missing") }
            let value: Value
            switch v {
            case .number(let d): value = .number(d)
            case .bool(let b): value = .bool(b)
            case .string(let s): value = .string(s)
            default: throw WireError("\(path).v: expected a number, bool or string, got \(v.kindName)")
            }
            var unsynced: Int64?
            if let c = element["clock"] {
                guard case .string("unsynced") = c else { throw WireError("\(path).clock: expected \"unsynced\", got \(c)") }
                unsynced = 0 // the boot clock is not on the wire: only the flag
            }
            readings.append(Reading(device: device, metric: metric, time: Int64(td), value: value, unsyncedBootMillis: unsynced))
        }
        return TelemetryBatch(version: WireFormat.version, gateway: gateway, batchID: batchID,
                              historical: historical, readings: readings)
    }

    /// Decodes a telemetry document. See `decode(_: UnsafeRawBufferPointer)`.
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> TelemetryBatch {
        let result = bytes.withUnsafeBytes { raw -> Result<TelemetryBatch, WireError> in
            do throws(WireError) { return .success(try decode(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    private static func string(_ object: JSONValue, _ key: String, _ path: String) throws(WireError) -> String {
        guard let v = object[key] else { throw WireError("\(path): missing") }
        guard case .string(let s) = v else { throw WireError("\(path): expected a string, got \(v.kindName)") }
        return s
    }
}
