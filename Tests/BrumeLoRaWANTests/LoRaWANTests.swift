import BrumeCore
import Crypto
import Foundation
import Testing
@testable import BrumeLoRaWAN

func bytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = hex.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

let nwk = LoRaWANFrame.key(hex: "44024241ed4ce9a68c6a8bc055233fd3")!
let app = LoRaWANFrame.key(hex: "ec925802ae430ca77fd3dd73cb2cc588")!

/// An uplink as a device sends it (our encoder; the decoder is checked against lora-packet's
/// vector below and against Python's `cryptography` end to end).
func uplink(_ addr: UInt32, fcnt: UInt32, port: UInt8 = 1, payload: [UInt8], confirmed: Bool = false, nwkKey: SymmetricKey = nwk, appKey: SymmetricKey = app) -> [UInt8] {
    var msg: [UInt8] = [confirmed ? 0x80 : 0x40, UInt8(addr & 0xFF), UInt8(addr >> 8 & 0xFF), UInt8(addr >> 16 & 0xFF), UInt8(addr >> 24), 0x00,
                        UInt8(fcnt & 0xFF), UInt8(fcnt >> 8 & 0xFF), port]
    msg += LoRaWANFrame.crypt(payload, key: appKey, devAddr: addr, fcnt: fcnt)
    return msg + LoRaWANFrame.mic(msg, key: nwkKey, devAddr: addr, fcnt: fcnt)
}

@Suite struct LoRaWANFrameTests {
    /// lora-packet's (JavaScript) public vector, also used by the Rust and C# LoRaWAN libraries:
    /// DevAddr 49BE7DF1, FCnt 2, FPort 1, "test" encrypted.
    @Test func loraPacketsPublicVector() throws {
        let phy = bytes("40F17DBE4900020001954378762B11FF0D")
        guard case .success(let f) = LoRaWANFrame.parseUplink(phy) else { Issue.record("not parsed"); return }
        #expect(f.devAddr == 0x49BE7DF1 && f.fcnt16 == 2 && f.fport == 1 && f.mtype == .unconfirmedUp)
        #expect(LoRaWANFrame.mic(f.message, key: nwk, devAddr: f.devAddr, fcnt: 2) == bytes("2B11FF0D"))
        #expect(String(decoding: LoRaWANFrame.crypt(f.frmPayload, key: app, devAddr: f.devAddr, fcnt: 2), as: UTF8.self) == "test")
        var d = LoRaWANDecoder(devices: [LoRaWANDevice(devAddr: 0x49BE7DF1, device: "vec", nwkSKey: nwk, appSKey: app, codec: .raw, allowCounterReset: false)])
        #expect(d.decode(phy) == .accepted(device: "vec", fcnt: 2, fport: 1, values: [("payload", .string("74657374"))], payloadError: nil, counterReset: false))
        // The same frame from a second forwarder: a duplicate. One bit changed: a bad MIC.
        #expect(d.decode(phy) == .duplicate(device: "vec", fcnt: 2))
        var flipped = phy
        flipped[10] ^= 1
        var d2 = LoRaWANDecoder(devices: [LoRaWANDevice(devAddr: 0x49BE7DF1, device: "vec", nwkSKey: nwk, appSKey: app, codec: .raw, allowCounterReset: false)])
        guard case .refused("bad_mic", _, _) = d2.decode(flipped) else { Issue.record("a flipped bit passed"); return }
    }

