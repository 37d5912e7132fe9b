@testable import BrumeRuntime
import BrumeConfig
import BrumeCore
import BrumeStore
import BrumeTestKit
import Logging
import Testing

/// When may the board's clock stamp readings? The kernel's status is faked through the same
/// override the chaos suite and the end-to-end tests use (`clockFaultSynchronised`).
@Suite(.serialized) struct ClockMonitorTests {
    func monitor(_ dir: String, boot: String, mode: ClockSection.Unsynchronised = .correct) throws -> (ClockMonitor, Outbox) {
        let state = ClockState(bootID: boot, trusted: true)
        var o = OutboxOptions(path: dir + "/outbox.db")
        o.clock = state
        let box = try Outbox(options: o, logger: Logger(label: "test"))
        var settings = ClockSection()
        settings.unsynchronised = mode
        return (ClockMonitor(outbox: box, state: state, settings: settings, logger: Logger(label: "test")), box)
    }

    func withKernel(_ synced: Bool, _ body: () throws -> Void) rethrows {
        clockFaultSynchronised.store(synced ? 1 : 0, ordering: .relaxed)
        defer { clockFaultSynchronised.store(-1, ordering: .relaxed) }
        try body()
    }

    /// The gateway's clock state starts trusted; the monitor decides before sources start.
    @Test func trustIsDecidedBeforeAnythingIsStamped() throws {
        let dir = TestKit.tempDir()
        try withKernel(true) { let (_, box) = try monitor(dir, boot: "b1"); box.close() } // NTP worked here once
        try withKernel(false) {
            let (m, box) = try monitor(dir, boot: "b2") // a reboot without NTP
            #expect(m.state.isTrusted == false, "decided when the monitor is made, not a second later")
            box.close()
        }
    }

    @Test func trustFollowsWhatThisGatewayKnowsOfItsClock() throws {
        let dir = TestKit.tempDir()
        // Never synchronised here, a plausible time: a VM or container whose host keeps time.
        try withKernel(false) {
            let (m, box) = try monitor(dir, boot: "b1")
            #expect(m.poll().trusted)
            #expect(!box.clockHistory.everSynced)
            box.close()
        }
        // NTP synchronises it: remembered (one row per boot).
        try withKernel(true) {
            let (m, box) = try monitor(dir, boot: "b1")
            #expect(m.poll().trusted)
            #expect(box.clockHistory.syncedThisBoot && box.clockHistory.everSynced)
            box.close()
        }
        // The same boot, NTP gone for hours (the kernel flags the clock): it runs on from a right time.
        try withKernel(false) {
            let (m, box) = try monitor(dir, boot: "b1")
            #expect(m.poll().trusted)
            box.close()
        }
        // A reboot without NTP on a gateway where NTP worked: not trusted until it syncs again.
        try withKernel(false) {
            let (m, box) = try monitor(dir, boot: "b2")
            let s = m.poll()
            #expect(!s.trusted, "\(s.reason)")
            #expect(m.state.isTrusted == false)
            box.close()
        }
        // ... unless the technician says so.
        try withKernel(false) {
            let (m, box) = try monitor(dir, boot: "b3", mode: .trust)
            #expect(m.poll().trusted)
            box.close()
        }
    }
}
