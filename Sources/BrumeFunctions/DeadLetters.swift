import BrumeCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The inputs of failed calls of one function (`on_error = "dead_letter"`), one JSON object per
/// line: `{"device","metric","time","value"}` for readings (a window: one line per sample), or
/// `{"device","metric","time","payload_base64"}` for a decoder's payload, with `"function"`,
/// `"reason"` and `"error"`. `brume fn test --input` reads these lines back. Bounded: past
/// `limitBytes` the file becomes `NAME.jsonl.1` (replacing the older one) and a new one starts,
/// so a function that keeps failing never fills an SD card. Not fsynced: a dead letter is a
/// diagnosis aid, not a delivery guarantee (every one is counted).
public final class DeadLetterFile: Sendable {
    public let path: String
    public let limitBytes: Int
    private let lock = Mutex(())

    public init(path: String, limitBytes: Int = 1 << 20) {
        self.path = path
        self.limitBytes = limitBytes
    }

    /// Appends `readings` (of one window: at most a quarter of `limitBytes`); returns how many were written.
    @discardableResult
    public func append(_ readings: [Reading], function: String, reason: String, error: String) -> Int {
        var out: [UInt8] = []
        var written = 0
        for r in readings {
            // One append (a window) writes at most a quarter of the bound: the file stays near it.
            if out.count > limitBytes / 4 { break }
            written += 1
            out.append(contentsOf: "{\"device\":".utf8)
            WireFormat.appendString(r.device, to: &out)
            out.append(contentsOf: ",\"metric\":".utf8)
            WireFormat.appendString(r.metric, to: &out)
            out.append(contentsOf: ",\"time\":\(r.time),\"value\":".utf8)
            WireFormat.appendValue(r.value, to: &out)
            trailer(function, reason, error, &out)
        }
        return write(out) ? written : 0
    }

    @discardableResult
    public func appendPayload(_ payload: [UInt8], device: String, metric: String, time: Int64, function: String, reason: String, error: String) -> Int {
        var out: [UInt8] = []
        out.append(contentsOf: "{\"device\":".utf8)
        WireFormat.appendString(device, to: &out)
        out.append(contentsOf: ",\"metric\":".utf8)
        WireFormat.appendString(metric, to: &out)
        out.append(contentsOf: ",\"time\":\(time),\"payload_base64\":".utf8)
        WireFormat.appendString(Base64.encode(payload), to: &out)
        trailer(function, reason, error, &out)
        return write(out) ? 1 : 0
    }

    private func trailer(_ function: String, _ reason: String, _ error: String, _ out: inout [UInt8]) {
        out.append(contentsOf: ",\"function\":".utf8)
        WireFormat.appendString(function, to: &out)
        out.append(contentsOf: ",\"reason\":".utf8)
        WireFormat.appendString(reason, to: &out)
        out.append(contentsOf: ",\"error\":".utf8)
        WireFormat.appendString(error, to: &out)
        out.append(contentsOf: "}\n".utf8)
    }

    private func write(_ bytes: [UInt8]) -> Bool {
        lock.withLock { _ in
            var st = stat()
            if stat(path, &st) == 0, Int(st.st_size) + bytes.count > limitBytes {
                _ = rename(path, path + ".1")
            }
            let dir = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            if !dir.isEmpty { _ = mkdir(dir, 0o750) }
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count
        }
    }
}
