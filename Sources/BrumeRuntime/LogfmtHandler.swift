import BrumeCore
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Structured log lines on stderr, logfmt style:
/// `ts=2026-11-26T18:09:45.123Z level=warning msg="MQTT connection lost" source.name=field error="..."`
/// (journald keeps them as they are; `brume` reads nothing back from them).
public struct LogfmtHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    /// The process-wide level: `[log] level` changes apply on reload without a restart.
    public var logLevel: Logger.Level {
        get { overrideLevel ?? LogfmtHandler.level.withLock { $0 } }
        set { overrideLevel = newValue }
    }
    /// Set on one logger (e.g. the HTTP server's, quieter): does not change the others.
    private var overrideLevel: Logger.Level?
    public static let level = Locked<Logger.Level>(.info)
    public let label: String

    public init(label: String, level: Logger.Level = .info) {
        self.label = label
        LogfmtHandler.level.withLock { $0 = level }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// stderr is connected to journald (systemd sets `JOURNAL_STREAM` to the device and inode of
    /// the stream it gave us, sd-daemon(3)): each line starts with its syslog priority (`<4>`), which
    /// journald strips and keeps, so `journalctl -p warning` filters. Elsewhere (a terminal, a
    /// file, `brume tail`), plain lines.
    public static let journald: Bool = {
        guard let v = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        let parts = v.split(separator: ":")
        var st = stat()
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]), fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }()

    /// The syslog priority of a level (sd-daemon(3): `<7>` debug … `<2>` critical).
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    public func log(event: LogEvent) {
        var line = LogfmtHandler.journald ? "<\(Self.priority(event.level))>" : ""
        line += "ts=\(Self.timestamp()) level=\(event.level.rawValue) msg=\(Self.quote("\(event.message)"))"
        var merged = metadata
        if let m = event.metadata { merged.merge(m) { _, new in new } }
        for key in merged.keys.sorted() {
            line += " \(key)=\(Self.quote("\(merged[key]!)"))"
        }
        line += "\n"
        writeStderr(line)
        LogTail.shared.add(line)
        if event.level >= .warning {
            RecentLog.shared.add(RecentLog.Entry(atMillis: wallClockMillis(), level: event.level, message: "\(event.message)",
                                                 source: merged["source.name"].map { "\($0)" }, reason: merged["reason"].map { "\($0)" },
                                                 detail: (merged["error"] ?? merged["diagnostic"]).map { "\($0)" }))
        }
    }

    static func quote(_ s: String) -> String {
        let needs = s.isEmpty || s.utf8.contains { $0 <= 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: "\\") }
        guard needs else { return s }
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        func p(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return "\(p(tmv.tm_year + 1900, 4))-\(p(tmv.tm_mon + 1, 2))-\(p(tmv.tm_mday, 2))T\(p(tmv.tm_hour, 2)):\(p(tmv.tm_min, 2)):\(p(tmv.tm_sec, 2)).\(p(Int32(ts.tv_nsec / 1_000_000), 3))Z"
    }
}

/// Writes a whole line to file descriptor 2 (one write call: lines from
/// several threads do not interleave).
public func writeStderr(_ s: String) {
    var s = s
    s.withUTF8 { buf in
        var off = 0
        while off < buf.count {
            let n = write(2, buf.baseAddress! + off, buf.count - off)
            if n <= 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}
