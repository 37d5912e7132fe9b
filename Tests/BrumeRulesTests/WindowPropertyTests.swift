import BrumeTestKit
import BrumeCore
@testable import BrumeRules
import Testing

// Every aggregate and every window kind against a naive recomputation over seeded random
// streams: window boundaries (times on and next to edges), hopping overlap, session gaps,
// count windows, out-of-order data within and beyond the late tolerance.

/// Naive aggregates, written independently of AggregateMath.
func naiveAggregate(_ a: Aggregate, _ xs: [Double]) -> Double {
    switch a {
    case .avg: return xs.reduce(0, +) / Double(xs.count)
    case .min: return xs.min()!
    case .max: return xs.max()!
    case .sum: return xs.reduce(0, +)
    case .count: return Double(xs.count)
    case .first: return xs.first!
    case .last: return xs.last!
    case .stddev:
        let m = xs.reduce(0, +) / Double(xs.count)
        return (xs.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(xs.count)).squareRoot()
    case .p50, .p90, .p99:
        let p = a == .p50 ? 50.0 : a == .p90 ? 90.0 : 99.0
        let s = xs.sorted()
        let pos = p / 100 * Double(s.count - 1)
        let i = Int(pos)
        if i + 1 >= s.count { return s[s.count - 1] }
        return s[i] * (1 - (pos - Double(i))) + s[i + 1] * (pos - Double(i))
    }
}

struct Emitted: CustomStringConvertible {
    var time: Int64
    var metric: String
    var value: Double
    var description: String { "\(metric)@\(time)=\(value)" }
}

func expectedReadings(_ windows: [(end: Int64, values: [Double])], metric: String) -> [Emitted] {
    var out: [Emitted] = []
    for w in windows {
        for a in Aggregate.allCases {
            out.append(Emitted(time: w.end, metric: "\(metric).\(a.rawValue)", value: naiveAggregate(a, w.values)))
        }
    }
    return out
}

func check(_ got: [Reading], _ want: [Emitted], step: Int, seed: UInt64, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    let g = got.map { Emitted(time: $0.time, metric: $0.metric, value: $0.value.number ?? .nan) }
    let ok = g.count == want.count && zip(g, want).allSatisfy { $0.time == $1.time && $0.metric == $1.metric && approx($0.value, $1.value, 1e-9) }
    if !ok {
        Issue.record("seed \(seed) step \(step):\n got  \(g)\n want \(want)", sourceLocation: sourceLocation)
    }
    return ok
}

/// A random stream: mostly increasing times with jitter (some out of order), values with ties,
/// times placed on window edges often.
func randomStream(_ rng: inout SplitMix64, count: Int, edge: Int64, jitter: Int64) -> [(Int64, Double)] {
    var t: Int64 = 1_000_000
    var out: [(Int64, Double)] = []
    for _ in 0..<count {
        t += Int64.random(in: 0...(edge / 2), using: &rng)
        var ti = t
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: ti = (t / edge) * edge                     // exactly on an edge
        case 1: ti = (t / edge) * edge - 1                  // just before one
        case 2, 3: ti = t - Int64.random(in: 0...jitter, using: &rng)   // out of order
        default: break
        }
        let v = Double(Int.random(in: -2000...2000, using: &rng)) / 20
        out.append((ti, v))
    }
    return out
}

@Suite("Window aggregates against a naive model")
struct WindowPropertyTests {
    /// Tumbling and hopping windows, event time, late tolerance.
    @Test(arguments: [
        (size: Int64(1000), hop: Int64(1000), tol: Int64(0)),
        (size: 1000, hop: 1000, tol: 700),
        (size: 1000, hop: 250, tol: 0),
        (size: 1000, hop: 300, tol: 450),
        (size: 600, hop: 600, tol: 2000),
        (size: 5000, hop: 1000, tol: 100),
    ])
    func timeWindows(size: Int64, hop: Int64, tol: Int64) throws {
        var totalLate = 0, totalWindows = 0, totalDuringProcess = 0
        defer {
            // The random streams do exercise lateness and closing during `process`.
            #expect(totalLate > 0)
            #expect(totalWindows > 100)
            #expect(totalDuringProcess > 50)
        }
        for seed in UInt64(1)...25 {
            var rng = SplitMix64(seed: seed &* 7919 &+ UInt64(size + hop + tol))
            let stream = randomStream(&rng, count: 120, edge: hop, jitter: size + tol + 300)
            let clock = ManualClock(0)
            let kind: WindowSpec.Kind = size == hop ? .tumbling(sizeMillis: size) : .hopping(sizeMillis: size, hopMillis: hop)
            let e = try engine(rules: [RuleSpec(name: "w", match: ["s/x"], window: WindowSpec(kind), emit: Aggregate.allCases, lateToleranceMillis: tol)], clock: clock)

            // Naive model.
            var w = Int64.min
            var open: [Int64: [(t: Int64, k: Int, v: Double)]] = [:]
            var late = 0
            func close(_ all: Bool) -> [(end: Int64, values: [Double])] {
                let done = open.keys.filter { all || $0 + size + tol <= w }.sorted()
                var out: [(end: Int64, values: [Double])] = []
                for s in done {
                    let vals = open[s]!.sorted { ($0.t, $0.k) < ($1.t, $1.k) }.map(\.v)
                    out.append((s + size, vals))
                    open[s] = nil
                }
                return out
            }
            for (k, (t, v)) in stream.enumerated() {
                let wb = max(w, clock.now)
                var starts: [Int64] = []
                var s = (t / hop) * hop
                while s + size > t { starts.append(s); s -= hop }
                let accepting = starts.filter { $0 + size + tol > wb }
                if accepting.isEmpty { late += 1 } else {
                    for s in accepting { open[s, default: []].append((t, k, v)) }
                    w = max(w, t)
                }
                let closed = close(false)
                totalDuringProcess += closed.count
                totalWindows += closed.count
                let want = expectedReadings(closed, metric: "x")
                let got = e.process([r("s", "x", t, v)]).readings
                if !check(got, want, step: k, seed: seed) { return }
            }
            let rest = close(true)
            totalWindows += rest.count
            totalLate += late
            let want = expectedReadings(rest, metric: "x")
            if !check(e.flush().readings, want, step: -1, seed: seed) { return }
            let st = try #require(e.stats()["w"])
            #expect(st.late == Int64(late))
            #expect(st.in == Int64(stream.count))
        }
    }

