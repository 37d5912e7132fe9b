#if canImport(Glibc)
import Glibc
#endif

// A configuration made of several files, and values taken from outside the files.
//
// - `conf.d/*.toml` next to the main file (for /etc/brume/gateway.toml: /etc/brume/conf.d/) are
//   read in byte order of their names after the main file and merged into it: tables merge key by
//   key, `[[source]]`-style arrays of tables append, any other value set again replaces the earlier
//   one (so `conf.d/50-site.toml` can set `[gateway] id` over the packaged file). Names starting
//   with '.' and anything not ending in `.toml` (`.dpkg-old`, `~` backups) are skipped.
// - `${NAME}` in any string value is the environment variable NAME (`${NAME:-fallback}` when unset
//   or empty), `${credential:NAME}` the systemd credential NAME (the file NAME in
//   $CREDENTIALS_DIRECTORY, one trailing newline removed), `$${` a literal `${`.
//
// Every position keeps the index of the file it came from, so a diagnostic names the right file.

/// The files of one configuration and their parsed, merged document.
struct ConfigDocument {
    /// The main file first, then the includes in the order they were merged.
    var files: [String]
    var root: TOMLTable
}

enum Includes {
    /// The folder of included files for a main configuration file.
    static func directory(for mainFile: String) -> String {
        guard let slash = mainFile.lastIndex(of: "/") else { return "conf.d" }
        return String(mainFile[...slash]) + "conf.d"
    }

    /// `DIR/*.toml` in byte order of their names; [] when DIR does not exist.
    static func files(in dir: String) -> Result<[String], ConfigProblem> {
        guard let d = opendir(dir) else {
            if errno == ENOENT || errno == ENOTDIR { return .success([]) }
            return .failure(ConfigProblem(String(cString: strerror(errno))))
        }
        defer { closedir(d) }
        var names: [String] = []
        while let ent = readdir(d) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix(".") || !name.hasSuffix(".toml") { continue }
            names.append(name)
        }
        return .success(names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }.map { dir + "/" + $0 })
    }

    /// Gives every position in `table` the file index `file`.
    static func renumber(_ table: inout TOMLTable, file: Int) {
        table.position.file = file
        for i in table.entries.indices {
            table.entries[i].keyPosition.file = file
            renumber(&table.entries[i].node, file: file)
        }
    }

    static func renumber(_ node: inout TOMLNode, file: Int) {
        node.position.file = file
        switch node.value {
        case .table(var t):
            renumber(&t, file: file)
            node.value = .table(t)
        case .array(var items):
            for i in items.indices { renumber(&items[i], file: file) }
            node.value = .array(items)
        default: break
        }
    }

    /// Merges `overlay` (a later file) into `base`.
    static func merge(_ base: inout TOMLTable, _ overlay: TOMLTable) {
        for e in overlay.entries {
            guard let i = base.entries.firstIndex(where: { $0.key == e.key }) else {
                base.entries.append(e)
                continue
            }
            switch (base.entries[i].node.value, e.node.value) {
            case (.table(var bt), .table(let ot)) where !bt.isInline && !ot.isInline:
                merge(&bt, ot)
                base.entries[i].node.value = .table(bt)
            case (.array(let ba), .array(let oa)) where isArrayOfTables(ba) && isArrayOfTables(oa):
                base.entries[i].node.value = .array(ba + oa)
            default:
                base.entries[i].node = e.node
                base.entries[i].keyPosition = e.keyPosition
            }
        }
    }

    /// `[[name]]` tables (not an inline array of inline tables).
    static func isArrayOfTables(_ items: [TOMLNode]) -> Bool {
        !items.isEmpty && items.allSatisfy { if case .table(let t) = $0.value { !t.isInline } else { false } }
    }
}

/// `${NAME}`, `${NAME:-fallback}`, `${credential:NAME}` and `$${` in string values.
struct Interpolator {
    let environment: [String: String]
    /// Leave a value whose reference cannot be resolved as written and ignore its problems
    /// (for operator tools that do not have the daemon's environment or credentials).
    var lenient = false
    /// Values of this file are left as written.
    var skipFile: Int? = nil

    /// Every string value in `table` with its references replaced; a reference that cannot be
    /// resolved is an error at the string (the value is left as written).
    func apply(_ table: inout TOMLTable, sink: DiagnosticSink) {
        for i in table.entries.indices { apply(&table.entries[i].node, sink: sink) }
    }

