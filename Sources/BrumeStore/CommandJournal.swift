import BrumeCore
import CSQLite
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public struct CommandRecord: Sendable, Hashable {
    public var seq: Int64
    public var command: Command
    public var state: CommandState
    public var detail: String
    public var updatedAt: Int64
}

/// The durable life of every actuator command: accepted → sent → done |
/// failed | expired | rejected, idempotent by id.
///
/// Its own SQLite file (`commands.db`), WAL with `synchronous = FULL`:
/// commands are rare and a state must survive a power cut. The rule that makes
/// "never run twice" hold across crashes: a command is marked `sent` (durably)
/// *before* it is written to the device; at start, a command found in `sent`
/// is never sent again — it becomes `failed` ("interrupted"); one found in
/// `accepted` was never sent and is resumed (or expired).
public final class CommandJournal: @unchecked Sendable {
    // @unchecked: the connection and statements are used only under `lock`.
    private let lock = Mutex<Void>(())
    private let db: SQLiteDB
    private let logger: Logger
    private let now: @Sendable () -> Int64
    public private(set) var recoveredFrom: String?

    public enum Acceptance: Sendable, Equatable {
        case accepted(Int64)
        /// The id is known: nothing runs; its current state is re-reported.
        case duplicate(CommandState)
    }

    public init(path: String, logger: Logger, now: @escaping @Sendable () -> Int64 = wallClockMillis) throws {
        self.logger = logger
        self.now = now
        do {
            db = try CommandJournal.open(path)
        } catch let e as SQLiteError where e.isCorruption {
            let aside = "\(path).corrupt-\(now())"
            logger.error("command journal is corrupt: moved aside, starting with an empty journal (commands in it are not resumed)",
                         metadata: ["journal.path": "\(path)", "journal.moved_to": "\(aside)", "error": "\(e)"])
            rename(path, aside)
            rename(path + "-wal", aside + "-wal")
            unlink(path + "-shm")
            db = try CommandJournal.open(path)
            recoveredFrom = aside
        }
    }

    private static func open(_ path: String) throws -> SQLiteDB {
        let db = try SQLiteDB(path: path)
        let mode = try db.prepare("PRAGMA journal_mode=WAL")
        _ = try mode.step()
        mode.reset()
        try db.exec("PRAGMA synchronous=FULL")
        let version = try db.scalarInt("PRAGMA user_version") ?? 0
        if version > 1 { throw OutboxError(description: "command journal \(path) has schema version \(version), newer than this brume") }
        if version < 1 {
            try db.exec("""
                BEGIN IMMEDIATE;
                CREATE TABLE command (
                    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
                    id          TEXT NOT NULL UNIQUE,
                    actuator    TEXT NOT NULL,
                    value       TEXT NOT NULL,
                    expires     INTEGER,
                    origin      TEXT NOT NULL,
                    state       TEXT NOT NULL,
                    detail      TEXT NOT NULL DEFAULT '',
                    accepted_at INTEGER NOT NULL,
                    updated_at  INTEGER NOT NULL,
                    reported    TEXT
                );
                CREATE INDEX command_state ON command(state);
                CREATE TABLE event (
                    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
                    body     TEXT NOT NULL,
                    reported INTEGER NOT NULL DEFAULT 0
                );
                PRAGMA user_version=1;
                COMMIT;
                """)
        }
        return db
    }

