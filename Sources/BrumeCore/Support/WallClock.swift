import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Milliseconds since the Unix epoch from the real-time clock.
///
/// Time-based logic that must be testable takes a `() -> Int64` "now" function
/// (or a `Clock`) instead of calling this directly.
public func wallClockMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000 + wallClockFaultOffsetMillis.load(ordering: .relaxed)
}

/// Fault injection only (`BRUME_FAULT_CLOCK_OFFSET_FILE`, the chaos suite's live clock
/// jumps): an offset added to the gateway's wall clock, as if the system clock had jumped.
/// Zero in normal operation. Monotonic time is never affected, as with a real jump.
public let wallClockFaultOffsetMillis = Atomic<Int64>(0)

/// Fault injection only (the same file, "<offset> unsynced" or "<offset> synced"): what the
/// clock monitor believes of the kernel's synchronisation status. -1: no override.
public let clockFaultSynchronised = Atomic<Int8>(-1)

/// Monotonic nanoseconds (for latency and intervals; never goes backwards).
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
