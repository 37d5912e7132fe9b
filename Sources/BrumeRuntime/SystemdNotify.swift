#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd: a datagram to $NOTIFY_SOCKET.
/// `READY=1` once the gateway runs, `WATCHDOG=1` while it is healthy,
/// `RELOADING=1`/`READY=1` around a reload, `STOPPING=1` on shutdown.
/// Does nothing when not started by systemd (`Type=notify`).
enum SystemdNotify {
    static func send(_ state: String) {
        guard let path = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), !path.isEmpty else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 } // abstract namespace
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        var message = Array(state.utf8)
        _ = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                sendto(fd, &message, message.count, Int32(MSG_NOSIGNAL), sa, len)
            }
        }
    }

    /// Half the watchdog timeout systemd expects pings within, if it asked for them.
    static var watchdogInterval: Duration? {
        guard let usec = getenv("WATCHDOG_USEC").flatMap({ Int64(String(cString: $0)) }), usec > 0 else { return nil }
        if let pid = getenv("WATCHDOG_PID").flatMap({ Int32(String(cString: $0)) }), pid != getpid() { return nil } // meant for another process
        return .microseconds(usec / 2)
    }
}
