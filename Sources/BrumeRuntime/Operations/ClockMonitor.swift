import BrumeConfig
import BrumeCore
import BrumeStore
import CClock
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Watches the system clock (once a second) and decides whether it may stamp readings.
///
/// A Raspberry Pi has no real-time clock: it boots in 1970, or at the time fake-hwclock saved
/// at the last shutdown, until NTP synchronises it — seconds after boot with a network, hours
/// later at a site whose link is down. The kernel says whether anything synchronised it
/// (`ntp_adjtime`: STA_UNSYNC / TIME_ERROR, what `timedatectl` shows). The clock is *trusted*
/// when:
/// - it is synchronised, or was earlier in this boot (a clock that NTP set and then lost keeps
///   running from a right time: the kernel flags it unsynchronised after hours without NTP);
/// - or `[clock] unsynchronised = "trust"`;
/// - or it was never seen synchronised on this gateway *and* its time is plausible (not before
///   this release, not before the last synchronisation the outbox recorded): a VM or container
///   whose host keeps the time, or a site without NTP by design. Once the outbox has seen a
///   synchronisation, NTP works here, and an unsynchronised clock after a boot is not trusted.
///
/// Untrusted: the outbox marks what the clock stamps and holds it (batches stop before it)
/// until the clock is synchronised — then the readings are corrected by the offset the boot
/// clock gives — or until `[clock] wait` passes (or at once with `unsynchronised = "flag"`):
/// then they are sent flagged `"clock":"unsynced"`. A reboot before the sync makes correction
/// impossible: the next start flags them.
final class ClockMonitor: Sendable {
    /// No reading is stamped before this (2025-01-01T00:00:00Z): a clock behind it is wrong.
    static let floorMillis: Int64 = 1_735_689_600_000

    struct Snapshot: Sendable, Equatable {
        /// The kernel says so (or the fault-injection override does).
        var synchronised: Bool
        var maxErrorMicros: Int64
        /// The kernel's clock state (0 TIME_OK ... 5 TIME_ERROR), -1 if unknown.
        var kernelState: Int32
        var trusted: Bool
        /// Why the clock is (not) trusted, for the status page.
        var reason: String
        var wallMillis: Int64
    }

    let state: ClockState
    let outbox: Outbox
    let settings: ClockSection
    let logger: Logger
    let last: Locked<Snapshot?> = Locked(nil)
    /// Boot-clock ms when readings started waiting for the clock (0: none wait).
    let waitingSinceBoot = Atomic<Int64>(0)

    init(outbox: Outbox, state: ClockState, settings: ClockSection, logger: Logger) {
        self.outbox = outbox
        self.state = state
        self.settings = settings
        self.logger = logger
        // Trust is decided now, before any source starts: the state starts trusted and the
        // loop polls once a second, so readings of the first second after a start were stamped
        // unmarked by a 1970 clock (found by a loaded CI run of ClockEndToEndTests).
        _ = poll()
    }

    /// This boot's id (`BRUME_FAULT_BOOT_ID` overrides it: the tests' reboot).
    static func bootID() -> String {
        if let fake = getenv("BRUME_FAULT_BOOT_ID") { return String(cString: fake) }
        if case .success(let text) = ConfigLoader.readFile("/proc/sys/kernel/random/boot_id") {
            return text.filter { !$0.isWhitespace }
        }
        return "unknown-boot"
    }

    /// The kernel's synchronisation status.
    static func kernelStatus() -> (synchronised: Bool, maxErrorMicros: Int64, state: Int32) {
        let s = brume_clock_read()
        var synced = s.ok == 1 && s.unsync == 0 && s.state != 5
        switch clockFaultSynchronised.load(ordering: .relaxed) {
        case 0: synced = false
        case 1: synced = true
        default: break
        }
        return (synced, s.ok == 1 ? s.maxerror_us : -1, s.ok == 1 ? s.state : -1)
    }

    /// One look at the clock: decides trust, resolves the boot's marked readings when it can.
    @discardableResult
    func poll() -> Snapshot {
        let k = ClockMonitor.kernelStatus()
        let wall = wallClockMillis(), boot = bootClockMillis()
        let history = outbox.clockHistory
        let floor = max(ClockMonitor.floorMillis, history.lastSyncedAtMillis ?? .min)
        var trusted: Bool
        var reason: String
        if k.synchronised {
            trusted = true
            reason = "synchronised"
            if !history.syncedThisBoot {
                // Remembered (this boot is synchronised; NTP works here); readings marked before
                // are corrected by what the boot clock says the step was.
                outbox.resolveClock(offsetMillis: wall &- boot)
            }
        } else if settings.unsynchronised == .trust {
            trusted = true
            reason = "not synchronised; trusted ([clock] unsynchronised = \"trust\")"
        } else if history.syncedThisBoot {
            trusted = true
            reason = "not synchronised now, but it was in this boot (it runs on from a right time)"
        } else if wall < floor {
            trusted = false
            reason = "not synchronised, and behind \(wall < ClockMonitor.floorMillis ? "this release" : "the last synchronisation recorded"): readings wait for NTP"
        } else if history.everSynced {
            trusted = false
            reason = "not synchronised since boot (NTP synchronised it before on this gateway): readings wait for NTP"
        } else {
            trusted = true
            reason = "not synchronised, never seen synchronised here, time plausible: trusted (a host-kept clock, or no NTP by design)"
        }
        state.set(trusted: trusted)
        // Readings waiting for the clock: flagged at once ("flag"), or after `wait`.
        if case .waiting = outbox.clockStatus {
            var since = waitingSinceBoot.load(ordering: .relaxed)
            if since == 0 {
                since = boot
                waitingSinceBoot.store(boot, ordering: .relaxed)
                if settings.unsynchronised == .correct {
                    logger.warning("clock: not synchronised; readings it stamps wait for NTP, then are corrected",
                                   metadata: ["wait_s": "\(settings.waitMillis / 1000)", "reason": "\(reason)"])
                }
            }
            if settings.unsynchronised == .flag || boot &- since >= settings.waitMillis {
                if outbox.resolveClock(offsetMillis: nil), settings.unsynchronised == .correct {
                    logger.warning("clock: still not synchronised after [clock] wait: waiting readings are sent flagged (\"clock\":\"unsynced\")",
                                   metadata: ["waited_s": "\((boot &- since) / 1000)"])
                }
            }
        }
        let snap = Snapshot(synchronised: k.synchronised, maxErrorMicros: k.maxErrorMicros, kernelState: k.state, trusted: trusted, reason: reason, wallMillis: wall)
        let previous = last.withLock { p -> Snapshot? in
            let old = p
            p = snap
            return old
        }
        if previous?.synchronised != snap.synchronised || previous?.trusted != snap.trusted {
            logger.notice("clock", metadata: ["synchronised": "\(snap.synchronised)", "trusted": "\(snap.trusted)", "reason": "\(reason)"])
        }
        return snap
    }

    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if Task.isCancelled { return }
            poll()
        }
    }
}
