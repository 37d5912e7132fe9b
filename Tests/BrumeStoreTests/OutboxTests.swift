import BrumeCore
import BrumeTestKit
import Foundation
import Logging
import Synchronization
import Testing
@testable import BrumeStore

/// A wall clock and a monotonic clock that tests move by hand: `advance` is time passing
/// (both move), `jump` is the wall clock being set (only it moves).
final class ManualClock: Sendable {
    let ms = Atomic<Int64>(1_764_169_999_000)
    let monoNanos = Atomic<UInt64>(1_000_000_000_000)
    func advance(_ d: Int64) {
        ms.wrappingAdd(d, ordering: .relaxed)
        monoNanos.wrappingAdd(UInt64(d) * 1_000_000, ordering: .relaxed)
    }
    func jump(_ d: Int64) { ms.wrappingAdd(d, ordering: .relaxed) }
    var now: @Sendable () -> Int64 { { self.ms.load(ordering: .relaxed) } }
    var mono: @Sendable () -> UInt64 { { self.monoNanos.load(ordering: .relaxed) } }
}

func readings(_ range: ClosedRange<Int>, device: String = "boiler") -> [Reading] {
    range.map { Reading(device: device, metric: "seq", time: 1_764_169_999_000 + Int64($0), value: .number(Double($0))) }
}

func values(_ rs: [Reading]) -> [Int] { rs.map { if case .number(let d) = $0.value { Int(d) } else { -1 } } }

func makeOutbox(_ dir: String, clock: ManualClock = ManualClock(), _ tweak: (inout OutboxOptions) -> Void = { _ in }) throws -> Outbox {
    var o = OutboxOptions(path: "\(dir)/outbox.db")
    tweak(&o)
    return try Outbox(options: o, logger: Logger(label: "test"), now: clock.now, monotonic: clock.mono)
}

