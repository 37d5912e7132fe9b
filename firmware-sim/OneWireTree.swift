import ArgumentParser
import BrumeCore

#if canImport(Glibc)
import Glibc
#endif

/// A Linux w1 sysfs tree with DS18B20 probes, as the kernel's w1_therm driver writes it:
/// `ROOT/28-XXXXXXXXXXXX/w1_slave` updated at a rate (a slowly varying temperature), with an
/// optional CRC failure now and then. Point a `kind = "onewire"` source's `root` at it.
struct OneWireTree: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "onewire", abstract: "A 1-Wire sysfs tree with DS18B20 probes (w1_slave files).")

    @Option(help: "The folder standing for /sys/bus/w1/devices.") var root: String
    @Option(help: "Number of probes (ROM ids 28-00000000000N).") var probes = 2
    @Option(help: "Updates per second.") var rate: Double = 1
    @Option(help: "Every Nth update of a probe fails its CRC (0: never).") var crcFailEvery = 0
    @Option(help: "Stop after this many seconds (0: run until killed).") var duration: Double = 0

    static func id(_ n: Int) -> String {
        let hex = String(n, radix: 16)
        return "28-" + String(repeating: "0", count: 12 - hex.count) + hex
    }

    /// The two lines of `w1_slave` for `milli` millidegrees (a real scratchpad layout: the raw
    /// value in 1/16 °C, config byte 0x7f for 12 bits).
    static func w1Slave(milli: Int, crcOK: Bool) -> String {
        let raw = UInt16(bitPattern: Int16(clamping: (milli * 16 + (milli >= 0 ? 500 : -500)) / 1000))
        let bytes = [UInt8(raw & 0xff), UInt8(raw >> 8), 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10, 0x1c]
        let hex = bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined(separator: " ")
        return crcOK ? "\(hex) : crc=1c YES\n\(hex) t=\(milli)\n" : "ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n"
    }

    func validate() throws {
        guard probes > 0, probes < 1000, rate > 0, crcFailEvery >= 0 else { throw ValidationError("probes 1...999, rate > 0, crc-fail-every ≥ 0") }
    }

    func run() throws {
        mkdir(root, 0o755)
        mkdir(root + "/w1_bus_master1", 0o755)
        for p in 1...probes { mkdir(root + "/" + OneWireTree.id(p), 0o755) }
        print("firmware-sim: \(probes) 1-Wire probes under \(root) at \(rate)/s")
        var n = 0
        let start = wallClockMillis()
        while duration == 0 || Double(wallClockMillis() - start) / 1000 < duration {
            n += 1
            for p in 1...probes {
                let t = Double(wallClockMillis() - start) / 1000
                // The sensor counts 1/16 °C; the kernel writes raw × 1000 / 16.
                let raw = Int((20 + 2 * Double(p) + sin(t / 30 + Double(p))) * 16)
                let milli = raw * 1000 / 16
                let ok = crcFailEvery == 0 || n % crcFailEvery != 0
                let dir = root + "/" + OneWireTree.id(p)
                let text = OneWireTree.w1Slave(milli: milli, crcOK: ok)
                // Whole files only (the kernel's reads are atomic too).
                let tmp = dir + "/.w1_slave.tmp"
                if let f = fopen(tmp, "w") {
                    fputs(text, f)
                    fclose(f)
                    rename(tmp, dir + "/w1_slave")
                }
            }
            usleep(UInt32(1_000_000 / rate))
        }
    }
}
