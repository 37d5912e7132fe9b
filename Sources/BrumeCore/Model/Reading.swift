/// A single measured value. Numbers are `Double` on the wire (JSON); booleans and
/// short strings are allowed for states ("open", "closed").
public enum Value: Sendable, Hashable {
    case number(Double)
    case bool(Bool)
    case string(String)
}

extension Value: CustomStringConvertible {
    public var description: String {
        switch self {
        case .number(let d): return WireFormat.formatNumber(d)
        case .bool(let b): return b ? "true" : "false"
        case .string(let s): return s
        }
    }
}

/// One reading: a value of one metric of one device, at a time.
///
/// `time` is milliseconds since the Unix epoch (UTC). It is the source's own
/// timestamp when the payload carries one, else the gateway's clock at receipt.
public struct Reading: Sendable, Hashable {
    public var device: String
    public var metric: String
    public var time: Int64
    public var value: Value
    /// Set when the gateway stamped this reading while the system clock was not synchronised
    /// (a board without a real-time clock, before NTP): the boot clock (`CLOCK_BOOTTIME`, ms) at
    /// that moment. The outbox corrects `time` from it once the clock is synchronised, and the
    /// wire format flags the reading (`"clock":"unsynced"`) when that is impossible (a reboot
    /// came first). nil for every other reading.
    public var unsyncedBootMillis: Int64?

    public init(device: String, metric: String, time: Int64, value: Value, unsyncedBootMillis: Int64? = nil) {
        self.device = device
        self.metric = metric
        self.time = time
        self.value = value
        self.unsyncedBootMillis = unsyncedBootMillis
    }
}

/// A reading once it has been committed to the outbox: it carries its outbox
/// sequence number, which is unique, dense within a segment and increasing.
public struct StoredReading: Sendable, Hashable {
    public var seq: Int64
    public var reading: Reading

    public init(seq: Int64, reading: Reading) {
        self.seq = seq
        self.reading = reading
    }
}
