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

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public static func < (lhs: SourcePosition, rhs: SourcePosition) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
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

// MARK: - Builder tree (internal, mutable while parsing)

private final class TOMLTableBuilder {
    enum Kind {
        case root
        /// Created as an intermediate segment of a `[a.b]` header; may still be defined by a header.
        case implicit
        /// Defined by a `[header]` (or an element of `[[header]]`).
        case header
        /// Created by a dotted key; cannot be defined by a header later.
        case dotted
        case inline
    }

    var kind: Kind
    var position: SourcePosition
    let depth: Int
    let isInline: Bool
    var order: [String] = []
    var slots: [String: TOMLSlot] = [:]
    var keyPositions: [String: SourcePosition] = [:]

    init(kind: Kind, position: SourcePosition, depth: Int, isInline: Bool) {
        self.kind = kind
        self.position = position
        self.depth = depth
        self.isInline = isInline
    }

    func insert(_ key: String, at position: SourcePosition, _ slot: TOMLSlot) {
        order.append(key)
        slots[key] = slot
        keyPositions[key] = position
    }

    func build() -> TOMLTable {
        var entries: [TOMLTable.Entry] = []
        entries.reserveCapacity(order.count)
        for key in order {
            let node: TOMLNode
            switch slots[key]! {
            case .value(let n):
                node = n
            case .table(let sub):
                node = TOMLNode(value: .table(sub.build()), position: sub.position)
            case .tableArray(let arr):
                node = TOMLNode(
                    value: .array(arr.elements.map { TOMLNode(value: .table($0.build()), position: $0.position) }),
                    position: arr.position)
            }
            entries.append(TOMLTable.Entry(key: key, keyPosition: keyPositions[key]!, node: node))
        }
        return TOMLTable(entries: entries, position: position, isInline: isInline)
    }
}

private final class TOMLTableArrayBuilder {
    var elements: [TOMLTableBuilder]
    let position: SourcePosition
    init(first: TOMLTableBuilder, position: SourcePosition) {
        self.elements = [first]
        self.position = position
    }
}

private enum TOMLSlot {
    /// A finished value: scalar, static array or inline table (all closed).
    case value(TOMLNode)
    case table(TOMLTableBuilder)
    case tableArray(TOMLTableArrayBuilder)
}

private struct TOMLKeySegment {
    var name: String
    var index: Int
}

// MARK: - Parser

private struct TOMLDocumentParser {
    let s: [Unicode.Scalar]
    var i = 0
    /// Scalar index of the first scalar of each line.
    let lineStarts: [Int]
    let root: TOMLTableBuilder
    var current: TOMLTableBuilder

    init(_ text: String) {
        var scalars = Array(text.unicodeScalars)
        if scalars.first == "\u{FEFF}" { scalars.removeFirst() }
        var starts = [0]
        for (k, c) in scalars.enumerated() where c == "\n" { starts.append(k + 1) }
        s = scalars
        lineStarts = starts
        root = TOMLTableBuilder(kind: .root, position: SourcePosition(line: 1, column: 1), depth: 0, isInline: false)
        current = root
    }

    // MARK: Positions & errors

