import BrumeCore
import CSQLite
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A fault of the storage under the outbox, found while running: the gateway is not ready
/// while it lasts, status, metrics and logs name it, and a fault that only a restart can
/// clear (an I/O error, corruption, the data folder gone) makes the gateway stop feeding the
/// systemd watchdog and then exit, so that it starts again on a sound file.
public struct StorageFault: Sendable, Hashable {
    public enum Kind: String, Sendable {
        /// SQLITE_FULL: readings are held in memory and committed when space returns.
        case diskFull = "disk_full"
        /// SQLITE_IOERR, SQLITE_READONLY (a card remounted read-only), SQLITE_CANTOPEN ...
        case ioError = "io_error"
        /// SQLITE_CORRUPT / NOTADB found while running: the recovery at start moves the file aside.
        case corrupt
        /// The outbox file was deleted or replaced under the running gateway (`rm -rf`, a
        /// remount): commits would go to an unlinked file.
        case dataFolderGone = "data_folder_gone"
    }
    public var kind: Kind
    public var detail: String
    /// When it was first seen (ms since the epoch, monotonic ns).
    public var sinceMillis: Int64
    public var sinceMonoNanos: UInt64
    /// Only a restart clears it (a disk that is full is not helped by one).
    public var needsRestart: Bool { kind != .diskFull }

    /// How long it has lasted.
    public func age(now: UInt64 = monotonicNanos()) -> Duration {
        .nanoseconds(Int64(clamping: now > sinceMonoNanos ? now - sinceMonoNanos : 0))
    }

    static func classify(_ e: SQLiteError) -> Kind {
        switch e.code & 0xff {
        case SQLITE_FULL: return .diskFull
        case SQLITE_CORRUPT, SQLITE_NOTADB: return .corrupt
        default: return .ioError
        }
    }
}

/// Identity of the outbox file, to notice it being deleted or replaced.
struct FileIdentity: Equatable {
    var device: UInt64
    var inode: UInt64

    static func of(_ path: String) -> FileIdentity? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }
}

extension Outbox {
    /// The current storage fault, if any (the data folder's before a commit's).
    public var storageFault: StorageFault? {
        faults.withLock { $0.folder ?? $0.commit }
    }

    /// A commit failed (`error`), or succeeded (nil): the commit fault follows.
    func noteCommit(_ error: SQLiteError?) {
        let changed: (StorageFault?, StorageFault?) = faults.withLock { f in
            let before = f.commit
            if let error {
                let kind = StorageFault.classify(error)
                if f.commit?.kind != kind {
                    f.commit = StorageFault(kind: kind, detail: "\(error)", sinceMillis: wallClockMillis(), sinceMonoNanos: monotonicNanos())
                }
            } else {
                f.commit = nil
            }
            return (before, f.commit)
        }
        if changed.0 != nil && changed.1 == nil {
            logger.notice("outbox commits succeed again", metadata: ["fault.was": "\(changed.0!.kind.rawValue)"])
        }
    }

    /// Every second, from the writer: is the outbox file still the one we opened?
    func checkDataFolder() {
        guard let opened = openedIdentity else { return }
        let now = FileIdentity.of(options.path)
        guard now != opened else { return }
        let detail = now == nil
            ? "the outbox file \(options.path) was deleted while the gateway runs (the data folder removed or unmounted?)"
            : "the outbox file \(options.path) was replaced while the gateway runs (the data folder remounted or restored?)"
        let isNew = faults.withLock { f -> Bool in
            guard f.folder == nil else { return false }
            f.folder = StorageFault(kind: .dataFolderGone, detail: detail, sinceMillis: wallClockMillis(), sinceMonoNanos: monotonicNanos())
            return true
        }
        if isNew {
            logger.critical("outbox storage fault: \(detail); the gateway restarts to open the data folder again",
                            metadata: ["fault": "data_folder_gone", "outbox.path": "\(options.path)"])
        }
    }
}
