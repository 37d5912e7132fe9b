// How an MQTT message payload (or a serial JSON line) becomes readings.
//
// Formats:
// - `.number`: the whole payload, trimmed of ASCII whitespace, is a decimal number
//   (`21.5`, `-3`, `+4`, `1e3`, `007`, `.5`) or `true` / `false`. `nan`, `inf`, `infinity`
//   (any case, any sign) and numbers overflowing a Double are rejected as `non_finite`;
//   anything else is `not_a_number`.
// - `.jsonValue(value:time:)`: a JSON document; `value` points at the reading's value, which
//   must be a number, a bool or a string of at most 256 UTF-8 bytes (`unsupported_value`
//   otherwise; `value_not_found` if the pointer does not resolve).
// - `.jsonObject(time:)`: a JSON object; every number/bool/string leaf becomes one reading.
//   Nested objects are flattened with "." (`{"env":{"t":1}}` -> metric `env.t`); when the
//   topic mapping gives a non-empty metric it is a prefix (`"\(metric).env.t"`). The leaf the
//   time pointer designates is the timestamp, not a metric. `null` leaves are skipped (no
//   value), arrays and strings longer than 256 bytes are skipped and counted in the return
//   value of `decode`; if no reading results at all the payload fails with `no_metrics`.
//
// Timestamps (both JSON modes): when a time pointer is configured and resolves to a non-null
// value, it must parse with `parseTimestamp` (else `bad_timestamp`); when it does not resolve
// (or is null) the reading gets `receivedAt`.
//
// Errors never append anything to `out`.

/// How to interpret a payload.
public enum PayloadFormat: Sendable, Hashable {
    /// `21.5`, ` 21.5\n`, `true`, `false`.
    case number
    /// `{"v":21.5,"ts":1764169999000}` with value `/v`, time `/ts`.
    case jsonValue(value: JSONPointer, time: JSONPointer?)
    /// `{"temp":21.5,"hum":40,"ts":...}`: one reading per field.
    case jsonObject(time: JSONPointer?)
    /// Bytes decoded by a user function (`[[function]] run = "decoder"`, BrumeFunctions), given
    /// to the decoder as a `PayloadFunction`. The payload is not trimmed: it may be binary.
    case function(name: String)
}

/// A user payload decoder: bytes in, readings out (implemented by BrumeFunctions).
public protocol PayloadFunction: AnyObject, Sendable {
    /// Appends the readings decoded from `payload`; throws `.functionFailed` (the function's
    /// failure policy already applied: counted, dead-lettered) or `.noMetrics`.
    func decode(_ payload: UnsafeRawBufferPointer, device: String, metric: String, receivedAt: Int64,
                into out: inout [Reading]) throws(PayloadError)
}

/// Why a payload was rejected. `reason` is a stable label for metrics; `message` is for logs.
public struct PayloadError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        case empty
        case notANumber = "not_a_number"
        case invalidJSON = "invalid_json"
        case valueNotFound = "value_not_found"
        case unsupportedValue = "unsupported_value"
        case badTimestamp = "bad_timestamp"
        case tooLarge = "too_large"
        case nonFinite = "non_finite"
        case noMetrics = "no_metrics"
        case functionFailed = "function_failed"
    }

    public var reason: Reason
    public var message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { "\(reason.rawValue): \(message)" }
}

/// Decodes payloads of one configured format into readings. Cheap to copy; thread-safe.
public struct PayloadDecoder: Sendable {
    public let format: PayloadFormat
    public let maxBytes: Int
    /// Longest string value accepted, in UTF-8 bytes.
    public static let maxStringBytes = 256

    /// The user function of `.function` formats.
    public let function: (any PayloadFunction)?

    public init(format: PayloadFormat, maxBytes: Int = 65536, function: (any PayloadFunction)? = nil) {
        self.format = format
        self.maxBytes = maxBytes
        self.function = function
    }

