// MARK: - Decimal number scanning (shared by the JSON parser and the payload decoder)

struct DecimalScanError: Error {
    var offset: Int
}

struct DecimalScan {
    var value: Double
    var end: Int
}

/// Powers of ten that are exactly representable as Double.
private let exactPowersOfTen: [Double] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
]

/// Scans a decimal number starting at `start`, stopping at the first byte that cannot continue it.
///
/// strict (JSON): `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
/// lenient (plain payloads): `[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?` (leading zeros allowed).
///
/// The value is correctly rounded: an exact fast path (Clinger) for up to 19 significant digits and
/// small exponents, else the standard library's correctly rounded conversion. Overflow gives ±infinity.
func scanDecimal(_ p: UnsafePointer<UInt8>, from start: Int, to end: Int, strict: Bool) throws(DecimalScanError) -> DecimalScan {
    var pos = start
    var negative = false
    if pos < end && (p[pos] == UInt8(ascii: "-") || (!strict && p[pos] == UInt8(ascii: "+"))) {
        negative = p[pos] == UInt8(ascii: "-")
        pos += 1
    }
    var mantissa: UInt64 = 0
    var significant = 0     // significant digits accumulated into mantissa
    var dropped = false     // more than 19 significant digits: use the slow path
    var exp10 = 0
    var intDigits = 0
    let zero = UInt8(ascii: "0")

    @inline(__always) func isDigit(_ c: UInt8) -> Bool { c &- zero < 10 }

    // Integer part.
    if strict {
        guard pos < end else { throw DecimalScanError(offset: pos) }
        if p[pos] == zero {
            pos += 1
            intDigits = 1
            if pos < end && isDigit(p[pos]) { throw DecimalScanError(offset: pos) }  // leading zero
        } else if isDigit(p[pos]) {
            // fall through to the digit loop
        } else {
            throw DecimalScanError(offset: pos)
        }
    }
    while pos < end && isDigit(p[pos]) {
        let d = UInt64(p[pos] - zero)
        if significant < 19 {
            mantissa = mantissa &* 10 &+ d
            if mantissa != 0 { significant += 1 }
        } else {
            dropped = true
            exp10 += 1
        }
        intDigits += 1
        pos += 1
    }
    // Fraction.
    var fracDigits = 0
    if pos < end && p[pos] == UInt8(ascii: ".") {
        pos += 1
        while pos < end && isDigit(p[pos]) {
            if significant < 19 {
                mantissa = mantissa &* 10 &+ UInt64(p[pos] - zero)
                if mantissa != 0 { significant += 1 }
                exp10 -= 1
            } else {
                dropped = true
            }
            fracDigits += 1
            pos += 1
        }
        if strict && fracDigits == 0 { throw DecimalScanError(offset: pos) }
    }
    if intDigits == 0 && fracDigits == 0 { throw DecimalScanError(offset: pos) }
    // Exponent.
    if pos < end && (p[pos] == UInt8(ascii: "e") || p[pos] == UInt8(ascii: "E")) {
        pos += 1
        var expNegative = false
        if pos < end && (p[pos] == UInt8(ascii: "+") || p[pos] == UInt8(ascii: "-")) {
            expNegative = p[pos] == UInt8(ascii: "-")
            pos += 1
        }
        var e = 0
        var expDigits = 0
        while pos < end && isDigit(p[pos]) {
            if e < 100_000 { e = e * 10 + Int(p[pos] - zero) }
            expDigits += 1
            pos += 1
        }
        if expDigits == 0 { throw DecimalScanError(offset: pos) }
        exp10 += expNegative ? -e : e
    }

    var value: Double
    if mantissa == 0 && !dropped {
        value = 0
    } else if !dropped && mantissa <= (1 << 53) && exp10 >= -22 && exp10 <= 22 {
        value = Double(mantissa)
        if exp10 < 0 { value /= exactPowersOfTen[-exp10] } else if exp10 > 0 { value *= exactPowersOfTen[exp10] }
    } else {
        // Slow path: correctly rounded conversion by the standard library.
        var s = start
        if s < end && (p[s] == UInt8(ascii: "-") || p[s] == UInt8(ascii: "+")) { s += 1 }
        let text = String(decoding: UnsafeBufferPointer(start: p + s, count: pos - s), as: UTF8.self)
        value = Double(text) ?? .infinity
    }
    return DecimalScan(value: negative ? -value : value, end: pos)
}
