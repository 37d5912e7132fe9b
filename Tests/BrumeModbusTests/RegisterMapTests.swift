import BrumeCore
import BrumeTestKit
import Testing

/// Decoding of every type in every word and byte order, against values whose
/// register images are written out by hand (as a datasheet shows them).
@Suite struct RegisterMapTests {
    func enc(_ t: ModbusDataType, _ order: String = "ABCD", scale: Double = 1, offset: Double = 0) -> ModbusEncoding {
        let (w, b): (ModbusOrder, ModbusOrder) = switch order {
        case "CDAB": (.little, .big)
        case "BADC": (.big, .little)
        case "DCBA": (.little, .little)
        default: (.big, .big)
        }
        return ModbusEncoding(type: t, wordOrder: w, byteOrder: b, scale: scale, offset: offset)
    }

    @Test(arguments: [
        // float32 3.14159 = 0x40490FD0
        ("ABCD", [0x4049, 0x0FD0] as [UInt16]), ("CDAB", [0x0FD0, 0x4049]), ("BADC", [0x4940, 0xD00F]), ("DCBA", [0xD00F, 0x4940]),
    ])
    func float32InEveryOrder(order: String, words: [UInt16]) {
        guard case .number(let v) = enc(.float32, order).decode(words) else { Issue.record("not a number"); return }
        #expect(abs(v - 3.14159) < 1e-6)
        #expect(enc(.float32, order).encode(3.14159) == .success(words), "encode is the inverse of decode")
    }

    @Test(arguments: [("ABCD", [0xF8A4, 0x32EB] as [UInt16]), ("CDAB", [0x32EB, 0xF8A4]), ("BADC", [0xA4F8, 0xEB32]), ("DCBA", [0xEB32, 0xA4F8])])
    func int32InEveryOrder(order: String, words: [UInt16]) {
        // -123456789 = 0xF8A432EB
        #expect(enc(.int32, order).decode(words) == .number(-123456789))
        #expect(enc(.int32, order).encode(-123456789) == .success(words))
    }

    @Test func everyTypeDecodes() {
        #expect(enc(.int16).decode([0xFB2E]) == .number(-1234))
        #expect(enc(.uint16).decode([0xFB2E]) == .number(64302))
        #expect(enc(.uint32).decode([0xB2D0, 0x5E00]) == .number(3_000_000_000))
        #expect(enc(.uint32, "CDAB").decode([0x5E00, 0xB2D0]) == .number(3_000_000_000))
        // int64 -1234567890123 = 0xFFFFFEE0_8E04FB35
        #expect(enc(.int64).decode([0xFFFF, 0xFEE0, 0x8E04, 0xFB35]) == .number(-1_234_567_890_123))
        #expect(enc(.int64, "CDAB").decode([0xFB35, 0x8E04, 0xFEE0, 0xFFFF]) == .number(-1_234_567_890_123))
        #expect(enc(.uint64).decode([0, 0, 0x0001, 0x0000]) == .number(65536))
        // float64 e = 0x4005BF0A_8B145769
        #expect(enc(.float64).decode([0x4005, 0xBF0A, 0x8B14, 0x5769]) == .number(2.718281828459045))
        #expect(enc(.float64, "DCBA").decode([0x6957, 0x148B, 0x0ABF, 0x0540]) == .number(2.718281828459045))
        #expect(enc(.float64, "BADC").decode([0x0540, 0x0ABF, 0x148B, 0x6957]) == .number(2.718281828459045))
        #expect(enc(.bool).decode([0]) == .bool(false))
        #expect(enc(.bool).decode([7]) == .bool(true))
        var bit = enc(.bool)
        bit.bit = 3
        #expect(bit.decode([0b1000]) == .bool(true))
        #expect(bit.decode([0b0111]) == .bool(false))
    }

    @Test func scaleAndOffset() {
        // A meter reports 0.1 V steps: raw 2301 → 230.1 V; a sensor with an offset.
        #expect(enc(.uint16, scale: 0.1).decode([2301]) == .number(2301 * 0.1))
        #expect(enc(.int16, scale: 0.5, offset: -40).decode([100]) == .number(10))
        #expect(enc(.uint16, scale: 0.1).encode(50) == .success([500]))
        #expect(enc(.int16, scale: 0.5, offset: -40).encode(10) == .success([100]))
    }

