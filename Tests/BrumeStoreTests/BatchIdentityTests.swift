import BrumeCore
import BrumeTestKit
import Foundation
import Testing
@testable import BrumeStore

/// A batch id names one batch for the life of a gateway id: across a restart (the same id for
/// the same batch), a data folder restored from an older backup, a wiped data folder, and
/// writes lost to a power cut (sequence numbers rewind in all three).
@Suite struct BatchIdentityTests {
    /// Every id seen, with the readings it carried: an id must never carry other readings.
    final class Ledger {
        var seen: [String: [Int]] = [:]
        var conflicts: [String] = []
        func record(_ box: Outbox, _ b: BatchRecord) {
            let id = b.id(gateway: "gw-1")
            let content = values(box.readings(of: b) ?? [])
            if let prev = seen[id], prev != content { conflicts.append(id) }
            seen[id] = content
        }
    }

    func drain(_ box: Outbox, _ ledger: Ledger, ack: Bool) {
        while case .batch(let b) = box.nextBatch(maxReadings: 50, maxDelayMillis: 0) {
            ledger.record(box, b)
            if ack { box.ack(b) }
        }
    }

    func copy(_ from: String, _ to: String) throws {
        let fm = FileManager.default
        try? fm.removeItem(atPath: to)
        try fm.createDirectory(atPath: to, withIntermediateDirectories: true)
        for f in try fm.contentsOfDirectory(atPath: from) where f.hasPrefix("outbox.db") {
            try fm.copyItem(atPath: "\(from)/\(f)", toPath: "\(to)/\(f)")
        }
    }

    @Test func idsNeverNameTwoBatchesAcrossRestartRestoreAndWipe() throws {
        let dir = TestKit.tempDir()
        let backup = TestKit.tempDir() + "/backup"
        let ledger = Ledger()
        var unacked: [(BatchRecord, String, [Reading])] = []
        do {
            let box = try makeOutbox(dir)
            box.append(readings(1...100))
            box.flush()
            drain(box, ledger, ack: false)
            unacked = box.unackedBatches().map { ($0, $0.id(gateway: "gw-1"), box.readings(of: $0)!) }
            box.close()
        }
        try copy(dir, backup)
        // Restart: the recorded batches are resent with the same id and the same readings.
        do {
            let box = try makeOutbox(dir)
            let again = box.unackedBatches()
            #expect(again.map { $0.id(gateway: "gw-1") } == unacked.map(\.1))
            #expect(again.map { box.readings(of: $0)! } == unacked.map(\.2))
            for b in again { ledger.record(box, b); box.ack(b) }
            box.append(readings(101...300))
            box.flush()
            drain(box, ledger, ack: true)
            box.close()
        }
        // The data folder restored from the backup: the sequence rewinds to 100 and new,
        // different readings get sequence numbers 101... again.
        try copy(backup, dir)
        do {
            let box = try makeOutbox(dir)
            for b in box.unackedBatches() { ledger.record(box, b); box.ack(b) }
            box.append(readings(5000...5199))
            box.flush()
            drain(box, ledger, ack: true)
            box.close()
        }
        // Wiped (a new SD card, same gateway id): the sequence restarts at 1.
        try FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        do {
            let box = try makeOutbox(dir)
            box.append(readings(9000...9199))
            box.flush()
            drain(box, ledger, ack: true)
            box.close()
        }
        #expect(ledger.conflicts == [])
        // The same ranges (1-50 ...) were formed in three lives with other readings: distinct ids.
        #expect(ledger.seen.count == 2 + 4 + 4 + 4) // resends in the second and third lives reuse the first ids
    }

    /// A power cut loses what was not fsynced: the batch record and next_seq roll back, and the
    /// next run forms batches over the same sequence numbers with other readings.
    @Test func idsDifferWhenABatchRecordIsLostToAPowerCut() throws {
        let dir = TestKit.tempDir()
        let ledger = Ledger()
        let before: String
        do {
            let box = try makeOutbox(dir)
            box.append(readings(1...50))
            box.flush()
            box.close()
        }
        try copy(dir, dir + "-synced") // what reached the card
        do {
            let box = try makeOutbox(dir)
            box.append(readings(51...100))
            box.flush()
            guard case .batch(let b) = box.nextBatch(maxReadings: 100, maxDelayMillis: 0) else { Issue.record("no batch"); return }
            ledger.record(box, b) // published ...
            before = b.id(gateway: "gw-1")
            box.close()
        }
        // ... and the power is cut: the card holds only what was synced before.
        try copy(dir + "-synced", dir)
        let box = try makeOutbox(dir)
        box.append(readings(700...749)) // other readings take sequence numbers 51...100
        box.flush()
        guard case .batch(let b) = box.nextBatch(maxReadings: 100, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(b.first == 1 && b.last == 100)
        ledger.record(box, b)
        #expect(b.id(gateway: "gw-1") != before)
        #expect(ledger.conflicts == [])
    }

    @Test func aSplitBatchGetsTwoNewIdsAndKeepsEveryReading() throws {
        let dir = TestKit.tempDir()
        let box = try makeOutbox(dir)
        box.append(readings(1...100))
        box.flush()
        guard case .batch(let b) = box.nextBatch(maxReadings: 100, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        guard let (x, y) = box.split(b, firstCount: 30) else { Issue.record("no split"); return }
        #expect(x.first == 1 && x.last == 30 && y.first == 31 && y.last == 100)
        #expect(Set([b.id(gateway: "g"), x.id(gateway: "g"), y.id(gateway: "g")]).count == 3)
        #expect(box.unackedBatches() == [x, y])
        #expect(box.split(b, firstCount: 10) == nil) // no longer recorded
        box.ack(y)
        #expect(box.stats.doneSeq == 0)
        box.ack(x)
        #expect(box.stats.doneSeq == 100)
    }
}
