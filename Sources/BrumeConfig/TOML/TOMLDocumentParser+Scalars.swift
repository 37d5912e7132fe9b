// A TOML 1.0 parser that keeps the source position of every key, value and table header.
//
// Pure Swift, standard library only. Parsing is a single forward pass over the Unicode
// scalars of the document; recursion only happens for nested arrays / inline tables and is
// bounded by `TOMLParser.maximumDepth`, so hostile input cannot exhaust the stack.

extension TOMLDocumentParser {
    // MARK: Strings

    mutating func parseBasicString() throws(TOMLSyntaxError) -> String {
        let start = i
        i += 1
        var out = String.UnicodeScalarView()
        while true {
            guard i < s.count else { throw error("unterminated string", at: start) }
            let c = s[i]
            switch c {
            case "\"":
                i += 1
                return String(out)
            case "\\":
                try parseEscape(into: &out, stringStart: start)
            case "\n", "\r":
                throw error("unterminated string", at: start)
            default:
                if TOMLLex.isControl(c) && c != "\t" {
                    throw error("control character U+\(TOMLLex.hex4(c.value)) must be escaped in strings", at: i)
                }
                out.append(c)
                i += 1
            }
        }
    }

    mutating func parseMultilineBasicString() throws(TOMLSyntaxError) -> String {
        let start = i
        i += 3
        try trimLeadingNewline()
        var out = String.UnicodeScalarView()
        while true {
            guard i < s.count else { throw error("unterminated multi-line string", at: start) }
            let c = s[i]
            switch c {
            case "\"":
                if try closesMultiline(quote: "\"", into: &out) { return String(out) }
            case "\\":
                var j = i + 1
                while j < s.count, s[j] == " " || s[j] == "\t" { j += 1 }
                if j < s.count, s[j] == "\n" || s[j] == "\r" {
                    // Line-ending backslash: drop all whitespace and newlines up to the next content.
                    i = j
                    while i < s.count {
                        let w = s[i]
                        if w == " " || w == "\t" {
                            i += 1
                        } else if w == "\n" || w == "\r" {
                            try consumeNewline()
                        } else {
                            break
                        }
                    }
                } else {
                    try parseEscape(into: &out, stringStart: start)
                }
            case "\n", "\r":
                try consumeNewline()
                out.append("\n")
            default:
                if TOMLLex.isControl(c) && c != "\t" {
                    throw error("control character U+\(TOMLLex.hex4(c.value)) must be escaped in strings", at: i)
                }
                out.append(c)
                i += 1
            }
        }
    }

    mutating func parseLiteralString() throws(TOMLSyntaxError) -> String {
        let start = i
        i += 1
        var out = String.UnicodeScalarView()
        while true {
            guard i < s.count else { throw error("unterminated string", at: start) }
            let c = s[i]
            switch c {
            case "'":
                i += 1
                return String(out)
            case "\n", "\r":
                throw error("unterminated string", at: start)
            default:
                if TOMLLex.isControl(c) && c != "\t" {
                    throw error("control character U+\(TOMLLex.hex4(c.value)) is not allowed in literal strings", at: i)
                }
                out.append(c)
                i += 1
            }
        }
    }

    mutating func parseMultilineLiteralString() throws(TOMLSyntaxError) -> String {
        let start = i
        i += 3
        try trimLeadingNewline()
        var out = String.UnicodeScalarView()
        while true {
            guard i < s.count else { throw error("unterminated multi-line string", at: start) }
            let c = s[i]
            switch c {
            case "'":
                if try closesMultiline(quote: "'", into: &out) { return String(out) }
            case "\n", "\r":
                try consumeNewline()
                out.append("\n")
            default:
                if TOMLLex.isControl(c) && c != "\t" {
                    throw error("control character U+\(TOMLLex.hex4(c.value)) is not allowed in literal strings", at: i)
                }
                out.append(c)
                i += 1
            }
        }
    }

    /// A newline immediately following the opening delimiter is trimmed.
    mutating func trimLeadingNewline() throws(TOMLSyntaxError) {
        if peek == "\n" || peek == "\r" { try consumeNewline() }
    }

