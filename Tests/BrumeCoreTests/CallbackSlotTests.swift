import Synchronization
import Testing
@testable import BrumeCore

@Suite struct CallbackSlotTests {
    /// Reading a callback must not wrap it again: a closure kept in a generic
    /// container (`Locked<(() -> Void)?>`) grew by two reabstraction thunks per read, and the
    /// gateway's publish-latency observer overflowed a thread's stack after minutes at 10,000
    /// readings/s (found by the 10-minute soak: stack memory growing, then a crash with
    /// `ulimit -s 100`). Measured here as the stack the call uses after 2,000 calls (128 KB with a `Locked` closure:
    /// a clean failure; 200,000 overflowed the test thread).
    @Test func aCallbackCalledManyTimesKeepsItsStackDepth() {
        let slot = CallbackSlot<Int>()
        let deepest = Atomic<Int>(0)
        let top = Atomic<Int>(0)
        slot.set { _ in
            var marker: UInt8 = 0
            let here = withUnsafeMutablePointer(to: &marker) { Int(bitPattern: $0) }
            let depth = top.load(ordering: .relaxed) - here
            if depth > deepest.load(ordering: .relaxed) { deepest.store(depth, ordering: .relaxed) }
        }
        var base: UInt8 = 0
        top.store(withUnsafeMutablePointer(to: &base) { Int(bitPattern: $0) }, ordering: .relaxed)
        for i in 0..<2_000 { slot(i) }
        #expect(deepest.load(ordering: .relaxed) < 16 * 1024, "the callback ran \(deepest.load(ordering: .relaxed)) bytes below its caller")
        slot.set(nil)
        #expect(!slot.isSet)
        slot(1) // no callback: nothing happens
    }
}