    private func apply(_ node: inout TOMLNode, sink: DiagnosticSink) {
        switch node.value {
        case .string(let s):
            guard s.contains("$"), node.position.file != skipFile else { return }
            switch expand(s) {
            case .success(let v): node.value = .string(v)
            case .failure(let p):
                if lenient { sink.ignored.insert(node.position) } else { sink.error(node.position, p.description) }
            }
        case .table(var t):
            apply(&t, sink: sink)
            node.value = .table(t)
        case .array(var items):
            for i in items.indices { apply(&items[i], sink: sink) }
            node.value = .array(items)
        default: break
        }
    }

    func expand(_ s: String) -> Result<String, ConfigProblem> {
        let u = Array(s.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < u.count {
            if u[i] == "$", i + 2 < u.count, u[i + 1] == "$", u[i + 2] == "{" {
                out.append("$"); out.append("{"); i += 3; continue
            }
            guard u[i] == "$", i + 1 < u.count, u[i + 1] == "{" else { out.append(u[i]); i += 1; continue }
            guard let close = u[(i + 2)...].firstIndex(of: "}") else {
                return .failure(ConfigProblem("\"${\" without a closing \"}\" (write \"$${\" for a literal \"${\")"))
            }
            let ref = String(String.UnicodeScalarView(u[(i + 2)..<close]))
            switch resolve(ref) {
            case .success(let v): out.append(contentsOf: v.unicodeScalars)
            case .failure(let p): return .failure(p)
            }
            i = close + 1
        }
        return .success(String(out))
    }

    private func resolve(_ ref: String) -> Result<String, ConfigProblem> {
        if ref.hasPrefix("credential:") {
            let name = String(ref.dropFirst("credential:".count))
            guard Interpolator.isCredentialName(name) else {
                return .failure(ConfigProblem("\"${\(ref)}\": a credential name uses letters, digits, '.', '_' and '-'"))
            }
            guard let dir = environment["CREDENTIALS_DIRECTORY"], !dir.isEmpty else {
                return .failure(ConfigProblem("\"${credential:\(name)}\": no systemd credentials here ($CREDENTIALS_DIRECTORY is not set: give the unit LoadCredential=\(name):/path or SetCredentialEncrypted=, see docs/configuration.md)"))
            }
            switch ConfigLoader.readFile(dir + "/" + name) {
            case .failure(let p): return .failure(ConfigProblem("\"${credential:\(name)}\": cannot read \(dir)/\(name): \(p)"))
            case .success(var text):
                if text.hasSuffix("\r\n") { text.removeLast() } else if text.hasSuffix("\n") { text.removeLast() }
                return .success(text)
            }
        }
        var name = ref
        var fallback: String?
        let scalars = Array(ref.unicodeScalars)
        if let k = scalars.indices.first(where: { scalars[$0] == ":" && $0 + 1 < scalars.count && scalars[$0 + 1] == "-" }) {
            name = String(String.UnicodeScalarView(scalars[..<k]))
            fallback = String(String.UnicodeScalarView(scalars[(k + 2)...]))
        }
        guard Interpolator.isVariableName(name) else {
            return .failure(ConfigProblem("\"${\(ref)}\": expected ${NAME}, ${NAME:-fallback} or ${credential:NAME} (NAME: letters, digits and '_', not starting with a digit)"))
        }
        if let v = environment[name], !(v.isEmpty && fallback != nil) { return .success(v) }
        if let fallback { return .success(fallback) }
        return .failure(ConfigProblem("environment variable \(name) is not set (\"${\(name)}\"; under systemd: Environment= or EnvironmentFile= in a drop-in, see docs/configuration.md; or write \"${\(name):-fallback}\")"))
    }

    static func isVariableName(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, !("0"..."9").contains(f) else { return false }
        return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    static func isCredentialName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 255 && s != "." && s != ".." && s.unicodeScalars.allSatisfy(isNameScalar)
    }

    /// The process environment.
    static func processEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let kv = String(cString: entry)
            if let eq = kv.firstIndex(of: "=") { env[String(kv[..<eq])] = String(kv[kv.index(after: eq)...]) }
            p += 1
        }
        return env
    }
}
