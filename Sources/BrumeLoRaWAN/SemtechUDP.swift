import BrumeCore

/// Semtech's UDP packet-forwarder protocol (PROTOCOL.TXT of `packet_forwarder`, versions 1
/// and 2): what a LoRa concentrator's forwarder sends to its "server" — Brume here.
///
///     PUSH_DATA  ver | token(2) | 0x00 | gateway EUI(8) | JSON {"rxpk":[...], "stat":{...}}
///     PUSH_ACK   ver | token(2) | 0x01                      (our answer)
///     PULL_DATA  ver | token(2) | 0x02 | gateway EUI(8)     (keep-alive for downlinks)
///     PULL_ACK   ver | token(2) | 0x04                      (our answer)
///     TX_ACK     ver | token(2) | 0x05 | gateway EUI(8) | [JSON]
public enum SemtechUDP {
    public enum Packet: Sendable, Equatable {
        case pushData(token: UInt16, gateway: UInt64, json: [UInt8])
        case pullData(token: UInt16, gateway: UInt64)
        /// `error`: the forwarder's `txpk_ack.error` ("NONE" or absent: sent; "TOO_LATE",
        /// "COLLISION_PACKET", ...: not sent).
        case txAck(token: UInt16, gateway: UInt64, error: String?)
    }

    public enum ParseError: Error, Sendable, Equatable {
        case tooShort, version(UInt8), identifier(UInt8)

        public var reason: String {
            switch self {
            case .tooShort: "malformed_packet"
            case .version: "unknown_protocol_version"
            case .identifier: "unknown_packet_type"
            }
        }
    }

    public static func parse(_ b: [UInt8]) -> Result<Packet, ParseError> {
        guard b.count >= 4 else { return .failure(.tooShort) }
        guard b[0] == 1 || b[0] == 2 else { return .failure(.version(b[0])) }
        let token = UInt16(b[1]) << 8 | UInt16(b[2])
        func eui() -> UInt64 { b[4..<12].reduce(0) { $0 << 8 | UInt64($1) } }
        switch b[3] {
        case 0x00:
            guard b.count >= 12 else { return .failure(.tooShort) }
            return .success(.pushData(token: token, gateway: eui(), json: Array(b[12...])))
        case 0x02:
            guard b.count >= 12 else { return .failure(.tooShort) }
            return .success(.pullData(token: token, gateway: eui()))
        case 0x05:
            guard b.count >= 12 else { return .failure(.tooShort) }
            var error: String?
            if b.count > 12, let doc = try? JSONParser.parse(Array(b[12...])), case .string(let e)? = doc["txpk_ack"]?["error"] { error = e }
            return .success(.txAck(token: token, gateway: eui(), error: error == "NONE" ? nil : error))
        default:
            return .failure(.identifier(b[3]))
        }
    }

    /// PUSH_ACK or PULL_ACK for a packet of version `version`.
    public static func ack(version: UInt8, token: UInt16, identifier: UInt8) -> [UInt8] {
        [version, UInt8(token >> 8), UInt8(token & 0xFF), identifier]
    }

    /// PULL_RESP (protocol v2) scheduling `phy` in the RX1 window of an uplink: one second after
    /// it (RECEIVE_DELAY1), on its frequency and data rate, inverted polarity.
    public static func pullResp(token: UInt16, phy: [UInt8], after rx: RxPacket, power: Int = 14) -> [UInt8]? {
        guard let tmst = rx.tmst, let freq = rx.frequency, let datr = rx.dataRate else { return nil }
        let txpk: JSONValue = .object([
            JSONMember(key: "imme", value: .bool(false)),
            JSONMember(key: "tmst", value: .number(Double(tmst &+ 1_000_000))),
            JSONMember(key: "freq", value: .number(freq)),
            JSONMember(key: "rfch", value: .number(Double(rx.rfChain))),
            JSONMember(key: "powe", value: .number(Double(power))),
            JSONMember(key: "modu", value: .string("LORA")),
            JSONMember(key: "datr", value: .string(datr)),
            JSONMember(key: "codr", value: .string(rx.codingRate ?? "4/5")),
            JSONMember(key: "ipol", value: .bool(true)),
            JSONMember(key: "size", value: .number(Double(phy.count))),
            JSONMember(key: "data", value: .string(Base64.encode(phy))),
        ])
        return [2, UInt8(token >> 8), UInt8(token & 0xFF), 0x03] + Array(JSONValue.object([JSONMember(key: "txpk", value: txpk)]).description.utf8)
    }

    public static func eui(_ v: UInt64) -> String {
        let s = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// One received radio packet (`rxpk` member) with what Brume uses of it.
    public struct RxPacket: Sendable, Equatable {
        public var phyPayload: [UInt8]
        public var rssi: Double?
        public var snr: Double?
        public var frequency: Double?
        public var dataRate: String?
        /// The concentrator's microsecond counter at reception (downlinks are timed from it).
        public var tmst: UInt32? = nil
        public var codingRate: String? = nil
        public var rfChain: Int = 0
    }

    public enum RxError: Error, Sendable, Equatable {
        case crc, badBase64, notLoRa, badJSON
        public var reason: String {
            switch self {
            case .crc: "crc_error"
            case .badBase64: "bad_base64"
            case .notLoRa: "not_lora"
            case .badJSON: "malformed_json"
            }
        }
    }

    /// The `rxpk` array of a PUSH_DATA's JSON (absent: a `stat`-only report, no packets).
    public static func rxPackets(_ json: [UInt8]) -> Result<[Result<RxPacket, RxError>], RxError> {
        guard let doc = try? JSONParser.parse(json), case .object = doc else { return .failure(.badJSON) }
        guard let rx = doc["rxpk"] else { return .success([]) }
        guard case .array(let items) = rx else { return .failure(.badJSON) }
        return .success(items.map { p in
            guard case .object = p else { return .failure(.badJSON) }
            // stat: 1 CRC ok, -1 CRC failed, 0 no CRC (uplinks always carry one).
            if case .number(let s)? = p["stat"], s != 1 { return .failure(.crc) }
            if case .string(let m)? = p["modu"], m != "LORA" { return .failure(.notLoRa) }
            guard case .string(let data)? = p["data"], let bytes = Base64.decode(data) else { return .failure(.badBase64) }
            func num(_ v: JSONValue?) -> Double? { if case .number(let d)? = v { d } else { nil } }
            var rssi = num(p["rssi"]), snr = num(p["lsnr"])
            // Protocol v2 forwarders of multi-antenna boards put them in "rsig".
            if rssi == nil, let sig = p["rsig"]?[0] {
                rssi = num(sig["rssic"]) ?? num(sig["rssis"])
                snr = snr ?? num(sig["lsnr"])
            }
            var dr: String?, cr: String?
            if case .string(let d)? = p["datr"] { dr = d }
            if case .string(let c)? = p["codr"] { cr = c }
            var tmst: UInt32?
            if let t = num(p["tmst"]), t >= 0, t <= Double(UInt32.max), t == t.rounded() { tmst = UInt32(t) }
            var rf = 0
            if let r = num(p["rfch"]), r >= 0, r <= 7, r == r.rounded() { rf = Int(r) }
            return .success(RxPacket(phyPayload: bytes, rssi: rssi, snr: snr, frequency: num(p["freq"]), dataRate: dr, tmst: tmst, codingRate: cr, rfChain: rf))
        })
    }
}
