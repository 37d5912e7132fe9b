/// One problem in a configuration file, with where it is.
public struct Diagnostic: Sendable, Hashable, CustomStringConvertible, Comparable {
    public enum Severity: String, Sendable { case error, warning }
    public var file: String
    public var position: SourcePosition
    public var message: String
    public var severity: Severity

    public init(file: String, position: SourcePosition, message: String, severity: Severity = .error) {
        self.file = file
        self.position = position
        self.message = message
        self.severity = severity
    }

    /// `FILE:LINE:COL: message` (warnings say so).
    public var description: String {
        "\(file):\(position.line):\(position.column): \(severity == .warning ? "warning: " : "")\(message)"
    }

    public static func < (a: Diagnostic, b: Diagnostic) -> Bool {
        (a.position.line, a.position.column, a.message) < (b.position.line, b.position.column, b.message)
    }
}

/// Collects every diagnostic of one file; validation never stops at the first.
final class DiagnosticSink {
    let file: String
    private(set) var items: [Diagnostic] = []
    init(file: String) { self.file = file }
    func error(_ pos: SourcePosition, _ message: String) {
        items.append(Diagnostic(file: file, position: pos, message: message))
    }
    func warning(_ pos: SourcePosition, _ message: String) {
        items.append(Diagnostic(file: file, position: pos, message: message, severity: .warning))
    }
    var hasErrors: Bool { items.contains { $0.severity == .error } }
}

/// "did you mean" by edit distance (Damerau-Levenshtein, optimal string alignment).
func suggestion(for word: String, among candidates: some Sequence<String>) -> String? {
    let w = Array(word.lowercased().unicodeScalars)
    var best: (String, Int)?
    for c in candidates {
        let d = editDistance(w, Array(c.lowercased().unicodeScalars))
        let limit = max(1, min(3, c.count / 3 + 1))
        let prefix = c.hasPrefix(word) || word.hasPrefix(c)
        if d <= limit || (prefix && min(c.count, word.count) >= 3) {
            if best == nil || d < best!.1 { best = (c, d) }
        }
    }
    return best?.0
}

func editDistance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var d = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { d[i][0] = i }
    for j in 0...b.count { d[0][j] = j }
    for i in 1...a.count {
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
            }
        }
    }
    return d[a.count][b.count]
}

/// A reason something in the configuration is wrong (becomes part of a diagnostic).
public struct ConfigProblem: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
