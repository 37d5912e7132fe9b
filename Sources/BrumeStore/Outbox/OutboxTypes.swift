import BrumeCore
import Logging

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
    /// Readings whose source can deliver them again (QoS1 MQTT, acknowledged after commit) are
    /// held in memory this long while every uplink takes live batches from memory: what the
    /// cloud acknowledges meanwhile is never written (an SD card at field rates); the rest is
    /// committed then. 0: every reading is committed within `commitInterval`.
    public var hold: Duration = .seconds(2)
    /// The system clock's state (the runtime's clock monitor keeps it): while it is not
    /// synchronised, readings stamped by it are marked and wait for it. nil: trusted.
    public var clock: ClockState?
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
