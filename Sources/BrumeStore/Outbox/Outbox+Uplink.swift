import BrumeCore
import CSQLite
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif


extension Outbox {
    // MARK: - read side (uplink)

    /// Batches recorded but not yet acknowledged, oldest first. After a
    /// restart or reconnect these are resent, unchanged, before new ones.
    public func unackedBatches(uplink: String = "") -> [BatchRecord] {
        dbLock.withLock { _ in store.unackedBatches(uplink: store.key(uplink)) }
    }

    public enum NextBatch: Sendable {
        case batch(BatchRecord)
        /// Not enough readings yet; ask again at this time (ms since epoch) or on the next commit.
        case waitUntil(Int64)
        case empty
    }

    /// Forms and records the next batch after everything already batched:
    /// up to `maxReadings` readings, or fewer once the oldest has waited `maxDelayMillis`.
    ///
    /// Lanes: with `lane`, only sequence numbers in it are batched, after the last batch
    /// recorded in it. After an outage the sync loop runs a live lane (from the head at the
    /// time it reconnected) ahead of a `backlog` lane (the rest): backlog batches are flagged
    /// historical and formed without waiting for `maxDelayMillis`.
    public func nextBatch(uplink: String = "", maxReadings: Int, maxDelayMillis: Int64,
                          lane: ClosedRange<Int64> = 0...Int64.max, backlog: Bool = false) -> NextBatch {
        dbLock.withLock { _ in
            store.nextBatch(uplink: store.key(uplink), maxReadings: maxReadings, maxDelayMillis: maxDelayMillis, lane: lane, backlog: backlog)
        }
    }

    /// The highest sequence number committed.
    public var lastCommittedSeq: Int64 { dbLock.withLock { _ in store.nextSeq - 1 } }

    /// The first sequence number committed less than `millis` ago (monotonic clock), or the next
    /// one to be committed: where a live lane starts after an outage.
    public func firstSeq(committedWithin millis: Int64) -> Int64 {
        dbLock.withLock { _ in
            let since = store.mono() &- UInt64(max(0, millis)) &* 1_000_000
            var lo = store.monoHead, hi = store.monoTimes.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if store.monoTimes[mid] < since { lo = mid + 1 } else { hi = mid }
            }
            return lo < store.monoFirsts.count ? store.monoFirsts[lo] : store.nextSeq
        }
    }

    /// Readings of this outbox not yet acknowledged by each uplink.
    public func backlog() -> [String: Int64] {
        dbLock.withLock { _ in store.uplinkKeys.reduce(into: [:]) { $0[$1] = max(0, store.nextSeq - 1 - store.cursor[$1, default: store.doneSeq]) } }
    }

    /// A batch the uplink's endpoint refused for good (an HTTP 4xx other than 401/408/429):
    /// kept in the dead-letter table (counted, visible, exportable) and acknowledged, so it
    /// does not block the queue.
    public func deadLetter(_ batch: BatchRecord, status: Int, response: String, body: [UInt8]) {
        dbLock.withLock { _ in store.deadLetter(batch, status: status, response: response, body: body) }
    }

    public struct DeadLetter: Sendable {
        public var id: Int64
        public var uplink: String
        public var first: Int64
        public var last: Int64
        public var status: Int
        public var response: String
        public var atMillis: Int64
        public var body: [UInt8]
    }

    /// The dead letters, oldest first.
    public func deadLetters(limit: Int = 1000) -> [DeadLetter] {
        dbLock.withLock { _ in store.deadLetters(limit: limit) }
    }

    /// The readings of a recorded batch (nil when it was evicted meanwhile).
    public func readings(of batch: BatchRecord) -> [Reading]? {
        dbLock.withLock { _ in store.readings(first: batch.first, last: batch.last) }
    }

    /// The uplink acknowledged this batch: its readings leave the outbox.
    /// Replaces a recorded, unacknowledged batch by two: its first `firstCount` readings and
    /// the rest, both formed by this run (new ids: the old one was never accepted). Used when
    /// the endpoint finds a batch too large. nil if the batch is no longer recorded.
    public func split(_ batch: BatchRecord, firstCount: Int) -> (BatchRecord, BatchRecord)? {
        dbLock.withLock { _ in store.split(batch, firstCount: firstCount) }
    }

    public func ack(_ batch: BatchRecord) {
        dbLock.withLock { _ in store.ack(batch) }
    }

    /// The outbox's own name for an uplink ("" and the first configured name are the primary).
    public func uplinkKey(_ name: String) -> String { dbLock.withLock { _ in store.key(name) } }

    /// The newest readings still in the outbox (undelivered), oldest first, at most `limit`.
    public func tailReadings(limit: Int) -> [Reading] {
        dbLock.withLock { _ in store.tailReadings(limit: limit) }
    }

    /// Drops everything buffered and not yet acknowledged (`brume buffer purge`):
    /// counted as evicted with reason "purged". Returns how many readings went.
    @discardableResult
    public func purge() -> Int64 {
        flush()
        return dbLock.withLock { _ in store.purge() }
    }

    /// Periodic housekeeping (age eviction); the writer thread runs it every second.
    public func runMaintenance() {
        dbLock.withLock { _ in store.evictByAge() }
    }

    public var stats: OutboxStats {
        let p = pendingLock.withLock { pending.count }
        var s = dbLock.withLock { _ in store.stats() }
        s.pendingInMemory = p
        return s
    }
}
