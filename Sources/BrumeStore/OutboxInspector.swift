import BrumeCore
import CSQLite
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif


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
        let q = try db.cached("SELECT value FROM meta WHERE key = ?")
        defer { q.reset() }
        q.bind(1, key)
        return try q.step() ? q.int(0) : 0
    }

    public func summary() throws -> Summary {
        var s = Summary()
        let done = try meta("done_seq")
        s.delivered = try meta("delivered")
        // Readings in segments (next_seq and `committed` are written lazily; sequence numbers
        // without a segment — delivered from memory, refused — are not readings).
        let q = try db.cached("SELECT COALESCE(SUM(bytes), 0), COUNT(*), MIN(created_ms), MAX(created_ms), COALESCE(SUM(count), 0), MIN(first_seq) FROM segment WHERE last_seq > ?")
        defer { q.reset() }
        q.bind(1, done)
        if try q.step() {
            s.bytes = q.int(0)
            s.segments = q.int(1)
            if !q.isNull(2) { s.oldestMillis = q.int(2); s.newestMillis = q.int(3) }
            s.buffered = q.int(4) - (q.isNull(5) ? 0 : max(0, done - q.int(5) + 1))
        }
        let b = try db.cached("SELECT COUNT(*) FROM batch WHERE acked = 0")
        defer { b.reset() }
        if try b.step() { s.unackedBatches = b.int(0) }
        let e = try db.cached("SELECT reason, readings FROM eviction")
        defer { e.reset() }
        while try e.step() { s.evicted[e.text(0)] = e.int(1) }
        s.committed = max(try meta("committed"), s.delivered + s.evicted.values.reduce(0, &+) + s.buffered)
        let pc = try db.cached("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
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
        let q = try db.cached("SELECT first_seq, data FROM segment WHERE last_seq > ? ORDER BY first_seq")
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
