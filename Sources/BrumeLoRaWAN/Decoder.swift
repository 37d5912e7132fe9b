import BrumeCore
import Crypto

/// The devices Brume knows (ABP, or OTAA devices whose session keys came from the network
/// server that joined them) and what it has accepted from each: a frame becomes readings only
/// with a valid MIC and a frame counter above every one accepted before (persisted, so a
/// restart does not reopen the door to replays).
public struct LoRaWANDevice: Sendable {
    public enum Codec: String, Sendable { case cayenne, raw }
    public var devAddr: UInt32
    public var device: String
    public var nwkSKey: SymmetricKey
    public var appSKey: SymmetricKey
    public var codec: Codec
    /// ABP devices that restart their counter at 0 after a power cut (LoRaWAN 1.0 allows it;
    /// it reopens replays of old frames, so it is off unless asked for).
    public var allowCounterReset: Bool

    public init(devAddr: UInt32, device: String, nwkSKey: SymmetricKey, appSKey: SymmetricKey, codec: Codec, allowCounterReset: Bool) {
        self.devAddr = devAddr
        self.device = device
        self.nwkSKey = nwkSKey
        self.appSKey = appSKey
        self.codec = codec
        self.allowCounterReset = allowCounterReset
    }
}

public struct LoRaWANDecoder: Sendable {
    /// LoRaWAN 1.0's MAX_FCNT_GAP: a counter further ahead than this is not taken.
    public static let maxGap: UInt32 = 16_384
    /// A counter that went back is taken as a device restart (allow_counter_reset) only when it
    /// is this low: a restarted device counts from 0, an old frame replayed usually does not.
    public static let resetBelow: UInt32 = 64
    /// The first frame of a device (no counter kept, e.g. a new board) may be past 65,535: its
    /// MIC is tried with up to this many upper halves of the counter.
    public static let firstFrameEpochs: UInt32 = 16

    public struct Counter: Sendable, Hashable {
        public var fcnt: UInt32
        /// The MIC of the frame accepted at `fcnt`: the same frame again (a second forwarder,
        /// a confirmed frame's retransmission) is a duplicate, not an attack.
        public var mic: [UInt8]
        /// The downlink counter the next downlink uses (NFCntDown).
        public var down: UInt32 = 0
        public init(fcnt: UInt32, mic: [UInt8], down: UInt32 = 0) { self.fcnt = fcnt; self.mic = mic; self.down = down }
    }

    /// Whether the last accepted frame was a confirmed uplink (it asks for an ACK downlink).
    public private(set) var lastAcceptedConfirmed = false

    /// The downlink counter for the next downlink to `devAddr` (then counted as used), or nil
    /// when nothing was ever accepted from it (no session seen here yet).
    public mutating func takeDownlinkCounter(_ devAddr: UInt32) -> UInt32? {
        guard var c = counters[devAddr] else { return nil }
        let n = c.down
        c.down &+= 1
        counters[devAddr] = c
        return n
    }

    public enum Outcome: Sendable, Equatable {
        /// Accepted: the payload's (metric, value) pairs (empty for a frame without data or
        /// with MAC commands only), or why the payload could not be decoded.
        case accepted(device: String, fcnt: UInt32, fport: UInt8?, values: [(String, Value)], payloadError: String?, counterReset: Bool)
        case duplicate(device: String, fcnt: UInt32)
        /// Not a reading; the reason is the counter's label.
        case refused(reason: String, devAddr: UInt32?, detail: String)

        public static func == (a: Outcome, b: Outcome) -> Bool {
            switch (a, b) {
            case let (.accepted(d1, f1, p1, v1, e1, r1), .accepted(d2, f2, p2, v2, e2, r2)):
                d1 == d2 && f1 == f2 && p1 == p2 && e1 == e2 && r1 == r2 && v1.map(\.0) == v2.map(\.0) && v1.map(\.1) == v2.map(\.1)
            case let (.duplicate(d1, f1), .duplicate(d2, f2)): d1 == d2 && f1 == f2
            case let (.refused(r1, a1, d1), .refused(r2, a2, d2)): r1 == r2 && a1 == a2 && d1 == d2
            default: false
            }
        }
    }

    public let devices: [UInt32: LoRaWANDevice]
    public private(set) var counters: [UInt32: Counter]

    public init(devices: [LoRaWANDevice], counters: [UInt32: Counter] = [:]) {
        var byAddr: [UInt32: LoRaWANDevice] = [:]
        for d in devices { byAddr[d.devAddr] = d }
        self.devices = byAddr
        self.counters = counters
    }

