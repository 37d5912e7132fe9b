import BrumeCore
import CSQLite
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public enum WhenFull: String, Sendable, CaseIterable {
    /// Evict the oldest buffered readings to make room (default).
    case dropOldest = "drop_oldest"
    /// Refuse new readings while the buffer is full.
    case dropNewest = "drop_newest"
}

/// SQLite `synchronous` level for the outbox database (WAL mode).
public enum SyncLevel: String, Sendable, CaseIterable {
    /// Committed readings survive a crash of the gateway (kill -9); the commits since the
    /// last checkpoint may be lost in a power cut, although QoS1 sources were acknowledged.
    case normal
    /// Every group commit of readings is fsynced before anything is acknowledged to a source:
    /// a power cut loses nothing committed. Batch records and uplink acknowledgements are not
    /// fsynced (losing one only makes a batch go again: same id, or a new run's id).
    case full
}

public struct OutboxOptions: Sendable {
    public var path: String
    public var maxBytes: Int64
    public var maxAgeMillis: Int64
    public var whenFull: WhenFull
    /// Group-commit interval: readings wait at most this long in memory.
    public var commitInterval: Duration
    public var synchronous: SyncLevel
    /// Readings waiting for the next commit, at most (backpressure beyond).
    public var maxPendingReadings: Int
    /// A batch is flagged historical ("hist": true) when its oldest reading
    /// was committed more than this long before the batch was formed.
    public var historicalAfterMillis: Int64
    /// Readings per segment row, at most.
    public var maxSegmentReadings: Int
    /// The uplinks that read the outbox, each with its own cursor: a reading leaves the outbox
    /// once every one of them acknowledged it. The first is the primary (it inherits the
    /// cursor of an outbox written by a single-uplink brume).
    public var uplinks: [String] = ["cloud"]

    public init(path: String, maxBytes: Int64 = 256 << 20, maxAgeMillis: Int64 = 7 * 86_400_000, whenFull: WhenFull = .dropOldest,
                commitInterval: Duration = .milliseconds(50), synchronous: SyncLevel = .full, maxPendingReadings: Int = 100_000,
                historicalAfterMillis: Int64 = 10_000, maxSegmentReadings: Int = 8192) {
        self.path = path
        self.maxBytes = maxBytes
        self.maxAgeMillis = maxAgeMillis
        self.whenFull = whenFull
        self.commitInterval = commitInterval
        self.synchronous = synchronous
        self.maxPendingReadings = maxPendingReadings
        self.historicalAfterMillis = historicalAfterMillis
        self.maxSegmentReadings = maxSegmentReadings
    }

    /// What the WAL may take on disk before it is truncated after a checkpoint.
    var walLimit: Int64 { min(16 << 20, max(64 << 10, maxBytes / 8)) }
    /// Bytes of segment data allowed, so that database + WAL stay under maxBytes.
    var dataBudget: Int64 { max(4096, (maxBytes - walLimit) * 85 / 100) }
}

/// A batch of consecutive outbox readings, recorded before it is sent so
/// that a resend (after a reconnect or a crash) is the very same batch.
public struct BatchRecord: Sendable, Hashable {
    public var first: Int64
    public var last: Int64
    public var historical: Bool
    /// The uplink it belongs to ("" = the primary).
    public var uplink: String
    /// The outbox run that formed it (see `WireFormat.batchID`); 0 for batches recorded
    /// before runs existed.
    public var run: UInt64
    public var count: Int { Int(last - first + 1) }
    public init(first: Int64, last: Int64, historical: Bool, uplink: String = "", run: UInt64 = 0) {
        self.first = first
        self.last = last
        self.historical = historical
        self.uplink = uplink
        self.run = run
    }
    /// The id the cloud sees: unique for the life of the gateway id.
    public func id(gateway: String) -> String { WireFormat.batchID(gateway: gateway, run: run, first: first, last: last) }
}

public struct OutboxStats: Sendable, Hashable {
    /// Readings committed to the database since it was created.
    public var committed: Int64 = 0
    /// Readings acknowledged by the uplink(s) and removed.
    public var delivered: Int64 = 0
    /// Readings dropped by the buffer limits, by reason (max_bytes, max_age, buffer_full, corrupt).
    public var evicted: [String: Int64] = [:]
    /// Readings in the database not yet delivered.
    public var bufferedReadings: Int64 = 0
    /// Segment bytes in the database.
    public var bufferedBytes: Int64 = 0
    /// Commit time of the oldest undelivered reading (ms since epoch), if any.
    public var oldestMillis: Int64?
    public var segments: Int64 = 0
    /// Readings waiting in memory for the next group commit.
    public var pendingInMemory: Int = 0
    public var commits: Int64 = 0
    /// Highest sequence number committed.
    public var lastSeq: Int64 = 0
    /// Every reading with a sequence number up to this one is delivered or evicted.
    public var doneSeq: Int64 = 0
    /// Set when the database was found corrupt at start and moved aside.
    public var recoveredFrom: String?
    /// Group commits that failed (disk full, I/O) and were retried.
    public var commitFailures: Int64 = 0
}

