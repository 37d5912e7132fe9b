/// Where sources hand their readings: the pipeline (rules, then the outbox).
///
/// Called synchronously on the source's own thread; it may block for a
/// while when the outbox is saturated: that is the backpressure a source
/// passes on to its device or broker (TCP flow control for MQTT).
/// Whether a source's input can be delivered to the gateway twice.
public enum Redelivery: Sendable {
    /// Never (a serial line): readings are taken as they are, not even remembered.
    case never
    /// A broker may redeliver them later (QoS1 MQTT): remembered, not checked.
    case possible
    /// Shortly after a reconnect, when a broker redelivers what it had not seen
    /// acknowledged: identical readings already committed are dropped.
    case likely
}

public protocol ReadingSink: Sendable {
    /// Takes readings; returns a ticket for `waitDurable`.
    @discardableResult
    func accept(_ readings: [Reading], from source: String, redelivery: Redelivery) -> UInt64
    /// Blocks until everything accepted up to `ticket` is committed to the
    /// outbox (or dropped, and counted), or `timeout` passes. True if done.
    func waitDurable(_ ticket: UInt64, timeout: Duration) -> Bool
    /// Commits what waits in memory now (a source that stops wants its readings safe before it
    /// acknowledges them).
    func flushNow()
    /// A source waits for its readings to be safe and cannot receive more meanwhile (its
    /// broker's window is full): commit soon rather than at the end of the commit window.
    /// Ignored while readings wait for the cloud's acknowledgement (the hold).
    func commitSoon()
}

extension ReadingSink {
    public func flushNow() {}
    public func commitSoon() {}

    @discardableResult
    public func accept(_ readings: [Reading], from source: String) -> UInt64 {
        accept(readings, from: source, redelivery: .never)
    }
}

/// The state of a source, as shown in status and logs.
public enum SourceState: String, Sendable {
    case starting, connected, disconnected, stopped
}

/// Counters every source keeps.
public final class SourceStats: Sendable {
    /// Messages, frames or lines received.
    public let messages = Counter()
    /// Readings handed to the pipeline.
    public let readings = Counter()
    /// Inputs dropped, by reason ("invalid_json", "topic_mapping", ...).
    public let errors = ReasonCounters()
    /// Time (ms since epoch) of the last reading.
    public let lastReadingMillis = Gauge<Int64?>(nil)
    public init() {}
}

/// What the runtime needs of every source (MQTT, serial, ...).
public protocol Source: AnyObject, Sendable {
    var name: String { get }
    var state: SourceState { get }
    var stats: SourceStats { get }
    func start()
    func stop()
}
