import BrumeCore

// How one frame (one line from `LineFramer`) becomes readings.
//
// Values (kv and CSV fields):
// - `true` / `false` → bool;
// - a number → `.number`. The grammar is the one of BrumeCore's plain-number payloads:
//   `[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?` and nothing else (no whitespace inside,
//   no hex, no trailing junk). `nan`, `inf`, `infinity` (any case, any sign) and numbers that
//   overflow a Double make the field an error;
// - anything else → `.string`, if it is valid UTF-8 without control bytes and at most
//   `FrameDecoder.maxStringBytes` (64) bytes long; otherwise the field is an error.
// A field error makes the whole frame `unparsable`: a frame never yields half its readings.
// Empty values (`temp=`, `21.5,,40`) are skipped (no value). Spaces and tabs around keys, values
// and CSV fields are trimmed.
//
// Timestamps (kv `timeKey`, CSV `timeColumn`): the value is read like a JSON string timestamp by
// BrumeCore's `parseTimestamp` (numbers by magnitude s/ms/µs/ns, RFC 3339 date-times); an
// empty or absent value gives `receivedAt`; a value that does not parse makes the frame
// `unparsable`. The time field is not a metric.
//
// kv: a pair without the assign byte or with an empty key makes the frame `unparsable`; empty
// pairs (`a=1,,b=2`, a trailing separator) are ignored. CSV: RFC 4180 quoting (`"a,b"`, `""`);
// a row with the wrong number of fields is `unparsable`; without configured columns the first
// row with a non-empty, non-numeric field is the header (duplicate names rejected, an empty name
// ignores its column), data rows before it are `unparsable`, and the header repeated later (a
// device reboot) is skipped. Header rows give no readings and no error.
// jsonl: BrumeCore's `PayloadDecoder`; the metric is "" for `.jsonObject` (field names are the
// metrics), the last token of the value pointer for `.jsonValue` ("value" for the whole
// document) and "value" for `.number`. Payload errors map to `empty` or `unparsable`.
// A frame that yields no reading at all (only empty values) is `empty`.

// `SerialFormat` (kv, csv, jsonl, nmea) is defined in BrumeCore, shared with the configuration.

/// Decodes the frames of one serial source. Holds per-stream state (the CSV header, the NMEA
/// date and which sentences were seen), so use one decoder per port.
public struct FrameDecoder: Sendable {
    public let format: SerialFormat
    /// The device of the readings (unless a CSV `deviceColumn` names another one).
    public let device: String

    /// Longest string value accepted, in UTF-8 bytes.
    public static let maxStringBytes = 64
    /// Longest key / column name / device name accepted, in UTF-8 bytes.
    public static let maxNameBytes = 128

    /// Fields skipped by `.jsonl(.jsonObject)` (arrays, over-long strings) since creation.
    public private(set) var skippedFields = 0

    // kv
    private var kvTimeKey: [UInt8] = []
    private var kvRanges: [Int] = []        // 4 per pair: key start, key end, value start, value end

    // csv
    private var csvColumns: [String]? = nil
    private var csvColumnBytes: [[UInt8]] = []
    private var csvTimeIndex = -1
    private var csvDeviceIndex = -1
    private var cellBytes: [UInt8] = []
    private var cellEnds: [Int] = []

    // jsonl
    private var payloadDecoder: PayloadDecoder? = nil
    private var jsonMetric = ""

    // nmea
    private var nmea = NMEAState()

    public init(format: SerialFormat, device: String) {
        self.format = format
        self.device = device
        switch format {
        case .kv(_, _, let timeKey):
            kvTimeKey = timeKey.map { Array($0.utf8) } ?? []
        case .csv(let columns, _, _, _):
            if let columns { setCSVColumns(columns) }
        case .jsonl(let payloadFormat):
            payloadDecoder = PayloadDecoder(format: payloadFormat)
            switch payloadFormat {
            case .number: jsonMetric = "value"
            case .jsonObject, .function: jsonMetric = ""
            case .jsonValue(let pointer, _): jsonMetric = pointer.tokens.last ?? "value"
            }
        case .nmea(let requireChecksum):
            nmea.requireChecksum = requireChecksum
        }
    }

