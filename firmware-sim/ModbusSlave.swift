import ArgumentParser
import BrumeCore
import CModbus

#if canImport(Glibc)
import Glibc
#endif

/// Simulated Modbus slaves: several units on one RTU line (a pty) or behind
/// one Modbus TCP server. The request handling is libmodbus's own server code
/// (`modbus_reply`), so the gateway's client is tested against an independent
/// implementation; the sim only splits RTU frames (several units share the line)
/// and injects faults.
///
/// Register map of every unit (holding and input registers alike, 0-based):
///   0 uint16 1000+unit   1 int16 -1234
///   2-3 int32 -123456789 ABCD      4-5 int32 -123456789 CDAB
///   6-7 uint32 3000000000 ABCD     8-9 float32 3.14159 ABCD
///   10-11 float32 3.14159 CDAB     12-13 float32 3.14159 BADC    14-15 float32 3.14159 DCBA
///   16-19 int64 -1234567890123 ABCD   20-23 float64 2.718281828459045 ABCD
///   24-27 float64 2.718281828459045 DCBA   28 uint16 = unit
///   input 40 uint16 seconds since start, 41-42 float32 temperature (slow sine), 43 requests served,
///   44-45 float32 volts CDAB, 46-47 float32 amps CDAB, 48-49 uint32 energy (0.01 kWh) CDAB
///   holding 50..59 writable, holding 60 ignores writes (read-back fails)
///   coils 0..31 writable (coil i starts as i % 2); discrete inputs i = (i % 3 == 0), 31 toggles every second
///   addresses ≥ 100 (registers) or ≥ 32 (bits): exception 2, illegal data address
struct ModbusSlave: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "modbus", abstract: "Simulated Modbus RTU (pty) or TCP slaves with a changing register map.")

    @Option(help: "RTU: stable path of the line (a symlink to a pty).") var rtu: String?
    @Option(help: "TCP: listen on HOST:PORT.") var tcp: String?
    @Option(help: "Unit ids that answer (others are silent: dead devices).") var units = "1"
    @Option(help: "A unit that answers every request with exception 6 (device busy).") var busyUnit: Int?
    @Option(help: "A unit that answers with garbage (bad CRC).") var garbageUnit: Int?
    @Option(help: "A unit that answers this many ms late.") var slowUnit: Int?
    @Option(help: "Delay of --slow-unit, in ms.") var slowMillis = 300
    @Option(help: "File that receives one line per write: unit=U fc=F address=A values=V1,V2") var writeLog: String?

    func validate() throws {
        if (rtu == nil) == (tcp == nil) { throw ValidationError("give exactly one of --rtu LINK and --tcp HOST:PORT") }
        if parsedUnits.isEmpty { throw ValidationError("--units must list unit ids 1...247, e.g. 1,2,3") }
    }

    var parsedUnits: [Int] { units.split(separator: ",").compactMap { Int($0.filter { $0 != " " }) }.filter { (1...247).contains($0) } }

    func run() throws {
        var maps: [Int: UnitMap] = [:]
        for u in parsedUnits { maps[u] = UnitMap(unit: u) }
        for u in [busyUnit, garbageUnit, slowUnit].compactMap({ $0 }) where maps[u] == nil { maps[u] = UnitMap(unit: u) }
        var log: UnsafeMutablePointer<FILE>?
        if let writeLog { log = fopen(writeLog, "a"); if let f = log { setvbuf(f, nil, _IOLBF, 0) } }
        let server = Server(maps: maps, busy: busyUnit, garbage: garbageUnit, slow: slowUnit, slowMillis: slowMillis, log: log)
        if let rtu { try server.serveRTU(link: rtu) } else if let tcp { try server.serveTCP(tcp) }
    }
}

/// One unit's registers (a libmodbus mapping) and its time-varying part.
final class UnitMap {
    let unit: Int
    let mapping: UnsafeMutablePointer<modbus_mapping_t>
    var served = 0
    let t0 = monotonicNanos()

