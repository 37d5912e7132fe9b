// Modbus register images (what a device, or a device gone mad, answers) and read planning.
// Input: byte 0 type, byte 1 word/byte order + bit, bytes 2-9 scale (Double bits), then the
// register words; the same bytes also shape a random register map for ModbusBlock.plan.
// Invariants: decoding never traps; a finite decoded value encodes back to registers that decode
// to the same value (integers within 2^53, floats bit-exact); a planned read covers each of its
// points, never spans more than allowed, and every point is read exactly once.
import BrumeCore
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 10 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let types = ModbusDataType.allCases
    let type = types[Int(bytes[0]) % types.count]
    let flags = bytes[1]
    var scaleBits: UInt64 = 0
    for i in 0..<8 { scaleBits = scaleBits << 8 | UInt64(bytes[2 + i]) }
    var scale = Double(bitPattern: scaleBits)
    if !scale.isFinite || scale == 0 || abs(scale) > 1e6 || abs(scale) < 1e-6 { scale = 1 }
    let enc = ModbusEncoding(type: type, wordOrder: flags & 1 == 0 ? .big : .little, byteOrder: flags & 2 == 0 ? .big : .little,
                             bit: type == .bool && flags & 4 != 0 ? Int(flags >> 4) : nil, scale: scale, offset: 0)
    var words: [UInt16] = []
    var i = 10
    while i + 1 < size { words.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])); i += 2 }
    if words.count >= type.words {
        let image = Array(words.prefix(type.words))
        let v = enc.decode(image)
        if case .number(let x) = v, x.isFinite, type != .bool {
            switch enc.encode(x) {
            case .success(let back):
                let again = enc.decode(back)
                if type.isFloat || abs(x / scale) < 9e15 {
                    if case .number(let y) = again {
                        invariant(y == x || abs(y - x) <= abs(x) * 1e-12, "\(type) \(enc.orderName) scale \(scale): \(x) → \(back) → \(y)")
                    } else { invariant(false, "decoded to \(again)") }
                }
            case .failure:
                // Only values that scaling pushed outside the type may be refused.
                invariant(scale != 1 || type == .int64 || type == .uint64, "\(type) refused its own value \(x)")
            }
        }
    }
    // A register map from the same bytes.
    var points: [ModbusPoint] = []
    var k = 0
    while k + 3 < size && points.count < 64 {
        let table = ModbusTable.allCases[Int(bytes[k]) % 4]
        let t = table.isBit ? ModbusDataType.bool : types[Int(bytes[k + 1]) % types.count]
        let address = UInt16(min(65536 - t.words, Int(bytes[k + 2]) << 8 | Int(bytes[k + 3])))
        points.append(ModbusPoint(metric: "p\(points.count)", table: table, address: address, encoding: ModbusEncoding(type: t),
                                  pollMillis: Int64(1000 * (1 + Int(bytes[k + 1]) % 3))))
        k += 4
    }
    let span = 1 + Int(bytes[1]) % 130
    let gap = Int(bytes[0]) % 10
    let blocks = ModbusBlock.plan(points, maxSpan: span, maxGap: gap)
    var seen = [Int](repeating: 0, count: points.count)
    for b in blocks {
        invariant(b.count <= max(min(span, b.table.maxPerRead), 4), "block of \(b.count) with span \(span)")
        for p in b.points {
            seen[p] += 1
            let pt = points[p]
            invariant(pt.table == b.table && pt.pollMillis == b.pollMillis, "point in the wrong block")
            invariant(Int(pt.address) >= Int(b.start) && pt.end <= Int(b.start) + b.count, "block does not cover its point")
        }
    }
    invariant(seen.allSatisfy { $0 == 1 }, "a point is read \(seen) times")
    return 0
}

@_cdecl("fuzz_modbus_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
