import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket standing in for systemd's $NOTIFY_SOCKET.
final class NotifySocket {
    let path: String
    let fd: Int32
    init(dir: String) throws {
        path = "\(dir)/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else { throw TestError("bind \(path): \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
    /// Messages received within `seconds`.
    func receive(for seconds: Double) -> [String] {
        var out: [String] = []
        let end = Date().addingTimeInterval(seconds)
        var buf = [UInt8](repeating: 0, count: 4096)
        while Date() < end {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { out.append(String(decoding: buf[0..<n], as: UTF8.self)) }
        }
        return out
    }
    deinit { close(fd) }
}

@Suite(.serialized) struct SystemdEndToEndTests {
    @Test func aSecondGatewayOnTheSameDataDirRefusesToStart() throws {
        let rig = try Rig()
        try rig.startGateway()
        let second = try Child(TestKit.product("brume"), ["run", "--config", rig.config], dir: rig.dir, name: "brume-second")
        #expect(second.wait(timeout: 10) == 3)
        #expect(second.stderr.contains("another brume is already running with data_dir"))
        #expect(rig.gateway!.isRunning)
    }

    @Test func notifiesReadyPingsTheWatchdogAndSaysStopping() throws {
        let rig = try Rig()
        let notify = try NotifySocket(dir: rig.dir)
        let g = try Child(TestKit.product("brume"), ["run", "--config", rig.config], dir: rig.dir, name: "brume-systemd",
                          env: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "600000", "WATCHDOG_PID": ""])
        let first = notify.receive(for: 3)
        #expect(first.contains { $0.hasPrefix("READY=1") }, "got \(first)")
        #expect(first.filter { $0 == "WATCHDOG=1" }.count >= 3, "a ping every 300 ms: \(first)")
        g.signal(SIGHUP)
        let reload = notify.receive(for: 1)
        #expect(reload.contains("RELOADING=1") && reload.contains("READY=1"), "got \(reload)")
        g.terminate()
        #expect(notify.receive(for: 1).contains("STOPPING=1"))
        #expect(g.wait(timeout: 10) == 0)
    }
}
