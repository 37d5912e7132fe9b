import BrumeCore
import Synchronization

/// A pipeline stand-in that keeps every reading (tests of sources).
public final class CollectingSink: ReadingSink {
    let items = Mutex<[Reading]>([])
    let count = Atomic<UInt64>(0)
    let redeliveries = Mutex<[Redelivery]>([])
    public init() {}
    public func accept(_ readings: [Reading], from source: String, redelivery: Redelivery) -> UInt64 {
        items.withLock { $0.append(contentsOf: readings) }
        redeliveries.withLock { $0.append(contentsOf: repeatElement(redelivery, count: readings.count)) }
        return count.add(UInt64(readings.count), ordering: .relaxed).newValue
    }
    public func waitDurable(_ ticket: UInt64, timeout: Duration) -> Bool { true }
    public var all: [Reading] { items.withLock { $0 } }
    /// What the source said of each reading's redelivery (in `all`'s order).
    public var redeliveryOfAll: [Redelivery] { redeliveries.withLock { $0 } }
    public func values(metric: String) -> [Double] {
        all.compactMap { r in
            guard r.metric == metric, case .number(let d) = r.value else { return nil }
            return d
        }
    }
}
