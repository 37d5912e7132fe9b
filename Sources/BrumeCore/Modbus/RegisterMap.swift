/// Modbus register maps: the four tables, value types, word and byte order,
/// and the planning of points into block reads. Pure: no I/O, no libmodbus
/// (BrumeModbus does the talking), so the decoding is unit-tested and fuzzed.

/// The four Modbus data tables.
public enum ModbusTable: String, Sendable, Hashable, CaseIterable {
    case coil
    case discreteInput = "discrete_input"
    case inputRegister = "input_register"
    case holdingRegister = "holding_register"

    /// Coils and discrete inputs hold bits; the others 16-bit registers.
    public var isBit: Bool { self == .coil || self == .discreteInput }
    /// The most items one read request may ask for (Modbus application protocol).
    public var maxPerRead: Int { isBit ? 2000 : 125 }
    public var writable: Bool { self == .coil || self == .holdingRegister }
    /// The read function code.
    public var readFunction: UInt8 {
        switch self {
        case .coil: return 1
        case .discreteInput: return 2
        case .holdingRegister: return 3
        case .inputRegister: return 4
        }
    }
}

/// How the registers of a point are turned into a number.
public enum ModbusDataType: String, Sendable, Hashable, CaseIterable {
    case bool, int16, uint16, int32, uint32, float32, int64, uint64, float64

    /// Registers (16-bit words) it spans; bits span one item.
    public var words: Int {
        switch self {
        case .bool, .int16, .uint16: return 1
        case .int32, .uint32, .float32: return 2
        case .int64, .uint64, .float64: return 4
        }
    }
    public var isFloat: Bool { self == .float32 || self == .float64 }
    /// The range of raw integers the type can carry (for writes).
    public var integerRange: ClosedRange<Double>? {
        switch self {
        case .bool: return 0...1
        case .int16: return -32768...32767
        case .uint16: return 0...65535
        case .int32: return -2_147_483_648...2_147_483_647
        case .uint32: return 0...4_294_967_295
        case .int64: return -9_223_372_036_854_775_808...9_223_372_036_854_774_784
        case .uint64: return 0...18_446_744_073_709_549_568
        case .float32, .float64: return nil
        }
    }
}

/// Order of the 16-bit words of a multi-register value, and of the two bytes in
/// each word. Big/big is the Modbus convention ("ABCD"); many meters use
/// little word order ("CDAB").
public enum ModbusOrder: String, Sendable, Hashable { case big, little }

/// The register layout of one value: type, orders, where it sits, how it scales.
public struct ModbusEncoding: Sendable, Hashable {
    public var type: ModbusDataType
    public var wordOrder: ModbusOrder
    public var byteOrder: ModbusOrder
    /// For `bool` on a register: which bit (0 = least significant); nil: the register ≠ 0.
    public var bit: Int?
    public var scale: Double
    public var offset: Double

    public init(type: ModbusDataType, wordOrder: ModbusOrder = .big, byteOrder: ModbusOrder = .big, bit: Int? = nil, scale: Double = 1, offset: Double = 0) {
        self.type = type
        self.wordOrder = wordOrder
        self.byteOrder = byteOrder
        self.bit = bit
        self.scale = scale
        self.offset = offset
    }

    /// The order name field engineers see in datasheets: ABCD, CDAB, BADC, DCBA.
    public var orderName: String {
        switch (wordOrder, byteOrder) {
        case (.big, .big): return "ABCD"
        case (.little, .big): return "CDAB"
        case (.big, .little): return "BADC"
        case (.little, .little): return "DCBA"
        }
    }

    /// The raw bit pattern of `words` (as read, lowest address first), most significant first.
    @inlinable
    public func raw<C: Collection>(_ words: C) -> UInt64 where C.Element == UInt16 {
        var u: UInt64 = 0
        if wordOrder == .big {
            for w in words { u = u << 16 | UInt64(byteOrder == .big ? w : w.byteSwapped) }
        } else {
            for w in words.reversed() { u = u << 16 | UInt64(byteOrder == .big ? w : w.byteSwapped) }
        }
        return u
    }