    @Test func malformedFramesAreRefusedNeverRead() {
        var d = LoRaWANDecoder(devices: [])
        for (phy, reason) in [([UInt8](), "malformed_frame"), ([0x40, 1, 2, 3], "malformed_frame"),
                              (bytes("00" + String(repeating: "11", count: 22)), "join_request"),
                              (bytes("60F17DBE4900020001954378762B11FF0D"), "not_data_up"),
                              (bytes("41F17DBE4900020001954378762B11FF0D"), "unknown_version"),
                              // FOptsLen 15 but only 5 bytes follow.
                              (bytes("40F17DBE490F020001954378762B11FF0D"), "malformed_frame"),
                              (bytes("40F17DBE4900020001954378762B11FF0D"), "unknown_devaddr")] {
            guard case .refused(let r, _, _) = d.decode(phy) else { Issue.record("accepted \(phy)"); continue }
            #expect(r == reason, "\(phy.count) bytes")
        }
        // Random bytes never crash and never become readings.
        var g = SystemRandomNumberGenerator()
        var dev = LoRaWANDecoder(devices: [LoRaWANDevice(devAddr: 0x26011BDA, device: "x", nwkSKey: nwk, appSKey: app, codec: .cayenne, allowCounterReset: false)])
        for _ in 0..<20_000 {
            var f = (0..<Int.random(in: 0...64, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
            if f.count > 5, Bool.random(using: &g) { f[0] = 0x40; f[1] = 0xDA; f[2] = 0x1B; f[3] = 0x01; f[4] = 0x26 }
            if case .accepted = dev.decode(f) { Issue.record("random bytes accepted: \(f)") }
        }
    }
}

@Suite struct LoRaWANCounterTests {
    let addr: UInt32 = 0x26011BDA
    func decoder(reset: Bool = false) -> LoRaWANDecoder {
        LoRaWANDecoder(devices: [LoRaWANDevice(devAddr: addr, device: "field-3", nwkSKey: nwk, appSKey: app, codec: .cayenne, allowCounterReset: reset)])
    }
    let lpp: [UInt8] = [0x01, 0x67, 0x00, 0xE1] // temperature_1 = 22.5

    func outcome(_ d: inout LoRaWANDecoder, _ fcnt: UInt32) -> String {
        switch d.decode(uplink(addr, fcnt: fcnt, payload: lpp)) {
        case .accepted(_, let f, _, _, _, let reset): reset ? "reset \(f)" : "accepted \(f)"
        case .duplicate: "duplicate"
        case .refused(let r, _, _): r
        }
    }

    @Test func countersOnlyGoForward() {
        var d = decoder()
        #expect(outcome(&d, 10) == "accepted 10")
        #expect(outcome(&d, 10) == "duplicate")       // the same frame again (same MIC)
        #expect(outcome(&d, 9) == "fcnt_replay")
        #expect(outcome(&d, 11) == "accepted 11")
        #expect(outcome(&d, 11 + 16_385) == "fcnt_gap") // LoRaWAN 1.0 MAX_FCNT_GAP
        #expect(outcome(&d, 11 + 16_384) == "accepted 16395")
        // A different frame with a counter already used: a replay even with a valid MIC.
        let other = uplink(addr, fcnt: 16_395, payload: [0x01, 0x67, 0x00, 0x10])
        guard case .refused("fcnt_replay", _, _) = d.decode(other) else { Issue.record("reused counter accepted"); return }
        // A wrong key never moves the counter.
        guard case .refused("bad_mic", _, _) = d.decode(uplink(addr, fcnt: 16_396, payload: lpp, nwkKey: app)) else { Issue.record("wrong key"); return }
        #expect(d.counters[addr]?.fcnt == 16_395)
    }

    @Test func sixteenBitsOnTheAirWrapIntoThirtyTwo() {
        var d = decoder()
        #expect(outcome(&d, 65_530) == "accepted 65530")
        #expect(outcome(&d, 65_540) == "accepted 65540") // on the air: 4
        #expect(outcome(&d, 65_535) == "fcnt_replay")    // an old frame of the first 65,536 replayed
        #expect(outcome(&d, 131_000) == "fcnt_gap")
        #expect(d.counters[addr]?.fcnt == 65_540)
    }

    @Test func aCounterResetIsRefusedUnlessAllowed() {
        var strict = decoder()
        #expect(outcome(&strict, 500) == "accepted 500")
        #expect(outcome(&strict, 0) == "fcnt_replay")
        #expect(outcome(&strict, 1) == "fcnt_replay")
        var relaxed = decoder(reset: true)
        #expect(outcome(&relaxed, 500) == "accepted 500")
        #expect(outcome(&relaxed, 0) == "reset 0")
        #expect(outcome(&relaxed, 1) == "accepted 1")
    }

    @Test func payloadsDecodeAndPortZeroIsMACCommandsOnly() {
        var d = decoder()
        guard case .accepted(_, _, let port, let values, nil, false) = d.decode(uplink(addr, fcnt: 1, payload: [0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00, 0xFF])) else {
            Issue.record("not accepted"); return
        }
        #expect(port == 1 && values.map(\.0) == ["temperature_3", "temperature_5"] && values.map(\.1) == [.number(27.2), .number(25.5)])
        guard case .accepted(_, _, 0, let none, nil, false) = d.decode(uplink(addr, fcnt: 2, port: 0, payload: [0x02], nwkKey: nwk, appKey: nwk)) else {
            Issue.record("port 0"); return
        }
        #expect(none.isEmpty)
        // Undecodable payload: the frame is accepted (its counter is spent), the payload refused.
        guard case .accepted(_, 3, _, let empty, let err?, false) = d.decode(uplink(addr, fcnt: 3, payload: [0x01, 0x99, 0x00])) else {
            Issue.record("bad payload"); return
        }
        #expect(empty.isEmpty && err.contains("unknown Cayenne LPP type 153"))
    }
}

@Suite struct LoRaWANDownlinkTests {
    /// A downlink as the device checks it: MIC in the downlink direction, payload decrypted with
    /// the downlink counter; scheduled one second after the uplink (RX1), inverted polarity.
    @Test func downlinkFrameAndItsSchedule() throws {
        let addr: UInt32 = 0x26011BDA
        let phy = LoRaWANFrame.downlink(devAddr: addr, fcnt: 7, fport: 10, payload: [0x01, 0x02], ack: true, nwkSKey: nwk, appSKey: app)
        #expect(phy[0] == 0x60 && phy[5] == 0x20 && phy[6] == 7 && phy[8] == 10 && phy.count == 9 + 2 + 4)
        let msg = Array(phy.dropLast(4))
        #expect(Array(phy.suffix(4)) == LoRaWANFrame.mic(msg, key: nwk, uplink: false, devAddr: addr, fcnt: 7))
        #expect(Array(phy.suffix(4)) != LoRaWANFrame.mic(msg, key: nwk, uplink: true, devAddr: addr, fcnt: 7), "the direction is in the MIC")
        #expect(LoRaWANFrame.crypt(Array(msg[9...]), key: app, uplink: false, devAddr: addr, fcnt: 7) == [0x01, 0x02])
        let rx = SemtechUDP.RxPacket(phyPayload: [], rssi: -50, snr: 7, frequency: 868.3, dataRate: "SF9BW125", tmst: UInt32.max - 10, codingRate: "4/5", rfChain: 0)
        let packet = try #require(SemtechUDP.pullResp(token: 0x1234, phy: phy, after: rx))
        #expect(Array(packet.prefix(4)) == [2, 0x12, 0x34, 3])
        let txpk = try #require(try JSONParser.parse(Array(packet.dropFirst(4)))["txpk"])
        #expect(txpk["tmst"] == .number(Double(UInt32.max - 10 &+ 1_000_000)), "the counter wraps")
        #expect(txpk["ipol"] == .bool(true) && txpk["imme"] == .bool(false) && txpk["freq"] == .number(868.3) && txpk["datr"] == .string("SF9BW125"))
        #expect(txpk["data"] == .string(Base64.encode(phy)) && txpk["size"] == .number(Double(phy.count)))
        #expect(SemtechUDP.pullResp(token: 1, phy: phy, after: SemtechUDP.RxPacket(phyPayload: [], rssi: nil, snr: nil, frequency: nil, dataRate: nil)) == nil,
                "no timing, no downlink")
        let eui: [UInt8] = [0xAA, 0x55, 0x5A, 0, 0, 0, 0, 1]
        #expect(SemtechUDP.parse([2, 0x12, 0x34, 5] + eui + Array(#"{"txpk_ack":{"error":"TOO_LATE"}}"#.utf8)) == .success(.txAck(token: 0x1234, gateway: 0xAA55_5A00_0000_0001, error: "TOO_LATE")))
        #expect(SemtechUDP.parse([2, 0x12, 0x34, 5] + eui + Array(#"{"txpk_ack":{"error":"NONE"}}"#.utf8)) == .success(.txAck(token: 0x1234, gateway: 0xAA55_5A00_0000_0001, error: nil)))
        #expect(SemtechUDP.parse([2, 0x12, 0x34, 5] + eui) == .success(.txAck(token: 0x1234, gateway: 0xAA55_5A00_0000_0001, error: nil)))
    }

    @Test func downlinkCountersAreKeptPerDevice() {
        var d = LoRaWANDecoder(devices: [LoRaWANDevice(devAddr: 0x26011BDA, device: "a", nwkSKey: nwk, appSKey: app, codec: .raw, allowCounterReset: false)])
        #expect(d.takeDownlinkCounter(0x26011BDA) == nil, "no session seen yet")
        _ = d.decode(uplink(0x26011BDA, fcnt: 1, payload: [1]))
        #expect(d.takeDownlinkCounter(0x26011BDA) == 0 && d.takeDownlinkCounter(0x26011BDA) == 1)
        _ = d.decode(uplink(0x26011BDA, fcnt: 2, payload: [1], confirmed: true))
        #expect(d.lastAcceptedConfirmed && d.counters[0x26011BDA]?.down == 2, "an uplink keeps the downlink counter")
    }
}

@Suite struct CayenneLPPTests {
    /// The examples of Cayenne's LPP documentation.
    @Test func documentationExamples() throws {
        func values(_ hex: String) -> [String] {
            guard case .success(let vs) = CayenneLPP.decode(bytes(hex)) else { return ["error"] }
            return vs.map { "\($0.metric)=\($0.value)" }
        }
        #expect(values("03670110056700FF") == ["temperature_3=27.2", "temperature_5=25.5"])
        #expect(values("0167FFD7") == ["temperature_1=-4.1"])
        #expect(values("067104D2FB2E0000") == ["accelerometer_6_x=1.234", "accelerometer_6_y=-1.234", "accelerometer_6_z=0.0"])
        #expect(values("018806765FF2960A0003E8") == ["gps_1_latitude=42.3519", "gps_1_longitude=-87.9094", "gps_1_altitude=10.0"])
        #expect(values("") == [])
        func error(_ hex: String) -> CayenneLPP.DecodeError? { if case .failure(let e) = CayenneLPP.decode(bytes(hex)) { e } else { nil } }
        #expect(error("0167FF") == .truncated(at: 0))
        #expect(error("01") == .truncated(at: 0))
        #expect(error("01FE00") == .unknownType(0xFE, at: 1))
    }
}

@Suite struct SemtechUDPTests {
    @Test func packetsAndAcks() {
        let push: [UInt8] = [2, 0xAB, 0xCD, 0, 0xAA, 0x55, 0x5A, 0, 0, 0, 0, 1] + Array(#"{"rxpk":[]}"#.utf8)
        #expect(SemtechUDP.parse(push) == .success(.pushData(token: 0xABCD, gateway: 0xAA55_5A00_0000_0001, json: Array(#"{"rxpk":[]}"#.utf8))))
        #expect(SemtechUDP.parse([2, 1, 2, 2, 0xAA, 0x55, 0x5A, 0, 0, 0, 0, 1]) == .success(.pullData(token: 0x0102, gateway: 0xAA55_5A00_0000_0001)))
        #expect(SemtechUDP.ack(version: 2, token: 0xABCD, identifier: 1) == [2, 0xAB, 0xCD, 1])
        #expect(SemtechUDP.parse([3, 0, 0, 0]) == .failure(.version(3)))
        #expect(SemtechUDP.parse([2, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8]) == .failure(.identifier(9)))
        #expect(SemtechUDP.parse([2, 0, 0, 0, 1]) == .failure(.tooShort))
        #expect(SemtechUDP.eui(0xAA55_5A00_0000_0001) == "AA555A0000000001")
    }

    @Test func rxpkFields() throws {
        let json = #"{"rxpk":[{"tmst":3512348611,"chan":2,"rfch":0,"freq":866.349812,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/6","rssi":-35,"lsnr":5.1,"size":17,"data":"QPF9vkkAAgABlUN4disR/w0="},"#
            + #"{"stat":-1,"modu":"LORA","data":"QPF9vkkAAgABlUN4disR/w0="},{"stat":1,"modu":"FSK","data":"AA=="},{"stat":1,"modu":"LORA","data":"not base64!"},"#
            + #"{"stat":1,"modu":"LORA","rsig":[{"ant":0,"chan":7,"rssic":-97,"lsnr":-3.5}],"data":"QPF9vkkAAgABlUN4disR/w0="}],"stat":{"rxnb":2}}"#
        guard case .success(let ps) = SemtechUDP.rxPackets(Array(json.utf8)) else { Issue.record("not parsed"); return }
        #expect(ps.count == 5)
        #expect(try ps[0].get() == SemtechUDP.RxPacket(phyPayload: bytes("40F17DBE4900020001954378762B11FF0D"), rssi: -35, snr: 5.1, frequency: 866.349812, dataRate: "SF7BW125",
                                                        tmst: 3_512_348_611, codingRate: "4/6", rfChain: 0))
        #expect(ps[1] == .failure(.crc))
        #expect(ps[2] == .failure(.notLoRa))
        #expect(ps[3] == .failure(.badBase64))
        #expect(try ps[4].get().rssi == -97 && ps[4].get().snr == -3.5)
        #expect(SemtechUDP.rxPackets(Array(#"{"stat":{"rxnb":0}}"#.utf8)) == .success([]))
        #expect(SemtechUDP.rxPackets(Array("{rxpk".utf8)) == .failure(.badJSON))
        #expect(SemtechUDP.rxPackets(Array(#"{"rxpk":{}}"#.utf8)) == .failure(.badJSON))
    }
}

