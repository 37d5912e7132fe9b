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
    /// The uplink is connected (possibly draining a backlog).
    var connected = false
    /// The last sequence number handed out to this lane.
    var sentThrough: Int64 = 0
    /// Readings per live batch the uplink asks for: an append wakes it once that many wait
    /// (its 50 ms tick takes smaller batches when their delay is up).
    var want = 1
    /// Every sequence number up to here is acknowledged by this uplink (or not carried by it).
    var deliveredThrough: Int64 = 0
    /// Acknowledged live batches beyond `deliveredThrough` (out of order).
    var acked: [ClosedRange<Int64>] = []
    /// Handed out, not yet acknowledged.
    var inflight: [BatchRecord] = []
    /// After a reconnect: the batches that were in flight, to go again exactly (same range,
    /// same id) before new ones.
    var resend: [BatchRecord] = []

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

    /// When the pending readings must be committed (pending is in arrival order):
    /// `commitInterval` after the first one that cannot be held; for held ones, `hold` after the
    /// first while live lanes run (the cloud may still acknowledge them), else at most one
    /// second (the cloud is away: one commit per second keeps an SD card alive at any rate).
    func commitDeadlineLocked(interval: UInt64) -> UInt64 {
        guard let head = pendingArrival.first else { return .max }
        guard holdNanos > 0 else { return head &+ interval }
        // Live lanes: the hold. Every uplink away: a second. An uplink draining a backlog: the
        // commit interval (its live lane reads committed readings and sends them first).
        let away = !live.contains(where: \.connected)
        let window = holdActive ? holdNanos : away ? min(holdNanos, max(interval, 1_000_000_000)) : interval
        var due = pendingHoldable[0] ? head &+ window : head &+ interval
        if let i = pendingHoldable.firstIndex(of: false) { due = min(due, pendingArrival[i] &+ interval) }
        return due
    }

    /// After `added` readings were appended: does a live lane now have a full batch waiting?
    /// (Waking the uplinks on every append cost more than the rest of a reading's path at
    /// 100,000 readings/s.)
    func liveBatchReadyLocked(added: Int) -> Bool {
        let last = pendingFirstSeq + Int64(pending.count) - 1
        return live.contains { lane in
            let waiting = last - max(lane.sentThrough, pendingFirstSeq - 1)
            return waiting >= Int64(lane.want) && waiting - Int64(added) < Int64(lane.want)
        }
    }

    /// A source waits for its readings to be safe and asked for an early commit (after the
    /// minimum spacing): without a hold, any waiting source; with one, a source whose broker's
    /// window is full (`commitSoon`).
    var urgentCommitDueLocked: Bool {
        urgent && !pending.isEmpty
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
        // Acknowledged live batches matter to a commit of readings still in memory only (a soak
        // at 10,000 readings/s that never commits grew this list by every batch).
        ackedLiveBatches.removeAll { $0.first <= through }
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
        recordedThrough = pendingFirstSeq - 1
        let t = Taken(readings: pending, arrival: pendingArrival, holdable: pendingHoldable, firstSeq: pendingFirstSeq, lanes: live,
                      liveBatches: batches + ackedLiveBatches.filter { $0.first >= pendingFirstSeq && $0.last <= lastSeq }.map { ($0, true) })
        ackedLiveBatches.removeAll { $0.last <= lastSeq }
        pending.removeAll(keepingCapacity: true)
        pendingArrival.removeAll(keepingCapacity: true)
        pendingHoldable.removeAll(keepingCapacity: true)
        pendingFirstSeq = lastSeq + 1
        // Committed: the lanes' in-flight batches are recorded now; they will be acknowledged
        // in the database.
        for i in live.indices {
            live[i].inflight.removeAll { $0.last <= lastSeq }
            live[i].resend.removeAll { $0.last <= lastSeq }
        }
        return t
    }

    /// A commit failed from `index` on: those readings go back in front, with their numbers.
    func putBackLocked(_ t: Taken, from index: Int) {
        let back = t.readings.count - index
        guard back > 0 else { return }
        pending.insert(contentsOf: t.readings[index...], at: 0)
        // Their own arrival times: pending stays in arrival order (the commit deadlines rely on it).
        pendingArrival.insert(contentsOf: t.arrival[index...], at: 0)
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
            guard live[i].active != active else { return }
            if active {
                // From the first reading not yet committed; what was committed is the database
                // lane's (live batches among it were recorded, and are resent from there).
                live[i].deliveredThrough = max(live[i].deliveredThrough, pendingFirstSeq - 1)
                live[i].sentThrough = max(live[i].sentThrough, live[i].deliveredThrough)
                // What was in flight when the connection went goes again first, exactly.
                live[i].resend = live[i].inflight.filter { $0.first >= pendingFirstSeq }.sorted { $0.first < $1.first }
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
        // hold = 0: every reading is committed first, and batches come from the database only
        // (a crash then resends them byte for byte).
        guard options.hold > .zero else { return nil }
        // The first reading the database lane has not batched for this uplink. A live batch goes
        // only when that is past everything committed: readings committed and not yet batched
        // (a commit between the sync loop's look at the database and this call, or after a
        // restart of the live lane) go first, from the database — a live batch recorded after
        // them would make the database lane skip them for good (it batches after the last
        // recorded batch). Found by the ACL/size-limit end-to-end test on a loaded CI machine:
        // 200 readings never reached one uplink and stayed in its backlog.
        guard let unbatched = dbLock.withLock({ _ in try? store.firstUnbatched(key, in: 0...Int64.max) }) else { return nil }
        return pendingLock.withLock {
            guard live[i].active else { return nil }
            // A commit in progress: its readings go first, from the database.
            guard !committing else { return nil }
            guard unbatched >= pendingFirstSeq else { return nil }
            // Batches that were in flight at a disconnect: the same again (a consumer dedups them).
            while let again = live[i].resend.first {
                live[i].resend.removeFirst()
                guard again.first >= pendingFirstSeq, again.last < pendingFirstSeq + Int64(pending.count) else { continue }
                let lo = Int(again.first - pendingFirstSeq)
                return (again, clockApplied(Array(pending[lo...(lo + again.count - 1)])))
            }
            let from = max(live[i].sentThrough + 1, pendingFirstSeq)
            let offset = Int(from - pendingFirstSeq)
            guard offset < pending.count else { return nil }
            var available = pending.count - offset
            // Readings stamped by a clock not yet resolved wait for it, in memory or committed.
            if clockMarkedPending, clockUnresolved,
               let m = pending[offset...].firstIndex(where: { $0.unsyncedBootMillis != nil }) {
                available = m - offset
                if available == 0 { return nil }
            }
            live[i].want = max(1, maxReadings)
            let waited = (monotonicNanos() &- pendingArrival[offset]) / 1_000_000
            if available < maxReadings && Int64(clamping: waited) < maxDelayMillis { return nil }
            let n = min(maxReadings, available)
            let rec = BatchRecord(first: from, last: from + Int64(n) - 1, historical: false, uplink: key, run: run)
            live[i].sentThrough = rec.last
            live[i].inflight.append(rec)
            return (rec, clockApplied(Array(pending[offset..<(offset + n)])))
        }
    }

    /// Whether an uplink is connected (the commit window of held readings depends on it).
    public func setConnected(uplink: String, _ connected: Bool) {
        guard let i = laneIndex(uplink) else { return }
        pendingLock.withLock {
            live[i].connected = connected
            pendingLock.broadcast()
        }
    }

    /// Starts an uplink's live lane again from what it has acknowledged, forgetting what was in
    /// flight (a batch too large for the endpoint: smaller ones follow; those readings may then
    /// arrive twice under different ids).
    public func restartLive(uplink: String) {
        guard let i = laneIndex(uplink) else { return }
        pendingLock.withLock {
            live[i].inflight.removeAll()
            live[i].resend.removeAll()
            live[i].sentThrough = live[i].deliveredThrough
        }
    }

    /// The endpoint accepted a live batch. Its readings, if still in memory, are dropped once
    /// every uplink has them; if they were committed meanwhile, the database acknowledgement.
    public func ackLive(_ batch: BatchRecord) {
        guard let i = laneIndex(batch.uplink) else { return }
        var alsoRecorded = false
        let committed: Bool = pendingLock.withLock {
            live[i].inflight.removeAll { $0 == batch }
            // Its first readings committed and recorded, the rest put back by a failed commit:
            // the row is acknowledged too (the memory path below covers the rest).
            alsoRecorded = batch.first < pendingFirstSeq && !(committing && batch.first > recordedThrough)
            if batch.last < pendingFirstSeq {
                // Taken by a commit still running and not yet recorded by it: its row does not
                // exist yet (a batch already recorded is acknowledged at once, as before).
                if committing && batch.first > recordedThrough {
                    acksDuringCommit.append(batch)
                    return false
                }
                return true
            }
            live[i].acked.append(batch.first...batch.last)
            live[i].merge()
            ackedLiveBatches.append(batch)
            dropDeliveredLocked()
            return false
        }
        if committed || alsoRecorded { ack(batch) }
    }

    /// After a commit (done or failed): the live acknowledgements that arrived during it go
    /// through again — to the database if their batch was recorded, to memory if its readings
    /// were put back.
    func settleAcksAfterCommit() {
        let late: [BatchRecord] = pendingLock.withLock {
            let l = acksDuringCommit
            acksDuringCommit.removeAll()
            return l
        }
        for b in late { ackLive(b) }
    }
}
