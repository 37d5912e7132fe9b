import BrumeCore
import BrumeTestKit
import Foundation
import Logging
import Testing
@testable import BrumeSerial

/// A simulated device (firmware-sim serial, a real process on a pty) read by an in-process SerialSource.
func device(_ dir: String, _ args: [String], name: String = "device") throws -> (Child, String) {
    let link = "\(dir)/tty-\(name)"
    let child = try Child(TestKit.product("firmware-sim"), ["serial", "--link", link] + args, dir: dir, name: name)
    guard TestKit.waitUntil(timeout: 10, { FileManager.default.fileExists(atPath: link) }) else { throw TestError("no pty: \(child.stderr)") }
    return (child, link)
}

func source(_ link: String, format: SerialFormat, poll: SerialPoll? = nil, sink: CollectingSink, name: String = "dev") -> SerialSource {
    SerialSource(options: SerialSourceOptions(name: name, port: .path(link), settings: SerialSettings(baud: 115200), format: format, device: name, poll: poll),
                 sink: sink, logger: Logger(label: "test"))
}

struct SimStats: Decodable { var lines: Int; var last_seq: Int; var garbage: Int; var truncated: Int; var bad_checksum: Int; var dropped: Int; var unplugs: Int }
func simStats(_ c: Child) throws -> SimStats {
    guard let line = c.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else { throw TestError("no stats: \(c.stdout)") }
    return try JSONDecoder().decode(SimStats.self, from: Data(line.utf8))
}

let kv = SerialFormat.kv(pairSeparator: UInt8(ascii: ","), assign: UInt8(ascii: "="), timeKey: nil)

@Suite(.serialized) struct SerialSourceTests {
    @Test func garbageAroundValidFramesLosesNoValidFrame() throws {
        let dir = TestKit.tempDir()
        let (dev, link) = try device(dir, ["--rate", "400", "--count", "1000", "--garbage-every", "7", "--truncate-every", "50", "--delay", "0.5"])
        let sink = CollectingSink()
        let src = source(link, format: kv, sink: sink)
        src.start()
        defer { src.stop() }
        #expect(dev.wait(timeout: 30) == 0)
        let stats = try simStats(dev)
        #expect(TestKit.waitUntil(timeout: 5) { sink.values(metric: "seq").count == stats.lines })
        // Every valid line arrived, in order; truncated lines are the only gaps.
        let seqs = sink.values(metric: "seq").map { Int($0) }
        #expect(seqs == seqs.sorted())
        #expect(Set(seqs).count == stats.lines)
        #expect(seqs.allSatisfy { $0 % 50 != 0 }, "truncated lines must not produce readings")
        // Counters match what was injected: garbage and truncated lines are unparsable (or too long).
        let bad = src.stats.errors["unparsable"] + src.stats.errors["too_long"] + src.stats.errors["empty"]
        #expect(bad == Int64(stats.garbage + stats.truncated))
    }

    @Test func nmeaReplayOfARealReceiver() throws {
        let dir = TestKit.tempDir()
        let log = nmeaDataDirectory() + "/ublox-neo-m9n-nmea.log"
        #expect(FileManager.default.fileExists(atPath: log), "missing NMEA log at \(log)")
        let (dev, link) = try device(dir, ["--format", "nmea", "--replay", log, "--rate", "500", "--count", "1397", "--bad-checksum-every", "10", "--delay", "0.5"])
        let sink = CollectingSink()
        let src = source(link, format: .nmea(requireChecksum: true), sink: sink, name: "gps")
        src.start()
        defer { src.stop() }
        #expect(dev.wait(timeout: 30) == 0)
        let stats = try simStats(dev)
        #expect(TestKit.waitUntil(timeout: 5) { src.stats.messages.current >= 1397 })
        #expect(src.stats.errors["bad_checksum"] == Int64(stats.bad_checksum))
        // The first GNRMC/GNGGA of the log: 3806.62964,N 12237.61382,W → 38.110494, -122.626897.
        let lat = sink.values(metric: "latitude")
        let lon = sink.values(metric: "longitude")
        #expect(!lat.isEmpty)
        #expect(lat.allSatisfy { abs($0 - 38.1105) < 0.001 })
        #expect(lon.allSatisfy { abs($0 - -122.6269) < 0.001 })
        #expect(sink.values(metric: "satellites").allSatisfy { $0 >= 0 && $0 <= 64 })
    }

