import BrumeCore
import BrumeRules
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The latest value of every stream, by source and device: the status page's
/// "last value and its age", `/api/v1/readings/latest` and `brume status`.
/// Bounded: beyond `capacity` streams, new ones are not tracked (counted).
final class LatestValues: Sendable {
    /// `time`: the reading's own; `received`: when the gateway got it (ages on the status page).
    struct Entry: Sendable { var value: Value; var time: Int64; var received: Int64 }
    /// Flat (one hash per reading, on the hot path); nested by `snapshot` for the readers.
    struct Key: Hashable, Sendable { var source: String; var device: String; var metric: String }
    private let table = Mutex<[Key: Entry]>([:])
    let capacity: Int
    let untracked = Counter()

    init(capacity: Int = 20_000) { self.capacity = capacity }

    func record(_ readings: [Reading], source: String) {
        guard !readings.isEmpty else { return }
        let now = wallClockMillis()
        table.withLock { t in
            for r in readings {
                let key = Key(source: source, device: r.device, metric: r.metric)
                let entry = Entry(value: r.value, time: r.time, received: now)
                if t.count >= capacity {
                    guard t[key] != nil else { untracked.add(); continue }
                }
                t[key] = entry
            }
        }
    }

    /// Source -> device -> metric -> latest entry.
    var snapshot: [String: [String: [String: Entry]]] {
        let flat = table.withLock { $0 }
        var out: [String: [String: [String: Entry]]] = [:]
        for (k, e) in flat { out[k.source, default: [:]][k.device, default: [:]][k.metric] = e }
        return out
    }

    /// A source went away on reload: its streams go too.
    func remove(source: String) {
        table.withLock { t in t = t.filter { $0.key.source != source } }
    }
}

/// Live readings for `/api/v1/stream` subscribers (server-sent events) and
/// `brume tail`. Costs one atomic load per batch while nobody listens; a slow
/// subscriber loses its oldest lines (bounded buffer), never slows the sources.
final class ReadingBroadcaster: Sendable {
    struct Subscriber: Sendable {
        var continuation: AsyncStream<[UInt8]>.Continuation
        var match: [Glob]
    }
    private let subscribers = Mutex<[UInt64: Subscriber]>([:])
    private let active = Atomic<Int>(0)
    private let nextID = Atomic<UInt64>(1)
    let maxSubscribers = 16

    var count: Int { active.load(ordering: .relaxed) }

    func publish(_ readings: [Reading]) {
        guard active.load(ordering: .relaxed) > 0 else { return }
        let subs = subscribers.withLock { Array($0.values) }
        for r in readings {
            var line: [UInt8] = []
            ReadingBroadcaster.encode(r, into: &line)
            for s in subs where s.match.isEmpty || s.match.contains(where: { $0.matches("\(r.device)/\(r.metric)") }) {
                s.continuation.yield(line)
            }
        }
    }