    /// Forgets stream state: a CSV header learnt from the stream, the NMEA date and the
    /// sentences seen. Call it after the device was unplugged or the port reopened.
    public mutating func reset() {
        if case .csv(let columns, _, _, _) = format {
            if let columns { setCSVColumns(columns) } else { clearCSVColumns() }
        }
        let require = nmea.requireChecksum
        nmea = NMEAState()
        nmea.requireChecksum = require
    }

    /// Appends the readings of one frame to `out`.
    ///
    /// A CSV header line, a repeated header, an NMEA ZDA, a GSV other than the first of its
    /// group and RMC-shadowed VTG/GLL append nothing and do not throw.
    /// - Throws: `FrameError` with reason `unparsable`, `badChecksum`, `unsupported` or `empty`;
    ///   nothing is appended then.
    public mutating func decode(_ frame: UnsafeRawBufferPointer, receivedAt: Int64,
                                into out: inout [Reading]) throws(FrameError) {
        let before = out.count
        do {
            switch format {
            case .kv(let sep, let assign, _):
                try decodeKV(frame, sep: sep, assign: assign, receivedAt: receivedAt, into: &out)
            case .csv(let columns, let delimiter, let timeColumn, let deviceColumn):
                try decodeCSV(frame, learnHeader: columns == nil, delimiter: delimiter,
                              timeColumn: timeColumn, deviceColumn: deviceColumn, receivedAt: receivedAt, into: &out)
            case .jsonl:
                try decodeJSONL(frame, receivedAt: receivedAt, into: &out)
            case .nmea:
                try nmea.decode(frame, device: device, receivedAt: receivedAt, into: &out)
            }
        } catch {
            if out.count > before { out.removeSubrange(before...) }
            throw error
        }
    }

    /// Appends the readings of one frame to `out`. See `decode(_:receivedAt:into:)`.
    public mutating func decode(_ frame: [UInt8], receivedAt: Int64, into out: inout [Reading]) throws(FrameError) {
        let result = frame.withUnsafeBytes { raw -> FrameError? in
            do throws(FrameError) {
                try decode(raw, receivedAt: receivedAt, into: &out)
                return nil
            } catch {
                return error
            }
        }
        if let result { throw result }
    }

    // MARK: - kv

