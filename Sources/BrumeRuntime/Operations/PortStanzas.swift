import BrumeCore
import BrumeSerial

/// `brume ports --toml`: the ports found now as `[[source]]` stanzas to paste into gateway.toml.
public enum PortStanzas {
    /// `[[source]]` stanzas for the ports: a USB adapter by `usb_vid_pid` (and `usb_serial` when
    /// it has one, or when two identical adapters are plugged in), other ports by path.
    public static func toml(_ ports: [PortInfo]) -> String {
        guard !ports.isEmpty else { return "# no serial ports found (is the adapter plugged in? see brume ports)" }
        var used: Set<String> = []
        var out: [String] = ["# Serial sources for the ports found now. Set format (kv, csv, jsonl, nmea) and baud for each device;",
                             "# USB adapters are named by their identity, so a replug or another adapter does not move them."]
        for p in ports {
            var base = (p.product ?? p.description).lowercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "-" }
                .reduce(into: "") { s, c in if !(c == "-" && s.last == "-") { s.append(c) } }
            while base.hasPrefix("-") { base.removeFirst() }
            while base.hasSuffix("-") { base.removeLast() }
            base = String(base.prefix(24))
            if base.isEmpty { base = "serial" }
            var name = base
            var n = 2
            while used.contains(name) { name = "\(base)-\(n)"; n += 1 }
            used.insert(name)
            out.append("")
            out.append("[[source]]")
            out.append("name = \(tomlString(name))")
            out.append("kind = \"serial\"")
            let twinsWithoutSerial = p.vidPid != nil && (p.serialNumber ?? "").isEmpty && ports.filter { $0.vidPid == p.vidPid }.count > 1
            if let vp = p.vidPid, !twinsWithoutSerial {
                var id = "usb_vid_pid = \(tomlString(vp.lowercased()))"
                if let s = p.serialNumber, !s.isEmpty { id += ", usb_serial = \(tomlString(s))" }
                out.append("port = { \(id) }   # now \(p.path)")
            } else if twinsWithoutSerial {
                out.append("port = \(tomlString(p.path))   # identical adapters without serial numbers: prefer its /dev/serial/by-path/ link (a ttyUSB number can move)")
            } else {
                out.append("port = \(tomlString(p.path))")
            }
            out.append("format = \"kv\"                      # kv, csv, jsonl or nmea: what the device writes")
            out.append("# baud = 9600")
            out.append("# \(p.description)\(p.manufacturer.map { " — " + $0 } ?? "")")
        }
        return out.joined(separator: "\n")
    }

    /// A TOML basic string (JSON's escapes are valid TOML).
    static func tomlString(_ s: String) -> String {
        var out: [UInt8] = []
        WireFormat.appendString(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// A `[[source]] kind = "onewire"` stanza for the 1-Wire probes found (none: nothing).
    public static func oneWireToml(_ ids: [String]) -> String? {
        guard !ids.isEmpty else { return nil }
        var out = ["", "# 1-Wire temperature probes found on the bus: name each one (device, metric).",
                   "[[source]]", "name = \"probes\"", "kind = \"onewire\"", "interval = \"10s\"", "probes = ["]
        for (i, id) in ids.enumerated() { out.append("  { id = \(tomlString(id)), device = \"probe\(i + 1)\", metric = \"temperature\" },") }
        out.append("]")
        return out.joined(separator: "\n")
    }
}
