import BrumeTestKit
import Testing
@testable import BrumeCore

@Suite struct TopicMatchTests {
    /// The level-by-level definition (what the byte matcher replaced: it allocated per message).
    func reference(_ filter: String, _ topic: String) -> Bool {
        let f = filter.split(separator: "/", omittingEmptySubsequences: false)
        let t = topic.split(separator: "/", omittingEmptySubsequences: false)
        var i = 0
        while i < f.count {
            if f[i] == "#" { return true }
            if i >= t.count { return false }
            if f[i] != "+" && f[i] != t[i] { return false }
            i += 1
        }
        return i == t.count
    }

    @Test func examples() {
        #expect(topicMatches(filter: "sensors/+/+", topic: "sensors/boiler/temperature"))
        #expect(!topicMatches(filter: "sensors/+/+", topic: "sensors/boiler"))
        #expect(!topicMatches(filter: "sensors/+/+", topic: "sensors/boiler/t/x"))
        #expect(topicMatches(filter: "a/#", topic: "a"), "# also matches the parent level")
        #expect(topicMatches(filter: "a/#", topic: "a/b/c"))
        #expect(!topicMatches(filter: "a/#", topic: "ab"))
        #expect(topicMatches(filter: "a/+", topic: "a/"), "an empty level is a level")
        #expect(topicMatches(filter: "a/b/", topic: "a/b/"))
        #expect(!topicMatches(filter: "a/b/", topic: "a/b"))
        #expect(!topicMatches(filter: "a/b", topic: "a/bc"))
        #expect(topicMatches(filter: "+/b", topic: "/b"))
        #expect(topicMatches(filter: "#", topic: ""))
        #expect(topicMatches(filter: "", topic: "") && !topicMatches(filter: "", topic: "a"))
        #expect(topicMatches(filter: "brume/gw-é/+", topic: "brume/gw-é/cmd"))
    }

    /// 200,000 random filter/topic pairs over a small alphabet (so that they often match),
    /// against the reference.
    @Test func agreesWithTheLevelDefinition() {
        var rng = SplitMix64(seed: 19)
        let filterParts = ["a", "b", "ab", "", "+", "#", "é"]
        let topicParts = ["a", "b", "ab", "", "é"]
        func make(_ parts: [String], _ rng: inout SplitMix64) -> String {
            (0..<Int.random(in: 0...4, using: &rng)).map { _ in parts.randomElement(using: &rng)! }.joined(separator: "/")
        }
        var matched = 0
        for _ in 0..<200_000 {
            let f = make(filterParts, &rng), t = make(topicParts, &rng)
            let want = reference(f, t)
            if want { matched += 1 }
            guard topicMatches(filter: f, topic: t) == want else {
                Issue.record("filter \"\(f)\" topic \"\(t)\": expected \(want)")
                return
            }
        }
        #expect(matched > 10_000, "the generator exercises matches too (\(matched))")
    }
}
