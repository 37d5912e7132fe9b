import BrumeCore
import BrumeRules
import Logging
import Synchronization

/// The running functions of a gateway, by name. A reload prepares the new set first (a module
/// that cannot load refuses the reload, nothing changes), reusing the instance of every function
/// whose spec (module bytes, limits, policy) is unchanged — its guest state and counters go on —
/// then installs it. Sources hold `decoder(named:)`, which always calls the installed one.
public final class FunctionDirectory: Sendable {
    private let current = Mutex<[String: WasmFunction]>([:])
    private let logger: Logger
    private let deadLetterDirectory: String?

    public init(logger: Logger, deadLetterDirectory: String?) {
        self.logger = logger
        self.deadLetterDirectory = deadLetterDirectory
    }

    /// Instances for `specs`; unchanged ones are the running instances.
    public func prepare(_ specs: [FunctionSpec]) throws(FunctionLoadError) -> [String: WasmFunction] {
        let running = current.withLock { $0 }
        var out: [String: WasmFunction] = [:]
        for spec in specs {
            if let f = running[spec.name], f.spec == spec { out[spec.name] = f; continue }
            do throws(FunctionLoadError) {
                out[spec.name] = try WasmFunction(spec, logger: logger, deadLetterDirectory: deadLetterDirectory)
            } catch {
                throw FunctionLoadError("function \"\(spec.name)\" (\(spec.path)): \(error.message)")
            }
        }
        return out
    }

    public func install(_ functions: [String: WasmFunction]) {
        let old = current.withLock { c in
            let o = c
            c = functions
            return o
        }
        for (name, f) in functions where old[name] === f { f.reenable() }
        for (name, f) in functions where old[name] !== f {
            logger.notice("function loaded", metadata: ["function": "\(name)", "run": "\(f.spec.kind.rawValue)", "sha256": "\(f.sha256.prefix(16))",
                                                       "fuel": "\(f.spec.fuel)", "memory": "\(f.spec.memoryBytes)"])
        }
    }

    public func function(named name: String) -> WasmFunction? { current.withLock { $0[name] } }

    /// The installed functions, by name.
    public var all: [WasmFunction] { current.withLock { $0.values.sorted { $0.spec.name < $1.spec.name } } }

    /// A decoder that calls whichever instance of `name` is installed.
    public func decoder(named name: String) -> any PayloadFunction { DecoderHandle(name: name, directory: self) }

    /// The rule functions of a prepared set, for a `RulesEngine`.
    public static func ruleFunctions(_ set: [String: WasmFunction]) -> [String: any RuleFunction] {
        set.filter { $0.value.spec.kind != .decoder }.mapValues { $0 as any RuleFunction }
    }
}

final class DecoderHandle: PayloadFunction {
    let name: String
    let directory: FunctionDirectory
    init(name: String, directory: FunctionDirectory) {
        self.name = name
        self.directory = directory
    }

    func decode(_ payload: UnsafeRawBufferPointer, device: String, metric: String, receivedAt: Int64,
                into out: inout [Reading]) throws(PayloadError) {
        guard let f = directory.function(named: name) else { throw PayloadError(.functionFailed, "decoder function \"\(name)\" is not loaded") }
        try f.decode(payload, device: device, metric: metric, receivedAt: receivedAt, into: &out)
    }
}
