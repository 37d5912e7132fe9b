import BrumeCore
import Synchronization

public enum UplinkState: String, Sendable { case connecting, online, offline, stopped }

/// Why an uplink holds its backlog: the endpoint or the configuration is wrong (a redirect,
/// 401/403/404, an MQTT ACL denying the topic) or it asked to wait. Shown in status, metrics
/// and logs until a batch is accepted again.
public struct UplinkFault: Sendable, Hashable {
    /// Stable, for metrics: "http_301", "not_authorized", "packet_too_large", ...
    public var reason: String
    /// For people: what happened and what to do.
    public var detail: String
    /// A configuration problem (true) or a transient one (false).
    public var misconfigured: Bool
    /// When it was first seen in a row (ms since the epoch).
    public var sinceMillis: Int64
}

public final class UplinkStats: Sendable {
    public let batchesSent = Counter()
    public let batchesAcked = Counter()
    public let readingsAcked = Counter()
    public let bytesSent = Counter()
    /// Batches sent again after a reconnect, a retry or a restart (same id, same bytes).
    public let resends = Counter()
    public let publishErrors = ReasonCounters()
    /// Publish → acknowledgement latency of the last accepted batch, in microseconds.
    public let lastAckLatencyMicros = Gauge<Int64>(0)
    /// When delivery last resumed after a disconnect (ms since epoch).
    public let lastConnectMillis = Gauge<Int64?>(nil)
    /// When the last batch was acknowledged (ms since epoch).
    public let lastAckMillis = Gauge<Int64?>(nil)
    /// Called with every publish → acknowledgement latency (metrics histograms).
    public let latencyObserver = CallbackSlot<Duration>()
    /// Bytes of the encoded batches before compression (bytesSent is what went on the wire).
    public let bytesUncompressed = Counter()
    /// Readings of batches the endpoint refused for good (dead letters).
    public let deadLettered = Counter()
    /// Batches split because the endpoint found them too large (or over `batch_max_bytes`).
    public let splits = Counter()
    /// Set while the backlog is held (endpoint or configuration fault); nil when delivering.
    public let fault = Gauge<UplinkFault?>(nil)
    /// True while the daily byte budget holds the backlog.
    public let budgetHeld = Gauge<Bool>(false)
    public init() {}
}

/// A token bucket for metered links: at most `bytesPerSecond` on average, bursts of one second.
final class ByteRateLimiter: Sendable {
    private let rate: Double
    private let state: Mutex<(tokens: Double, last: UInt64)>

    init(bytesPerSecond: Int64) {
        rate = Double(bytesPerSecond)
        state = Mutex((Double(bytesPerSecond), monotonicNanos()))
    }

    /// May another message go now?
    func mayTake() -> Bool {
        state.withLock { s in
            let now = monotonicNanos()
            s.tokens = min(rate, s.tokens + Double(now &- s.last) / 1e9 * rate)
            s.last = now
            return s.tokens > 0
        }
    }

    func take(_ bytes: Int) { state.withLock { $0.tokens -= Double(bytes) } }
}

/// A daily byte budget for a metered link: what was sent in the last 24 hours (hourly slots on
/// the monotonic clock, so a wall-clock jump neither resets nor exhausts it) stays under
/// `bytesPerDay`. A batch that would cross it waits for the oldest hour to leave the window.
public final class DailyBudget: Sendable {
    public let bytesPerDay: Int64
    private let state = Mutex<(slots: [Int64], hour: UInt64)>(([Int64](repeating: 0, count: 24), 0))
    private let clock: @Sendable () -> UInt64

    init(bytesPerDay: Int64, clock: @escaping @Sendable () -> UInt64 = monotonicNanos) {
        self.bytesPerDay = bytesPerDay
        self.clock = clock
    }

    private func roll(_ s: inout (slots: [Int64], hour: UInt64)) {
        let h = clock() / 3_600_000_000_000
        if h > s.hour {
            let n = min(24, Int(clamping: h - s.hour))
            for i in 1...n { s.slots[Int((s.hour + UInt64(i)) % 24)] = 0 }
            s.hour = h
        }
    }

    /// Bytes sent in the last 24 hours.
    public var used: Int64 { state.withLock { s in roll(&s); return s.slots.reduce(0, &+) } }

    /// May `bytes` more go now?
    func allows(_ bytes: Int) -> Bool {
        state.withLock { s in
            roll(&s)
            let used = s.slots.reduce(0, &+)
            // One batch larger than the whole budget still goes on an empty day (never stuck).
            return used == 0 || used + Int64(bytes) <= bytesPerDay
        }
    }

    func take(_ bytes: Int) { state.withLock { s in roll(&s); s.slots[Int(s.hour % 24)] &+= Int64(bytes) } }
}