    /// Appends readings decoded from `payload` to `out`.
    ///
    /// `metric` is the metric name from the topic mapping; in `.jsonObject` mode it is a prefix
    /// of the field names (when non-empty). See the comment at the top of this file for the rules.
    ///
    /// - Returns: the number of fields skipped in `.jsonObject` mode because their value is
    ///   an array or an over-long string (0 in the other modes), so callers can count them.
    @discardableResult
    public func decode(_ payload: UnsafeRawBufferPointer, device: String, metric: String, receivedAt: Int64,
                       into out: inout [Reading]) throws(PayloadError) -> Int {
        if payload.count > maxBytes {
            throw PayloadError(.tooLarge, "payload of \(payload.count) bytes exceeds the limit of \(maxBytes) bytes")
        }
        guard let base = payload.baseAddress?.assumingMemoryBound(to: UInt8.self), payload.count > 0 else {
            throw PayloadError(.empty, "empty payload")
        }
        if case .function(let name) = format {
            guard let function else { throw PayloadError(.functionFailed, "decoder function \"\(name)\" is not loaded") }
            try function.decode(payload, device: device, metric: metric, receivedAt: receivedAt, into: &out)
            return 0
        }
        var start = 0
        var end = payload.count
        while start < end && isASCIIWhitespace(base[start]) { start += 1 }
        while end > start && isASCIIWhitespace(base[end - 1]) { end -= 1 }
        if start == end { throw PayloadError(.empty, "empty payload (\(payload.count) bytes of whitespace)") }

        switch format {
        case .number:
            let value = try Self.decodePlain(base, start, end)
            out.append(Reading(device: device, metric: metric, time: receivedAt, value: value))
            return 0

        case .jsonValue(let valuePointer, let timePointer):
            let doc = try Self.parseJSON(payload)
            guard let found = valuePointer.resolve(in: doc) else {
                throw PayloadError(.valueNotFound, "JSON pointer \(Self.pointerText(valuePointer)) not found in payload \(quotePayload(payload))")
            }
            guard let value = Self.readingValue(found) else {
                throw PayloadError(.unsupportedValue, "value at \(Self.pointerText(valuePointer)) is \(Self.describeUnsupported(found)); expected a number, a bool or a string of at most \(Self.maxStringBytes) bytes")
            }
            let time = try Self.timestamp(doc, timePointer, receivedAt)
            out.append(Reading(device: device, metric: metric, time: time, value: value))
            return 0

        case .jsonObject(let timePointer):
            let doc = try Self.parseJSON(payload)
            guard case .object(let members) = doc else {
                throw PayloadError(.unsupportedValue, "payload is a JSON \(doc.kindName), expected an object: \(quotePayload(payload))")
            }
            let time = try Self.timestamp(doc, timePointer, receivedAt)
            let before = out.count
            var skipped = 0
            Self.flatten(members, prefix: metric, depth: 0, onTimePath: timePointer != nil,
                         timeTokens: timePointer?.tokens ?? [], device: device, time: time,
                         skipped: &skipped, into: &out)
            if out.count == before {
                throw PayloadError(.noMetrics, "JSON object has no number, bool or string fields" + (skipped > 0 ? " (\(skipped) skipped)" : "") + ": \(quotePayload(payload))")
            }
            return skipped

        case .function:
            return 0   // handled above
        }
    }

