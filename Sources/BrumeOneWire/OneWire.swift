import BrumeCore
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// 1-Wire temperature probes (DS18B20 and kin) through the Linux w1 subsystem's sysfs files:
/// `/sys/bus/w1/devices/28-XXXXXXXXXXXX/w1_slave`, two lines written by the kernel on each read
/// (a conversion takes up to 750 ms):
///
///     72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
///     72 01 4b 46 7f ff 0e 10 57 t=23125
///
/// A `NO` on the first line is a CRC failure (a bad contact, a long cable): the value is refused
/// and counted, never a reading. `t=85000` is the DS18B20's power-on value (it was reset and has
/// not converted yet), refused likewise. Newer kernels also offer `temperature` (millidegrees,
/// no CRC line): used when `w1_slave` is absent.
public enum OneWire {
    /// What one read of a probe gave.
    public enum Outcome: Sendable, Equatable {
        case celsius(Double)
        /// Counted under this reason: crc_error, power_on_reset, out_of_range, unreadable.
        case refused(String)
        /// No such probe on the bus now (unplugged, or the bus master lost it).
        case missing
    }

    /// Parses the kernel's `w1_slave` text.
    public static func parse(w1Slave text: String) -> Outcome {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.count >= 2 else { return .refused("unreadable") }
        guard lines[0].hasSuffix("YES") else { return lines[0].hasSuffix("NO") ? .refused("crc_error") : .refused("unreadable") }
        guard let t = lines[1].split(separator: " ").last, t.hasPrefix("t="), let milli = Int64(t.dropFirst(2).trimmingSpaces) else { return .refused("unreadable") }
        return check(milli)
    }

    /// `temperature`: millidegrees.
    public static func parse(temperature text: String) -> Outcome {
        guard let milli = Int64(text.trimmingSpaces) else { return .refused("unreadable") }
        return check(milli)
    }

    static func check(_ milli: Int64) -> Outcome {
        if milli == 85_000 { return .refused("power_on_reset") }
        // The DS18B20's range is -55..125 °C; anything else is a misread.
        guard (-55_000...125_000).contains(milli) else { return .refused("out_of_range") }
        return .celsius(Double(milli) / 1000)
    }

    /// One probe, read now (blocks for the conversion).
    public static func read(root: String, id: String) -> Outcome {
        let dir = root + "/" + id
        if let text = readFile(dir + "/w1_slave") { return parse(w1Slave: text) }
        if let text = readFile(dir + "/temperature") { return parse(temperature: text) }
        return access(dir, F_OK) == 0 ? .refused("unreadable") : .missing
    }

    /// The probes on the bus now: family-coded ROM ids (`28-…` DS18B20, `10-…` DS18S20, `22-…`
    /// DS1822, `3b-…` MAX31850, `42-…` DS28EA00); the bus masters (`w1_bus_master1`) are not probes.
    public static func list(root: String = "/sys/bus/w1/devices") -> [String] {
        guard let d = opendir(root) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if isProbeID(name) { out.append(name) }
        }
        return out.sorted()
    }

    /// `28-0316a2795bff`: two hex digits, a dash, twelve hex digits.
    public static func isProbeID(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 15, u[2] == UInt8(ascii: "-") else { return false }
        return u.enumerated().allSatisfy { i, c in i == 2 || (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70) }
    }

    static func readFile(_ path: String) -> String? { readSmallFile(path, limit: 4096) }
}

extension Substring {
    var trimmingSpaces: String {
        var s = self
        while let c = s.first, c == " " || c == "\n" || c == "\r" || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\n" || c == "\r" || c == "\t" { s = s.dropLast() }
        return String(s)
    }
}

extension String {
    var trimmingSpaces: String { Substring(self).trimmingSpaces }
}

/// `[[source]] kind = "onewire"`: the declared probes read one after the other every `interval`
/// (on a thread of its own: each read blocks for the conversion).
public final class OneWireSource: Source {
    public struct Probe: Sendable, Hashable {
        public var id: String
        public var device: String
        public var metric: String
        public init(id: String, device: String, metric: String) { self.id = id; self.device = device; self.metric = metric }
    }

    public let name: String
    public let stats = SourceStats()
    let root: String
    let probes: [Probe]
    let intervalMillis: Int64
    let sink: any ReadingSink
    let logger: Logger
    private let stateGauge = Gauge<SourceState>(.starting)
    private let worker = WorkerThread()
    /// Probes seen missing (logged once per disappearance, again when they return).
    private let missing = Mutex<Set<String>>([])
    private let limiter = LogRateLimiter(burst: 5, interval: .seconds(30))
    /// Last value per probe id (status).
    public let latest = Locked<[String: OneWire.Outcome]>([:])

    public init(name: String, root: String, probes: [Probe], intervalMillis: Int64, sink: any ReadingSink, logger: Logger) {
        self.name = name
        self.root = root
        self.probes = probes
        self.intervalMillis = intervalMillis
        self.sink = sink
        self.logger = logger.forSource(name)
    }

    public var state: SourceState { stateGauge.current }

    public func start() {
        logger.info("1-Wire source starting", metadata: ["onewire.root": "\(root)", "onewire.probes": "\(probes.count)", "onewire.interval_ms": "\(intervalMillis)"])
        worker.start("1wire-\(name)") { [self] in
            while worker.isRunning {
                let start = ContinuousClock.now
                poll()
                let next = start + .milliseconds(intervalMillis)
                while worker.isRunning && ContinuousClock.now < next { usleep(50_000) }
            }
        }
    }

    public func stop() {
        guard worker.stop() else { return }
        stateGauge.set(.stopped)
    }

    func poll() {
        stateGauge.set(access(root, F_OK) == 0 ? .connected : .disconnected)
        var readings: [Reading] = []
        for p in probes {
            guard worker.isRunning else { return }
            let outcome = OneWire.read(root: root, id: p.id)
            latest.withLock { $0[p.id] = outcome }
            stats.messages.add()
            switch outcome {
            case .celsius(let c):
                if missing.withLock({ $0.remove(p.id) }) != nil {
                    logger.notice("1-Wire probe is back", metadata: ["onewire.id": "\(p.id)", "device": "\(p.device)"])
                }
                readings.append(Reading(device: p.device, metric: p.metric, time: wallClockMillis(), value: .number(c)))
            case .refused(let reason):
                stats.errors.add(reason)
                if limiter.admit() != nil {
                    logger.warning("1-Wire value refused", metadata: ["onewire.id": "\(p.id)", "reason": "\(reason)"])
                }
            case .missing:
                stats.errors.add("probe_missing")
                if missing.withLock({ $0.insert(p.id).inserted }) {
                    logger.warning("1-Wire probe missing", metadata: ["onewire.id": "\(p.id)", "device": "\(p.device)",
                                                                      "hint": "unplugged, a bad contact, or dtoverlay=w1-gpio missing (brume ports lists the probes found)"])
                }
            }
        }
        guard !readings.isEmpty else { return }
        stats.readings.add(Int64(readings.count))
        stats.lastReadingMillis.set(readings.last!.time)
        sink.accept(readings, from: name, redelivery: .never)
    }
}

