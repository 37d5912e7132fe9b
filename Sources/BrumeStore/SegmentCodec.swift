import BrumeCore

// Outbox segment format, version 1.
//
// A segment holds the readings of one group commit (one SQLite row); their outbox sequence
// numbers are firstSeq, firstSeq+1, ... where firstSeq is kept in the row, not in the blob.
// All integers are LEB128 varints (7 bits per byte, low group first, at most 10 bytes) unless
// stated; "zigzag" maps signed n to unsigned (n << 1) ^ (n >> 63).
//
//   magic      1 byte   0xB5
//   version    1 byte   0x01
//   count      varint   number of readings
//   strings    varint   number of interned strings S, then S times: varint byte length, UTF-8 bytes.
//                       Device names, metric names and string values, in order of first use.
//   readings   count times:
//     device   varint   index into strings
//     metric   varint   index into strings
//     dt       zigzag varint   time minus the previous reading's time (the first: minus 0),
//                       computed with wrapping Int64 arithmetic
//     tag      1 byte   value encoding, followed by its payload:
//                0x00  integral number, |x| < 2^53, not -0.0: zigzag varint of the integer
//                0x01  float64: 8 bytes, IEEE 754 bit pattern, little-endian (exact for any value,
//                      including NaN payloads and infinities)
//                0x02  float32: 4 bytes LE, used when Double(Float(x)) has x's exact bit pattern
//                0x03  false
//                0x04  true
//                0x05  string: varint index into strings
//                0x11...0x19  decimal with k = tag - 0x10 fraction digits: zigzag varint m,
//                      value = Double(m) / 10^k (one correctly rounded IEEE division, so the
//                      decoder reproduces the exact bits; the encoder only picks it if it does)
//   version 2 only (readings stamped while the system clock was not synchronised; a segment
//   without any is written as version 1):
//   boot       varint byte length, UTF-8 bytes: the boot id of the gateway that stamped them
//   marked     varint   number of marked readings M (at least 1), then M times:
//     index    varint   index of the reading minus the previous marked index (the first: minus 0)
//     boot ms  zigzag varint   its boot-clock ms (CLOCK_BOOTTIME) minus the previous one's
//   crc        4 bytes  CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320) of every byte before it, LE.
//
// The encoder picks the shortest of the number encodings that round-trips bit-exactly.
// Typical sensor data (few series, small time deltas, values like 21.5) takes 6-8 bytes per reading.

/// A segment blob that cannot be decoded.
public enum SegmentError: Error, Sendable, Hashable, CustomStringConvertible {
    case corrupt(String)

    public var description: String {
        switch self {
        case .corrupt(let why): return "corrupt outbox segment: \(why)"
        }
    }
}

/// Compact binary encoding of the readings of one outbox segment. See the format above.
public enum SegmentCodec {
    public static let magic: UInt8 = 0xB5
    public static let version: UInt8 = 1
    /// With the boot-clock times of readings stamped by an unsynchronised clock.
    public static let versionWithClock: UInt8 = 2

    static let tagInteger: UInt8 = 0x00
    static let tagFloat64: UInt8 = 0x01
    static let tagFloat32: UInt8 = 0x02
    static let tagFalse: UInt8 = 0x03
    static let tagTrue: UInt8 = 0x04
    static let tagString: UInt8 = 0x05
    static let tagDecimalBase: UInt8 = 0x10
    static let maxDecimalDigits = 9

    private static let powersOfTen: [Double] = [1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9]
    private static let twoTo53: Double = 9_007_199_254_740_992

