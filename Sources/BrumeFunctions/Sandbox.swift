@_spi(Fuzzing) import WasmKit
import BrumeCore
import Synchronization

/// Caps a store's linear memory and tables (WasmKit asks it at instantiation and on every
/// `memory.grow`: a refused growth makes `memory.grow` return -1 to the guest). Each growth
/// copies the whole memory while fuel is charged only for the added pages, so an instance may
/// grow at most `maxGrowths` times (a loop of one-page growths would copy gigabytes).
final class MemoryCap: ResourceLimiter, Sendable {
    static let maxGrowths = 64
    let maxBytes: Int
    private let growths = Atomic<Int>(0)
    init(maxBytes: Int) { self.maxBytes = maxBytes }
    func limitMemoryGrowth(to desired: Int) throws -> Bool {
        guard desired <= maxBytes else { return false }
        return growths.add(1, ordering: .relaxed).newValue <= Self.maxGrowths
    }
    func limitTableGrowth(to desired: Int) throws -> Bool { desired <= 10_000 }
}

/// A host call charges the guest's fuel for the host's work (a loop of `brume_log` calls must
/// end like any loop); thrown when the budget cannot pay.
struct HostCallOutOfFuel: Error, CustomStringConvertible {
    var call: String
    var description: String { "out of fuel in \(call)" }
}

/// Takes `units` of fuel from the running call's budget.
func charge(_ store: Store, _ units: UInt64, for call: String) throws {
    guard var f = store.fuel else { return }
    guard f.remaining >= units else { throw HostCallOutOfFuel(call: call) }
    f.remaining -= units
    store.fuel = f
}

/// What the host functions of one instance share with the caller (thread-confined: used only
/// under the function's lock).
final class HostState {
    var memory: Memory?
    var outputs: [Reading] = []
    var emitError: String?
    var maxOutputs = 0
    var defaultTime: Int64 = 0
    var unsynced: Int64?
    /// The input's device and metric: an output naming the same reuses these strings.
    var input: (String, String)?
    let log: (Int32, String) -> Void
    /// Asked before a log line is decoded: false drops it (rate limit) at no cost.
    let admitLog: () -> Bool

    init(log: @escaping (Int32, String) -> Void, admitLog: @escaping () -> Bool = { true }) {
        self.log = log
        self.admitLog = admitLog
    }

    func emit(_ address: UInt32) -> Int32 {
        guard emitError == nil, let memory else { return -1 }
        guard outputs.count < maxOutputs else {
            emitError = "emitted more than \(maxOutputs) readings in one call"
            return -1
        }
        let r = memory.withUnsafeBufferPointer(offset: 0, count: memory.byteCount) {
            FunctionABI.read($0, at: address, defaultTime: defaultTime, unsynced: unsynced, input: input)
        }
        switch r {
        case .success(let reading):
            outputs.append(reading)
            return 0
        case .failure(let e):
            emitError = e.message
            return -1
        }
    }

    func guestLog(_ level: UInt32, _ address: UInt32, _ count: UInt32) {
        guard let memory, admitLog() else { return }
        let n = Int(min(count, 1024))
        let text: String? = memory.withUnsafeBufferPointer(offset: 0, count: memory.byteCount) { mem in
            guard Int(address) <= mem.count - n else { return nil }
            return String(decoding: UnsafeRawBufferPointer(rebasing: mem[Int(address)..<(Int(address) + n)]).bindMemory(to: UInt8.self), as: UTF8.self)
        }
        log(Int32(bitPattern: level), text ?? "(log text outside the function's memory)")
    }
}

/// One instance of a module: its store, memory, entry point and execution stack. Not
/// thread-safe: `WasmFunction` keeps it under a lock. A trap may leave the guest's state
/// half-updated (its C stack pointer, a global), so the caller replaces the whole sandbox.
final class Sandbox {
    let store: Store
    let memory: Memory
    let entry: Function
    let buffer: Int
    let bufferSize: Int
    let host: HostState
    var stack: ExecutionStack

    /// Fuel one host call costs (a record or a log line: ~1 µs of host work, ~1,000 instructions).
    static let hostCallFuel: UInt64 = 1_000

    static let allowedImports: [String: FunctionType] = [
        "brume_emit": FunctionType(parameters: [.i32], results: [.i32]),
        "brume_log": FunctionType(parameters: [.i32, .i32, .i32], results: []),
    ]

