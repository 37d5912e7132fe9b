#if canImport(Glibc)
import Glibc
#endif

/// A minimal blocking HTTP/1.1 client for tests of the gateway's local API
/// (no dependency on curl or libcurl being installed).
public enum TestHTTP {
    public struct Reply: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: String
    }

    public static func request(_ method: String = "GET", port: Int, path: String, headers: [String: String] = [:], timeout: Int = 5) throws -> Reply {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestError("socket failed") }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw TestError("cannot connect to 127.0.0.1:\(port)") }
        var req = "\(method) \(path) HTTP/1.1\r\n\(headers["Host"] == nil ? "Host: 127.0.0.1\r\n" : "")Connection: close\r\n"
        for (k, v) in headers { req += "\(k): \(v)\r\n" }
        if method != "GET" { req += "Content-Length: 0\r\n" }
        req += "\r\n"
        _ = req.withCString { write(fd, $0, strlen($0)) }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        guard let sep = data.firstRange(of: [13, 10, 13, 10]) else { throw TestError("no HTTP header in \(data.count) bytes") }
        let head = String(decoding: data[..<sep.lowerBound], as: UTF8.self).split(separator: "\r\n").map(String.init)
        let parts = head.first?.split(separator: " ") ?? []
        guard parts.count >= 2, let status = Int(parts[1]) else { throw TestError("bad status line") }
        var hs: [String: String] = [:]
        for h in head.dropFirst() {
            if let c = h.firstIndex(of: ":") { hs[h[..<c].lowercased()] = String(h[h.index(after: c)...]).trimmingCharacters(in: " ") }
        }
        var body = Array(data[sep.upperBound...])
        if hs["transfer-encoding"]?.contains("chunked") == true {
            var out: [UInt8] = []
            var i = 0
            while i < body.count, let nl = body[i...].firstRange(of: [13, 10]) {
                let size = Int(String(decoding: body[i..<nl.lowerBound], as: UTF8.self), radix: 16) ?? 0
                if size == 0 { break }
                let start = nl.upperBound
                out.append(contentsOf: body[start..<min(body.count, start + size)])
                i = start + size + 2
            }
            body = out
        }
        return Reply(status: status, headers: hs, body: String(decoding: body, as: UTF8.self))
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
