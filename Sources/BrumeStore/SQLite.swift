import CSQLite

#if canImport(Glibc)
import Glibc
#endif

/// SQLITE_TRANSIENT is a C macro Swift does not import: "copy the bytes now".
let SQLITE_TRANSIENT_PTR = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    public var code: Int32
    public var message: String
    public var context: String
    public var description: String { "\(context): \(message) (sqlite code \(code))" }
    /// The database file is damaged or is not a database at all.
    public var isCorruption: Bool {
        let primary = code & 0xff
        return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB
    }
    public var isDiskFull: Bool { code & 0xff == SQLITE_FULL }
}

/// A minimal SQLite connection: one per owner, used from one thread at a time.
final class SQLiteDB {
    let handle: OpaquePointer
    let path: String

    init(path: String, readOnly: Bool = false) throws(SQLiteError) {
        var h: OpaquePointer?
        let rc = sqlite3_open_v2(path, &h, (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let h else {
            let msg = h.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let h { sqlite3_close_v2(h) }
            throw SQLiteError(code: rc, message: msg, context: "open \(path)")
        }
        handle = h
        self.path = path
        sqlite3_extended_result_codes(h, 1)
        sqlite3_busy_timeout(h, 5000)
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    /// Virtual-machine steps and full-scan steps of the statements run so far (counted when a
    /// statement is reset or finalized): the outbox's tests assert that the hot paths are index
    /// lookups, whatever the size of the backlog.
    var vmSteps: Int64 = 0
    var fullScanSteps: Int64 = 0

    func error(_ rc: Int32, _ context: String) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)), context: context)
    }

    func exec(_ sql: String) throws(SQLiteError) {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        if rc != SQLITE_OK { throw error(rc, sql) }
    }

    func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, "prepare \(sql)") }
        return Statement(db: self, stmt: stmt, sql: sql)
    }

    /// Prepared once per connection, kept (the outbox's queries run many times a second; parsing
    /// them again cost more than running them). Only for a statement that is reset after each
    /// use (`defer { q.reset() }`): a cached statement left stepping would hold a read snapshot.
    func cached(_ sql: String) throws(SQLiteError) -> Statement {
        if let s = statements[sql] { return s }
        let s = try prepare(sql)
        statements[sql] = s
        return s
    }
    private var statements: [String: Statement] = [:]

    func scalarInt(_ sql: String) throws(SQLiteError) -> Int64? {
        let s = try cached(sql)
        defer { s.reset() }
        guard try s.step() else { return nil }
        return s.isNull(0) ? nil : s.int(0)
    }

    var changes: Int { Int(sqlite3_changes(handle)) }
}

final class Statement {
    /// Weak: the connection keeps its cached statements (`SQLiteDB.cached`). A statement that
    /// outlives its connection still finalizes (sqlite3_close_v2 waits for that).
    weak var db: SQLiteDB?
    let stmt: OpaquePointer
    let sql: String

    init(db: SQLiteDB, stmt: OpaquePointer, sql: String) {
        self.db = db
        self.stmt = stmt
        self.sql = sql
    }

    deinit {
        count()
        sqlite3_finalize(stmt)
    }

    func reset() {
        count()
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    private func count() {
        guard let db else { return }
        db.vmSteps += Int64(sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_VM_STEP, 1))
        db.fullScanSteps += Int64(sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_FULLSCAN_STEP, 1))
    }

    func bind(_ i: Int32, _ v: Int64) { sqlite3_bind_int64(stmt, i, v) }
    func bindNull(_ i: Int32) { sqlite3_bind_null(stmt, i) }
    func bind(_ i: Int32, _ v: String) { sqlite3_bind_text(stmt, i, v, -1, SQLITE_TRANSIENT_PTR) }
    func bindBlob(_ i: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { b in
            _ = sqlite3_bind_blob(stmt, i, b.baseAddress, Int32(b.count), SQLITE_TRANSIENT_PTR)
        }
    }

    /// Steps once; true when a row is available.
    @discardableResult
    func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        let e = db?.error(rc, sql) ?? SQLiteError(code: rc, message: String(cString: sqlite3_errstr(rc)), context: sql)
        sqlite3_reset(stmt)
        throw e
    }

    /// Runs a statement that returns no rows, then resets it.
    func run() throws(SQLiteError) {
        defer { reset() }
        try step()
    }

    func int(_ col: Int32) -> Int64 { sqlite3_column_int64(stmt, col) }
    func isNull(_ col: Int32) -> Bool { sqlite3_column_type(stmt, col) == SQLITE_NULL }
    func text(_ col: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, col) else { return "" }
        return String(cString: p)
    }
    func withBlob<R>(_ col: Int32, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let p = sqlite3_column_blob(stmt, col)
        let n = Int(sqlite3_column_bytes(stmt, col))
        return try body(UnsafeRawBufferPointer(start: p, count: n))
    }
}