    @Test(arguments: [(size: Int64(1000), tol: Int64(0)), (size: 1000, tol: 500), (size: 333, tol: 1500)])
    func slidingWindows(size: Int64, tol: Int64) throws {
        var totalLate = 0
        defer { #expect(totalLate > 0) }
        for seed in UInt64(1)...25 {
            var rng = SplitMix64(seed: seed &+ 1000 &+ UInt64(size))
            let stream = randomStream(&rng, count: 150, edge: size, jitter: tol + 400)
            let clock = ManualClock(0)
            let e = try engine(rules: [RuleSpec(name: "w", match: ["s/x"], window: WindowSpec(.sliding(sizeMillis: size)), emit: Aggregate.allCases, lateToleranceMillis: tol)], clock: clock)
            var w = Int64.min
            var accepted: [(t: Int64, k: Int, v: Double)] = []
            var late = 0
            for (k, (t, v)) in stream.enumerated() {
                let wb = max(w, clock.now)
                var want: [Emitted] = []
                if t < wb - tol { late += 1 } else {
                    accepted.append((t, k, v))
                    w = max(w, t)
                    let vals = accepted.filter { $0.t > t - size && $0.t <= t }.sorted { ($0.t, $0.k) < ($1.t, $1.k) }.map(\.v)
                    want = expectedReadings([(t, vals)], metric: "x")
                }
                if !check(e.process([r("s", "x", t, v)]).readings, want, step: k, seed: seed) { return }
            }
            #expect(e.flush().readings.isEmpty)
            #expect(e.stats()["w"]?.late == Int64(late))
            totalLate += late
        }
    }

    @Test(arguments: [(gap: Int64(500), tol: Int64(0), jitter: Int64(0)), (gap: 800, tol: 300, jitter: 300), (gap: 250, tol: 1000, jitter: 900)])
    func sessionWindows(gap: Int64, tol: Int64, jitter: Int64) throws {
        for seed in UInt64(1)...25 {
            var rng = SplitMix64(seed: seed &+ 5000 &+ UInt64(gap))
            // Gaps around the session gap, some exactly equal to it.
            var t: Int64 = 1_000_000
            var stream: [(Int64, Double)] = []
            for _ in 0..<100 {
                let step: Int64 = switch Int.random(in: 0..<6, using: &rng) {
                case 0: gap
                case 1: gap - 1
                case 2: gap * 3
                default: Int64.random(in: 0...(gap / 2), using: &rng)
                }
                t += step
                let ti = jitter > 0 ? t - Int64.random(in: 0...jitter, using: &rng) : t
                stream.append((ti, Double(Int.random(in: -500...500, using: &rng)) / 10))
            }
            let clock = ManualClock(0)
            let e = try engine(rules: [RuleSpec(name: "w", match: ["s/x"], window: WindowSpec(.session(gapMillis: gap)), emit: Aggregate.allCases, lateToleranceMillis: tol)], clock: clock)
            var got: [Reading] = []
            for (tt, v) in stream { got += e.process([r("s", "x", tt, v)]).readings }
            got += e.flush().readings
            #expect(e.stats()["w"]?.late == 0)
            // Offline sessions over the time-sorted stream (tolerance ≥ jitter: nothing closes early).
            let sorted = stream.enumerated().sorted { ($0.element.0, $0.offset) < ($1.element.0, $1.offset) }.map(\.element)
            var sessions: [(end: Int64, values: [Double])] = []
            var cur: [(Int64, Double)] = []
            for s in sorted {
                if let last = cur.last, s.0 - last.0 >= gap {
                    sessions.append((last.0 + gap, cur.map(\.1)))
                    cur = []
                }
                cur.append(s)
            }
            if let last = cur.last { sessions.append((last.0 + gap, cur.map(\.1))) }
            let want = expectedReadings(sessions, metric: "x")
            // Sessions close in end order; compare sorted by (time, metric) to be independent of batching.
            let gotSorted = got.sorted { ($0.time, $0.metric) < ($1.time, $1.metric) }
            let wantSorted = want.sorted { ($0.time, $0.metric) < ($1.time, $1.metric) }
            if !check(gotSorted, wantSorted, step: 0, seed: seed) { return }
        }
    }

    @Test(arguments: [1, 2, 3, 7, 10])
    func countWindows(n: Int) throws {
        for seed in UInt64(1)...25 {
            var rng = SplitMix64(seed: seed &+ UInt64(n) &* 31)
            let stream = randomStream(&rng, count: Int.random(in: 0...60, using: &rng), edge: 100, jitter: 1000)
            let clock = ManualClock(0)
            let emit = n == 1 ? Aggregate.allCases.filter { ![.p50, .p90, .p99, .stddev].contains($0) } : Aggregate.allCases
            let e = try engine(rules: [RuleSpec(name: "w", match: ["s/x"], window: WindowSpec(.count(n: n)), emit: emit)], clock: clock)
            var buf: [(Int64, Double)] = []
            for (k, (t, v)) in stream.enumerated() {
                buf.append((t, v))
                var want: [Emitted] = []
                if buf.count == n {
                    want = expectedReadings([(t, buf.map(\.1))], metric: "x").filter { m in emit.contains { m.metric == "x.\($0.rawValue)" } }
                    buf = []
                }
                if !check(e.process([r("s", "x", t, v)]).readings, want, step: k, seed: seed) { return }
            }
            let want = buf.isEmpty ? [] : expectedReadings([(buf.last!.0, buf.map(\.1))], metric: "x").filter { m in emit.contains { m.metric == "x.\($0.rawValue)" } }
            _ = check(e.flush().readings, want, step: -1, seed: seed)
        }
    }

    /// The aggregate math on its own, over many random sizes.
    @Test func aggregateMath() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<500 {
            let n = Int.random(in: 1...50, using: &rng)
            let xs = (0..<n).map { _ in Double.random(in: -1e3...1e3, using: &rng).rounded() / 8 }
            let got = AggregateMath.compute(Aggregate.allCases, xs)
            for (a, g) in zip(Aggregate.allCases, got) {
                #expect(approx(g, naiveAggregate(a, xs), 1e-9), "\(a) of \(xs)")
            }
        }
    }

