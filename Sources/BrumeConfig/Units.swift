/// Parsers for the human units used in gateway.toml. Each returns nil on
/// error; callers turn that into a diagnostic that quotes the examples.
public enum Units {
    /// "250ms", "1s", "5m", "1h", "7d", compounds like "1m30s". Returns milliseconds.
    public static func parseDuration(_ text: String) -> Int64? {
        let s = Array(text.utf8)
        guard !s.isEmpty else { return nil }
        var i = 0
        var total: Int64 = 0
        while i < s.count {
            var n: Int64 = 0
            var digits = 0
            while i < s.count, s[i] >= 48, s[i] <= 57 {
                let (m, o1) = n.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int64(s[i] - 48))
                if o1 || o2 { return nil }
                n = a
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            var unit = ""
            while i < s.count, (s[i] >= 97 && s[i] <= 122) {
                unit.append(Character(Unicode.Scalar(s[i])))
                i += 1
            }
            let factor: Int64
            switch unit {
            case "ms": factor = 1
            case "s": factor = 1000
            case "m": factor = 60_000
            case "h": factor = 3_600_000
            case "d": factor = 86_400_000
            default: return nil
            }
            let (p, o) = n.multipliedReportingOverflow(by: factor)
            if o { return nil }
            let (t, o2) = total.addingReportingOverflow(p)
            if o2 { return nil }
            total = t
        }
        return total
    }

    /// 5000 → "5s", 90000 → "1m30s", 250 → "250ms".
    public static func formatDuration(_ ms: Int64) -> String {
        if ms == 0 { return "0s" }
        var rest = ms
        var out = ""
        for (unit, f) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] where rest >= f {
            out += "\(rest / f)\(unit)"
            rest %= f
        }
        return out
    }

    /// 65536 → "64KiB", 1000 → "1000B".
    public static func formatSize(_ bytes: Int64) -> String {
        for (unit, f) in [("GiB", Int64(1) << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] where bytes >= f && bytes % f == 0 {
            return "\(bytes / f)\(unit)"
        }
        return "\(bytes)B"
    }

    /// "256MiB", "1GiB", "512KiB", "100kB", "10MB", "4096" (bytes). Returns bytes.
    public static func parseSize(_ text: String) -> Int64? {
        let t = text.trimmingSpaces
        var digits = ""
        var rest = Substring(t)
        while let c = rest.first, c.isASCII, c.isNumber {
            digits.append(c)
            rest = rest.dropFirst()
        }
        guard let n = Int64(digits) else { return nil }
        let unit = rest.trimmingSpaces
        let factor: Int64
        switch unit {
        case "", "B": factor = 1
        case "kB", "KB": factor = 1000
        case "MB": factor = 1_000_000
        case "GB": factor = 1_000_000_000
        case "KiB": factor = 1 << 10
        case "MiB": factor = 1 << 20
        case "GiB": factor = 1 << 30
        default: return nil
        }
        let (p, o) = n.multipliedReportingOverflow(by: factor)
        return o ? nil : p
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}

/// An MQTT broker address: `mqtt://host:port` or `mqtts://host:port`.
public struct BrokerURL: Sendable, Hashable, CustomStringConvertible {
    public var tls: Bool
    public var host: String
    public var port: Int
    public var description: String { "\(tls ? "mqtts" : "mqtt")://\(host):\(port)" }

    public init(tls: Bool, host: String, port: Int) {
        self.tls = tls
        self.host = host
        self.port = port
    }

    /// Parses; on failure returns the reason.
    public static func parse(_ text: String) -> Result<BrokerURL, ConfigProblem> {
        let tls: Bool
        var rest: Substring
        if text.hasPrefix("mqtt://") { tls = false; rest = text.dropFirst(7) }
        else if text.hasPrefix("mqtts://") { tls = true; rest = text.dropFirst(8) }
        else if let r = text.firstRange(of: "://") { return .failure(ConfigProblem("unsupported scheme \"\(text[..<r.lowerBound])\" (use mqtt:// or mqtts://)")) }
        else { return .failure(ConfigProblem("expected a URL like \"mqtt://127.0.0.1:1883\"")) }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        if rest.contains("@") { return .failure(ConfigProblem("credentials do not belong in the URL: use username and password_file")) }
        if rest.contains("/") || rest.contains("?") { return .failure(ConfigProblem("an MQTT URL has no path or query")) }
        var host = String(rest)
        var port = tls ? 8883 : 1883
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return .failure(ConfigProblem("unterminated IPv6 address")) }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { return .failure(ConfigProblem("port must be 1-65535")) }
                port = p
            } else if !after.isEmpty { return .failure(ConfigProblem("unexpected text after the IPv6 address")) }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else { return .failure(ConfigProblem("port must be a number from 1 to 65535")) }
            port = p
        }
        guard !host.isEmpty else { return .failure(ConfigProblem("missing host")) }
        let allowed = host.unicodeScalars.allSatisfy { ($0.properties.isAlphabetic && $0.isASCII) || ("0"..."9").contains($0) || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_" }
        guard allowed else { return .failure(ConfigProblem("invalid host \"\(host)\"")) }
        return .success(BrokerURL(tls: tls, host: host, port: port))
    }
}
