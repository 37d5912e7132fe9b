/// Maps MQTT topic levels to device and metric names (an MQTT source's `device`/`metric`).
/// "{1}" or "site-{0}/{2}": literal text with topic levels.
public struct TopicTemplate: Sendable, Hashable, CustomStringConvertible {
    public enum Part: Sendable, Hashable { case literal(String), level(Int) }
    public var parts: [Part]
    public var text: String
    public var description: String { text }

    /// Why a template does not parse (shown by `brume check`).
    public struct Problem: Error, Sendable, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    public init(parts: [Part], text: String) {
        self.parts = parts
        self.text = text
    }

    public var maxLevel: Int? { parts.compactMap { if case .level(let n) = $0 { return n } else { return nil } }.max() }

    public static func parse(_ text: String) -> Result<TopicTemplate, TopicTemplate.Problem> {
        var parts: [Part] = []
        var lit = ""
        var it = Array(text)
        var i = 0
        while i < it.count {
            let c = it[i]
            if c == "{" {
                guard let close = it[i...].firstIndex(of: "}") else { return .failure(Problem("unclosed \"{\" in \"\(text)\"")) }
                let inner = String(it[(i + 1)..<close])
                guard let n = Int(inner), n >= 0 else { return .failure(Problem("\"{\(inner)}\" is not a topic level: use {0}, {1}, ... (0 is the first level)")) }
                if !lit.isEmpty { parts.append(.literal(lit)); lit = "" }
                parts.append(.level(n))
                i = close + 1
            } else if c == "}" {
                return .failure(Problem("unmatched \"}\" in \"\(text)\""))
            } else {
                lit.append(c)
                i += 1
            }
        }
        it = []
        if !lit.isEmpty { parts.append(.literal(lit)) }
        return .success(TopicTemplate(parts: parts, text: text))
    }

    /// Renders against the levels of an actual topic; nil when a level is missing.
    public func render(levels: [Substring]) -> String? {
        if parts.count == 1, case .level(let n) = parts[0] { return n < levels.count ? String(levels[n]) : nil }
        var s = ""
        for p in parts {
            switch p {
            case .literal(let l): s += l
            case .level(let n):
                guard n < levels.count else { return nil }
                s += levels[n]
            }
        }
        return s
    }
}
