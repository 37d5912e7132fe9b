import BrumeCore
import BrumeRules

#if canImport(Glibc)
import Glibc
#endif

extension Builder {
    /// `port = "/dev/ttyUSB0"` or `port = { usb_vid_pid = "0403:6001", usb_serial = "..." }`.
    func portSpec(_ r: TableReader, ok: inout Bool) -> PortSpec? {
        var port: PortSpec?
        if let n = r.node("port") {
            switch n.value {
            case .string(let p):
                if p.isEmpty || !p.hasPrefix("/") { r.error(n.position, "\"port\" must be an absolute device path like \"/dev/ttyUSB0\", got \"\(p)\"") } else { port = .path(p) }
            case .table(let t):
                let pr = TableReader(t, context: "\(r.context) port", sink: sink)
                var vid: UInt16?
                var pid: UInt16?
                if let vp = pr.string("usb_vid_pid") {
                    let parts = vp.split(separator: ":")
                    if parts.count == 2, let v = UInt16(parts[0], radix: 16), let p = UInt16(parts[1], radix: 16), parts[0].count == 4, parts[1].count == 4 {
                        vid = v
                        pid = p
                    } else {
                        pr.error(pr.position(of: "usb_vid_pid"), "\"usb_vid_pid\" must look like \"0403:6001\" (hex vendor:product, see `brume ports`), got \"\(vp)\"")
                        ok = false
                    }
                }
                let serial = pr.string("usb_serial")
                if serial?.isEmpty == true { pr.error(pr.position(of: "usb_serial"), "\"usb_serial\" must not be empty"); ok = false }
                pr.finish()
                if vid == nil && serial == nil && ok {
                    pr.error(t.position, "name the device by usb_vid_pid = \"0403:6001\" and/or usb_serial = \"A6008isP\" (see `brume ports`)")
                } else if ok {
                    port = .usb(vid: vid, pid: pid, serial: serial)
                }
            default:
                r.error(n.position, "\"port\" must be a device path or { usb_vid_pid = \"...\", usb_serial = \"...\" }, not \(article(n.typeName))")
            }
        } else {
            r.error(r.table.position, "missing required key \"port\" (e.g. port = \"/dev/ttyUSB0\")")
        }
        return port
    }

    /// `baud`: a standard rate.
    func baudRate(_ r: TableReader, default d: Int, ok: inout Bool) -> Int {
        var baud = d
        if let b = r.int("baud", range: 50...4_000_000) {
            if [50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000,
                576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000].contains(Int(b)) {
                baud = Int(b)
            } else {
                r.error(r.position(of: "baud"), "\"baud\" \(b) is not a standard rate (e.g. 9600, 19200, 38400, 57600, 115200)")
                ok = false
            }
        }
        return baud
    }

    func buildSerial(_ r: TableReader, name: String) -> SerialSourceConfig? {
        var ok = true
        let port = portSpec(r, ok: &ok)
        let baud = baudRate(r, default: 9600, ok: &ok)
        let dataBits = Int(r.int("data_bits", range: 5...8) ?? 8)
        let parity = r.oneOf("parity", ["none", "even", "odd"]) ?? "none"
        let stopBits = Int(r.int("stop_bits", range: 1...2) ?? 1)
        let flow = r.oneOf("flow_control", ["none", "rtscts", "xonxoff"]) ?? "none"
        let device = r.string("device") ?? name
        if device.isEmpty { r.error(r.position(of: "device"), "\"device\" must not be empty"); ok = false }
        let maxFrame = Int(r.int("max_frame", range: 16...65536) ?? 512)
        func byte(_ key: String, default d: UInt8, allowed: [String]) -> UInt8 {
            guard let v = r.string(key) else { return d }
            guard allowed.contains(v) else {
                r.error(r.position(of: key), "\"\(key)\" must be one of \(quoted(allowed)), got \"\(v)\"")
                ok = false
                return d
            }
            return v.utf8.first!
        }
        var format: SerialFormat?
        let formatName = r.oneOf("format", ["kv", "csv", "jsonl", "nmea"])
        if formatName == nil && r.table["format"] == nil { r.error(r.table.position, "missing required key \"format\" (\"kv\", \"csv\", \"jsonl\" or \"nmea\")") }
        // Format-specific keys: read them all, then complain about those that do not apply.
        let kvSep = byte("kv_separator", default: UInt8(ascii: ","), allowed: [",", ";", " ", "\t", "&"])
        let kvAssign = byte("kv_assign", default: UInt8(ascii: "="), allowed: ["=", ":"])
        let timeKey = r.string("time_key")
        let columns = r.stringArray("columns")?.map(\.0)
        let csvDelim = byte("csv_delimiter", default: UInt8(ascii: ","), allowed: [",", ";", "\t", "|", " "])
        let timeColumn = r.string("time_column")
        let deviceColumn = r.string("device_column")
        let requireChecksum = r.bool("require_checksum") ?? true
        var payload: PayloadFormat? = r.table["payload"] != nil ? payloadFormat(r) : .jsonObject(time: nil)
        if case .function? = payload {
            r.error(r.position(of: "payload"), "a serial line is not decoded by a function (MQTT sources only: a function decodes binary payloads)")
            payload = nil
        }
        let specific: [String: [String]] = [
            "kv": ["kv_separator", "kv_assign", "time_key"], "csv": ["columns", "csv_delimiter", "time_column", "device_column"],
            "jsonl": ["payload"], "nmea": ["require_checksum"],
        ]
        if let f = formatName {
            for (other, keys) in specific where other != f {
                for k in keys where r.table[k] != nil {
                    r.error(r.table.entry(k)!.keyPosition, "\"\(k)\" applies to format = \"\(other)\", not \"\(f)\"")
                    ok = false
                }
            }
            switch f {
            case "kv": format = .kv(pairSeparator: kvSep, assign: kvAssign, timeKey: timeKey)
            case "csv":
                if let c = columns, c.isEmpty { r.error(r.position(of: "columns"), "\"columns\" must name at least one column (or leave it out to read a header line)"); ok = false }
                format = .csv(columns: columns, delimiter: csvDelim, timeColumn: timeColumn, deviceColumn: deviceColumn)
            case "jsonl": if let payload { format = .jsonl(payload) } else { ok = false }
            default: format = .nmea(requireChecksum: requireChecksum)
            }
        }
        var poll: SerialPollConfig?
        if let p = r.subtable("poll", context: "\(r.context) poll") {
            let send = p.string("send", required: true)
            let every = p.duration("every", min: 10) ?? 5000
            let timeout = p.duration("timeout", min: 10) ?? 1000
            let retries = Int(p.int("retries", range: 0...10) ?? 1)
            if timeout >= every {
                p.error(p.table["timeout"] != nil ? p.position(of: "timeout") : p.position(of: "every"),
                        "\(p.table["timeout"] == nil ? "the default " : "")\"timeout\" (\"\(Units.formatDuration(timeout))\") must be shorter than \"every\" (\"\(Units.formatDuration(every))\")")
                ok = false
            }
            p.finish()
            if let send, !send.isEmpty { poll = SerialPollConfig(send: send, everyMillis: every, timeoutMillis: timeout, retries: retries) }
            else {
                if send != nil { p.error(p.position(of: "send"), "\"send\" must not be empty (the request the device answers, e.g. \"READ?\\r\\n\")") }
                ok = false
            }
        }
        guard ok, let port, let format else { return nil }
        return SerialSourceConfig(port: port, baud: baud, dataBits: dataBits, parity: parity, stopBits: stopBits, flowControl: flow,
                                  format: format, device: device, maxFrame: maxFrame, poll: poll)
    }
}