    func position(_ index: Int) -> SourcePosition {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= index { lo = mid } else { hi = mid - 1 }
        }
        return SourcePosition(line: lo + 1, column: index - lineStarts[lo] + 1)
    }

    func error(_ message: String, at index: Int) -> TOMLSyntaxError {
        TOMLSyntaxError(message: message, position: position(index))
    }

    func describe(at index: Int) -> String {
        guard index < s.count else { return "end of file" }
        let c = s[index]
        switch c {
        case "\n", "\r": return "end of line"
        case "'": return "\"'\""
        default:
            if TOMLLex.isControl(c) { return "U+" + TOMLLex.hex4(c.value) }
            return "'\(Character(c))'"
        }
    }

    var peek: Unicode.Scalar? { i < s.count ? s[i] : nil }

    func at(_ index: Int) -> Unicode.Scalar? { index < s.count ? s[index] : nil }

    // MARK: Whitespace, comments, newlines

    mutating func skipWS() {
        while i < s.count, s[i] == " " || s[i] == "\t" { i += 1 }
    }

    /// At '#': consumes the comment up to (not including) the line end.
    mutating func skipComment() throws(TOMLSyntaxError) {
        i += 1
        while i < s.count {
            let c = s[i]
            if c == "\n" { return }
            if c == "\r" {
                if at(i + 1) == "\n" { return }
                throw error("carriage return must be followed by a line feed", at: i)
            }
            if TOMLLex.isControl(c) && c != "\t" {
                throw error("control character U+\(TOMLLex.hex4(c.value)) is not allowed in comments", at: i)
            }
            i += 1
        }
    }

    /// At '\n' or '\r'.
    mutating func consumeNewline() throws(TOMLSyntaxError) {
        if s[i] == "\n" { i += 1; return }
        if at(i + 1) == "\n" { i += 2; return }
        throw error("carriage return must be followed by a line feed", at: i)
    }

    mutating func expectLineEnd(after what: String) throws(TOMLSyntaxError) {
        skipWS()
        guard i < s.count else { return }
        if s[i] == "#" {
            try skipComment()
            guard i < s.count else { return }
        }
        if s[i] == "\n" || s[i] == "\r" {
            try consumeNewline()
            return
        }
        throw error("expected end of line after \(what), found \(describe(at: i))", at: i)
    }

    /// Whitespace, newlines and comments (inside arrays).
    mutating func skipWSCommentsNewlines() throws(TOMLSyntaxError) {
        while i < s.count {
            switch s[i] {
            case " ", "\t": i += 1
            case "\n", "\r": try consumeNewline()
            case "#": try skipComment()
            default: return
            }
        }
    }

    // MARK: Document

    mutating func parseDocument() throws(TOMLSyntaxError) -> TOMLTable {
        while true {
            skipWS()
            guard i < s.count else { break }
            switch s[i] {
            case "#":
                try skipComment()
            case "\n", "\r":
                try consumeNewline()
            case "[":
                try parseHeader()
                try expectLineEnd(after: "table header")
            default:
                try parseKeyValue(into: current)
                try expectLineEnd(after: "value")
            }
        }
        return root.build()
    }

    // MARK: Keys

    mutating func parseKey() throws(TOMLSyntaxError) -> [TOMLKeySegment] {
        var segments: [TOMLKeySegment] = []
        while true {
            skipWS()
            segments.append(try parseSimpleKey())
            skipWS()
            if peek == "." { i += 1; continue }
            return segments
        }
    }

    mutating func parseSimpleKey() throws(TOMLSyntaxError) -> TOMLKeySegment {
        let start = i
        guard let c = peek else { throw error("expected a key, found end of file", at: i) }
        if c == "\"" {
            if at(i + 1) == "\"" && at(i + 2) == "\"" {
                throw error("multi-line strings cannot be used as keys", at: i)
            }
            return TOMLKeySegment(name: try parseBasicString(), index: start)
        }
        if c == "'" {
            if at(i + 1) == "'" && at(i + 2) == "'" {
                throw error("multi-line strings cannot be used as keys", at: i)
            }
            return TOMLKeySegment(name: try parseLiteralString(), index: start)
        }
        guard TOMLLex.isBareKeyChar(c) else { throw error("expected a key, found \(describe(at: i))", at: i) }
        while i < s.count, TOMLLex.isBareKeyChar(s[i]) { i += 1 }
        return TOMLKeySegment(name: TOMLLex.makeString(s[start..<i]), index: start)
    }

    mutating func parseKeyValue(into base: TOMLTableBuilder) throws(TOMLSyntaxError) {
        let segments = try parseKey()
        skipWS()
        guard peek == "=" else {
            throw error("expected '=' after key \"\(TOMLLex.dottedName(segments.map(\.name)))\"", at: i)
        }
        i += 1
        skipWS()
        let node = try parseValue(depth: base.depth + segments.count - 1)
        try insert(segments, node, into: base)
    }

    /// Inserts `a.b.c = value` relative to `base`.
    func insert(_ segments: [TOMLKeySegment], _ node: TOMLNode, into base: TOMLTableBuilder) throws(TOMLSyntaxError) {
        var table = base
        for (n, seg) in segments.dropLast().enumerated() {
            var path: String { TOMLLex.dottedName(segments[...n].map(\.name)) }
            if let slot = table.slots[seg.name] {
                switch slot {
                case .table(let sub):
                    switch sub.kind {
                    case .header, .root:
                        throw error("cannot add key \"\(segments[n + 1].name)\" to table \"\(path)\" with a dotted key: the table was defined by a header at \(sub.position)", at: segments[n + 1].index)
                    case .implicit:
                        sub.kind = .dotted
                    case .dotted, .inline:
                        break
                    }
                    table = sub
                case .tableArray(let arr):
                    throw error("cannot add key \"\(segments[n + 1].name)\" to \"\(path)\" with a dotted key: it is an array of tables (first at \(arr.position))", at: segments[n + 1].index)
                case .value(let v):
                    throw containerConflict(key: segments[n + 1], parent: path, node: v)
                }
            } else {
                let pos = position(seg.index)
                let sub = try newTable(kind: .dotted, position: pos, depth: table.depth + 1, isInline: table.isInline, at: seg.index)
                table.insert(seg.name, at: pos, .table(sub))
                table = sub
            }
        }
        let last = segments[segments.count - 1]
        if let firstPos = table.keyPositions[last.name] {
            throw error("duplicate key \"\(TOMLLex.dottedName(segments.map(\.name)))\" (first defined at \(firstPos))", at: last.index)
        }
        table.insert(last.name, at: position(last.index), .value(node))
    }

    func containerConflict(key: TOMLKeySegment, parent: String, node: TOMLNode) -> TOMLSyntaxError {
        if case .table(let t) = node.value, t.isInline {
            return error("cannot add key \"\(key.name)\" to inline table \"\(parent)\" (defined at \(node.position))", at: key.index)
        }
        if case .array = node.value {
            return error("cannot add key \"\(key.name)\" to \"\(parent)\": it is a static array (defined at \(node.position))", at: key.index)
        }
        return error("cannot add key \"\(key.name)\" to \"\(parent)\": it is already defined as \(node.typeName) at \(node.position)", at: key.index)
    }

    func newTable(kind: TOMLTableBuilder.Kind, position: SourcePosition, depth: Int, isInline: Bool, at index: Int) throws(TOMLSyntaxError) -> TOMLTableBuilder {
        guard depth <= TOMLParser.maximumDepth else {
            throw error("nesting is too deep (maximum depth is \(TOMLParser.maximumDepth))", at: index)
        }
        return TOMLTableBuilder(kind: kind, position: position, depth: depth, isInline: isInline)
    }

    // MARK: Headers

    mutating func parseHeader() throws(TOMLSyntaxError) {
        let start = i
        let headerPos = position(i)
        i += 1
        let isArray = peek == "["
        if isArray { i += 1 }
        let segments = try parseKey()
        guard peek == "]" else {
            throw error("expected '\(isArray ? "]]" : "]")' to close table header, found \(describe(at: i))", at: i)
        }
        i += 1
        if isArray {
            guard peek == "]" else {
                throw error("expected ']]' to close array-of-tables header, found \(describe(at: i))", at: i)
            }
            i += 1
        }
        let names = segments.map(\.name)
        let display = isArray ? "[[\(TOMLLex.dottedName(names))]]" : "[\(TOMLLex.dottedName(names))]"

        var table = root
        for (n, seg) in segments.dropLast().enumerated() {
            if let slot = table.slots[seg.name] {
                switch slot {
                case .table(let sub):
                    table = sub
                case .tableArray(let arr):
                    table = arr.elements[arr.elements.count - 1]
                case .value(let v):
                    throw containerConflict(key: segments[n + 1], parent: TOMLLex.dottedName(names[...n]), node: v)
                }
            } else {
                let pos = position(seg.index)
                let sub = try newTable(kind: .implicit, position: pos, depth: table.depth + 1, isInline: false, at: seg.index)
                table.insert(seg.name, at: pos, .table(sub))
                table = sub
            }
        }

        let last = segments[segments.count - 1]
        let lastPos = position(last.index)
        if !isArray {
            if let slot = table.slots[last.name] {
                switch slot {
                case .table(let sub):
                    switch sub.kind {
                    case .implicit:
                        sub.kind = .header
                        sub.position = headerPos
                        current = sub
                        return
                    case .header, .root, .inline:
                        throw error("table \(display) defined twice (first at \(sub.position))", at: start)
                    case .dotted:
                        throw error("table \(display) defined twice (first implicitly by a dotted key at \(table.keyPositions[last.name]!))", at: start)
                    }
                case .tableArray(let arr):
                    throw error("table \(display) conflicts with array of tables [[\(TOMLLex.dottedName(names))]] (first at \(arr.position))", at: start)
                case .value(let v):
                    throw error("table \(display) conflicts with key \"\(last.name)\" already defined as \(v.value.typeName == "table" ? "inline table" : v.typeName) at \(table.keyPositions[last.name]!)", at: start)
                }
            }
            let sub = try newTable(kind: .header, position: headerPos, depth: table.depth + 1, isInline: false, at: start)
            table.insert(last.name, at: lastPos, .table(sub))
            current = sub
        } else {
            if let slot = table.slots[last.name] {
                switch slot {
                case .tableArray(let arr):
                    let element = try newTable(kind: .header, position: headerPos, depth: table.depth + 2, isInline: false, at: start)
                    arr.elements.append(element)
                    current = element
                    return
                case .table(let sub):
                    throw error("cannot define array of tables \(display): \"\(TOMLLex.dottedName(names))\" is already a table (defined at \(sub.position))", at: start)
                case .value(let v):
                    if case .array = v.value {
                        throw error("cannot append to static array \"\(TOMLLex.dottedName(names))\" (defined at \(v.position)) with \(display)", at: start)
                    }
                    throw error("cannot define array of tables \(display): key \"\(last.name)\" already defined as \(v.value.typeName == "table" ? "inline table" : v.typeName) at \(table.keyPositions[last.name]!)", at: start)
                }
            }
            let element = try newTable(kind: .header, position: headerPos, depth: table.depth + 2, isInline: false, at: start)
            table.insert(last.name, at: lastPos, .tableArray(TOMLTableArrayBuilder(first: element, position: headerPos)))
            current = element
        }
    }

    // MARK: Values

    /// `depth` is the depth of the table or array that will contain the value.
    mutating func parseValue(depth: Int) throws(TOMLSyntaxError) -> TOMLNode {
        let start = i
        guard let c = peek else { throw error("expected a value, found end of file", at: i) }
        let pos = position(start)
        switch c {
        case "\"":
            if at(i + 1) == "\"" && at(i + 2) == "\"" {
                return TOMLNode(value: .string(try parseMultilineBasicString()), position: pos)
            }
            return TOMLNode(value: .string(try parseBasicString()), position: pos)
        case "'":
            if at(i + 1) == "'" && at(i + 2) == "'" {
                return TOMLNode(value: .string(try parseMultilineLiteralString()), position: pos)
            }
            return TOMLNode(value: .string(try parseLiteralString()), position: pos)
        case "[":
            return try parseArray(depth: depth + 1)
        case "{":
            return try parseInlineTable(depth: depth + 1)
        default:
            if TOMLLex.isTokenChar(c) { return try parseBareValue() }
            throw error("expected a value, found \(describe(at: i))", at: i)
        }
    }

    mutating func parseArray(depth: Int) throws(TOMLSyntaxError) -> TOMLNode {
        let start = i
        guard depth <= TOMLParser.maximumDepth else {
            throw error("nesting is too deep (maximum depth is \(TOMLParser.maximumDepth))", at: start)
        }
        i += 1
        var items: [TOMLNode] = []
        while true {
            try skipWSCommentsNewlines()
            guard i < s.count else { throw error("unterminated array", at: start) }
            if s[i] == "]" { i += 1; break }
            items.append(try parseValue(depth: depth))
            try skipWSCommentsNewlines()
            guard i < s.count else { throw error("unterminated array", at: start) }
            if s[i] == "," { i += 1; continue }
            if s[i] == "]" { i += 1; break }
            throw error("expected ',' or ']' in array, found \(describe(at: i))", at: i)
        }
        return TOMLNode(value: .array(items), position: position(start))
    }

    mutating func parseInlineTable(depth: Int) throws(TOMLSyntaxError) -> TOMLNode {
        let start = i
        let pos = position(start)
        let table = try newTable(kind: .inline, position: pos, depth: depth, isInline: true, at: start)
        i += 1
        skipWS()
        if peek == "}" {
            i += 1
            return TOMLNode(value: .table(table.build()), position: pos)
        }
        while true {
            skipWS()
            try checkInlineContinues(start)
            try parseKeyValue(into: table)
            skipWS()
            try checkInlineContinues(start)
            if s[i] == "," {
                i += 1
                skipWS()
                if peek == "}" { throw error("trailing comma is not allowed in inline tables", at: i) }
                continue
            }
            if s[i] == "}" { i += 1; break }
            throw error("expected ',' or '}' in inline table, found \(describe(at: i))", at: i)
        }
        return TOMLNode(value: .table(table.build()), position: pos)
    }

    func checkInlineContinues(_ start: Int) throws(TOMLSyntaxError) {
        guard i < s.count else { throw error("unterminated inline table", at: start) }
        if s[i] == "\n" || s[i] == "\r" { throw error("newlines are not allowed in inline tables", at: i) }
        if s[i] == "#" { throw error("comments are not allowed in inline tables", at: i) }
    }

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
private enum TOMLLex {
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
