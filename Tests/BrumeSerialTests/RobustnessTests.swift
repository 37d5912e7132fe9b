import BrumeTestKit
import Testing
import BrumeCore
import BrumeSerial

/// Valid lines mixed with line noise, fed through framer + decoder in random chunks.
@Suite struct RobustnessTests {
    struct Outcome {
        var readings: [Reading] = []
        var decodedFrames = 0
        var drops: [FrameDropReason: Int] = [:]
    }

    static func run(_ stream: [UInt8], format: SerialFormat, rng: inout SplitMix64, maxChunk: Int) -> Outcome {
        var framer = LineFramer(maxFrameLength: 512)
        var decoder = FrameDecoder(format: format, device: "dev")
        var o = Outcome()
        var pos = 0
        while pos < stream.count {
            let end = min(stream.count, pos + Int.random(in: 1...maxChunk, using: &rng))
            stream[pos..<end].withUnsafeBytes { chunk in
                framer.push(chunk, onFrame: { frame in
                    do throws(FrameError) {
                        try decoder.decode(frame, receivedAt: 1_000, into: &o.readings)
                        o.decodedFrames += 1
                    } catch {
                        o.drops[error.reason, default: 0] += 1
                    }
                }, onDrop: { o.drops[$0, default: 0] += 1 })
            }
            pos = end
        }
        framer.reset { o.drops[$0, default: 0] += 1 }
        return o
    }

    /// Random bytes (any value but CR and LF), always with a NUL or 0xFF in them.
    static func garbage(_ rng: inout SplitMix64, count: Int, excluding: Set<UInt8> = []) -> [UInt8] {
        var g: [UInt8] = []
        while g.count < count {
            let b = UInt8.random(in: 0...255, using: &rng)
            if b != 0x0A && b != 0x0D && !excluding.contains(b) { g.append(b) }
        }
        g[Int.random(in: 0..<count, using: &rng)] = Bool.random(using: &rng) ? 0x00 : 0xFF
        return g
    }

    static let terminators: [[UInt8]] = [[0x0A], [0x0D, 0x0A], [0x0D]]

    static func check(format: SerialFormat, validLines: [[UInt8]], seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        // Expected: the valid lines alone, in order, through a fresh decoder.
        var expectedDecoder = FrameDecoder(format: format, device: "dev")
        var expected: [Reading] = []
        var expectedUnsupported = 0
        for line in validLines {
            do throws(FrameError) { try expectedDecoder.decode(line, receivedAt: 1_000, into: &expected) } catch {
                #expect(error.reason == .unsupported, "\(error)")
                expectedUnsupported += 1
            }
        }
        var stream: [UInt8] = []
        var shortGarbage = 0, longGarbage = 0
        for line in validLines {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0:
                stream += garbage(&rng, count: Int.random(in: 1...80, using: &rng)) + terminators.randomElement(using: &rng)!
                shortGarbage += 1
            case 1:
                stream += garbage(&rng, count: Int.random(in: 513...2000, using: &rng)) + terminators.randomElement(using: &rng)!
                longGarbage += 1
            case 2:
                stream += terminators.randomElement(using: &rng)! + terminators.randomElement(using: &rng)!   // empty lines
            default:
                break
            }
            stream += line + terminators.randomElement(using: &rng)!
        }
        stream += [0x01, 0xFF, 0x00]        // a partial line at the end: truncated by the reset
        for maxChunk in [1, 7, 64, 4096] {
            let o = run(stream, format: format, rng: &rng, maxChunk: maxChunk)
            #expect(o.readings == expected, "chunks up to \(maxChunk)")
            #expect(o.decodedFrames == validLines.count - expectedUnsupported)
            #expect(o.drops[.tooLong, default: 0] == longGarbage)
            #expect(o.drops[.truncated, default: 0] == 1)
            #expect(o.drops[.unsupported, default: 0] == expectedUnsupported)
            let rejected = o.drops[.unparsable, default: 0] + o.drops[.empty, default: 0] + o.drops[.badChecksum, default: 0]
            #expect(rejected == shortGarbage, "every garbage line is counted once: \(o.drops)")
        }
    }

    @Test func kvLinesSurviveNoise() {
        var rng = SplitMix64(seed: 7)
        var lines: [[UInt8]] = []
        for i in 0..<400 {
            let t = Double(Int.random(in: -400...1500, using: &rng)) / 10
            lines.append(bytes("temp=\(t),hum=\(i % 100),state=\(i % 3 == 0 ? "open" : "closed"),ok=\(i % 2 == 0)"))
        }
        Self.check(format: .kv(pairSeparator: UInt8(ascii: ","), assign: UInt8(ascii: "="), timeKey: nil), validLines: lines, seed: 11)
    }

    @Test func csvLinesSurviveNoise() {
        var lines: [[UInt8]] = [bytes("time,temp,\"label, quoted\"")]
        for i in 0..<300 { lines.append(bytes("\(1_764_169_999_000 + i * 1000),\(Double(i) / 4),\"x,\(i)\"")) }
        Self.check(format: .csv(columns: nil, delimiter: UInt8(ascii: ","), timeColumn: "time", deviceColumn: nil), validLines: lines, seed: 12)
    }

    @Test func nmeaLogSurvivesNoise() throws {
        let dir = nmeaDataDirectory()
        try #require(isDirectory(dir), "NMEA test data folder missing: \(dir) (expected Tests/Fixtures/nmea)")
        let data = try #require(readFileBytes(dir + "/ublox-neo-m9n-nmea.log"))
        let lines = data.split(separator: 0x0A).map(Array.init).filter { $0.first == UInt8(ascii: "$") }
        #expect(lines.count > 1000)
        Self.check(format: .nmea(requireChecksum: true), validLines: lines, seed: 13)
    }

    @Test func nmeaNoiseGluedBeforeASentenceIsSkipped() {
        var rng = SplitMix64(seed: 14)
        var decoder = FrameDecoder(format: .nmea(requireChecksum: true), device: "dev")
        let sentence = bytes("$GNGGA,223745.00,3806.62964,N,12237.61382,W,2,12,0.54,83.1,M,-29.5,M,,0000*44")
        for _ in 0..<200 {
            let noise = Self.garbage(&rng, count: Int.random(in: 1...100, using: &rng), excluding: [0x24, 0x21])
            var out: [Reading] = []
            do throws(FrameError) {
                try decoder.decode(noise + sentence, receivedAt: 1_000, into: &out)
            } catch {
                Issue.record("\(error)")
            }
            #expect(out.count == 6)
        }
    }
}
