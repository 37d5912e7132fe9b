import BrumeCore
import BrumeTestKit
import Foundation
import Logging
import Testing
@testable import BrumeStore

@Suite struct MultiUplinkTests {
    func box(_ dir: String, uplinks: [String]) throws -> Outbox {
        try makeOutbox(dir) { $0.uplinks = uplinks }
    }

    func batch(_ b: Outbox, _ uplink: String, max: Int = 100) -> BatchRecord? {
        if case .batch(let r) = b.nextBatch(uplink: uplink, maxReadings: max, maxDelayMillis: 0) { return r }
        return nil
    }

    @Test func aReadingLeavesOnlyWhenEveryUplinkAcknowledgedIt() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, uplinks: ["cloud", "influx"])
        b.append(readings(1...300))
        b.flush()
        // Each uplink has its own cursor: both get batch 1-100 first.
        let c1 = try #require(batch(b, "cloud"))
        let i1 = try #require(batch(b, "influx"))
        #expect(c1.first == 1 && i1.first == 1 && c1.uplink == "cloud" && i1.uplink == "influx")
        let c2 = try #require(batch(b, "cloud"))
        #expect(c2.first == 101)
        b.ack(c1)
        b.ack(c2)
        #expect(b.stats.bufferedReadings == 300, "influx has acknowledged nothing yet: nothing may leave")
        #expect(b.backlog()["influx"] == 300 && b.backlog()["cloud"] == 100)
        b.ack(i1)
        #expect(b.stats.bufferedReadings == 200, "1-100 acknowledged by both")
        #expect(b.stats.delivered == 100)
        // The slow uplink's view survives a restart; the fast one does not resend.
        let again = try box(dir, uplinks: ["cloud", "influx"])
        #expect(again.unackedBatches(uplink: "cloud").isEmpty)
        #expect(again.unackedBatches(uplink: "influx").isEmpty)
        #expect(batch(again, "cloud")?.first == 201, "cloud continues after what it acknowledged")
        #expect(batch(again, "influx")?.first == 101)
    }

    @Test func aNewUplinkStartsWithWhatIsStillBuffered() throws {
        let dir = TestKit.tempDir()
        let one = try box(dir, uplinks: ["cloud"])
        one.append(readings(1...200))
        one.flush()
        let b = try #require(batch(one, "cloud"))
        one.ack(b)
        let two = try box(dir, uplinks: ["cloud", "influx"])
        #expect(batch(two, "influx")?.first == 101, "the new uplink does not get what left before it existed")
        #expect(batch(two, "cloud")?.first == 101)
    }

    @Test func evictionMovesEveryCursor() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, uplinks: ["cloud", "influx"])
        b.append(readings(1...500))
        b.flush()
        _ = batch(b, "cloud")
        #expect(b.purge() == 500)
        b.append(readings(501...550))
        b.flush()
        #expect(batch(b, "cloud")?.first == 501)
        #expect(batch(b, "influx")?.first == 501)
    }

    @Test func aDeadLetterIsKeptCountedAndAcknowledged() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, uplinks: ["cloud"])
        b.append(readings(1...150))
        b.flush()
        let r = try #require(batch(b, "cloud"))
        b.deadLetter(r, status: 400, response: "bad point", body: Array("x y=1".utf8))
        #expect(b.stats.evicted["dead_letter"] == 100)
        #expect(b.stats.bufferedReadings == 50)
        let dl = b.deadLetters()
        #expect(dl.count == 1 && dl[0].status == 400 && dl[0].first == 1 && dl[0].last == 100 && dl[0].body == Array("x y=1".utf8))
        #expect(batch(b, "cloud")?.first == 101)
        let rows = try OutboxInspector(path: "\(dir)/outbox.db").deadLetters()
        #expect(rows.count == 1 && rows[0].response == "bad point")
    }

    /// Reordering or renaming uplinks must not hand one uplink's cursor to another.
    @Test func cursorsFollowTheUplinkNamesNotTheirOrder() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, uplinks: ["a", "b"])
        b.append(readings(1...300))
        b.flush()
        let a1 = try #require(batch(b, "a"))
        let a2 = try #require(batch(b, "a"))
        b.ack(a1)
        b.ack(a2)
        let b1 = try #require(batch(b, "b"))
        #expect(b1.first == 1)
        let swapped = try box(dir, uplinks: ["b", "a"])
        #expect(swapped.unackedBatches(uplink: "b") == [b1], "b keeps its own unacknowledged batch")
        #expect(batch(swapped, "a")?.first == 201, "a continues after what it acknowledged")
        // A removed uplink is forgotten; the remaining one alone decides what leaves.
        let alone = try box(dir, uplinks: ["a"])
        #expect(alone.unackedBatches(uplink: "b").isEmpty)
    }

    /// Eviction extends its cut over the batches it crosses, of every uplink, until stable.
    @Test func evictionNeverCutsAnotherUplinksBatch() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, uplinks: ["a", "b"])
        b.append(readings(1...50))
        b.flush()
        let a1 = try #require(batch(b, "a", max: 10))   // 1-10
        _ = try #require(batch(b, "a", max: 20))        // 11-30
        let b1 = try #require(batch(b, "b", max: 25))   // 1-25
        _ = a1
        b.append(readings(51...60))
        b.flush()
        // Drop the oldest with a purge-like cut at 5 through the store: every crossing batch goes whole.
        b.dbLockedEvict(through: 5)
        #expect(b.unackedBatches(uplink: "a").isEmpty && b.unackedBatches(uplink: "b").isEmpty)
        #expect(batch(b, "a")?.first == 31, "a's cut moved past its batch 11-30 (crossed after extending over b's 1-25)")
        #expect(batch(b, "b")?.first == 31)
        _ = b1
    }

    @Test func deadLettersAreBounded() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, uplinks: ["cloud"])
        b.append(readings(1...1010))
        b.flush()
        for _ in 0..<1010 {
            guard let r = batch(b, "cloud", max: 1) else { Issue.record("no batch"); return }
            b.deadLetter(r, status: 400, response: "no", body: [1])
        }
        let dl = b.deadLetters(limit: 5000)
        #expect(dl.count == 1000, "the newest 1,000 are kept")
        #expect(dl.first?.first == 11 && dl.last?.first == 1010)
        #expect(b.stats.evicted["dead_letter"] == 1010, "every one is counted")
    }

    /// An outbox written by the single-uplink version (schema 1) opens, migrates, and keeps its
    /// recorded batches: they are resent unchanged by the primary uplink.
    @Test func aVersionOneOutboxMigrates() throws {
        let dir = TestKit.tempDir()
        let path = "\(dir)/outbox.db"
        do {
            let db = try SQLiteDB(path: path)
            try db.exec("PRAGMA journal_mode=WAL")
            try db.exec(Store.migrations[0])
            try db.exec("INSERT INTO batch(first_seq, last_seq, hist, acked) VALUES (1, 10, 0, 0)")
            try db.exec("PRAGMA user_version=1")
        }
        let b = try box(dir, uplinks: ["cloud", "influx"])
        #expect(b.unackedBatches(uplink: "cloud") == [BatchRecord(first: 1, last: 10, historical: false, uplink: "cloud")])
        #expect(b.unackedBatches(uplink: "influx").isEmpty)
        #expect(try SQLiteDB(path: path).scalarInt("PRAGMA user_version") == Store.schemaVersion)
    }
}
