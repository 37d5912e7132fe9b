// A TOML 1.0 parser that keeps the source position of every key, value and table header.
//
// Pure Swift, standard library only. Parsing is a single forward pass over the Unicode
// scalars of the document; recursion only happens for nested arrays / inline tables and is
// bounded by `TOMLParser.maximumDepth`, so hostile input cannot exhaust the stack.

// MARK: - Public model

/// A 1-based position in the source text.
///
/// `column` counts **Unicode scalars** from the start of the line (a tab counts as one column,
/// "é" counts as one column). A byte-order mark at the very start of the document is not
/// counted. Lines are separated by LF or CRLF.
public struct SourcePosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    /// Which file of a configuration made of several (gateway.toml is 0, then conf.d/*.toml in
    /// order); the parser always writes 0 and `ConfigLoader` renumbers an included file's tree.
    public var file: Int

    public init(line: Int, column: Int, file: Int = 0) {
        self.line = line
        self.column = column
        self.file = file
    }

    public static func < (lhs: SourcePosition, rhs: SourcePosition) -> Bool {
        (lhs.file, lhs.line, lhs.column) < (rhs.file, rhs.line, rhs.column)
    }

    /// "LINE:COL"
    public var description: String { "\(line):\(column)" }
}

/// A TOML date, time or date-time. The shape and ranges are validated; the text is kept verbatim.
public struct TOMLDateTime: Sendable, Hashable {
    public enum Kind: Sendable {
        case offsetDateTime, localDateTime, localDate, localTime
    }

    /// The value exactly as written in the document (e.g. `1979-05-27 07:32:00Z`).
    public var raw: String
    public var kind: Kind

    public init(raw: String, kind: Kind) {
        self.raw = raw
        self.kind = kind
    }
}

public indirect enum TOMLValue: Sendable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case bool(Bool)
    case datetime(TOMLDateTime)
    case array([TOMLNode])
    case table(TOMLTable)

    /// "string", "integer", "float", "boolean", "datetime", "array" or "table".
    public var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .bool: "boolean"
        case .datetime: "datetime"
        case .array: "array"
        case .table: "table"
        }
    }

    public var stringValue: String? { if case .string(let v) = self { v } else { nil } }
    public var integerValue: Int64? { if case .integer(let v) = self { v } else { nil } }
    public var floatValue: Double? { if case .float(let v) = self { v } else { nil } }
    public var boolValue: Bool? { if case .bool(let v) = self { v } else { nil } }
    public var datetimeValue: TOMLDateTime? { if case .datetime(let v) = self { v } else { nil } }
    public var arrayValue: [TOMLNode]? { if case .array(let v) = self { v } else { nil } }
    public var tableValue: TOMLTable? { if case .table(let v) = self { v } else { nil } }
}

/// A value together with where it starts in the source.
public struct TOMLNode: Sendable {
    public var value: TOMLValue
    /// Where the value starts. For a table defined by a `[table]` / `[[table]]` header this is the
    /// header's first `[`; for an inline table its `{`; for a table that only exists implicitly
    /// (created by a dotted key or by an intermediate header segment) the key segment that first
    /// created it. For an array of tables it is the first `[[` header.
    public var position: SourcePosition

    public init(value: TOMLValue, position: SourcePosition) {
        self.value = value
        self.position = position
    }

    /// "string", "integer", "float", "boolean", "datetime", "array" or "table" (for error messages).
    public var typeName: String { value.typeName }
}

public struct TOMLTable: Sendable {
    public struct Entry: Sendable {
        public var key: String
        /// Where the key (segment) was first written.
        public var keyPosition: SourcePosition
        public var node: TOMLNode

        public init(key: String, keyPosition: SourcePosition, node: TOMLNode) {
            self.key = key
            self.keyPosition = keyPosition
            self.node = node
        }
    }

    /// Entries in document order (order of first appearance of each key).
    public var entries: [Entry]
    /// The header's `[` (or `{` for an inline table, 1:1 for the root, the creating key segment
    /// for an implicitly created table).
    public var position: SourcePosition
    /// True for `{ ... }` tables and for tables created by dotted keys inside them.
    public var isInline: Bool

    public init(entries: [Entry] = [], position: SourcePosition = SourcePosition(line: 1, column: 1), isInline: Bool = false) {
        self.entries = entries
        self.position = position
        self.isInline = isInline
    }

    public subscript(key: String) -> TOMLNode? { entry(key)?.node }

    public func entry(_ key: String) -> Entry? {
        entries.first { $0.key == key }
    }

    public var keys: [String] { entries.map(\.key) }
}

public struct TOMLSyntaxError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var position: SourcePosition

    public init(message: String, position: SourcePosition) {
        self.message = message
        self.position = position
    }

    /// "LINE:COL: message"
    public var description: String { "\(position): \(message)" }
}

public enum TOMLParser {
    /// Maximum nesting of tables and arrays (counted from the root table).
    public static let maximumDepth = 64

    public static func parse(_ text: String) throws(TOMLSyntaxError) -> TOMLTable {
        var parser = TOMLDocumentParser(text)
        return try parser.parseDocument()
    }
}