    /// Encodes readings whose sequence numbers are firstSeq, firstSeq+1, ... into a compact blob.
    /// `boot`: the boot id written with readings that carry `unsyncedBootMillis` (version 2).
    public static func encode(_ readings: some Collection<Reading>, boot: String = "") -> [UInt8] {
        // Intern strings in order of first use.
        var index: [String: Int] = [:]
        var table: [String] = []
        var tableBytes = 0
        @inline(__always) func intern(_ s: String) -> Int {
            if let i = index[s] { return i }
            let i = table.count
            index[s] = i
            table.append(s)
            tableBytes += s.utf8.count + 2
            return i
        }
        var refs: [(device: Int, metric: Int, string: Int)] = []
        refs.reserveCapacity(readings.count)
        // Consecutive readings mostly share a device (and often a metric): no hashing then.
        var lastDevice = "", lastMetric = ""
        var d = -1, m = -1
        for r in readings {
            if d < 0 || r.device != lastDevice { d = intern(r.device); lastDevice = r.device }
            if m < 0 || r.metric != lastMetric { m = intern(r.metric); lastMetric = r.metric }
            var s = -1
            if case .string(let v) = r.value { s = intern(v) }
            refs.append((d, m, s))
        }

        var out: [UInt8] = []
        out.reserveCapacity(16 + tableBytes + readings.count * 10)
        let marked = readings.contains { $0.unsyncedBootMillis != nil }
        out.append(magic)
        out.append(marked ? versionWithClock : version)
        putVarint(UInt64(readings.count), &out)
        putVarint(UInt64(table.count), &out)
        for s in table {
            putVarint(UInt64(s.utf8.count), &out)
            out.append(contentsOf: s.utf8)
        }
        var previousTime: Int64 = 0
        for (r, ref) in zip(readings, refs) {
            putVarint(UInt64(ref.device), &out)
            putVarint(UInt64(ref.metric), &out)
            putVarint(zigzag(r.time &- previousTime), &out)
            previousTime = r.time
            switch r.value {
            case .bool(let b):
                out.append(b ? tagTrue : tagFalse)
            case .string:
                out.append(tagString)
                putVarint(UInt64(ref.string), &out)
            case .number(let d):
                putNumber(d, &out)
            }
        }
        if marked {
            putVarint(UInt64(boot.utf8.count), &out)
            out.append(contentsOf: boot.utf8)
            let marks = readings.enumerated().compactMap { i, r in r.unsyncedBootMillis.map { (i, $0) } }
            putVarint(UInt64(marks.count), &out)
            var previousIndex = 0, previousBoot: Int64 = 0
            for (i, b) in marks {
                putVarint(UInt64(i - previousIndex), &out)
                putVarint(zigzag(b &- previousBoot), &out)
                previousIndex = i
                previousBoot = b
            }
        }
        let crc = crc32(out)
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        return out
    }