    /// Appends readings decoded from `payload` to `out`. See `decode(_:device:metric:receivedAt:into:)`.
    @discardableResult
    public func decode(_ payload: [UInt8], device: String, metric: String, receivedAt: Int64,
                       into out: inout [Reading]) throws(PayloadError) -> Int {
        let result = payload.withUnsafeBytes { raw -> Result<Int, PayloadError> in
            do throws(PayloadError) {
                return .success(try decode(raw, device: device, metric: metric, receivedAt: receivedAt, into: &out))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    // MARK: internals

    static func decodePlain(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int) throws(PayloadError) -> Value {
        let n = end - start
        if n == 4 && matches(p + start, "true") { return .bool(true) }
        if n == 5 && matches(p + start, "false") { return .bool(false) }
        let raw = UnsafeRawBufferPointer(start: p + start, count: n)
        if let scan = try? scanDecimal(p, from: start, to: end, strict: false), scan.end == end {
            guard scan.value.isFinite else {
                throw PayloadError(.nonFinite, "number out of range: \(quotePayload(raw))")
            }
            return .number(scan.value)
        }
        // Not a number: say whether it is a non-finite spelling.
        var s = start
        if p[s] == UInt8(ascii: "+") || p[s] == UInt8(ascii: "-") { s += 1 }
        let rest = end - s
        if (rest == 3 && (matchesLower(p + s, "nan") || matchesLower(p + s, "inf"))) || (rest == 8 && matchesLower(p + s, "infinity")) {
            throw PayloadError(.nonFinite, "payload is not a finite number: \(quotePayload(raw))")
        }
        throw PayloadError(.notANumber, "payload is not a number: \(quotePayload(raw))")
    }

    static func parseJSON(_ payload: UnsafeRawBufferPointer) throws(PayloadError) -> JSONValue {
        do throws(JSONError) {
            return try JSONParser.parse(payload)
        } catch {
            throw PayloadError(.invalidJSON, "invalid JSON: \(error): \(quotePayload(payload))")
        }
    }

    static func timestamp(_ doc: JSONValue, _ pointer: JSONPointer?, _ receivedAt: Int64) throws(PayloadError) -> Int64 {
        guard let pointer, let t = pointer.resolve(in: doc) else { return receivedAt }
        if case .null = t { return receivedAt }
        guard let ms = parseTimestamp(t) else {
            throw PayloadError(.badTimestamp, "timestamp at \(pointerText(pointer)) is not a valid time: \(quoteText(t.description))")
        }
        return ms
    }

    static func readingValue(_ v: JSONValue) -> Value? {
        switch v {
        case .number(let d): return d.isFinite ? .number(d) : nil
        case .bool(let b): return .bool(b)
        case .string(let s): return s.utf8.count <= maxStringBytes ? .string(s) : nil
        case .null, .array, .object: return nil
        }
    }

    static func describeUnsupported(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): return "a string of \(s.utf8.count) bytes"
        case .array: return "an array"
        case .object: return "an object"
        default: return v.kindName
        }
    }

    static func pointerText(_ p: JSONPointer) -> String {
        let s = p.description
        return s.isEmpty ? "\"\" (whole document)" : s
    }

    /// Depth-first flattening of an object's leaves into readings.
    /// `onTimePath`: the path so far equals the first `depth` tokens of the time pointer.
    static func flatten(_ members: [JSONMember], prefix: String, depth: Int, onTimePath: Bool,
                        timeTokens: [String], device: String, time: Int64,
                        skipped: inout Int, into out: inout [Reading]) {
        for member in members {
            let onPath = onTimePath && depth < timeTokens.count && member.key == timeTokens[depth]
            if onPath && depth + 1 == timeTokens.count { continue }  // the timestamp itself
            let name = prefix.isEmpty ? member.key : prefix + "." + member.key
            switch member.value {
            case .null:
                continue
            case .object(let inner):
                flatten(inner, prefix: name, depth: depth + 1, onTimePath: onPath, timeTokens: timeTokens,
                        device: device, time: time, skipped: &skipped, into: &out)
            case .array:
                skipped += 1
            case let leaf:
                if let value = readingValue(leaf) {
                    out.append(Reading(device: device, metric: name, time: time, value: value))
                } else {
                    skipped += 1
                }
            }
        }
    }
}

@inline(__always)
private func isASCIIWhitespace(_ c: UInt8) -> Bool {
    c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x0B || c == 0x0C
}

private func matches(_ p: UnsafePointer<UInt8>, _ s: StaticString) -> Bool {
    let u = s.utf8Start
    for i in 0..<s.utf8CodeUnitCount where p[i] != u[i] { return false }
    return true
}

private func matchesLower(_ p: UnsafePointer<UInt8>, _ s: StaticString) -> Bool {
    let u = s.utf8Start
    for i in 0..<s.utf8CodeUnitCount where (p[i] | 0x20) != u[i] { return false }
    return true
}

/// At most this many payload bytes are quoted in error messages.
let quotedPayloadLimit = 60

/// `"…"` with at most 60 bytes of `bytes`, `"` and `\` escaped, other non-printable or
/// non-ASCII bytes as `\xNN`, and `...` when truncated. Safe to put in a log line.
func quotePayload(_ bytes: UnsafeRawBufferPointer) -> String {
    var out: [UInt8] = [UInt8(ascii: "\"")]
    let hex = Array("0123456789ABCDEF".utf8)
    for c in bytes.prefix(quotedPayloadLimit) {
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"):
            out.append(UInt8(ascii: "\\")); out.append(c)
        case 0x20..<0x7F:
            out.append(c)
        case 0x0A:
            out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
        default:
            out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "x"))
            out.append(hex[Int(c >> 4)]); out.append(hex[Int(c & 15)])
        }
    }
    out.append(UInt8(ascii: "\""))
    if bytes.count > quotedPayloadLimit { out.append(contentsOf: "...".utf8) }
    return String(decoding: out, as: UTF8.self)
}

