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
    public let latencyObserver = Locked<(@Sendable (Duration) -> Void)?>(nil)
    /// Bytes of the encoded batches before compression (bytesSent is what went on the wire).
    public let bytesUncompressed = Counter()
    /// Readings of batches the endpoint refused for good (dead letters).
    public let deadLettered = Counter()
    /// Batches split because the endpoint found them too large (or over `batch_max_bytes`).
    public let splits = Counter()
    /// Set while the backlog is held (endpoint or configuration fault); nil when delivering.
    public let fault = Gauge<UplinkFault?>(nil)
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
