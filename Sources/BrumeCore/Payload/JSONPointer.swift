// MARK: - JSON Pointer

/// An error in the text of a JSON Pointer.
public struct JSONPointerError: Error, Sendable, Hashable, CustomStringConvertible {
    public var pointer: String
    public var message: String

    public var description: String { "invalid JSON pointer \"\(pointer)\": \(message)" }
}

/// An RFC 6901 JSON Pointer such as `/env/temp` or `/readings/0/v`.
///
/// `""` designates the whole document. Otherwise the text must start with `/`; each
/// reference token unescapes `~1` to `/` and `~0` to `~`; any other `~` is an error.
/// Array elements are addressed by decimal indices without leading zeros ("0", "12");
/// "-" (the element past the end) never resolves.
public struct JSONPointer: Sendable, Hashable, CustomStringConvertible {
    /// The unescaped reference tokens.
    public let tokens: [String]

    public init(_ text: String) throws(JSONPointerError) {
        if text.isEmpty {
            tokens = []
            return
        }
        let bytes = Array(text.utf8)
        guard bytes[0] == UInt8(ascii: "/") else {
            throw JSONPointerError(pointer: text, message: "must be empty or start with \"/\"")
        }
        var result: [String] = []
        var current: [UInt8] = []
        var i = 1
        while i <= bytes.count {
            if i == bytes.count || bytes[i] == UInt8(ascii: "/") {
                result.append(String(decoding: current, as: UTF8.self))
                current.removeAll(keepingCapacity: true)
                i += 1
                continue
            }
            let c = bytes[i]
            if c == UInt8(ascii: "~") {
                let next: UInt8? = i + 1 < bytes.count ? bytes[i + 1] : nil
                switch next {
                case UInt8(ascii: "0"): current.append(UInt8(ascii: "~"))
                case UInt8(ascii: "1"): current.append(UInt8(ascii: "/"))
                default:
                    throw JSONPointerError(pointer: text, message: "\"~\" at byte \(i) must be followed by 0 or 1")
                }
                i += 2
            } else {
                current.append(c)
                i += 1
            }
        }
        tokens = result
    }

    public init(tokens: [String]) {
        self.tokens = tokens
    }

    /// The pointer text, escaped (`~` as `~0`, `/` as `~1`).
    public var description: String {
        var s = ""
        for token in tokens {
            s += "/"
            for ch in token.unicodeScalars {
                switch ch {
                case "~": s += "~0"
                case "/": s += "~1"
                default: s.unicodeScalars.append(ch)
                }
            }
        }
        return s
    }

    /// The value this pointer designates in `document`, or nil if there is none.
    public func resolve(in document: JSONValue) -> JSONValue? {
        var current = document
        for token in tokens {
            switch current {
            case .object:
                guard let next = current[token] else { return nil }
                current = next
            case .array(let elements):
                guard let index = Self.arrayIndex(token), index < elements.count else { return nil }
                current = elements[index]
            default:
                return nil
            }
        }
        return current
    }

    /// Parses an RFC 6901 array index: "0" or [1-9][0-9]*; nil for anything else or overflow.
    static func arrayIndex(_ token: String) -> Int? {
        let utf8 = token.utf8
        guard let first = utf8.first else { return nil }
        if first == UInt8(ascii: "0") { return utf8.count == 1 ? 0 : nil }
        var n = 0
        for c in utf8 {
            guard c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") else { return nil }
            let (m, o1) = n.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(c - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            n = a
        }
        return n
    }
}
