import BrumeCore
import BrumeMQTT
import BrumeStore

/// One MQTT message an uplink publishes.
public struct MQTTOutMessage: Sendable, Equatable {
    public var topic: String
    public var payload: [UInt8]
    public var retain: Bool
    /// What the message is about (Sparkplug: the device; ThingsBoard: the devices, one per
    /// line; per reading: `device\tmetric`), for the births and announcements a session needs.
    public var key: String
    /// Part of a batch: the batch is acknowledged when every such message is. Births,
    /// announcements and replies are not (a new session sends them again).
    public var tracked: Bool

    public init(topic: String, payload: [UInt8], retain: Bool = false, key: String = "", tracked: Bool = true) {
        self.topic = topic
        self.payload = payload
        self.retain = retain
        self.key = key
        self.tracked = tracked
    }
}

/// What a message on one of a layout's subscriptions asks for.
public enum LayoutInbound: Sendable {
    /// Nothing to do (not ours, or a message we only note).
    case none
    /// Publish the session's births again (Sparkplug `Node Control/Rebirth`).
    case rebirth
    /// Commands for the command path; `replies` go out at once (a refusal the layout could tell).
    case commands([Command], replies: [MQTTOutMessage])
    /// Not understood: counted under `reason`; `replies` tell the sender when it can be told.
    case invalid(reason: String, detail: String, replies: [MQTTOutMessage])
}

/// A wire format that publishes a batch as several messages, with per-session state: births
/// (Sparkplug), device announcements (ThingsBoard connect, Home Assistant discovery) and
/// sequence numbers. The MQTT sink calls it under one lock, so it sees one thing at a time,
/// and publishes what `prepare` returns in that order before the lock is released: the order
/// of sequence numbers is the order on the wire.
///
/// The sync loop's guarantees hold for every layout: a batch is acknowledged in the outbox only
/// when the broker has acknowledged every message of it; after a reconnect the unacknowledged
/// batches are published again, after the new session's births.
public protocol MQTTLayout: Sendable {
    /// Filters to subscribe to on the uplink's connection (commands, rebirth requests).
    var subscriptions: [String] { get }
    /// The will of the next connection (asked before each CONNECT); nil: the sink's default.
    mutating func nextWill() -> MQTTWill?
    /// A batch's readings as messages (`tracked`), in order. Updates what the layout knows
    /// about devices and metrics (a birth declares what the data that follows uses).
    mutating func encode(_ batch: BatchRecord, readings: [Reading], now: Int64) -> [MQTTOutMessage]
    /// A new session: what goes first (Sparkplug NBIRTH); forgets what the last session announced.
    mutating func sessionStarted(now: Int64) -> [MQTTOutMessage]
    /// A batch's messages, about to be published on the current session: the births and
    /// announcements they need first, and their final form (Sparkplug sequence numbers).
    mutating func prepare(_ messages: [MQTTOutMessage], now: Int64) -> [MQTTOutMessage]
    /// Everything the current session has announced, again (a rebirth request).
    mutating func rebirth(now: Int64) -> [MQTTOutMessage]
    /// A message on one of `subscriptions`.
    mutating func received(topic: String, payload: UnsafeRawBufferPointer, now: Int64) -> LayoutInbound
    /// The answer to a command that came through this layout, when it reached `result`; nil
    /// when the layout has nothing to say for this state (or the command is not its own).
    func reply(to result: CommandResult) -> MQTTOutMessage?
    /// Command ids this layout makes start with this (its replies are routed back to it).
    var commandIDPrefix: String? { get }
    /// Published before a clean disconnect (Sparkplug NDEATH).
    mutating func stopping(now: Int64) -> [MQTTOutMessage]
    /// Whether the uplink publishes Brume's retained status (`{prefix}/status`, online/offline,
    /// the will): not where the backend allows only its own topics (ThingsBoard) or has its
    /// own (Sparkplug NBIRTH/NDEATH).
    var publishesStatus: Bool { get }
}

/// Messages in a batch body: the sync loop keeps one byte buffer per batch (its size decides
/// splits and byte caps), so a layout's messages travel in it as frames:
/// `u16 topic length, topic, u16 key length, key, u8 retain, u32 payload length, payload`.
enum MessageFrames {
    static func append(_ m: MQTTOutMessage, to out: inout [UInt8]) {
        appendField(Array(m.topic.utf8), lengthBytes: 2, to: &out)
        appendField(Array(m.key.utf8), lengthBytes: 2, to: &out)
        out.append(m.retain ? 1 : 0)
        appendField(m.payload, lengthBytes: 4, to: &out)
    }

    static func decode(_ body: [UInt8]) -> [MQTTOutMessage] {
        var out: [MQTTOutMessage] = []
        var i = 0
        func field(_ n: Int) -> [UInt8]? {
            guard i + n <= body.count else { return nil }
            var len = 0
            for k in 0..<n { len = len << 8 | Int(body[i + k]) }
            i += n
            guard i + len <= body.count else { return nil }
            defer { i += len }
            return Array(body[i..<(i + len)])
        }
        while i < body.count {
            guard let topic = field(2), let key = field(2), i < body.count else { break }
            let retain = body[i] == 1
            i += 1
            guard let payload = field(4) else { break }
            out.append(MQTTOutMessage(topic: String(decoding: topic, as: UTF8.self), payload: payload, retain: retain,
                                      key: String(decoding: key, as: UTF8.self)))
        }
        return out
    }

    private static func appendField(_ bytes: [UInt8], lengthBytes: Int, to out: inout [UInt8]) {
        // Topics and keys are at most 65,535 bytes (MQTT's own limit), payloads far below 4 GiB.
        let len = min(bytes.count, lengthBytes == 2 ? 65_535 : Int(UInt32.max))
        for k in stride(from: lengthBytes - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: len >> (8 * k))) }
        out.append(contentsOf: bytes.prefix(len))
    }
}

/// MQTT topic levels must not contain `+`, `#` or `/` where a name is one level, nor be empty.
func topicLevel(_ s: String) -> String {
    guard !s.isEmpty else { return "_" }
    return String(s.map { $0 == "+" || $0 == "#" || $0 == "/" ? "_" : $0 })
}
