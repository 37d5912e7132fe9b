import BrumeCore

/// Readings stamped while the system clock was not synchronised (see `ClockState`): batches
/// stop before them until the runtime's clock monitor resolves this boot — corrected by the
/// offset learnt at the sync, or flagged when it gives up (`[clock] wait`). The resolution is
/// written (fsync) before any batch carries them, so a resend is byte for byte the same.
extension Outbox {
    /// What the outbox knows of this boot's clock.
    public enum ClockStatus: Sendable, Equatable {
        /// Nothing stamped by an unsynchronised clock in this boot.
        case none
        /// Marked readings wait for the clock (batches stop before the first).
        case waiting(firstSeq: Int64?)
        /// Corrected by this offset (wall - boot clock, ms).
        case corrected(offsetMillis: Int64)
        /// Sent flagged (`"clock":"unsynced"`).
        case flagged
    }

    public var clockStatus: ClockStatus {
        let marked = pendingLock.withLock { clockMarkedPending }
        return dbLock.withLock { _ in
            switch store.clockBoots[store.bootID] {
            case .pending(let first): return .waiting(firstSeq: first)
            case .corrected(let offset): return .corrected(offsetMillis: offset)
            case .unsynced: return .flagged
            case nil: return marked ? .waiting(firstSeq: nil) : .none
            }
        }
    }

    /// What this outbox remembers of the clock: whether this boot's clock was synchronised,
    /// whether any boot's ever was (NTP works here), and when the latest sync was recorded.
    public struct ClockHistory: Sendable, Equatable {
        public var syncedThisBoot: Bool
        public var everSynced: Bool
        public var lastSyncedAtMillis: Int64?
    }

    public var clockHistory: ClockHistory {
        dbLock.withLock { _ in
            var this = false
            if case .corrected = store.clockBoots[store.bootID] { this = true }
            return ClockHistory(syncedThisBoot: this, everSynced: store.lastSyncedAtMillis != nil, lastSyncedAtMillis: store.lastSyncedAtMillis)
        }
    }

    /// Resolves this boot's clock, once: synchronised with `offsetMillis` (wall - boot clock;
    /// readings marked before are corrected by it, and the boot is remembered as synchronised
    /// even without any), or given up (nil: marked readings are sent flagged). Later calls
    /// change nothing. False if it could not be written (the disk): batches keep waiting.
    @discardableResult
    public func resolveClock(offsetMillis: Int64?) -> Bool {
        let marked = pendingLock.withLock { clockMarkedPending }
        let (done, changed): (Bool, Bool) = dbLock.withLock { _ in
            let boot = store.bootID
            let first: Int64
            switch store.clockBoots[boot] {
            case .corrected, .unsynced: return (true, false)
            case .pending(let f): first = f
            case nil: first = 0
            }
            return ((try? store.resolveClock(boot: boot, offsetMillis: offsetMillis, firstSeq: first)) != nil, true)
        }
        if done && changed {
            if marked {
                logger.notice(offsetMillis == nil
                              ? "clock: readings stamped before the clock was synchronised are sent flagged (\"clock\":\"unsynced\")"
                              : "clock: synchronised; readings stamped before are corrected",
                              metadata: offsetMillis.map { ["offset_ms": "\($0)"] } ?? [:])
            }
            commitSignal.yield() // uplinks waiting on them go on
        }
        return done
    }

    /// Under pendingLock: marked readings of this boot are not resolved yet.
    var clockUnresolved: Bool {
        dbLock.withLock { _ in
            switch store.clockBoots[store.bootID] {
            case .corrected, .unsynced: return false
            case .pending, nil: return true
            }
        }
    }

    /// Readings from memory as they are sent (times corrected once resolved).
    func clockApplied(_ readings: [Reading]) -> [Reading] {
        guard clockMarkedPending else { return readings }
        var out = readings
        dbLock.withLock { _ in store.applyClock(&out, boot: store.bootID) }
        return out
    }
}