    public mutating func decode(_ phy: [UInt8]) -> Outcome {
        let frame: LoRaWANFrame.Data
        switch LoRaWANFrame.parseUplink(phy) {
        case .success(let f): frame = f
        case .failure(let e): return .refused(reason: e.reason, devAddr: nil, detail: "\(e)")
        }
        let addr = frame.devAddr
        guard let dev = devices[addr] else {
            // Often a neighbour's device heard by this concentrator: counted, not an error.
            return .refused(reason: "unknown_devaddr", devAddr: addr, detail: "DevAddr \(LoRaWANFrame.hex(addr)) is not in the configuration")
        }
        let fcnt16 = UInt32(frame.fcnt16)
        func micOK(_ full: UInt32) -> Bool {
            LoRaWANFrame.sameMIC(LoRaWANFrame.mic(frame.message, key: dev.nwkSKey, devAddr: addr, fcnt: full), frame.mic)
        }
        var full: UInt32
        var reset = false
        if let last = counters[addr] {
            let sameEpoch = last.fcnt & 0xFFFF_0000 | fcnt16
            if sameEpoch == last.fcnt {
                if LoRaWANFrame.sameMIC(frame.mic, last.mic) { return .duplicate(device: dev.device, fcnt: sameEpoch) }
                return .refused(reason: micOK(sameEpoch) ? "fcnt_replay" : "bad_mic", devAddr: addr,
                                detail: "frame counter \(sameEpoch) was accepted before (\(dev.device))")
            }
            full = sameEpoch
            if full < last.fcnt {
                // The 16 bits on the air wrapped: the next 65,536.
                let (next, overflow) = full.addingReportingOverflow(0x1_0000)
                if !overflow { full = next }
            }
            if full <= last.fcnt || full - last.fcnt > Self.maxGap {
                // Behind, or too far ahead: a device that restarted its counter, a replay of an
                // old frame, or a jump the specification does not allow.
                if dev.allowCounterReset && fcnt16 < Self.resetBelow && fcnt16 < last.fcnt && micOK(fcnt16) {
                    full = fcnt16
                    reset = true
                } else if sameEpoch < last.fcnt && micOK(sameEpoch) {
                    return .refused(reason: "fcnt_replay", devAddr: addr,
                                    detail: "frame counter \(sameEpoch) is not above \(last.fcnt), the last accepted from \(dev.device) (a replay, or a device that restarted its counter: allow_counter_reset)")
                } else if fcnt16 < last.fcnt && micOK(fcnt16) {
                    return .refused(reason: "fcnt_replay", devAddr: addr,
                                    detail: "frame counter \(fcnt16) is not above \(last.fcnt), the last accepted from \(dev.device) (a replay, or a device that restarted its counter: allow_counter_reset)")
                } else if full > last.fcnt && micOK(full) {
                    return .refused(reason: "fcnt_gap", devAddr: addr,
                                    detail: "frame counter \(full) is more than \(Self.maxGap) ahead of \(last.fcnt) (\(dev.device))")
                } else {
                    return .refused(reason: "bad_mic", devAddr: addr, detail: "MIC does not match for \(dev.device) (wrong NwkSKey, or a forged frame)")
                }
            } else if !micOK(full) {
                return .refused(reason: "bad_mic", devAddr: addr, detail: "MIC does not match for \(dev.device) (wrong NwkSKey, or a forged frame)")
            }
        } else {
            // First frame ever seen: the counter as it is, or in a later period of 65,536 (a
            // device that sent for a long time before this gateway knew it).
            guard let epoch = (0..<Self.firstFrameEpochs).first(where: { micOK($0 << 16 | fcnt16) }) else {
                return .refused(reason: "bad_mic", devAddr: addr, detail: "MIC does not match for \(dev.device) (wrong NwkSKey, or a forged frame)")
            }
            full = epoch << 16 | fcnt16
        }
        counters[addr] = Counter(fcnt: full, mic: frame.mic, down: counters[addr]?.down ?? 0)
        lastAcceptedConfirmed = frame.confirmed
        guard let port = frame.fport, !frame.frmPayload.isEmpty else {
            return .accepted(device: dev.device, fcnt: full, fport: frame.fport, values: [], payloadError: nil, counterReset: reset)
        }
        if port == 0 {
            // MAC commands (encrypted with the network key): a network server's business.
            return .accepted(device: dev.device, fcnt: full, fport: 0, values: [], payloadError: nil, counterReset: reset)
        }
        let clear = LoRaWANFrame.crypt(frame.frmPayload, key: dev.appSKey, devAddr: addr, fcnt: full)
        switch dev.codec {
        case .raw:
            let hex = clear.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
            return .accepted(device: dev.device, fcnt: full, fport: port, values: [("payload", .string(hex))], payloadError: nil, counterReset: reset)
        case .cayenne:
            switch CayenneLPP.decode(clear) {
            case .success(let vs):
                return .accepted(device: dev.device, fcnt: full, fport: port, values: vs.map { ($0.metric, .number($0.value)) }, payloadError: nil, counterReset: reset)
            case .failure(let e):
                return .accepted(device: dev.device, fcnt: full, fport: port, values: [], payloadError: "\(e)", counterReset: reset)
            }
        }
    }
}
