import Synchronization

/// A monotonically increasing counter, cheap to bump from any thread.
///
/// Components own their counters and expose snapshots; exporters (logs,
/// status, Prometheus) read them at scrape time. Nothing global.
///
/// The small types here are `@inlinable`: called on every reading from other modules, they would
/// otherwise be generic calls that look up `Mutex<T>`'s metadata at run time each time (measured:
/// ~700 instructions per call, bench/callgrind.sh).
public final class Counter: Sendable {
    @usableFromInline let value = Atomic<Int64>(0)
    public init() {}
    @inlinable
    public func add(_ n: Int64 = 1) { value.wrappingAdd(n, ordering: .relaxed) }
    @inlinable
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
    @usableFromInline let value: Mutex<T>
    public init(_ initial: T) { value = Mutex(initial) }
    @inlinable
    public var current: T { value.withLock { $0 } }
    @inlinable
    public func set(_ v: T) { value.withLock { $0 = v } }
}

/// A mutex-protected value in a class, so closures can share it.
///
/// Not for closures: every `inout` access to a closure kept in a generic container re-wraps it in
/// two reabstraction thunks (Swift 6.3), so a callback read once per batch was 4,700 thunks deep
/// after seconds at full rate and overflowed its thread's stack — use `CallbackSlot`.
public final class Locked<T: Sendable>: Sendable {
    @usableFromInline let m: Mutex<T>
    public init(_ v: T) { m = Mutex(v) }
    @inlinable
    public func withLock<R>(_ body: (inout T) throws -> R) rethrows -> R { try m.withLock { try body(&$0) } }
}

/// A callback that one thread sets and others call (observers, wake-ups). The closure lives in
/// a class instance, so reading it never re-wraps it (see `Locked`).
public final class CallbackSlot<Argument>: Sendable {
    final class Holder: Sendable {
        let call: @Sendable (Argument) -> Void
        init(_ call: @escaping @Sendable (Argument) -> Void) { self.call = call }
    }
    private let holder = Mutex<Holder?>(nil)
    public init() {}
    public func set(_ call: (@Sendable (Argument) -> Void)?) {
        let h = call.map(Holder.init)
        holder.withLock { $0 = h }
    }
    public var isSet: Bool { holder.withLock { $0 != nil } }
    /// Calls the callback, if one is set (outside the lock).
    public func callAsFunction(_ argument: Argument) {
        holder.withLock { $0 }?.call(argument)
    }
}
