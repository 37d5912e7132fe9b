import BrumeCore

// The JSON Schema of gateway.toml (`brume schema`, docs/gateway.schema.json), for editor
// completion and checking (taplo / Even Better TOML, VS Code, Neovim).
//
// It is generated from the loader itself, not written by hand: probe configurations (the
// repository's gateway.toml and the valid golden cases: every source kind, uplink kind and
// format, actuator path, window...) go through the same `Builder` that `brume check` runs, with
// a recorder that notes every key each table reader asks for and how (a string, a duration, one
// of these words, an integer in this range...). A key the loader accepts is therefore in the
// schema, and a key it does not know is not. Descriptions come from the key tables of
// docs/configuration.md. `ConfigSchemaTests` regenerates it, fails when the committed
// docs/gateway.schema.json is stale (BRUME_UPDATE_SCHEMA=1 rewrites it), and validates every
// valid example against it with an independent validator (Python's jsonschema).

/// Notes which keys each table's reader asked for.
final class SchemaRecorder {
    enum Access: Equatable {
        case any, string, requiredString, bool, number, duration, strings
        case integer(ClosedRange<Int64>)
        case size(min: Int64)
        case oneOf([String])
    }
    /// Tables by position; the root (whose position 1:1 a `[table]` on the first line shares) is nil.
    private(set) var reads: [SourcePosition?: [(String, Access)]] = [:]
    private(set) var openTables: Set<SourcePosition?> = []

    func record(table: SourcePosition?, key: String, _ access: Access) {
        reads[table, default: []].append((key, access))
    }
    func open(table: SourcePosition?) { openTables.insert(table) }
}

public enum ConfigSchema {
    /// What is known of one key at one path, over every probe.
    struct Key {
        var accesses: [SchemaRecorder.Access] = []
        /// TOML types seen for it in the probes ("string", "table", "array" ...).
        var seen: Set<String> = []
        /// Tables at its path where it was a required key.
        var requiredIn = 0
    }

    /// Tables by path ("", "uplink.*", "source[]", "source[].device[]", "uplink.*.tls").
    struct Model {
        var keys: [String: [String: Key]] = [:]
        var order: [String: [String]] = [:]
        var open: Set<String> = []
        var paths: Set<String> = []
        /// Tables seen at each path, over every probe.
        var instances: [String: Int] = [:]

        mutating func add(path: String, key: String, _ update: (inout Key) -> Void) {
            if keys[path]?[key] == nil { order[path, default: []].append(key) }
            update(&keys[path, default: [:]][key, default: Key()])
        }
    }

    /// The schema as pretty-printed JSON. `probes`: valid configurations (name, text) that
    /// together use every kind; `docs`: docs/configuration.md, for descriptions.
    /// `directory`: the folder a probe's relative paths (function modules) start from.
    public static func generate(probes: [(String, String)], docs: String? = nil,
                                directory: (String) -> String = { _ in "." }) throws(ConfigProblem) -> String {
        var model = Model()
        for (name, probe) in probes {
            let root: TOMLTable
            do { root = try TOMLParser.parse(probe) } catch { throw ConfigProblem("\(name): \(error)") }
            let sink = DiagnosticSink(file: name)
            let recorder = SchemaRecorder()
            sink.recorder = recorder
            _ = Builder(sink: sink, baseDirectory: directory(name)).build(root)
            if sink.hasErrors { throw ConfigProblem("\(name) is not a valid configuration: \(sink.items.filter { $0.severity == .error }.map(\.description))") }
            var paths: [SourcePosition?: String] = [:]
            walk(root, path: "", into: &paths, model: &model)
            // In the order of the tables in the file (the dictionary's own order is random per run).
            for (pos, reads) in recorder.reads.sorted(by: { a, b in a.key.map { p in b.key.map { p < $0 } ?? false } ?? (b.key != nil) }) {
                guard let path = paths[pos] else { continue }
                model.paths.insert(path)
                model.instances[path, default: 0] += 1
                var requiredHere = Set<String>()
                for (key, access) in reads {
                    model.add(path: path, key: key) { k in if !k.accesses.contains(access) { k.accesses.append(access) } }
                    if access == .requiredString { requiredHere.insert(key) }
                }
                for key in requiredHere { model.keys[path]?[key]?.requiredIn += 1 }
            }
            for pos in recorder.openTables { if let p = paths[pos] { model.open.insert(p) } }
        }
        let descriptions = docs.map(DocsTables.parse) ?? [:]
        let root = object(at: "", model, descriptions)
        var top: [JSONMember] = [
            JSONMember(key: "$schema", value: .string("http://json-schema.org/draft-07/schema#")),
            JSONMember(key: "$id", value: .string("https://brume.invalid/gateway.schema.json")),
            JSONMember(key: "title", value: .string("Brume gateway.toml")),
            JSONMember(key: "description", value: .string("Generated from the configuration loader (Tests/BrumeConfigTests/ConfigSchemaTests.swift); see docs/configuration.md. Editors: put `#:schema /usr/share/brume/gateway.schema.json` on the first line.")),
        ]
        if case .object(let members) = root { top += members }
        return pretty(.object(top))
    }

