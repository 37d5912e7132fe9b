import BrumeCore
import CModbus

#if canImport(Glibc)
import Glibc
#endif

/// How a bus reaches its devices.
public enum ModbusTransport: Sendable, Hashable, CustomStringConvertible {
    /// RTU over a serial line (RS-485 or RS-232).
    case rtu(port: PortSpec, baud: Int, parity: String, dataBits: Int, stopBits: Int, rs485: Bool)
    /// Modbus TCP (a device or a TCP→RTU gateway).
    case tcp(host: String, port: Int)

    public var description: String {
        switch self {
        case .rtu(let p, let baud, let parity, let bits, let stop, _): return "rtu \(p) \(baud) \(bits)\(parity.prefix(1).uppercased())\(stop)"
        case .tcp(let h, let p): return "tcp://\(h):\(p)"
        }
    }
}

/// Why one Modbus transaction failed.
public enum ModbusFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// No (complete) response within the response timeout.
    case timeout
    /// The device answered with an exception code.
    case exception(Int)
    /// A corrupted response (CRC), a response for another unit or request, or too much data.
    case badResponse(String)
    /// The port or connection failed: reconnect.
    case io(String)
    /// A write went through but reading it back did not show the value (not retried).
    case readBack(String)

    /// The counter name ("timeout", "illegal_data_address", "crc_error", "io_error" ...).
    public var reason: String {
        switch self {
        case .timeout: return "timeout"
        case .exception(let c): return ModbusException.name(c)
        case .badResponse(let s): return s.hasPrefix("CRC") ? "crc_error" : "bad_response"
        case .io: return "io_error"
        case .readBack: return "read_back_mismatch"
        }
    }

    public var description: String {
        switch self {
        case .timeout: return "no response (timeout)"
        case .exception(let c): return "exception \(c): \(ModbusException.reason(c))"
        case .badResponse(let s): return "bad response: \(s)"
        case .io(let s): return "I/O error: \(s)"
        case .readBack(let s): return s
        }
    }

    /// A failure worth retrying on the same request.
    public var retryable: Bool {
        switch self {
        case .timeout, .badResponse: return true
        case .exception(let c): return c == 6 || c == 5
        case .io, .readBack: return false
        }
    }
}

/// One libmodbus context (a serial line or a TCP connection). Not thread-safe:
/// only its bus's scheduler thread touches it, so there is never more than one
/// request in flight on a bus.
final class ModbusLink {
    private var ctx: OpaquePointer?
    let transport: ModbusTransport
    private(set) var path: String?

    init(transport: ModbusTransport) {
        self.transport = transport
    }

    deinit { close() }

    var isOpen: Bool { ctx != nil }

    /// Opens the port or connects. `path` is the resolved serial device for RTU.
    func open(path resolved: String?) throws(ModbusFailure) {
        close()
        let c: OpaquePointer?
        switch transport {
        case .rtu(_, let baud, let parity, let bits, let stop, _):
            guard let resolved else { throw .io("the serial port is not present") }
            let p: CChar = parity == "even" ? CChar(UInt8(ascii: "E")) : parity == "odd" ? CChar(UInt8(ascii: "O")) : CChar(UInt8(ascii: "N"))
            c = modbus_new_rtu(resolved, Int32(baud), p, Int32(bits), Int32(stop))
            path = resolved
        case .tcp(let host, let port):
            c = modbus_new_tcp(host, Int32(port))
            path = nil
        }
        guard let c else { throw .io("cannot create a Modbus context: \(Self.lastError())") }
        if modbus_connect(c) != 0 {
            let e = Self.lastError()
            modbus_free(c)
            throw .io(e)
        }
        if case .rtu(_, _, _, _, _, let rs485) = transport, rs485 {
            if modbus_rtu_set_serial_mode(c, Int32(MODBUS_RTU_RS485)) != 0 {
                let e = Self.lastError()
                modbus_close(c)
                modbus_free(c)
                throw .io("cannot switch \(resolved ?? "the port") to RS-485 mode (\(e)); the driver has no RS-485 support: set rs485 = false if the adapter switches direction itself")
            }
        }
        // No automatic recovery: libmodbus would sleep a whole response timeout
        // after a bad frame, stalling the bus; the scheduler flushes instead.
        modbus_set_error_recovery(c, MODBUS_ERROR_RECOVERY_NONE)
        ctx = c
    }

    func close() {
        if let c = ctx {
            modbus_close(c)
            modbus_free(c)
            ctx = nil
        }
    }

    /// Discards whatever a late or corrupted answer left in the input.
    func flush() {
        if let c = ctx { _ = modbus_flush(c) }
    }

