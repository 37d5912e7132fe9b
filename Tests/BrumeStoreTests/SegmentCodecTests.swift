import BrumeTestKit
import Testing
import BrumeCore
@testable import BrumeStore


/// Equality that compares doubles by bit pattern (so -0.0 != 0.0 and NaN == same NaN).
private func bitExact(_ a: [Reading], _ b: [Reading]) -> Bool {
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) {
        guard x.device == y.device, x.metric == y.metric, x.time == y.time else { return false }
        switch (x.value, y.value) {
        case (.number(let p), .number(let q)): if p.bitPattern != q.bitPattern { return false }
        case (.bool(let p), .bool(let q)): if p != q { return false }
        case (.string(let p), .string(let q)): if p != q { return false }
        default: return false
        }
    }
    return true
}

private func typicalReadings(_ n: Int, seed: UInt64 = 1) -> [Reading] {
    var rng = SplitMix64(seed: seed)
    let devices = ["boiler", "pump-1", "pump-2", "greenhouse-north", "greenhouse-south"]
    let metrics = ["temperature", "humidity", "pressure"]
    var t: Int64 = 1_764_169_999_000
    return (0..<n).map { i in
        t += Int64(rng.next() % 200)
        let m = i % metrics.count
        let value: Value
        switch m {
        case 0: value = .number(Double(Int(rng.next() % 1000) + 150) / 10)      // 15.0 ... 114.9
        case 1: value = .number(Double(Int(rng.next() % 100)))                    // 0 ... 99 (%)
        default: value = .number(Double(Int(rng.next() % 20000) + 90000) / 100)   // 900.00 ... 1099.99 hPa
        }
        return Reading(device: devices[(i / metrics.count) % devices.count], metric: metrics[m], time: t, value: value)
    }
}

@Suite struct SegmentCodecTests {
    @Test func crc32KnownValues() {
        #expect(SegmentCodec.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(SegmentCodec.crc32([]) == 0)
        #expect(SegmentCodec.crc32(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x414F_A339)
    }

    @Test func emptySegment() throws {
        let blob = SegmentCodec.encode([Reading]())
        #expect(blob.count == 8)
        #expect(try SegmentCodec.decode(blob) == [])
    }

    @Test func specialValuesRoundTripBitExact() throws {
        let values: [Double] = [0, -0.0, 1, -1, 21.5, 0.1, 1e-5, 1e300, -1e300, .leastNonzeroMagnitude, .greatestFiniteMagnitude,
                                9_007_199_254_740_992, -9_007_199_254_740_991, 9_007_199_254_740_994, 1.0 / 3, 123.456789,
                                Double(Float(0.1)), .infinity, -.infinity, .nan, -.nan, .signalingNaN,
                                Double(bitPattern: 0x7FF8_0000_DEAD_BEEF), 4_503_599_627_370_495.5]
        let readings = values.enumerated().map { Reading(device: "d", metric: "m", time: Int64($0.offset), value: .number($0.element)) }
            + [Reading(device: "", metric: "", time: .min, value: .string("")),
               Reading(device: "é€😀", metric: "温度", time: .max, value: .string("d")),
               Reading(device: "d", metric: "m", time: 0, value: .bool(true)),
               Reading(device: "d", metric: "m", time: -1, value: .bool(false))]
        let decoded = try SegmentCodec.decode(SegmentCodec.encode(readings))
        #expect(bitExact(decoded, readings))
    }

    @Test func valueEncodingsAreCompact() {
        func size(_ v: Value) -> Int {
            let one = [Reading(device: "d", metric: "m", time: 0, value: v)]
            return SegmentCodec.encode(one).count - SegmentCodec.encode([Reading]()).count - 4 - 3  // minus table, indices, dt
        }
        #expect(size(.number(7)) == 2)
        #expect(size(.number(21.5)) == 3)
        #expect(size(.number(1013.25)) == 4)
        #expect(size(.number(-0.0)) == 5)            // float32 keeps the sign bit
        #expect(size(.number(Double(Float(0.1)))) == 5)
        #expect(size(.number(1.0 / 3)) == 9)
        #expect(size(.bool(true)) == 1)
    }

