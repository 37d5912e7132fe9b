import BrumeCore

// NMEA 0183 sentences → readings.
//
// Framing: a sentence starts at the last `$` or `!` of the frame (bytes before it — line noise
// at port open — are ignored; NMEA reserves both characters, so they never occur inside a
// sentence) and ends with an optional `*HH` checksum (XOR of the bytes between the start
// character and `*`, two hex digits in either case) and optional whitespace. A malformed or
// mismatching checksum is always `badChecksum`; a missing one is `badChecksum` when the decoder
// requires checksums. The checksum is verified before anything else is looked at.
//
// Address: a talker id of two uppercase letters (GP, GN, GL, GA, GB, BD, GQ, ...) and a
// three-letter sentence type. Decoded: GGA, RMC, GSA, GSV, VTG, GLL, ZDA. Proprietary (`$P...`,
// e.g. PUBX), encapsulated (`!AIVDM`) and other sentences (GST, GBS, TXT, ...) are `unsupported`.
//
// Readings (device = the decoder's device; empty fields give no reading; a field that is
// present but invalid makes the sentence `unparsable`, with no reading):
// - GGA: latitude, longitude (signed decimal degrees rounded to 7 decimals), altitude (m, field 9)
//   — only when fix quality > 0 —, fix_quality (0-8), satellites (in use), hdop.
// - RMC: speed (km/h = knots × 1.852, rounded to 6 decimals) and course (degrees true) when the
//   status is A; fix_valid (status A); latitude/longitude (status A) only while no GGA has been
//   seen. RMC sets the date.
// - GSA: fix_type (1-3), pdop, hdop, vdop.
// - GSV: satellites_in_view.<constellation> from the first sentence of a group (message 1):
//   gps (GP), glonass (GL), galileo (GA), beidou (GB, BD), qzss (GQ), gnss (GN), else the talker
//   in lowercase.
// - VTG: speed (km/h field) and course (true) only while no RMC has been seen (and mode ≠ N).
// - GLL: latitude/longitude only while no GGA and no RMC have been seen (status A).
// - ZDA: sets the date; no reading.
//
// Timestamps: the sentence's UTC time of day on the current date. The date comes from the
// latest RMC/ZDA and follows midnight: a time of day more than 12 h before (after) the previous
// one moves to the next (previous) day. Before any date is known — or when the last one was
// learnt more than 12 h of receipt time ago — the date is the one of `receivedAt` (UTC), and a
// result more than 12 h ahead of (behind) `receivedAt` moves to the previous (next) day.
// Sentences without a time (GSA, GSV, VTG) take the time of the latest timed sentence when it
// was received at most 2 s earlier (same epoch), else `receivedAt`.

struct NMEAState: Sendable {
    var requireChecksum = true
    var seenGGA = false
    var seenRMC = false

    /// The current date (days since the epoch), the time of day it applies to, and when it was learnt.
    var dateDays: Int64? = nil
    var dateTimeOfDay: Int64 = 0
    var dateReceivedAt: Int64 = 0

    /// The timestamp of the latest sentence with a time, and when it was received.
    var lastTime: Int64? = nil
    var lastTimeReceivedAt: Int64 = 0

    /// Offsets of the field separators (`,`) and of the end of the last field.
    private var fieldEnds: [Int] = []
    private var fieldStart = 0

    static let msPerDay: Int64 = 86_400_000
    static let halfDay: Int64 = 43_200_000
    static let epochWindow: Int64 = 2_000

    // MARK: decoding

    mutating func decode(_ frame: UnsafeRawBufferPointer, device: String, receivedAt: Int64,
                         into out: inout [Reading]) throws(FrameError) {
        guard let p = frame.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            throw FrameError(.empty, "empty frame")
        }
        let (s, e) = FrameBytes.trimWhitespace(p, 0, frame.count)
        if s == e { throw FrameError(.empty, "blank line \(FrameBytes.quote(frame))") }

        var start = e - 1
        while start >= s && p[start] != UInt8(ascii: "$") && p[start] != UInt8(ascii: "!") { start -= 1 }
        if start < s {
            throw FrameError(.unparsable, "not an NMEA sentence (no '$' or '!'): \(FrameBytes.quote(frame))")
        }

