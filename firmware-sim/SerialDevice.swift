import ArgumentParser
import BrumeCore

#if canImport(Glibc)
import Glibc
#endif

/// A simulated serial sensor on a pseudo-terminal: the gateway opens the
/// stable symlink (`--link`) as if it were /dev/ttyUSB0. Formats kv, CSV,
/// JSON lines and NMEA (replayed from a log); fault injection: garbage bytes,
/// truncated lines, bad checksums, silence, unplug/replug.
struct SerialDevice: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serial", abstract: "A simulated serial sensor on a pty, with fault injection.")

    @Option(help: "Stable path of the device (a symlink to the pty, re-pointed on replug).") var link: String
    @Option(help: "kv, csv, jsonl or nmea.") var format = "kv"
    @Option(help: "Lines per second.") var rate: Double = 10
    @Option(help: "Stop after this many data lines (0: run until killed).") var count = 0
    @Option(help: "First sequence number (kv/csv/jsonl lines carry seq=N).") var start = 1
    @Option(help: "NMEA log to replay (lines starting with # are skipped).") var replay: String?
    @Option(help: "After every N data lines, a line of random garbage (0: never).") var garbageEvery = 0
    @Option(help: "Every Nth data line is cut in half (0: never).") var truncateEvery = 0
    @Option(help: "Every Nth NMEA sentence gets a wrong checksum (0: never).") var badChecksumEvery = 0
    @Option(help: "Unplug the device after this many data lines (0: never).") var unplugAfter = 0
    @Option(help: "Seconds until the device comes back after an unplug.") var replugAfter: Double = 2
    @Option(help: "Go silent after this many data lines (0: never).") var silenceAfter = 0
    @Option(help: "Seconds of silence.") var silenceFor: Double = 2
    @Option(help: "Answer only this request (poll mode): a line is sent each time it is received.") var respondTo: String?
    @Option(help: "Wait this long (seconds) before the first line, so the gateway can open the port.") var delay: Double = 0
    @Option(help: "Keep the device plugged in (and silent) this long after the last line, in seconds.") var linger: Double = 0
    @Option(help: "Actuator mode: obey lines \"PREFIX VALUE\" written by the gateway, reply \"OK VALUE\", log each VALUE to --actuator-log.") var actuate: String?
    @Option(help: "File that receives one line per executed actuator value.") var actuatorLog: String?

    func validate() throws {
        guard ["kv", "csv", "jsonl", "nmea"].contains(format) else { throw ValidationError("--format must be kv, csv, jsonl or nmea") }
        if format == "nmea" && replay == nil { throw ValidationError("--format nmea needs --replay FILE") }
    }

    func run() throws {
        var pty = try Pty(link: link)
        var rng = SystemRandomNumberGenerator()
        var nmea: [String] = []
        if let replay {
            guard let f = fopen(replay, "r") else { throw SimError("cannot open \(replay)") }
            var line: UnsafeMutablePointer<CChar>?
            var cap = 0
            while getline(&line, &cap, f) > 0 {
                var s = String(cString: line!)
                while s.hasSuffix("\n") || s.hasSuffix("\r") { s.removeLast() }
                if !s.isEmpty && !s.hasPrefix("#") { nmea.append(s) }
            }
            free(line)
            fclose(f)
        }
        var stats = (lines: 0, garbage: 0, truncated: 0, badChecksum: 0, dropped: 0, unplugs: 0)
        print("firmware-sim: serial \(format) device on \(link) -> \(pty.slavePath)")
        flushStdout()
        if delay > 0 { usleep(UInt32(delay * 1e6)) }
        let period = 1.0 / rate
        let t0 = monotonicNanos()
        var seq = start
        var i = 0
        if format == "csv" { pty.send("seq,temperature,humidity\r\n", &stats.dropped) }
        var actuatorFile: UnsafeMutablePointer<FILE>?
        if let actuatorLog { actuatorFile = fopen(actuatorLog, "a"); if let f = actuatorFile { setvbuf(f, nil, _IOLBF, 0) } }
        while count == 0 || i < count {
            if let prefix = actuate {
                for value in pty.commands(prefix: prefix) {
                    if let f = actuatorFile { fputs(value + "\n", f) }
                    pty.send("OK \(value)\r\n", &stats.dropped)
                }
            }
            if let req = respondTo {
                guard pty.waitForRequest(req, timeoutMillis: 1000) else { continue }
            } else {
                let due = t0 + UInt64(Double(i) * period * 1e9)
                let now = monotonicNanos()
                if due > now { usleep(UInt32((due - now) / 1000)) }
            }
            var line: String
            switch format {
            case "nmea":
                line = nmea[i % nmea.count]
                if badChecksumEvery > 0 && (i + 1) % badChecksumEvery == 0, let star = line.lastIndex(of: "*") {
                    let cs = line[line.index(after: star)...]
                    line = String(line[...star]) + (cs == "00" ? "01" : "00")
                    stats.badChecksum += 1
                }
            case "csv":
                line = "\(seq),\(WireFormat.formatNumber(20 + Double(seq % 100) / 10)),\(40 + seq % 20)"
            case "jsonl":
                line = "{\"seq\":\(seq),\"temperature\":\(WireFormat.formatNumber(20 + Double(seq % 100) / 10)),\"humidity\":\(40 + seq % 20)}"
            default:
                line = "seq=\(seq),temperature=\(WireFormat.formatNumber(20 + Double(seq % 100) / 10)),humidity=\(40 + seq % 20)"
            }
            if truncateEvery > 0 && (i + 1) % truncateEvery == 0 {
                line = String(line.prefix(line.count / 2 - 1)) + "~"
                stats.truncated += 1
            } else {
                stats.lines += 1
            }
            pty.send(line + "\r\n", &stats.dropped)
            i += 1
            seq += 1
            if garbageEvery > 0 && i % garbageEvery == 0 {
                var g: [UInt8] = (0..<Int.random(in: 4...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                g.removeAll { $0 == 10 || $0 == 13 }
                g.append(contentsOf: [13, 10])
                pty.sendBytes(g, &stats.dropped)
                stats.garbage += 1
            }
            if unplugAfter > 0 && i == unplugAfter {
                // A line already on the wire reaches the reader before the cable is pulled
                // (closing a pty master discards what the slave has not read yet).
                usleep(UInt32(max(0.05, period) * 1e6))
                pty.close()
                stats.unplugs += 1
                usleep(UInt32(replugAfter * 1e6))
                pty = try Pty(link: link)
            }
            if silenceAfter > 0 && i == silenceAfter { usleep(UInt32(silenceFor * 1e6)) }
        }
        // Let the reader drain the pty: closing the master discards what it has not read.
        pty.drain(timeoutSeconds: 15)
        if linger > 0 { usleep(UInt32(linger * 1e6)) }
        print("{\"lines\":\(stats.lines),\"last_seq\":\(seq - 1),\"garbage\":\(stats.garbage),\"truncated\":\(stats.truncated),\"bad_checksum\":\(stats.badChecksum),\"dropped\":\(stats.dropped),\"unplugs\":\(stats.unplugs)}")
        pty.close()
    }
}

/// A pseudo-terminal pair: we hold the master (the device end); the slave is
/// what the gateway opens, through a stable symlink.
struct Pty {
    var master: Int32
    var slave: Int32
    let slavePath: String
    let link: String
    private var pending: [UInt8] = []

    init(link: String) throws {
        self.link = link
        // posix_openpt/unlockpt/ptsname need feature macros Swift's Glibc module
        // does not set; on Linux they are /dev/ptmx plus two ioctls (same numbers
        // on x86_64, arm and arm64: asm-generic).
        let TIOCGPTN: UInt = 0x8004_5430
        let TIOCSPTLCK: UInt = 0x4004_5431
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard master >= 0, ioctl(master, TIOCSPTLCK, &unlock) == 0, ioctl(master, TIOCGPTN, &number) == 0 else {
            throw SimError("cannot create a pty: \(String(cString: strerror(errno)))")
        }
        slavePath = "/dev/pts/\(number)"
        // Hold the slave open in raw mode: no echo, no line editing, and the
        // master never sees a hang-up while the gateway reconnects.
        slave = open(slavePath, O_RDWR | O_NOCTTY)
        var t = termios()
        tcgetattr(slave, &t)
        cfmakeraw(&t)
        tcsetattr(slave, TCSANOW, &t)
        _ = fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK)
        let tmp = link + ".tmp"
        unlink(tmp)
        guard symlink(slavePath, tmp) == 0, rename(tmp, link) == 0 else { throw SimError("cannot create \(link): \(String(cString: strerror(errno)))") }
    }

    mutating func send(_ s: String, _ dropped: inout Int) { sendBytes(Array(s.utf8), &dropped) }

    mutating func sendBytes(_ b: [UInt8], _ dropped: inout Int) {
        let n = b.withUnsafeBytes { write(master, $0.baseAddress, $0.count) }
        if n < b.count { dropped += 1 } // nobody reads: the line is lost, as on a real wire
    }

    /// Waits (up to the timeout) until the reader has taken every byte written, then 300 ms more.
    func drain(timeoutSeconds: Double) {
        let FIONREAD: UInt = 0x541B
        let deadline = Double(monotonicNanos()) / 1e9 + timeoutSeconds
        var waiting: Int32 = 1
        while Double(monotonicNanos()) / 1e9 < deadline, ioctl(slave, FIONREAD, &waiting) == 0, waiting > 0 { usleep(20_000) }
        usleep(300_000)
    }

    /// Poll mode: waits for the request string written by the gateway.
    mutating func waitForRequest(_ req: String, timeoutMillis: Int32) -> Bool {
        var pfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutMillis) > 0 else { return false }
        var buf = [UInt8](repeating: 0, count: 256)
        let n = read(master, &buf, buf.count)
        guard n > 0 else { return false }
        pending.append(contentsOf: buf[0..<n])
        let r = Array(req.utf8)
        guard let idx = pending.firstRange(of: r) else {
            if pending.count > 4096 { pending.removeAll() }
            return false
        }
        pending.removeSubrange(..<idx.upperBound)
        return true
    }

    /// Actuator mode: complete lines "PREFIX VALUE" written by the gateway (non-blocking).
    mutating func commands(prefix: String) -> [String] {
        var buf = [UInt8](repeating: 0, count: 1024)
        while true {
            let n = read(master, &buf, buf.count)
            if n <= 0 { break }
            pending.append(contentsOf: buf[0..<n])
        }
        var out: [String] = []
        while let nl = pending.firstIndex(where: { $0 == 10 || $0 == 13 }) {
            let line = String(decoding: pending[..<nl], as: UTF8.self)
            pending.removeSubrange(...nl)
            if line.hasPrefix(prefix + " ") { out.append(String(line.dropFirst(prefix.count + 1))) }
        }
        return out
    }

    /// Unplug: the gateway sees a hang-up, the device path disappears.
    mutating func close() {
        unlink(link)
        if slave >= 0 { Glibc.close(slave); slave = -1 }
        if master >= 0 { Glibc.close(master); master = -1 }
    }
}
