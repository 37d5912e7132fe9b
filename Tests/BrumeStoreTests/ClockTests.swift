import BrumeCore
import BrumeTestKit
import Foundation
import Logging
import Testing
@testable import BrumeStore

/// Readings stamped while the system clock is not synchronised (a board without a real-time
/// clock, before NTP): held, then corrected by the offset the boot clock gives, or flagged when
/// a reboot came first or the wait ran out. A batch carrying them is encoded once, the same way
/// for ever (resent byte for byte).
@Suite struct ClockTests {
    /// A board in 1970: the wall clock says ~1 day after the epoch.
    static let wrongWall: Int64 = 86_400_000

    func outbox(_ dir: String, boot: String, trusted: Bool, hold: Duration = .zero) throws -> (Outbox, ClockState) {
        let clock = ClockState(bootID: boot, trusted: trusted)
        var o = OutboxOptions(path: dir + "/outbox.db")
        o.clock = clock
        o.hold = hold
        return (try Outbox(options: o, logger: Logger(label: "test")), clock)
    }

    /// Readings the gateway stamped with `wall`, and one from a device with a good clock.
    func stamped(_ n: Int, wall: Int64) -> [Reading] {
        (0..<n).map { Reading(device: "pump", metric: "seq", time: wall + Int64($0), value: .number(Double($0 + 1))) }
    }

    func batches(_ box: Outbox) -> [(BatchRecord, [Reading])] {
        var out: [(BatchRecord, [Reading])] = []
        while case .batch(let b) = box.nextBatch(maxReadings: 1000, maxDelayMillis: 0) { out.append((b, box.readings(of: b) ?? [])) }
        return out
    }

    @Test func segmentsKeepTheBootClockOfMarkedReadings() throws {
        var rs = stamped(5, wall: Self.wrongWall)
        rs[1].unsyncedBootMillis = 1_000
        rs[3].unsyncedBootMillis = 1_002
        let blob = SegmentCodec.encode(rs, boot: "boot-A")
        #expect(blob[1] == SegmentCodec.versionWithClock)
        let back = try blob.withUnsafeBytes { try SegmentCodec.decodeSegment($0) }
        #expect(back.readings == rs)
        #expect(back.boot == "boot-A")
        // Without marks the format is the old one, byte for byte.
        let plain = stamped(5, wall: Self.wrongWall)
        #expect(SegmentCodec.encode(plain, boot: "boot-A") == SegmentCodec.encode(plain))
        #expect(SegmentCodec.encode(plain)[1] == SegmentCodec.version)
        // A hostile mark list (an index out of range) is a corrupt segment, not a trap.
        var bad = blob
        bad[bad.count - 4 - 2] = 0x7F // the second mark's index step (then its boot delta, the CRC)
        let crc = SegmentCodec.crc32(Array(bad[0..<(bad.count - 4)]))
        for i in 0..<4 { bad[bad.count - 4 + i] = UInt8(truncatingIfNeeded: crc >> UInt32(8 * i)) }
        #expect(throws: SegmentError.self) { try bad.withUnsafeBytes { _ = try SegmentCodec.decodeSegment($0) } }
    }

    @Test func readingsStampedBeforeTheSyncWaitThenAreCorrected() throws {
        let dir = TestKit.tempDir()
        let (box, clock) = try outbox(dir, boot: "boot-A", trusted: false)
        let wall = wallClockMillis(), boot = bootClockMillis()
        // Two gateway-stamped readings (they agree with the wall clock), one from a GPS with
        // its own, far-off time: only the first two are the clock's.
        box.append([Reading(device: "pump", metric: "seq", time: wall, value: .number(1)),
                    Reading(device: "pump", metric: "seq", time: wall - 500, value: .number(2)),
                    Reading(device: "gps", metric: "fix", time: wall - 86_400_000, value: .number(3))])
        box.flush()
        #expect(clock.markedTotal.load(ordering: .relaxed) == 2)
        #expect(box.clockStatus == .waiting(firstSeq: 1))
        #expect(batches(box).isEmpty, "nothing goes before the clock is known")
        // NTP steps the clock by +1 h: wall - boot is now an hour larger than when they were stamped.
        let offset = (wall - boot) + 3_600_000
        #expect(box.resolveClock(offsetMillis: offset))
        #expect(box.clockStatus == .corrected(offsetMillis: offset))
        let sent = batches(box)
        #expect(sent.count == 1)
        let rs = sent[0].1
        #expect(rs.count == 3)
        #expect(abs(rs[0].time - (wall + 3_600_000)) <= 5, "corrected by the step")
        #expect(abs(rs[1].time - (wall - 500 + 3_600_000)) <= 5)
        #expect(rs[2].time == wall - 86_400_000, "a device's own timestamp is left alone")
        #expect(rs.allSatisfy { $0.unsyncedBootMillis == nil })
        // A second resolution changes nothing (a batch is encoded one way for ever).
        #expect(box.resolveClock(offsetMillis: 0))
        #expect(box.readings(of: sent[0].0) == rs)
        // After a restart in the same boot: the same batch, the same readings.
        let id = sent[0].0.id(gateway: "gw")
        box.close()
        let (again, _) = try outbox(dir, boot: "boot-A", trusted: true)
        let resent = again.unackedBatches()
        #expect(resent.map { $0.id(gateway: "gw") } == [id])
        #expect(again.readings(of: resent[0]) == rs)
        #expect(again.clockHistory.syncedThisBoot && again.clockHistory.everSynced)
        again.close()
    }