    /// At a quote inside a multi-line string: consumes the run of quotes. Returns true when the
    /// run closes the string (up to two quotes directly before the closing delimiter are content).
    mutating func closesMultiline(quote: Unicode.Scalar, into out: inout String.UnicodeScalarView) throws(TOMLSyntaxError) -> Bool {
        var n = 0
        while i + n < s.count, s[i + n] == quote { n += 1 }
        if n < 3 {
            for _ in 0..<n { out.append(quote) }
            i += n
            return false
        }
        if n > 5 {
            throw error("too many quotes at the end of a multi-line string", at: i + 5)
        }
        for _ in 0..<(n - 3) { out.append(quote) }
        i += n
        return true
    }

    /// At '\\'.
    mutating func parseEscape(into out: inout String.UnicodeScalarView, stringStart: Int) throws(TOMLSyntaxError) {
        let start = i
        guard let c = at(i + 1) else { throw error("unterminated string", at: stringStart) }
        i += 2
        switch c {
        case "b": out.append("\u{08}")
        case "t": out.append("\t")
        case "n": out.append("\n")
        case "f": out.append("\u{0C}")
        case "r": out.append("\r")
        case "\"": out.append("\"")
        case "\\": out.append("\\")
        case "u", "U":
            let count = c == "u" ? 4 : 8
            var value: UInt32 = 0
            for k in 0..<count {
                guard let h = at(start + 2 + k), let d = TOMLLex.hexValue(h) else {
                    throw error("invalid unicode escape '\\\(c)': expected \(count) hexadecimal digits", at: start)
                }
                value = value << 4 | d
            }
            i = start + 2 + count
            guard let scalar = Unicode.Scalar(value) else {
                throw error("invalid unicode escape '\\\(c)\(TOMLLex.makeString(s[(start + 2)..<i]))': not a Unicode scalar value", at: start)
            }
            out.append(scalar)
        case "\n", "\r", " ", "\t":
            throw error("invalid escape: a backslash followed by whitespace is only allowed at the end of a line in multi-line strings", at: start)
        default:
            throw error("invalid escape '\\\(TOMLLex.isControl(c) ? "U+" + TOMLLex.hex4(c.value) : String(Character(c)))'", at: start)
        }
    }

    // MARK: Numbers, booleans, dates

    mutating func parseBareValue() throws(TOMLSyntaxError) -> TOMLNode {
        let start = i
        while i < s.count, TOMLLex.isTokenChar(s[i]) { i += 1 }
        var token = Array(s[start..<i])
        // A date followed by a space and a time: "1979-05-27 07:32:00".
        if token.count == 10, TOMLLex.isDateShaped(token), at(i) == " ", let d = at(i + 1), TOMLLex.isDigit(d) {
            let timeStart = i + 1
            var j = timeStart
            while j < s.count, TOMLLex.isTokenChar(s[j]) { j += 1 }
            let time = Array(s[timeStart..<j])
            if time.count >= 3, TOMLLex.isDigit(time[0]), TOMLLex.isDigit(time[1]), time[2] == ":" {
                token.append(" ")
                token.append(contentsOf: time)
                i = j
            }
        }
        let pos = position(start)
        let text = TOMLLex.makeString(token[...])
        switch text {
        case "true": return TOMLNode(value: .bool(true), position: pos)
        case "false": return TOMLNode(value: .bool(false), position: pos)
        case "inf", "+inf": return TOMLNode(value: .float(.infinity), position: pos)
        case "-inf": return TOMLNode(value: .float(-.infinity), position: pos)
        case "nan", "+nan": return TOMLNode(value: .float(.nan), position: pos)
        case "-nan": return TOMLNode(value: .float(-Double.nan), position: pos)
        default: break
        }
        if TOMLLex.isDateShaped(token) || (token.count >= 3 && TOMLLex.isDigit(token[0]) && TOMLLex.isDigit(token[1]) && token[2] == ":") {
            guard let kind = TOMLLex.dateTimeKind(token) else {
                throw error("invalid date-time '\(text)'", at: start)
            }
            return TOMLNode(value: .datetime(TOMLDateTime(raw: text, kind: kind)), position: pos)
        }
        let value = try parseNumber(token, text: text, at: start)
        return TOMLNode(value: value, position: pos)
    }

