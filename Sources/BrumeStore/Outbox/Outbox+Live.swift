import BrumeCore
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// One uplink's live lane: batches taken from the readings still in memory, so that what the
/// cloud acknowledges within the hold window is never written (an SD card at 1–1,000 readings
/// per second). Guarded by `Outbox.pendingLock`.
struct LiveLane {
    /// The uplink takes live batches (connected, nothing older to send first).
    var active = false
    /// The last sequence number handed out to this lane.
    var sentThrough: Int64 = 0
    /// Every sequence number up to here is acknowledged by this uplink (or not carried by it).
    var deliveredThrough: Int64 = 0
    /// Acknowledged live batches beyond `deliveredThrough` (out of order).
    var acked: [ClosedRange<Int64>] = []
    /// Handed out, not yet acknowledged.
    var inflight: [BatchRecord] = []

    func delivered(_ seq: Int64) -> Bool {
        seq <= deliveredThrough || acked.contains { $0.contains(seq) }
    }

    mutating func merge() {
        acked.sort { $0.lowerBound < $1.lowerBound }
        while let r = acked.first, r.lowerBound <= deliveredThrough + 1 {
            deliveredThrough = max(deliveredThrough, r.upperBound)
            acked.removeFirst()
        }
    }
}

/// What the writer took from memory to commit.
struct Taken {
    var readings: [Reading]
    var arrival: [UInt64]
    var holdable: [Bool]
    var firstSeq: Int64
    /// Per uplink (store order): what each lane had acknowledged, at the time of taking.
    var lanes: [LiveLane]
    /// Live batches overlapping these readings, and whether they were acknowledged.
    var liveBatches: [(batch: BatchRecord, acked: Bool)]

    /// Acknowledged by every uplink: not written.
    func delivered(_ seq: Int64) -> Bool { !lanes.isEmpty && lanes.allSatisfy { $0.delivered(seq) } }
}

extension Outbox {
    /// Held readings wait for the cloud only while every uplink takes live batches.
    var holdActive: Bool {
        options.hold > .zero && !live.isEmpty && live.allSatisfy(\.active)
    }

    private var holdNanos: UInt64 {
        UInt64(options.hold.components.seconds) &* 1_000_000_000 &+ UInt64(options.hold.components.attoseconds / 1_000_000_000)
    }

    /// When the pending readings must be committed: `commitInterval` after the first one, or,
    /// while live lanes run, `hold` after the first held one and `commitInterval` after the first
    /// one that cannot be held (pending is in arrival order).
    func commitDeadlineLocked(interval: UInt64) -> UInt64 {
        guard let head = pendingArrival.first else { return .max }
        guard holdActive else { return head &+ interval }
        var due = head &+ holdNanos
        if let i = pendingHoldable.firstIndex(of: false) { due = min(due, pendingArrival[i] &+ interval) }
        return due
    }

    /// Drops the readings at the head of pending that every uplink acknowledged from memory:
    /// they are delivered and never written. Releases the sources waiting for them.
    func dropDeliveredLocked() {
        guard !live.isEmpty else { return }
        var n = 0
        while n < pending.count, live.allSatisfy({ $0.delivered(pendingFirstSeq + Int64(n)) }) { n += 1 }
        guard n > 0 else { return }
        pending.removeFirst(n)
        pendingArrival.removeFirst(n)
        pendingHoldable.removeFirst(n)
        pendingFirstSeq += Int64(n)
        let through = pendingFirstSeq - 1
        for i in live.indices { live[i].inflight.removeAll { $0.last <= through } }
        // Everything before the remaining pending head is safe (committed or delivered).
        processedTotal = max(processedTotal, appendedTotal - UInt64(pending.count))
        dbLock.withLock { _ in store.skipDelivered(through: through) }
        deliveredFromMemory.add(Int64(n))
        pendingLock.broadcast()
    }

