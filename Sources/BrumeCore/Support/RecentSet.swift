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

    /// 64-bit FNV-1a over the reading's bytes, then a SplitMix64 finaliser: a fingerprint per
    /// QoS 1 reading, so cheaper than `Hasher` (which took ~2,000 instructions per reading,
    /// bench/callgrind.sh). Not keyed: a publisher able to forge a collision could at worst have
    /// its own reading taken for a redelivery within 10 s of a reconnect.
    public static func fingerprint(_ r: Reading) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        @inline(__always) func mix(_ b: UInt8) { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        @inline(__always) func mix64(_ v: UInt64) { for i in 0..<8 { mix(UInt8(truncatingIfNeeded: v >> (UInt64(i) * 8))) } }
        @inline(__always) func mix(_ s: String) {
            var s = s
            s.withUTF8 { for b in $0 { mix(b) } }
            mix(0xff) // not UTF-8: separates "ab"+"c" from "a"+"bc"
        }
        mix(r.device)
        mix(r.metric)
        mix64(UInt64(bitPattern: r.time))
        switch r.value {
        case .number(let d): mix(1); mix64(d.bitPattern)
        case .bool(let b): mix(b ? 2 : 3)
        case .string(let v): mix(4); mix(v)
        }
        var z = h &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int(bitPattern: UInt(z ^ (z >> 31)))
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
