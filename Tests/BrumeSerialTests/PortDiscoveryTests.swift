import BrumeCore
import Testing
@testable import BrumeSerial

@Suite struct PortDiscoveryTests {
    let ports = [
        PortInfo(path: "/dev/ttyS0", description: "ttyS0", transport: "native"),
        PortInfo(path: "/dev/ttyUSB1", description: "FT232R USB UART", transport: "usb", usbVID: 0x0403, usbPID: 0x6001, serialNumber: "A6008isP"),
        PortInfo(path: "/dev/ttyUSB2", description: "FT232R USB UART", transport: "usb", usbVID: 0x0403, usbPID: 0x6001, serialNumber: "B7119jtQ"),
        PortInfo(path: "/dev/ttyACM0", description: "u-blox GNSS receiver", transport: "usb", usbVID: 0x1546, usbPID: 0x01a9, serialNumber: nil),
    ]

    @Test func aUSBIdentityFindsThePortWhereverItWasEnumerated() {
        #expect(PortDiscovery.resolve(.usb(vid: nil, pid: nil, serial: "A6008isP"), ports: ports) == .found("/dev/ttyUSB1"))
        #expect(PortDiscovery.resolve(.usb(vid: 0x1546, pid: 0x01a9, serial: nil), ports: ports) == .found("/dev/ttyACM0"))
        // Replugged as ttyUSB0: still found by its serial number.
        var replugged = ports
        replugged[1].path = "/dev/ttyUSB0"
        #expect(PortDiscovery.resolve(.usb(vid: 0x0403, pid: 0x6001, serial: "A6008isP"), ports: replugged) == .found("/dev/ttyUSB0"))
    }

    @Test func twoIdenticalAdaptersAreAmbiguousWithoutASerialNumber() {
        #expect(PortDiscovery.resolve(.usb(vid: 0x0403, pid: 0x6001, serial: nil), ports: ports) == .ambiguous(["/dev/ttyUSB1", "/dev/ttyUSB2"]))
        #expect(PortDiscovery.resolve(.usb(vid: 0x0403, pid: 0x6001, serial: "nope"), ports: ports) == .notFound)
    }

    @Test func pathsAreUsedAsTheyAre() {
        #expect(PortDiscovery.resolve(.path("/tmp/pty-link"), ports: ports) == .found("/tmp/pty-link"))
        #expect(PortSpec.usb(vid: 0x0403, pid: 0x6001, serial: "A6008isP").description == "USB 0403:6001 serial A6008isP")
        #expect(ports[1].vidPid == "0403:6001")
    }

    @Test func listingThisMachineDoesNotCrash() {
        // Whatever the machine has (often nothing in a container): every entry has a path.
        #expect(PortDiscovery.list().allSatisfy { !$0.path.isEmpty })
    }
}
