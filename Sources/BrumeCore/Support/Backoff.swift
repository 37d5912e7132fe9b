/// Jittered exponential backoff ("full jitter" on the upper half): the n-th
/// delay is uniformly drawn from [d/2, d] where d = min(max, initial * 2^n).
///
/// A pure value type: tests feed it a seeded generator and read the delays.
/// Half-jitter keeps a fleet of gateways from reconnecting in one storm after a
/// broker restart, while still guaranteeing the delay grows.
public struct Backoff: Sendable {
    public let initial: Duration
    public let maximum: Duration
    public private(set) var attempt: Int = 0

    public init(initial: Duration = .milliseconds(250), maximum: Duration = .seconds(30)) {
        precondition(initial > .zero && maximum >= initial)
        self.initial = initial
        self.maximum = maximum
    }

    /// The ceiling of the next delay, before jitter.
    public var ceiling: Duration {
        var d = initial
        var n = 0
        while n < attempt && d < maximum {
            d = d * 2
            n += 1
        }
        return min(d, maximum)
    }

    public mutating func next<G: RandomNumberGenerator>(using rng: inout G) -> Duration {
        let c = ceiling
        attempt += 1
        let ns = c.components.seconds * 1_000_000_000 + c.components.attoseconds / 1_000_000_000
        let low = ns / 2
        let pick = low + Int64.random(in: 0...max(0, ns - low), using: &rng)
        return .nanoseconds(pick)
    }

    public mutating func next() -> Duration {
        var g = SystemRandomNumberGenerator()
        return next(using: &g)
    }

    public mutating func reset() { attempt = 0 }
}
