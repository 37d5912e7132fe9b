#if canImport(Glibc)
import Glibc
#endif

/// The first `limit` bytes of a small text file (sysfs, procfs), as UTF-8 (invalid bytes
/// replaced); nil when it is absent or cannot be read.
public func readSmallFile(_ path: String, limit: Int = 65536) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: limit)
    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n >= 0 else { return nil }
    return String(decoding: buf[0..<n], as: UTF8.self)
}