    func prepare(unit: UInt8, timeoutMillis: Int64) {
        guard let c = ctx else { return }
        modbus_set_slave(c, Int32(unit))
        let t = max(1, timeoutMillis)
        modbus_set_response_timeout(c, UInt32(t / 1000), UInt32((t % 1000) * 1000))
        // Between two bytes of one frame: generous on ptys and USB adapters, which deliver in chunks.
        modbus_set_byte_timeout(c, 0, 50_000)
    }

    /// Reads `count` items of `table` from `start`. Bits come back as 0/1 words.
    func read(_ table: ModbusTable, start: UInt16, count: Int) -> Result<[UInt16], ModbusFailure> {
        guard let c = ctx else { return .failure(.io("not connected")) }
        if table.isBit {
            var bits = [UInt8](repeating: 0, count: count)
            let rc = bits.withUnsafeMutableBufferPointer { b in
                table == .coil ? modbus_read_bits(c, Int32(start), Int32(count), b.baseAddress) : modbus_read_input_bits(c, Int32(start), Int32(count), b.baseAddress)
            }
            guard rc == count else { return .failure(rc < 0 ? Self.failure() : .badResponse("\(rc) items instead of \(count)")) }
            return .success(bits.map { UInt16($0) })
        }
        var regs = [UInt16](repeating: 0, count: count)
        let rc = regs.withUnsafeMutableBufferPointer { b in
            table == .holdingRegister ? modbus_read_registers(c, Int32(start), Int32(count), b.baseAddress) : modbus_read_input_registers(c, Int32(start), Int32(count), b.baseAddress)
        }
        guard rc == count else { return .failure(rc < 0 ? Self.failure() : .badResponse("\(rc) registers instead of \(count)")) }
        return .success(regs)
    }

    /// Writes coils (0/1 items) or holding registers.
    func write(_ table: ModbusTable, start: UInt16, items: [UInt16], forceMultiple: Bool) -> Result<Void, ModbusFailure> {
        guard let c = ctx else { return .failure(.io("not connected")) }
        let rc: Int32
        switch table {
        case .coil:
            if items.count == 1 && !forceMultiple {
                rc = modbus_write_bit(c, Int32(start), Int32(items[0]))
            } else {
                let bits = items.map { UInt8($0 != 0 ? 1 : 0) }
                rc = bits.withUnsafeBufferPointer { modbus_write_bits(c, Int32(start), Int32(bits.count), $0.baseAddress) }
            }
        case .holdingRegister:
            if items.count == 1 && !forceMultiple {
                rc = modbus_write_register(c, Int32(start), items[0])
            } else {
                rc = items.withUnsafeBufferPointer { modbus_write_registers(c, Int32(start), Int32(items.count), $0.baseAddress) }
            }
        default:
            return .failure(.exception(1))
        }
        return rc < 0 ? .failure(Self.failure()) : .success(())
    }

    static func lastError() -> String {
        let e = brume_modbus_errno()
        return String(cString: modbus_strerror(e))
    }

    /// Classifies errno after a failed libmodbus call.
    static func failure() -> ModbusFailure {
        let e = brume_modbus_errno()
        let base = brume_modbus_enobase()
        if e == ETIMEDOUT { return .timeout }
        if e > base && e <= base + 11 { return .exception(Int(e - base)) }
        if e > base + 11 && e <= base + 20 {
            let text = String(cString: modbus_strerror(e))
            return .badResponse(e == base + 12 ? "CRC mismatch" : text)
        }
        return .io(String(cString: modbus_strerror(e)))
    }
}

/// `brume check --connect`: opens the bus once and reads each device's first point.
public enum ModbusProbe {
    public struct DeviceOutcome: Sendable {
        public var device: String
        public var unit: UInt8
        /// Milliseconds to the answer, or why there was none.
        public var result: Result<Int64, ModbusFailure>
    }

    /// Fails as a whole when the port cannot be opened or the TCP connection made.
    public static func probe(_ transport: ModbusTransport, resolvedPath: String?, devices: [ModbusDeviceOptions]) -> Result<[DeviceOutcome], ModbusFailure> {
        let link = ModbusLink(transport: transport)
        do { try link.open(path: resolvedPath) } catch { return .failure(error) }
        defer { link.close() }
        var out: [DeviceOutcome] = []
        for d in devices {
            guard let p = d.points.first else { continue }
            link.prepare(unit: d.unit, timeoutMillis: d.timeoutMillis)
            let start = ContinuousClock.now
            let r = link.read(p.table, start: p.address, count: p.count)
            let ms = (ContinuousClock.now - start).components
            let elapsed = ms.seconds * 1000 + ms.attoseconds / 1_000_000_000_000_000
            switch r {
            case .success: out.append(DeviceOutcome(device: d.name, unit: d.unit, result: .success(elapsed)))
            case .failure(let f):
                link.flush()
                out.append(DeviceOutcome(device: d.name, unit: d.unit, result: .failure(f)))
            }
        }
        return .success(out)
    }
}
