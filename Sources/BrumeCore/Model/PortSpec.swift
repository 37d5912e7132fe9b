/// How the configuration names a port: by path, or by USB identity so that it
/// is found again after a replug re-enumerates it (/dev/ttyUSB1 instead of 0).
public enum PortSpec: Sendable, Hashable, CustomStringConvertible {
    case path(String)
    case usb(vid: UInt16?, pid: UInt16?, serial: String?)

    public var description: String {
        switch self {
        case .path(let p): return p
        case .usb(let vid, let pid, let serial):
            var parts: [String] = []
            if let vid, let pid { parts.append(hex4(vid) + ":" + hex4(pid)) } else if let vid { parts.append("vid " + hex4(vid)) } else if let pid { parts.append("pid " + hex4(pid)) }
            if let serial { parts.append("serial \(serial)") }
            return "USB " + parts.joined(separator: " ")
        }
    }
}

public func hex4(_ v: UInt16) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 4 - s.count)) + s
}

