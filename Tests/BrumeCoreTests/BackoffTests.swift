import BrumeTestKit
import Testing
@testable import BrumeCore

@Suite struct BackoffTests {
    @Test func growsWithJitterUpToTheMaximum() {
        var b = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        var rng = SplitMix64(seed: 42)
        var ceilings: [Duration] = []
        for _ in 0..<8 {
            let c = b.ceiling
            let d = b.next(using: &rng)
            #expect(d >= c / 2 && d <= c)
            ceilings.append(c)
        }
        #expect(ceilings == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600), .seconds(2), .seconds(2), .seconds(2)])
        b.reset()
        #expect(b.ceiling == .milliseconds(100))
    }

    @Test func jitterSpreadsAFleet() {
        var rng = SplitMix64(seed: 7)
        var delays = Set<Duration>()
        for _ in 0..<50 {
            var b = Backoff(initial: .seconds(1), maximum: .seconds(30))
            delays.insert(b.next(using: &rng))
        }
        #expect(delays.count > 40)
    }

    @Test func rateLimiterAllowsBurstThenCountsSuppressed() {
        let clock = TestNanos()
        let l = LogRateLimiter(burst: 3, interval: .seconds(10), now: clock.now)
        #expect(l.admit() == 0)
        #expect(l.admit() == 0)
        #expect(l.admit() == 0)
        #expect(l.admit() == nil)
        #expect(l.admit() == nil)
        clock.advance(10_000_000_000)
        #expect(l.admit() == 2)
    }
}

import Synchronization
final class TestNanos: Sendable {
    let t = Atomic<UInt64>(1_000_000_000)
    func advance(_ n: UInt64) { t.wrappingAdd(n, ordering: .relaxed) }
    var now: @Sendable () -> UInt64 { { self.t.load(ordering: .relaxed) } }
}