func quoteText(_ s: String) -> String {
    var s = s
    return s.withUTF8 { quotePayload(UnsafeRawBufferPointer($0)) }
}

// MARK: - Timestamps

/// Converts a timestamp found in a payload to milliseconds since the Unix epoch.
///
/// - A number is interpreted by magnitude: |x| < 1e11 seconds (fractions allowed),
///   < 1e14 milliseconds, < 1e17 microseconds, else nanoseconds; rounded to the nearest ms
///   (halves away from zero).
/// - A string holding a number (`"1764169999000"`, `"1764169999.5"`) is read the same way;
///   integer strings are converted exactly.
/// - Any other string must be an RFC 3339 date-time (see `parseRFC3339`).
/// - Anything else, non-finite values and results outside Int64 give nil.
public func parseTimestamp(_ v: JSONValue) -> Int64? {
    switch v {
    case .number(let d):
        return timestampFromDouble(d)
    case .string(let s):
        var s = s
        return s.withUTF8 { buf -> Int64? in
            guard let base = buf.baseAddress, buf.count > 0 else { return nil }
            if let i = parseIntegerStrict(buf) {
                return timestampFromInteger(i)
            }
            if let scan = try? scanDecimal(base, from: 0, to: buf.count, strict: false), scan.end == buf.count {
                return timestampFromDouble(scan.value)
            }
            return rfc3339Millis(buf)
        }
    default:
        return nil
    }
}

/// `-?[0-9]{1,19}` exactly and within Int64, else nil.
private func parseIntegerStrict(_ buf: UnsafeBufferPointer<UInt8>) -> Int64? {
    var i = 0
    var negative = false
    if buf[0] == UInt8(ascii: "-") { negative = true; i = 1 }
    let digits = buf.count - i
    guard digits >= 1 && digits <= 19 else { return nil }
    var v: Int64 = 0
    while i < buf.count {
        let d = buf[i] &- UInt8(ascii: "0")
        guard d < 10 else { return nil }
        let (m, o1) = v.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(Int64(d))
        if o1 || o2 { return nil }
        v = a
        i += 1
    }
    return negative ? -v : v
}

private func timestampFromInteger(_ v: Int64) -> Int64? {
    let mag = v.magnitude
    let divisor: Int64
    if mag < 100_000_000_000 {
        let (r, o) = v.multipliedReportingOverflow(by: 1000)
        return o ? nil : r
    } else if mag < 100_000_000_000_000 {
        return v
    } else if mag < 100_000_000_000_000_000 {
        divisor = 1000
    } else {
        divisor = 1_000_000
    }
    var q = v / divisor
    let r = v % divisor
    if r.magnitude * 2 >= divisor.magnitude { q += v < 0 ? -1 : 1 }
    return q
}

private func timestampFromDouble(_ d: Double) -> Int64? {
    guard d.isFinite else { return nil }
    let mag = d.magnitude
    let ms: Double
    if mag < 1e11 { ms = d * 1000 } else if mag < 1e14 { ms = d } else if mag < 1e17 { ms = d / 1000 } else { ms = d / 1e6 }
    let r = ms.rounded(.toNearestOrAwayFromZero)
    // Integers land within ±1e14 ms (year ±5138) by construction; doubles are held to the same
    // bound, so that no later arithmetic on reading times (rules, windows) can overflow.
    guard r > -1e14 && r < 1e14 else { return nil }
    return Int64(r)
}