        // Checksum.
        var star = start + 1
        var sum: UInt8 = 0
        while star < e && p[star] != UInt8(ascii: "*") { sum ^= p[star]; star += 1 }
        let bodyEnd = star
        if star < e {
            guard e - star == 3, let hi = hexValue(p[star + 1]), let lo = hexValue(p[star + 2]) else {
                throw FrameError(.badChecksum, "malformed checksum (expected '*' and two hex digits at the end): \(FrameBytes.quote(frame))")
            }
            let given = hi << 4 | lo
            if given != sum {
                throw FrameError(.badChecksum, "checksum mismatch: computed \(hex2(sum)), sentence says \(hex2(given)): \(FrameBytes.quote(frame))")
            }
        } else if requireChecksum {
            throw FrameError(.badChecksum, "missing checksum: \(FrameBytes.quote(frame))")
        }
        for i in (start + 1)..<bodyEnd where p[i] < 0x20 || p[i] > 0x7E {
            throw FrameError(.unparsable, "control or non-ASCII byte in sentence: \(FrameBytes.quote(frame))")
        }
        if p[start] == UInt8(ascii: "!") {
            throw FrameError(.unsupported, "encapsulated NMEA sentence: \(FrameBytes.quote(frame))")
        }

        // Fields.
        fieldStart = start + 1
        fieldEnds.removeAll(keepingCapacity: true)
        for i in fieldStart..<bodyEnd where p[i] == UInt8(ascii: ",") { fieldEnds.append(i) }
        fieldEnds.append(bodyEnd)

        let (as_, ae) = field(0)
        if ae > as_ && p[as_] == UInt8(ascii: "P") {
            throw FrameError(.unsupported, "proprietary NMEA sentence \(FrameBytes.quote(FrameBytes.slice(p, as_, ae))): \(FrameBytes.quote(frame))")
        }
        guard ae - as_ == 5, isUpper(p[as_]), isUpper(p[as_ + 1]),
              isUpperOrDigit(p[as_ + 2]), isUpperOrDigit(p[as_ + 3]), isUpperOrDigit(p[as_ + 4]) else {
            throw FrameError(.unparsable, "bad NMEA address field \(FrameBytes.quote(FrameBytes.slice(p, as_, ae))): \(FrameBytes.quote(frame))")
        }
        let t0 = p[as_], t1 = p[as_ + 1]
        let type = (UInt32(p[as_ + 2]) << 16) | (UInt32(p[as_ + 3]) << 8) | UInt32(p[as_ + 4])

