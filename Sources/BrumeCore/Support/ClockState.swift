import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Milliseconds of the boot clock (`CLOCK_BOOTTIME`): never jumps, keeps counting across a
/// suspend and across restarts of the gateway, starts again at a reboot. The bridge between a
/// time stamped by an unsynchronised wall clock and the true time learnt later.
public func bootClockMillis() -> Int64 {
    var ts = timespec()
    #if os(Linux)
    clock_gettime(CLOCK_BOOTTIME, &ts)
    #else
    clock_gettime(CLOCK_MONOTONIC, &ts)
    #endif
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Whether the system clock can be trusted to stamp readings, as the runtime's clock monitor
/// last judged it (`ntp_adjtime`: synchronised by NTP/chrony/timesyncd, or not yet — a board
/// without a real-time clock boots in 1970 or at a stale time; see `ClockMonitor`).
///
/// While it is not trusted the outbox marks the readings stamped by it (`mark`): each carries
/// its boot-clock time, from which the true time follows once the clock is synchronised
/// (`true time = boot time + (wall - boot) after the sync`).
public final class ClockState: Sendable {
    /// This boot (`/proc/sys/kernel/random/boot_id`): the boot clock of another boot is useless.
    public let bootID: String
    private let trustedFlag: Atomic<Bool>
    /// Readings marked as stamped by an unsynchronised clock, since start.
    public let markedTotal = Atomic<Int64>(0)

    /// A reading whose time is within this of the unsynchronised wall clock when it reaches
    /// the outbox was stamped by that clock (by the gateway, or by a device that shares its
    /// wrong time). A device with a good clock of its own (GPS, NTP) disagrees with a board
    /// stuck in 1970 or at its last shutdown by far more, and keeps its timestamp.
    public static let agreementMillis: Int64 = 120_000

    public init(bootID: String, trusted: Bool) {
        self.bootID = bootID
        trustedFlag = Atomic(trusted)
    }

    /// The clock may stamp readings as they are (synchronised, or judged right).
    public var isTrusted: Bool { trustedFlag.load(ordering: .acquiring) }

    public func set(trusted: Bool) { trustedFlag.store(trusted, ordering: .releasing) }

    /// Marks the readings stamped by the untrusted clock (nothing while it is trusted).
    /// Returns how many were marked.
    @discardableResult
    public func mark(_ readings: inout [Reading], wallNow: Int64 = wallClockMillis(), bootNow: Int64 = bootClockMillis()) -> Int {
        guard !isTrusted else { return 0 }
        var n = 0
        for i in readings.indices where readings[i].unsyncedBootMillis == nil {
            // Checked arithmetic on a time from outside: a device may send any 64-bit value.
            let (age, overflow) = wallNow.subtractingReportingOverflow(readings[i].time)
            guard !overflow, age.magnitude <= UInt64(ClockState.agreementMillis) else { continue }
            readings[i].unsyncedBootMillis = bootNow - age
            n += 1
        }
        if n > 0 { markedTotal.add(Int64(n), ordering: .relaxed) }
        return n
    }
}