    private mutating func decodeKV(_ frame: UnsafeRawBufferPointer, sep: UInt8, assign: UInt8,
                                   receivedAt: Int64, into out: inout [Reading]) throws(FrameError) {
        guard let p = frame.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            throw FrameError(.empty, "empty frame")
        }
        let (s, e) = FrameBytes.trimWhitespace(p, 0, frame.count)
        if s == e { throw FrameError(.empty, "blank line \(FrameBytes.quote(frame))") }
        let spaceSeparated = sep == 0x20 || sep == 0x09
        kvRanges.removeAll(keepingCapacity: true)
        var time = receivedAt
        var pos = s
        while pos <= e {
            var q = pos
            if spaceSeparated {
                while q < e && p[q] != 0x20 && p[q] != 0x09 { q += 1 }
            } else {
                while q < e && p[q] != sep { q += 1 }
            }
            let (ps, pe) = trimSpaces(p, pos, q)
            pos = q + 1
            if ps == pe { continue }                // empty pair ("a=1,,b=2", trailing separator)
            var a = ps
            while a < pe && p[a] != assign { a += 1 }
            if a == pe {
                throw FrameError(.unparsable, "pair \(FrameBytes.quote(FrameBytes.slice(p, ps, pe))) has no \(quoteByte(assign)) in \(FrameBytes.quote(frame))")
            }
            let (ks, ke) = trimSpaces(p, ps, a)
            if ks == ke {
                throw FrameError(.unparsable, "empty key in pair \(FrameBytes.quote(FrameBytes.slice(p, ps, pe))) in \(FrameBytes.quote(frame))")
            }
            let (vs, ve) = trimSpaces(p, a + 1, pe)
            if !kvTimeKey.isEmpty && bytesEqual(p, ks, ke, kvTimeKey) {
                if vs < ve { time = try parseTime(p, vs, ve, what: "time key", frame: frame) }
                continue
            }
            kvRanges.append(ks); kvRanges.append(ke); kvRanges.append(vs); kvRanges.append(ve)
        }
        let before = out.count
        var i = 0
        while i < kvRanges.count {
            let ks = kvRanges[i], ke = kvRanges[i + 1], vs = kvRanges[i + 2], ve = kvRanges[i + 3]
            i += 4
            if vs == ve { continue }
            guard let metric = makeText(p, ks, ke, maxBytes: Self.maxNameBytes) else {
                throw FrameError(.unparsable, "key \(FrameBytes.quote(FrameBytes.slice(p, ks, ke))) is not a valid name (UTF-8 without control bytes, at most \(Self.maxNameBytes) bytes) in \(FrameBytes.quote(frame))")
            }
            let value = try parseFieldValue(p, vs, ve, name: metric, frame: frame)
            out.append(Reading(device: device, metric: metric, time: time, value: value))
        }
        if out.count == before { throw FrameError(.empty, "no values in \(FrameBytes.quote(frame))") }
    }

    // MARK: - CSV

    private mutating func setCSVColumns(_ names: [String]) {
        csvColumns = names
        csvColumnBytes = names.map { Array($0.utf8) }
        csvTimeIndex = -1
        csvDeviceIndex = -1
        if case .csv(_, _, let timeColumn, let deviceColumn) = format {
            if let timeColumn, let i = names.firstIndex(of: timeColumn) { csvTimeIndex = i }
            if let deviceColumn, let i = names.firstIndex(of: deviceColumn) { csvDeviceIndex = i }
        }
    }

    private mutating func clearCSVColumns() {
        csvColumns = nil
        csvColumnBytes = []
        csvTimeIndex = -1
        csvDeviceIndex = -1
    }

    /// Splits a CSV line into `cellBytes` / `cellEnds` (RFC 4180 quoting; spaces and tabs
    /// around fields trimmed unless they are the delimiter).
    private mutating func splitCSV(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, delimiter: UInt8,
                                   frame: UnsafeRawBufferPointer) throws(FrameError) {
        cellBytes.removeAll(keepingCapacity: true)
        cellEnds.removeAll(keepingCapacity: true)
        let quote = UInt8(ascii: "\"")
        @inline(__always) func isPad(_ c: UInt8) -> Bool { (c == 0x20 || c == 0x09) && c != delimiter }
        var pos = s
        while true {
            while pos < e && isPad(p[pos]) { pos += 1 }
            if pos < e && p[pos] == quote {
                pos += 1
                while true {
                    guard pos < e else {
                        throw FrameError(.unparsable, "unterminated quoted field in \(FrameBytes.quote(frame))")
                    }
                    if p[pos] == quote {
                        if pos + 1 < e && p[pos + 1] == quote {
                            cellBytes.append(quote)
                            pos += 2
                            continue
                        }
                        pos += 1
                        break
                    }
                    cellBytes.append(p[pos])
                    pos += 1
                }
                while pos < e && isPad(p[pos]) { pos += 1 }
                if pos < e && p[pos] != delimiter {
                    throw FrameError(.unparsable, "unexpected \(quoteByte(p[pos])) after a quoted field in \(FrameBytes.quote(frame))")
                }
            } else {
                var q = pos
                while q < e && p[q] != delimiter { q += 1 }
                var r = q
                while r > pos && isPad(p[r - 1]) { r -= 1 }
                cellBytes.append(contentsOf: UnsafeBufferPointer(start: p + pos, count: r - pos))
                pos = q
            }
            cellEnds.append(cellBytes.count)
            if pos >= e { break }
            pos += 1    // the delimiter; a delimiter at the end gives a last, empty field
        }
    }

    private mutating func decodeCSV(_ frame: UnsafeRawBufferPointer, learnHeader: Bool, delimiter: UInt8,
                                    timeColumn: String?, deviceColumn: String?,
                                    receivedAt: Int64, into out: inout [Reading]) throws(FrameError) {
        guard let p = frame.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            throw FrameError(.empty, "empty frame")
        }
        var (s, e) = (0, frame.count)
        // Trim whitespace around the line, but not the delimiter (tab-separated empty fields).
        while s < e && isWhitespace(p[s]) && p[s] != delimiter { s += 1 }
        while e > s && isWhitespace(p[e - 1]) && p[e - 1] != delimiter { e -= 1 }
        if s == e { throw FrameError(.empty, "blank line \(FrameBytes.quote(frame))") }
        try splitCSV(p, s, e, delimiter: delimiter, frame: frame)
        let fieldCount = cellEnds.count
        cellBytes.append(0)     // sentinel: the buffer is never empty

        let cells = cellBytes
        let ends = cellEnds
        return try cells.withUnsafeBufferPointer { (buf) throws(FrameError) -> Void in
            let c = buf.baseAddress!
            @inline(__always) func bounds(_ i: Int) -> (Int, Int) { (i == 0 ? 0 : ends[i - 1], ends[i]) }

            guard let columns = csvColumns else {
                // Learning the header: the first line with a non-empty, non-numeric field.
                var isHeader = false
                for i in 0..<fieldCount {
                    let (a, b) = bounds(i)
                    if a < b && !isNumberSyntax(c, a, b) { isHeader = true; break }
                }
                guard learnHeader, isHeader else {
                    throw FrameError(.unparsable, "CSV data row before any header line (no column names): \(FrameBytes.quote(frame))")
                }
                var names: [String] = []
                names.reserveCapacity(fieldCount)
                for i in 0..<fieldCount {
                    let (a, b) = bounds(i)
                    guard let name = makeText(c, a, b, maxBytes: Self.maxNameBytes) else {
                        throw FrameError(.unparsable, "CSV header field \(i + 1) is not a valid column name: \(FrameBytes.quote(frame))")
                    }
                    if !name.isEmpty && names.contains(name) {
                        throw FrameError(.unparsable, "CSV header names column \(quoteText(name)) twice: \(FrameBytes.quote(frame))")
                    }
                    names.append(name)
                }
                setCSVColumns(names)
                return
            }

            guard fieldCount == columns.count else {
                throw FrameError(.unparsable, "CSV row has \(fieldCount) field\(fieldCount == 1 ? "" : "s"), expected \(columns.count): \(FrameBytes.quote(frame))")
            }
            // A repeated header line (device rebooted and printed it again): nothing to read.
            if learnHeader {
                var same = true
                for i in 0..<fieldCount {
                    let (a, b) = bounds(i)
                    if !bytesEqual(c, a, b, csvColumnBytes[i]) { same = false; break }
                }
                if same { return }
            }

            var time = receivedAt
            if csvTimeIndex >= 0 {
                let (a, b) = bounds(csvTimeIndex)
                if a < b { time = try parseTime(c, a, b, what: "time column \(quoteText(columns[csvTimeIndex]))", frame: frame) }
            }
            var rowDevice = device
            if csvDeviceIndex >= 0 {
                let (a, b) = bounds(csvDeviceIndex)
                if a < b {
                    guard let d = makeText(c, a, b, maxBytes: Self.maxNameBytes) else {
                        throw FrameError(.unparsable, "device column \(quoteText(columns[csvDeviceIndex])) is not a valid device name: \(FrameBytes.quote(frame))")
                    }
                    rowDevice = d
                }
            }
            let before = out.count
            for i in 0..<fieldCount where i != csvTimeIndex && i != csvDeviceIndex && !columns[i].isEmpty {
                let (a, b) = bounds(i)
                if a == b { continue }
                let value = try parseFieldValue(c, a, b, name: columns[i], frame: frame)
                out.append(Reading(device: rowDevice, metric: columns[i], time: time, value: value))
            }
            if out.count == before { throw FrameError(.empty, "CSV row has no values: \(FrameBytes.quote(frame))") }
        }
    }

    // MARK: - JSON lines

    private mutating func decodeJSONL(_ frame: UnsafeRawBufferPointer, receivedAt: Int64,
                                      into out: inout [Reading]) throws(FrameError) {
        guard let decoder = payloadDecoder else { return }
        do throws(PayloadError) {
            skippedFields += try decoder.decode(frame, device: device, metric: jsonMetric, receivedAt: receivedAt, into: &out)
        } catch {
            throw FrameError(error.reason == .empty ? .empty : .unparsable, "\(error.reason.rawValue): \(error.message)")
        }
    }

    // MARK: - fields

    private func parseTime(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, what: String,
                           frame: UnsafeRawBufferPointer) throws(FrameError) -> Int64 {
        let text = String(decoding: UnsafeBufferPointer(start: p + s, count: e - s), as: UTF8.self)
        guard let t = parseTimestamp(.string(text)) else {
            throw FrameError(.unparsable, "\(what) value \(FrameBytes.quote(FrameBytes.slice(p, s, e))) is not a valid timestamp in \(FrameBytes.quote(frame))")
        }
        return t
    }

    private func parseFieldValue(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, name: String,
                                 frame: UnsafeRawBufferPointer) throws(FrameError) -> Value {
        switch parseValue(p, s, e) {
        case .success(let v):
            return v
        case .failure(let problem):
            let what: String
            switch problem {
            case .nonFinite: what = "is not a finite number"
            case .tooLong: what = "is a string of \(e - s) bytes (at most \(Self.maxStringBytes))"
            case .invalidText: what = "is not valid text (UTF-8 without control bytes)"
            }
            throw FrameError(.unparsable, "value of \(quoteText(name)) \(FrameBytes.quote(FrameBytes.slice(p, s, e))) \(what) in \(FrameBytes.quote(frame))")
        }
    }
}