    /// Paths of every table in a probe, by the position the recorder knows it by.
    static func walk(_ t: TOMLTable, path: String, into paths: inout [SourcePosition?: String], model: inout Model) {
        paths[path.isEmpty ? nil : t.position] = path
        for e in t.entries {
            let child = path.isEmpty ? e.key : "\(path).\(e.key)"
            model.add(path: path, key: e.key) { $0.seen.insert(e.node.typeName) }
            switch e.node.value {
            case .table(let sub):
                // The names of [uplink.NAME] are the user's.
                if path.isEmpty && e.key == "uplink" {
                    for u in sub.entries {
                        if case .table(let ut) = u.node.value { walk(ut, path: "uplink.*", into: &paths, model: &model) }
                    }
                    paths[sub.position] = "uplink"
                } else {
                    walk(sub, path: child, into: &paths, model: &model)
                }
            case .array(let items):
                for it in items {
                    if case .table(let sub) = it.value {
                        model.add(path: path, key: e.key) { $0.seen.insert("array-of-tables") }
                        walk(sub, path: child + "[]", into: &paths, model: &model)
                    }
                }
            default: break
            }
        }
    }

    static func object(at path: String, _ m: Model, _ docs: [String: [String: String]]) -> JSONValue {
        var props: [JSONMember] = []
        var required: [JSONValue] = []
        for key in m.order[path] ?? [] {
            guard let k = m.keys[path]?[key], !k.accesses.isEmpty || path == "" && key == "uplink" else { continue }
            let child = path.isEmpty ? key : "\(path).\(key)"
            var schema = keySchema(k, child: child, m, docs)
            if let d = docs[path]?[key], case .object(var members) = schema {
                members.insert(JSONMember(key: "description", value: .string(d)), at: 0)
                schema = .object(members)
            }
            props.append(JSONMember(key: key, value: schema))
            if k.requiredIn > 0 && k.requiredIn == m.instances[path] { required.append(.string(key)) }
        }
        if path == "" {
            // [uplink.NAME]: a table of named uplinks.
            let uplink = JSONValue.object([
                JSONMember(key: "type", value: .string("object")),
                JSONMember(key: "additionalProperties", value: object(at: "uplink.*", m, docs)),
            ])
            if let i = props.firstIndex(where: { $0.key == "uplink" }) { props[i].value = uplink } else { props.append(JSONMember(key: "uplink", value: uplink)) }
        }
        var members: [JSONMember] = [JSONMember(key: "type", value: .string("object"))]
        members.append(JSONMember(key: "properties", value: .object(props)))
        if !required.isEmpty { members.append(JSONMember(key: "required", value: .array(required))) }
        members.append(JSONMember(key: "additionalProperties", value: .bool(m.open.contains(path))))
        return .object(members)
    }

