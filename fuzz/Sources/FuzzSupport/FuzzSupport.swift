// Shared helpers of the Brume fuzz targets: the libFuzzer driver hook and invariant checks.
import BrumeCore
import CFuzzerDriver
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The C signature of a libFuzzer test function.
public typealias FuzzTestFunction = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// Runs libFuzzer's driver. SwiftPM links executables with `main` aliased to `<module>_main`
/// (so tests can link them); each target defines that symbol with `@_cdecl` and calls this.
public func runLibFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                         _ test: FuzzTestFunction) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, test)
}

/// Traps (a libFuzzer crash) when an invariant does not hold.
@inline(__always)
public func invariant(_ condition: Bool, _ message: @autoclosure () -> String,
                      file: StaticString = #fileID, line: UInt = #line) {
    if !condition {
        let text = "INVARIANT VIOLATED (\(file):\(line)): \(message())\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        fatalError(text, file: file, line: line)
    }
}

/// Reads the fuzz input as a stream of control bytes (returns 0 when exhausted).
public struct ByteCursor {
    public let bytes: UnsafeRawBufferPointer
    public var pos = 0
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    public mutating func next() -> UInt8 {
        guard pos < bytes.count else { return 0 }
        defer { pos += 1 }
        return bytes[pos]
    }
    public var rest: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[min(pos, bytes.count)...]) }
}

/// True when every number in `readings` is finite.
public func allFinite(_ readings: some Sequence<Reading>) -> Bool {
    readings.allSatisfy { if case .number(let d) = $0.value { d.isFinite } else { true } }
}

/// Bit-exact equality of values (NaN payloads and -0.0 included).
public func sameBits(_ a: Value, _ b: Value) -> Bool {
    switch (a, b) {
    case (.number(let x), .number(let y)): return x.bitPattern == y.bitPattern
    case (.bool(let x), .bool(let y)): return x == y
    case (.string(let x), .string(let y)): return x == y
    default: return false
    }
}

public func sameBits(_ a: [Reading], _ b: [Reading]) -> Bool {
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) where x.device != y.device || x.metric != y.metric || x.time != y.time || x.unsyncedBootMillis != y.unsyncedBootMillis || !sameBits(x.value, y.value) {
        return false
    }
    return true
}

/// A short printable rendering of bytes for invariant messages.
public func show(_ bytes: some Sequence<UInt8>, limit: Int = 120) -> String {
    var s = ""
    for (i, b) in bytes.enumerated() {
        if i >= limit { s += "..."; break }
        if b >= 0x20 && b < 0x7F && b != UInt8(ascii: "\\") { s.unicodeScalars.append(Unicode.Scalar(b)) } else { s += "\\x" + String(b, radix: 16) }
    }
    return s
}

/// Walks a JSON document; false if a number is not finite.
public func jsonAllFinite(_ v: JSONValue) -> Bool {
    switch v {
    case .number(let d): return d.isFinite
    case .array(let xs): return xs.allSatisfy(jsonAllFinite)
    case .object(let ms): return ms.allSatisfy { jsonAllFinite($0.value) }
    default: return true
    }
}
