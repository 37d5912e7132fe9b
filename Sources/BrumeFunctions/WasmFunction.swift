import BrumeCore
import BrumeRules
import Logging
import Synchronization
import WasmKit

/// A user function in WebAssembly, sandboxed: a fuel budget per call, a memory cap per instance,
/// only the ABI's two imports. A failed call is counted by reason, logged at a bounded rate and
/// its input handled by the function's `on_error` policy; after `disable_after` consecutive
/// failures the function is disabled (status says so) until the next reload. The gateway never
/// stops for a function. Calls are serialized (one instance, one lock).
public final class WasmFunction: RuleFunction, PayloadFunction, Sendable {
    public let spec: FunctionSpec
    public let sha256: String
    private let module: Module
    private let sandbox: Mutex<Sandbox?>
    private let stats: StatsBox
    private let logger: Logger
    private let deadLetters: DeadLetterFile?
    private let failureLog = LogRateLimiter(burst: 3, interval: .seconds(60))
    private let logFailures: Bool
    /// When the last traps happened (monotonic ns): `disable_after` of them within a minute
    /// disable the function even when successes come between (each trap costs a new instance).
    private let trapTimes = Mutex<[UInt64]>([])
    private let guestLogLimit = LogRateLimiter(burst: 20, interval: .seconds(5))
    /// `brume_log`: through the gateway's log, rate-limited (asked before a line is decoded).
    private let guestLog: @Sendable (Int32, String) -> Void
    private let admitLog: @Sendable () -> Bool

    /// The argument of a one-record call, allocated once.
    private static let oneRecord: [WasmKit.Value] = [.i32(1)]

    /// Readings one call may emit.
    public static let maxOutputsPerReading = 64
    public static let maxOutputsPerBatch = 4096

    /// Parses, validates and instantiates `spec`'s module (a module that cannot run is refused here,
    /// with the reason). `deadLetterDirectory`: where `on_error = "dead_letter"` writes (nil: dropped).
    /// `logFailures: false`: failed calls are only counted (`brume fn test` prints them itself).
    public init(_ spec: FunctionSpec, logger: Logger = Logger(label: "brume.function"), deadLetterDirectory: String? = nil,
                logFailures: Bool = true) throws(FunctionLoadError) {
        self.spec = spec
        self.logFailures = logFailures
        self.sha256 = spec.sha256
        var logger = logger
        logger[metadataKey: "function"] = "\(spec.name)"
        self.logger = logger
        guard spec.bytes.starts(with: [0, 0x61, 0x73, 0x6D]) else {
            throw FunctionLoadError("not a WebAssembly binary (it does not start with \\0asm; a .wat text needs wat2wasm, C needs sdk/build.sh)")
        }
        do {
            module = try parseWasm(bytes: spec.bytes)
        } catch {
            throw FunctionLoadError("not a valid WebAssembly module: \(Sandbox.describe(error))")
        }
        let stats = StatsBox()
        self.stats = stats
        let limit = guestLogLimit
        let log = logger
        let pending = Tally()   // lines suppressed since the last one written
        let guestLog: @Sendable (Int32, String) -> Void = { level, text in
            stats.m.withLock { $0.logLines += 1 }
            let n = pending.n.exchange(0, ordering: .relaxed)
            let lvl: Logger.Level = level >= 3 ? .error : level == 2 ? .warning : level == 1 ? .info : .debug
            log.log(level: lvl, "function log: \(text)", metadata: n > 0 ? ["suppressed": "\(n)"] : nil)
        }
        let admitLog: @Sendable () -> Bool = {
            if limit.admit() != nil { return true }
            stats.m.withLock { $0.logSuppressed += 1 }
            pending.n.add(1, ordering: .relaxed)
            return false
        }
        self.admitLog = admitLog
        self.guestLog = guestLog
        let first = try Sandbox(spec: spec, module: module, host: HostState(log: guestLog, admitLog: admitLog))
        sandbox = Mutex(first)
        deadLetters = spec.onError == .deadLetter ? deadLetterDirectory.map { DeadLetterFile(path: "\($0)/\(spec.name).jsonl") } : nil
    }

    public func statistics() -> FunctionStats { stats.m.withLock { $0 } }

    /// A reload that keeps this instance enables it again (the technician may have fixed what
    /// its input was).
    public func reenable() {
        let was = stats.m.withLock { s in
            let d = s.disabled
            s.disabled = false
            s.consecutiveFailures = 0
            return d
        }
        stats.disabled.store(false, ordering: .relaxed)
        trapTimes.withLock { $0.removeAll() }
        if was { logger.notice("function enabled again by the reload") }
    }

    // MARK: the three kinds