    @Test func aRebootBeforeTheSyncSendsThemFlagged() throws {
        let dir = TestKit.tempDir()
        do {
            let (box, _) = try outbox(dir, boot: "boot-A", trusted: false)
            box.append(stamped(3, wall: wallClockMillis()))
            box.flush()
            #expect(batches(box).isEmpty)
            box.close()
        }
        // Another boot: the boot clock started again, the offset can never be known.
        let (box, _) = try outbox(dir, boot: "boot-B", trusted: true)
        #expect(box.clockStatus == .none)
        let sent = batches(box)
        #expect(sent.count == 1)
        let rs = sent[0].1
        #expect(rs.count == 3 && rs.allSatisfy { $0.unsyncedBootMillis != nil })
        var out: [UInt8] = []
        WireFormat.encodeTelemetry(gateway: "gw", batchID: "b", historical: false, readings: rs, into: &out)
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.components(separatedBy: #""clock":"unsynced""#).count - 1 == 3)
        // The consumer's side reads the flag back.
        #expect(try TelemetryBatch.decode(out).readings.allSatisfy { $0.unsyncedBootMillis != nil })
        var line: [UInt8] = []
        InfluxLineProtocol.encode(rs, gateway: "gw", into: &line)
        #expect(String(decoding: line, as: UTF8.self).components(separatedBy: ",clock=unsynced ").count - 1 == 3)
        // Never synchronised anywhere yet: no history.
        #expect(!box.clockHistory.everSynced)
        box.close()
    }

    @Test func giveUpFlagsWhatWaitedAndLaterMarksGoFlaggedAtOnce() throws {
        let dir = TestKit.tempDir()
        let (box, _) = try outbox(dir, boot: "boot-A", trusted: false)
        box.append(stamped(2, wall: wallClockMillis()))
        box.flush()
        #expect(box.resolveClock(offsetMillis: nil))
        #expect(box.clockStatus == .flagged)
        box.append(stamped(2, wall: wallClockMillis()))
        box.flush()
        let rs = batches(box).flatMap(\.1)
        #expect(rs.count == 4 && rs.allSatisfy { $0.unsyncedBootMillis != nil })
        box.close()
    }

    /// The live lane (readings still in memory, the hold): marked readings wait for the clock
    /// there too, and go corrected.
    @Test func liveBatchesFromMemoryWaitForTheClockToo() throws {
        let dir = TestKit.tempDir()
        let (box, _) = try outbox(dir, boot: "boot-A", trusted: false, hold: .seconds(30))
        box.setLive(uplink: "cloud", active: true)
        box.setConnected(uplink: "cloud", true)
        let wall = wallClockMillis(), boot = bootClockMillis()
        box.append(stamped(4, wall: wall), holdable: true)
        #expect(box.nextLiveBatch(uplink: "cloud", maxReadings: 100, maxDelayMillis: 0).map { _ in true } == nil)
        #expect(box.resolveClock(offsetMillis: wall - boot + 1000))
        guard let (_, rs) = box.nextLiveBatch(uplink: "cloud", maxReadings: 100, maxDelayMillis: 0) else {
            Issue.record("no live batch after the sync")
            return
        }
        #expect(rs.count == 4)
        #expect(rs.allSatisfy { $0.unsyncedBootMillis == nil })
        #expect(abs(rs[0].time - (wall + 1000)) <= 5)
        box.close()
    }
}
