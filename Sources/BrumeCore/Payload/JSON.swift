// A small, strict RFC 8259 JSON parser working on raw bytes, and RFC 6901 JSON Pointers.
//
// - Input must be UTF-8 (invalid sequences, overlongs and encoded surrogates are errors).
// - Whitespace is exactly space, tab, CR, LF. No comments, no trailing commas, no BOM.
// - Numbers follow the RFC grammar (no leading zeros, no "+", no NaN/Infinity, no "1.", no ".5").
//   A number whose magnitude overflows `Double` is an error, so a parsed `.number` is always finite.
// - String escapes include \uXXXX surrogate pairs; a lone surrogate is an error.
// - Nesting of arrays/objects is limited to `JSONParser.maxDepth` (64) levels.
// - Anything other than whitespace after the top-level value is an error.
// - Object member order is kept; duplicate keys are kept too (`JSONPointer` and the
//   `subscript(key:)` accessor pick the last one, like JavaScript and most consumers).

/// One `"key": value` member of a JSON object.
public struct JSONMember: Sendable, Hashable {
    public var key: String
    public var value: JSONValue

    public init(key: String, value: JSONValue) {
        self.key = key
        self.value = value
    }
}

/// A parsed JSON document.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    /// Members in document order.
    case object([JSONMember])

    /// The value of the last member named `key` when this is an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        for member in members.reversed() where member.key == key {
            return member.value
        }
        return nil
    }

    /// The element at `index` when this is an array.
    public subscript(index: Int) -> JSONValue? {
        guard case .array(let elements) = self, index >= 0, index < elements.count else { return nil }
        return elements[index]
    }

    /// A short name of the kind of value ("null", "bool", "number", "string", "array", "object").
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "bool"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

extension JSONValue: CustomStringConvertible {
    /// Compact JSON text of the value (no spaces), using the wire-format number and string rules.
    public var description: String {
        var out: [UInt8] = []
        appendJSON(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends compact JSON text of the value to `out`.
    public func appendJSON(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let d): WireFormat.appendNumber(d, to: &out)
        case .string(let s): WireFormat.appendString(s, to: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (i, element) in elements.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                element.appendJSON(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, member) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                WireFormat.appendString(member.key, to: &out)
                out.append(UInt8(ascii: ":"))
                member.value.appendJSON(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }
}

/// A JSON syntax error, with the 0-based byte offset where it was detected.
public struct JSONError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// The input holds no value at all (empty or only whitespace).
        case empty
        /// A byte that cannot start or continue the construct being parsed.
        case unexpectedCharacter(UInt8)
        /// The input ends inside a value.
        case unexpectedEnd
        /// A string that is not closed before the end of the input (offset: its opening quote).
        case unterminatedString
        /// An unescaped control character (U+0000 to U+001F) inside a string.
        case controlCharacterInString
        /// A backslash escape that is not one of \" \\ \/ \b \f \n \r \t \uXXXX.
        case invalidEscape
        /// A \uXXXX escape of a surrogate that is not part of a valid pair.
        case loneSurrogate
        /// A byte sequence that is not valid UTF-8.
        case invalidUTF8
        /// A number that does not follow the JSON grammar.
        case invalidNumber
        /// A number too large in magnitude for a Double.
        case numberOutOfRange
        /// Arrays/objects nested deeper than `JSONParser.maxDepth`.
        case tooDeep
        /// Non-whitespace after the top-level value.
        case trailingData(UInt8)
    }

    public var kind: Kind
    public var offset: Int

    public init(_ kind: Kind, offset: Int) {
        self.kind = kind
        self.offset = offset
    }

    public var description: String {
        switch kind {
        case .empty: return "empty document: no JSON value"
        case .unexpectedCharacter(let c): return "unexpected \(Self.describe(c)) at byte \(offset)"
        case .unexpectedEnd: return "unexpected end of input at byte \(offset)"
        case .unterminatedString: return "unterminated string starting at byte \(offset)"
        case .controlCharacterInString: return "unescaped control character in string at byte \(offset)"
        case .invalidEscape: return "invalid escape sequence in string at byte \(offset)"
        case .loneSurrogate: return "lone UTF-16 surrogate in \\u escape at byte \(offset)"
        case .invalidUTF8: return "invalid UTF-8 at byte \(offset)"
        case .invalidNumber: return "invalid number at byte \(offset)"
        case .numberOutOfRange: return "number out of range at byte \(offset)"
        case .tooDeep: return "nesting deeper than \(JSONParser.maxDepth) at byte \(offset)"
        case .trailingData(let c): return "trailing data (\(Self.describe(c))) after the JSON value at byte \(offset)"
        }
    }

    static func describe(_ c: UInt8) -> String {
        if c >= 0x21 && c < 0x7F {
            return "character '\(Character(Unicode.Scalar(c)))'"
        }
        let hex = String(c, radix: 16, uppercase: true)
        return "byte 0x\(c < 16 ? "0" : "")\(hex)"
    }
}

/// Strict RFC 8259 parser. See the comment at the top of this file for the exact rules.
public struct JSONParser {
    /// Maximum nesting of arrays and objects.
    public static let maxDepth = 64