    static func keySchema(_ k: Key, child: String, _ m: Model, _ docs: [String: [String: String]]) -> JSONValue {
        var alternatives: [JSONValue] = []
        func add(_ v: JSONValue) { if !alternatives.contains(v) { alternatives.append(v) } }
        func t(_ type: String, _ extra: [JSONMember] = []) -> JSONValue { .object([JSONMember(key: "type", value: .string(type))] + extra) }
        var choices: [String] = []
        for a in k.accesses {
            switch a {
            case .string, .requiredString: add(t("string"))
            case .bool: add(t("boolean"))
            case .number: add(t("number"))
            case .integer(let r): add(t("integer", [JSONMember(key: "minimum", value: .number(Double(r.lowerBound))), JSONMember(key: "maximum", value: .number(Double(r.upperBound)))]))
            case .duration: add(t("string", [JSONMember(key: "pattern", value: .string("^([0-9]+(ms|s|m|h|d))+$"))]))
            case .size(let min):
                add(t("integer", [JSONMember(key: "minimum", value: .number(Double(min)))]))
                add(t("string", [JSONMember(key: "pattern", value: .string("^ *[0-9]+ *(B|kB|KB|MB|GB|KiB|MiB|GiB)? *$"))]))
            case .strings:
                add(t("string"))
                add(t("array", [JSONMember(key: "items", value: t("string"))]))
            case .oneOf(let c): for x in c where !choices.contains(x) { choices.append(x) }
            case .any:
                // Read raw: its shape is what the probes gave it, where a typed read (of the
                // same key in another kind) does not say more.
                var covered = Set<String>()
                for a in k.accesses {
                    switch a {
                    case .string, .requiredString, .duration, .oneOf: covered.insert("string")
                    case .strings: covered.formUnion(["string", "array"])
                    case .size: covered.formUnion(["string", "integer"])
                    case .integer: covered.insert("integer")
                    case .number: covered.formUnion(["integer", "float"])
                    case .bool: covered.insert("boolean")
                    case .any: break
                    }
                }
                for s in k.seen.sorted() where !covered.contains(s) {
                    switch s {
                    case "string": add(t("string"))
                    case "integer": add(t("integer"))
                    case "float": add(t("number"))
                    case "boolean": add(t("boolean"))
                    case "table": if m.paths.contains(child) || m.keys[child] != nil { add(object(at: child, m, docs)) } else { add(t("object")) }
                    case "array-of-tables": add(t("array", [JSONMember(key: "items", value: object(at: child + "[]", m, docs))]))
                    case "array": if !k.seen.contains("array-of-tables") { add(t("array")) }
                    default: break
                    }
                }
            }
        }
        if !choices.isEmpty { add(.object([JSONMember(key: "enum", value: .array(choices.map { .string($0) }))])) }
        // A sub-table read with `subtable` (recorded as `any` seen as a table) is covered above.
        if alternatives.isEmpty { return .object([]) }
        if alternatives.count == 1 { return alternatives[0] }
        return .object([JSONMember(key: "anyOf", value: .array(alternatives))])
    }

    /// Two-space indented JSON, members in order.
    static func pretty(_ v: JSONValue, indent: String = "") -> String {
        let inner = indent + "  "
        switch v {
        case .object(let members):
            if members.isEmpty { return "{}" }
            return "{\n" + members.map { "\(inner)\(JSONValue.string($0.key).description): \(pretty($0.value, indent: inner))" }.joined(separator: ",\n") + "\n\(indent)}"
        case .array(let items):
            if items.isEmpty { return "[]" }
            if items.allSatisfy({ if case .string = $0 { true } else { false } }) {
                return "[" + items.map(\.description).joined(separator: ", ") + "]"
            }
            return "[\n" + items.map { "\(inner)\(pretty($0, indent: inner))" }.joined(separator: ",\n") + "\n\(indent)]"
        default:
            return v.description
        }
    }
}

/// The key tables of docs/configuration.md: `| \`key\` | ... | description |` rows under a heading
/// naming the table (`## \`[buffer]\``, `### Devices: \`[[source.device]]\``).
enum DocsTables {
    static func parse(_ text: String) -> [String: [String: String]] {
        var out: [String: [String: String]] = [:]
        var path: String?
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if line.hasPrefix("#") {
                if let p = tablePath(line) { path = p } else if line.hasPrefix("## ") { path = nil }
                continue
            }
            guard let path, line.hasPrefix("| `") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { trim(String($0)) }
            guard cells.count >= 4, let key = cells[1].split(separator: "`").first.map(String.init), !key.contains(" ") else { continue }
            let desc = cells[cells.count - 2]
            if out[path]?[key] == nil, !desc.isEmpty { out[path, default: [:]][key] = desc }
        }
        return out
    }

    static func trim(_ s: String) -> String {
        var t = Substring(s)
        while t.first == " " { t = t.dropFirst() }
        while t.last == " " { t = t.dropLast() }
        return String(t)
    }

    /// "## `[uplink.NAME]`" → "uplink.*"; "### Devices: `[[source.device]]`" → "source[].device[]".
    static func tablePath(_ heading: String) -> String? {
        let parts = heading.split(separator: "`")
        guard parts.count >= 2 else { return nil }
        var name = String(parts[1])
        guard name.hasPrefix("[") else { return nil }
        let array = name.hasPrefix("[[")
        while name.hasPrefix("[") { name.removeFirst() }
        while name.hasSuffix("]") { name.removeLast() }
        var segs = name.split(separator: ".").map(String.init)
        if segs.first == "uplink", segs.count >= 2 { segs[1] = "*" }
        if segs.first == "source", segs.count >= 1 { segs[0] = "source[]" }
        if array, segs.count > 1 { segs[segs.count - 1] += "[]" } else if array { segs[0] = segs[0].hasSuffix("[]") ? segs[0] : segs[0] + "[]" }
        return segs.joined(separator: ".")
    }
}