    /// Decodes the registers of one point (exactly `type.words` of them) to its value.
    public func decode<C: Collection>(_ words: C) -> Value where C.Element == UInt16 {
        let u = raw(words)
        let x: Double
        switch type {
        case .bool:
            if let bit { return .bool((u >> UInt64(bit)) & 1 == 1) }
            return .bool(u != 0)
        case .int16: x = Double(Int16(bitPattern: UInt16(truncatingIfNeeded: u)))
        case .uint16: x = Double(UInt16(truncatingIfNeeded: u))
        case .int32: x = Double(Int32(bitPattern: UInt32(truncatingIfNeeded: u)))
        case .uint32: x = Double(UInt32(truncatingIfNeeded: u))
        case .float32:
            // The shortest decimal that is this float (230.1, not 230.10000610351562): what the device meant, and fewer bytes upstream.
            let f = Float(bitPattern: UInt32(truncatingIfNeeded: u))
            x = f.isFinite ? (Double(f.description) ?? Double(f)) : Double(f)
        case .int64: x = Double(Int64(bitPattern: u))
        case .uint64: x = Double(u)
        case .float64: x = Double(bitPattern: u)
        }
        return .number(x * scale + offset)
    }

    /// The registers to write for a value (inverse of `decode`), or why it cannot be written.
    public func encode(_ value: Double) -> Result<[UInt16], ModbusEncodeError> {
        guard value.isFinite else { return .failure(ModbusEncodeError("\(value) is not a finite number")) }
        let rawValue = (value - offset) / scale
        var u: UInt64
        switch type {
        case .float32: u = UInt64(Float(rawValue).bitPattern)
        case .float64: u = rawValue.bitPattern
        default:
            let r = rawValue.rounded()
            guard let range = type.integerRange, range.contains(r) else {
                let limits = type.integerRange.map { "\(WireFormat.formatNumber($0.lowerBound))...\(WireFormat.formatNumber($0.upperBound))" } ?? ""
                if scale == 1 && offset == 0 {
                    return .failure(ModbusEncodeError("\(WireFormat.formatNumber(value)) is outside \(type.rawValue) (\(limits))"))
                }
                return .failure(ModbusEncodeError("\(WireFormat.formatNumber(value)) is \(WireFormat.formatNumber(r)) after scale and offset, outside \(type.rawValue) (\(limits))"))
            }
            switch type {
            case .int16: u = UInt64(UInt16(bitPattern: Int16(r)))
            case .int32: u = UInt64(UInt32(bitPattern: Int32(r)))
            case .int64: u = UInt64(bitPattern: Int64(r))
            default: u = UInt64(r)
            }
        }
        var words = [UInt16](repeating: 0, count: type.words)
        for i in 0..<type.words {
            var w = UInt16(truncatingIfNeeded: u >> UInt64(16 * (type.words - 1 - i)))
            if byteOrder == .little { w = w.byteSwapped }
            words[i] = w
        }
        if wordOrder == .little { words.reverse() }
        return .success(words)
    }
}

public struct ModbusEncodeError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// One value read from a device.
public struct ModbusPoint: Sendable, Hashable {
    public var metric: String
    public var table: ModbusTable
    /// Protocol address, 0-based (register 40001 in Modicon notation is holding address 0).
    public var address: UInt16
    public var encoding: ModbusEncoding
    public var unit: String?
    public var pollMillis: Int64

    public init(metric: String, table: ModbusTable, address: UInt16, encoding: ModbusEncoding, unit: String? = nil, pollMillis: Int64) {
        self.metric = metric
        self.table = table
        self.address = address
        self.encoding = encoding
        self.unit = unit
        self.pollMillis = pollMillis
    }

    /// Items (bits or registers) the point spans.
    public var count: Int { table.isBit ? 1 : encoding.type.words }
    public var end: Int { Int(address) + count }
}

/// One read request: a contiguous range of one table covering some points.
public struct ModbusBlock: Sendable, Hashable {
    public var table: ModbusTable
    public var start: UInt16
    public var count: Int
    public var pollMillis: Int64
    /// Indices into the device's points.
    public var points: [Int]

    public init(table: ModbusTable, start: UInt16, count: Int, pollMillis: Int64, points: [Int]) {
        self.table = table
        self.start = start
        self.count = count
        self.pollMillis = pollMillis
        self.points = points
    }