    @Test func writesOutsideTheTypeAreRefused() {
        #expect(throws: ModbusEncodeError.self) { try enc(.uint16).encode(70000).get() }
        #expect(throws: ModbusEncodeError.self) { try enc(.uint16).encode(-1).get() }
        #expect(throws: ModbusEncodeError.self) { try enc(.int16).encode(.nan).get() }
        #expect(throws: ModbusEncodeError.self) { try enc(.uint16, scale: 0.1).encode(6553.6).get() }
        #expect((try? enc(.uint16, scale: 0.1).encode(6553.5).get()) == [65535])
    }

    @Test func randomValuesRoundTrip() {
        var rng = SplitMix64(seed: 7)
        for t in [ModbusDataType.int16, .uint16, .int32, .uint32, .int64, .float32, .float64] {
            for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
                let e = enc(t, order)
                for _ in 0..<200 {
                    let words = (0..<t.words).map { _ in UInt16.random(in: 0...UInt16.max, using: &rng) }
                    guard case .number(let v) = e.decode(words), v.isFinite else { continue }
                    if t == .int64, abs(v) > 9e15 { continue } // beyond Double's exact integers
                    guard case .success(let back) = e.encode(v) else { Issue.record("\(t) \(order) \(v) does not encode"); continue }
                    #expect(e.decode(back) == .number(v), "\(t) \(order) \(words)")
                }
            }
        }
    }

    func point(_ m: String, _ table: ModbusTable, _ a: UInt16, _ t: ModbusDataType = .uint16, poll: Int64 = 1000) -> ModbusPoint {
        ModbusPoint(metric: m, table: table, address: a, encoding: ModbusEncoding(type: t), pollMillis: poll)
    }

    @Test func contiguousPointsShareOneRequest() {
        let pts = [point("a", .holdingRegister, 0), point("b", .holdingRegister, 1, .float32), point("c", .holdingRegister, 3),
                   point("d", .holdingRegister, 10), point("e", .inputRegister, 4), point("f", .coil, 0, .bool), point("g", .coil, 1, .bool)]
        let blocks = ModbusBlock.plan(pts, maxSpan: 125, maxGap: 0)
        #expect(blocks.count == 4)
        let h = blocks.filter { $0.table == .holdingRegister }.sorted { $0.start < $1.start }
        #expect(h.map(\.start) == [0, 10])
        #expect(h[0].count == 4 && h[0].points == [0, 1, 2], "0, 1-2 and 3 are contiguous: one request of 4 registers")
        #expect(blocks.first { $0.table == .coil }?.count == 2)
        // A gap allowance of 6 merges address 10 in as well.
        #expect(ModbusBlock.plan(pts, maxSpan: 125, maxGap: 6).filter { $0.table == .holdingRegister }.count == 1)
    }

    @Test func spanLimitAndPollIntervalsSplitRequests() {
        let pts = (0..<10).map { point("p\($0)", .inputRegister, UInt16($0 * 2), .float32) } + [point("slow", .inputRegister, 20, poll: 60_000)]
        let blocks = ModbusBlock.plan(pts, maxSpan: 8, maxGap: 0)
        let fast = blocks.filter { $0.pollMillis == 1000 }
        #expect(fast.allSatisfy { $0.count <= 8 })
        #expect(fast.flatMap(\.points).sorted() == Array(0..<10), "every point is read exactly once")
        #expect(fast.count == 3)
        #expect(blocks.filter { $0.pollMillis == 60_000 }.count == 1, "a different poll interval is its own request")
        // Never more than the protocol allows, whatever the configuration says.
        let many = (0..<200).map { point("r\($0)", .holdingRegister, UInt16($0)) }
        #expect(ModbusBlock.plan(many, maxSpan: 1000, maxGap: 0).allSatisfy { $0.count <= 125 })
    }
}
