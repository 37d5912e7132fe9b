import BrumeCore
import CSQLite
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif


extension Store {
    func unackedBatches(uplink: String) -> [BatchRecord] {
        do {
            let q = try db.cached("SELECT first_seq, last_seq, hist, run FROM batch WHERE uplink = ? AND acked = 0 ORDER BY first_seq")
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

    /// First sequence number of `lane` not yet in a recorded batch.
    func firstUnbatched(_ uplink: String, in lane: ClosedRange<Int64>) throws(SQLiteError) -> Int64 {
        let q = try db.cached("SELECT last_seq FROM batch WHERE uplink = ? AND first_seq >= ? AND first_seq <= ? ORDER BY first_seq DESC LIMIT 1")
        defer { q.reset() }
        q.bind(1, uplink)
        q.bind(2, lane.lowerBound)
        q.bind(3, lane.upperBound)
        let lastBatched = try q.step() ? q.int(0) : 0
        return max(cursor[uplink] ?? doneSeq, doneSeq, lastBatched, lane.lowerBound - 1) + 1
    }

    func nextBatch(uplink: String, maxReadings: Int, maxDelayMillis: Int64, lane: ClosedRange<Int64>, backlog: Bool) -> Outbox.NextBatch {
        do {
            let first = try firstUnbatched(uplink, in: lane)
            var lastCommitted = min(nextSeq - 1, lane.upperBound)
            // Readings stamped by a clock not yet synchronised wait for it (or for `[clock] wait`).
            if let stop = unresolvedFrom { lastCommitted = min(lastCommitted, stop - 1) }
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
            if available < maxReadings && ageMillis < maxDelayMillis && !backlog {
                return .waitUntil(t + (maxDelayMillis - ageMillis))
            }
            let last = first + min(Int64(maxReadings), available) - 1
            let rec = BatchRecord(first: first, last: last, historical: backlog || ageMillis > options.historicalAfterMillis, uplink: uplink, run: run)
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
                    if c.boot == nil {
                        out.append(contentsOf: c.readings[lo..<hi])
                    } else {
                        var part = Array(c.readings[lo..<hi])
                        applyClock(&part, boot: c.boot)
                        out.append(contentsOf: part)
                    }
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
                let decoded: (readings: [Reading], boot: String?)
                do {
                    decoded = try segmentsAfterStmt.withBlob(3) { try SegmentCodec.decodeSegment($0) }
                } catch {
                    let l = segmentsAfterStmt.int(1)
                    segmentsAfterStmt.reset()
                    quarantine(first: f, last: l, error: "\(error)")
                    seq = l + 1 // the rest of the batch still goes
                    continue
                }
                cache = (f, decoded.readings, decoded.boot)
            }
            return out.isEmpty ? nil : out
        } catch {
            logger.error("outbox: cannot read readings", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// A segment failed its checksum: drop it (counted as "corrupt") rather than block the queue.
    func quarantine(first: Int64, last: Int64, error: String) {
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
                let d = try db.cached("DELETE FROM batch WHERE uplink = ? AND first_seq = ? AND last_seq = ? AND acked = 0")
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

    /// Moves an uplink's cursor over its contiguous prefix of acknowledged batches — stepping
    /// over sequence numbers that have no segment (readings the cloud acknowledged from memory
    /// were never written) — then done_seq, deleting the segments every uplink is past. Inside a
    /// transaction.
    func advance(_ u: String) throws(SQLiteError) {
        let from = cursor[u] ?? doneSeq
        let q = try db.cached("SELECT first_seq, last_seq, acked FROM batch WHERE uplink = ? AND first_seq > ? ORDER BY first_seq")
        defer { q.reset() }
        q.bind(1, u)
        q.bind(2, from)
        var done = from
        while try q.step() {
            let (f, l) = (q.int(0), q.int(1))
            guard q.int(2) == 1 else { break }
            if f > done + 1, try hasSegment(done + 1, f - 1) { break }
            done = max(done, l)
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
            try setMeta("committed", committed)
            try setMeta("next_seq", nextSeq)
        }
    }

    /// Whether a segment holds any of `a...b` (a lookup by the primary key).
    func hasSegment(_ a: Int64, _ b: Int64) throws(SQLiteError) -> Bool {
        guard a <= b else { return false }
        let q = try db.cached("SELECT last_seq FROM segment WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1")
        defer { q.reset() }
        q.bind(1, b)
        return try q.step() && q.int(0) >= a
    }

    /// Readings of a live batch (sent from memory) were committed before its outcome: the batch
    /// is recorded as it went (same id), acknowledged or not, so that the uplink neither sends
    /// them again nor loses track of them.
    func recordLive(_ batch: BatchRecord, acked: Bool) throws(SQLiteError) {
        let u = key(batch.uplink)
        let st = try db.cached("INSERT OR REPLACE INTO batch(uplink, first_seq, last_seq, hist, acked, run) VALUES (?, ?, ?, ?, ?, ?)")
        defer { st.reset() }
        st.bind(1, u)
        st.bind(2, batch.first)
        st.bind(3, batch.last)
        st.bind(4, batch.historical ? 1 : 0)
        st.bind(5, acked ? 1 : 0)
        st.bind(6, Int64(bitPattern: batch.run))
        try st.run()
        if acked { try advance(u) }
    }

    /// Readings acknowledged from memory by every uplink were never written: cursors, done_seq
    /// and next_seq move over them in memory (written with the next transaction; a crash before
    /// that leaves them behind over sequence numbers without segments, which is harmless).
    func skipDelivered(through seq: Int64) {
        if seq >= nextSeq { nextSeq = seq + 1 }
        for k in uplinkKeys {
            // Only over what this uplink had nothing recorded or written before.
            let c = cursor[k] ?? doneSeq
            if c < seq, (try? hasSegment(c + 1, seq)) == false, (try? hasBatch(k, after: c)) == false { cursor[k] = seq }
        }
        let all = uplinkKeys.map { cursor[$0] ?? doneSeq }.min() ?? doneSeq
        if all > doneSeq, (try? hasSegment(doneSeq + 1, all)) == false {
            delivered += all - doneSeq
            doneSeq = all
        }
    }

    func hasBatch(_ u: String, after seq: Int64) throws(SQLiteError) -> Bool {
        let q = try db.cached("SELECT 1 FROM batch WHERE uplink = ? AND first_seq > ? LIMIT 1")
        defer { q.reset() }
        q.bind(1, u)
        q.bind(2, seq)
        return try q.step()
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
                try advance(u)
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
        let q = try db.cached("SELECT id, uplink, first_seq, last_seq, status, response, at_ms, body FROM dead_letter ORDER BY id LIMIT \(max(1, limit))")
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
        // The readings in segments, less the delivered part of the first one.
        var buffered = storedReadings
        if let q = try? db.prepare("SELECT first_seq, last_seq FROM segment ORDER BY first_seq LIMIT 1") {
            if (try? q.step()) == true, q.int(0) <= doneSeq { buffered -= min(doneSeq, q.int(1)) - q.int(0) + 1 }
            q.reset()
        }
        s.bufferedReadings = max(0, buffered)
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
