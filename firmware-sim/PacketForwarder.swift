import ArgumentParser
import BrumeCore
import BrumeLoRaWAN
import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// A LoRa concentrator's Semtech UDP packet forwarder with ABP devices behind it: each device
/// sends a Cayenne LPP uplink (temperature, humidity) every period, as a real frame (MIC,
/// encrypted payload, 32-bit counter); PULL_DATA keep-alives every 10 s. Device N has DevAddr
/// 260100NN and the demo keys below. (The tests' independent forwarder is
/// Tests/Fixtures/lorawan_forwarder.py; this one is for the demo.)
struct PacketForwarder: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lorawan", abstract: "A Semtech UDP packet forwarder sending LoRaWAN uplinks of ABP devices (Cayenne LPP).")

    static let demoNwkSKey = "2B7E151628AED2A6ABF7158809CF4F3C"
    static let demoAppSKey = "000102030405060708090A0B0C0D0E0F"

    @Option(help: "Where the forwarder sends (Brume's lorawan source).") var server = "127.0.0.1:1700"
    @Option(help: "The forwarder's gateway EUI.") var eui = "AA555A0000000001"
    @Option(help: "Number of devices (DevAddr 26010001, 26010002, ...).") var devices = 2
    @Option(help: "Seconds between two uplinks of a device.") var period: Double = 5
    @Option(help: "Every Nth uplink has a corrupted MIC (0: never).") var badMicEvery = 0
    @Option(help: "Stop after this many seconds (0: run until killed).") var duration: Double = 0

    static func devAddr(_ n: Int) -> UInt32 { 0x2601_0000 | UInt32(n) }

    /// Cayenne LPP: channel 1 temperature (0.1 °C, signed), channel 2 humidity (0.5 %).
    static func lpp(temperature: Double, humidity: Double) -> [UInt8] {
        let t = UInt16(bitPattern: Int16((temperature * 10).rounded()))
        return [1, 0x67, UInt8(t >> 8), UInt8(t & 0xFF), 2, 0x68, UInt8(max(0, min(255, (humidity * 2).rounded())))]
    }

    static func frame(addr: UInt32, fcnt: UInt32, payload: [UInt8], nwk: SymmetricKey, app: SymmetricKey) -> [UInt8] {
        var msg: [UInt8] = [0x40, UInt8(addr & 0xFF), UInt8(addr >> 8 & 0xFF), UInt8(addr >> 16 & 0xFF), UInt8(addr >> 24), 0,
                            UInt8(fcnt & 0xFF), UInt8(fcnt >> 8 & 0xFF), 1]
        msg += LoRaWANFrame.crypt(payload, key: app, devAddr: addr, fcnt: fcnt)
        return msg + LoRaWANFrame.mic(msg, key: nwk, devAddr: addr, fcnt: fcnt)
    }

    func validate() throws {
        guard devices > 0, devices < 256, period > 0, badMicEvery >= 0 else { throw ValidationError("devices 1...255, period > 0, bad-mic-every ≥ 0") }
        guard eui.utf8.count == 16, UInt64(eui, radix: 16) != nil else { throw ValidationError("--eui is 16 hex digits") }
        guard server.split(separator: ":").count == 2 else { throw ValidationError("--server is IPV4:PORT") }
    }

    func run() throws {
        let parts = server.split(separator: ":")
        var to = sockaddr_in()
        to.sin_family = sa_family_t(AF_INET)
        to.sin_port = UInt16(parts[1])!.bigEndian
        guard inet_pton(AF_INET, String(parts[0]), &to.sin_addr) == 1 else { throw ValidationError("--server: not an IPv4 address") }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let euiBytes = (0..<8).map { UInt8(UInt64(eui, radix: 16)! >> (56 - 8 * UInt64($0)) & 0xFF) }
        let nwk = LoRaWANFrame.key(hex: PacketForwarder.demoNwkSKey)!, app = LoRaWANFrame.key(hex: PacketForwarder.demoAppSKey)!
        var token: UInt16 = 1
        var acks = 0, sent = 0
        func send(_ b: [UInt8]) {
            _ = b.withUnsafeBytes { p in withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, p.baseAddress, p.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } }
            var buf = [UInt8](repeating: 0, count: 64)
            if recv(fd, &buf, buf.count, 0) >= 4, buf[1] == UInt8(token >> 8), buf[2] == UInt8(token & 0xFF) { acks += 1 }
            token &+= 1
        }
        print("firmware-sim: packet forwarder \(eui) → \(server), \(devices) LoRaWAN devices every \(period) s")
        let start = wallClockMillis()
        var fcnt = [UInt32](repeating: 0, count: devices + 1)
        var lastPull: Int64 = 0
        var n = 0
        while duration == 0 || Double(wallClockMillis() - start) / 1000 < duration {
            if wallClockMillis() - lastPull >= 10_000 {
                send([2, UInt8(token >> 8), UInt8(token & 0xFF), 2] + euiBytes)
                lastPull = wallClockMillis()
            }
            for d in 1...devices {
                n += 1
                fcnt[d] += 1
                let t = Double(wallClockMillis() - start) / 1000
                var phy = PacketForwarder.frame(addr: PacketForwarder.devAddr(d), fcnt: fcnt[d],
                                                payload: PacketForwarder.lpp(temperature: 14 + Double(d) + 3 * sin(t / 60), humidity: 60 + 10 * sin(t / 90 + Double(d))),
                                                nwk: nwk, app: app)
                if badMicEvery > 0 && n % badMicEvery == 0 { phy[phy.count - 1] ^= 0xFF }
                let rssi = -70 - 8 * d, snr = 9.5 - 2 * Double(d)
                let json = #"{"rxpk":[{"tmst":\#(UInt32(truncatingIfNeeded: wallClockMillis() * 1000)),"chan":0,"rfch":0,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":\#(rssi),"lsnr":\#(snr),"size":\#(phy.count),"data":"\#(Base64.encode(phy))"}]}"#
                send([2, UInt8(token >> 8), UInt8(token & 0xFF), 0] + euiBytes + Array(json.utf8))
                sent += 1
            }
            usleep(UInt32(period * 1_000_000))
        }
        print("firmware-sim: \(sent) uplinks sent, \(acks) acknowledgements")
    }
}
