import Testing
@testable import BrumeCore

@Suite struct RecentSetTests {
    func r(_ i: Int, _ v: Double = 1) -> Reading { Reading(device: "d", metric: "m", time: Int64(i), value: .number(v)) }

    @Test func recognisesRecentReadingsAndForgetsTheOldest() {
        var s = RecentSet(capacity: 3)
        for i in 1...3 { s.insert(r(i)) }
        #expect(s.contains(r(2)))
        #expect(!s.contains(r(2, 2)), "same time, other value: not a duplicate")
        s.insert(r(4))
        #expect(!s.contains(r(1)), "the oldest was forgotten")
        #expect(s.contains(r(4)) && s.contains(r(3)))
        // A fingerprint inserted twice stays until both occurrences left the ring.
        s.insert(r(4))
        s.insert(r(5))
        #expect(s.contains(r(4)))
        s.insert(r(6))
        s.insert(r(7))
        #expect(!s.contains(r(4)))
    }
}
