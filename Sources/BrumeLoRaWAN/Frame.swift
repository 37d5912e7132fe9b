import Crypto
import CryptoExtras

/// LoRaWAN 1.0.x data frames (PHYPayload = MHDR | MACPayload | MIC): parsed, MIC checked
/// (AES-CMAC over B0 | message with the network session key), FRMPayload decrypted (AES-128
/// in the spec's counter construction). The crypto is swift-crypto's (BoringSSL); only the
/// frame layout is ours. Checked against lora-packet's public vector and against frames built
/// by Python's `cryptography` in the end-to-end test.
public enum LoRaWANFrame {
    public enum MType: UInt8, Sendable {
        case joinRequest = 0, joinAccept = 1, unconfirmedUp = 2, unconfirmedDown = 3, confirmedUp = 4, confirmedDown = 5, rejoin = 6, proprietary = 7
    }

    /// The clear part of a data frame.
    public struct Data: Sendable, Hashable {
        public var mtype: MType
        /// As written on labels and in network servers: big-endian hex of the over-the-air
        /// little-endian field ("26011BDA").
        public var devAddr: UInt32
        public var fctrl: UInt8
        /// The 16 bits on the air.
        public var fcnt16: UInt16
        public var fopts: [UInt8]
        public var fport: UInt8?
        /// Still encrypted.
        public var frmPayload: [UInt8]
        public var mic: [UInt8]
        /// MHDR | MACPayload: what the MIC covers.
        public var message: [UInt8]
        public var confirmed: Bool { mtype == .confirmedUp }
    }

    public enum ParseError: Error, Sendable, Equatable {
        case tooShort(Int)
        case notDataUp(MType)
        case majorVersion(UInt8)

        /// A counter label.
        public var reason: String {
            switch self {
            case .tooShort: "malformed_frame"
            case .notDataUp(.joinRequest): "join_request"
            case .notDataUp: "not_data_up"
            case .majorVersion: "unknown_version"
            }
        }
    }

    /// An uplink data frame, or why it is not one.
    public static func parseUplink(_ phy: [UInt8]) -> Result<Data, ParseError> {
        // MHDR(1) DevAddr(4) FCtrl(1) FCnt(2) MIC(4): 12 bytes at least.
        guard phy.count >= 12 else { return .failure(.tooShort(phy.count)) }
        let mhdr = phy[0]
        let mtype = MType(rawValue: mhdr >> 5)!
        guard mhdr & 0x03 == 0 else { return .failure(.majorVersion(mhdr & 0x03)) }
        guard mtype == .unconfirmedUp || mtype == .confirmedUp else { return .failure(.notDataUp(mtype)) }
        let devAddr = UInt32(phy[1]) | UInt32(phy[2]) << 8 | UInt32(phy[3]) << 16 | UInt32(phy[4]) << 24
        let fctrl = phy[5]
        let fcnt = UInt16(phy[6]) | UInt16(phy[7]) << 8
        let foptsLen = Int(fctrl & 0x0F)
        let macEnd = phy.count - 4
        guard 8 + foptsLen <= macEnd else { return .failure(.tooShort(phy.count)) }
        let fopts = Array(phy[8..<(8 + foptsLen)])
        var fport: UInt8?
        var frm: [UInt8] = []
        if 8 + foptsLen < macEnd {
            fport = phy[8 + foptsLen]
            frm = Array(phy[(9 + foptsLen)..<macEnd])
        }
        return .success(Data(mtype: mtype, devAddr: devAddr, fctrl: fctrl, fcnt16: fcnt, fopts: fopts, fport: fport,
                             frmPayload: frm, mic: Array(phy[macEnd...]), message: Array(phy[..<macEnd])))
    }

    /// The block both the MIC (0x49) and the keystream (0x01) start from.
    static func block(_ first: UInt8, uplink: Bool, devAddr: UInt32, fcnt: UInt32, last: UInt8) -> [UInt8] {
        [first, 0, 0, 0, 0, uplink ? 0 : 1,
         UInt8(truncatingIfNeeded: devAddr), UInt8(truncatingIfNeeded: devAddr >> 8), UInt8(truncatingIfNeeded: devAddr >> 16), UInt8(truncatingIfNeeded: devAddr >> 24),
         UInt8(truncatingIfNeeded: fcnt), UInt8(truncatingIfNeeded: fcnt >> 8), UInt8(truncatingIfNeeded: fcnt >> 16), UInt8(truncatingIfNeeded: fcnt >> 24),
         0, last]
    }