    static func encodeValue(_ v: Value) -> String {
        var out: [UInt8] = []
        WireFormat.appendValue(v, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    static func decodeValue(_ s: String) -> Value {
        switch try? JSONParser.parse(s) {
        case .number(let d)?: return .number(d)
        case .bool(let b)?: return .bool(b)
        case .string(let t)?: return .string(t)
        default: return .string(s)
        }
    }

    /// Records a new command (state `accepted`), or recognises a known id.
    public func accept(_ c: Command) throws -> Acceptance {
        try insert(c, state: .accepted, detail: "")
    }

    /// Records a rejected command (so that a repeated id is recognised) unless the id is known.
    public func reject(_ c: Command, detail: String) throws -> Acceptance {
        try insert(c, state: .rejected, detail: detail)
    }

    private func insert(_ c: Command, state: CommandState, detail: String) throws -> Acceptance {
        try lock.withLock { _ in
            let q = try db.prepare("SELECT state FROM command WHERE id = ?")
            q.bind(1, c.id)
            if try q.step() { return .duplicate(CommandState(rawValue: q.text(0)) ?? .failed) }
            q.reset()
            let t = now()
            let ins = try db.prepare("INSERT INTO command(id, actuator, value, expires, origin, state, detail, accepted_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            ins.bind(1, c.id)
            ins.bind(2, c.actuator)
            ins.bind(3, CommandJournal.encodeValue(c.value))
            if let e = c.expires { ins.bind(4, e) }
            ins.bind(5, c.origin)
            ins.bind(6, state.rawValue)
            ins.bind(7, detail)
            ins.bind(8, t)
            ins.bind(9, t)
            try ins.run()
            return .accepted(sqlite3_last_insert_rowid(db.handle))
        }
    }

    /// Moves a command to a new state (durably, before the caller acts on it).
    public func transition(_ id: String, to state: CommandState, detail: String = "") throws {
        try lock.withLock { _ in
            let u = try db.prepare("UPDATE command SET state = ?, detail = ?, updated_at = ? WHERE id = ?")
            u.bind(1, state.rawValue)
            u.bind(2, detail)
            u.bind(3, now())
            u.bind(4, id)
            try u.run()
        }
    }

    private func records(_ sql: String, _ bindText: String? = nil) throws -> [CommandRecord] {
        let q = try db.cached(sql)
        defer { q.reset() }
        if let bindText { q.bind(1, bindText) }
        var out: [CommandRecord] = []
        while try q.step() {
            let cmd = Command(id: q.text(1), actuator: q.text(2), value: CommandJournal.decodeValue(q.text(3)),
                              expires: q.isNull(4) ? nil : q.int(4), origin: q.text(5))
            out.append(CommandRecord(seq: q.int(0), command: cmd, state: CommandState(rawValue: q.text(6)) ?? .failed, detail: q.text(7), updatedAt: q.int(8)))
        }
        return out
    }

    static let columns = "seq, id, actuator, value, expires, origin, state, detail, updated_at"

    /// Commands waiting to be dispatched, oldest first.
    public func waiting() throws -> [CommandRecord] {
        try lock.withLock { _ in try records("SELECT \(CommandJournal.columns) FROM command WHERE state = 'accepted' ORDER BY seq") }
    }

    /// The most recently updated commands, newest first (status page).
    public func recent(limit: Int = 20) throws -> [CommandRecord] {
        try lock.withLock { _ in try records("SELECT \(CommandJournal.columns) FROM command ORDER BY updated_at DESC, seq DESC LIMIT \(max(1, limit))") }
    }

    public func record(id: String) throws -> CommandRecord? {
        try lock.withLock { _ in try records("SELECT \(CommandJournal.columns) FROM command WHERE id = ?", id).first }
    }

    /// At start: commands left in `sent` may or may not have run; they are never
    /// sent again. Returns how many were marked failed.
    public func failInterrupted() throws -> Int {
        try lock.withLock { _ in
            try db.exec("UPDATE command SET state = 'failed', detail = 'interrupted: the gateway stopped after sending it to the device; outcome unknown, not resent', updated_at = \(now()) WHERE state = 'sent'")
            return db.changes
        }
    }

    /// States not yet reported upward (the latest state of each command).
    public func unreported(limit: Int = 100) throws -> [CommandResult] {
        try lock.withLock { _ in
            let q = try db.cached("SELECT id, state, updated_at, detail FROM command WHERE reported IS NOT state ORDER BY updated_at, seq LIMIT \(limit)")
            defer { q.reset() }
            var out: [CommandResult] = []
            while try q.step() { out.append(CommandResult(id: q.text(0), state: CommandState(rawValue: q.text(1)) ?? .failed, at: q.int(2), detail: q.text(3))) }
            return out
        }
    }

    /// The cloud acknowledged these results (PUBACK): one transaction for all.
    public func markReported(_ items: [(id: String, state: CommandState)]) throws {
        guard !items.isEmpty else { return }
        try lock.withLock { _ in
            try db.exec("BEGIN IMMEDIATE")
            do {
                let u = try db.prepare("UPDATE command SET reported = ? WHERE id = ?")
                for (id, state) in items {
                    u.bind(1, state.rawValue)
                    u.bind(2, id)
                    try u.run()
                }
                try db.exec("COMMIT")
            } catch {
                try? db.exec("ROLLBACK")
                throw error
            }
        }
    }

    /// Forgets finished commands whose final state the cloud has, last changed before `before`
    /// (ms since the epoch), and reported events: the journal stays small on a card. A command
    /// must expire within `[commands] max_lifetime`, shorter than the retention, so a replay of
    /// a forgotten one has expired. Returns how many commands went.
    @discardableResult
    public func prune(before: Int64) throws -> Int {
        try lock.withLock { _ in
            let d = try db.prepare("DELETE FROM command WHERE state IN ('done', 'failed', 'expired', 'rejected') AND reported = state AND updated_at < ?")
            d.bind(1, before)
            try d.run()
            let n = Int(sqlite3_changes(db.handle))
            try db.exec("DELETE FROM event WHERE reported = 1")
            return n
        }
    }

    /// Forces a re-report of the current state (a repeated id).
    public func reReport(_ id: String) throws {
        try lock.withLock { _ in
            let u = try db.prepare("UPDATE command SET reported = NULL WHERE id = ?")
            u.bind(1, id)
            try u.run()
        }
    }

    /// Stores an event (already encoded) to be reported upward.
    public func addEvent(_ body: String) throws {
        try lock.withLock { _ in
            let i = try db.prepare("INSERT INTO event(body) VALUES (?)")
            i.bind(1, body)
            try i.run()
        }
    }

    public func unreportedEvents(limit: Int = 50) throws -> [(seq: Int64, body: String)] {
        try lock.withLock { _ in
            let q = try db.cached("SELECT seq, body FROM event WHERE reported = 0 ORDER BY seq LIMIT \(limit)")
            defer { q.reset() }
            var out: [(Int64, String)] = []
            while try q.step() { out.append((q.int(0), q.text(1))) }
            return out
        }
    }

    public func markEventsReported(_ seqs: [Int64]) throws {
        guard !seqs.isEmpty else { return }
        try lock.withLock { _ in try db.exec("DELETE FROM event WHERE seq IN (\(seqs.map(String.init).joined(separator: ",")))") }
    }

    public func counts() -> [String: Int64] {
        (try? lock.withLock { _ in
            let q = try db.cached("SELECT state, COUNT(*) FROM command GROUP BY state")
            defer { q.reset() }
            var out: [String: Int64] = [:]
            while try q.step() { out[q.text(0)] = q.int(1) }
            return out
        }) ?? [:]
    }
}
