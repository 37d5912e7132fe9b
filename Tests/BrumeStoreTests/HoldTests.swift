import BrumeCore
import BrumeTestKit
import Foundation
import Synchronization
import Logging
import Testing
@testable import BrumeStore

/// Field rates: readings the cloud acknowledges within the hold window are never written.
@Suite struct HoldTests {
    func box(_ dir: String, uplinks: [String] = ["cloud"], hold: Duration = .seconds(2)) throws -> Outbox {
        var o = OutboxOptions(path: "\(dir)/outbox.db")
        o.uplinks = uplinks
        o.hold = hold
        let b = try Outbox(options: o, logger: Logger(label: "test"))
        b.start()
        return b
    }

    func r(_ i: Int) -> Reading { Reading(device: "d", metric: "seq", time: 1_764_169_999_000 + Int64(i), value: .number(Double(i))) }

    @Test func readingsAcknowledgedFromMemoryAreNeverWritten() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir)
        defer { b.stop(); b.close() }
        b.setLive(uplink: "cloud", active: true)
        var sent = 0
        for round in 0..<20 {
            let ticket = b.append((round * 10 + 1...round * 10 + 10).map(r), holdable: true)
            guard let (batch, readings) = b.nextLiveBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no live batch"); return }
            #expect(readings.count == 10 && batch.first == Int64(round * 10 + 1))
            sent += readings.count
            b.ackLive(batch)
            // The source is released by the cloud's acknowledgement, long before any commit.
            #expect(b.waitProcessed(ticket, timeout: .milliseconds(500)))
        }
        usleep(300_000)
        let s = b.stats
        #expect(s.segments == 0 && s.commits == 0, "nothing written: \(s.segments) segments, \(s.commits) commits")
        #expect(b.deliveredFromMemory.current == 200 && sent == 200)
        #expect(s.bufferedReadings == 0 && s.pendingInMemory == 0)
    }

    /// At field rates a reading waits in memory ~100 ms for its live batch and the cloud's
    /// answer; the writer's once-a-second maintenance must not commit it meanwhile (it did: a
    /// held reading was written whenever the maintenance tick caught it, and the database lane
    /// then held the live lane back for its batch delay, so nearly every reading was written).
    @Test func maintenanceNeverCommitsHeldReadings() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir)
        defer { b.stop(); b.close() }
        b.setLive(uplink: "cloud", active: true)
        b.setConnected(uplink: "cloud", true)
        for i in 1...12 {
            let ticket = b.append([r(i)], holdable: true)
            // Its source waits as the MQTT gate does: in 25 ms slices (each wakes the writer).
            let gate = Thread { while !b.waitProcessed(ticket, timeout: .milliseconds(25)) {} }
            gate.start()
            usleep(150_000) // the live batch delay and the cloud's round trip
            guard let (batch, _) = b.nextLiveBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no live batch"); return }
            b.ackLive(batch)
            usleep(100_000)
        }
        #expect(b.stats.commits == 0, "\(b.stats.commits) commits of readings the cloud acknowledged from memory")
        #expect(b.deliveredFromMemory.current == 12)
    }

    @Test func whatTheCloudDidNotAcknowledgeInTimeIsCommittedWithItsBatchRecorded() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, hold: .milliseconds(200))
        defer { b.stop(); b.close() }
        b.setLive(uplink: "cloud", active: true)
        b.append((1...10).map(r), holdable: true)
        guard let (batch, _) = b.nextLiveBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no live batch"); return }
        #expect(TestKit.waitUntil(timeout: 5) { b.stats.segments == 1 })
        // The batch that went is recorded as it went: same range, same id after a restart.
        #expect(b.unackedBatches(uplink: "cloud") == [batch])
        b.ackLive(batch) // the answer comes late: a database acknowledgement
        #expect(b.stats.doneSeq == 10 && b.stats.bufferedReadings == 0)
    }

    @Test func readingsThatCannotBeHeldAreCommittedWithinTheCommitInterval() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir)
        defer { b.stop(); b.close() }
        b.setLive(uplink: "cloud", active: true)
        let ticket = b.append((1...5).map(r), holdable: false) // a serial line: no second chance
        #expect(b.waitProcessed(ticket, timeout: .seconds(2)))
        #expect(b.stats.segments == 1)
    }

    /// The cloud away: held readings are committed once a second (one commit per second keeps a
    /// card alive at any rate, however many wait), or soon when their source asks (its broker's
    /// in-flight window is full: `commitSoon`).
    @Test func withoutLiveLanesHeldReadingsAreCommittedWithinASecond() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir)
        defer { b.stop(); b.close() }
        let t0 = ContinuousClock.now
        let ticket = b.append((1...5).map(r), holdable: true)
        #expect(b.waitProcessed(ticket, timeout: .seconds(3)))
        let waited = ContinuousClock.now - t0
        #expect(waited >= .milliseconds(900) && waited < .seconds(2), "committed after \(waited)")
        #expect(b.stats.segments == 1)
        let many = b.append((6...1005).map(r), holdable: true) // 1,000 wait: still one commit a second
        let t1 = ContinuousClock.now
        #expect(!b.waitProcessed(many, timeout: .milliseconds(600)))
        #expect(b.waitProcessed(many, timeout: .seconds(3)))
        #expect(ContinuousClock.now - t1 >= .milliseconds(900))
        #expect(b.stats.segments == 2)
        let stalled = b.append((1006...1025).map(r), holdable: true)
        let t2 = ContinuousClock.now
        b.commitSoon() // the source's broker stopped sending: commit now
        #expect(b.waitProcessed(stalled, timeout: .seconds(3)))
        #expect(ContinuousClock.now - t2 < .milliseconds(500))
    }

    /// Two uplinks: a reading leaves memory unwritten only when both have it; the one that had
    /// it in time is not sent it again from the database.
    @Test func aReadingIsDroppedOnlyWhenEveryUplinkHasIt() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, uplinks: ["cloud", "influx"], hold: .milliseconds(200))
        defer { b.stop(); b.close() }
        b.setLive(uplink: "cloud", active: true)
        b.setLive(uplink: "influx", active: true)
        b.append((1...10).map(r), holdable: true)
        let c = try #require(b.nextLiveBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0))
        _ = try #require(b.nextLiveBatch(uplink: "influx", maxReadings: 500, maxDelayMillis: 0))
        b.ackLive(c.0) // influx never answers
        #expect(TestKit.waitUntil(timeout: 5) { b.stats.segments == 1 })
        #expect(b.unackedBatches(uplink: "cloud").isEmpty, "cloud had them: not sent again")
        #expect(b.unackedBatches(uplink: "influx").count == 1, "influx's live batch recorded, to be resent")
        #expect(b.backlog()["cloud"] == 0)
        guard case .empty = b.nextBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("cloud would get them twice"); return }
    }

    /// Sequence numbers after readings that were never written: batch ids stay unique and the
    /// database lane picks up what was committed, after a restart too.
    @Test func gapsOfUnwrittenReadingsAreHarmless() throws {
        let dir = TestKit.tempDir()
        var ids: Set<String> = []
        do {
            let b = try box(dir)
            b.setLive(uplink: "cloud", active: true)
            b.append((1...10).map(r), holdable: true)
            let (l, _) = try #require(b.nextLiveBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0))
            ids.insert(l.id(gateway: "g"))
            b.ackLive(l)
            b.setLive(uplink: "cloud", active: false) // the cloud goes away
            b.append((11...20).map(r), holdable: true)
            b.flush()
            guard case .batch(let d) = b.nextBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no batch"); return }
            #expect(d.first >= 11 && values(b.readings(of: d)!) == Array(11...20))
            ids.insert(d.id(gateway: "g"))
            b.stop()
            b.close()
        }
        let b = try box(dir)
        defer { b.stop(); b.close() }
        let again = b.unackedBatches(uplink: "cloud")
        #expect(again.count == 1 && values(b.readings(of: again[0])!) == Array(11...20))
        b.ack(again[0])
        #expect(b.stats.bufferedReadings == 0)
        b.append((21...25).map(r), holdable: false)
        b.flush()
        guard case .batch(let e) = b.nextBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no batch"); return }
        #expect(values(b.readings(of: e)!) == Array(21...25))
        #expect(!ids.contains(e.id(gateway: "g")))
    }

    /// A live batch too large for the endpoint restarts the live lane; if its readings are
    /// committed before the lane goes again, the database lane sends them first: a live batch of
    /// newer readings recorded before them made the database lane skip them for good (200
    /// readings stuck in one uplink's backlog in a CI run).
    @Test func committedReadingsTheLiveLaneGaveBackGoFirstFromTheDatabase() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir, uplinks: ["cloud", "other"])
        defer { b.stop(); b.close() }
        b.setLive(uplink: "cloud", active: true)
        b.append((1...20).map(r), holdable: true)
        _ = try #require(b.nextLiveBatch(uplink: "cloud", maxReadings: 20, maxDelayMillis: 0))
        b.restartLive(uplink: "cloud")          // "too large": smaller live batches will follow
        b.setLive(uplink: "cloud", active: false)
        b.flush()                               // ...but the readings are committed first
        b.setLive(uplink: "cloud", active: true)
        b.append((21...30).map(r), holdable: true)
        #expect(b.nextLiveBatch(uplink: "cloud", maxReadings: 10, maxDelayMillis: 0) == nil,
                "a live batch of 21...30 before the database lane batched 1...20")
        guard case .batch(let db) = b.nextBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no database batch"); return }
        #expect(values(b.readings(of: db)!) == Array(1...20))
        let (live, lr) = try #require(b.nextLiveBatch(uplink: "cloud", maxReadings: 10, maxDelayMillis: 0))
        #expect(values(lr) == Array(21...30))
        b.flush()                               // the live batch is recorded as it went
        b.ack(db)
        b.ackLive(live)
        guard case .empty = b.nextBatch(uplink: "cloud", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("readings left unbatched"); return }
        #expect(b.backlog()[b.uplinkKey("cloud")] == 0, "nothing stuck in this uplink's backlog")
    }

    /// A live batch acknowledged while the commit that records it runs (taken from memory, row
    /// not yet written) is acknowledged once the commit is done. Before, the acknowledgement
    /// found no row, the commit wrote the batch unacknowledged, and an HTTP uplink — which never
    /// reconnects, so never resends — kept everything after it in its backlog for good (seen on
    /// a loaded CI run: InfluxDB's backlog at 30,277 while the cloud was away).
    @Test func aLiveAcknowledgementDuringTheCommitThatRecordsItIsKept() throws {
        let dir = TestKit.tempDir()
        var o = OutboxOptions(path: "\(dir)/outbox.db")
        o.uplinks = ["cloud", "influx"]
        o.hold = .seconds(2)
        let b = try Outbox(options: o, logger: Logger(label: "test"))
        let ackNow = Mutex<BatchRecord?>(nil)
        b.beforeCommitHook = { [unowned b] in
            // The endpoint's answer arrives between the writer's take and its transaction.
            if let x = ackNow.withLock({ v -> BatchRecord? in defer { v = nil }; return v }) { b.ackLive(x) }
        }
        b.start()
        defer { b.stop(); b.close() }
        b.setLive(uplink: "cloud", active: true)
        b.setLive(uplink: "influx", active: true)
        b.append((1...20).map(r), holdable: true)
        let (live, lr) = try #require(b.nextLiveBatch(uplink: "influx", maxReadings: 10, maxDelayMillis: 0))
        #expect(values(lr) == Array(1...10))
        b.setLive(uplink: "cloud", active: false) // the cloud goes away: the readings are committed
        ackNow.withLock { $0 = live }
        b.flush()
        #expect(ackNow.withLock { $0 } == nil, "the hook ran")
        guard case .batch(let rest) = b.nextBatch(uplink: "influx", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no database batch"); return }
        #expect(values(b.readings(of: rest)!) == Array(11...20))
        b.ack(rest)
        #expect(b.backlog()[b.uplinkKey("influx")] == 0, "nothing stuck in InfluxDB's backlog")
        #expect(b.unackedBatches(uplink: b.uplinkKey("influx")).isEmpty, "the live batch is acknowledged in the database")
        #expect(b.backlog()[b.uplinkKey("cloud")] == 20, "the cloud still has all of them to send")
    }

    /// A live batch that spans two segments of one commit is recorded once, with the first: an
    /// acknowledgement that arrives after that segment is stored is not undone by the second
    /// (recording it again wrote it unacknowledged over the acknowledgement).
    @Test func anAcknowledgementBetweenTwoSegmentsOfItsBatchIsKept() throws {
        let dir = TestKit.tempDir()
        var o = OutboxOptions(path: "\(dir)/outbox.db", maxSegmentReadings: 7)
        o.uplinks = ["cloud", "influx"]
        o.hold = .seconds(2)
        let b = try Outbox(options: o, logger: Logger(label: "test"))
        let ackNow = Mutex<BatchRecord?>(nil)
        b.afterSegmentHook = { [unowned b] in
            // The endpoint's answer arrives after the first segment (1...7) is stored.
            if let x = ackNow.withLock({ v -> BatchRecord? in defer { v = nil }; return v }) { b.ackLive(x) }
        }
        // No writer thread: 20 readings would make it commit before the live batch is taken;
        // the commit runs here instead.
        defer { b.close() }
        b.setLive(uplink: "cloud", active: true)
        b.setLive(uplink: "influx", active: true)
        b.append((1...20).map(r), holdable: true)
        // Two live batches in flight: 1...3 (answered later) and 4...10, which spans the segments
        // 1...7 and 8...14 and is answered between them.
        let (first, _) = try #require(b.nextLiveBatch(uplink: "influx", maxReadings: 3, maxDelayMillis: 0))
        let (live, _) = try #require(b.nextLiveBatch(uplink: "influx", maxReadings: 7, maxDelayMillis: 0))
        #expect(first.first == 1 && first.last == 3 && live.first == 4 && live.last == 10)
        b.setLive(uplink: "cloud", active: false)
        ackNow.withLock { $0 = live }
        b.commitPending()
        #expect(ackNow.withLock { $0 } == nil, "the hook ran")
        b.ackLive(first)
        guard case .batch(let rest) = b.nextBatch(uplink: "influx", maxReadings: 500, maxDelayMillis: 0) else { Issue.record("no database batch"); return }
        #expect(values(b.readings(of: rest)!) == Array(11...20))
        b.ack(rest)
        #expect(b.unackedBatches(uplink: b.uplinkKey("influx")).isEmpty, "the live batch stays acknowledged")
        #expect(b.backlog()[b.uplinkKey("influx")] == 0)
    }

    /// A reconnect loses what was in flight: the same batches go again (same range and id,
    /// identical bytes), so a consumer dedups them on the batch id as it does for the database's.
    @Test func liveBatchesInFlightAtADisconnectGoAgainExactly() throws {
        let dir = TestKit.tempDir()
        let b = try box(dir)
        defer { b.stop(); b.close() }
        b.setLive(uplink: "cloud", active: true)
        b.append((1...30).map(r), holdable: true)
        let (x, xr) = try #require(b.nextLiveBatch(uplink: "cloud", maxReadings: 10, maxDelayMillis: 0))
        let (y, yr) = try #require(b.nextLiveBatch(uplink: "cloud", maxReadings: 10, maxDelayMillis: 0))
        b.ackLive(x)
        b.setLive(uplink: "cloud", active: false) // the connection drops with y in flight
        b.setLive(uplink: "cloud", active: true)
        let (y2, y2r) = try #require(b.nextLiveBatch(uplink: "cloud", maxReadings: 10, maxDelayMillis: 0))
        #expect(y2 == y && y2r == yr && y2.id(gateway: "g") == y.id(gateway: "g"))
        let (z, zr) = try #require(b.nextLiveBatch(uplink: "cloud", maxReadings: 10, maxDelayMillis: 0))
        #expect(z.first == 21 && values(zr) == Array(21...30))
        #expect(values(xr) == Array(1...10))
    }

    /// The database lane and the live lane together hand out every reading once, in order,
    /// while commits run on the writer thread and split into several segments (the live lane
    /// must not send newer readings from memory while older ones are half committed: that
    /// overtook them, and the database lane then skipped them for good). Found under load by
    /// the 100k end-to-end test (8,193 out of order) and the live-first test (1,000 stuck).
    @Test func lanesHandOutEveryReadingOnceInOrderWhileCommitsSplit() throws {
        let dir = TestKit.tempDir()
        var o = OutboxOptions(path: "\(dir)/outbox.db", commitInterval: .milliseconds(2), maxSegmentReadings: 7)
        o.hold = .milliseconds(5)
        let b = try Outbox(options: o, logger: Logger(label: "test"))
        b.start()
        defer { b.stop(); b.close() }
        b.setConnected(uplink: "cloud", true)
        let total = 20_000
        let producer = Thread {
            var i = 1
            while i <= total {
                let n = min(Int.random(in: 1...40), total - i + 1)
                b.append((i..<(i + n)).map(r), holdable: true)
                i += n
                if Int.random(in: 0..<8) == 0 { usleep(200) }
            }
        }
        producer.start()
        // The sync loop's order: the database lane first; live batches only once it is empty.
        var next: Int64 = 1, jumps: [String] = []
        var liveOn = false
        let deadline = Date().addingTimeInterval(60)
        while next <= Int64(total) && Date() < deadline {
            var batch: BatchRecord?, fromMemory = false
            switch b.nextBatch(uplink: "cloud", maxReadings: 50, maxDelayMillis: 0) {
            case .batch(let x): batch = x
            case .waitUntil: break
            case .empty:
                if !liveOn { b.setLive(uplink: "cloud", active: true); liveOn = true }
                if let (x, _) = b.nextLiveBatch(uplink: "cloud", maxReadings: 50, maxDelayMillis: 0) { batch = x; fromMemory = true }
            }
            guard let x = batch else { usleep(100); continue }
            if x.first != next { jumps.append("\(fromMemory ? "live" : "db") \(x.first)-\(x.last), expected \(next)") }
            next = max(next, x.last + 1)
            if fromMemory { b.ackLive(x) } else { b.ack(x) }
        }
        #expect(jumps.isEmpty, "batches out of order or with gaps: \(jumps.prefix(5))")
        #expect(next == Int64(total) + 1, "handed out through \(next - 1) of \(total)")
    }
}
