import Foundation
import Testing
@testable import BrumeOneWire

/// `w1_slave` exactly as the kernel's w1_therm driver writes it (first line: the scratchpad and
/// the CRC verdict; second line: the scratchpad again and t= in millidegrees).
@Suite struct OneWireTests {
    @Test func theKernelsFilesParse() {
        #expect(OneWire.parse(w1Slave: "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n") == .celsius(23.125))
        #expect(OneWire.parse(w1Slave: "5e ff 4b 46 7f ff 02 10 ed : crc=ed YES\n5e ff 4b 46 7f ff 02 10 ed t=-10125\n") == .celsius(-10.125))
        // A broken data wire: all ones, the CRC fails.
        #expect(OneWire.parse(w1Slave: "ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n") == .refused("crc_error"))
        // A probe that lost power and has not converted since: the reset value 85 °C.
        #expect(OneWire.parse(w1Slave: "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n") == .refused("power_on_reset"))
        #expect(OneWire.parse(w1Slave: "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=127937\n") == .refused("out_of_range"))
        #expect(OneWire.parse(w1Slave: "") == .refused("unreadable"))
        #expect(OneWire.parse(w1Slave: "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n") == .refused("unreadable"))
        #expect(OneWire.parse(w1Slave: "72 01 : crc=57 YES\n72 01 t=99999999999999999999\n") == .refused("unreadable"), "an overflowing number is not a temperature")
        #expect(OneWire.parse(temperature: "23125\n") == .celsius(23.125))
        #expect(OneWire.parse(temperature: "x\n") == .refused("unreadable"))
    }

    @Test func probesAreListedByRomIdAndTheBusMasterIsNot() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("brume-w1-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        for d in ["28-0316a2795bff", "28-0516a3c3e1ff", "w1_bus_master1", "00-400000000000x"] {
            try FileManager.default.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true)
        }
        #expect(OneWire.list(root: root) == ["28-0316a2795bff", "28-0516a3c3e1ff"])
        #expect(OneWire.read(root: root, id: "28-0316a2795bff") == .refused("unreadable"), "there but no file to read")
        #expect(OneWire.read(root: root, id: "28-aaaaaaaaaaaa") == .missing)
        try "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n".write(toFile: root + "/28-0316a2795bff/w1_slave", atomically: true, encoding: .utf8)
        #expect(OneWire.read(root: root, id: "28-0316a2795bff") == .celsius(23.125))
        #expect(OneWire.list(root: root + "/absent").isEmpty)
    }
}
