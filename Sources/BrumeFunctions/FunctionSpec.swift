import BrumeCore
import Crypto

/// One `[[function]]` as the configuration declares it, with its module's bytes.
public struct FunctionSpec: Sendable, Hashable {
    /// Where it runs.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// Every reading its `match` globs select, ahead of the `[[rule]]`s (map, filter, derive).
        case reading
        /// The contents of each closed window of a stream its globs select.
        case window
        /// The payloads of the sources that name it (`decoder = "NAME"`): bytes in, readings out.
        case decoder

        /// The export the module must have for this kind.
        public var entry: String { "brume_\(self == .decoder ? "decode" : rawValue)" }
    }
    /// What happens to the input of a failed call.
    public enum OnError: String, Sendable, Hashable, CaseIterable {
        /// Dropped (counted).
        case drop
        /// Goes on unchanged (a reading; a window emits nothing; a payload is dropped).
        case pass
        /// Written to `DATA_DIR/dead-letter/NAME.jsonl` (bounded), which `brume fn test --input` reads.
        case deadLetter = "dead_letter"
    }

    public var name: String
    /// The module's path as resolved (for messages).
    public var path: String
    public var bytes: [UInt8]
    public var kind: Kind
    /// Budget of one call, in fuel (about one unit per WebAssembly instruction).
    public var fuel: UInt64
    /// Largest linear memory of the instance, in bytes.
    public var memoryBytes: Int
    public var onError: OnError
    /// Consecutive failed calls after which the function is disabled until the next reload.
    public var disableAfter: Int

    public static let defaultFuel: UInt64 = 1_000_000
    public static let defaultMemoryBytes = 1 << 20
    public static let maxMemoryBytes = 256 << 20
    public static let defaultDisableAfter = 100

    public init(name: String, path: String, bytes: [UInt8], kind: Kind, fuel: UInt64 = FunctionSpec.defaultFuel,
                memoryBytes: Int = FunctionSpec.defaultMemoryBytes, onError: OnError = .deadLetter,
                disableAfter: Int = FunctionSpec.defaultDisableAfter) {
        self.name = name
        self.path = path
        self.bytes = bytes
        self.kind = kind
        self.fuel = fuel
        self.memoryBytes = memoryBytes
        self.onError = onError
        self.disableAfter = disableAfter
    }

    /// SHA-256 of the module, hex (status, logs: which build is running).
    public var sha256: String {
        let digits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        for b in SHA256.hash(data: bytes) {
            hex.append(digits[Int(b >> 4)])
            hex.append(digits[Int(b & 15)])
        }
        return String(decoding: hex, as: UTF8.self)
    }
}

/// Why a module cannot run as a Brume function (a `brume check` error at its `module` key).
public struct FunctionLoadError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The counters of one function (status, /metrics).
public struct FunctionStats: Sendable, Hashable {
    /// Why a call failed (a stable label: `brume_function_failures_total{reason}`).
    public enum Failure: String, Sendable, Hashable, CaseIterable {
        /// The module trapped: out-of-bounds access, unreachable, division by zero, stack overflow...
        case trap
        /// The call used up its fuel (an endless or too long loop).
        case outOfFuel = "out_of_fuel"
        /// It emitted a record Brume refuses (bad name, non-finite number, too many readings...).
        case badOutput = "bad_output"
        /// It returned a negative code of its own.
        case errorCode = "error_code"
        /// The input did not fit the module's exchange buffer.
        case tooLarge = "too_large"
        /// Not called: disabled after `disable_after` consecutive failures.
        case disabled
    }
    public var calls: Int64 = 0
    public var failures: [Failure: Int64] = [:]
    public var outputs: Int64 = 0
    public var deadLettered: Int64 = 0
    /// Fresh instances made after a trap (the guest's state is gone with it).
    public var restarts: Int64 = 0
    public var fuelMax: UInt64 = 0
    public var fuelTotal: UInt64 = 0
    public var logLines: Int64 = 0
    public var logSuppressed: Int64 = 0
    public var consecutiveFailures = 0
    public var disabled = false
    public var lastError: String?
    public var failed: Int64 { failures.values.reduce(0, +) }
    public init() {}
}
