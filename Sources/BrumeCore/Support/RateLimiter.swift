import Synchronization

/// Decides whether a repeated event may be logged now. Every occurrence is
/// still counted by the caller (in a metric); only the log line is limited.
///
/// Allows `burst` lines, then one line per `interval`, and reports how many
/// were suppressed since the last line so the log says "(+41 suppressed)".
public final class LogRateLimiter: Sendable {
    private struct State {
        var tokens: Double
        var lastRefill: UInt64
        var suppressed: Int = 0
    }
    private let state: Mutex<State>
    private let burst: Double
    private let perNanos: Double
    private let now: @Sendable () -> UInt64

    public init(burst: Int = 5, interval: Duration = .seconds(10), now: @escaping @Sendable () -> UInt64 = monotonicNanos) {
        self.burst = Double(burst)
        let c = interval.components
        self.perNanos = Double(c.seconds) * 1e9 + Double(c.attoseconds) / 1e9
        self.now = now
        self.state = Mutex(State(tokens: Double(burst), lastRefill: now()))
    }

    /// Returns nil when this occurrence must not be logged, otherwise the number
    /// of occurrences suppressed since the previous logged one.
    public func admit() -> Int? {
        let t = now()
        return state.withLock { s in
            let elapsed = Double(t &- s.lastRefill)
            s.tokens = min(burst, s.tokens + elapsed / perNanos)
            s.lastRefill = t
            if s.tokens >= 1 {
                s.tokens -= 1
                let n = s.suppressed
                s.suppressed = 0
                return n
            }
            s.suppressed += 1
            return nil
        }
    }
}
