/// A glob over `"device/metric"`: `*` matches any run of characters except `/`, `?` one
/// character except `/`, `**` anything including `/`; every other character matches itself.
public struct Glob: Hashable, Sendable {
    enum Part: Hashable, Sendable {
        case char(Unicode.Scalar)
        case any        // ?
        case star       // *
        case deepStar   // **
    }
    public let pattern: String
    let parts: [Part]
    let literal: String?

    /// Parses `pattern`, or returns why it is not a valid glob.
    public static func parse(_ pattern: String) -> Result<Glob, GlobError> {
        if pattern.isEmpty { return .failure(GlobError("is empty")) }
        let s = Array(pattern.unicodeScalars)
        var parts: [Part] = []
        var i = 0
        while i < s.count {
            let c = s[i]
            switch c {
            case "*":
                var n = 0
                while i < s.count, s[i] == "*" { n += 1; i += 1 }
                if n > 2 { return .failure(GlobError("has \"\(String(repeating: "*", count: n))\": use \"*\" (within a name) or \"**\" (across \"/\")")) }
                parts.append(n == 2 ? .deepStar : .star)
                continue
            case "?": parts.append(.any)
            case "[", "]", "{", "}":
                return .failure(GlobError("uses \"\(c)\": character classes and alternatives are not supported; list several patterns instead"))
            case " ", "\t", "\n":
                return .failure(GlobError("contains a space"))
            default: parts.append(.char(c))
            }
            i += 1
        }
        if !s.contains("/") && !parts.contains(.deepStar) {
            return .failure(GlobError("has no \"/\": patterns are \"device/metric\", e.g. \"*/temperature\" or \"boiler/*\""))
        }
        if s.first == "/" || s.last == "/" || pattern.contains("//") {
            return .failure(GlobError("has an empty device or metric"))
        }
        let isLiteral = parts.allSatisfy { if case .char = $0 { return true }; return false }
        return .success(Glob(pattern: pattern, parts: parts, literal: isLiteral ? pattern : nil))
    }

    public func matches(_ key: String) -> Bool {
        if let literal { return literal == key }
        let k = Array(key.unicodeScalars)
        // dp[j]: parts[0..<i] match k[0..<j]
        var dp = [Bool](repeating: false, count: k.count + 1)
        dp[0] = true
        for p in parts {
            var next = [Bool](repeating: false, count: k.count + 1)
            switch p {
            case .char(let c):
                for j in 0..<k.count where dp[j] && k[j] == c { next[j + 1] = true }
            case .any:
                for j in 0..<k.count where dp[j] && k[j] != "/" { next[j + 1] = true }
            case .star:
                for j in 0...k.count {
                    if dp[j] { next[j] = true }
                    if j > 0, next[j - 1], k[j - 1] != "/" { next[j] = true }
                }
            case .deepStar:
                for j in 0...k.count {
                    if dp[j] || (j > 0 && next[j - 1]) { next[j] = true }
                }
            }
            dp = next
        }
        return dp[k.count]
    }
}

public struct GlobError: Error, CustomStringConvertible {
    public var reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
