import BrumeCore
import BrumeFunctions
import BrumeRules

#if canImport(Glibc)
import Glibc
#endif

/// The [[function]]s (docs/functions.md): user logic in WebAssembly.
public struct FunctionsConfig: Sendable {
    public var specs: [FunctionSpec] = []
    public init() {}
    public func spec(named name: String) -> FunctionSpec? { specs.first { $0.name == name } }
}

extension Builder {
    /// Reads every [[function]], loads and checks its module (an invalid module is an error at its
    /// `module` key, with the file named). Returns the specs and the rule steps of the `reading`
    /// and `window` functions, in declared order.
    func buildFunctions(top: TableReader) -> (FunctionsConfig, [RuleSpec]) {
        var cfg = FunctionsConfig()
        var steps: [RuleSpec] = []
        var seen: [String: SourcePosition] = [:]
        for (t, r) in tables(top, "function") {
            defer { r.finish() }
            let name = r.string("name", required: true)
            if let name {
                if let why = FunctionABI.nameProblem(name) ?? (name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) ? nil : "\"\(name)\" may hold only letters, digits, \"_\" and \"-\"") {
                    r.error(r.position(of: "name"), "\"name\" \(why)")
                } else if let first = seen[name] {
                    r.error(r.position(of: "name"), "duplicate function name \"\(name)\" (first defined at \(sink.place(first)))")
                }
                seen[name] = r.position(of: "name")
            }
            let kind = r.oneOf("run", FunctionSpec.Kind.allCases.map(\.rawValue)).flatMap(FunctionSpec.Kind.init(rawValue:))
            if t["run"] == nil { r.error(t.position, "missing required key \"run\" (\"reading\", \"window\" or \"decoder\")") }
            let modulePath = r.string("module", required: true)
            let fuel = r.int("fuel", range: 1_000...1_000_000_000)
            let memory = r.size("memory", min: 65_536)
            if let memory, memory > FunctionSpec.maxMemoryBytes {
                r.error(r.position(of: "memory"), "\"memory\" may be at most \(FunctionSpec.maxMemoryBytes >> 20) MiB")
            }
            let onError = r.oneOf("on_error", FunctionSpec.OnError.allCases.map(\.rawValue)).flatMap(FunctionSpec.OnError.init(rawValue:))
            let disableAfter = r.int("disable_after", range: 1...1_000_000)
            var match: [String] = []
            if kind == .decoder {
                for k in ["match", "window", "keep_raw", "late_tolerance"] where t[k] != nil {
                    _ = r.node(k)
                    r.error(r.position(of: k), "\"\(k)\" is for run = \"reading\" or \"window\": a decoder runs on the payloads of the sources that name it (payload = { function = \"\(name ?? "NAME")\" })")
                }
            } else if let m = r.stringArray("match") {
                match = m.map(\.0)
            } else if kind != nil {
                r.error(t.position, "missing required key \"match\" (e.g. match = \"pump-*/flow\")")
            }
            var window: WindowSpec?
            if kind == .reading, t["window"] != nil {
                _ = r.node("window")
                r.error(r.position(of: "window"), "a window needs run = \"window\" (a reading function sees one reading at a time)")
            } else if kind == .window {
                window = windowSpec(r)
                if t["window"] == nil { r.error(t.position, "run = \"window\" needs a window, e.g. window = { kind = \"tumbling\", size = \"5m\" }") }
            }
            let keepRaw = kind == .window ? (r.bool("keep_raw") ?? true) : nil
            if kind == .reading, t["keep_raw"] != nil { r.error(r.position(of: "keep_raw"), "\"keep_raw\" is for run = \"window\"") }
            if kind == .reading, t["late_tolerance"] != nil { _ = r.node("late_tolerance"); r.error(r.position(of: "late_tolerance"), "\"late_tolerance\" is for run = \"window\"") }
            let tolerance = kind == .window ? (r.duration("late_tolerance") ?? 0) : 0
            guard let name, let kind, let modulePath else { continue }
            let path = modulePath.hasPrefix("/") ? modulePath : baseDirectory + "/" + modulePath
            var spec = FunctionSpec(name: name, path: path, bytes: [], kind: kind)
            if let fuel { spec.fuel = UInt64(fuel) }
            if let memory, memory <= FunctionSpec.maxMemoryBytes { spec.memoryBytes = Int(memory) }
            if let onError { spec.onError = onError }
            if let disableAfter { spec.disableAfter = Int(disableAfter) }
            guard loadModules else {
                // An operator tool (status, tail, buffer): the functions are not run here.
                cfg.specs.append(spec)
                if kind != .decoder {
                    steps.append(RuleSpec(name: nil, match: match, span: span(t.position), window: window, keepRaw: keepRaw ?? false,
                                          lateToleranceMillis: tolerance, onError: spec.onError == .pass ? .pass : .drop,
                                          function: FunctionRef(name: name, mode: kind == .window ? .window : .reading)))
                }
                continue
            }
            switch readModule(path) {
            case .failure(let why):
                r.error(r.position(of: "module"), "module \"\(modulePath)\": \(why.description)")
                continue
            case .success(let bytes):
                spec.bytes = bytes
            }
            do throws(FunctionLoadError) {
                _ = try WasmFunction(spec)   // parsed, validated, instantiated, brume_init run: then dropped
            } catch {
                r.error(r.position(of: "module"), "module \"\(modulePath)\": \(error.message)")
                continue
            }
            cfg.specs.append(spec)
            if kind != .decoder {
                steps.append(RuleSpec(name: nil, match: match, span: span(t.position), window: window, keepRaw: keepRaw ?? false,
                                      lateToleranceMillis: tolerance, onError: spec.onError == .pass ? .pass : .drop,
                                      function: FunctionRef(name: name, mode: kind == .window ? .window : .reading)))
            }
        }
        return (cfg, steps)
    }

    func readModule(_ path: String) -> Result<[UInt8], ConfigProblem> {
        var st = stat()
        guard stat(path, &st) == 0 else { return .failure(ConfigProblem(String(cString: strerror(errno)))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .failure(ConfigProblem("not a regular file")) }
        guard let f = fopen(path, "rb") else { return .failure(ConfigProblem(String(cString: strerror(errno)))) }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n > 0 { bytes.append(contentsOf: buf[0..<n]) }
            if n < buf.count {
                if ferror(f) != 0 { return .failure(ConfigProblem(String(cString: strerror(errno)))) }
                break
            }
            if bytes.count > 16 << 20 { return .failure(ConfigProblem("file is larger than 16 MiB")) }
        }
        return .success(bytes)
    }

    /// Every source whose payload names a function (`payload = { function = "NAME" }`) must name a
    /// declared [[function]] with run = "decoder".
    func checkDecoders(root: TOMLTable, functions: FunctionsConfig) {
        guard case .array(let items)? = root["source"]?.value else { return }
        for item in items {
            guard case .table(let st) = item.value, case .table(let p)? = st["payload"]?.value,
                  let node = p["function"], case .string(let name) = node.value else { continue }
            var label = "[[source]]"
            if case .string(let n)? = st["name"]?.value { label = "[[source]] \"\(n)\"" }
            guard let spec = functions.spec(named: name) else {
                var msg = "\(label) payload: \"function\" names no declared [[function]]: \"\(name)\""
                if let sug = suggestion(for: name, among: functions.specs.map(\.name)) { msg += " (did you mean \"\(sug)\"?)" }
                sink.error(node.position, msg)
                continue
            }
            if spec.kind != .decoder {
                sink.error(node.position, "\(label) payload: function \"\(name)\" has run = \"\(spec.kind.rawValue)\"; a payload decoder needs run = \"decoder\"")
            }
        }
    }
}