        let ctx = Context(p: p, frame: frame, device: device, receivedAt: receivedAt)
        switch type {
        case code("GGA"): try decodeGGA(ctx, into: &out)
        case code("RMC"): try decodeRMC(ctx, into: &out)
        case code("GSA"): try decodeGSA(ctx, into: &out)
        case code("GSV"): try decodeGSV(ctx, talker: (t0, t1), into: &out)
        case code("VTG"): try decodeVTG(ctx, into: &out)
        case code("GLL"): try decodeGLL(ctx, into: &out)
        case code("ZDA"): try decodeZDA(ctx)
        default:
            throw FrameError(.unsupported, "unsupported NMEA sentence \(FrameBytes.quote(FrameBytes.slice(p, as_, ae))): \(FrameBytes.quote(frame))")
        }
    }

    struct Context {
        let p: UnsafePointer<UInt8>
        let frame: UnsafeRawBufferPointer
        let device: String
        let receivedAt: Int64
    }

    // MARK: sentences

    private mutating func decodeGGA(_ c: Context, into out: inout [Reading]) throws(FrameError) {
        let tod = try timeOfDay(c, 1)
        let lat = try coordinate(c, 2, latitude: true)
        let lon = try coordinate(c, 4, latitude: false)
        let fix = try integer(c, 6, "fix quality", 0...8)
        let sats = try integer(c, 7, "satellites", 0...999)
        let hdop = try number(c, 8, "hdop")
        let alt = try number(c, 9, "altitude")
        seenGGA = true
        let t = timestamp(tod, c.receivedAt)
        if let fix, fix > 0 {
            if let lat, let lon {
                out.append(Reading(device: c.device, metric: "latitude", time: t, value: .number(lat)))
                out.append(Reading(device: c.device, metric: "longitude", time: t, value: .number(lon)))
            }
            if let alt { out.append(Reading(device: c.device, metric: "altitude", time: t, value: .number(alt))) }
        }
        if let fix { out.append(Reading(device: c.device, metric: "fix_quality", time: t, value: .number(Double(fix)))) }
        if let sats { out.append(Reading(device: c.device, metric: "satellites", time: t, value: .number(Double(sats)))) }
        if let hdop { out.append(Reading(device: c.device, metric: "hdop", time: t, value: .number(hdop))) }
    }

    private mutating func decodeRMC(_ c: Context, into out: inout [Reading]) throws(FrameError) {
        let tod = try timeOfDay(c, 1)
        let status = try statusFlag(c, 2)
        let lat = try coordinate(c, 3, latitude: true)
        let lon = try coordinate(c, 5, latitude: false)
        let knots = try number(c, 7, "speed")
        let course = try number(c, 8, "course")
        let days = try rmcDate(c, 9)
        let t: Int64
        if let days, let tod {
            setDate(days, tod, c.receivedAt)
            t = days * Self.msPerDay + tod
            lastTime = t
            lastTimeReceivedAt = c.receivedAt
        } else {
            if let days { setDate(days, Self.halfDay, c.receivedAt) }
            t = timestamp(tod, c.receivedAt)
        }
        let firstRMCBeforeGGA = !seenGGA
        seenRMC = true
        if status == true {
            if firstRMCBeforeGGA, let lat, let lon {
                out.append(Reading(device: c.device, metric: "latitude", time: t, value: .number(lat)))
                out.append(Reading(device: c.device, metric: "longitude", time: t, value: .number(lon)))
            }
            if let knots {
                let kmh = ((knots * 1.852) * 1e6).rounded() / 1e6
                // A field of 300+ digits is finite as knots but not as km/h × 1e6.
                if kmh.isFinite { out.append(Reading(device: c.device, metric: "speed", time: t, value: .number(kmh))) }
            }
            if let course { out.append(Reading(device: c.device, metric: "course", time: t, value: .number(course))) }
        }
        if let status { out.append(Reading(device: c.device, metric: "fix_valid", time: t, value: .bool(status))) }
    }

    private mutating func decodeGSA(_ c: Context, into out: inout [Reading]) throws(FrameError) {
        let fixType = try integer(c, 2, "fix type", 1...3)
        let pdop = try number(c, 15, "pdop")
        let hdop = try number(c, 16, "hdop")
        let vdop = try number(c, 17, "vdop")
        let t = untimed(c.receivedAt)
        if let fixType { out.append(Reading(device: c.device, metric: "fix_type", time: t, value: .number(Double(fixType)))) }
        if let pdop { out.append(Reading(device: c.device, metric: "pdop", time: t, value: .number(pdop))) }
        if let hdop { out.append(Reading(device: c.device, metric: "hdop", time: t, value: .number(hdop))) }
        if let vdop { out.append(Reading(device: c.device, metric: "vdop", time: t, value: .number(vdop))) }
    }

    private mutating func decodeGSV(_ c: Context, talker: (UInt8, UInt8), into out: inout [Reading]) throws(FrameError) {
        _ = try integer(c, 1, "number of messages", 1...99)
        let message = try integer(c, 2, "message number", 1...99)
        let inView = try integer(c, 3, "satellites in view", 0...999)
        guard message == 1, let inView else { return }
        let t = untimed(c.receivedAt)
        out.append(Reading(device: c.device, metric: Self.satellitesInViewMetric(talker), time: t,
                           value: .number(Double(inView))))
    }

    private mutating func decodeVTG(_ c: Context, into out: inout [Reading]) throws(FrameError) {
        let course = try number(c, 1, "course")
        let kmh = try number(c, 7, "speed")
        let mode = fieldByte(c, 9)
        guard !seenRMC, mode != UInt8(ascii: "N") else { return }
        let t = untimed(c.receivedAt)
        if let kmh { out.append(Reading(device: c.device, metric: "speed", time: t, value: .number(kmh))) }
        if let course { out.append(Reading(device: c.device, metric: "course", time: t, value: .number(course))) }
    }

    private mutating func decodeGLL(_ c: Context, into out: inout [Reading]) throws(FrameError) {
        let lat = try coordinate(c, 1, latitude: true)
        let lon = try coordinate(c, 3, latitude: false)
        let tod = try timeOfDay(c, 5)
        let status = try statusFlag(c, 6)
        let mode = fieldByte(c, 7)
        let t = timestamp(tod, c.receivedAt)
        guard !seenGGA, !seenRMC, status != false, mode != UInt8(ascii: "N"), let lat, let lon else { return }
        out.append(Reading(device: c.device, metric: "latitude", time: t, value: .number(lat)))
        out.append(Reading(device: c.device, metric: "longitude", time: t, value: .number(lon)))
    }

    private mutating func decodeZDA(_ c: Context) throws(FrameError) {
        let tod = try timeOfDay(c, 1)
        let day = try integer(c, 2, "day", 1...31)
        let month = try integer(c, 3, "month", 1...12)
        let year = try integer(c, 4, "year", 1980...9999)
        guard let day, let month, let year else { return }
        guard day <= daysInMonth(year, month) else {
            throw FrameError(.unparsable, "ZDA date \(year)-\(month)-\(day) does not exist: \(FrameBytes.quote(c.frame))")
        }
        let days = Int64(daysFromCivil(year, month, day))
        setDate(days, tod ?? Self.halfDay, c.receivedAt)
        if let tod {
            lastTime = days * Self.msPerDay + tod
            lastTimeReceivedAt = c.receivedAt
        }
    }

    static func satellitesInViewMetric(_ talker: (UInt8, UInt8)) -> String {
        switch talker {
        case (UInt8(ascii: "G"), UInt8(ascii: "P")): return "satellites_in_view.gps"
        case (UInt8(ascii: "G"), UInt8(ascii: "L")): return "satellites_in_view.glonass"
        case (UInt8(ascii: "G"), UInt8(ascii: "A")): return "satellites_in_view.galileo"
        case (UInt8(ascii: "G"), UInt8(ascii: "B")), (UInt8(ascii: "B"), UInt8(ascii: "D")): return "satellites_in_view.beidou"
        case (UInt8(ascii: "G"), UInt8(ascii: "Q")): return "satellites_in_view.qzss"
        case (UInt8(ascii: "G"), UInt8(ascii: "N")): return "satellites_in_view.gnss"
        default:
            return "satellites_in_view." + String(decoding: [talker.0 | 0x20, talker.1 | 0x20], as: UTF8.self)
        }
    }

    // MARK: time

    private mutating func setDate(_ days: Int64, _ tod: Int64, _ receivedAt: Int64) {
        dateDays = days
        dateTimeOfDay = tod
        dateReceivedAt = receivedAt
    }

    /// The timestamp of a sentence whose time of day is `tod` (nil: none in the sentence).
    private mutating func timestamp(_ tod: Int64?, _ receivedAt: Int64) -> Int64 {
        guard let tod else { return untimed(receivedAt) }
        var t: Int64
        if var days = dateDays, receivedAt - dateReceivedAt <= Self.halfDay {
            if tod < dateTimeOfDay - Self.halfDay { days += 1 } else if tod > dateTimeOfDay + Self.halfDay { days -= 1 }
            setDate(days, tod, receivedAt)          // follow the date across midnight
            t = days * Self.msPerDay + tod
        } else {
            let day = floorDiv(receivedAt, Self.msPerDay)
            t = day * Self.msPerDay + tod
            if t - receivedAt > Self.halfDay { t -= Self.msPerDay } else if receivedAt - t > Self.halfDay { t += Self.msPerDay }
        }
        lastTime = t
        lastTimeReceivedAt = receivedAt
        return t
    }

    /// The timestamp of a sentence without a time field.
    private func untimed(_ receivedAt: Int64) -> Int64 {
        if let lastTime, receivedAt >= lastTimeReceivedAt, receivedAt - lastTimeReceivedAt <= Self.epochWindow {
            return lastTime
        }
        return receivedAt
    }

    // MARK: fields

    @inline(__always)
    private func field(_ i: Int) -> (Int, Int) {
        guard i < fieldEnds.count else { return (0, 0) }
        return (i == 0 ? fieldStart : fieldEnds[i - 1] + 1, fieldEnds[i])
    }

    private func fieldByte(_ c: Context, _ i: Int) -> UInt8? {
        let (s, e) = field(i)
        return e - s == 1 ? c.p[s] : nil
    }

    private func invalid(_ c: Context, _ i: Int, _ what: String) -> FrameError {
        let (s, e) = field(i)
        return FrameError(.unparsable, "NMEA field \(i) (\(what)) \(FrameBytes.quote(FrameBytes.slice(c.p, s, e))) is not valid: \(FrameBytes.quote(c.frame))")
    }

    /// `hhmmss[.sss…]` → milliseconds of the day; nil if empty.
    private func timeOfDay(_ c: Context, _ i: Int) throws(FrameError) -> Int64? {
        let (s, e) = field(i)
        if s == e { return nil }
        let p = c.p
        guard e - s >= 6, let h = digits2(p, s), let m = digits2(p, s + 2), let sec = digits2(p, s + 4),
              h < 24, m < 60, sec < 61 else { throw invalid(c, i, "time") }
        var ms = 0
        if e - s > 6 {
            guard p[s + 6] == UInt8(ascii: "."), e - s > 7 else { throw invalid(c, i, "time") }
            var scale = 100
            for k in (s + 7)..<e {
                let d = p[k] &- 0x30
                guard d < 10 else { throw invalid(c, i, "time") }
                ms += Int(d) * scale
                scale /= 10
            }
        }
        return Int64(((h * 60 + m) * 60 + sec) * 1000 + ms)
    }

    /// RMC `ddmmyy` → days since the epoch; nil if empty. Years 80-99 are 1980-1999.
    private func rmcDate(_ c: Context, _ i: Int) throws(FrameError) -> Int64? {
        let (s, e) = field(i)
        if s == e { return nil }
        guard e - s == 6, let d = digits2(c.p, s), let m = digits2(c.p, s + 2), let y2 = digits2(c.p, s + 4),
              m >= 1, m <= 12, d >= 1 else { throw invalid(c, i, "date") }
        let year = y2 >= 80 ? 1900 + y2 : 2000 + y2
        guard d <= daysInMonth(year, m) else { throw invalid(c, i, "date") }
        return Int64(daysFromCivil(year, m, d))
    }

    /// `A` → true, `V` → false, empty → nil.
    private func statusFlag(_ c: Context, _ i: Int) throws(FrameError) -> Bool? {
        let (s, e) = field(i)
        if s == e { return nil }
        guard e - s == 1 else { throw invalid(c, i, "status") }
        switch c.p[s] {
        case UInt8(ascii: "A"): return true
        case UInt8(ascii: "V"): return false
        default: throw invalid(c, i, "status")
        }
    }

    private func integer(_ c: Context, _ i: Int, _ what: String, _ range: ClosedRange<Int>) throws(FrameError) -> Int? {
        let (s, e) = field(i)
        if s == e { return nil }
        guard e - s <= 6 else { throw invalid(c, i, what) }
        var v = 0
        for k in s..<e {
            let d = c.p[k] &- 0x30
            guard d < 10 else { throw invalid(c, i, what) }
            v = v * 10 + Int(d)
        }
        guard range.contains(v) else { throw invalid(c, i, what) }
        return v
    }

    /// `[+-]?digits[.digits]` (NMEA numbers have no exponent); nil if empty.
    private func number(_ c: Context, _ i: Int, _ what: String) throws(FrameError) -> Double? {
        let (s, e) = field(i)
        if s == e { return nil }
        var k = s
        if c.p[k] == UInt8(ascii: "-") || c.p[k] == UInt8(ascii: "+") { k += 1 }
        var digits = 0, dots = 0
        while k < e {
            let b = c.p[k]
            if b &- 0x30 < 10 { digits += 1 } else if b == UInt8(ascii: ".") && dots == 0 { dots = 1 } else { throw invalid(c, i, what) }
            k += 1
        }
        guard digits > 0 else { throw invalid(c, i, what) }
        let v = FrameBytes.parseDecimal(c.p, s, e)
        guard v.isFinite else { throw invalid(c, i, what) }
        return v
    }

    /// `ddmm.mmmm` / `dddmm.mmmm` and the hemisphere in the next field → signed decimal degrees
    /// rounded to 7 decimals; nil if the value is empty.
    private func coordinate(_ c: Context, _ i: Int, latitude: Bool) throws(FrameError) -> Double? {
        let what = latitude ? "latitude" : "longitude"
        let (s, e) = field(i)
        let (hs, he) = field(i + 1)
        if s == e { return nil }
        let p = c.p
        var k = s
        var whole = 0
        while k < e, case let d = p[k] &- 0x30, d < 10 {
            whole = whole * 10 + Int(d)
            k += 1
            if k - s > 5 { throw invalid(c, i, what) }
        }
        guard k - s >= 3 else { throw invalid(c, i, what) }
        var fraction: UInt64 = 0
        var scale: UInt64 = 1
        if k < e {
            guard p[k] == UInt8(ascii: ".") else { throw invalid(c, i, what) }
            k += 1
            while k < e {
                let d = p[k] &- 0x30
                guard d < 10 else { throw invalid(c, i, what) }
                if scale < 1_000_000_000_000 {      // 12 decimals of a minute are far below 1e-7°
                    fraction = fraction * 10 + UInt64(d)
                    scale *= 10
                }
                k += 1
            }
        }
        let degrees = whole / 100
        let minutes = whole % 100
        guard minutes < 60, degrees <= (latitude ? 90 : 180) else { throw invalid(c, i, what) }
        // minutes as an exact integer count of 1/scale minutes; one rounding in the division.
        let totalMinutes = UInt64(minutes) * scale + fraction
        var value = Double(degrees) + Double(totalMinutes) / (60 * Double(scale))
        guard value <= (latitude ? 90 : 180) else { throw invalid(c, i, what) }
        value = (value * 1e7).rounded() / 1e7
        guard he - hs == 1 else { throw invalid(c, i + 1, latitude ? "N/S" : "E/W") }
        switch p[hs] {
        case UInt8(ascii: "N") where latitude, UInt8(ascii: "E") where !latitude: return value
        case UInt8(ascii: "S") where latitude, UInt8(ascii: "W") where !latitude: return -value
        default: throw invalid(c, i + 1, latitude ? "N/S" : "E/W")
        }
    }
}