    /// One JSON object per reading, as in a telemetry batch: {"d":...,"m":...,"t":...,"v":...}.
    static func encode(_ r: Reading, into out: inout [UInt8]) {
        out.append(contentsOf: #"{"d":"#.utf8)
        WireFormat.appendString(r.device, to: &out)
        out.append(contentsOf: #","m":"#.utf8)
        WireFormat.appendString(r.metric, to: &out)
        out.append(contentsOf: #","t":"#.utf8)
        WireFormat.appendInteger(r.time, to: &out)
        out.append(contentsOf: #","v":"#.utf8)
        WireFormat.appendValue(r.value, to: &out)
        out.append(UInt8(ascii: "}"))
    }

    /// Nil when too many subscribers are connected already.
    func subscribe(match: [Glob]) -> (UInt64, AsyncStream<[UInt8]>)? {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .bufferingNewest(2000))
        let ok = subscribers.withLock { s in
            guard s.count < maxSubscribers else { return false }
            s[id] = Subscriber(continuation: continuation, match: match)
            return true
        }
        guard ok else { continuation.finish(); return nil }
        active.add(1, ordering: .relaxed)
        continuation.onTermination = { [weak self] _ in self?.unsubscribe(id) }
        return (id, stream)
    }

    /// An empty line: the server writes a keep-alive comment.
    func ping(_ id: UInt64) {
        _ = subscribers.withLock { $0[id] }?.continuation.yield([])
    }

    func unsubscribe(_ id: UInt64) {
        if let s = subscribers.withLock({ $0.removeValue(forKey: id) }) {
            active.subtract(1, ordering: .relaxed)
            s.continuation.finish()
        }
    }

    func finishAll() {
        for s in subscribers.withLock({ let x = $0; $0 = [:]; return x }).values { s.continuation.finish() }
        active.store(0, ordering: .relaxed)
    }
}

/// The last warnings and errors of the log (each already rate-limited where it
/// repeats), for the status page: "recent errors" with their source and reason.
public final class RecentLog: Sendable {
    public struct Entry: Sendable {
        public var atMillis: Int64
        public var level: Logger.Level
        public var message: String
        public var source: String?
        public var reason: String?
        public var detail: String?
    }
    public static let shared = RecentLog()
    private let ring = Mutex<[Entry]>([])
    private let capacity = 50

    func add(_ e: Entry) {
        ring.withLock { r in
            r.append(e)
            if r.count > capacity { r.removeFirst(r.count - capacity) }
        }
    }
    public var entries: [Entry] { ring.withLock { $0 } }
}

/// The last log lines as written (every level the log lets through), for remote diagnostics.
public final class LogTail: Sendable {
    public static let shared = LogTail()
    private let ring = Mutex<[String]>([])
    static let capacity = 500
    func add(_ line: String) {
        ring.withLock { r in
            r.append(line.hasSuffix("\n") ? String(line.dropLast()) : line)
            if r.count > LogTail.capacity { r.removeFirst(r.count - LogTail.capacity) }
        }
    }
    public func last(_ n: Int) -> [String] { ring.withLock { Array($0.suffix(n)) } }
}

/// The process's own resource use (status, metrics, self-telemetry).
enum ProcessStats {
    static func residentBytes() -> Int64 {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var size = 0, resident = 0
        guard withUnsafeMutablePointer(to: &size, { sp in withUnsafeMutablePointer(to: &resident) { rp in
            vfscanf_helper(f, sp, rp) } }) == 2 else { return 0 }
        return Int64(resident) * Int64(sysconf(Int32(_SC_PAGESIZE)))
    }

    private static func vfscanf_helper(_ f: UnsafeMutablePointer<FILE>, _ a: UnsafeMutablePointer<Int>, _ b: UnsafeMutablePointer<Int>) -> Int32 {
        var buf = [CChar](repeating: 0, count: 128)
        guard fgets(&buf, 128, f) != nil else { return 0 }
        let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        let parts = String(decoding: bytes, as: UTF8.self).split(separator: " ")
        guard parts.count >= 2, let x = Int(parts[0]), let y = Int(parts[1]) else { return 0 }
        a.pointee = x
        b.pointee = y
        return 2
    }

    /// /proc/self/io `write_bytes`: what this process caused to be sent to storage (nil where
    /// the kernel has no task I/O accounting).
    static func writtenBytes() -> Int64? {
        guard let f = fopen("/proc/self/io", "r") else { return nil }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 128)
        while fgets(&buf, 128, f) != nil {
            let line = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if line.hasPrefix("write_bytes:") {
                return Int64(line.dropFirst("write_bytes:".count).filter { $0 != " " && $0 != "\n" })
            }
        }
        return nil
    }

    /// Free bytes (for unprivileged users) and size of the file system holding `path`.
    static func fileSystem(_ path: String) -> (free: Int64, size: Int64)? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        let frsize = Int64(s.f_frsize)
        return (Int64(s.f_bavail) &* frsize, Int64(s.f_blocks) &* frsize)
    }

    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
    }
}
