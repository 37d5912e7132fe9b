@testable import BrumeStore

// Test hooks: what the tests need of the outbox's insides, kept out of the production code.
extension Outbox {
    /// Test hook: evicts through `seq` as the size limit would (counted as "max_bytes").
    func dbLockedEvict(through seq: Int64) {
        dbLock.withLock { _ in store.evictForTest(through: seq) }
    }

    /// Test hook: caps the database size in pages (SQLite `max_page_count`), to
    /// make commits fail as on a full disk.
    func setMaxPageCount(_ pages: Int) {
        dbLock.withLock { _ in try? store.db.exec("PRAGMA max_page_count=\(pages)") }
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
}

extension Store {
    func evictForTest(through seq: Int64) {
        try? db.exec("BEGIN IMMEDIATE")
        do { try evict(through: seq, reason: "max_bytes"); try db.exec("COMMIT") } catch { try? db.exec("ROLLBACK") }
    }
}