    /// Parses one complete JSON document.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONError) -> JSONValue {
        guard let base = bytes.baseAddress, bytes.count > 0 else {
            throw JSONError(.empty, offset: 0)
        }
        var state = ParserState(base: base.assumingMemoryBound(to: UInt8.self), end: bytes.count)
        return try state.parseDocument()
    }

    /// Parses one complete JSON document.
    public static func parse(_ bytes: [UInt8]) throws(JSONError) -> JSONValue {
        let result = bytes.withUnsafeBytes { raw -> Result<JSONValue, JSONError> in
            do throws(JSONError) { return .success(try parse(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Parses one complete JSON document.
    public static func parse(_ text: String) throws(JSONError) -> JSONValue {
        var text = text
        let result = text.withUTF8 { buf -> Result<JSONValue, JSONError> in
            do throws(JSONError) { return .success(try parse(UnsafeRawBufferPointer(buf))) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

// MARK: - Parser internals

private let quote = UInt8(ascii: "\"")
private let backslash = UInt8(ascii: "\\")

@inline(__always)
private func isJSONWhitespace(_ c: UInt8) -> Bool {
    c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09
}

private struct ParserState {
    let p: UnsafePointer<UInt8>
    let end: Int
    var pos = 0
    var depth = 0
    var scratch: [UInt8] = []

    init(base: UnsafePointer<UInt8>, end: Int) {
        self.p = base
        self.end = end
    }

    @inline(__always)
    mutating func skipWhitespace() {
        while pos < end && isJSONWhitespace(p[pos]) { pos += 1 }
    }

    mutating func parseDocument() throws(JSONError) -> JSONValue {
        skipWhitespace()
        if pos == end { throw JSONError(.empty, offset: pos) }
        let value = try parseValue()
        skipWhitespace()
        if pos != end { throw JSONError(.trailingData(p[pos]), offset: pos) }
        return value
    }

    /// Parses a value starting at `pos` (whitespace already skipped).
    mutating func parseValue() throws(JSONError) -> JSONValue {
        guard pos < end else { throw JSONError(.unexpectedEnd, offset: pos) }
        switch p[pos] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case quote: return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        case let c: throw JSONError(.unexpectedCharacter(c), offset: pos)
        }
    }

    mutating func expectLiteral(_ literal: StaticString) throws(JSONError) {
        let n = literal.utf8CodeUnitCount
        let lit = literal.utf8Start
        for i in 0..<n {
            guard pos < end else { throw JSONError(.unexpectedEnd, offset: pos) }
            guard p[pos] == lit[i] else { throw JSONError(.unexpectedCharacter(p[pos]), offset: pos) }
            pos += 1
        }
    }

    mutating func enter() throws(JSONError) {
        depth += 1
        if depth > JSONParser.maxDepth { throw JSONError(.tooDeep, offset: pos) }
    }

    mutating func parseArray() throws(JSONError) -> JSONValue {
        try enter()
        pos += 1  // [
        var elements: [JSONValue] = []
        skipWhitespace()
        if pos < end && p[pos] == UInt8(ascii: "]") {
            pos += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue())
            skipWhitespace()
            guard pos < end else { throw JSONError(.unexpectedEnd, offset: pos) }
            let c = p[pos]
            pos += 1
            if c == UInt8(ascii: ",") { continue }
            if c == UInt8(ascii: "]") { break }
            throw JSONError(.unexpectedCharacter(c), offset: pos - 1)
        }
        depth -= 1
        return .array(elements)
    }

    mutating func parseObject() throws(JSONError) -> JSONValue {
        try enter()
        pos += 1  // {
        var members: [JSONMember] = []
        skipWhitespace()
        if pos < end && p[pos] == UInt8(ascii: "}") {
            pos += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard pos < end else { throw JSONError(.unexpectedEnd, offset: pos) }
            guard p[pos] == quote else { throw JSONError(.unexpectedCharacter(p[pos]), offset: pos) }
            let key = try parseString()
            skipWhitespace()
            guard pos < end else { throw JSONError(.unexpectedEnd, offset: pos) }
            guard p[pos] == UInt8(ascii: ":") else { throw JSONError(.unexpectedCharacter(p[pos]), offset: pos) }
            pos += 1
            skipWhitespace()
            let value = try parseValue()
            members.append(JSONMember(key: key, value: value))
            skipWhitespace()
            guard pos < end else { throw JSONError(.unexpectedEnd, offset: pos) }
            let c = p[pos]
            pos += 1
            if c == UInt8(ascii: ",") { continue }
            if c == UInt8(ascii: "}") { break }
            throw JSONError(.unexpectedCharacter(c), offset: pos - 1)
        }
        depth -= 1
        return .object(members)
    }

    /// Parses a string starting at the opening quote. Strings without escapes are created
    /// directly from the input bytes; escapes go through a reused scratch buffer.
    mutating func parseString() throws(JSONError) -> String {
        let opening = pos
        pos += 1
        var runStart = pos
        var usingScratch = false
        while true {
            guard pos < end else { throw JSONError(.unterminatedString, offset: opening) }
            let c = p[pos]
            if c == quote {
                let result: String
                if usingScratch {
                    scratch.append(contentsOf: UnsafeBufferPointer(start: p + runStart, count: pos - runStart))
                    result = String(decoding: scratch, as: UTF8.self)
                } else {
                    result = String(decoding: UnsafeBufferPointer(start: p + runStart, count: pos - runStart), as: UTF8.self)
                }
                pos += 1
                return result
            } else if c == backslash {
                if !usingScratch {
                    scratch.removeAll(keepingCapacity: true)
                    usingScratch = true
                }
                scratch.append(contentsOf: UnsafeBufferPointer(start: p + runStart, count: pos - runStart))
                try parseEscape()
                runStart = pos
            } else if c < 0x20 {
                throw JSONError(.controlCharacterInString, offset: pos)
            } else if c < 0x80 {
                pos += 1
            } else {
                pos += try utf8SequenceLength(at: pos)
            }
        }
    }

    /// Validates one multi-byte UTF-8 sequence at `i` (Unicode Table 3-7) and returns its length.
    @inline(__always)
    func utf8SequenceLength(at i: Int) throws(JSONError) -> Int {
        let b0 = p[i]
        @inline(__always) func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) throws(JSONError) {
            guard i + k < end else { throw JSONError(.invalidUTF8, offset: i) }
            let b = p[i + k]
            guard b >= lo && b <= hi else { throw JSONError(.invalidUTF8, offset: i) }
        }
        switch b0 {
        case 0xC2...0xDF:
            try cont(1)
            return 2
        case 0xE0:
            try cont(1, 0xA0, 0xBF); try cont(2)
            return 3
        case 0xE1...0xEC, 0xEE...0xEF:
            try cont(1); try cont(2)
            return 3
        case 0xED:
            try cont(1, 0x80, 0x9F); try cont(2)
            return 3
        case 0xF0:
            try cont(1, 0x90, 0xBF); try cont(2); try cont(3)
            return 4
        case 0xF1...0xF3:
            try cont(1); try cont(2); try cont(3)
            return 4
        case 0xF4:
            try cont(1, 0x80, 0x8F); try cont(2); try cont(3)
            return 4
        default:
            throw JSONError(.invalidUTF8, offset: i)
        }
    }

    /// Parses an escape at `pos` (the backslash) and appends its UTF-8 to `scratch`.
    mutating func parseEscape() throws(JSONError) {
        let start = pos
        pos += 1
        guard pos < end else { throw JSONError(.unexpectedEnd, offset: pos) }
        let c = p[pos]
        pos += 1
        switch c {
        case quote: scratch.append(quote)
        case backslash: scratch.append(backslash)
        case UInt8(ascii: "/"): scratch.append(UInt8(ascii: "/"))
        case UInt8(ascii: "b"): scratch.append(0x08)
        case UInt8(ascii: "f"): scratch.append(0x0C)
        case UInt8(ascii: "n"): scratch.append(0x0A)
        case UInt8(ascii: "r"): scratch.append(0x0D)
        case UInt8(ascii: "t"): scratch.append(0x09)
        case UInt8(ascii: "u"):
            let unit = try parseHex4()
            var scalar: UInt32
            if unit >= 0xD800 && unit <= 0xDBFF {
                // Must be followed by \u + low surrogate.
                guard pos + 1 < end, p[pos] == backslash, p[pos + 1] == UInt8(ascii: "u") else {
                    throw JSONError(.loneSurrogate, offset: start)
                }
                pos += 2
                let low = try parseHex4()
                guard low >= 0xDC00 && low <= 0xDFFF else { throw JSONError(.loneSurrogate, offset: start) }
                scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
            } else if unit >= 0xDC00 && unit <= 0xDFFF {
                throw JSONError(.loneSurrogate, offset: start)
            } else {
                scalar = unit
            }
            appendUTF8(scalar)
        default:
            throw JSONError(.invalidEscape, offset: start)
        }
    }

    mutating func parseHex4() throws(JSONError) -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard pos < end else { throw JSONError(.unexpectedEnd, offset: pos) }
            let c = p[pos]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw JSONError(.invalidEscape, offset: pos)
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    mutating func appendUTF8(_ s: UInt32) {
        switch s {
        case 0..<0x80:
            scratch.append(UInt8(s))
        case 0x80..<0x800:
            scratch.append(UInt8(0xC0 | (s >> 6)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        case 0x800..<0x10000:
            scratch.append(UInt8(0xE0 | (s >> 12)))
            scratch.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        default:
            scratch.append(UInt8(0xF0 | (s >> 18)))
            scratch.append(UInt8(0x80 | ((s >> 12) & 0x3F)))
            scratch.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        }
    }

    mutating func parseNumber() throws(JSONError) -> Double {
        let start = pos
        let scan: DecimalScan
        do throws(DecimalScanError) {
            scan = try scanDecimal(p, from: pos, to: end, strict: true)
        } catch {
            if error.offset >= end { throw JSONError(.unexpectedEnd, offset: end) }
            throw JSONError(.invalidNumber, offset: error.offset)
        }
        pos = scan.end
        if !scan.value.isFinite { throw JSONError(.numberOutOfRange, offset: start) }
        return scan.value
    }
}
