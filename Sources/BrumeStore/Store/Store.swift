import BrumeCore
import CSQLite
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif


// MARK: - the database

/// What became of the readings a boot stamped while the system clock was not synchronised.
enum ClockResolution: Equatable {
    /// Not yet known: batches stop before the first of them.
    case pending(firstSeq: Int64)
    /// The clock was synchronised in the same boot: true time = boot-clock time + offset.
    case corrected(offsetMillis: Int64)
    /// Never synchronised in time (a reboot, or `[clock] wait` passed): sent flagged.
    case unsynced
}

/// Everything that touches SQLite. Used only under `Outbox.dbLock`.
final class Store {
    static let schemaVersion: Int64 = 4
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
        // 4: boots whose readings were stamped while the system clock was not synchronised,
        // and what became of them: corrected by `offset_ms` (wall - boot clock after the sync) or,
        // with offset_ms NULL once resolved, sent flagged. `first_seq`: the first such reading;
        // batches stop before it while the boot is unresolved.
        """
        CREATE TABLE clock_boot (
            boot      TEXT PRIMARY KEY,
            first_seq INTEGER NOT NULL,
            resolved  INTEGER NOT NULL DEFAULT 0,
            offset_ms INTEGER,
            at_ms     INTEGER
        ) WITHOUT ROWID;
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
    /// Readings in the segments (sequence numbers without a segment — delivered from memory,
    /// refused when full, quarantined — are not readings).
    var storedReadings: Int64 = 0
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
    var cache: (first: Int64, readings: [Reading], boot: String?)?
    /// This boot (readings marked as stamped by an unsynchronised clock are written with it).
    var bootID: String { options.clock?.bootID ?? "" }
    /// Boots with marked readings: pending (batches stop at `first_seq`), corrected, or flagged.
    var clockBoots: [String: ClockResolution] = [:]
    /// Wall time (ms) of the latest synchronisation this outbox recorded: a true time, so a
    /// clock earlier than this is certainly wrong.
    var lastSyncedAtMillis: Int64?
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
        // A WAL of 256 pages (1 MiB), reused: every commit at a field rate adds at least a page,
        // and while the WAL file grows each fsync also commits the file system's journal (its
        // new size): 3-4x the bytes at the block layer (bench/field.sh --block). 256 commits
        // (4 minutes at one a second) reach the steady size; then commits rewrite blocks in
        // place. Smaller checkpoints more often (64 pages: +30 % write_bytes at 100/s), larger
        // grows for longer after every start (1,000: 17 minutes).
        try db.exec("PRAGMA wal_autocheckpoint=\(max(16, min(256, options.walLimit / 4096 / 2)))")
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

    func loadState() throws {
        // Also after a failed transaction: what is in memory may be ahead of meta (next_seq and
        // the counters are written lazily), never behind.
        let inMemoryNext = nextSeq
        let q = try db.cached("SELECT key, value FROM meta")
        defer { q.reset() }
        while try q.step() {
            let v = q.int(1)
            switch q.text(0) {
            case "next_seq": nextSeq = max(inMemoryNext, v)
            case "done_seq": doneSeq = v
            case "committed": committed = v
            case "delivered": delivered = v
            default: break
            }
        }
        let e = try db.cached("SELECT reason, readings FROM eviction")
        defer { e.reset() }
        while try e.step() { evicted[e.text(0)] = e.int(1) }
        // Cursors: the primary's is done_seq's history; an uplink seen for the first time starts
        // at what is still buffered (it does not get what left before it existed).
        cursor = [:]
        let c = try db.cached("SELECT key, value FROM meta WHERE key LIKE 'cursor:%'")
        defer { c.reset() }
        var stored: [String: Int64] = [:]
        while try c.step() { stored[String(c.text(0).dropFirst(7))] = c.int(1) }
        for k in uplinkKeys { cursor[k] = max(doneSeq, stored[k] ?? doneSeq) }
        let s = try db.cached("SELECT COALESCE(SUM(bytes), 0), COUNT(*), COALESCE(MAX(last_seq), 0), COALESCE(SUM(count), 0) FROM segment")
        defer { s.reset() }
        _ = try s.step()
        totalBytes = s.int(0)
        segmentCount = s.int(1)
        storedReadings = s.int(3)
        // Never reuse a sequence number, even if meta lagged behind.
        nextSeq = max(nextSeq, s.int(2) + 1)
        // `committed` is written lazily: at least what is accounted for.
        committed = max(committed, delivered + evicted.values.reduce(0, &+) + storedReadings)
        try loadClockBoots()
    }

    /// Clock resolutions. A pending one of another boot can never be corrected (the boot
    /// clock started again): it is resolved as unsynchronised, its readings go out flagged.
    func loadClockBoots() throws {
        clockBoots = [:]
        let q = try db.prepare("SELECT boot, first_seq, resolved, offset_ms, at_ms FROM clock_boot")
        var stale: [String] = []
        while try q.step() {
            let boot = q.text(0)
            if q.int(2) != 0 {
                clockBoots[boot] = q.isNull(3) ? .unsynced : .corrected(offsetMillis: q.int(3))
                if !q.isNull(3) { lastSyncedAtMillis = max(lastSyncedAtMillis ?? .min, q.int(4)) }
            } else if boot == bootID {
                clockBoots[boot] = .pending(firstSeq: q.int(1))
            } else {
                stale.append(boot)
            }
        }
        q.reset()
        for boot in stale {
            try resolveClock(boot: boot, offsetMillis: nil, firstSeq: 0)
            logger.warning("readings stamped before the clock was synchronised, in an earlier boot, cannot be corrected: they are sent flagged (\"clock\":\"unsynced\")",
                           metadata: ["boot": "\(boot)"])
        }
    }

    /// Records what became of a boot's marked readings, durably (fsync) before any batch
    /// carries them: a batch resent after a power cut must be encoded the same way.
    func resolveClock(boot: String, offsetMillis: Int64?, firstSeq: Int64) throws(SQLiteError) {
        let st = try db.prepare("""
            INSERT INTO clock_boot(boot, first_seq, resolved, offset_ms, at_ms) VALUES (?, ?, 1, ?, ?)
            ON CONFLICT(boot) DO UPDATE SET resolved = 1, offset_ms = excluded.offset_ms, at_ms = excluded.at_ms
            """)
        st.bind(1, boot)
        st.bind(2, firstSeq)
        if let offsetMillis { st.bind(3, offsetMillis) } else { st.bindNull(3) }
        st.bind(4, now())
        let level = (try? db.scalarInt("PRAGMA synchronous")) ?? 1
        try? db.exec("PRAGMA synchronous=FULL")
        defer { try? db.exec("PRAGMA synchronous=\(level)") }
        try st.run()
        // One row per boot: keep the newest thousand resolved ones (the latest sync among them; a backlog spanning more boots than that is not plausible).
        try db.exec("DELETE FROM clock_boot WHERE resolved = 1 AND boot NOT IN (SELECT boot FROM clock_boot WHERE resolved = 1 ORDER BY at_ms DESC LIMIT 1000)")
        clockBoots[boot] = offsetMillis.map { .corrected(offsetMillis: $0) } ?? .unsynced
        if offsetMillis != nil { lastSyncedAtMillis = max(lastSyncedAtMillis ?? .min, now()) }
    }

    /// Where batches stop: the first reading of this boot stamped by a clock not yet resolved.
    var unresolvedFrom: Int64? {
        if case .pending(let first) = clockBoots[bootID] { return first }
        return nil
    }

    /// The readings as they are sent: times corrected where the boot's clock was resolved.
    func applyClock(_ readings: inout [Reading], boot: String?) {
        guard let boot else { return }
        let resolution = clockBoots[boot]
        for i in readings.indices {
            guard let b = readings[i].unsyncedBootMillis else { continue }
            if case .corrected(let offset) = resolution {
                readings[i].time = b &+ offset
                readings[i].unsyncedBootMillis = nil
            }
        }
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
        try? setMeta("committed", committed)
        try? setMeta("next_seq", nextSeq)
        try? db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    /// The key of an uplink: "" for the primary (also under its configured name).
    func key(_ name: String) -> String {
        name.isEmpty ? uplinkKeys[0] : name
    }

    func setCursor(_ k: String, _ v: Int64) throws(SQLiteError) {
        cursor[k] = v
        if uplinkKeys.count == 1 { return } // one uplink: its cursor is done_seq
        let st = try db.prepare("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        st.bind(1, "cursor:" + k)
        st.bind(2, v)
        try st.run()
    }

    func setMeta(_ key: String, _ value: Int64) throws(SQLiteError) {
        setMetaStmt.bind(1, value)
        setMetaStmt.bind(2, key)
        try setMetaStmt.run()
    }

    func addEvicted(_ reason: String, _ n: Int64) throws(SQLiteError) {
        guard n > 0 else { return }
        evicted[reason, default: 0] += n
        let s = try db.prepare("INSERT INTO eviction(reason, readings) VALUES (?, ?) ON CONFLICT(reason) DO UPDATE SET readings = readings + excluded.readings")
        s.bind(1, reason)
        s.bind(2, n)
        try s.run()
    }
}