    init(unit: Int) {
        self.unit = unit
        mapping = modbus_mapping_new_start_address(0, 32, 0, 32, 0, 100, 0, 100)!
        let m = mapping.pointee
        for table in [m.tab_registers!, m.tab_input_registers!] {
            table[0] = UInt16(1000 + unit)
            table[1] = UInt16(bitPattern: -1234)
            let i32 = UInt32(bitPattern: -123456789)
            table[2] = UInt16(i32 >> 16); table[3] = UInt16(i32 & 0xFFFF)
            table[4] = UInt16(i32 & 0xFFFF); table[5] = UInt16(i32 >> 16)
            let u32: UInt32 = 3_000_000_000
            table[6] = UInt16(u32 >> 16); table[7] = UInt16(u32 & 0xFFFF)
            // By hand: libmodbus 3.1.6's modbus_set_float_abcd/cdab/badc/dcba give wrong images.
            let f32 = Float(3.14159).bitPattern
            let hi = UInt16(f32 >> 16), lo = UInt16(f32 & 0xFFFF)
            table[8] = hi; table[9] = lo
            table[10] = lo; table[11] = hi
            table[12] = hi.byteSwapped; table[13] = lo.byteSwapped
            table[14] = lo.byteSwapped; table[15] = hi.byteSwapped
            let i64 = UInt64(bitPattern: -1_234_567_890_123)
            for k in 0..<4 { table[16 + k] = UInt16(truncatingIfNeeded: i64 >> UInt64(48 - 16 * k)) }
            let f64 = (2.718281828459045).bitPattern
            for k in 0..<4 { table[20 + k] = UInt16(truncatingIfNeeded: f64 >> UInt64(48 - 16 * k)) }
            for k in 0..<4 { table[24 + k] = UInt16(truncatingIfNeeded: f64 >> UInt64(16 * k)).byteSwapped }
            table[28] = UInt16(unit)
        }
        m.tab_registers[60] = 0x0BAD
        for i in 0..<32 {
            m.tab_bits[i] = UInt8(i % 2)
            m.tab_input_bits[i] = i % 3 == 0 ? 1 : 0
        }
    }

    deinit { modbus_mapping_free(mapping) }

    /// The live part of the map, refreshed before every reply.
    func refresh() {
        let secs = Double(monotonicNanos() - t0) / 1e9
        let m = mapping.pointee
        m.tab_input_registers[40] = UInt16(truncatingIfNeeded: Int(secs))
        let temp = Float(20 + 5 * sin(secs / 60)).bitPattern
        m.tab_input_registers[41] = UInt16(temp >> 16)
        m.tab_input_registers[42] = UInt16(temp & 0xFFFF)
        m.tab_input_registers[43] = UInt16(truncatingIfNeeded: served)
        // An energy meter, low word first (CDAB), as many meters do: voltage, current, energy.
        func cdab(_ bits: UInt32, at a: Int) {
            m.tab_input_registers[a] = UInt16(bits & 0xFFFF)
            m.tab_input_registers[a + 1] = UInt16(bits >> 16)
        }
        let volts = 230 + 2 * sin(secs / 7) + Double(unit % 3)
        let amps = 5 + 3 * sin(secs / 11)
        cdab(Float(volts).bitPattern, at: 44)
        cdab(Float(amps).bitPattern, at: 46)
        cdab(UInt32(truncatingIfNeeded: 1_234_500 + Int(secs * volts * amps / 36)), at: 48) // 0.01 kWh steps
        m.tab_input_bits[31] = Int(secs) % 2 == 0 ? 1 : 0
    }
}

private final class Server {
    let maps: [Int: UnitMap]
    let busy: Int?
    let garbage: Int?
    let slow: Int?
    let slowMillis: Int
    let log: UnsafeMutablePointer<FILE>?
    var rng = SystemRandomNumberGenerator()

    init(maps: [Int: UnitMap], busy: Int?, garbage: Int?, slow: Int?, slowMillis: Int, log: UnsafeMutablePointer<FILE>?) {
        self.maps = maps
        self.busy = busy
        self.garbage = garbage
        self.slow = slow
        self.slowMillis = slowMillis
        self.log = log
    }

    /// Answers one request (`req` is a whole ADU: RTU with CRC, or TCP with MBAP).
    /// Returns false when the unit is silent.
    func handle(_ ctx: OpaquePointer, _ req: UnsafeMutablePointer<UInt8>, _ length: Int32, unit: Int, headerLength: Int, fd: Int32) {
        guard let map = maps[unit] else { return } // a dead device: no answer at all
        map.served += 1
        if unit == slow { usleep(UInt32(slowMillis) * 1000) }
        if unit == busy {
            modbus_reply_exception(ctx, req, UInt32(MODBUS_EXCEPTION_SLAVE_OR_SERVER_BUSY))
            return
        }
        if unit == garbage {
            var junk = [UInt8](repeating: 0, count: 9)
            junk[0] = UInt8(unit)
            junk[1] = req[headerLength]
            for i in 2..<junk.count { junk[i] = UInt8.random(in: 0...255, using: &rng) }
            _ = write(fd, junk, junk.count)
            return
        }
        map.refresh()
        let fc = req[headerLength]
        let address = Int(req[headerLength + 1]) << 8 | Int(req[headerLength + 2])
        let stuck = map.mapping.pointee.tab_registers[60]
        modbus_set_slave(ctx, Int32(unit))
        _ = modbus_reply(ctx, req, length, map.mapping)
        map.mapping.pointee.tab_registers[60] = stuck
        if [5, 6, 15, 16].contains(fc), let log {
            var values: [String] = []
            let m = map.mapping.pointee
            switch fc {
            case 5: values = [String(m.tab_bits[address])]
            case 6: values = [String(m.tab_registers[address])]
            case 15, 16:
                let n = Int(req[headerLength + 3]) << 8 | Int(req[headerLength + 4])
                for k in 0..<n where address + k < (fc == 15 ? 32 : 100) {
                    values.append(fc == 15 ? String(m.tab_bits[address + k]) : String(m.tab_registers[address + k]))
                }
            default: break
            }
            fputs("unit=\(unit) fc=\(fc) address=\(address) values=\(values.joined(separator: ","))\n", log)
        }
    }

