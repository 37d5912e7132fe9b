import BrumeCore
import CSQLite
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif


/// The durable buffer between sources and uplinks: SQLite in WAL mode,
/// readings group-committed in compact binary segments (see SegmentCodec).
///
/// Durability: a reading is durable once `append` returned *and* the next
/// group commit (at most `commitInterval` later) has run. Readings in memory
/// before that are the documented exposure window of a crash.
///
/// Threads: `append` may be called from any thread (sources); one writer
/// thread commits; the uplink calls the batch functions from its task. One
/// SQLite connection, serialised by `dbLock`.
public final class Outbox: @unchecked Sendable {
    // @unchecked: mutable state is guarded by `pendingLock` (pending*) or `dbLock` (everything in `store`).
    public let options: OutboxOptions
    let logger: Logger
    let now: @Sendable () -> Int64
    /// Storage faults seen while running (see StorageFault).
    let faults = Locked<(commit: StorageFault?, folder: StorageFault?)>((nil, nil))
    /// The outbox file as opened (deleted or replaced under us: a fault).
    let openedIdentity: FileIdentity?

    let pendingLock = ConditionLock()
    /// Readings not yet committed, oldest first, with their sequence numbers (assigned on
    /// arrival: `pendingFirstSeq + index`), arrival times (monotonic ns), and whether they may be
    /// held (their source delivers them again if they are lost: QoS1 MQTT, acknowledged after
    /// commit).
    var pending: [Reading] = []
    var pendingArrival: [UInt64] = []
    var pendingHoldable: [Bool] = []
    var pendingFirstSeq: Int64 = 1
    /// Live lanes (one per uplink, in `store.uplinkKeys` order): batches taken from memory.
    var live: [LiveLane] = []
    /// Live batches acknowledged whose readings are still in memory (recorded as acknowledged if
    /// they are committed after all, because another uplink did not have them in time).
    var ackedLiveBatches: [BatchRecord] = []
    /// Readings every uplink acknowledged from memory: never written.
    public let deliveredFromMemory = Counter()
    var pendingSince: UInt64 { pendingArrival.first ?? 0 }
    var stopping = false
    var writerThread: pthread_t?
    var flushRequested = false
    /// Readings ever appended / ever committed or dropped (tickets for waitProcessed).
    var appendedTotal: UInt64 = 0
    var processedTotal: UInt64 = 0
    /// A source waits for a commit: commit as soon as the minimum spacing allows.
    var urgent = false
    var lastCommitNanos: UInt64 = 0
    /// Readings marked by an unsynchronised clock were appended in this run (live batches then
    /// check for them).
    var clockMarkedPending = false
    /// Readings taken from memory and not yet all in the database: the live lanes wait, or
    /// they would send newer readings ahead of them and record batches past readings no batch
    /// holds yet (the database lane continues after the last recorded batch).
    var committing = false
    /// Live batches acknowledged while a commit that records them was in progress: their row
    /// may not be written yet (acknowledging it then found nothing, the commit wrote it
    /// unacknowledged, and an HTTP uplink — which never reconnects — kept it in its backlog for
    /// good). Acknowledged once the commit is done (`settleAcksAfterCommit`).
    var acksDuringCommit: [BatchRecord] = []
    /// During a commit: its segments are stored (and their live batches recorded) through here.
    var recordedThrough: Int64 = 0
    /// Tests only: runs on the writer between taking readings from memory and writing them,
    /// and after each stored segment.
    var beforeCommitHook: (@Sendable () -> Void)?
    var afterSegmentHook: (@Sendable () -> Void)?

    let dbLock = Mutex<Void>(())
    let store: Store

    let commitSignal: AsyncStream<Void>.Continuation
    /// Yields (coalesced) after each commit that added readings.
    public let commits: AsyncStream<Void>

    public let appendBlockedNanos = Counter()
    /// Monotonic time of the writer thread's last loop (the watchdog checks it).
    public let writerHeartbeat = Atomic<UInt64>(monotonicNanos())

