import BrumeCore
#if canImport(Glibc)
import Glibc
#endif

// The Brume function ABI, version 1 (docs/functions.md; C header sdk/include/brume.h).
//
// A module exports its linear memory as "memory", `brume_buffer() -> i32` (the address of an
// exchange area in that memory) and `brume_buffer_size() -> i32` (its size in bytes), and the
// entry point of its kind: `brume_reading(n)`, `brume_window(n)` or `brume_decode(n)`, each
// `(i32) -> i32`. Optionally `brume_init() -> i32`, called once after instantiation (non-zero:
// the module is refused). It may import only `env.brume_emit(i32) -> i32` and
// `env.brume_log(i32, i32, i32)`: no WASI, no clock, no files, no network.
//
// Before a call the host writes `n` records into the exchange area, one after the other; the
// function emits output records with `brume_emit(address)` and returns `BRUME_DONE` (0: the
// emitted readings replace the input), `BRUME_KEEP` (1: the input goes on too, followed by the
// emitted readings) or a negative error code of its own (the call failed).
//
// A record (little-endian, 8-byte aligned, `recordSize` bytes):
//   0  i64 time_ms     milliseconds since the epoch (emit 0: the input's time)
//   8  f64 number      the value of a number, 0/1 for a bool
//  16  u32 type        0 number, 1 bool, 2 string (the text), 3 bytes (decoder input)
//  20  u32 device_len
//  24  u32 metric_len
//  28  u32 text_len    bytes of a string value or of a decoder's payload
//  32  device, metric, text (UTF-8, no terminator)
public enum FunctionABI {
    public static let version = 1
    public static let headerSize = 32
    public static let done: Int32 = 0
    public static let keep: Int32 = 1
    public enum ValueType: UInt32 { case number = 0, bool = 1, string = 2, bytes = 3 }
    /// Longest device or metric name a function may emit, in UTF-8 bytes.
    public static let maxNameBytes = 128
    /// Latest time a function may emit (2100-01-01).
    public static let maxTime: Int64 = 4_102_444_800_000

    public static func recordSize(device: Int, metric: Int, text: Int) -> Int {
        (headerSize + device + metric + text + 7) & ~7
    }

    /// Writes one record at `offset` of `area`; returns the offset after it, or nil when it does
    /// not fit.
    static func write(time: Int64, value: Value?, bytes: UnsafeRawBufferPointer? = nil, device: String, metric: String,
                      into area: UnsafeMutableRawBufferPointer, at offset: Int) -> Int? {
        var device = device, metric = metric
        var text = ""
        var number = 0.0
        var type = ValueType.bytes
        switch value {
        case .number(let d)?: number = d; type = .number
        case .bool(let b)?: number = b ? 1 : 0; type = .bool
        case .string(let s)?: text = s; type = .string
        case nil: break
        }
        let textCount = bytes?.count ?? text.utf8.count
        let size = recordSize(device: device.utf8.count, metric: metric.utf8.count, text: textCount)
        guard offset >= 0, size <= area.count - offset else { return nil }
        area.storeBytes(of: time.littleEndian, toByteOffset: offset, as: Int64.self)
        area.storeBytes(of: number.bitPattern.littleEndian, toByteOffset: offset + 8, as: UInt64.self)
        area.storeBytes(of: type.rawValue.littleEndian, toByteOffset: offset + 16, as: UInt32.self)
        area.storeBytes(of: UInt32(device.utf8.count).littleEndian, toByteOffset: offset + 20, as: UInt32.self)
        area.storeBytes(of: UInt32(metric.utf8.count).littleEndian, toByteOffset: offset + 24, as: UInt32.self)
        area.storeBytes(of: UInt32(textCount).littleEndian, toByteOffset: offset + 28, as: UInt32.self)
        var at = offset + headerSize
        func put(_ b: UnsafeBufferPointer<UInt8>) {
            if b.count > 0 { UnsafeMutableRawBufferPointer(rebasing: area[at..<(at + b.count)]).copyMemory(from: UnsafeRawBufferPointer(b)) }
            at += b.count
        }
        device.withUTF8(put)
        metric.withUTF8(put)
        if let bytes {
            if bytes.count > 0 { UnsafeMutableRawBufferPointer(rebasing: area[at..<(at + bytes.count)]).copyMemory(from: bytes) }
            at += bytes.count
        } else {
            text.withUTF8(put)
        }
        // Zero the padding: a function sees no stale bytes.
        while at < offset + size { area[at] = 0; at += 1 }
        return offset + size
    }