public struct OutboxError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

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
    private let now: @Sendable () -> Int64
    /// Storage faults seen while running (see StorageFault).
    let faults = Locked<(commit: StorageFault?, folder: StorageFault?)>((nil, nil))
    /// The outbox file as opened (deleted or replaced under us: a fault).
    let openedIdentity: FileIdentity?

    private let pendingLock = ConditionLock()
    private var pending: [Reading] = []
    private var pendingSince: UInt64 = 0
    private var stopping = false
    private var writerThread: pthread_t?
    private var flushRequested = false
    /// Readings ever appended / ever committed or dropped (tickets for waitProcessed).
    private var appendedTotal: UInt64 = 0
    private var processedTotal: UInt64 = 0
    /// A source waits for a commit: commit as soon as the minimum spacing allows.
    private var urgent = false
    private var lastCommitNanos: UInt64 = 0

    private let dbLock = Mutex<Void>(())
    private let store: Store

    private let commitSignal: AsyncStream<Void>.Continuation
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
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let outbox = Unmanaged<Outbox>.fromOpaque(arg!).takeRetainedValue()
            outbox.writerLoop()
            return nil
        }, box.toOpaque())
        precondition(rc == 0)
        writerThread = tid
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

    private func writerLoop() {
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

    private func commitPending() {
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
    private func commit(_ readings: [Reading]) -> Int {
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
    public func nextBatch(uplink: String = "", maxReadings: Int, maxDelayMillis: Int64) -> NextBatch {
        dbLock.withLock { _ in store.nextBatch(uplink: store.key(uplink), maxReadings: maxReadings, maxDelayMillis: maxDelayMillis) }
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

    /// Test hook: evicts through `seq` as the size limit would (counted as "max_bytes").
    func dbLockedEvict(through seq: Int64) {
        dbLock.withLock { _ in store.evictForTest(through: seq) }
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

    /// Test hook: caps the database size in pages (SQLite `max_page_count`), to
    /// make commits fail as on a full disk.
    func setMaxPageCount(_ pages: Int) {
        dbLock.withLock { _ in try? store.db.exec("PRAGMA max_page_count=\(pages)") }
    }

    /// Periodic housekeeping (age eviction); the writer thread runs it every second.
    public func runMaintenance() {
        dbLock.withLock { _ in store.evictByAge() }
    }

    /// SQLite virtual-machine steps and full-scan steps since the last call (tests).
    func takeSQLSteps() -> (vm: Int64, fullScan: Int64) {
        dbLock.withLock { _ in
            defer { store.db.vmSteps = 0; store.db.fullScanSteps = 0 }
            return (store.db.vmSteps, store.db.fullScanSteps)
        }
    }

    /// Bytes of the database file in use (pages less free pages).
    func usedFileBytes() -> Int64 { dbLock.withLock { _ in (try? store.usedFileBytes()) ?? 0 } }

    public var stats: OutboxStats {
        let p = pendingLock.withLock { pending.count }
        var s = dbLock.withLock { _ in store.stats() }
        s.pendingInMemory = p
        return s
    }
}

// MARK: - the database

/// Everything that touches SQLite. Used only under `Outbox.dbLock`.
final class Store {
    static let schemaVersion: Int64 = 3
    /// Dead letters kept, at most (the newest).
    static let maxDeadLetters = 1000
    /// Numbered migrations: index i brings user_version i to i+1.
    static let migrations: [String] = [
        """
        CREATE TABLE segment (
            first_seq  INTEGER PRIMARY KEY,
            last_seq   INTEGER NOT NULL,
            count      INTEGER NOT NULL,
            bytes      INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            data       BLOB NOT NULL
        );
        CREATE TABLE batch (
            first_seq INTEGER PRIMARY KEY,
            last_seq  INTEGER NOT NULL,
            hist      INTEGER NOT NULL,
            acked     INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE eviction (reason TEXT PRIMARY KEY, readings INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO meta(key, value) VALUES ('next_seq', 1), ('done_seq', 0), ('committed', 0), ('delivered', 0);
        """,
        // 2: several uplinks, each with its own batches and cursor; dead letters.
        """
        CREATE TABLE batch2 (
            uplink    TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq  INTEGER NOT NULL,
            hist      INTEGER NOT NULL,
            acked     INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (uplink, first_seq)
        ) WITHOUT ROWID;
        INSERT INTO batch2(uplink, first_seq, last_seq, hist, acked) SELECT '', first_seq, last_seq, hist, acked FROM batch;
        DROP TABLE batch;
        ALTER TABLE batch2 RENAME TO batch;
        CREATE TABLE dead_letter (
            id        INTEGER PRIMARY KEY,
            uplink    TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq  INTEGER NOT NULL,
            status    INTEGER NOT NULL,
            response  TEXT NOT NULL,
            at_ms     INTEGER NOT NULL,
            body      BLOB NOT NULL
        );
        """,
        // 3: the run that formed a batch is part of its id (ids never repeat, even when
        // sequence numbers do after a power cut, a wiped folder or a restored backup).
        """
        ALTER TABLE batch ADD COLUMN run INTEGER NOT NULL DEFAULT 0;
        """,
    ]

    let db: SQLiteDB
    let options: OutboxOptions
    let logger: Logger
    /// This run's incarnation, drawn at random when the outbox is opened: part of the id of
    /// every batch formed in this run (`WireFormat.batchID`). Never 0.
    let run = UInt64.random(in: 1...UInt64.max)
    let now: @Sendable () -> Int64
    var recoveredFrom: String?

    // cached state (mirrors the database)
    var nextSeq: Int64 = 1
    /// Every reading up to here is acknowledged by every uplink (or evicted): gone.
    var doneSeq: Int64 = 0
    /// Per uplink: every reading up to here is acknowledged by it (or evicted).
    var cursor: [String: Int64] = [:]
    /// Uplink keys: "" for the primary, the configured name for the others.
    let uplinkKeys: [String]
    var committed: Int64 = 0
    var delivered: Int64 = 0
    var totalBytes: Int64 = 0
    var segmentCount: Int64 = 0
    var commitCount: Int64 = 0
    var evicted: [String: Int64] = [:]
    var commitFailures: Int64 = 0
    var closed = false
    let corruptLimiter = LogRateLimiter(burst: 3, interval: .seconds(60))

    // prepared statements
    let insertSegmentStmt: Statement
    let setMetaStmt: Statement
    let segmentsAfterStmt: Statement
    let insertBatchStmt: Statement
    let ackBatchStmt: Statement
    let oldestStmt: Statement?
    let segmentAtStmt: Statement
    let pageCountStmt: Statement
    let freelistStmt: Statement
    let pageSize: Int64

    /// Decoded segment cache: the uplink reads one segment in many batches.
    var cache: (first: Int64, readings: [Reading])?
    /// When each segment of this run was committed, on the monotonic clock (first_seq → ns):
    /// batch delays and ages are measured with it, so a wall-clock jump (NTP correcting a
    /// board without RTC) neither stalls batches nor evicts a young backlog. Segments of
    /// earlier runs are not in it: they are old by definition.
    var monoFirsts: [Int64] = []
    var monoTimes: [UInt64] = []
    var monoHead = 0

    func recordCommit(first: Int64, at t: UInt64) {
        monoFirsts.append(first)
        monoTimes.append(t)
    }

    func committedMono(_ first: Int64) -> UInt64? {
        var lo = monoHead, hi = monoFirsts.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if monoFirsts[mid] < first { lo = mid + 1 } else { hi = mid }
        }
        return lo < monoFirsts.count && monoFirsts[lo] == first ? monoTimes[lo] : nil
    }

    /// Segments up to `through` are gone: their commit times too.
    func forgetCommits(through: Int64) {
        while monoHead < monoFirsts.count {
            let nextFirst = monoHead + 1 < monoFirsts.count ? monoFirsts[monoHead + 1] : nextSeq
            guard nextFirst - 1 <= through else { break }
            monoHead += 1
        }
        if monoHead > 1024 && monoHead * 2 > monoFirsts.count {
            monoFirsts.removeFirst(monoHead)
            monoTimes.removeFirst(monoHead)
            monoHead = 0
        }
    }
    /// The wall clock and the monotonic clock when this run opened the outbox.
    let openedWall: Int64
    let mono: @Sendable () -> UInt64
    let openedMono: UInt64

    /// `now()` unless the wall clock jumped forward during this run: then the time this run
    /// has really lasted. Age eviction uses it (a jump forward must not evict a young backlog).
    func ageNow() -> Int64 {
        min(now(), openedWall + Int64((mono() - openedMono) / 1_000_000))
    }

    static func open(options: OutboxOptions, logger: Logger, now: @escaping @Sendable () -> Int64,
                     monotonic: @escaping @Sendable () -> UInt64 = monotonicNanos) throws -> Store {
        do {
            return try Store(options: options, logger: logger, now: now, monotonic: monotonic)
        } catch let e as SQLiteError where e.isCorruption {
            let aside = "\(options.path).corrupt-\(now())"
            logger.error("outbox database is corrupt or not a database: moved aside, starting with an empty outbox",
                         metadata: ["outbox.path": "\(options.path)", "outbox.moved_to": "\(aside)", "error": "\(e)"])
            rename(options.path, aside)
            rename(options.path + "-wal", aside + "-wal")
            unlink(options.path + "-shm")
            let s = try Store(options: options, logger: logger, now: now, monotonic: monotonic)
            s.recoveredFrom = aside
            // Sequence numbers (and so batch ids) must never be reused, even though the
            // old counter is lost with the file: continue from a clock-derived floor.
            try s.raiseSequenceFloor(now() * 1000)
            return s
        }
    }

    private init(options: OutboxOptions, logger: Logger, now: @escaping @Sendable () -> Int64, monotonic: @escaping @Sendable () -> UInt64) throws {
        self.options = options
        self.logger = logger
        self.now = now
        self.openedWall = now()
        self.mono = monotonic
        self.openedMono = monotonic()
        self.uplinkKeys = options.uplinks.isEmpty ? ["cloud"] : options.uplinks
        db = try SQLiteDB(path: options.path)
        // WAL: readers never block the writer; one fsync per checkpoint in NORMAL mode.
        let mode = try db.prepare("PRAGMA journal_mode=WAL")
        _ = try mode.step()
        let got = mode.text(0)
        mode.reset()
        guard got == "wal" else { throw OutboxError(description: "cannot enable WAL on \(options.path) (got \(got))") }
        // NORMAL for the connection; a group commit of readings switches to FULL around its
        // transaction when configured (see SyncLevel).
        try db.exec("PRAGMA synchronous=NORMAL")
        try db.exec("PRAGMA journal_size_limit=\(options.walLimit)")
        // Checkpoint often enough that the WAL stays within its share of max_bytes.
        try db.exec("PRAGMA wal_autocheckpoint=\(max(16, min(1000, options.walLimit / 4096 / 2)))")
        // Schema version and numbered migrations.
        let version = try db.scalarInt("PRAGMA user_version") ?? 0
        if version < 0 {
            // Not something this brume (or any) wrote: treat as corrupt (moved aside at open).
            throw SQLiteError(code: SQLITE_CORRUPT, message: "negative schema version \(version)", context: "outbox \(options.path)")
        }
        if version > Store.schemaVersion {
            throw OutboxError(description: "outbox \(options.path) has schema version \(version), newer than this brume (\(Store.schemaVersion)); refusing to touch it")
        }
        if version < Store.schemaVersion {
            try db.exec("BEGIN IMMEDIATE")
            for v in Int(version)..<Int(Store.schemaVersion) {
                try db.exec(Store.migrations[v])
            }
            try db.exec("PRAGMA user_version=\(Store.schemaVersion)")
            try db.exec("COMMIT")
        }
        // Batches are keyed by uplink name. Rows of an outbox written by a single-uplink brume
        // (migrated with an empty name) belong to the first configured uplink; batches and
        // cursors of uplinks no longer configured are forgotten (an uplink renamed or added
        // later starts with what is still buffered).
        func quote(_ n: String) -> String { "'" + n.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'" }
        let names = uplinkKeys.map(quote).joined(separator: ",")
        try db.exec("UPDATE batch SET uplink = \(quote(uplinkKeys[0])) WHERE uplink = ''")
        try db.exec("DELETE FROM batch WHERE uplink NOT IN (\(names))")
        try db.exec("DELETE FROM meta WHERE key LIKE 'cursor:%' AND substr(key, 8) NOT IN (\(names))")
        insertSegmentStmt = try db.prepare("INSERT INTO segment(first_seq, last_seq, count, bytes, created_ms, data) VALUES (?, ?, ?, ?, ?, ?)")
        setMetaStmt = try db.prepare("UPDATE meta SET value = ? WHERE key = ?")
        // The segment holding ?1 (or the next one after a gap), found through the primary key:
        // `WHERE last_seq >= ?` alone walks the table from its start.
        segmentsAfterStmt = try db.prepare("""
            SELECT first_seq, last_seq, created_ms, data FROM segment
            WHERE first_seq >= COALESCE((SELECT MAX(first_seq) FROM segment WHERE first_seq <= ?1), ?1) AND last_seq >= ?1
            ORDER BY first_seq LIMIT ?2
            """)
        segmentAtStmt = try db.prepare("""
            SELECT first_seq, created_ms FROM segment
            WHERE first_seq >= COALESCE((SELECT MAX(first_seq) FROM segment WHERE first_seq <= ?1), ?1) AND last_seq >= ?1
            ORDER BY first_seq LIMIT 1
            """)
        oldestStmt = try? db.prepare("SELECT created_ms FROM segment ORDER BY first_seq LIMIT 1")
        pageCountStmt = try db.prepare("PRAGMA page_count")
        freelistStmt = try db.prepare("PRAGMA freelist_count")
        pageSize = try db.scalarInt("PRAGMA page_size") ?? 4096
        insertBatchStmt = try db.prepare("INSERT OR REPLACE INTO batch(uplink, first_seq, last_seq, hist, acked, run) VALUES (?, ?, ?, ?, 0, ?)")
        ackBatchStmt = try db.prepare("UPDATE batch SET acked = 1 WHERE uplink = ? AND first_seq = ? AND last_seq = ?")
        try loadState()
    }

    private func loadState() throws {
        let q = try db.prepare("SELECT key, value FROM meta")
        defer { q.reset() }
        while try q.step() {
            let v = q.int(1)
            switch q.text(0) {
            case "next_seq": nextSeq = v
            case "done_seq": doneSeq = v
            case "committed": committed = v
            case "delivered": delivered = v
            default: break
            }
        }
        let e = try db.prepare("SELECT reason, readings FROM eviction")
        defer { e.reset() }
        while try e.step() { evicted[e.text(0)] = e.int(1) }
        // Cursors: the primary's is done_seq's history; an uplink seen for the first time starts
        // at what is still buffered (it does not get what left before it existed).
        cursor = [:]
        let c = try db.prepare("SELECT key, value FROM meta WHERE key LIKE 'cursor:%'")
        defer { c.reset() }
        var stored: [String: Int64] = [:]
        while try c.step() { stored[String(c.text(0).dropFirst(7))] = c.int(1) }
        for k in uplinkKeys { cursor[k] = max(doneSeq, stored[k] ?? doneSeq) }
        let s = try db.prepare("SELECT COALESCE(SUM(bytes), 0), COUNT(*), COALESCE(MAX(last_seq), 0) FROM segment")
        defer { s.reset() }
        _ = try s.step()
        totalBytes = s.int(0)
        segmentCount = s.int(1)
        // Never reuse a sequence number, even if meta lagged behind.
        nextSeq = max(nextSeq, s.int(2) + 1)
    }

    func raiseSequenceFloor(_ floor: Int64) throws {
        guard floor > nextSeq else { return }
        try setMeta("next_seq", floor)
        try setMeta("done_seq", floor - 1)
        nextSeq = floor
        doneSeq = floor - 1
        for k in uplinkKeys { try setCursor(k, floor - 1) }
    }

    func close() {
        guard !closed else { return }
        closed = true
        try? db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    /// The key of an uplink: "" for the primary (also under its configured name).
    func key(_ name: String) -> String {
        name.isEmpty ? uplinkKeys[0] : name
    }

    private func setCursor(_ k: String, _ v: Int64) throws(SQLiteError) {
        cursor[k] = v
        if uplinkKeys.count == 1 { return } // one uplink: its cursor is done_seq
        let st = try db.prepare("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        st.bind(1, "cursor:" + k)
        st.bind(2, v)
        try st.run()
    }

    private func setMeta(_ key: String, _ value: Int64) throws(SQLiteError) {
        setMetaStmt.bind(1, value)
        setMetaStmt.bind(2, key)
        try setMetaStmt.run()
    }

    private func addEvicted(_ reason: String, _ n: Int64) throws(SQLiteError) {
        guard n > 0 else { return }
        evicted[reason, default: 0] += n
        let s = try db.prepare("INSERT INTO eviction(reason, readings) VALUES (?, ?) ON CONFLICT(reason) DO UPDATE SET readings = readings + excluded.readings")
        s.bind(1, reason)
        s.bind(2, n)
        try s.run()
    }

    enum InsertResult { case stored, refused, failed(SQLiteError) }

    /// Stores one segment (one transaction). `refused`: dropped by when_full =
    /// drop_newest (counted); `failed`: SQLite error (disk full, I/O): nothing
    /// stored, the caller keeps the readings and retries.
    func insertSegment(_ readings: ArraySlice<Reading>) -> InsertResult {
        let blob = SegmentCodec.encode(readings)
        let bytes = Int64(blob.count)
        let n = Int64(readings.count)
        let durable = options.synchronous == .full
        if durable { try? db.exec("PRAGMA synchronous=FULL") }
        defer { if durable { try? db.exec("PRAGMA synchronous=NORMAL") } }
        do {
            try db.exec("BEGIN IMMEDIATE")
            do {
                // What the segments really take in the file: with one-reading segments (field
                // rates) row and page overhead is several times the blob, so the blob bytes
                // alone would let the file grow well past max_bytes.
                let onDisk = try usedFileBytes()
                let ratio = totalBytes > 0 ? max(1.0, Double(onDisk) / Double(totalBytes)) : 1.0
                let projected = Double(onDisk) + Double(bytes) * ratio
                let excess = projected - Double(options.dataBudget)
                if options.whenFull == .dropNewest && excess > 0 {
                    try addEvicted("buffer_full", n)
                    try db.exec("COMMIT")
                    logFull(n)
                    return .refused
                }
                let first = nextSeq
                insertSegmentStmt.bind(1, first)
                insertSegmentStmt.bind(2, first + n - 1)
                insertSegmentStmt.bind(3, n)
                insertSegmentStmt.bind(4, bytes)
                insertSegmentStmt.bind(5, now())
                insertSegmentStmt.bindBlob(6, blob)
                try insertSegmentStmt.run()
                try setMeta("next_seq", first + n)
                try setMeta("committed", committed + n)
                if options.whenFull == .dropOldest && excess > 0 {
                    // In blob bytes, as the segments count them.
                    try evictOldest(needing: Int64(excess / ratio) + 1, reason: "max_bytes")
                }
                try db.exec("COMMIT")
                recordCommit(first: first, at: mono())
                nextSeq = first + n
                committed += n
                totalBytes += bytes
                segmentCount += 1
                commitCount += 1
                return .stored
            } catch {
                try? db.exec("ROLLBACK")
                throw error
            }
        } catch {
            // Reload cached counters: the transaction was rolled back.
            try? loadState()
            commitFailures += 1
            let sqlError = error as? SQLiteError ?? SQLiteError(code: SQLITE_IOERR, message: "\(error)", context: "commit")
            if let suppressed = corruptLimiter.admit() {
                logger.error("outbox commit failed: readings kept in memory, retrying (MQTT acknowledgements are held meanwhile)",
                             metadata: ["outbox.path": "\(options.path)", "readings": "\(n)", "error": "\(error)", "suppressed": "\(suppressed)"])
            }
            return .failed(sqlError)
        }
    }

    /// Bytes of the database file in use: pages less free pages (both read from the header).
    func usedFileBytes() throws(SQLiteError) -> Int64 {
        pageCountStmt.reset()
        guard try pageCountStmt.step() else { return 0 }
        let pages = pageCountStmt.int(0)
        pageCountStmt.reset()
        freelistStmt.reset()
        guard try freelistStmt.step() else { return 0 }
        let free = freelistStmt.int(0)
        freelistStmt.reset()
        return max(0, pages - free) * pageSize
    }

    private func logFull(_ n: Int64) {
        if let suppressed = corruptLimiter.admit() {
            logger.warning("outbox full (when_full = drop_newest): new readings dropped", metadata: ["readings": "\(n)", "suppressed": "\(suppressed)"])
        }
    }

    /// Evicts the oldest segments until `needing` bytes are freed (inside a transaction).
    private func evictOldest(needing: Int64, reason: String) throws(SQLiteError) {
        guard needing > 0 else { return }
        var freed: Int64 = 0
        var through = doneSeq
        let q = try db.prepare("SELECT first_seq, last_seq, bytes FROM segment ORDER BY first_seq")
        defer { q.reset() }
        var victims: [(Int64, Int64, Int64)] = []
        while freed < needing, try q.step() {
            let (f, l, b) = (q.int(0), q.int(1), q.int(2))
            victims.append((f, l, b))
            freed += b
            through = max(through, l)
        }
        try evict(through: through, reason: reason)
        if freed >= needing, reason == "max_bytes", corruptLimiter.admit() != nil {
            logger.warning("outbox over max_bytes: oldest readings evicted", metadata: ["outbox.max_bytes": "\(options.maxBytes)", "evicted_through_seq": "\(through)"])
        }
    }

    /// Marks every reading up to `through` (extended to cover a straddling
    /// recorded batch) as gone, counting the undelivered ones as evicted.
    private func evict(through requested: Int64, reason: String) throws(SQLiteError) {
        guard requested > doneSeq else { return }
        var through = requested
        // A recorded batch must stay whole: extend to its end.
        // (With several uplinks, the longest straddling batch of any of them.)
        let straddle = try db.prepare("SELECT MAX(last_seq) FROM batch WHERE first_seq <= ? AND last_seq > ?")
        defer { straddle.reset() }
        straddle.bind(1, through)
        straddle.bind(2, through)
        // Repeat: extending the cut may make it cross another uplink's batch.
        while true {
            straddle.bind(1, through)
            straddle.bind(2, through)
            guard try straddle.step(), !straddle.isNull(0), straddle.int(0) > through else { break }
            through = straddle.int(0)
            straddle.reset()
        }
        // Readings in (doneSeq, through] not already acknowledged are evicted.
        let ackedQ = try db.prepare(uplinkKeys.count == 1
            ? "SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM batch WHERE acked = 1 AND first_seq > ? AND last_seq <= ?"
            : "SELECT 0 WHERE ? IS NOT NULL AND ? IS NOT NULL")
        defer { ackedQ.reset() }
        ackedQ.bind(1, doneSeq)
        ackedQ.bind(2, through)
        _ = try ackedQ.step()
        let acked = ackedQ.int(0)
        let lastCommitted = nextSeq - 1 + 0
        let upper = min(through, max(lastCommitted, through))
        let gone = upper - doneSeq - acked
        try addEvicted(reason, gone)
        delivered += acked
        try setMeta("delivered", delivered)
        try db.exec("DELETE FROM batch WHERE first_seq <= \(through)")
        try removeSegments(through: through)
        doneSeq = through
        try setMeta("done_seq", doneSeq)
        for k in uplinkKeys where cursor[k, default: 0] < through { try setCursor(k, through) }
    }

    private func removeSegments(through: Int64) throws(SQLiteError) {
        // A range of the primary key (segments never overlap), not a scan of the table.
        let q = try db.prepare("SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM segment WHERE first_seq <= ?1 AND last_seq <= ?1")
        defer { q.reset() }
        q.bind(1, through)
        _ = try q.step()
        let b = q.int(0)
        let c = q.int(1)
        guard c > 0 else { return }
        let d = try db.prepare("DELETE FROM segment WHERE first_seq <= ?1 AND last_seq <= ?1")
        d.bind(1, through)
        try d.run()
        totalBytes -= b
        segmentCount -= c
        forgetCommits(through: through)
        if let cached = cache, cached.first <= through { cache = nil }
    }

    func evictForTest(through seq: Int64) {
        try? db.exec("BEGIN IMMEDIATE")
        do { try evict(through: seq, reason: "max_bytes"); try db.exec("COMMIT") } catch { try? db.exec("ROLLBACK") }
    }

    func purge() -> Int64 {
        let before = evicted["purged"] ?? 0
        do {
            try db.exec("BEGIN IMMEDIATE")
            do {
                try evict(through: nextSeq - 1, reason: "purged")
                try db.exec("COMMIT")
            } catch {
                try? db.exec("ROLLBACK")
                throw error
            }
        } catch {
            try? loadState()
            logger.error("outbox purge failed", metadata: ["error": "\(error)"])
        }
        let n = (evicted["purged"] ?? 0) - before
        logger.notice("outbox purged: buffered readings dropped on request", metadata: ["readings": "\(n)"])
        return n
    }

    func evictByAge() {
        guard options.maxAgeMillis > 0 else { return }
        let cutoff = ageNow() - options.maxAgeMillis
        try? db.exec("DELETE FROM dead_letter WHERE at_ms < \(cutoff)")
        do {
            // From the oldest segment on, in key order, while they are older than the cutoff:
            // a walk over what is evicted (usually nothing: one row read per second).
            let q = try db.prepare("SELECT last_seq, created_ms FROM segment ORDER BY first_seq")
            defer { q.reset() }
            var through: Int64?
            while try q.step() {
                guard q.int(1) < cutoff else { break }
                through = q.int(0)
            }
            q.reset()
            guard let through, through > doneSeq else { return }
            try db.exec("BEGIN IMMEDIATE")
            do {
                try evict(through: through, reason: "max_age")
                try db.exec("COMMIT")
            } catch {
                try? db.exec("ROLLBACK")
                throw error
            }
            logger.warning("outbox readings older than max_age evicted", metadata: ["evicted_through_seq": "\(through)"])
        } catch {
            try? loadState()
            logger.error("outbox age eviction failed", metadata: ["error": "\(error)"])
        }
    }

    func tailReadings(limit: Int) -> [Reading] {
        guard let q = try? db.prepare("SELECT first_seq, data FROM segment WHERE last_seq > ? ORDER BY first_seq DESC") else { return [] }
        defer { q.reset() }
        q.bind(1, doneSeq)
        var chunks: [[Reading]] = []
        var n = 0
        while n < limit, (try? q.step()) == true {
            let first = q.int(0)
            guard var rs = try? q.withBlob(1, { try SegmentCodec.decode($0) }) else { continue }
            if first <= doneSeq { rs.removeFirst(min(rs.count, Int(doneSeq - first + 1))) }
            chunks.append(rs)
            n += rs.count
        }
        var out = Array(chunks.reversed().joined())
        if out.count > limit { out.removeFirst(out.count - limit) }
        return out
    }

    func unackedBatches(uplink: String) -> [BatchRecord] {
        do {
            let q = try db.prepare("SELECT first_seq, last_seq, hist, run FROM batch WHERE uplink = ? AND acked = 0 ORDER BY first_seq")
            defer { q.reset() }
            q.bind(1, uplink)
            var out: [BatchRecord] = []
            while try q.step() {
                out.append(BatchRecord(first: q.int(0), last: q.int(1), historical: q.int(2) != 0, uplink: uplink, run: UInt64(bitPattern: q.int(3))))
            }
            return out
        } catch {
            logger.error("outbox: cannot list batches", metadata: ["error": "\(error)"])
            return []
        }
    }

    /// First sequence number not yet in a recorded batch.
    private func firstUnbatched(_ uplink: String) throws(SQLiteError) -> Int64 {
        let q = try db.prepare("SELECT last_seq FROM batch WHERE uplink = ? ORDER BY first_seq DESC LIMIT 1")
        defer { q.reset() }
        q.bind(1, uplink)
        let lastBatched = try q.step() ? q.int(0) : 0
        return max(cursor[uplink] ?? doneSeq, doneSeq, lastBatched) + 1
    }

    func nextBatch(uplink: String, maxReadings: Int, maxDelayMillis: Int64) -> Outbox.NextBatch {
        do {
            let first = try firstUnbatched(uplink)
            let lastCommitted = nextSeq - 1
            if first > lastCommitted { return .empty }
            let available = lastCommitted - first + 1
            // Commit time of the segment that holds `first`.
            let q = segmentAtStmt
            defer { q.reset() }
            q.bind(1, first)
            guard try q.step() else { return .empty }
            let segmentFirst = q.int(0)
            let t = now()
            // Its age: monotonic for segments of this run (immune to wall-clock jumps), wall for older ones.
            let ageMillis: Int64
            if let mono = committedMono(segmentFirst) {
                ageMillis = Int64((self.mono() - mono) / 1_000_000)
            } else {
                ageMillis = max(t - q.int(1), maxDelayMillis)
            }
            if available < maxReadings && ageMillis < maxDelayMillis {
                return .waitUntil(t + maxDelayMillis - ageMillis)
            }
            let last = first + min(Int64(maxReadings), available) - 1
            let rec = BatchRecord(first: first, last: last, historical: ageMillis > options.historicalAfterMillis, uplink: uplink, run: run)
            insertBatchStmt.bind(1, uplink)
            insertBatchStmt.bind(2, rec.first)
            insertBatchStmt.bind(3, rec.last)
            insertBatchStmt.bind(4, rec.historical ? 1 : 0)
            insertBatchStmt.bind(5, Int64(bitPattern: run))
            try insertBatchStmt.run()
            return .batch(rec)
        } catch {
            if let suppressed = corruptLimiter.admit() {
                logger.error("outbox: cannot form a batch", metadata: ["error": "\(error)", "suppressed": "\(suppressed)"])
            }
            return .empty
        }
    }

    func readings(first: Int64, last: Int64) -> [Reading]? {
        if first <= doneSeq { return nil }
        var out: [Reading] = []
        out.reserveCapacity(Int(last - first + 1))
        var seq = first
        do {
            while seq <= last {
                if let c = cache, c.first <= seq, seq < c.first + Int64(c.readings.count) {
                    let lo = Int(seq - c.first)
                    let hi = min(c.readings.count, Int(last - c.first + 1))
                    out.append(contentsOf: c.readings[lo..<hi])
                    seq = c.first + Int64(hi)
                    continue
                }
                segmentsAfterStmt.bind(1, seq)
                segmentsAfterStmt.bind(2, 1)
                defer { segmentsAfterStmt.reset() }
                guard try segmentsAfterStmt.step() else { break }
                let f = segmentsAfterStmt.int(0)
                if f > last { break }
                if f > seq {
                    // A gap (a quarantined segment): send what is left of the batch.
                    seq = f
                    continue
                }
                let decoded: [Reading]
                do {
                    decoded = try segmentsAfterStmt.withBlob(3) { try SegmentCodec.decode($0) }
                } catch {
                    let l = segmentsAfterStmt.int(1)
                    segmentsAfterStmt.reset()
                    quarantine(first: f, last: l, error: "\(error)")
                    seq = l + 1 // the rest of the batch still goes
                    continue
                }
                cache = (f, decoded)
            }
            return out.isEmpty ? nil : out
        } catch {
            logger.error("outbox: cannot read readings", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// A segment failed its checksum: drop it (counted as "corrupt") rather than block the queue.
    private func quarantine(first: Int64, last: Int64, error: String) {
        logger.error("outbox segment is corrupt: its readings are dropped", metadata: ["first_seq": "\(first)", "last_seq": "\(last)", "error": "\(error)"])
        do {
            try db.exec("BEGIN IMMEDIATE")
            try addEvicted("corrupt", last - max(first - 1, doneSeq))
            try db.exec("DELETE FROM batch WHERE first_seq <= \(last) AND last_seq >= \(first)")
            let d = try db.prepare("DELETE FROM segment WHERE first_seq = ?")
            d.bind(1, first)
            try d.run()
            if first <= doneSeq + 1 {
                doneSeq = last
                try setMeta("done_seq", doneSeq)
                for k in uplinkKeys where cursor[k, default: 0] < last { try setCursor(k, last) }
            }
            try db.exec("COMMIT")
            try loadState()
        } catch {
            try? db.exec("ROLLBACK")
        }
    }

    func split(_ batch: BatchRecord, firstCount: Int) -> (BatchRecord, BatchRecord)? {
        guard firstCount >= 1, firstCount < batch.count else { return nil }
        let u = key(batch.uplink)
        var a = batch, b = batch
        a.last = batch.first + Int64(firstCount) - 1
        b.first = a.last + 1
        a.run = run
        b.run = run
        do {
            try db.exec("BEGIN IMMEDIATE")
            do {
                let d = try db.prepare("DELETE FROM batch WHERE uplink = ? AND first_seq = ? AND last_seq = ? AND acked = 0")
                defer { d.reset() }
                d.bind(1, u)
                d.bind(2, batch.first)
                d.bind(3, batch.last)
                try d.run()
                guard db.changes == 1 else {
                    try db.exec("COMMIT")
                    return nil
                }
                for r in [a, b] {
                    insertBatchStmt.bind(1, u)
                    insertBatchStmt.bind(2, r.first)
                    insertBatchStmt.bind(3, r.last)
                    insertBatchStmt.bind(4, r.historical ? 1 : 0)
                    insertBatchStmt.bind(5, Int64(bitPattern: run))
                    try insertBatchStmt.run()
                }
                try db.exec("COMMIT")
                return (a, b)
            } catch {
                try? db.exec("ROLLBACK")
                throw error
            }
        } catch {
            logger.error("outbox: cannot split a batch", metadata: ["error": "\(error)"])
            return nil
        }
    }

    func ack(_ batch: BatchRecord) {
        let u = key(batch.uplink)
        do {
            try db.exec("BEGIN IMMEDIATE")
            do {
                ackBatchStmt.bind(1, u)
                ackBatchStmt.bind(2, batch.first)
                ackBatchStmt.bind(3, batch.last)
                try ackBatchStmt.run()
                if db.changes == 0 {
                    // Unknown batch (evicted meanwhile, or acked twice): nothing to do.
                    try db.exec("COMMIT")
                    return
                }
                // Advance this uplink's cursor over its contiguous prefix of acknowledged batches.
                let from = cursor[u] ?? doneSeq
                let q = try db.prepare("SELECT first_seq, last_seq, acked FROM batch WHERE uplink = ? AND first_seq > ? ORDER BY first_seq")
                defer { q.reset() }
                q.bind(1, u)
                q.bind(2, from)
                var done = from
                while try q.step() {
                    guard q.int(2) == 1, q.int(0) == done + 1 else { break }
                    done = q.int(1)
                }
                q.reset()
                if done > from {
                    let d = try db.prepare("DELETE FROM batch WHERE uplink = ? AND last_seq <= ?")
                    d.bind(1, u)
                    d.bind(2, done)
                    try d.run()
                    try setCursor(u, done)
                }
                // Readings every uplink has acknowledged leave the outbox.
                let all = uplinkKeys.map { cursor[$0] ?? doneSeq }.min() ?? done
                if all > doneSeq {
                    try removeSegments(through: all)
                    delivered += all - doneSeq
                    doneSeq = all
                    try setMeta("done_seq", doneSeq)
                    try setMeta("delivered", delivered)
                }
                try db.exec("COMMIT")
            } catch {
                try? db.exec("ROLLBACK")
                throw error
            }
        } catch {
            try? loadState()
            logger.error("outbox: cannot record an acknowledgement (the batch will be resent)", metadata: ["error": "\(error)"])
        }
    }

    func deadLetter(_ batch: BatchRecord, status: Int, response: String, body: [UInt8]) {
        do {
            let st = try db.prepare("INSERT INTO dead_letter(uplink, first_seq, last_seq, status, response, at_ms, body) VALUES (?, ?, ?, ?, ?, ?, ?)")
            st.bind(1, key(batch.uplink))
            st.bind(2, batch.first)
            st.bind(3, batch.last)
            st.bind(4, Int64(status))
            st.bind(5, String(response.prefix(2000)))
            st.bind(6, now())
            st.bindBlob(7, body)
            try st.run()
            // Bounded: the newest 1,000 are kept (and none older than max_age, see evictByAge).
            try db.exec("DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) - \(Store.maxDeadLetters) FROM dead_letter)")
            try addEvicted("dead_letter", Int64(batch.count))
        } catch {
            logger.error("outbox: cannot store a dead letter (the batch is dropped)", metadata: ["error": "\(error)", "batch.first": "\(batch.first)"])
        }
        ack(batch)
    }

    func deadLetters(limit: Int) -> [Outbox.DeadLetter] {
        (try? Store.readDeadLetters(db, limit: limit)) ?? []
    }

    /// The dead letters, oldest first (the gateway's outbox and the read-only inspector alike).
    static func readDeadLetters(_ db: SQLiteDB, limit: Int) throws -> [Outbox.DeadLetter] {
        let q = try db.prepare("SELECT id, uplink, first_seq, last_seq, status, response, at_ms, body FROM dead_letter ORDER BY id LIMIT \(max(1, limit))")
        defer { q.reset() }
        var out: [Outbox.DeadLetter] = []
        while try q.step() {
            out.append(Outbox.DeadLetter(id: q.int(0), uplink: q.text(1), first: q.int(2), last: q.int(3), status: Int(q.int(4)), response: q.text(5),
                                         atMillis: q.int(6), body: q.withBlob(7) { Array($0) }))
        }
        return out
    }

    func stats() -> OutboxStats {
        var s = OutboxStats()
        s.committed = committed
        s.delivered = delivered
        s.evicted = evicted
        s.bufferedReadings = max(0, nextSeq - 1 - doneSeq)
        s.bufferedBytes = totalBytes
        s.segments = segmentCount
        s.commits = commitCount
        s.lastSeq = nextSeq - 1
        s.doneSeq = doneSeq
        s.recoveredFrom = recoveredFrom
        s.commitFailures = commitFailures
        // The first segment in key order holds the oldest undelivered reading (delivered
        // segments are deleted): one lookup, not a scan.
        if let q = oldestStmt {
            defer { q.reset() }
            if (try? q.step()) == true { s.oldestMillis = q.int(0) }
        }
        return s
    }
}


// MARK: - read-only inspection (brume buffer stats / export)

/// Reads an outbox database without changing it, while the gateway runs
/// (WAL: readers never block the writer) or not.
public struct OutboxInspector {
    let db: SQLiteDB

    public init(path: String) throws {
        do { db = try SQLiteDB(path: path, readOnly: true) } catch { throw error }
    }

    public struct Summary: Sendable {
        public var buffered: Int64 = 0
        public var bytes: Int64 = 0
        public var segments: Int64 = 0
        public var oldestMillis: Int64?
        public var newestMillis: Int64?
        public var unackedBatches: Int64 = 0
        public var committed: Int64 = 0
        public var delivered: Int64 = 0
        public var evicted: [String: Int64] = [:]
        public var fileBytes: Int64 = 0
    }

    private func meta(_ key: String) throws -> Int64 {
        let q = try db.prepare("SELECT value FROM meta WHERE key = ?")
        defer { q.reset() }
        q.bind(1, key)
        return try q.step() ? q.int(0) : 0
    }

    public func summary() throws -> Summary {
        var s = Summary()
        let done = try meta("done_seq")
        s.buffered = max(0, try meta("next_seq") - 1 - done)
        s.committed = try meta("committed")
        s.delivered = try meta("delivered")
        let q = try db.prepare("SELECT COALESCE(SUM(bytes), 0), COUNT(*), MIN(created_ms), MAX(created_ms) FROM segment WHERE last_seq > ?")
        defer { q.reset() }
        q.bind(1, done)
        if try q.step() {
            s.bytes = q.int(0)
            s.segments = q.int(1)
            if !q.isNull(2) { s.oldestMillis = q.int(2); s.newestMillis = q.int(3) }
        }
        let b = try db.prepare("SELECT COUNT(*) FROM batch WHERE acked = 0")
        defer { b.reset() }
        if try b.step() { s.unackedBatches = b.int(0) }
        let e = try db.prepare("SELECT reason, readings FROM eviction")
        defer { e.reset() }
        while try e.step() { s.evicted[e.text(0)] = e.int(1) }
        let pc = try db.prepare("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        defer { pc.reset() }
        if try pc.step() { s.fileBytes = pc.int(0) }
        return s
    }

    public func deadLetters() throws -> [Outbox.DeadLetter] {
        try Store.readDeadLetters(db, limit: Store.maxDeadLetters)
    }

    /// Calls `body` with every buffered (undelivered) reading whose time is ≥ `sinceMillis`, oldest first.
    public func forEachBuffered(sinceMillis: Int64?, _ body: (StoredReading) -> Void) throws {
        let done = try meta("done_seq")
        let q = try db.prepare("SELECT first_seq, data FROM segment WHERE last_seq > ? ORDER BY first_seq")
        defer { q.reset() }
        q.bind(1, done)
        while try q.step() {
            let first = q.int(0)
            guard let rs = try? q.withBlob(1, { try SegmentCodec.decode($0) }) else { continue }
            for (i, r) in rs.enumerated() {
                let seq = first + Int64(i)
                guard seq > done else { continue }
                if let since = sinceMillis, r.time < since { continue }
                body(StoredReading(seq: seq, reading: r))
            }
        }
    }
}