    public func apply(_ reading: Reading) -> FunctionOutcome {
        let r = call(n: 1, maxOutputs: Self.maxOutputsPerReading, defaultTime: reading.time, unsynced: reading.unsyncedBootMillis,
                     input: (reading.device, reading.metric)) { area in
            FunctionABI.write(time: reading.time, value: reading.value, device: reading.device, metric: reading.metric, into: area, at: 0) != nil
        }
        switch r {
        case .success(let (code, outputs)):
            return code == FunctionABI.keep ? .keep(outputs) : .replace(outputs)
        case .failure(let f):
            let passOn = settle(f) { [reading] }
            return .failed(message: f.message, passOn: passOn)
        }
    }

    public func window(device: String, metric: String, end: Int64, samples: [WindowSample]) -> FunctionOutcome {
        let r = call(n: samples.count, maxOutputs: Self.maxOutputsPerBatch, defaultTime: end, unsynced: nil, input: (device, metric)) { area in
            var at = 0
            for s in samples {
                guard let next = FunctionABI.write(time: s.time, value: .number(s.value), device: device, metric: metric, into: area, at: at) else { return false }
                at = next
            }
            return true
        }
        switch r {
        case .success(let (_, outputs)): return .replace(outputs)
        case .failure(let f):
            _ = settle(f) { samples.map { Reading(device: device, metric: metric, time: $0.time, value: .number($0.value)) } }
            return .failed(message: f.message, passOn: false)
        }
    }

    public func decode(_ payload: UnsafeRawBufferPointer, device: String, metric: String, receivedAt: Int64,
                       into out: inout [Reading]) throws(PayloadError) {
        let r = call(n: 1, maxOutputs: Self.maxOutputsPerBatch, defaultTime: receivedAt, unsynced: nil, input: (device, metric)) { area in
            FunctionABI.write(time: receivedAt, value: nil, bytes: payload, device: device, metric: metric, into: area, at: 0) != nil
        }
        switch r {
        case .success(let (_, outputs)):
            if outputs.isEmpty { throw PayloadError(.noMetrics, "decoder function \"\(spec.name)\" emitted no reading") }
            out.append(contentsOf: outputs)
        case .failure(let f):
            let bytes = Array(payload)
            settleBytes(f, device: device, metric: metric, time: receivedAt, payload: bytes)
            throw PayloadError(.functionFailed, "decoder function \"\(spec.name)\": \(f.reason.rawValue): \(f.message)")
        }
    }

    // MARK: calling

    struct CallFailure: Error {
        var reason: FunctionStats.Failure
        var message: String
    }

    /// One call: writes the input with `fill` (false: it does not fit), runs the entry point with
    /// `n` on a fresh fuel budget, returns the code and the emitted readings.
    /// `input`: the device and metric of the records (an output naming them reuses their strings).
    private func call(n: Int, maxOutputs: Int, defaultTime: Int64, unsynced: Int64?, input: (String, String)?,
                      fill: (UnsafeMutableRawBufferPointer) -> Bool) -> Result<(Int32, [Reading]), CallFailure> {
        if stats.disabled.load(ordering: .relaxed) {
            return .failure(CallFailure(reason: .disabled, message: "disabled after \(spec.disableAfter) consecutive failures or traps within a minute (reload to enable)"))
        }
        let result: Result<(Int32, [Reading]), CallFailure>
        var fuelUsed: UInt64 = 0
        var restarted = false
        result = sandbox.withLock { (box: inout Sandbox?) -> Result<(Int32, [Reading]), CallFailure> in
            if box == nil {
                do throws(FunctionLoadError) { box = try Sandbox(spec: spec, module: module, host: HostState(log: guestLog, admitLog: admitLog)) } catch {
                    return .failure(CallFailure(reason: .trap, message: "cannot make a new instance: \(error.message)"))
                }
            }
            let sb = box!
            let fits = sb.memory.withUnsafeMutableBufferPointer(offset: UInt(sb.buffer), count: sb.bufferSize, fill)
            guard fits else {
                return .failure(CallFailure(reason: .tooLarge, message: "the input (\(n) record\(n == 1 ? "" : "s")) does not fit the function's buffer of \(sb.bufferSize) bytes"))
            }
            let host = sb.host
            host.outputs = []
            host.emitError = nil
            host.maxOutputs = maxOutputs
            host.defaultTime = defaultTime
            host.unsynced = unsynced
            host.input = input
            sb.store.fuel = Fuel(remaining: spec.fuel)
            let code: Int32
            do {
                let r = try sb.entry.invoke(n == 1 ? Self.oneRecord : [.i32(UInt32(n))], on: &sb.stack)
                guard case .i32(let c) = r.first else { return .failure(CallFailure(reason: .badOutput, message: "the entry point returned no i32")) }
                code = Int32(bitPattern: c)
            } catch {
                let text = Sandbox.describe(error)
                fuelUsed = text.contains("out of fuel") ? spec.fuel : spec.fuel - (sb.store.fuel?.remaining ?? 0)
                // A trap can leave the guest half-updated: the next call gets a fresh instance.
                box = nil
                restarted = true
                if text.contains("out of fuel") {
                    return .failure(CallFailure(reason: .outOfFuel, message: "used up its fuel (\(spec.fuel)): an endless or too long loop"))
                }
                return .failure(CallFailure(reason: .trap, message: text))
            }
            fuelUsed = spec.fuel - (sb.store.fuel?.remaining ?? spec.fuel)
            if let e = host.emitError { return .failure(CallFailure(reason: .badOutput, message: e)) }
            if code < 0 { return .failure(CallFailure(reason: .errorCode, message: "returned error code \(code)")) }
            if code > FunctionABI.keep { return .failure(CallFailure(reason: .badOutput, message: "returned \(code) (0 done, 1 keep, negative: an error)")) }
            return .success((code, host.outputs))
        }
        stats.m.withLock { s in
            s.calls += 1
            s.fuelTotal &+= fuelUsed
            s.fuelMax = max(s.fuelMax, fuelUsed)
            if restarted { s.restarts += 1 }
            if case .success(let (_, outputs)) = result {
                s.outputs += Int64(outputs.count)
                s.consecutiveFailures = 0
            }
        }
        if restarted {
            // Make the next instance now, outside the call path of the next reading.
            sandbox.withLock { box in
                if box == nil { box = try? Sandbox(spec: spec, module: module, host: HostState(log: guestLog, admitLog: admitLog)) }
            }
        }
        return result
    }

