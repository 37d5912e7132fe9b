@testable import BrumeRuntime
import BrumeConfig
import BrumeSerial
import Testing

/// `brume ports --toml`: what it prints is a valid configuration as pasted, naming USB adapters
/// by their identity, identical adapters without serial numbers by path, on-board UARTs by path.
@Suite struct PortStanzasTests {
    @Test func stanzasPasteIntoAValidConfiguration() throws {
        let ports = [
            PortInfo(path: "/dev/ttyUSB0", description: "FT232R USB UART", transport: "usb", usbVID: 0x0403, usbPID: 0x6001,
                     serialNumber: "A6008isP", manufacturer: "FTDI", product: "FT232R USB UART"),
            PortInfo(path: "/dev/ttyUSB1", description: "USB Serial", transport: "usb", usbVID: 0x1A86, usbPID: 0x7523, product: "USB Serial"),
            PortInfo(path: "/dev/ttyUSB2", description: "USB Serial", transport: "usb", usbVID: 0x1A86, usbPID: 0x7523, product: "USB Serial"),
            PortInfo(path: "/dev/ttyAMA0", description: "ttyAMA0", transport: "native"),
            PortInfo(path: "/dev/ttyACM0", description: "u-blox 7 - GPS/GNSS \"Receiver\"", transport: "usb", usbVID: 0x1546, usbPID: 0x01A7,
                     product: "u-blox 7 - GPS/GNSS \"Receiver\""),
        ]
        let stanzas = PortStanzas.toml(ports)
        let text = """
            [gateway]
            id = "gw-1"
            [uplink.cloud]
            kind = "mqtt"
            url = "mqtt://127.0.0.1:1883"

            """ + stanzas
        switch ConfigLoader.parse(text: text, file: "gateway.toml") {
        case .success(let (config, diagnostics)):
            #expect(diagnostics.filter { $0.severity == .error }.isEmpty, "\(diagnostics)")
            #expect(config.sources.map(\.name) == ["ft232r-usb-uart", "usb-serial", "usb-serial-2", "ttyama0", "u-blox-7-gps-gnss-receiv"])
            #expect(stanzas.contains(#"port = { usb_vid_pid = "0403:6001", usb_serial = "A6008isP" }"#))
            #expect(stanzas.contains(#"port = "/dev/ttyUSB1""#) && stanzas.contains(#"port = "/dev/ttyUSB2""#), "twins without serial numbers by path")
            #expect(stanzas.contains(#"port = { usb_vid_pid = "1546:01a7" }"#))
            #expect(stanzas.contains(#"port = "/dev/ttyAMA0""#))
        case .failure(let f):
            Issue.record("the stanzas do not load: \(f)\n\(stanzas)")
        }
        #expect(PortStanzas.toml([]).hasPrefix("# no serial ports found"))
    }
}
