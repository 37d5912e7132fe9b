import Testing
import BrumeCore
import BrumeSerial

/// Throughput figures, printed (not asserted). Build with `-c release` for meaningful numbers.
@Suite(.serialized) struct ThroughputTests {
    /// Runs `body` over `frames` round-robin for about `seconds`; returns frames per second.
    static func measure(_ frames: [[UInt8]], seconds: Double = 0.5, _ body: (UnsafeRawBufferPointer) -> Void) -> Double {
        let start = monotonicNanos()
        let budget = UInt64(seconds * 1e9)
        var count = 0
        while monotonicNanos() - start < budget {
            for f in frames { f.withUnsafeBytes(body) }
            count += frames.count
        }
        return Double(count) / (Double(monotonicNanos() - start) / 1e9)
    }

    static func report(_ label: String, _ perSecond: Double, _ unit: String = "frames/s") {
        print("throughput \(label): \(Int(perSecond)) \(unit)")
    }

    @Test func nmeaDecoding() throws {
        let dir = nmeaDataDirectory()
        try #require(isDirectory(dir), "NMEA test data folder missing: \(dir)")
        let data = try #require(readFileBytes(dir + "/ublox-neo-m9n-nmea.log"))
        let lines = data.split(separator: 0x0A).map(Array.init).filter { $0.first == UInt8(ascii: "$") }
        var decoder = FrameDecoder(format: .nmea(requireChecksum: true), device: "gps")
        var out: [Reading] = []
        out.reserveCapacity(16)
        var readings = 0
        let rate = Self.measure(lines) { frame in
            try? decoder.decode(frame, receivedAt: 1_594_507_065_000, into: &out)
            readings += out.count
            out.removeAll(keepingCapacity: true)
        }
        Self.report("NMEA decode (u-blox log, incl. unsupported GST/GBS)", rate)
        #expect(readings > 0)
    }

    @Test func kvDecoding() {
        let lines = (0..<100).map { bytes("temp=\(20 + Double($0) / 10),hum=\(40 + $0 % 7),pressure=1013.25,state=open") }
        var decoder = FrameDecoder(format: .kv(pairSeparator: UInt8(ascii: ","), assign: UInt8(ascii: "="), timeKey: nil), device: "boiler")
        var out: [Reading] = []
        out.reserveCapacity(16)
        var readings = 0
        let rate = Self.measure(lines) { frame in
            try? decoder.decode(frame, receivedAt: 1_764_169_999_000, into: &out)
            readings += out.count
            out.removeAll(keepingCapacity: true)
        }
        Self.report("kv decode (4 pairs per frame)", rate)
        #expect(readings > 0)
    }

    @Test func framing() throws {
        let dir = nmeaDataDirectory()
        try #require(isDirectory(dir), "NMEA test data folder missing: \(dir)")
        let data = try #require(readFileBytes(dir + "/nmea-rtk.log"))
        let chunks = stride(from: 0, to: data.count, by: 64).map { Array(data[$0..<min(data.count, $0 + 64)]) }
        var framer = LineFramer()
        var frames = 0
        let rate = Self.measure(chunks) { chunk in
            framer.push(chunk, onFrame: { _ in frames += 1 }, onDrop: { _ in })
        }
        Self.report("line framing (64-byte chunks, CRLF)", rate * 64 / 1e6, "MB/s")
        #expect(frames > 0)
    }
}
