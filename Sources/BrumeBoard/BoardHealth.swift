import BrumeCore
import CClock
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the board itself says about its health, read from sysfs and procfs under `root`
/// ("/" on a real board; a fake tree in the tests): SoC temperature, the Raspberry Pi
/// firmware's under-voltage and throttling flags, disk free on the data folder, bytes written
/// to the disk holding it (SD card wear), memory, load, uptime, and whether the clock is
/// NTP-synchronised. A file another board does not have is simply absent (no reading, no
/// error); a file that is there but unreadable as expected is counted (`board_unreadable`).
public enum BoardHealth {
    public struct Sample: Sendable, Equatable {
        public var metric: String
        public var value: Value
        public init(_ metric: String, _ value: Value) { self.metric = metric; self.value = value }
    }

    public struct Options: Sendable {
        public var root: String
        /// The data folder (disk free, and which disk's writes are counted).
        public var dataDir: String
        /// The block device whose writes are counted ("mmcblk0"); nil: the one holding `dataDir`.
        public var disk: String?
        /// Read the kernel's NTP state (not under a fake root).
        public var clock: Bool
        public init(root: String = "/", dataDir: String, disk: String? = nil, clock: Bool = true) {
            self.root = root
            self.dataDir = dataDir
            self.disk = disk
            self.clock = clock
        }
    }

    /// One reading of everything present; `unreadable` names the files that were there but wrong.
    public static func read(_ o: Options) -> (samples: [Sample], unreadable: [String]) {
        var out: [Sample] = []
        var bad: [String] = []
        let root = o.root.hasSuffix("/") ? String(o.root.dropLast()) : o.root
        func file(_ p: String) -> String? { readSmallFile(root + p) }

        // SoC temperature: the CPU/SoC zone (Pi: "cpu-thermal"), else zone 0. Millidegrees.
        if let zone = thermalZone(root) {
            if let t = file(zone + "/temp").flatMap({ Int64($0.trimmed) }) { out.append(Sample("soc_temperature", .number(Double(t) / 1000))) }
            else if file(zone + "/temp") != nil { bad.append("soc_temperature") }
        }
        // Raspberry Pi firmware flags: bits 0-3 now, 16-19 since boot.
        if let text = file("/sys/devices/platform/soc/soc:firmware/get_throttled") {
            var t = text.trimmed
            if t.hasPrefix("0x") { t.removeFirst(2) }
            if let bits = UInt32(t, radix: 16) {
                let names = ["under_voltage", "frequency_capped", "throttled", "soft_temperature_limit"]
                for (i, n) in names.enumerated() {
                    out.append(Sample(n, .bool(bits & (1 << UInt32(i)) != 0)))
                    out.append(Sample(n + "_occurred", .bool(bits & (1 << UInt32(16 + i)) != 0)))
                }
            } else { bad.append("get_throttled") }
        }
        // Disk free on the data folder (the real filesystem, whatever the root).
        var vfs = statvfs()
        if statvfs(o.dataDir, &vfs) == 0 {
            let (free, o1) = UInt64(vfs.f_bavail).multipliedReportingOverflow(by: UInt64(vfs.f_frsize))
            let (size, o2) = UInt64(vfs.f_blocks).multipliedReportingOverflow(by: UInt64(vfs.f_frsize))
            if !o1 && !o2 {
                out.append(Sample("disk_free_bytes", .number(Double(free))))
                out.append(Sample("disk_size_bytes", .number(Double(size))))
            }
        }
        // Bytes written to the disk (sectors of 512 bytes, whatever the device's own size).
        if let stats = file("/proc/diskstats") {
            let want = o.disk.map { DiskID.name($0) } ?? DiskID.of(o.dataDir)
            if let want, let sectors = diskSectorsWritten(stats, want) {
                let (b, overflow) = sectors.multipliedReportingOverflow(by: 512)
                if !overflow { out.append(Sample("disk_written_bytes", .number(Double(b)))) }
            } else if want != nil, o.disk != nil { bad.append("diskstats") }
        }
        if let mem = file("/proc/meminfo") {
            let avail = meminfoKiB(mem, "MemAvailable"), total = meminfoKiB(mem, "MemTotal")
            if let a = avail { out.append(Sample("memory_available_bytes", .number(Double(a) * 1024))) }
            if let t = total { out.append(Sample("memory_total_bytes", .number(Double(t) * 1024))) }
            if avail == nil && total == nil { bad.append("meminfo") }
        }
        if let l = file("/proc/loadavg") {
            if let x = l.split(separator: " ").first.flatMap({ Double($0) }), x.isFinite { out.append(Sample("load1", .number(x))) } else { bad.append("loadavg") }
        }
        if let u = file("/proc/uptime") {
            if let x = u.split(separator: " ").first.flatMap({ Double($0) }), x.isFinite { out.append(Sample("uptime_seconds", .number(x))) } else { bad.append("uptime") }
        }
        if o.clock {
            let c = brume_clock_read()
            if c.ok == 1 { out.append(Sample("clock_synchronised", .bool(c.state != 5 && c.unsync == 0))) }
        }
        return (out, bad)
    }

