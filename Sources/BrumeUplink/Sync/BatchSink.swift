import BrumeCore
import BrumeStore

/// What one delivery of a batch came to, classified by what the sync loop must do next.
/// A sink only classifies; the loop decides once what each outcome means (acknowledge,
/// hold, dead-letter, split), for every uplink kind alike.
public enum DeliveryOutcome: Sendable, Equatable {
    /// The endpoint accepted the batch (MQTT PUBACK with a success reason code, HTTP 2xx to
    /// the original POST). Only this acknowledges readings.
    case accepted
    /// Not delivered, for now: network down, HTTP 5xx/408/429, MQTT quota exceeded. Sent
    /// again after `after` (what the endpoint asked) or the loop's backoff.
    case retry(reason: String, detail: String, after: Duration?)
    /// The endpoint refused this batch and would refuse it again (HTTP 400/422, MQTT payload
    /// format invalid): it goes to the dead-letter table and the queue moves on.
    case rejected(reason: String, status: Int, detail: String)
    /// The endpoint or the configuration is wrong, not the batch (HTTP 3xx, 401/403/404/405,
    /// MQTT not authorized): nothing is acknowledged, the whole backlog is held and the fault
    /// is shown loudly (status, metrics, logs) until it is fixed; tried again slowly.
    case misconfigured(reason: String, detail: String)
    /// Too large for the endpoint (HTTP 413, MQTT packet too large or over the broker's
    /// Maximum Packet Size): the loop splits the batch and sends the halves.
    case tooLarge(detail: String)
}

/// A batch ready to go: its record, its id and its encoded body.
public struct EncodedBatch: Sendable {
    public var record: BatchRecord
    public var id: String
    public var readings: Int
    /// What goes on the wire (compressed if the sink compresses).
    public var body: [UInt8]
    /// The encoded size before compression.
    public var plainBytes: Int
}

/// An uplink kind: encodes a batch and delivers it, nothing else. The `SyncLoop` owns the
/// outbox cursor, the in-flight window, resends, retries and backoff, dead letters, the
/// bandwidth cap and the statistics (as Telegraf's RunningOutput does for its outputs).
public protocol BatchSink: AnyObject, Sendable {
    /// "mqtt", "http" ...
    var kind: String { get }
    /// Where it delivers, for status and logs (never credentials).
    var endpoint: String { get }
    /// Batches in flight at once.
    var window: Int { get }
    /// The connection batches travel over, nil while there is none. A new value means that
    /// what was in flight is gone with the old connection: the loop sends it again.
    var connection: UInt64? { get }
    var state: UplinkState { get }
    /// The largest body the endpoint takes, when it said (MQTT 5 Maximum Packet Size).
    var maxBodyBytes: Int? { get }
    /// Starts connecting; `poke` wakes the loop whenever something changed.
    func start(poke: @escaping @Sendable () -> Void)
    /// Stops; `drain` is how long in-flight deliveries may still take.
    func stop(drain: Duration) async
    /// Encodes `readings` (the batch's, after routing) into `body`; returns the size before
    /// compression. `seqs`: their outbox sequence numbers when routing dropped some, nil when
    /// they are `batch.first...` in order.
    func encode(_ batch: BatchRecord, id: String, readings: [Reading], seqs: [Int64]?, into body: inout [UInt8]) -> Int
    /// Delivers one batch. `done` is called exactly once, from any thread, possibly before
    /// `deliver` returns — unless the connection it went over is lost (then never: the loop
    /// sends it again on the next connection).
    func deliver(_ batch: EncodedBatch, done: @escaping @Sendable (DeliveryOutcome) -> Void)
}