    /// Windows close on tick from the clock when the stream goes quiet, several streams apart.
    @Test func windowsCloseOnTickPerStream() throws {
        let clock = ManualClock(10_000)
        let e = try engine(rules: [RuleSpec(match: ["*/temperature"], window: WindowSpec(.tumbling(sizeMillis: 1000)), emit: [.avg, .count], lateToleranceMillis: 200)], clock: clock)
        #expect(e.process([r("a", "temperature", 10_100, 1), r("b", "temperature", 10_200, 3), r("a", "temperature", 10_900, 2)]).readings.isEmpty)
        // The clock closes a quiet stream's window once end + tolerance + the 2 s clock grace passed.
        clock.set(13_199)
        #expect(e.tick().readings.isEmpty)
        clock.set(13_200)
        let out = e.tick().readings
        #expect(out == [
            Reading(device: "a", metric: "temperature.avg", time: 11_000, value: .number(1.5)),
            Reading(device: "a", metric: "temperature.count", time: 11_000, value: .number(2)),
            Reading(device: "b", metric: "temperature.avg", time: 11_000, value: .number(3)),
            Reading(device: "b", metric: "temperature.count", time: 11_000, value: .number(1)),
        ])
        // Within the window but after close + tolerance: late.
        #expect(e.process([r("a", "temperature", 10_999, 9)]).readings.isEmpty)
        #expect(e.stats()["rule#1"]?.late == 1)
        #expect(e.flush().readings.isEmpty)
    }

    @Test func keepRawPassesReadingsAndAggregatesFollow() throws {
        let clock = ManualClock(0)
        let e = try engine(rules: [
            RuleSpec(match: ["s/x"], window: WindowSpec(.count(n: 2)), emit: [.sum], keepRaw: true),
            RuleSpec(match: ["s/x.sum"], scale: 10),
        ], clock: clock)
        let out = e.process([r("s", "x", 1, 1), r("s", "x", 2, 2)]).readings
        #expect(out == [r("s", "x", 1, 1), r("s", "x.sum", 2, 30), r("s", "x", 2, 2)])
    }
}