// MARK: - helpers

private func code(_ s: StaticString) -> UInt32 {
    let u = s.utf8Start
    return (UInt32(u[0]) << 16) | (UInt32(u[1]) << 8) | UInt32(u[2])
}

@inline(__always) private func isUpper(_ c: UInt8) -> Bool { c &- UInt8(ascii: "A") < 26 }
@inline(__always) private func isUpperOrDigit(_ c: UInt8) -> Bool { isUpper(c) || c &- 0x30 < 10 }

@inline(__always) private func hexValue(_ c: UInt8) -> UInt8? {
    if c &- 0x30 < 10 { return c - 0x30 }
    let l = c | 0x20
    if l &- UInt8(ascii: "a") < 6 { return l - UInt8(ascii: "a") + 10 }
    return nil
}

private func hex2(_ v: UInt8) -> String {
    let digits: StaticString = "0123456789ABCDEF"
    return String(decoding: [digits.utf8Start[Int(v >> 4)], digits.utf8Start[Int(v & 15)]], as: UTF8.self)
}

@inline(__always) private func digits2(_ p: UnsafePointer<UInt8>, _ at: Int) -> Int? {
    let a = p[at] &- 0x30, b = p[at + 1] &- 0x30
    guard a < 10, b < 10 else { return nil }
    return Int(a) * 10 + Int(b)
}

private func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

private func daysInMonth(_ y: Int, _ m: Int) -> Int {
    switch m {
    case 2: return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28
    case 4, 6, 9, 11: return 30
    default: return 31
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian civil date (H. Hinnant's algorithm).
private func daysFromCivil(_ year: Int, _ month: Int, _ day: Int) -> Int {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let mp = (month + 9) % 12
    let doy = (153 * mp + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146_097 + doe - 719_468
}