@Suite struct LoRaWANCounterFileTests {
    @Test func countersSurviveARestartAndGarbageIsSkipped() throws {
        let dir = NSTemporaryDirectory() + "lorawan-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = "\(dir)/c.fcnt"
        var d = LoRaWANDecoder(devices: [LoRaWANDevice(devAddr: 0x26011BDA, device: "a", nwkSKey: nwk, appSKey: app, codec: .raw, allowCounterReset: false)])
        let frame = uplink(0x26011BDA, fcnt: 70_000, payload: [1])
        _ = d.decode(uplink(0x26011BDA, fcnt: 69_990, payload: [1]))
        _ = d.decode(frame)
        #expect(LoRaWANSource.saveCounters(d.counters, to: path, logger: .init(label: "t")))
        try ("garbage line\n" + String(contentsOfFile: path, encoding: .utf8)).write(toFile: path, atomically: true, encoding: .utf8)
        let loaded = LoRaWANSource.loadCounters(path, logger: .init(label: "t"))
        #expect(loaded == d.counters)
        var again = LoRaWANDecoder(devices: Array(d.devices.values), counters: loaded)
        #expect(again.decode(frame) == .duplicate(device: "a", fcnt: 70_000), "the last frame again after a restart: a duplicate")
        guard case .refused("fcnt_replay", _, _) = again.decode(uplink(0x26011BDA, fcnt: 69_995, payload: [1])) else { Issue.record("replay after restart"); return }
    }
}
