import BrumeCore
import BrumeTestKit
import Foundation
import Testing
@testable import BrumeStore

/// A long outage at field rates leaves an outbox of one-reading segments (one commit per
/// reading). What runs every second or on every acknowledgement must cost the same whatever
/// the backlog: counted in SQLite virtual-machine steps (deterministic, unlike time) on a
/// backlog of 5,000 and of 20,000 segments. bench/outbox-scale.sh times it on 1,000,000.
@Suite(.serialized) struct OutboxScaleTests {
    func fill(_ box: Outbox, _ n: Int) {
        for i in 1...n {
            box.append(Reading(device: "d", metric: "seq", time: 1_764_169_999_000 + Int64(i), value: .number(Double(i))))
            box.flush()
        }
    }

    /// SQLite steps of each hot operation on an outbox of `n` one-reading segments.
    func profile(_ n: Int) throws -> [String: (vm: Int64, fullScan: Int64)] {
        let dir = TestKit.tempDir()
        let clock = ManualClock()
        // One fsync per commit would only make this test slow: what is measured is SQL work.
        let box = try makeOutbox(dir, clock: clock) { $0.synchronous = .normal }
        fill(box, n)
        _ = box.takeSQLSteps()
        var out: [String: (vm: Int64, fullScan: Int64)] = [:]
        func op(_ name: String, _ body: () -> Void) {
            body()
            out[name] = box.takeSQLSteps()
        }
        op("stats") { _ = box.stats }
        op("age eviction (nothing to evict)") { box.runMaintenance() }
        var batch: BatchRecord?
        op("next batch") { if case .batch(let b) = box.nextBatch(maxReadings: 100, maxDelayMillis: 0) { batch = b } }
        let b = try #require(batch)
        op("readings of a batch") { #expect(box.readings(of: b)?.count == 100) }
        op("ack") { box.ack(b) }
        op("readings deep in the backlog") {
            #expect(box.readings(of: BatchRecord(first: Int64(n - 50), last: Int64(n - 41), historical: true))?.count == 10)
        }
        op("append and commit one reading") { fill(box, 1) }
        // Age eviction of the whole backlog walks what it evicts, and works.
        clock.advance(8 * 86_400_000)
        box.runMaintenance()
        #expect(box.stats.segments == 0)
        return out
    }

    @Test func hotPathsCostTheSameWhateverTheBacklog() throws {
        let small = try profile(5_000)
        let large = try profile(20_000)
        for (name, s) in small.sorted(by: { $0.key < $1.key }) {
            let l = try #require(large[name])
            #expect(l.fullScan == 0 && s.fullScan == 0, "\(name): full-scan steps \(s.fullScan) / \(l.fullScan)")
            // A B-tree one level deeper may add a few steps; a scan would add thousands.
            #expect(l.vm <= s.vm + s.vm / 10 + 50, "\(name): \(s.vm) VM steps on 5,000 segments, \(l.vm) on 20,000")
        }
    }

    /// max_bytes bounds the real file (database + WAL), also with one-reading segments whose
    /// row overhead is several times their data.
    @Test func maxBytesBoundsTheRealFileSize() throws {
        let dir = TestKit.tempDir()
        let box = try makeOutbox(dir) { $0.maxBytes = 1 << 20; $0.synchronous = .normal }
        fill(box, 30_000)
        box.close()
        let fm = FileManager.default
        let size = ["outbox.db", "outbox.db-wal"].compactMap { try? fm.attributesOfItem(atPath: "\(dir)/\($0)")[.size] as? Int }.reduce(0, +)
        #expect(size <= 1 << 20, "database + WAL = \(size) bytes with max_bytes = 1 MiB")
        #expect((box.stats.evicted["max_bytes"] ?? 0) > 0)
        #expect(box.stats.bufferedReadings + (box.stats.evicted["max_bytes"] ?? 0) == 30_000)
    }
}