    static func thermalZone(_ root: String) -> String? {
        var first: String?
        for i in 0..<16 {
            let z = "/sys/class/thermal/thermal_zone\(i)"
            guard let type = readSmallFile(root + z + "/type") else { if i > 0 { break } else { continue } }
            if first == nil { first = z }
            let t = type.trimmed.lowercased()
            if t.contains("cpu") || t.contains("soc") { return z }
        }
        return first
    }

    /// The 10th field (sectors written) of `/proc/diskstats` for the device `want`.
    static func diskSectorsWritten(_ text: String, _ want: DiskID) -> UInt64? {
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 10 else { continue }
            let match: Bool
            switch want {
            case .name(let n): match = f[2] == n
            case .number(let maj, let min): match = UInt32(f[0]) == maj && UInt32(f[1]) == min
            }
            if match { return UInt64(f[9]) }
        }
        return nil
    }

    static func meminfoKiB(_ text: String, _ key: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            let parts = line.dropFirst(key.count + 1).split(separator: " ")
            if let n = parts.first.flatMap({ UInt64($0) }) { return n }
        }
        return nil
    }
}

/// A block device by name or by major:minor.
enum DiskID: Equatable {
    case name(String)
    case number(UInt32, UInt32)

    /// The device holding `path` (its partition).
    static func of(_ path: String) -> DiskID? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let dev = UInt64(st.st_dev)
        let major = UInt32(((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff)))
        let minor = UInt32((dev & 0xff) | ((dev >> 12) & ~UInt64(0xff)))
        return .number(major, minor)
    }
}

extension String {
    var trimmed: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\n" || c == "\t" || c == "\r" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\n" || c == "\t" || c == "\r" { s = s.dropLast() }
        return String(s)
    }
}

/// `[[source]] kind = "board"`: the board's health as readings, every `interval`.
public final class BoardSource: Source {
    public let name: String
    public let stats = SourceStats()
    let options: BoardHealth.Options
    let device: String
    let intervalMillis: Int64
    let sink: any ReadingSink
    let logger: Logger
    private let task = Mutex<Task<Void, Never>?>(nil)
    private let stateGauge = Gauge<SourceState>(.starting)
    /// The latest samples (status and metrics).
    public let latest = Locked<[BoardHealth.Sample]>([])

    public init(name: String, device: String, intervalMillis: Int64, options: BoardHealth.Options, sink: any ReadingSink, logger: Logger) {
        self.name = name
        self.device = device
        self.intervalMillis = intervalMillis
        self.options = options
        self.sink = sink
        self.logger = logger.forSource(name)
    }

    public var state: SourceState { stateGauge.current }

    public func start() {
        logger.info("board health source starting", metadata: ["board.root": "\(options.root)", "board.interval_ms": "\(intervalMillis)",
                                                               "board.disk": "\(options.disk ?? "the data folder's")"])
        stateGauge.set(.connected)
        let t = Task { [weak self] in
            while !Task.isCancelled {
                self?.poll()
                guard let ms = self?.intervalMillis else { return }
                try? await Task.sleep(for: .milliseconds(ms))
            }
        }
        task.withLock { $0 = t }
    }

    public func stop() {
        task.withLock { $0?.cancel(); $0 = nil }
        stateGauge.set(.stopped)
    }

    func poll() {
        let (samples, bad) = BoardHealth.read(options)
        latest.withLock { $0 = samples }
        stats.messages.add()
        for b in bad { stats.errors.add("board_unreadable_\(b)") }
        guard !samples.isEmpty else { return }
        let now = wallClockMillis()
        let readings = samples.map { Reading(device: device, metric: $0.metric, time: now, value: $0.value) }
        stats.readings.add(Int64(readings.count))
        stats.lastReadingMillis.set(now)
        sink.accept(readings, from: name, redelivery: .never)
    }
}
