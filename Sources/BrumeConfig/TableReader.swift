import BrumeCore
import BrumeRules

#if canImport(Glibc)
import Glibc
#endif

/// Reads one TOML table, remembering which keys were used so that the rest
/// are reported as unknown (with a suggestion).
final class TableReader {
    let table: TOMLTable
    let context: String
    let sink: DiagnosticSink
    private var known: [String] = []

    init(_ table: TOMLTable, context: String, sink: DiagnosticSink) {
        self.table = table
        self.context = context
        self.sink = sink
    }

    private func note(_ key: String) { known.append(key) }

    /// What `brume schema` learns of this table's keys (nothing when not generating one).
    private func record(_ key: String, _ access: SchemaRecorder.Access) {
        sink.recorder?.record(table: context.isEmpty ? nil : table.position, key: key, access)
    }

    func error(_ pos: SourcePosition, _ msg: String) { sink.error(pos, context.isEmpty ? msg : "\(context): \(msg)") }
    func warning(_ pos: SourcePosition, _ msg: String) { sink.warning(pos, context.isEmpty ? msg : "\(context): \(msg)") }

    func node(_ key: String) -> TOMLNode? {
        note(key)
        record(key, .any)
        return table[key]
    }

    func position(of key: String) -> SourcePosition { table.entry(key)?.node.position ?? table.position }

    private func typeError(_ key: String, _ n: TOMLNode, expected: String) {
        error(n.position, "\"\(key)\" must be \(expected), not \(article(n.typeName))")
    }

    func string(_ key: String, required: Bool = false) -> String? {
        record(key, required ? .requiredString : .string)
        guard let n = node(key) else {
            if required { error(table.position, "missing required key \"\(key)\"") }
            return nil
        }
        guard case .string(let s) = n.value else { typeError(key, n, expected: "a string"); return nil }
        return s
    }

    func bool(_ key: String) -> Bool? {
        record(key, .bool)
        guard let n = node(key) else { return nil }
        guard case .bool(let b) = n.value else { typeError(key, n, expected: "true or false"); return nil }
        return b
    }

    func int(_ key: String, range: ClosedRange<Int64>) -> Int64? {
        record(key, .integer(range))
        guard let n = node(key) else { return nil }
        guard case .integer(let i) = n.value else { typeError(key, n, expected: "an integer"); return nil }
        guard range.contains(i) else { error(n.position, "\"\(key)\" must be between \(range.lowerBound) and \(range.upperBound), got \(i)"); return nil }
        return i
    }

    func number(_ key: String) -> Double? {
        record(key, .number)
        guard let n = node(key) else { return nil }
        switch n.value {
        case .integer(let i): return Double(i)
        case .float(let d) where d.isFinite: return d
        default: typeError(key, n, expected: "a finite number"); return nil
        }
    }

    func duration(_ key: String, min: Int64 = 0) -> Int64? {
        record(key, .duration)
        guard let n = node(key) else { return nil }
        guard case .string(let s) = n.value else { typeError(key, n, expected: "a duration string like \"500ms\", \"1s\", \"5m\", \"7d\""); return nil }
        guard let ms = Units.parseDuration(s) else {
            error(n.position, "\"\(key)\": invalid duration \"\(s)\" (examples: \"250ms\", \"1s\", \"5m\", \"1h\", \"7d\", \"1m30s\")")
            return nil
        }
        if ms < min { error(n.position, "\"\(key)\" must be at least \"\(Units.formatDuration(min))\", got \"\(s)\""); return nil }
        // Durations feed timers and schedules (poll + interval, nanoseconds for the kernel): a
        // bound that no real setting reaches keeps every such sum far from overflow.
        if ms > TableReader.maxDuration {
            error(n.position, "\"\(key)\" must be at most \"\(Units.formatDuration(TableReader.maxDuration))\", got \"\(s)\""); return nil
        }
        return ms
    }

    /// 10 years.
    static let maxDuration: Int64 = 3650 * 86_400_000
    /// 1 PiB.
    static let maxSize: Int64 = 1 << 50

    func size(_ key: String, min: Int64 = 0) -> Int64? {
        record(key, .size(min: min))
        guard let n = node(key) else { return nil }
        let bytes: Int64?
        switch n.value {
        case .integer(let i): bytes = i
        case .string(let s):
            bytes = Units.parseSize(s)
            if bytes == nil { error(n.position, "\"\(key)\": invalid size \"\(s)\" (examples: \"512KiB\", \"256MiB\", \"1GiB\", \"100MB\")"); return nil }
        default: typeError(key, n, expected: "a size like \"256MiB\""); return nil
        }
        if let b = bytes, b < min { error(n.position, "\"\(key)\" must be at least \"\(Units.formatSize(min))\", got \"\(Units.formatSize(b))\""); return nil }
        if let b = bytes, b > TableReader.maxSize {
            error(n.position, "\"\(key)\" must be at most \"\(Units.formatSize(TableReader.maxSize))\", got \"\(Units.formatSize(b))\""); return nil
        }
        return bytes
    }

    func oneOf(_ key: String, _ choices: [String]) -> String? {
        record(key, .oneOf(choices))
        guard let n = node(key) else { return nil }
        guard case .string(let s) = n.value else { typeError(key, n, expected: "one of \(quoted(choices))"); return nil }
        guard choices.contains(s) else {
            var msg = "\"\(key)\" must be one of \(quoted(choices)), got \"\(s)\""
            if let sug = suggestion(for: s, among: choices) { msg += " (did you mean \"\(sug)\"?)" }
            error(n.position, msg)
            return nil
        }
        return s
    }

    func stringArray(_ key: String) -> [(String, SourcePosition)]? {
        record(key, .strings)
        guard let n = node(key) else { return nil }
        guard case .array(let items) = n.value else {
            if case .string(let s) = n.value { return [(s, n.position)] }
            typeError(key, n, expected: "an array of strings")
            return nil
        }
        var out: [(String, SourcePosition)] = []
        for it in items {
            guard case .string(let s) = it.value else { error(it.position, "\"\(key)\" must contain strings only, found \(article(it.typeName))"); continue }
            out.append((s, it.position))
        }
        return out
    }

    func subtable(_ key: String, context sub: String) -> TableReader? {
        guard let n = node(key) else { return nil }
        guard case .table(let t) = n.value else { typeError(key, n, expected: "a table"); return nil }
        return TableReader(t, context: sub, sink: sink)
    }

    /// Used when the kind is unknown: which keys are valid cannot be said.
    func markAllKnown() {
        known.append(contentsOf: table.entries.map(\.key))
        sink.recorder?.open(table: context.isEmpty ? nil : table.position)
    }

    /// Reports every key not read.
    func finish() {
        for e in table.entries where !known.contains(e.key) {
            var msg = "unknown key \"\(e.key)\""
            if let s = suggestion(for: e.key, among: known) { msg += " (did you mean \"\(s)\"?)" }
            error(e.keyPosition, msg)
        }
    }
}

func article(_ typeName: String) -> String {
    let vowels: Set<Character> = ["a", "e", "i", "o", "u"]
    return (typeName.first.map { vowels.contains($0) } ?? false ? "an " : "a ") + typeName
}

func quoted(_ xs: [String]) -> String { xs.map { "\"\($0)\"" }.joined(separator: ", ") }