    /// Counts and logs a failure, disables the function at its threshold, dead-letters the
    /// input; returns whether the reading goes on (`on_error = "pass"`).
    private func settle(_ f: CallFailure, input: () -> [Reading]) -> Bool {
        note(f)
        switch spec.onError {
        case .pass: return true
        case .drop: return false
        case .deadLetter:
            if let deadLetters {
                let n = deadLetters.append(input(), function: spec.name, reason: f.reason.rawValue, error: f.message)
                stats.m.withLock { $0.deadLettered += Int64(n) }
            }
            return false
        }
    }

    private func settleBytes(_ f: CallFailure, device: String, metric: String, time: Int64, payload: [UInt8]) {
        note(f)
        if spec.onError == .deadLetter, let deadLetters {
            let n = deadLetters.appendPayload(payload, device: device, metric: metric, time: time, function: spec.name, reason: f.reason.rawValue, error: f.message)
            stats.m.withLock { $0.deadLettered += Int64(n) }
        }
    }

    private func note(_ f: CallFailure) {
        var trapStorm = false
        if f.reason == .trap || f.reason == .outOfFuel {
            let now = monotonicNanos()
            let limit = spec.disableAfter
            trapStorm = trapTimes.withLock { t in
                t.append(now)
                t.removeAll { now &- $0 > 60_000_000_000 }
                if t.count > limit { t.removeFirst(t.count - limit) }
                return t.count >= limit
            }
        }
        let disabledNow: Bool = stats.m.withLock { s in
            s.failures[f.reason, default: 0] += 1
            s.lastError = "\(f.reason.rawValue): \(f.message)"
            guard f.reason != .disabled else { return false }
            s.consecutiveFailures += 1
            if !s.disabled && (s.consecutiveFailures >= spec.disableAfter || trapStorm) {
                s.disabled = true
                stats.disabled.store(true, ordering: .relaxed)
                return true
            }
            return false
        }
        guard logFailures else { return }
        if disabledNow {
            logger.error("function disabled after \(spec.disableAfter) consecutive failures (or traps within a minute): its input now follows on_error = \"\(spec.onError.rawValue)\" without a call (reload to enable it)",
                         metadata: ["reason": "\(f.reason.rawValue)", "error": "\(f.message)"])
        } else if f.reason != .disabled, let suppressed = failureLog.admit() {
            logger.warning("function call failed", metadata: ["reason": "\(f.reason.rawValue)", "error": "\(f.message)",
                                                               "on_error": "\(spec.onError.rawValue)", "suppressed": "\(suppressed)"])
        }
    }
}

final class StatsBox: Sendable {
    let m = Mutex(FunctionStats())
    /// `FunctionStats.disabled`, readable without the lock on every call.
    let disabled = Atomic<Bool>(false)
}

final class Tally: Sendable {
    let n = Atomic<Int>(0)
}
