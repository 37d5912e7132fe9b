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
        (a.position.file, a.position.line, a.position.column, a.message) < (b.position.file, b.position.line, b.position.column, b.message)
    }
}

/// Collects every diagnostic of a configuration; validation never stops at the first.
/// A position names its file by index (`SourcePosition.file`): gateway.toml, then conf.d/*.toml.
final class DiagnosticSink {
    let files: [String]
    private(set) var items: [Diagnostic] = []
    /// Values whose problems are not reported (see `ConfigLoader.UnresolvedReferences.ignore`).
    var ignored: Set<SourcePosition> = []
    /// Set while `brume schema` runs the probes (ConfigSchema.swift).
    var recorder: SchemaRecorder?
    init(files: [String]) { self.files = files.isEmpty ? ["gateway.toml"] : files }
    convenience init(file: String) { self.init(files: [file]) }
    func fileName(_ pos: SourcePosition) -> String { files.indices.contains(pos.file) ? files[pos.file] : files[0] }
    func error(_ pos: SourcePosition, _ message: String) {
        if ignored.contains(pos) { return }
        items.append(Diagnostic(file: fileName(pos), position: pos, message: message))
    }
    func warning(_ pos: SourcePosition, _ message: String) {
        items.append(Diagnostic(file: fileName(pos), position: pos, message: message, severity: .warning))
    }
    /// How a message refers to another place: "LINE:COL", with the file when there are several.
    func place(_ pos: SourcePosition) -> String { files.count > 1 ? "\(fileName(pos)):\(pos)" : "\(pos)" }
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