// MARK: - Byte helpers shared by the framer and the decoders

/// Namespace of the byte-level helpers shared by the files of this folder.
enum FrameBytes {
    /// The range without the ASCII whitespace (space, tab, CR, LF, VT, FF) at both ends.
    @inline(__always)
    static func trimWhitespace(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> (Int, Int) {
        var s = s, e = e
        while s < e && isWhitespace(p[s]) { s += 1 }
        while e > s && isWhitespace(p[e - 1]) { e -= 1 }
        return (s, e)
    }

    @inline(__always)
    static func slice(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: p + s, count: e - s)
    }

    /// The correctly rounded value of a range that passed `isNumberSyntax`: exact fast path for up
    /// to 15 significant digits and small exponents, else the standard library's conversion.
    /// Overflow gives ±infinity.
    static func parseDecimal(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Double {
        var i = s
        var negative = false
        if p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { negative = p[i] == UInt8(ascii: "-"); i += 1 }
        var mantissa: UInt64 = 0
        var significant = 0
        var exp10 = 0
        var fast = true
        while i < e, case let d = p[i] &- 0x30, d < 10 {
            if mantissa != 0 || d != 0 { significant += 1 }
            if significant > 15 { fast = false }
            mantissa = mantissa &* 10 &+ UInt64(d)
            i += 1
        }
        if i < e && p[i] == UInt8(ascii: ".") {
            i += 1
            while i < e, case let d = p[i] &- 0x30, d < 10 {
                if mantissa != 0 || d != 0 { significant += 1 }
                if significant > 15 { fast = false }
                mantissa = mantissa &* 10 &+ UInt64(d)
                exp10 -= 1
                i += 1
            }
        }
        if i < e {   // exponent
            i += 1
            var expNegative = false
            if p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { expNegative = p[i] == UInt8(ascii: "-"); i += 1 }
            var x = 0
            while i < e {
                if x < 100_000 { x = x * 10 + Int(p[i] &- 0x30) }
                i += 1
            }
            exp10 += expNegative ? -x : x
        }
        if fast {
            var value = Double(mantissa)
            if mantissa == 0 {
                value = 0
            } else if exp10 >= 0 && exp10 <= 22 {
                value *= exactPowersOfTen[exp10]
            } else if exp10 < 0 && exp10 >= -22 {
                value /= exactPowersOfTen[-exp10]
            } else {
                fast = false
            }
            if fast { return negative ? -value : value }
        }
        let text = String(decoding: UnsafeBufferPointer(start: p + s, count: e - s), as: UTF8.self)
        return Double(text) ?? .nan
    }
}

// MARK: - Field helpers

private enum ValueProblem: Error {
    case nonFinite, tooLong, invalidText
}

@inline(__always)
private func isWhitespace(_ c: UInt8) -> Bool {
    c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x0B || c == 0x0C
}

@inline(__always)
private func trimSpaces(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> (Int, Int) {
    var s = s, e = e
    while s < e && (p[s] == 0x20 || p[s] == 0x09) { s += 1 }
    while e > s && (p[e - 1] == 0x20 || p[e - 1] == 0x09) { e -= 1 }
    return (s, e)
}

private func bytesEqual(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, _ bytes: [UInt8]) -> Bool {
    guard e - s == bytes.count else { return false }
    for i in 0..<bytes.count where p[s + i] != bytes[i] { return false }
    return true
}

private func quoteByte(_ c: UInt8) -> String {
    withUnsafeBytes(of: c) { FrameBytes.quote($0) }
}

private func quoteText(_ s: String) -> String {
    var s = s
    return s.withUTF8 { FrameBytes.quote(UnsafeRawBufferPointer($0)) }
}

/// The bytes as a String if they are valid UTF-8 without control bytes and at most `maxBytes` long.
private func makeText(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, maxBytes: Int) -> String? {
    guard e - s <= maxBytes else { return nil }
    var ascii = true
    for i in s..<e {
        let c = p[i]
        if c < 0x20 || c == 0x7F { return nil }
        if c >= 0x80 { ascii = false }
    }
    let buf = UnsafeBufferPointer(start: p + s, count: e - s)
    if ascii { return String(decoding: buf, as: UTF8.self) }
    guard let text = String(validating: buf, as: UTF8.self) else { return nil }
    // C1 controls (U+0080–U+009F) are control characters too.
    for u in text.unicodeScalars where u.value >= 0x80 && u.value <= 0x9F { return nil }
    return text
}

/// A field's value: bool, number or short string (see the comment at the top of this file).
private func parseValue(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Result<Value, ValueProblem> {
    let n = e - s
    if n == 4 && p[s] == UInt8(ascii: "t") && p[s + 1] == UInt8(ascii: "r") && p[s + 2] == UInt8(ascii: "u") && p[s + 3] == UInt8(ascii: "e") {
        return .success(.bool(true))
    }
    if n == 5 && p[s] == UInt8(ascii: "f") && p[s + 1] == UInt8(ascii: "a") && p[s + 2] == UInt8(ascii: "l")
        && p[s + 3] == UInt8(ascii: "s") && p[s + 4] == UInt8(ascii: "e") {
        return .success(.bool(false))
    }
    if isNumberSyntax(p, s, e) {
        let d = FrameBytes.parseDecimal(p, s, e)
        return d.isFinite ? .success(.number(d)) : .failure(.nonFinite)
    }
    if isNonFiniteSpelling(p, s, e) { return .failure(.nonFinite) }
    guard n <= FrameDecoder.maxStringBytes else { return .failure(.tooLong) }
    guard let text = makeText(p, s, e, maxBytes: FrameDecoder.maxStringBytes) else { return .failure(.invalidText) }
    return .success(.string(text))
}

/// `[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?`, the whole range.
private func isNumberSyntax(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
    var i = s
    if i < e && (p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-")) { i += 1 }
    var digits = 0
    while i < e && p[i] &- 0x30 < 10 { i += 1; digits += 1 }
    if i < e && p[i] == UInt8(ascii: ".") {
        i += 1
        while i < e && p[i] &- 0x30 < 10 { i += 1; digits += 1 }
    }
    guard digits > 0 else { return false }
    if i < e && (p[i] | 0x20) == UInt8(ascii: "e") {
        i += 1
        if i < e && (p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-")) { i += 1 }
        var expDigits = 0
        while i < e && p[i] &- 0x30 < 10 { i += 1; expDigits += 1 }
        guard expDigits > 0 else { return false }
    }
    return i == e
}

private func isNonFiniteSpelling(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
    var i = s
    if i < e && (p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-")) { i += 1 }
    func lowerEquals(_ word: StaticString) -> Bool {
        guard e - i == word.utf8CodeUnitCount else { return false }
        for k in 0..<word.utf8CodeUnitCount where (p[i + k] | 0x20) != word.utf8Start[k] { return false }
        return true
    }
    return lowerEquals("nan") || lowerEquals("inf") || lowerEquals("infinity")
}

private let exactPowersOfTen: [Double] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
]