    /// How long the writer has not looked in. The heartbeat is read before the clock: the
    /// writer may store a newer one between the two reads, never a later one than "now".
    public func writerStalledNanos() -> UInt64 {
        let beat = writerHeartbeat.load(ordering: .acquiring)
        let now = monotonicNanos()
        return now > beat ? now - beat : 0
    }

    /// `now`: the wall clock (ms); `monotonic`: a clock that never jumps (ns). Tests pass
    /// both, advancing together, or only the first to simulate a wall-clock jump.
    public init(options: OutboxOptions, logger: Logger, now: @escaping @Sendable () -> Int64 = wallClockMillis,
                monotonic: @escaping @Sendable () -> UInt64 = monotonicNanos) throws(OutboxError) {
        self.options = options
        self.logger = logger
        self.now = now
        (commits, commitSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        do {
            store = try Store.open(options: options, logger: logger, now: now, monotonic: monotonic)
        } catch let e as OutboxError {
            throw e
        } catch {
            throw OutboxError(description: "\(error)")
        }
        openedIdentity = FileIdentity.of(options.path)
        pendingFirstSeq = store.nextSeq
        live = store.uplinkKeys.map { _ in LiveLane() }
    }

    // MARK: - lifecycle

    public func start() {
        pendingLock.withLock { stopping = false }
        writerThread = DedicatedThread.start("outbox-writer") { self.writerLoop() }
    }

    /// Commits everything pending and stops the writer thread.
    public func stop() {
        pendingLock.withLock {
            stopping = true
            pendingLock.broadcast()
        }
        if let t = writerThread {
            pthread_join(t, nil)
            writerThread = nil
        }
        commitPending()
        commitSignal.finish()
    }

    /// Closes the database (after `stop`). Checkpoints the WAL.
    public func close() {
        dbLock.withLock { _ in store.close() }
    }

    // MARK: - write side

    /// Hands readings to the outbox. Blocks (backpressure) while more than
    /// `maxPendingReadings` wait for the writer. `holdable`: their source delivers them again
    /// if they are lost before they are safe (QoS1 MQTT acknowledged after commit), so they may
    /// wait in memory for the cloud's acknowledgement (`hold`) instead of being committed.
    @discardableResult
    public func append(_ readings: [Reading], holdable: Bool = false) -> UInt64 {
        pendingLock.lock()
        defer { pendingLock.unlock() }
        if pending.count >= options.maxPendingReadings && !stopping {
            let t0 = monotonicNanos()
            while pending.count >= options.maxPendingReadings && !stopping {
                pendingLock.wait(untilMonotonicNanos: monotonicNanos() + 100_000_000)
            }
            appendBlockedNanos.add(Int64(monotonicNanos() - t0))
        }
        if readings.isEmpty { return appendedTotal }
        let t = monotonicNanos()
        if let clock = options.clock, !clock.isTrusted {
            // Stamped by a clock not yet synchronised: keep their boot-clock time (see ClockState).
            var marked = readings
            if clock.mark(&marked) > 0 { clockMarkedPending = true }
            pending.append(contentsOf: marked)
        } else {
            pending.append(contentsOf: readings)
        }
        pendingArrival.append(contentsOf: repeatElement(t, count: readings.count))
        pendingHoldable.append(contentsOf: repeatElement(holdable, count: readings.count))
        appendedTotal += UInt64(readings.count)
        if pending.count >= options.maxSegmentReadings { pendingLock.broadcast() }
        if holdActive && liveBatchReadyLocked(added: readings.count) { commitSignal.yield() } // live lanes take them
        return appendedTotal
    }

    @discardableResult
    public func append(_ reading: Reading, holdable: Bool = false) -> UInt64 { append([reading], holdable: holdable) }

    /// Waits until every reading appended up to `ticket` is committed (or was
    /// dropped by the limits, counted). Asks the writer to commit early, no
    /// sooner than a tenth of the commit interval after the previous commit.
    public func waitProcessed(_ ticket: UInt64, timeout: Duration) -> Bool {
        let deadline = monotonicNanos() + UInt64(timeout.components.seconds) * 1_000_000_000 + UInt64(timeout.components.attoseconds / 1_000_000_000)
        pendingLock.lock()
        defer { pendingLock.unlock() }
        if processedTotal >= ticket { return true }
        if writerThread == nil {
            pendingLock.unlock()
            commitPending()
            pendingLock.lock()
            return processedTotal >= ticket
        }
        // Without a hold, a waiting source is committed as soon as the minimum spacing allows;
        // with one, readings wait for the cloud or their commit window, unless the source asks
        // (`commitSoon`: its broker's window is full).
        // (Readings that cannot be held — the newest pending one is not holdable — are
        // committed early for a waiter too.)
        if options.hold == .zero || pendingHoldable.last == false { urgent = true }
        pendingLock.broadcast()
        while processedTotal < ticket {
            let now = monotonicNanos()
            if now >= deadline { return false }
            pendingLock.wait(untilMonotonicNanos: min(deadline, now + 100_000_000))
        }
        return true
    }

    /// A source cannot receive more until its readings are safe (its broker's in-flight window
    /// is full): commit after the minimum spacing instead of at the end of the commit window.
    /// Ignored while held readings wait for the cloud's acknowledgement (the hold): it comes
    /// within milliseconds, or the hold's end commits them.
    public func commitSoon() {
        pendingLock.withLock {
            guard !holdActive, !pending.isEmpty else { return }
            urgent = true
            pendingLock.broadcast()
        }
    }

    /// Commits what is pending now (used at shutdown and by tests).
    public func flush() {
        if writerThread == nil {
            commitPending()
            return
        }
        pendingLock.withLock {
            flushRequested = true
            pendingLock.broadcast()
            while flushRequested && !stopping { pendingLock.wait(untilMonotonicNanos: monotonicNanos() + 50_000_000) }
        }
    }

    func writerLoop() {
        let interval = UInt64(options.commitInterval.components.seconds) * 1_000_000_000 + UInt64(options.commitInterval.components.attoseconds / 1_000_000_000)
        var lastMaintenance = monotonicNanos()
        while true {
            writerHeartbeat.store(monotonicNanos(), ordering: .relaxed)
            pendingLock.lock()
            let spacing = max(1_000_000, interval / 10)
            while !stopping && !flushRequested {
                dropDeliveredLocked()
                if pending.count >= options.maxSegmentReadings { break }
                let now = monotonicNanos()
                let due = commitDeadlineLocked(interval: interval)
                if !pending.isEmpty && now >= due { break }
                if urgentCommitDueLocked && now >= lastCommitNanos + spacing { break }
                var deadline = pending.isEmpty ? now + 1_000_000_000 : due
                if urgentCommitDueLocked { deadline = min(deadline, lastCommitNanos + spacing) }
                pendingLock.wait(untilMonotonicNanos: min(deadline, now + 1_000_000_000))
                if monotonicNanos() >= lastMaintenance + 1_000_000_000 { break }
            }
            let stopNow = stopping
            let wasFlush = flushRequested
            // Out of the wait for maintenance only: what waits in memory is not due (held
            // readings wait for the cloud): leave it there.
            let now = monotonicNanos()
            let due = stopNow || wasFlush || pending.count >= options.maxSegmentReadings
                || (!pending.isEmpty && now >= commitDeadlineLocked(interval: interval))
                || (urgentCommitDueLocked && now >= lastCommitNanos + spacing)
            if !due {
                pendingLock.unlock()
                lastMaintenance = monotonicNanos()
                dbLock.withLock { _ in store.evictByAge() }
                checkDataFolder()
                continue
            }
            let taken = takePendingLocked()
            let through = appendedTotal
            committing = !taken.readings.isEmpty
            urgent = false
            pendingLock.broadcast()
            pendingLock.unlock()
            if !taken.readings.isEmpty {
                let done = commit(taken)
                if done < taken.readings.count {
                    // Disk full or I/O error: keep them (ahead of newer ones) and try
                    // again in a second; sources hold their acknowledgements meanwhile,
                    // and `append` blocks once maxPendingReadings are waiting.
                    pendingLock.withLock {
                        putBackLocked(taken, from: done)
                        committing = false
                        if wasFlush { flushRequested = false } // a flush cannot wait for the disk
                        pendingLock.broadcast()
                    }
                    settleAcksAfterCommit()
                    if stopNow { return }
                    var waited = 0
                    while waited < 1000 && pendingLock.withLock({ !stopping }) {
                        usleep(50_000)
                        waited += 50
                    }
                    continue
                }
                pendingLock.withLock {
                    processedTotal = max(processedTotal, through)
                    lastCommitNanos = monotonicNanos()
                    committing = false
                    pendingLock.broadcast()
                }
                settleAcksAfterCommit()
                commitSignal.yield() // the live lanes may go on
            }
            if wasFlush {
                pendingLock.withLock {
                    flushRequested = false
                    pendingLock.broadcast()
                }
            }
            if monotonicNanos() >= lastMaintenance + 1_000_000_000 {
                lastMaintenance = monotonicNanos()
                dbLock.withLock { _ in store.evictByAge() }
                checkDataFolder()
            }
            if stopNow { return }
        }
    }

    func commitPending() {
        let (taken, through): (Taken, UInt64) = pendingLock.withLock {
            let t = takePendingLocked()
            committing = !t.readings.isEmpty
            pendingLock.broadcast()
            return (t, appendedTotal)
        }
        defer {
            pendingLock.withLock { committing = false }
            settleAcksAfterCommit()
        }
        if !taken.readings.isEmpty {
            let done = commit(taken)
            if done < taken.readings.count {
                // Shutting down with the disk still failing: these readings were never
                // acknowledged to an MQTT broker (after_commit), which delivers them again.
                logger.error("outbox: readings not committed at shutdown", metadata: ["readings": "\(taken.readings.count - done)"])
            }
        }
        pendingLock.withLock {
            processedTotal = max(processedTotal, through)
            pendingLock.broadcast()
        }
    }

    /// Commits; returns how many readings (from the front) are stored or refused — the rest
    /// failed and must be retried. Readings every uplink has acknowledged from memory are not
    /// written (their sequence numbers stay a gap); live batches among them are recorded as
    /// they went, acknowledged or not, in the same transaction as their segment.
    @discardableResult
    func commit(_ taken: Taken) -> Int {
        beforeCommitHook?()
        // The file was deleted or replaced under us: what is committed now would be lost with
        // it, so nothing is committed (nor acknowledged to a source) until the restart.
        if faults.withLock({ $0.folder != nil }) { return 0 }
        var start = 0
        let readings = taken.readings
        // Each live batch is recorded once, with the first stored segment it overlaps: recorded
        // again with a later segment (INSERT OR REPLACE) it would undo an acknowledgement that
        // came in between.
        var recorded = Set<BatchRecord>()
        while start < readings.count {
            // A run of readings not yet acknowledged by every uplink, at most one segment long.
            while start < readings.count, taken.delivered(taken.firstSeq + Int64(start)) { start += 1 }
            if start >= readings.count { break }
            var end = start
            while end < readings.count, end - start < options.maxSegmentReadings, !taken.delivered(taken.firstSeq + Int64(end)) { end += 1 }
            let first = taken.firstSeq + Int64(start), last = taken.firstSeq + Int64(end) - 1
            let result: Store.InsertResult = dbLock.withLock { _ in
                let r = store.insertSegment(readings[start..<end], first: first)
                if case .stored = r {
                    for b in taken.liveBatches where b.batch.first <= last && b.batch.last >= first && !recorded.contains(b.batch) {
                        try? store.recordLive(b.batch, acked: b.acked)
                        recorded.insert(b.batch)
                    }
                }
                return r
            }
            switch result {
            case .stored:
                noteCommit(nil)
                // Every live batch starting at or before `last` has its row now.
                pendingLock.withLock { recordedThrough = max(recordedThrough, last) }
                afterSegmentHook?()
                commitSignal.yield()
            case .refused:
                noteCommit(nil)
            case .failed(let error):
                noteCommit(error)
                return start
            }
            start = end
        }
        if taken.readings.count > 0 {
            dbLock.withLock { _ in store.skipDelivered(through: taken.firstSeq + Int64(taken.readings.count) - 1) }
        }
        return readings.count
    }
}
