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
    var pending: [Reading] = []
    var pendingSince: UInt64 = 0
    var stopping = false
    var writerThread: pthread_t?
    var flushRequested = false
    /// Readings ever appended / ever committed or dropped (tickets for waitProcessed).
    var appendedTotal: UInt64 = 0
    var processedTotal: UInt64 = 0
    /// A source waits for a commit: commit as soon as the minimum spacing allows.
    var urgent = false
    var lastCommitNanos: UInt64 = 0

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
    /// `maxPendingReadings` wait for the writer. Returns false after `stop`.
    @discardableResult
    public func append(_ readings: some Collection<Reading>) -> UInt64 {
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
        if pending.isEmpty { pendingSince = monotonicNanos() }
        pending.append(contentsOf: readings)
        appendedTotal += UInt64(readings.count)
        if pending.count >= options.maxSegmentReadings { pendingLock.broadcast() }
        return appendedTotal
    }

    @discardableResult
    public func append(_ reading: Reading) -> UInt64 { append(CollectionOfOne(reading)) }

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
        urgent = true
        pendingLock.broadcast()
        while processedTotal < ticket {
            let now = monotonicNanos()
            if now >= deadline { return false }
            pendingLock.wait(untilMonotonicNanos: min(deadline, now + 100_000_000))
        }
        return true
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
                if pending.count >= options.maxSegmentReadings { break }
                let now = monotonicNanos()
                if !pending.isEmpty && now >= pendingSince + interval { break }
                if urgent && !pending.isEmpty && now >= lastCommitNanos + spacing { break }
                var deadline = pending.isEmpty ? now + 1_000_000_000 : pendingSince + interval
                if urgent && !pending.isEmpty { deadline = min(deadline, lastCommitNanos + spacing) }
                pendingLock.wait(untilMonotonicNanos: deadline)
                if pending.isEmpty && monotonicNanos() >= lastMaintenance + 1_000_000_000 { break }
            }
            let stopNow = stopping
            let wasFlush = flushRequested
            let taken = pending
            let through = appendedTotal
            urgent = false
            pending.removeAll(keepingCapacity: true)
            pendingLock.broadcast()
            pendingLock.unlock()
            if !taken.isEmpty {
                let done = commit(taken)
                if done < taken.count {
                    // Disk full or I/O error: keep them (ahead of newer ones) and try
                    // again in a second; sources hold their acknowledgements meanwhile,
                    // and `append` blocks once maxPendingReadings are waiting.
                    pendingLock.withLock {
                        pending.insert(contentsOf: taken[done...], at: 0)
                        pendingSince = monotonicNanos()
                        if wasFlush { flushRequested = false } // a flush cannot wait for the disk
                        pendingLock.broadcast()
                    }
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
                    pendingLock.broadcast()
                }
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
        let (taken, through): ([Reading], UInt64) = pendingLock.withLock {
            let t = pending
            pending.removeAll()
            pendingLock.broadcast()
            return (t, appendedTotal)
        }
        if !taken.isEmpty {
            let done = commit(taken)
            if done < taken.count {
                // Shutting down with the disk still failing: these readings were never
                // acknowledged to an MQTT broker (after_commit), which delivers them again.
                logger.error("outbox: readings not committed at shutdown", metadata: ["readings": "\(taken.count - done)"])
            }
        }
        pendingLock.withLock {
            processedTotal = max(processedTotal, through)
            pendingLock.broadcast()
        }
    }

    /// Commits; returns how many readings (from the front) are stored or
    /// refused — the rest failed and must be retried.
    @discardableResult
    func commit(_ readings: [Reading]) -> Int {
        // The file was deleted or replaced under us: what is committed now would be lost with
        // it, so nothing is committed (nor acknowledged to a source) until the restart.
        if faults.withLock({ $0.folder != nil }) { return 0 }
        var start = 0
        while start < readings.count {
            let end = min(readings.count, start + options.maxSegmentReadings)
            switch dbLock.withLock({ _ in store.insertSegment(readings[start..<end]) }) {
            case .stored:
                noteCommit(nil)
                commitSignal.yield()
            case .refused: noteCommit(nil)
            case .failed(let error):
                noteCommit(error)
                return start
            }
            start = end
        }
        return readings.count
    }
}