    func parseNumber(_ t: [Unicode.Scalar], text: String, at start: Int) throws(TOMLSyntaxError) -> TOMLValue {
        var k = 0
        var negative = false
        if t[0] == "+" || t[0] == "-" {
            negative = t[0] == "-"
            k = 1
        }
        guard k < t.count, TOMLLex.isDigit(t[k]) else {
            if TOMLLex.isLetter(t[0]) {
                throw error("invalid value '\(text)' (strings must be quoted)", at: start)
            }
            throw error("invalid number '\(text)'", at: start)
        }
        // Hexadecimal, octal, binary.
        if t.count >= k + 2, t[k] == "0", t[k + 1] == "x" || t[k + 1] == "o" || t[k + 1] == "b" {
            if k == 1 {
                throw error("a sign is not allowed on hexadecimal, octal or binary integers", at: start)
            }
            let radix: UInt64 = t[1] == "x" ? 16 : t[1] == "o" ? 8 : 2
            let body = t[2...]
            guard let digits = TOMLLex.cleanDigits(body, radix: radix) else {
                throw error("invalid integer '\(text)'", at: start)
            }
            var value: UInt64 = 0
            for d in digits {
                let (m, o1) = value.multipliedReportingOverflow(by: radix)
                let (a, o2) = m.addingReportingOverflow(UInt64(TOMLLex.hexValue(d)!))
                guard !o1, !o2, a <= UInt64(Int64.max) else {
                    throw error("integer \(text) is out of range", at: start)
                }
                value = a
            }
            return .integer(Int64(value))
        }
        let body = t[k...]
        let isFloat = body.contains { $0 == "." || $0 == "e" || $0 == "E" }
        if !isFloat {
            guard let digits = TOMLLex.cleanDigits(body, radix: 10) else {
                throw error("invalid number '\(text)'", at: start)
            }
            if digits.count > 1 && digits[0] == "0" {
                throw error("leading zeros are not allowed in '\(text)'", at: start)
            }
            var value: UInt64 = 0
            let limit = negative ? UInt64(Int64.max) + 1 : UInt64(Int64.max)
            for d in digits {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(UInt64(d.value - 48))
                guard !o1, !o2, a <= limit else {
                    throw error("integer \(text) is out of range", at: start)
                }
                value = a
            }
            if negative {
                return .integer(value == UInt64(Int64.max) + 1 ? Int64.min : -Int64(value))
            }
            return .integer(Int64(value))
        }
        // Float: int-part [ '.' frac ] [ e|E [+-] exp ]
        let expIndex = body.firstIndex { $0 == "e" || $0 == "E" }
        let mantissa = body[body.startIndex..<(expIndex ?? body.endIndex)]
        let dotIndex = mantissa.firstIndex(of: ".")
        let intPart = mantissa[mantissa.startIndex..<(dotIndex ?? mantissa.endIndex)]
        guard let intDigits = TOMLLex.cleanDigits(intPart, radix: 10) else {
            throw error("invalid float '\(text)'", at: start)
        }
        if intDigits.count > 1 && intDigits[0] == "0" {
            throw error("leading zeros are not allowed in '\(text)'", at: start)
        }
        var cleaned = String.UnicodeScalarView()
        if negative { cleaned.append("-") }
        cleaned.append(contentsOf: intDigits)
        if let dot = dotIndex {
            guard let frac = TOMLLex.cleanDigits(mantissa[(dot + 1)...], radix: 10) else {
                throw error("invalid float '\(text)'", at: start)
            }
            cleaned.append(".")
            cleaned.append(contentsOf: frac)
        }
        if let e = expIndex {
            var expBody = body[(e + 1)...]
            cleaned.append("e")
            if let first = expBody.first, first == "+" || first == "-" {
                cleaned.append(first)
                expBody = expBody.dropFirst()
            }
            guard let exp = TOMLLex.cleanDigits(expBody, radix: 10) else {
                throw error("invalid float '\(text)'", at: start)
            }
            cleaned.append(contentsOf: exp)
        }
        guard let value = Double(String(cleaned)) else {
            throw error("invalid float '\(text)'", at: start)
        }
        return .float(value)
    }
}

// MARK: - Character helpers

/// Lexical helpers, namespaced to avoid clashing with other files of the host module.
enum TOMLLex {
    static func isControl(_ c: Unicode.Scalar) -> Bool {
        c.value < 0x20 || c.value == 0x7F
    }

    static func isDigit(_ c: Unicode.Scalar) -> Bool {
        c.value >= 48 && c.value <= 57
    }

    static func isLetter(_ c: Unicode.Scalar) -> Bool {
        (c.value >= 65 && c.value <= 90) || (c.value >= 97 && c.value <= 122)
    }