    /// Encodes a finite or non-finite double with the shortest exact encoding.
    static func putNumber(_ d: Double, _ out: inout [UInt8]) {
        let negativeZero = d == 0 && d.sign == .minus
        if !negativeZero && d.magnitude < twoTo53 && d.rounded(.towardZero) == d {
            out.append(tagInteger)
            putVarint(zigzag(Int64(d)), &out)
            return
        }
        // Best exact candidate so far: float64 (9 bytes) or float32 (5 bytes).
        let f = Float(d)
        let float32Exact = Double(f).bitPattern == d.bitPattern
        var bestCost = float32Exact ? 5 : 9
        var bestK = 0
        var bestM: Int64 = 0
        if d.isFinite && !negativeZero {
            for k in 1...maxDecimalDigits {
                let scaled = (d * powersOfTen[k]).rounded()
                guard scaled.magnitude < twoTo53 else { break }
                if (scaled / powersOfTen[k]).bitPattern == d.bitPattern {
                    let m = Int64(scaled)
                    let cost = 1 + varintLength(zigzag(m))
                    if cost < bestCost { bestCost = cost; bestK = k; bestM = m }
                    break  // smallest k gives the smallest mantissa
                }
            }
        }
        if bestK > 0 {
            out.append(tagDecimalBase + UInt8(bestK))
            putVarint(zigzag(bestM), &out)
        } else if float32Exact {
            out.append(tagFloat32)
            let bits = f.bitPattern
            for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: bits >> UInt32(shift))) }
        } else {
            out.append(tagFloat64)
            let bits = d.bitPattern
            for shift in stride(from: 0, to: 64, by: 8) { out.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
        }
    }

    /// Decodes a blob made by `encode`; throws `SegmentError.corrupt` on any inconsistency
    /// (bad magic/version, CRC mismatch, truncation, varint overflow, bad UTF-8, bad index or tag,
    /// count mismatch, trailing bytes). Never traps on hostile input.
    public static func decode(_ blob: UnsafeRawBufferPointer) throws(SegmentError) -> [Reading] {
        try decodeSegment(blob).readings
    }

    /// Decodes a blob, with the boot id of its marked readings (version 2; nil for version 1).
    public static func decodeSegment(_ blob: UnsafeRawBufferPointer) throws(SegmentError) -> (readings: [Reading], boot: String?) {
        let n = blob.count
        guard n >= 8 else { throw .corrupt("truncated: \(n) bytes") }
        guard blob[0] == magic else { throw .corrupt("bad magic byte 0x\(String(blob[0], radix: 16))") }
        guard blob[1] == version || blob[1] == versionWithClock else { throw .corrupt("unsupported version \(blob[1])") }
        let bodyEnd = n - 4
        let stored = UInt32(blob[bodyEnd]) | UInt32(blob[bodyEnd + 1]) << 8 | UInt32(blob[bodyEnd + 2]) << 16 | UInt32(blob[bodyEnd + 3]) << 24
        let computed = crc32(UnsafeRawBufferPointer(rebasing: blob[0..<bodyEnd]))
        guard stored == computed else { throw .corrupt("CRC mismatch (stored \(stored), computed \(computed))") }

        var r = ByteReader(blob: blob, pos: 2, end: bodyEnd)
        let count = try r.varint("reading count")
        // Every reading takes at least 4 bytes: a larger count cannot be honest.
        guard count <= UInt64(bodyEnd / 4) else { throw .corrupt("reading count \(count) exceeds the blob size") }
        let stringCount = try r.varint("string count")
        guard stringCount <= UInt64(bodyEnd) else { throw .corrupt("string count \(stringCount) exceeds the blob size") }
        var strings: [String] = []
        strings.reserveCapacity(Int(stringCount))
        for i in 0..<Int(stringCount) {
            let length = try r.varint("string length")
            guard length <= UInt64(r.end - r.pos) else { throw .corrupt("string \(i) truncated") }
            let bytes = UnsafeRawBufferPointer(rebasing: blob[r.pos..<(r.pos + Int(length))])
            guard let s = String(validating: bytes.bindMemory(to: UInt8.self), as: UTF8.self) else {
                throw .corrupt("string \(i) is not valid UTF-8")
            }
            strings.append(s)
            r.pos += Int(length)
        }
        @inline(__always) func string(_ what: String, _ reader: inout ByteReader) throws(SegmentError) -> String {
            let i = try reader.varint(what)
            guard i < UInt64(strings.count) else { throw .corrupt("\(what) index \(i) out of range (\(strings.count) strings)") }
            return strings[Int(i)]
        }

        var readings: [Reading] = []
        readings.reserveCapacity(Int(count))
        var time: Int64 = 0
        for _ in 0..<Int(count) {
            let device = try string("device", &r)
            let metric = try string("metric", &r)
            time = time &+ unzigzag(try r.varint("time delta"))
            let tag = try r.byte("value tag")
            let value: Value
            switch tag {
            case tagInteger:
                value = .number(Double(unzigzag(try r.varint("integer value"))))
            case tagFloat64:
                value = .number(Double(bitPattern: try r.fixed(8, "float64 value")))
            case tagFloat32:
                value = .number(Double(Float(bitPattern: UInt32(truncatingIfNeeded: try r.fixed(4, "float32 value")))))
            case tagFalse:
                value = .bool(false)
            case tagTrue:
                value = .bool(true)
            case tagString:
                value = .string(try string("string value", &r))
            case (tagDecimalBase + 1)...(tagDecimalBase + UInt8(maxDecimalDigits)):
                let m = unzigzag(try r.varint("decimal value"))
                value = .number(Double(m) / powersOfTen[Int(tag - tagDecimalBase)])
            default:
                throw .corrupt("unknown value tag 0x\(String(tag, radix: 16)) at byte \(r.pos - 1)")
            }
            readings.append(Reading(device: device, metric: metric, time: time, value: value))
        }
        var boot: String?
        if blob[1] == versionWithClock {
            let length = try r.varint("boot id length")
            guard length <= UInt64(r.end - r.pos) else { throw .corrupt("boot id truncated") }
            let bytes = UnsafeRawBufferPointer(rebasing: blob[r.pos..<(r.pos + Int(length))])
            guard let b = String(validating: bytes.bindMemory(to: UInt8.self), as: UTF8.self) else { throw .corrupt("boot id is not valid UTF-8") }
            boot = b
            r.pos += Int(length)
            let marks = try r.varint("marked count")
            // The encoder writes version 2 only with marks: anything else is not one of ours.
            guard marks >= 1, marks <= count else { throw .corrupt("\(marks) marked readings of \(count)") }
            var index: UInt64 = 0, bootMillis: Int64 = 0
            for m in 0..<Int(marks) {
                let step = try r.varint("marked index")
                let (next, overflow) = index.addingReportingOverflow(step)
                guard !overflow, next < count, m == 0 || step > 0 else { throw .corrupt("marked index out of order or range") }
                index = next
                bootMillis = bootMillis &+ unzigzag(try r.varint("boot time delta"))
                readings[Int(index)].unsyncedBootMillis = bootMillis
            }
        }
        guard r.pos == bodyEnd else { throw .corrupt("\(bodyEnd - r.pos) unexpected bytes after \(count) readings") }
        return (readings, boot)
    }

    /// Decodes a blob made by `encode`. See `decode(_: UnsafeRawBufferPointer)`.
    public static func decode(_ blob: [UInt8]) throws(SegmentError) -> [Reading] {
        let result = blob.withUnsafeBytes { raw -> Result<[Reading], SegmentError> in
            do throws(SegmentError) { return .success(try decode(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    // MARK: - Primitives

    @inline(__always)
    static func zigzag(_ v: Int64) -> UInt64 {
        UInt64(bitPattern: (v << 1) ^ (v >> 63))
    }

    @inline(__always)
    static func unzigzag(_ u: UInt64) -> Int64 {
        Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }

    @inline(__always)
    static func putVarint(_ value: UInt64, _ out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    static func varintLength(_ value: UInt64) -> Int {
        var v = value
        var n = 1
        while v >= 0x80 { v >>= 7; n += 1 }
        return n
    }

    /// CRC-32 (IEEE 802.3; reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF),
    /// the CRC of zlib, PNG and Ethernet: crc32("123456789") == 0xCBF43926.
    public static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        crcTable.withUnsafeBufferPointer { table in
            for b in bytes {
                crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8)
            }
        }
        return crc ^ 0xFFFF_FFFF
    }

    /// CRC-32 of `bytes`. See `crc32(_: UnsafeRawBufferPointer)`.
    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { crc32($0) }
    }
}

private let crcTable: [UInt32] = (0..<256).map { (i: UInt32) -> UInt32 in
    var c = i
    for _ in 0..<8 {
        c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1
    }
    return c
}

/// Bounds-checked cursor over a segment body.
private struct ByteReader {
    let blob: UnsafeRawBufferPointer
    var pos: Int
    let end: Int

    @inline(__always)
    mutating func byte(_ what: String) throws(SegmentError) -> UInt8 {
        guard pos < end else { throw .corrupt("truncated in \(what)") }
        let b = blob[pos]
        pos += 1
        return b
    }

    @inline(__always)
    mutating func varint(_ what: String) throws(SegmentError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard pos < end else { throw .corrupt("truncated in \(what)") }
            let b = blob[pos]
            pos += 1
            if shift == 63 && b > 1 { throw .corrupt("varint overflow in \(what) at byte \(pos - 1)") }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
            if shift > 63 { throw .corrupt("varint overflow in \(what) at byte \(pos - 1)") }
        }
    }

    /// `size` bytes little-endian.
    @inline(__always)
    mutating func fixed(_ size: Int, _ what: String) throws(SegmentError) -> UInt64 {
        guard end - pos >= size else { throw .corrupt("truncated in \(what)") }
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(blob[pos + i]) << UInt64(8 * i) }
        pos += size
        return v
    }
}