    /// The 4-byte MIC of `message` (MHDR | MACPayload) with the full 32-bit frame counter.
    public static func mic(_ message: [UInt8], key: SymmetricKey, uplink: Bool = true, devAddr: UInt32, fcnt: UInt32) -> [UInt8] {
        // The B0 block carries len(message) in one byte: a PHYPayload is at most 255 bytes anyway.
        guard message.count <= 255, var cmac = try? AES.CMAC(key: key) else { return [] }
        cmac.update(data: block(0x49, uplink: uplink, devAddr: devAddr, fcnt: fcnt, last: UInt8(message.count)))
        cmac.update(data: message)
        return cmac.finalize().withUnsafeBytes { Array($0.prefix(4)) }
    }

    /// FRMPayload en/decryption (the same XOR with the keystream both ways). Key: the
    /// application session key, or the network session key for FPort 0.
    public static func crypt(_ payload: [UInt8], key: SymmetricKey, uplink: Bool = true, devAddr: UInt32, fcnt: UInt32) -> [UInt8] {
        var out = payload
        var i = 0
        var blockIndex: UInt8 = 1
        while i < out.count {
            var a = block(0x01, uplink: uplink, devAddr: devAddr, fcnt: fcnt, last: blockIndex)
            guard (try? AES.permute(&a, key: key)) != nil else { return [] }
            for j in 0..<16 where i + j < out.count { out[i + j] ^= a[j] }
            i += 16
            blockIndex &+= 1
        }
        return out
    }

    /// An unconfirmed data downlink (MHDR 0x60) to a Class A device: `payload` on `fport`
    /// (nil: none — an empty frame that only acknowledges a confirmed uplink), the ACK bit when
    /// `ack`; encrypted and MIC'd in the downlink direction with the downlink counter.
    public static func downlink(devAddr: UInt32, fcnt: UInt32, fport: UInt8?, payload: [UInt8], ack: Bool, nwkSKey: SymmetricKey, appSKey: SymmetricKey) -> [UInt8] {
        var msg: [UInt8] = [0x60, UInt8(truncatingIfNeeded: devAddr), UInt8(truncatingIfNeeded: devAddr >> 8), UInt8(truncatingIfNeeded: devAddr >> 16), UInt8(truncatingIfNeeded: devAddr >> 24),
                            ack ? 0x20 : 0x00, UInt8(truncatingIfNeeded: fcnt), UInt8(truncatingIfNeeded: fcnt >> 8)]
        if let fport {
            msg.append(fport)
            msg += crypt(payload, key: fport == 0 ? nwkSKey : appSKey, uplink: false, devAddr: devAddr, fcnt: fcnt)
        }
        return msg + mic(msg, key: nwkSKey, uplink: false, devAddr: devAddr, fcnt: fcnt)
    }

    /// Constant-time comparison of two MICs.
    static func sameMIC(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count, !a.isEmpty else { return false }
        var d: UInt8 = 0
        for i in a.indices { d |= a[i] ^ b[i] }
        return d == 0
    }
}

extension LoRaWANFrame {
    /// Parses "26011BDA" (the usual big-endian writing of a DevAddr).
    public static func devAddr(hex: String) -> UInt32? {
        guard hex.utf8.count == 8, let v = UInt32(hex, radix: 16) else { return nil }
        return v
    }

    public static func hex(_ devAddr: UInt32) -> String {
        let s = String(devAddr, radix: 16, uppercase: true)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    /// 32 hex digits → a 128-bit key.
    public static func key(hex: String) -> SymmetricKey? {
        let u = Array(hex.utf8)
        guard u.count == 32 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        var i = 0
        while i < 32 {
            guard let hi = hexDigit(u[i]), let lo = hexDigit(u[i + 1]) else { return nil }
            bytes.append(hi << 4 | lo)
            i += 2
        }
        return SymmetricKey(data: bytes)
    }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