    @Test func randomRoundTrips() throws {
        var rng = SplitMix64(seed: 99)
        let names = ["a", "boiler", "é", "😀x", "", "temperature", String(repeating: "long", count: 50)]
        for _ in 0..<300 {
            let n = Int(rng.next() % 200)
            var t = Int64(bitPattern: rng.next())
            let readings: [Reading] = (0..<n).map { _ in
                t = rng.next() % 8 == 0 ? Int64(bitPattern: rng.next()) : t &+ Int64(rng.next() % 2000) - 500
                let value: Value
                switch rng.next() % 7 {
                case 0: value = .number(Double(bitPattern: rng.next()))          // any bits, NaNs and infinities included
                case 1: value = .number(Double(Int64(bitPattern: rng.next()) >> Int64(rng.next() % 64)))
                case 2: value = .number(Double(Int64(bitPattern: rng.next()) % 1_000_000) / [10, 100, 1000, 1e6, 1e9][Int(rng.next() % 5)])
                case 3: value = .number(Double(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))))
                case 4: value = .bool(rng.next() & 1 == 0)
                case 5: value = .string(names[Int(rng.next() % UInt64(names.count))])
                default: value = .number(rng.next() & 1 == 0 ? -0.0 : 0.0)
                }
                return Reading(device: names[Int(rng.next() % 4)], metric: names[Int(rng.next() % UInt64(names.count))], time: t, value: value)
            }
            let blob = SegmentCodec.encode(readings)
            let decoded = try SegmentCodec.decode(blob)
            #expect(bitExact(decoded, readings))
            #expect(SegmentCodec.encode(decoded) == blob, "deterministic")
        }
    }

    @Test func everySingleByteCorruptionIsDetected() {
        let readings = typicalReadings(12) + [Reading(device: "x", metric: "s", time: 5, value: .string("open")),
                                              Reading(device: "x", metric: "b", time: 6, value: .bool(true)),
                                              Reading(device: "x", metric: "f", time: 7, value: .number(1.0 / 3))]
        let blob = SegmentCodec.encode(readings)
        var detected = 0
        for i in 0..<blob.count {
            for delta in [0x01, 0x80, 0xFF] as [UInt8] {
                var bad = blob
                bad[i] ^= delta
                do {
                    _ = try SegmentCodec.decode(bad)
                    Issue.record("corruption at byte \(i) (xor \(delta)) not detected")
                } catch {
                    detected += 1
                }
            }
        }
        #expect(detected == blob.count * 3)
    }

    @Test func everyTruncationIsDetected() {
        let blob = SegmentCodec.encode(typicalReadings(20))
        for length in 0..<blob.count {
            #expect(throws: SegmentError.self) { try SegmentCodec.decode(Array(blob[0..<length])) }
        }
        #expect(throws: SegmentError.self) { try SegmentCodec.decode(blob + [0]) }
    }

    @Test func structuralErrorsBehindAValidCRC() {
        // Hand-built bodies with a correct CRC exercise the structural checks themselves.
        func sealed(_ body: [UInt8]) -> [UInt8] {
            let crc = SegmentCodec.crc32(body)
            return body + [UInt8(crc & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8((crc >> 16) & 0xFF), UInt8(crc >> 24)]
        }
        func message(_ body: [UInt8]) -> String? {
            do { _ = try SegmentCodec.decode(sealed(body)); return nil } catch {
                guard case .corrupt(let why) = error else { return nil }
                return why
            }
        }
        let m = SegmentCodec.magic, v = SegmentCodec.version
        #expect(message([m, v, 0, 0]) == nil)
        #expect(message([0x00, v, 0, 0])?.hasPrefix("bad magic") == true)
        #expect(message([m, 9, 0, 0])?.hasPrefix("unsupported version") == true)
        #expect(message([m, v, 0, 0, 7])?.contains("unexpected bytes") == true)
        #expect(message([m, v, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0])?.contains("varint overflow") == true)
        #expect(message([m, v, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])?.contains("varint overflow") == true)
        #expect(message([m, v, 0x7F, 0])?.contains("exceeds") == true)
        #expect(message([m, v, 0, 1, 2, 0xC3, 0x28])?.contains("UTF-8") == true)
        #expect(message([m, v, 0, 1, 5, 0x61])?.contains("truncated") == true)
        #expect(message([m, v, 1, 1, 1, 0x61, 0, 1, 0, 3])?.contains("out of range") == true)
        #expect(message([m, v, 1, 1, 1, 0x61, 0, 0, 0, 0x42])?.contains("unknown value tag") == true)
        #expect(message([m, v, 1, 1, 1, 0x61, 0, 0, 0, 0x01, 0, 0])?.contains("truncated") == true)
        #expect(message([m, v, 2, 1, 1, 0x61, 0, 0, 0, 0x03, 0, 0])?.contains("truncated") == true)   // count mismatch
        #expect(message([m, v, 1, 1, 1, 0x61, 0, 0, 2, 0x04]) == nil)
    }

    @Test func garbageNeverCrashes() {
        var rng = SplitMix64(seed: 5)
        for _ in 0..<2000 {
            let n = Int(rng.next() % 64)
            var body: [UInt8] = [SegmentCodec.magic, SegmentCodec.version]
            for _ in 0..<n { body.append(UInt8(truncatingIfNeeded: rng.next())) }
            let crc = SegmentCodec.crc32(body)
            let blob = body + [UInt8(crc & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8((crc >> 16) & 0xFF), UInt8(crc >> 24)]
            _ = try? SegmentCodec.decode(blob)
        }
    }

    @Test func bytesPerTypicalReading() throws {
        let readings = typicalReadings(1000)
        let blob = SegmentCodec.encode(readings)
        let perReading = Double(blob.count) / Double(readings.count)
        print("SegmentCodec: \(blob.count) bytes for \(readings.count) typical readings = \(perReading) bytes/reading")
        #expect(perReading < 12)
        #expect(try SegmentCodec.decode(blob) == readings)
    }
}
