import BrumeCore
import CSQLite
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif


extension Store {
    enum InsertResult { case stored, refused, failed(SQLiteError) }

    /// Stores one segment (one transaction). `refused`: dropped by when_full =
    /// drop_newest (counted); `failed`: SQLite error (disk full, I/O): nothing
    /// stored, the caller keeps the readings and retries.
    func insertSegment(_ readings: ArraySlice<Reading>, first given: Int64? = nil) -> InsertResult {
        // Readings acknowledged from memory were never written: their sequence numbers are a gap.
        if let given, given > nextSeq { nextSeq = given }
        let blob = SegmentCodec.encode(readings, boot: bootID)
        // The first reading of this boot stamped by an unsynchronised clock, if none before.
        let firstMarked = clockBoots[bootID] == nil ? readings.firstIndex { $0.unsyncedBootMillis != nil } : nil
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
                    nextSeq += n // their sequence numbers (assigned on arrival) stay unused
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
                if let i = firstMarked {
                    let seq = first + Int64(i - readings.startIndex)
                    let st = try db.prepare("INSERT OR IGNORE INTO clock_boot(boot, first_seq) VALUES (?, ?)")
                    st.bind(1, bootID)
                    st.bind(2, seq)
                    try st.run()
                    clockBoots[bootID] = .pending(firstSeq: seq)
                }
                // One page per commit, not two: next_seq is recovered from the segments at open
                // (MAX(last_seq) + 1), and the `committed` counter is written with the next
                // acknowledgement or at close (a crash may undercount it; nothing else).
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
                storedReadings += n
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

    func logFull(_ n: Int64) {
        if let suppressed = corruptLimiter.admit() {
            logger.warning("outbox full (when_full = drop_newest): new readings dropped", metadata: ["readings": "\(n)", "suppressed": "\(suppressed)"])
        }
    }

    /// Evicts the oldest segments until `needing` bytes are freed (inside a transaction).
    func evictOldest(needing: Int64, reason: String) throws(SQLiteError) {
        guard needing > 0 else { return }
        var freed: Int64 = 0
        var through = doneSeq
        let q = try db.cached("SELECT first_seq, last_seq, bytes FROM segment ORDER BY first_seq")
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
    func evict(through requested: Int64, reason: String) throws(SQLiteError) {
        guard requested > doneSeq else { return }
        var through = requested
        // A recorded batch must stay whole: extend to its end.
        // (With several uplinks, the longest straddling batch of any of them.)
        let straddle = try db.cached("SELECT MAX(last_seq) FROM batch WHERE first_seq <= ? AND last_seq > ?")
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

    func removeSegments(through: Int64) throws(SQLiteError) {
        // A range of the primary key (segments never overlap), not a scan of the table.
        let q = try db.cached("SELECT COALESCE(SUM(bytes), 0), COUNT(*), COALESCE(SUM(count), 0) FROM segment WHERE first_seq <= ?1 AND last_seq <= ?1")
        defer { q.reset() }
        q.bind(1, through)
        _ = try q.step()
        let b = q.int(0)
        let c = q.int(1)
        let r = q.int(2)
        guard c > 0 else { return }
        let d = try db.prepare("DELETE FROM segment WHERE first_seq <= ?1 AND last_seq <= ?1")
        d.bind(1, through)
        try d.run()
        totalBytes -= b
        segmentCount -= c
        storedReadings -= r
        forgetCommits(through: through)
        if let cached = cache, cached.first <= through { cache = nil }
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
            let q = try db.cached("SELECT last_seq, created_ms FROM segment ORDER BY first_seq")
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
            guard let decoded = try? q.withBlob(1, { try SegmentCodec.decodeSegment($0) }) else { continue }
            var rs = decoded.readings
            applyClock(&rs, boot: decoded.boot)
            if first <= doneSeq { rs.removeFirst(min(rs.count, Int(doneSeq - first + 1))) }
            chunks.append(rs)
            n += rs.count
        }
        var out = Array(chunks.reversed().joined())
        if out.count > limit { out.removeFirst(out.count - limit) }
        return out
    }
}