    func serveRTU(link: String) throws {
        var pty = try Pty(link: link)
        defer { pty.close() }
        guard let ctx = modbus_new_rtu("/dev/null", 115200, CChar(UInt8(ascii: "N")), 8, 1) else { throw SimError("modbus_new_rtu failed") }
        modbus_set_socket(ctx, pty.master)
        _ = fcntl(pty.master, F_SETFL, fcntl(pty.master, F_GETFL) & ~O_NONBLOCK)
        print("firmware-sim: modbus RTU slaves \(maps.keys.sorted()) on \(link) -> \(pty.slavePath)")
        flushStdout()
        var buf: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            var pfd = pollfd(fd: pty.master, events: Int16(POLLIN), revents: 0)
            // A silence of 20 ms ends a frame: whatever is pending and incomplete is noise.
            let r = poll(&pfd, 1, buf.isEmpty ? -1 : 20)
            if r == 0 { buf.removeAll(); continue }
            let n = read(pty.master, &chunk, chunk.count)
            if n <= 0 { if errno == EAGAIN || errno == EINTR || errno == EIO { usleep(10_000); continue }; return }
            buf.append(contentsOf: chunk[0..<n])
            while let len = Self.frameLength(buf) {
                if len > buf.count { break }
                var frame = Array(buf[0..<len])
                if Self.crc16(frame[0..<(len - 2)]) == UInt16(frame[len - 2]) | UInt16(frame[len - 1]) << 8 {
                    buf.removeFirst(len)
                    let unit = Int(frame[0])
                    frame.withUnsafeMutableBufferPointer { handle(ctx, $0.baseAddress!, Int32(len), unit: unit, headerLength: 1, fd: pty.master) }
                } else {
                    buf.removeFirst() // resynchronise on the next byte
                }
            }
        }
    }

    /// Length of the RTU request at the start of `b` (nil: not enough bytes to tell).
    static func frameLength(_ b: [UInt8]) -> Int? {
        guard b.count >= 2 else { return nil }
        switch b[1] {
        case 1, 2, 3, 4, 5, 6: return 8
        case 15, 16: return b.count >= 7 ? 9 + Int(b[6]) : nil
        default: return 4 // unknown function: unit + fc + CRC, libmodbus answers exception 1
        }
    }

    static func crc16<C: Collection>(_ bytes: C) -> UInt16 where C.Element == UInt8 {
        var crc: UInt16 = 0xFFFF
        for b in bytes {
            crc ^= UInt16(b)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
        }
        return crc
    }

    func serveTCP(_ hostPort: String) throws {
        let parts = hostPort.split(separator: ":")
        guard parts.count == 2, let port = Int32(parts[1]) else { throw SimError("--tcp must be HOST:PORT") }
        guard let ctx = modbus_new_tcp(String(parts[0]), port) else { throw SimError("modbus_new_tcp failed") }
        var listener = modbus_tcp_listen(ctx, 4)
        guard listener >= 0 else { throw SimError("cannot listen on \(hostPort): \(String(cString: modbus_strerror(errno)))") }
        print("firmware-sim: modbus TCP slaves \(maps.keys.sorted()) on \(hostPort)")
        flushStdout()
        var query = [UInt8](repeating: 0, count: Int(MODBUS_TCP_MAX_ADU_LENGTH))
        while true {
            let fd = modbus_tcp_accept(ctx, &listener)
            guard fd >= 0 else { usleep(100_000); continue }
            while true {
                let rc = query.withUnsafeMutableBufferPointer { modbus_receive(ctx, $0.baseAddress) }
                if rc < 0 { break }
                if rc == 0 { continue }
                let unit = Int(query[6])
                query.withUnsafeMutableBufferPointer { handle(ctx, $0.baseAddress!, rc, unit: unit, headerLength: 7, fd: fd) }
            }
            close(fd)
        }
    }
}