/// Parses an RFC 3339 date-time to milliseconds since the Unix epoch.
///
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`; `t`/`z` may be lowercase and the `T`
/// may be a space. The fraction may have any number of digits (truncated to ms). Fields are
/// range-checked, including the day against the month's length in that (proleptic Gregorian)
/// year; second 60 (a leap second) is accepted and counts as the next second.
public func parseRFC3339(_ s: some StringProtocol) -> Int64? {
    if let r = s.utf8.withContiguousStorageIfAvailable({ rfc3339Millis($0) }) {
        return r
    }
    let bytes = Array(s.utf8)
    return bytes.withUnsafeBufferPointer { rfc3339Millis($0) }
}

/// Parses an RFC 3339 date-time held in raw bytes. See `parseRFC3339(_:)`.
public func parseRFC3339(bytes: UnsafeRawBufferPointer) -> Int64? {
    rfc3339Millis(bytes.bindMemory(to: UInt8.self))
}

func rfc3339Millis(_ b: UnsafeBufferPointer<UInt8>) -> Int64? {
    let n = b.count
    guard n >= 20 else { return nil }
    @inline(__always) func num(_ at: Int, _ len: Int) -> Int? {
        var v = 0
        for i in at..<(at + len) {
            let d = b[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            v = v * 10 + Int(d)
        }
        return v
    }
    guard let year = num(0, 4), b[4] == UInt8(ascii: "-"),
          let month = num(5, 2), b[7] == UInt8(ascii: "-"),
          let day = num(8, 2),
          b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
          let hour = num(11, 2), b[13] == UInt8(ascii: ":"),
          let minute = num(14, 2), b[16] == UInt8(ascii: ":"),
          let second = num(17, 2)
    else { return nil }
    guard month >= 1 && month <= 12, day >= 1, day <= daysInMonth(year, month),
          hour <= 23, minute <= 59, second <= 60 else { return nil }
    var i = 19
    var millis = 0
    if b[i] == UInt8(ascii: ".") {
        i += 1
        var digits = 0
        while i < n, case let d = b[i] &- UInt8(ascii: "0"), d < 10 {
            if digits < 3 { millis = millis * 10 + Int(d) }
            digits += 1
            i += 1
        }
        guard digits > 0 else { return nil }
        for _ in digits..<max(digits, 3) { millis *= 10 }
    }
    guard i < n else { return nil }
    var offsetSeconds = 0
    switch b[i] {
    case UInt8(ascii: "Z"), UInt8(ascii: "z"):
        i += 1
    case UInt8(ascii: "+"), UInt8(ascii: "-"):
        guard n - i == 6, let oh = num(i + 1, 2), b[i + 3] == UInt8(ascii: ":"), let om = num(i + 4, 2),
              oh <= 23, om <= 59 else { return nil }
        offsetSeconds = (oh * 60 + om) * 60 * (b[i] == UInt8(ascii: "-") ? -1 : 1)
        i += 6
    default:
        return nil
    }
    guard i == n else { return nil }
    let days = daysFromCivil(year: year, month: month, day: day)
    let seconds = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetSeconds)
    // The same bound as numeric times (±1e14 ms, year 5138): arithmetic on it cannot overflow.
    let ms = seconds * 1000 + Int64(millis)
    return ms.magnitude < 100_000_000_000_000 ? ms : nil
}

func isLeapYear(_ y: Int) -> Bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

func daysInMonth(_ y: Int, _ m: Int) -> Int {
    switch m {
    case 2: return isLeapYear(y) ? 29 : 28
    case 4, 6, 9, 11: return 30
    default: return 31
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian civil date (H. Hinnant's algorithm).
func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400                                    // [0, 399]
    let mp = (month + 9) % 12                                  // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1                     // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy            // [0, 146096]
    return era * 146_097 + doe - 719_468
}