    func takePendingLocked() -> Taken {
        dropDeliveredLocked()
        let lastSeq = pendingFirstSeq + Int64(pending.count) - 1
        var batches: [(batch: BatchRecord, acked: Bool)] = []
        for lane in live {
            for b in lane.inflight where b.first >= pendingFirstSeq && b.last <= lastSeq { batches.append((b, false)) }
        }
        let t = Taken(readings: pending, arrival: pendingArrival, holdable: pendingHoldable, firstSeq: pendingFirstSeq, lanes: live,
                      liveBatches: batches + ackedLiveBatches.filter { $0.first >= pendingFirstSeq && $0.last <= lastSeq }.map { ($0, true) })
        ackedLiveBatches.removeAll { $0.last <= lastSeq }
        pending.removeAll(keepingCapacity: true)
        pendingArrival.removeAll(keepingCapacity: true)
        pendingHoldable.removeAll(keepingCapacity: true)
        pendingFirstSeq = lastSeq + 1
        // Committed: the lanes' in-flight batches are recorded now; they will be acknowledged
        // in the database.
        for i in live.indices { live[i].inflight.removeAll { $0.last <= lastSeq } }
        return t
    }

    /// A commit failed from `index` on: those readings go back in front, with their numbers.
    func putBackLocked(_ t: Taken, from index: Int) {
        let back = t.readings.count - index
        guard back > 0 else { return }
        pending.insert(contentsOf: t.readings[index...], at: 0)
        pendingArrival.insert(contentsOf: repeatElement(monotonicNanos(), count: back), at: 0)
        pendingHoldable.insert(contentsOf: t.holdable[index...], at: 0)
        pendingFirstSeq = t.firstSeq + Int64(index)
    }

    // MARK: - the live lanes (called by the sync loops)

    private func laneIndex(_ uplink: String) -> Int? {
        let k = dbLock.withLock { _ in store.key(uplink) }
        return dbLock.withLock { _ in store.uplinkKeys.firstIndex(of: k) }
    }

    /// The uplink takes (true) or stops taking (false) live batches. Stopping forgets what is in
    /// flight (it goes again, from memory or from the database).
    public func setLive(uplink: String, active: Bool) {
        guard let i = laneIndex(uplink) else { return }
        pendingLock.withLock {
            guard live[i].active != active || !active else { return }
            if active {
                // From the first reading not yet committed; what was committed is the database lane's.
                live[i].sentThrough = max(live[i].deliveredThrough, pendingFirstSeq - 1)
                live[i].deliveredThrough = max(live[i].deliveredThrough, pendingFirstSeq - 1)
            } else {
                live[i].sentThrough = live[i].deliveredThrough
                live[i].inflight.removeAll()
            }
            live[i].active = active
            pendingLock.broadcast()
        }
    }

    /// The next live batch for an uplink: up to `maxReadings` readings from memory after the
    /// last one handed to it, or fewer once the oldest waited `maxDelayMillis`. Not recorded
    /// (its id is unique by its run); recorded if its readings are committed before its outcome.
    public func nextLiveBatch(uplink: String, maxReadings: Int, maxDelayMillis: Int64) -> (BatchRecord, [Reading])? {
        guard let i = laneIndex(uplink) else { return nil }
        let run = dbLock.withLock { _ in store.run }
        let key = dbLock.withLock { _ in store.key(uplink) }
        return pendingLock.withLock {
            guard live[i].active else { return nil }
            let from = max(live[i].sentThrough + 1, pendingFirstSeq)
            let offset = Int(from - pendingFirstSeq)
            guard offset < pending.count else { return nil }
            let available = pending.count - offset
            let waited = (monotonicNanos() &- pendingArrival[offset]) / 1_000_000
            if available < maxReadings && Int64(clamping: waited) < maxDelayMillis { return nil }
            let n = min(maxReadings, available)
            let rec = BatchRecord(first: from, last: from + Int64(n) - 1, historical: false, uplink: key, run: run)
            live[i].sentThrough = rec.last
            live[i].inflight.append(rec)
            return (rec, Array(pending[offset..<(offset + n)]))
        }
    }

    /// The endpoint accepted a live batch. Its readings, if still in memory, are dropped once
    /// every uplink has them; if they were committed meanwhile, the database acknowledgement.
    public func ackLive(_ batch: BatchRecord) {
        guard let i = laneIndex(batch.uplink) else { return }
        let committed: Bool = pendingLock.withLock {
            live[i].inflight.removeAll { $0 == batch }
            if batch.last < pendingFirstSeq { return true }
            live[i].acked.append(batch.first...batch.last)
            live[i].merge()
            ackedLiveBatches.append(batch)
            dropDeliveredLocked()
            return false
        }
        if committed { ack(batch) }
    }
}
