import BrumeCore
import BrumeStore
import BrumeTestKit
import Logging
import Testing
@testable import BrumeRuntime

@Suite struct PipelineTests {
    func r(_ i: Int) -> Reading { Reading(device: "d", metric: "seq", time: 1_764_169_999_000 + Int64(i), value: .number(Double(i))) }

    @Test func brokerRedeliveriesAreDroppedDeviceRepeatsAreKept() throws {
        let dir = TestKit.tempDir()
        let outbox = try Outbox(options: OutboxOptions(path: "\(dir)/outbox.db"), logger: Logger(label: "t"))
        let p = Pipeline(outbox: outbox, rules: nil, logger: Logger(label: "t"))
        p.accept([r(1), r(2)], from: "mqtt", redelivery: .possible)
        p.accept([r(2), r(3)], from: "mqtt", redelivery: .likely)      // 2 is a redelivery
        p.accept([r(3)], from: "serial")                                // a device repeating itself: kept
        outbox.flush()
        #expect(outbox.stats.committed == 4)
        #expect(p.duplicatesDropped.current == 1)
        // After a restart the fingerprints come from the outbox tail.
        let p2 = Pipeline(outbox: outbox, rules: nil, logger: Logger(label: "t"))
        p2.accept([r(1), r(4)], from: "mqtt", redelivery: .likely)
        outbox.flush()
        #expect(p2.duplicatesDropped.current == 1)
        #expect(outbox.stats.committed == 5)
    }
}