    @Test func replugIsVisibleAndReadingsResume() throws {
        let dir = TestKit.tempDir()
        let (dev, link) = try device(dir, ["--rate", "100", "--count", "400", "--unplug-after", "150", "--replug-after", "1.5", "--delay", "0.5"])
        let sink = CollectingSink()
        let src = source(link, format: kv, sink: sink)
        src.start()
        defer { src.stop() }
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .connected })
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .disconnected }, "an unplug shows as disconnected")
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .connected }, "the source comes back when the device does")
        #expect(dev.wait(timeout: 30) == 0)
        let stats = try simStats(dev)
        #expect(stats.dropped == 0, "lines written while nobody read the port are lost, as on a wire: the gateway must reopen quickly")
        #expect(TestKit.waitUntil(timeout: 5) { sink.values(metric: "seq").count == 400 }, "got \(sink.values(metric: "seq").count)")
        #expect(src.disconnects.current >= 1)
        #expect(src.opens.current >= 2)
    }

    @Test func pollsADeviceThatOnlyAnswersQueries() throws {
        let dir = TestKit.tempDir()
        let (dev, link) = try device(dir, ["--respond-to", "READ?", "--count", "5", "--linger", "5"])
        let sink = CollectingSink()
        let poll = SerialPoll(request: Array("READ?\r\n".utf8), everyMillis: 200, timeoutMillis: 100, retries: 1)
        let src = source(link, format: kv, poll: poll, sink: sink)
        src.start()
        defer { src.stop() }
        #expect(TestKit.waitUntil(timeout: 10) { sink.values(metric: "seq").count == 5 })
        // The device stays plugged in but stops answering: polls time out, counted (and retried once each).
        #expect(TestKit.waitUntil(timeout: 4) { src.stats.errors["poll_timeout"] >= 2 })
        #expect(src.state == .connected)
        dev.terminate()
    }

    @Test func requestWaitsForTheDevicesReply() async throws {
        let dir = TestKit.tempDir()
        let (dev, link) = try device(dir, ["--rate", "50", "--count", "0", "--actuate", "VALVE", "--actuator-log", "\(dir)/valve.log"])
        let sink = CollectingSink()
        let src = source(link, format: kv, sink: sink)
        src.start()
        defer { src.stop(); dev.terminate() }
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .connected })
        let ok = await src.request(Array("VALVE close\r\n".utf8), expect: "OK close", timeout: .seconds(2))
        #expect(ok == .success("OK close"))
        // A device that does not answer what is expected: a timeout, not a hang.
        let silent = await src.request(Array("PUMP on\r\n".utf8), expect: "OK on", timeout: .milliseconds(300))
        #expect(silent == .failure(.timeout))
        #expect(((try? String(contentsOfFile: "\(dir)/valve.log", encoding: .utf8)) ?? "") == "close\n")
        // The reply line was not taken for a reading; data lines kept flowing.
        #expect(src.stats.errors["unparsable"] == 0)
        #expect(!sink.values(metric: "seq").isEmpty)
    }

    @Test func writesReachTheDevice() throws {
        let dir = TestKit.tempDir()
        let (dev, link) = try device(dir, ["--respond-to", "VALVE close", "--count", "1"])
        let sink = CollectingSink()
        let src = source(link, format: kv, sink: sink)
        src.start()
        defer { src.stop() }
        #expect(TestKit.waitUntil(timeout: 10) { src.state == .connected })
        try src.write(Array("VALVE close\r\n".utf8))
        #expect(dev.wait(timeout: 10) == 0, "the device saw the command")
        #expect(TestKit.waitUntil(timeout: 5) { sink.values(metric: "seq").count == 1 })
    }
}
