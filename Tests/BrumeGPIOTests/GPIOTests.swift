import BrumeCore
import Foundation
import Logging
import Testing
@testable import BrumeGPIO

let ms: UInt64 = 1_000_000

@Suite struct GPIOLogicTests {
    /// A door contact that bounces for 20 ms when it opens: one reading, after the quiet period.
    @Test func aBouncingContactGivesOneReading() {
        var logic = GPIOLogic(states: [.init(line: 17, debounceNanos: 50 * ms)], counters: [])
        var level = false
        #expect(logic.settled(now: 0, level: { _ in level }).map(\.value) == [false], "the first look reports the level")
        // Bounces: high, low, high, low, high within 20 ms.
        for (i, t) in [1000, 1004, 1009, 1013, 1020].enumerated() {
            level = i % 2 == 0
            logic.edge(GPIOEdge(line: 17, rising: level, nanos: UInt64(t) * ms))
        }
        #expect(logic.settled(now: 1060 * ms, level: { _ in level }).isEmpty, "still settling: the last edge was 40 ms ago")
        #expect(logic.settled(now: 1071 * ms, level: { _ in level }).map(\.value) == [true])
        #expect(logic.settled(now: 2000 * ms, level: { _ in level }).isEmpty, "no change, no reading")
        // A glitch that comes back to the same level within the quiet period: nothing.
        logic.edge(GPIOEdge(line: 17, rising: false, nanos: 3000 * ms))
        logic.edge(GPIOEdge(line: 17, rising: true, nanos: 3002 * ms))
        #expect(logic.settled(now: 3100 * ms, level: { _ in level }).isEmpty)
    }

    /// A reed contact of a water meter: each pulse closes it with 3 ms of bounce. Only the
    /// counted edge, at least `debounce` after the last counted one, is a pulse.
    @Test func pulsesAreCountedOnceThroughTheBounce() {
        var logic = GPIOLogic(states: [], counters: [.init(line: 27, rising: false, debounceNanos: 5 * ms, pulses: 1_000)])
        var t: UInt64 = 10_000 * ms
        for _ in 0..<250 {
            // falling, rising, falling (bounce 1 ms and 2 ms later); the release 100 ms later
            // bounces too (rising, falling, rising): no falling edge of a bounce is a pulse.
            logic.edge(GPIOEdge(line: 27, rising: false, nanos: t))
            logic.edge(GPIOEdge(line: 27, rising: true, nanos: t + 1 * ms))
            logic.edge(GPIOEdge(line: 27, rising: false, nanos: t + 2 * ms))
            logic.edge(GPIOEdge(line: 27, rising: true, nanos: t + 100 * ms))
            logic.edge(GPIOEdge(line: 27, rising: false, nanos: t + 101 * ms))
            logic.edge(GPIOEdge(line: 27, rising: true, nanos: t + 102 * ms))
            t += 200 * ms
        }
        #expect(logic.counters[0].pulses == 1_250, "counting goes on from the saved 1,000")
        #expect(logic.counters[0].bounces == 500)
        // Another line's edges are not this counter's.
        logic.edge(GPIOEdge(line: 28, rising: false, nanos: t))
        #expect(logic.counters[0].pulses == 1_250)
    }
}

/// The simulated chip (the test seam below libgpiod) and the source on it: contacts, pulse
/// counters persisted so a total never goes back, outputs in their safe state at start and stop.
@Suite(.serialized) struct GPIOSourceTests {
    final class Capture: ReadingSink, @unchecked Sendable {
        let readings = Locked<[Reading]>([])
        func accept(_ r: [Reading], from source: String, redelivery: Redelivery) -> UInt64 { readings.withLock { $0 += r }; return 0 }
        func waitDurable(_ ticket: UInt64, timeout: Duration) -> Bool { true }
        func flushNow() {}
        func commitSoon() {}
        func values(_ metric: String) -> [Value] { readings.withLock { $0 }.filter { $0.metric == metric }.map(\.value) }
    }

    func waitUntil(_ seconds: Double, _ f: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end { if f() { return true }; usleep(20_000) }
        return f()
    }

    @Test func countsSurviveARestartAndTotalsNeverGoBack() throws {
        let dir = NSTemporaryDirectory() + "gpio-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let options = GPIOSource.Options(
            chip: "simulated:\(dir)",
            inputs: [.init(line: 17, device: "pump", metric: "door_open", mode: .state, debounceNanos: 30 * ms, bias: .pullUp, activeLow: true),
                     .init(line: 27, device: "pump", metric: "water_m3", mode: .counter(rising: false, scale: 0.001), debounceNanos: 2 * ms, bias: .pullUp, activeLow: false)],
            outputs: [.init(line: 22, safe: false, activeLow: false)],
            intervalMillis: 300, countsPath: "\(dir)/counts")
        func out22() -> String? { try? String(contentsOfFile: "\(dir)/out-22", encoding: .utf8) }
        func feed(_ lines: String) throws {
            let h = try #require(FileHandle(forWritingAtPath: "\(dir)/in"))
            h.write(lines.data(using: .utf8)!)
            try h.close()
        }
        var totals: [Double] = []
        for run in 0..<2 {
            let sink = Capture()
            let src = GPIOSource(name: "gpio", options: options, sink: sink, logger: Logger(label: "t"))
            src.start()
            #expect(waitUntil(5) { out22() == "0\n" }, "the output starts in its safe state")
            #expect(waitUntil(5) { sink.values("door_open") == [.bool(false)] }, "pull-up, active low: closed (\(sink.values("door_open")))")
            if run == 0 {
                #expect(src.drive(line: 22, true) == .success("line 22 set to 1"))
                #expect(out22() == "1\n")
                // Door opens (the line goes low) with bounce; 40 pulses on the meter.
                try feed("17 0\n17 1\n17 0\n")
                for _ in 0..<40 { let t = monotonicNanos(); try feed("27 0 \(t)\n27 1 \(t + 1 * ms)\n"); usleep(4_000) }
            } else {
                for _ in 0..<10 { let t = monotonicNanos(); try feed("27 0 \(t)\n27 1 \(t + 1 * ms)\n"); usleep(4_000) }
            }
            #expect(waitUntil(5) { (sink.values("water_m3").last.map { if case .number(let d) = $0 { d } else { 0 } } ?? 0) >= (run == 0 ? 0.04 : 0.05) - 1e-9 })
            if run == 0 { #expect(sink.values("door_open").contains(.bool(true)) && sink.values("door_open").filter { $0 == .bool(true) }.count >= 1) }
            totals += sink.values("water_m3").compactMap { if case .number(let d) = $0 { d } else { nil } }
            src.stop()
            #expect(out22() == "0\n", "stopping puts the output back in its safe state")
        }
        #expect(zip(totals, totals.dropFirst()).allSatisfy { $0.0 <= $0.1 + 1e-12 }, "a total never goes back across the restart: \(totals)")
        #expect(abs((totals.last ?? 0) - 0.05) < 1e-9, "40 + 10 pulses of 1 L: \(totals)")
        #expect((try? String(contentsOfFile: "\(dir)/counts", encoding: .utf8)) == "27 50\n")
    }
}