@Suite struct OutboxTests {
    @Test func appendBatchAckInOrder() throws {
        let dir = TestKit.tempDir()
        let box = try makeOutbox(dir)
        box.append(readings(1...1200))
        box.flush()
        #expect(box.stats.committed == 1200)
        guard case .batch(let b1) = box.nextBatch(maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(b1.first == 1 && b1.last == 500)
        #expect(values(box.readings(of: b1)!) == Array(1...500))
        guard case .batch(let b2) = box.nextBatch(maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(b2.first == 501 && b2.last == 1000)
        // Acks out of order: done_seq only advances over the contiguous prefix.
        box.ack(b2)
        #expect(box.stats.doneSeq == 0)
        box.ack(b1)
        #expect(box.stats.doneSeq == 1000)
        #expect(box.stats.delivered == 1000)
        #expect(box.stats.bufferedReadings == 200)
        box.ack(b1) // a second ack is harmless
        #expect(box.stats.delivered == 1000)
    }

    @Test func batchWaitsForDelayUnlessFull() throws {
        let dir = TestKit.tempDir()
        let clock = ManualClock()
        let box = try makeOutbox(dir, clock: clock)
        box.append(readings(1...10))
        box.flush()
        guard case .waitUntil(let t) = box.nextBatch(maxReadings: 500, maxDelayMillis: 1000) else { Issue.record("expected wait"); return }
        #expect(t == clock.now() + 1000)
        clock.advance(1000)
        guard case .batch(let b) = box.nextBatch(maxReadings: 500, maxDelayMillis: 1000) else { Issue.record("expected batch"); return }
        #expect(b.count == 10)
        #expect(!b.historical)
        if case .empty = box.nextBatch(maxReadings: 500, maxDelayMillis: 1000) {} else { Issue.record("expected empty") }
    }

    @Test func oldReadingsMakeHistoricalBatches() throws {
        let dir = TestKit.tempDir()
        let clock = ManualClock()
        let box = try makeOutbox(dir, clock: clock) { $0.historicalAfterMillis = 10_000 }
        box.append(readings(1...10))
        box.flush()
        clock.advance(60_000)
        guard case .batch(let b) = box.nextBatch(maxReadings: 500, maxDelayMillis: 1000) else { Issue.record("expected batch"); return }
        #expect(b.historical)
    }

    @Test func committedReadingsAndBatchesSurviveReopen() throws {
        let dir = TestKit.tempDir()
        var first: BatchRecord?
        var firstReadings: [Reading]?
        do {
            let box = try makeOutbox(dir)
            box.start()
            box.append(readings(1...700))
            box.stop()
            guard case .batch(let b) = box.nextBatch(maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no batch"); return }
            first = b
            firstReadings = box.readings(of: b)
            // Not acknowledged, no close(): as if the process died here.
        }
        let box = try makeOutbox(dir)
        #expect(box.stats.committed == 700)
        #expect(box.unackedBatches() == [first!])
        #expect(box.readings(of: first!) == firstReadings)
        // New readings continue the sequence; the next batch starts after the recorded one.
        box.append(readings(701...800))
        box.flush()
        guard case .batch(let b2) = box.nextBatch(maxReadings: 1000, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(b2.first == 501 && b2.last == 800)
        #expect(values(box.readings(of: b2)!) == Array(501...800))
    }

    @Test func waitProcessedReturnsOnceCommitted() throws {
        let dir = TestKit.tempDir()
        let box = try makeOutbox(dir) { $0.commitInterval = .seconds(5) }
        box.start()
        defer { box.stop() }
        let ticket = box.append(readings(1...3))
        let t0 = Date()
        #expect(box.waitProcessed(ticket, timeout: .seconds(3)))
        // Urgent: committed well before the 5 s interval.
        #expect(Date().timeIntervalSince(t0) < 2)
        #expect(box.stats.committed == 3)
    }

    @Test func maxBytesDropsOldestAndCountsExactly() throws {
        let dir = TestKit.tempDir()
        let box = try makeOutbox(dir) { $0.maxBytes = 256 << 10 }
        var appended = 0
        for chunk in 0..<200 {
            // Random values compress badly: ~10 bytes a reading.
            let rs = (0..<500).map { i in Reading(device: "d\(i % 7)", metric: "m", time: Int64(chunk * 500 + i), value: .number(Double.random(in: 0..<1))) }
            box.append(rs)
            box.flush()
            appended += rs.count
        }
        let s = box.stats
        let evicted = s.evicted["max_bytes"] ?? 0
        #expect(evicted > 0)
        #expect(s.committed == Int64(appended))
        #expect(s.bufferedReadings + evicted == Int64(appended))
        // What is left is the newest, contiguous.
        #expect(s.doneSeq == evicted)
        guard case .batch(let b) = box.nextBatch(maxReadings: 50_000, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(b.first == evicted + 1 && b.last == Int64(appended))
        #expect(box.readings(of: b)?.count == b.count)
        box.close()
        let size = (try FileManager.default.attributesOfItem(atPath: "\(dir)/outbox.db")[.size] as? Int) ?? 0
        let wal = (try? FileManager.default.attributesOfItem(atPath: "\(dir)/outbox.db-wal")[.size] as? Int) ?? 0
        #expect(size + wal <= 256 << 10, "database \(size) + WAL \(wal) bytes exceed max_bytes")
    }

    @Test func dropNewestKeepsTheOldest() throws {
        let dir = TestKit.tempDir()
        let box = try makeOutbox(dir) { $0.maxBytes = 128 << 10; $0.whenFull = .dropNewest }
        for chunk in 0..<100 {
            box.append((0..<500).map { i in Reading(device: "d", metric: "m", time: Int64(chunk * 500 + i), value: .number(Double.random(in: 0..<1))) })
            box.flush()
        }
        let s = box.stats
        let refused = s.evicted["buffer_full"] ?? 0
        #expect(refused > 0)
        #expect(s.bufferedReadings + refused == 50_000)
        #expect(s.doneSeq == 0) // the oldest are all still there
    }

    @Test func maxAgeEvictsOldReadings() throws {
        let dir = TestKit.tempDir()
        let clock = ManualClock()
        let box = try makeOutbox(dir, clock: clock) { $0.maxAgeMillis = 60_000 }
        box.append(readings(1...100))
        box.flush()
        clock.advance(30_000)
        box.append(readings(101...150))
        box.flush()
        clock.advance(40_000) // the first group is now 70 s old, the second 40 s
        box.runMaintenance()
        let s = box.stats
        #expect(s.evicted["max_age"] == 100)
        #expect(s.bufferedReadings == 50)
    }

    /// A board without RTC boots with a wrong clock that NTP corrects later, or a technician
    /// sets the date: the wall clock jumps while readings wait in the outbox.
    @Test func wallClockJumpsNeitherStallBatchesNorEvictAYoungBacklog() throws {
        let dir = TestKit.tempDir()
        let clock = ManualClock()
        let box = try makeOutbox(dir, clock: clock) { $0.maxAgeMillis = 7 * 86_400_000 }
        box.append(readings(1...100))
        box.flush()
        // Backwards by an hour: the batch delay (1 s) is measured on the monotonic clock,
        // so the batch goes out one second later, not one hour later.
        clock.jump(-3_600_000)
        if case .batch = box.nextBatch(maxReadings: 500, maxDelayMillis: 1000) { Issue.record("a batch before its delay") }
        clock.advance(1001)
        guard case .batch(let b) = box.nextBatch(maxReadings: 500, maxDelayMillis: 1000) else { Issue.record("batch stalled by a backward jump"); return }
        #expect(b.first == 1 && b.last == 100)
        // Forward by eight days, beyond max_age = 7d: the backlog is seconds old in truth; nothing is evicted.
        box.append(readings(101...200))
        box.flush()
        clock.jump(8 * 86_400_000)
        box.runMaintenance()
        #expect(box.stats.evicted["max_age"] == nil)
        #expect(box.stats.bufferedReadings == 200)
        // Time really passing still ages readings out.
        clock.advance(7 * 86_400_000 + 1000)
        box.runMaintenance()
        #expect(box.stats.evicted["max_age"] == 200)
    }

    @Test func corruptDatabaseIsMovedAsideAndAFreshOneCreated() throws {
        let dir = TestKit.tempDir()
        try Data(repeating: 0x5a, count: 8192).write(to: URL(fileURLWithPath: "\(dir)/outbox.db"))
        let box = try makeOutbox(dir)
        let aside = try #require(box.stats.recoveredFrom)
        #expect(FileManager.default.fileExists(atPath: aside))
        box.append(readings(1...5))
        box.flush()
        #expect(box.stats.committed == 5)
        // The old counter is lost with the file: sequence numbers (batch ids) continue from a
        // clock-derived floor instead of restarting at 1.
        guard case .batch(let b) = box.nextBatch(maxReadings: 10, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(b.first >= 1_764_169_999_000 * 1000)
    }

    @Test func aFullDiskHoldsReadingsAndRetriesInsteadOfDroppingThem() throws {
        let dir = TestKit.tempDir()
        let box = try makeOutbox(dir) { $0.commitInterval = .milliseconds(10) }
        box.append(readings(1...10))
        box.flush()
        let pages = try #require(try SQLiteDB(path: "\(dir)/outbox.db").scalarInt("PRAGMA page_count"))
        box.setMaxPageCount(Int(pages))
        box.start()
        defer { box.stop() }
        // Random values: segments that need new pages.
        let ticket = box.append((0..<20_000).map { i in Reading(device: "d", metric: "m", time: Int64(i), value: .number(Double.random(in: 0..<1))) })
        #expect(!box.waitProcessed(ticket, timeout: .milliseconds(1500)), "nothing is acknowledged while the disk is full")
        #expect(box.stats.commitFailures > 0)
        #expect(box.stats.evicted["write_error"] == nil)
        box.setMaxPageCount(1_000_000)
        #expect(box.waitProcessed(ticket, timeout: .seconds(5)))
        #expect(box.stats.committed == 20_010, "every reading held during the outage was committed")
    }

    @Test func newerSchemaIsRefused() throws {
        let dir = TestKit.tempDir()
        do { _ = try makeOutbox(dir) }
        let db = try SQLiteDB(path: "\(dir)/outbox.db")
        try db.exec("PRAGMA user_version=99")
        #expect(throws: OutboxError.self) { _ = try makeOutbox(dir) }
    }

    @Test func corruptSegmentIsQuarantinedNotBlocking() throws {
        let dir = TestKit.tempDir()
        do {
            let box = try makeOutbox(dir) { $0.maxSegmentReadings = 100 }
            box.append(readings(1...300))
            box.flush()
            box.close()
        }
        // Flip a byte inside the second segment's blob.
        let db = try SQLiteDB(path: "\(dir)/outbox.db")
        try db.exec("UPDATE segment SET data = CAST(substr(data, 1, 20) || X'FF' || substr(data, 22) AS BLOB) WHERE first_seq = 101")
        let box = try makeOutbox(dir)
        guard case .batch(let b1) = box.nextBatch(maxReadings: 100, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(values(box.readings(of: b1)!) == Array(1...100))
        box.ack(b1)
        guard case .batch(let b2) = box.nextBatch(maxReadings: 100, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(box.readings(of: b2) == nil) // corrupt: dropped and counted
        #expect(box.stats.evicted["corrupt"] == 100)
        box.ack(b2)
        guard case .batch(let b3) = box.nextBatch(maxReadings: 100, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(values(box.readings(of: b3)!) == Array(201...300))
    }

    /// A corrupt segment inside a batch costs its own readings only: the rest of the batch goes.
    @Test func corruptSegmentInsideABatchDropsOnlyItsReadings() throws {
        let dir = TestKit.tempDir()
        do {
            let box = try makeOutbox(dir) { $0.maxSegmentReadings = 100 }
            box.append(readings(1...300))
            box.flush()
            box.close()
        }
        let db = try SQLiteDB(path: "\(dir)/outbox.db")
        try db.exec("UPDATE segment SET data = CAST(substr(data, 1, 20) || X'FF' || substr(data, 22) AS BLOB) WHERE first_seq = 101")
        let box = try makeOutbox(dir)
        guard case .batch(let b) = box.nextBatch(maxReadings: 300, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(values(box.readings(of: b) ?? []) == Array(1...100) + Array(201...300))
        #expect(box.stats.evicted["corrupt"] == 100)
        // Quarantine drops the batch record that covered the bad segment: the same range is
        // formed again (same id, same readings: a whole resent batch, which the guarantee allows).
        box.ack(b)
        guard case .batch(let again) = box.nextBatch(maxReadings: 300, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(again.first == b.first && again.last == b.last)
        #expect(values(box.readings(of: again) ?? []) == Array(1...100) + Array(201...300))
        box.ack(again)
        #expect(box.stats.bufferedReadings == 0)
        #expect(box.stats.evicted["corrupt"] == 100, "counted once")
    }
}
