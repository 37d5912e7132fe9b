import ArgumentParser
import BrumeConfig
import BrumeCore
import BrumeFunctions
import BrumeRuntime
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `brume fn`: WebAssembly functions (docs/functions.md).
struct Fn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fn",
        abstract: "User functions in WebAssembly: try one on sample inputs.",
        subcommands: [FnTest.self])
}

struct FnTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Run a function on sample inputs as the gateway would (same sandbox, fuel and memory cap).",
        discussion: """
            Each input line is a reading, {"device":"pump-1","metric":"flow","time":1764000000000,"value":36}, or for a \
            decoder {"device":"tank-7","payload_base64":"..."} (or payload_hex, or payload as text); a dead-letter file \
            (DATA_DIR/dead-letter/NAME.jsonl) is such input. What would go on is printed on standard output, one JSON \
            line per reading; failures and a summary on standard error.
            Exit status: 0 every call succeeded, 1 a call failed or a line was not an input, 2 the module or the input \
            cannot be read or loaded.
            """)

    @Argument(help: "The module (.wasm).")
    var module: String

    @Option(help: "The input file (JSON lines; - for standard input).")
    var input: String

    @Option(help: "What the module is: reading, window or decoder (default: from its exports).")
    var run: String?

    @Option(help: "Fuel per call (as [[function]] fuel).")
    var fuel: UInt64 = FunctionSpec.defaultFuel

    @Option(help: "Memory cap in bytes (as [[function]] memory).")
    var memory: Int = FunctionSpec.defaultMemoryBytes

    @Option(help: "Window functions: readings per window (default: all consecutive readings of a stream).")
    var window: Int?

    func run() async throws {
        let bytes: [UInt8]
        switch readAll(module) {
        case .success(let b): bytes = b
        case .failure(let why):
            printErr("\(module): cannot read: \(why)")
            throw ExitCode(2)
        }
        let kind: FunctionSpec.Kind
        if let run {
            guard let k = FunctionSpec.Kind(rawValue: run) else { throw ValidationError("--run must be reading, window or decoder") }
            kind = k
        } else if let k = FunctionTestRun.kind(of: bytes) {
            kind = k
        } else {
            printErr("\(module): say what it is with --run reading|window|decoder (it exports none or several entry points)")
            throw ExitCode(2)
        }
        guard memory >= 65_536, memory <= FunctionSpec.maxMemoryBytes, fuel >= 1 else { throw ValidationError("--memory 64 KiB to 256 MiB, --fuel at least 1") }
        let text: String
        switch readAll(input == "-" ? "/dev/stdin" : input) {
        case .success(let b): text = String(decoding: b, as: UTF8.self)
        case .failure(let why):
            printErr("\(input): cannot read: \(why)")
            throw ExitCode(2)
        }
        LoggingSystem.bootstrap { label in LogfmtHandler(label: label, level: .info) }
        let spec = FunctionSpec(name: baseName(module), path: module, bytes: bytes, kind: kind, fuel: fuel, memoryBytes: memory, onError: .drop,
                                disableAfter: Int.max)
        let runner: FunctionTestRun
        do throws(FunctionLoadError) {
            runner = try FunctionTestRun(spec: spec, windowSize: window, now: wallClockMillis(), logger: Logger(label: "brume.fn"))
        } catch {
            printErr("\(module): \(error.message)")
            throw ExitCode(2)
        }
        let s = runner.run(text, emit: { printLine($0) }, problem: { printErr("\(input): \($0)") })
        let failed = s.failures.values.reduce(0, +)
        var summary = "\(module) (\(kind.rawValue), sha256 \(spec.sha256.prefix(16))): \(s.inputs) input\(s.inputs == 1 ? "" : "s"), \(s.calls) call\(s.calls == 1 ? "" : "s"), \(s.outputs) output\(s.outputs == 1 ? "" : "s"), \(failed) failed"
        if !s.failures.isEmpty { summary += " (" + s.failures.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")" }
        if s.badLines > 0 { summary += ", \(s.badLines) line\(s.badLines == 1 ? "" : "s") not an input" }
        summary += "; most fuel in one call \(s.fuelMax) of \(fuel)"
        printErr(summary)
        if failed > 0 || s.badLines > 0 { throw ExitCode(1) }
    }

    func baseName(_ path: String) -> String {
        var name = String(path.split(separator: "/").last ?? "fn")
        if name.hasSuffix(".wasm") { name.removeLast(5) }
        let cleaned = name.map { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" ? $0 : "_" }
        return cleaned.isEmpty ? "fn" : String(cleaned)
    }

    struct ReadError: Error, CustomStringConvertible {
        var description: String
    }

    func readAll(_ path: String) -> Result<[UInt8], ReadError> {
        guard let f = fopen(path, "rb") else { return .failure(ReadError(description: String(cString: strerror(errno)))) }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n > 0 { bytes.append(contentsOf: buf[0..<n]) }
            if n < buf.count { break }
            if bytes.count > 64 << 20 { return .failure(ReadError(description: "larger than 64 MiB")) }
        }
        return .success(bytes)
    }
}
