import Synchronization

/// A monotonically increasing counter, cheap to bump from any thread.
///
/// Components own their counters and expose snapshots; exporters (logs,
/// status, Prometheus) read them at scrape time. Nothing global.
public final class Counter: Sendable {
    private let value = Atomic<Int64>(0)
    public init() {}
    @inline(__always)
    public func add(_ n: Int64 = 1) { value.wrappingAdd(n, ordering: .relaxed) }
    public var current: Int64 { value.load(ordering: .relaxed) }
}

/// Counters keyed by a reason label ("invalid_json", "max_bytes", ...).
public final class ReasonCounters: Sendable {
    private let values = Mutex<[String: Int64]>([:])
    public init() {}
    public func add(_ reason: String, _ n: Int64 = 1) {
        values.withLock { $0[reason, default: 0] += n }
    }
    public subscript(reason: String) -> Int64 { values.withLock { $0[reason] ?? 0 } }
    public var snapshot: [String: Int64] { values.withLock { $0 } }
    public var total: Int64 { values.withLock { $0.values.reduce(0, +) } }
}

/// A value that can be read and set from any thread (states, gauges).
public final class Gauge<T: Sendable>: Sendable {
    private let value: Mutex<T>
    public init(_ initial: T) { value = Mutex(initial) }
    public var current: T { value.withLock { $0 } }
    public func set(_ v: T) { value.withLock { $0 = v } }
}

/// A mutex-protected value in a class, so closures can share it.
public final class Locked<T: Sendable>: Sendable {
    private let m: Mutex<T>
    public init(_ v: T) { m = Mutex(v) }
    public func withLock<R>(_ body: (inout T) throws -> R) rethrows -> R { try m.withLock { try body(&$0) } }
}
