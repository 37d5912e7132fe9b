import BrumeCore
import CSerialPort

/// One serial port as the system lists it (libserialport).
public struct PortInfo: Sendable, Hashable {
    public var path: String
    public var description: String
    public var transport: String
    public var usbVID: UInt16?
    public var usbPID: UInt16?
    public var serialNumber: String?
    public var manufacturer: String?
    public var product: String?

    public init(path: String, description: String = "", transport: String = "native", usbVID: UInt16? = nil, usbPID: UInt16? = nil,
                serialNumber: String? = nil, manufacturer: String? = nil, product: String? = nil) {
        self.path = path
        self.description = description
        self.transport = transport
        self.usbVID = usbVID
        self.usbPID = usbPID
        self.serialNumber = serialNumber
        self.manufacturer = manufacturer
        self.product = product
    }

    public var vidPid: String? {
        guard let usbVID, let usbPID else { return nil }
        return hex4(usbVID) + ":" + hex4(usbPID)
    }

    public func matches(_ spec: PortSpec) -> Bool {
        switch spec {
        case .path(let p): return p == path
        case .usb(let vid, let pid, let serial):
            if let vid, vid != usbVID { return false }
            if let pid, pid != usbPID { return false }
            if let serial, serial != serialNumber { return false }
            return transport == "usb"
        }
    }
}

public enum PortResolution: Sendable, Equatable {
    case found(String)
    case notFound
    /// Several ports match a USB identity: refusing to guess.
    case ambiguous([String])
}

public enum PortDiscovery {
    /// The serial ports the system knows (USB adapters, UARTs). Pseudo-terminals
    /// are not listed (they have no sysfs entry); name them by path.
    public static func list() -> [PortInfo] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        guard sp_list_ports(&list) == SP_OK, let list else { return [] }
        defer { sp_free_port_list(list) }
        var out: [PortInfo] = []
        var i = 0
        while let port = list[i] {
            i += 1
            func str(_ p: UnsafeMutablePointer<CChar>?) -> String? { p.map { String(cString: $0) } }
            let transport: String
            switch sp_get_port_transport(port) {
            case SP_TRANSPORT_USB: transport = "usb"
            case SP_TRANSPORT_BLUETOOTH: transport = "bluetooth"
            default: transport = "native"
            }
            var info = PortInfo(path: str(sp_get_port_name(port)) ?? "?", description: str(sp_get_port_description(port)) ?? "", transport: transport)
            if transport == "usb" {
                var vid: Int32 = 0
                var pid: Int32 = 0
                if sp_get_port_usb_vid_pid(port, &vid, &pid) == SP_OK {
                    info.usbVID = UInt16(truncatingIfNeeded: vid)
                    info.usbPID = UInt16(truncatingIfNeeded: pid)
                }
                info.serialNumber = str(sp_get_port_usb_serial(port))
                info.manufacturer = str(sp_get_port_usb_manufacturer(port))
                info.product = str(sp_get_port_usb_product(port))
            }
            out.append(info)
        }
        return out.sorted { $0.path < $1.path }
    }

    /// Finds the device path for a spec. A path is used as it is (it may be a
    /// pty or a udev symlink that libserialport does not list).
    public static func resolve(_ spec: PortSpec, ports: @autoclosure () -> [PortInfo] = list()) -> PortResolution {
        if case .path(let p) = spec { return .found(p) }
        let matches = ports().filter { $0.matches(spec) }
        if matches.count == 1 { return .found(matches[0].path) }
        return matches.isEmpty ? .notFound : .ambiguous(matches.map(\.path))
    }
}
