/// Fingerprints of the most recent readings, to recognise a broker's
/// redelivery of a message whose readings were already committed (the crash
/// window between the outbox commit and the PUBACK reaching the broker).
/// Bounded: the oldest fingerprint goes when `capacity` is reached.
public struct RecentSet: Sendable {
    public let capacity: Int
    private var ring: [Int]
    private var next = 0
    private var members: [Int: Int] = [:] // fingerprint -> occurrences in the ring

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        ring = []
        ring.reserveCapacity(self.capacity)
        members.reserveCapacity(self.capacity)
    }

    public static func fingerprint(_ r: Reading) -> Int {
        var h = Hasher()
        h.combine(r.device)
        h.combine(r.metric)
        h.combine(r.time)
        h.combine(r.value)
        return h.finalize()
    }

    public func contains(_ r: Reading) -> Bool { members[RecentSet.fingerprint(r)] != nil }

    public mutating func insert(_ r: Reading) {
        let f = RecentSet.fingerprint(r)
        if ring.count < capacity {
            ring.append(f)
        } else {
            let old = ring[next]
            if let n = members[old] { if n <= 1 { members[old] = nil } else { members[old] = n - 1 } }
            ring[next] = f
            next = (next + 1) % capacity
        }
        members[f, default: 0] += 1
    }
}