    static func isBareKeyChar(_ c: Unicode.Scalar) -> Bool {
        isDigit(c) || isLetter(c) || c == "_" || c == "-"
    }

    /// Characters that may appear in numbers, booleans, inf/nan and date-times.
    static func isTokenChar(_ c: Unicode.Scalar) -> Bool {
        isDigit(c) || isLetter(c) || c == "_" || c == "-" || c == "+" || c == "." || c == ":"
    }

    static func hexValue(_ c: Unicode.Scalar) -> UInt32? {
        switch c.value {
        case 48...57: c.value - 48
        case 65...70: c.value - 55
        case 97...102: c.value - 87
        default: nil
        }
    }

    static func hex4(_ v: UInt32) -> String {
        let h = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - h.count)) + h
    }

    static func makeString(_ slice: ArraySlice<Unicode.Scalar>) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: slice)
        return String(view)
    }

    /// Digits separated by single underscores (each underscore between two digits). Returns the digits.
    static func cleanDigits(_ body: ArraySlice<Unicode.Scalar>, radix: UInt64) -> [Unicode.Scalar]? {
        var digits: [Unicode.Scalar] = []
        var previousWasDigit = false
        for c in body {
            if c == "_" {
                guard previousWasDigit else { return nil }
                previousWasDigit = false
                continue
            }
            guard let v = hexValue(c), UInt64(v) < radix else { return nil }
            digits.append(c)
            previousWasDigit = true
        }
        return previousWasDigit ? digits : nil
    }

    static func isBareKey(_ key: String) -> Bool {
        !key.isEmpty && key.unicodeScalars.allSatisfy(isBareKeyChar)
    }

    /// `a.b."c d"` for messages.
    static func dottedName<C: Collection>(_ names: C) -> String where C.Element == String {
        names.map { name in
            if isBareKey(name) { return name }
            var quoted = "\""
            for c in name.unicodeScalars {
                switch c {
                case "\"": quoted += "\\\""
                case "\\": quoted += "\\\\"
                default:
                    if isControl(c) { quoted += "\\u" + hex4(c.value) } else { quoted.unicodeScalars.append(c) }
                }
            }
            return quoted + "\""
        }.joined(separator: ".")
    }

    static func isDateShaped(_ t: [Unicode.Scalar]) -> Bool {
        t.count >= 5 && isDigit(t[0]) && isDigit(t[1]) && isDigit(t[2]) && isDigit(t[3]) && t[4] == "-"
    }

    /// Validates TOML date/time shapes (RFC 3339 with TOML's relaxations). Returns nil when invalid.
    static func dateTimeKind(_ t: [Unicode.Scalar]) -> TOMLDateTime.Kind? {
        func number(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= t.count else { return nil }
            var v = 0
            for k in from..<(from + count) {
                guard isDigit(t[k]) else { return nil }
                v = v * 10 + Int(t[k].value - 48)
            }
            return v
        }
        var k = 0
        var hasDate = false
        if isDateShaped(t) {
            guard let year = number(0, 4), t.count >= 10, t[7] == "-",
                  let month = number(5, 2), let day = number(8, 2),
                  (1...12).contains(month), day >= 1 else { return nil }
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
            let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
            guard day <= days else { return nil }
            hasDate = true
            k = 10
            if k == t.count { return .localDate }
            guard t[k] == "T" || t[k] == "t" || t[k] == " " else { return nil }
            k += 1
        }
        guard let hour = number(k, 2), k + 2 < t.count, t[k + 2] == ":",
              let minute = number(k + 3, 2), k + 5 < t.count, t[k + 5] == ":",
              let second = number(k + 6, 2),
              hour <= 23, minute <= 59, second <= 59 else { return nil }
        k += 8
        if k < t.count, t[k] == "." {
            k += 1
            let fracStart = k
            while k < t.count, isDigit(t[k]) { k += 1 }
            guard k > fracStart else { return nil }
        }
        if k == t.count { return hasDate ? .localDateTime : .localTime }
        guard hasDate else { return nil }
        if t[k] == "Z" || t[k] == "z" {
            k += 1
        } else if t[k] == "+" || t[k] == "-" {
            guard let oh = number(k + 1, 2), k + 3 < t.count, t[k + 3] == ":",
                  let om = number(k + 4, 2), oh <= 23, om <= 59 else { return nil }
            k += 6
        } else {
            return nil
        }
        return k == t.count ? .offsetDateTime : nil
    }
}
