// A TOML 1.0 parser that keeps the source position of every key, value and table header.
//
// Pure Swift, standard library only. Parsing is a single forward pass over the Unicode
// scalars of the document; recursion only happens for nested arrays / inline tables and is
// bounded by `TOMLParser.maximumDepth`, so hostile input cannot exhaust the stack.

// MARK: - Builder tree (internal, mutable while parsing)

final class TOMLTableBuilder {
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

final class TOMLTableArrayBuilder {
    var elements: [TOMLTableBuilder]
    let position: SourcePosition
    init(first: TOMLTableBuilder, position: SourcePosition) {
        self.elements = [first]
        self.position = position
    }
}

enum TOMLSlot {
    /// A finished value: scalar, static array or inline table (all closed).
    case value(TOMLNode)
    case table(TOMLTableBuilder)
    case tableArray(TOMLTableArrayBuilder)
}

struct TOMLKeySegment {
    var name: String
    var index: Int
}

// MARK: - Parser

struct TOMLDocumentParser {
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
}
