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
        case txAck(token: UInt16, gateway: UInt64)
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
            return .success(.txAck(token: token, gateway: eui()))
        default:
            return .failure(.identifier(b[3]))
        }
    }

    /// PUSH_ACK or PULL_ACK for a packet of version `version`.
    public static func ack(version: UInt8, token: UInt16, identifier: UInt8) -> [UInt8] {
        [version, UInt8(token >> 8), UInt8(token & 0xFF), identifier]
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
            var dr: String?
            if case .string(let d)? = p["datr"] { dr = d }
            return .success(RxPacket(phyPayload: bytes, rssi: rssi, snr: snr, frequency: num(p["freq"]), dataRate: dr))
        })
    }
}
