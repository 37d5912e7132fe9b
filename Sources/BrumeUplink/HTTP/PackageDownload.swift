import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// Downloads one file over HTTPS to `path` (for the self-update's package), streamed to disk,
/// at most `maxBytes`, redirects refused (the signed URL is the one fetched).
public enum PackageDownload {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ d: String) { description = d }
    }

    public static func fetch(url: String, caFile: String?, to path: String, maxBytes: Int, timeoutSeconds: Int64 = 600) async throws(Failure) -> Int {
        guard url.hasPrefix("https://") else { throw Failure("only https:// URLs are fetched, got \(url)") }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile { tls.trustRoots = .file(caFile) }
        var cfg = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow, timeout: .init(connect: .seconds(10), read: .seconds(60)))
        cfg.decompression = .disabled
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: cfg)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            try? await client.shutdown()
            throw Failure("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        var written = 0
        do {
            let resp = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(timeoutSeconds))
            guard resp.status == .ok else { throw Failure("HTTP \(resp.status.code) from \(url)") }
            if let len = resp.headers.first(name: "Content-Length").flatMap({ Int($0) }), len > maxBytes {
                throw Failure("the package is \(len) bytes, more than the \(maxBytes) allowed")
            }
            for try await chunk in resp.body {
                let (sum, overflow) = written.addingReportingOverflow(chunk.readableBytes)
                guard !overflow, sum <= maxBytes else { throw Failure("the package is larger than the \(maxBytes) bytes allowed") }
                try chunk.withUnsafeReadableBytes { raw in
                    var off = 0
                    while off < raw.count {
                        let n = write(fd, raw.baseAddress! + off, raw.count - off)
                        if n <= 0 { throw Failure("cannot write \(path): \(String(cString: strerror(errno)))") }
                        off += n
                    }
                }
                written = sum
            }
            guard fsync(fd) == 0 else { throw Failure("cannot fsync \(path): \(String(cString: strerror(errno)))") }
        } catch let f as Failure {
            close(fd); unlink(path); try? await client.shutdown()
            throw f
        } catch {
            close(fd); unlink(path); try? await client.shutdown()
            throw Failure("cannot download \(url): \(error)")
        }
        close(fd)
        try? await client.shutdown()
        return written
    }
}
