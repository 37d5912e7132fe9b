// What a LoRa packet forwarder (or anyone on the network) sends to a lorawan source: byte 0
// picks the path. Even: the bytes are a UDP datagram — `SemtechUDP.parse`, then `rxPackets` of a
// PUSH_DATA's JSON and each packet through the decoder. Odd: the bytes are a PHYPayload for the
// decoder directly (with a device whose DevAddr the input may hit) and, decrypted or not,
// `CayenneLPP.decode`.
// Invariants: nothing traps; a refused frame never moves a device's counter; an accepted frame
// moves it up, except a counter reset (only below 64); Cayenne values are finite and their
// metric names non-empty.
import BrumeCore
import BrumeLoRaWAN
import FuzzSupport

let key = LoRaWANFrame.key(hex: "2B7E151628AED2A6ABF7158809CF4F3C")!
let devices = [LoRaWANDevice(devAddr: 0x2601_1BDA, device: "a", nwkSKey: key, appSKey: key, codec: .cayenne, allowCounterReset: true),
               LoRaWANDevice(devAddr: 0x0000_0000, device: "z", nwkSKey: key, appSKey: key, codec: .raw, allowCounterReset: false)]

func check(_ decoder: inout LoRaWANDecoder, _ phy: [UInt8]) {
    let before = decoder.counters
    let outcome = decoder.decode(phy)
    switch outcome {
    case .refused, .duplicate:
        invariant(decoder.counters == before, "a refused or duplicate frame changed the counters")
    case .accepted(_, let fcnt, _, let values, _, let reset):
        for (addr, c) in decoder.counters where before[addr] != nil && before[addr] != c {
            invariant(c.fcnt == fcnt, "counter \(c.fcnt) is not the accepted \(fcnt)")
            invariant(reset ? fcnt < 64 : fcnt > before[addr]!.fcnt, "counter went from \(before[addr]!.fcnt) to \(fcnt) (reset \(reset))")
        }
        for (m, v) in values {
            invariant(!m.isEmpty, "empty metric")
            if case .number(let d) = v { invariant(d.isFinite, "non-finite value") }
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var decoder = LoRaWANDecoder(devices: devices, counters: [0x2601_1BDA: .init(fcnt: 65_530, mic: [0, 0, 0, 0])])
    if bytes[0] & 1 == 0 {
        guard case .success(let p) = SemtechUDP.parse(Array(bytes.dropFirst())) else { return 0 }
        if case .pushData(_, _, let json) = p, case .success(let packets) = SemtechUDP.rxPackets(json) {
            for case .success(let rx) in packets {
                check(&decoder, rx.phyPayload)
                _ = SemtechUDP.pullResp(token: 1, phy: rx.phyPayload, after: rx)
            }
        }
    } else {
        let phy = Array(bytes.dropFirst())
        check(&decoder, phy)
        check(&decoder, phy) // the same again: a duplicate or a refusal, never a second reading
        if case .success(let vs) = CayenneLPP.decode(phy) {
            for v in vs { invariant(v.value.isFinite && !v.metric.isEmpty, "Cayenne \(v)") }
        }
    }
    return 0
}

@_cdecl("fuzz_lorawan_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