    init(spec: FunctionSpec, module: Module, host: HostState) throws(FunctionLoadError) {
        // Software bounds checks: the default (mprotect) reserves > 4 GiB of address space per
        // memory and installs process-wide signal handlers — not for a 512 MB board.
        let engine = Engine(configuration: EngineConfiguration(compilationMode: .eager, memoryBoundsChecking: .software, fuelMetering: true))
        let store = Store(engine: engine)
        store.resourceLimiter = MemoryCap(maxBytes: spec.memoryBytes)
        self.store = store
        self.host = host
        for i in module.imports {
            guard i.module == "env", Self.allowedImports[i.name] != nil, case .function = i.descriptor else {
                throw FunctionLoadError("imports \(i.module).\(i.name): a Brume function may import only env.brume_emit and env.brume_log (no WASI, clock, files or network; build with -nostdlib, see docs/functions.md)")
            }
        }
        let imports: Imports = [
            "env": [
                "brume_emit": Function(store: store, parameters: [.i32], results: [.i32], raw: { caller, args, results in
                    try charge(caller.store, Sandbox.hostCallFuel, for: "brume_emit")
                    guard case .i32(let a) = args[0] else { return }
                    results[0] = .i32(UInt32(bitPattern: host.emit(a)))
                }),
                "brume_log": Function(store: store, parameters: [.i32, .i32, .i32], results: [], raw: { caller, args, _ in
                    try charge(caller.store, Sandbox.hostCallFuel, for: "brume_log")
                    guard case .i32(let level) = args[0], case .i32(let p) = args[1], case .i32(let n) = args[2] else { return }
                    host.guestLog(level, p, n)
                }),
            ],
        ]
        let instance: Instance
        do {
            store.fuel = Fuel(remaining: spec.fuel)   // a start function gets one call's budget
            instance = try module.instantiate(store: store, imports: imports)
        } catch {
            throw FunctionLoadError(Self.describe(error, memoryBytes: spec.memoryBytes))
        }
        guard let memory = instance.exports[memory: "memory"] else { throw FunctionLoadError("exports no memory named \"memory\"") }
        func export(_ name: String, _ type: FunctionType) throws(FunctionLoadError) -> Function {
            guard let f = instance.exports[function: name] else {
                throw FunctionLoadError("exports no function \"\(name)\" (a \(spec.kind.rawValue) function needs \(spec.kind.entry), brume_buffer and brume_buffer_size)")
            }
            guard f.type == type else { throw FunctionLoadError("\"\(name)\" has type \(f.type.parameters) -> \(f.type.results), expected \(type.parameters) -> \(type.results)") }
            return f
        }
        let getter = FunctionType(parameters: [], results: [.i32])
        entry = try export(spec.kind.entry, FunctionType(parameters: [.i32], results: [.i32]))
        stack = ExecutionStack(engine: engine)
        host.memory = memory
        self.memory = memory
        do {
            if let initFn = instance.exports[function: "brume_init"] {
                guard initFn.type == getter else { throw FunctionLoadError("\"brume_init\" must be () -> i32") }
                store.fuel = Fuel(remaining: spec.fuel)
                let r = try initFn.invoke([], on: &stack)
                if case .i32(let code) = r.first, code != 0 { throw FunctionLoadError("brume_init returned \(Int32(bitPattern: code))") }
            }
            store.fuel = Fuel(remaining: spec.fuel)
            guard case .i32(let b) = try export("brume_buffer", getter).invoke([], on: &stack).first,
                  case .i32(let n) = try export("brume_buffer_size", getter).invoke([], on: &stack).first else {
                throw FunctionLoadError("brume_buffer or brume_buffer_size gave no i32")
            }
            buffer = Int(b)
            bufferSize = Int(n)
        } catch let e as FunctionLoadError {
            host.memory = nil
            throw e
        } catch {
            host.memory = nil
            throw FunctionLoadError(Self.describe(error, memoryBytes: spec.memoryBytes))
        }
        guard bufferSize >= 64, buffer % 8 == 0, buffer <= memory.byteCount - bufferSize else {
            host.memory = nil
            throw FunctionLoadError("brume_buffer (\(buffer)) and brume_buffer_size (\(bufferSize)) must give an 8-byte aligned area of at least 64 bytes inside the memory (\(memory.byteCount) bytes)")
        }
    }

    deinit { host.memory = nil }   // the host closures hold `host`; the memory holds the store

    /// A WasmKit error as one line for a technician.
    static func describe(_ error: any Error, memoryBytes: Int? = nil) -> String {
        var text = "\(error)"
        if let nl = text.firstIndex(of: "\n") { text = String(text[..<nl]) }
        if text.hasPrefix("Trap: ") { text.removeFirst(6) }
        // WasmKit's parser errors read `"Message(text: "…")" at offset 0x4`.
        if let a = text.firstRange(of: "Message(text: \""), let b = text[a.upperBound...].firstRange(of: "\")") {
            text = String(text[a.upperBound..<b.lowerBound]) + String(text[b.upperBound...]).filter { $0 != "\"" }
        }
        if let m = memoryBytes, text.contains("initial memory size exceeds") || text.contains("exceeds the resource limit") || text.contains("exceeds limit") {
            text += " (memory = \(m / 1024) KiB allows \(m / 65536) pages)"
        }
        return text
    }
}
