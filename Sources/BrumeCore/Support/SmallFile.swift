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

/// Replaces `path` with `text` so that a power cut leaves the old file or the new one, whole:
/// a temporary file beside it, written, fsync'd, renamed over it, then the folder fsync'd.
/// Returns nil, or what failed.
public func atomicWrite(_ text: String, to path: String, mode: mode_t = 0o640) -> String? {
    let tmp = path + ".tmp.\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { return "cannot write \(tmp): \(String(cString: strerror(errno)))" }
    let bytes = Array(text.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { let e = errno; close(fd); unlink(tmp); return "cannot write \(tmp): \(String(cString: strerror(e)))" }
        off += n
    }
    guard fsync(fd) == 0 else { let e = errno; close(fd); unlink(tmp); return "cannot fsync \(tmp): \(String(cString: strerror(e)))" }
    close(fd)
    guard rename(tmp, path) == 0 else { let e = errno; unlink(tmp); return "cannot rename \(tmp): \(String(cString: strerror(e)))" }
    let dir = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    return nil
}