    /// Plans the reads of a device: points of one table and poll interval
    /// whose union spans at most `maxSpan` items, with holes of at most `maxGap`
    /// items between them, share one request.
    public static func plan(_ points: [ModbusPoint], maxSpan: Int, maxGap: Int) -> [ModbusBlock] {
        var out: [ModbusBlock] = []
        let groups = Dictionary(grouping: points.indices) { GroupKey(table: points[$0].table, poll: points[$0].pollMillis) }
        for key in groups.keys.sorted(by: { ($0.poll, $0.table.readFunction) < ($1.poll, $1.table.readFunction) }) {
            let idx = groups[key]!.sorted { (points[$0].address, $0) < (points[$1].address, $1) }
            let span = max(1, min(maxSpan, key.table.maxPerRead))
            var cur: ModbusBlock?
            for i in idx {
                let p = points[i]
                if var b = cur {
                    let end = Int(b.start) + b.count
                    let newEnd = max(end, p.end)
                    if Int(p.address) - end <= maxGap && newEnd - Int(b.start) <= span {
                        b.count = newEnd - Int(b.start)
                        b.points.append(i)
                        cur = b
                        continue
                    }
                    out.append(b)
                }
                cur = ModbusBlock(table: p.table, start: p.address, count: p.count, pollMillis: p.pollMillis, points: [i])
            }
            if let b = cur { out.append(b) }
        }
        return out
    }

    private struct GroupKey: Hashable { var table: ModbusTable; var poll: Int64 }
}

/// Modbus exception codes, with the plain-language reason shown to technicians.
public enum ModbusException {
    /// A counter-friendly name for an exception code.
    public static func name(_ code: Int) -> String {
        switch code {
        case 1: return "illegal_function"
        case 2: return "illegal_data_address"
        case 3: return "illegal_data_value"
        case 4: return "device_failure"
        case 5: return "acknowledge"
        case 6: return "device_busy"
        case 8: return "memory_parity_error"
        case 10: return "gateway_path_unavailable"
        case 11: return "gateway_target_no_response"
        default: return "exception_\(code)"
        }
    }

    /// What the code means, for a technician.
    public static func reason(_ code: Int) -> String {
        switch code {
        case 1: return "illegal function: the device does not support this request (wrong table?)"
        case 2: return "illegal data address: the device has no such register (check the address and the table; addresses are 0-based)"
        case 3: return "illegal data value: the device rejected the value or the length of the request"
        case 4: return "device failure: the device could not perform the request"
        case 5: return "acknowledge: the device accepted a long-running request"
        case 6: return "device busy: the device is processing a long request; retry later"
        case 8: return "memory parity error in the device"
        case 10: return "gateway path unavailable: the Modbus gateway has no route to this unit"
        case 11: return "gateway target did not respond: the unit behind the Modbus gateway is silent"
        default: return "exception code \(code)"
        }
    }
}

/// A write the actuator path performs on a Modbus device.
public struct ModbusWriteSpec: Sendable, Hashable {
    public var unit: UInt8
    public var device: String
    public var table: ModbusTable
    public var address: UInt16
    public var encoding: ModbusEncoding
    /// Read the registers back after writing and fail the command if they differ.
    public var readBack: Bool
    /// Always use "write multiple" (function 15/16), even for one item.
    public var forceMultiple: Bool
    /// Command strings mapped to numbers (e.g. open = 1, close = 0).
    public var values: [String: Double]

    public init(unit: UInt8, device: String, table: ModbusTable, address: UInt16, encoding: ModbusEncoding, readBack: Bool, forceMultiple: Bool = false, values: [String: Double] = [:]) {
        self.unit = unit
        self.device = device
        self.table = table
        self.address = address
        self.encoding = encoding
        self.readBack = readBack
        self.forceMultiple = forceMultiple
        self.values = values
    }

    /// The items to write for a command value: bits for coils, registers for holding registers.
    public func items(for value: Value) -> Result<[UInt16], ModbusEncodeError> {
        let number: Double
        switch value {
        case .bool(let b): number = b ? 1 : 0
        case .number(let d): number = d
        case .string(let s):
            guard let d = values[s] else { return .failure(ModbusEncodeError("no register value for \"\(s)\" (declare it in values = { ... })")) }
            number = d
        }
        if table == .coil {
            guard number == 0 || number == 1 else { return .failure(ModbusEncodeError("a coil takes 0/1 or true/false, got \(WireFormat.formatNumber(number))")) }
            return .success([UInt16(number)])
        }
        if encoding.type == .bool {
            guard number == 0 || number == 1 else { return .failure(ModbusEncodeError("a bool register takes 0/1 or true/false, got \(WireFormat.formatNumber(number))")) }
            return .success([UInt16(number)])
        }
        return encoding.encode(number)
    }
}