    /// Reads a record a function emitted at `address` of its memory `mem`. `input` gives the
    /// time (and unsynchronised-clock stamp) of a record whose time is 0.
    static func read(_ mem: UnsafeRawBufferPointer, at address: UInt32, defaultTime: Int64, unsynced: Int64?,
                     input: (String, String)? = nil) -> Result<Reading, EmitError> {
        let a = Int(address)
        guard a % 8 == 0 else { return .failure(EmitError("record at \(address) is not 8-byte aligned")) }
        guard a <= mem.count - headerSize else { return .failure(EmitError("record at \(address) is outside the function's memory (\(mem.count) bytes)")) }
        let time = Int64(littleEndian: mem.loadUnaligned(fromByteOffset: a, as: Int64.self))
        let number = Double(bitPattern: UInt64(littleEndian: mem.loadUnaligned(fromByteOffset: a + 8, as: UInt64.self)))
        let rawType = UInt32(littleEndian: mem.loadUnaligned(fromByteOffset: a + 16, as: UInt32.self))
        let dl = Int(UInt32(littleEndian: mem.loadUnaligned(fromByteOffset: a + 20, as: UInt32.self)))
        let ml = Int(UInt32(littleEndian: mem.loadUnaligned(fromByteOffset: a + 24, as: UInt32.self)))
        let tl = Int(UInt32(littleEndian: mem.loadUnaligned(fromByteOffset: a + 28, as: UInt32.self)))
        guard dl <= maxNameBytes, ml <= maxNameBytes, tl <= PayloadDecoder.maxStringBytes else {
            return .failure(EmitError("record at \(address): device \(dl), metric \(ml), text \(tl) bytes (at most \(maxNameBytes), \(maxNameBytes), \(PayloadDecoder.maxStringBytes))"))
        }
        let start = a + headerSize
        guard start + dl + ml + tl <= mem.count else { return .failure(EmitError("record at \(address) runs past the end of the function's memory")) }
        func text(_ from: Int, _ count: Int) -> String? {
            let b = UnsafeRawBufferPointer(rebasing: mem[from..<(from + count)])
            return String(validating: b.bindMemory(to: UInt8.self), as: UTF8.self)
        }
        // The input's own names (a map, a derived metric of the same device) are reused as they
        // are: no validation or allocation for them.
        func same(_ s: String, _ from: Int, _ count: Int) -> Bool {
            var s = s
            return s.withUTF8 { u in u.count == count && (count == 0 || memcmp(u.baseAddress!, mem.baseAddress! + from, count) == 0) }
        }
        let device: String
        if let input, same(input.0, start, dl) { device = input.0 } else {
            guard let d = text(start, dl) else { return .failure(EmitError("device is not valid UTF-8")) }
            if let why = nameProblem(d) { return .failure(EmitError("device \(why)")) }
            device = d
        }
        let metric: String
        if let input, same(input.1, start + dl, ml) { metric = input.1 } else {
            guard let m = text(start + dl, ml) else { return .failure(EmitError("metric is not valid UTF-8")) }
            if let why = nameProblem(m) { return .failure(EmitError("metric \(why)")) }
            metric = m
        }
        let value: Value
        switch ValueType(rawValue: rawType) {
        case .number?:
            guard number.isFinite else { return .failure(EmitError("\(device)/\(metric): the number is not finite (\(number))")) }
            value = .number(number)
        case .bool?: value = .bool(number != 0)
        case .string?:
            guard let s = text(start + dl + ml, tl) else { return .failure(EmitError("\(device)/\(metric): the string is not valid UTF-8")) }
            value = .string(s)
        default: return .failure(EmitError("\(device)/\(metric): unknown value type \(rawType) (0 number, 1 bool, 2 string)"))
        }
        if time == 0 || time == defaultTime {
            return .success(Reading(device: device, metric: metric, time: defaultTime, value: value, unsyncedBootMillis: unsynced))
        }
        guard time > 0, time < maxTime else { return .failure(EmitError("\(device)/\(metric): time \(time) is not milliseconds between 1970 and 2100")) }
        return .success(Reading(device: device, metric: metric, time: time, value: value))
    }

    public static func nameProblem(_ s: String) -> String? {
        if s.isEmpty { return "is empty" }
        if s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }) {
            return "\"\(s)\" has a control character, \"/\", \"+\" or \"#\""
        }
        return nil
    }
}

struct EmitError: Error {
    var message: String
    init(_ m: String) { message = m }
}
