import BrumeConfig
import BrumeCore

#if canImport(Glibc)
import Glibc
#endif

/// A small blocking HTTP/1.1 client for the gateway's own API on this machine
/// (`brume status`, `tail`, `reload`, `buffer purge`): plain TCP to the address of
/// `[api] listen`, with the bearer token of `[api] token_file`.
struct LocalAPIClient {
    var host: String
    var port: Int
    var token: String?

    init(api: APISection) {
        // A gateway listening on every address is reached on loopback.
        host = (api.host == "0.0.0.0" || api.host == "::" || api.host == "localhost") ? (api.host == "::" ? "::1" : "127.0.0.1") : api.host
        port = api.port
        if let f = api.tokenFile, case .success(let t) = ConfigLoader.readFile(f) {
            token = String(t.split(separator: "\n", omittingEmptySubsequences: false).first ?? "").filter { $0 != "\r" }
        }
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    private func connect() throws(Failure) -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let first = res else { throw Failure(description: "cannot resolve \(host)") }
        defer { freeaddrinfo(res) }
        var ai: UnsafeMutablePointer<addrinfo>? = first
        var lastErr: Int32 = 0
        while let a = ai {
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            if fd >= 0 {
                if Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 { return fd }
                lastErr = errno
                close(fd)
            }
            ai = a.pointee.ai_next
        }
        throw Failure(description: "cannot reach the gateway's local API at \(address): \(String(cString: strerror(lastErr))) (is brume running? is [api] enabled?)")
    }

    private func send(_ fd: Int32, method: String, path: String) throws(Failure) {
        var req = "\(method) \(path) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\nUser-Agent: brume-cli\r\n"
        if let token { req += "Authorization: Bearer \(token)\r\n" }
        if method == "POST" { req += "Content-Length: 0\r\nX-Brume-Request: 1\r\n" }
        req += "\r\n"
        let bytes = Array(req.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { throw Failure(description: "the connection to \(address) broke") }
            off += n
        }
    }

    /// A reader over the socket that undoes chunked transfer encoding.
    private final class Reader {
        let fd: Int32
        var buf: [UInt8] = []
        var pos = 0
        var eof = false
        init(fd: Int32) { self.fd = fd }

        func fill() -> Bool {
            if eof { return false }
            if pos > 0 && pos == buf.count { buf.removeAll(keepingCapacity: true); pos = 0 }
            var tmp = [UInt8](repeating: 0, count: 16384)
            let n = read(fd, &tmp, tmp.count)
            if n <= 0 { eof = true; return false }
            buf.append(contentsOf: tmp[0..<n])
            return true
        }

        func line() -> String? {
            while true {
                if let i = buf[pos...].firstIndex(of: 10) {
                    var l = buf[pos..<i]
                    if l.last == 13 { l = l.dropLast() }
                    pos = i + 1
                    return String(decoding: l, as: UTF8.self)
                }
                if !fill() { return nil }
            }
        }

        func bytes(_ n: Int) -> [UInt8]? {
            guard n >= 0 else { return nil } // a negative Content-Length or chunk size
            while buf.count - pos < n { if !fill() { return nil } }
            let out = Array(buf[pos..<(pos + n)])
            pos += n
            return out
        }

        func rest() -> [UInt8] {
            while fill() {}
            let out = Array(buf[pos...])
            pos = buf.count
            return out
        }
    }

    /// Sends a request; calls `onBody` with each piece of the body as it arrives. Returns the status.
    func stream(_ method: String, _ path: String, onBody: ([UInt8]) -> Bool) throws(Failure) -> Int {
        let fd = try connect()
        defer { close(fd) }
        try send(fd, method: method, path: path)
        let r = Reader(fd: fd)
        guard let statusLine = r.line() else { throw Failure(description: "no answer from \(address)") }
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw Failure(description: "not an HTTP answer from \(address): \(statusLine)") }
        var chunked = false
        var length: Int?
        while let h = r.line(), !h.isEmpty {
            let lower = h.lowercased()
            if lower.hasPrefix("transfer-encoding:") && lower.contains("chunked") { chunked = true }
            if lower.hasPrefix("content-length:") { length = Int(lower.dropFirst(15).trimmingSpaces) }
        }
        if chunked {
            while let sizeLine = r.line() {
                guard let size = Int(sizeLine.split(separator: ";").first.map(String.init)?.trimmingSpaces ?? "", radix: 16) else { break }
                if size == 0 { break }
                guard let chunk = r.bytes(size) else { break }
                _ = r.line()
                if !onBody(chunk) { break }
            }
        } else if let length {
            if let b = r.bytes(length) { _ = onBody(b) }
        } else {
            _ = onBody(r.rest())
        }
        return status
    }

    func request(_ method: String, _ path: String) throws(Failure) -> (Int, [UInt8]) {
        var body: [UInt8] = []
        let status = try stream(method, path) { body.append(contentsOf: $0); return true }
        return (status, body)
    }

    func json(_ method: String, _ path: String) throws(Failure) -> (Int, JSONValue) {
        let (status, body) = try request(method, path)
        if status == 401 { throw Failure(description: "the gateway refused the token (401): check [api] token_file") }
        guard let v = try? JSONParser.parse(body) else {
            throw Failure(description: "HTTP \(status) from \(address)\(path): \(String(decoding: body.prefix(300), as: UTF8.self))")
        }
        return (status, v)
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
