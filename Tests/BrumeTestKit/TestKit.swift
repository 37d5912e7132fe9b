import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Helpers for tests that run real peers (Mosquitto brokers, the brume and
/// firmware-sim executables) on loopback.
public enum TestKit {
    /// The folder holding the built products (brume, firmware-sim).
    public static var productsDir: URL {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent()
    }

    /// The repository's root folder (this file is Tests/BrumeTestKit/TestKit.swift).
    public static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    public static func product(_ name: String) -> String {
        productsDir.appendingPathComponent(name).path
    }

    /// A fresh temporary directory.
    public static func tempDir(_ prefix: String = "brume-test") -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(getpid())-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A TCP port that is free on 127.0.0.1 right now.
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    public static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    /// Polls `condition` every 20 ms until it holds or `timeout` seconds pass.
    @discardableResult
    public static func waitUntil(timeout: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }
}

/// A child process (posix_spawn) with stdout/stderr captured to files.
public final class Child: @unchecked Sendable {
    public let pid: pid_t
    public let stdoutPath: String
    public let stderrPath: String
    public let name: String
    private var status: Int32?

    public init(_ executable: String, _ args: [String], dir: String, name: String, env: [String: String] = [:]) throws {
        self.name = name
        stdoutPath = "\(dir)/\(name).out"
        stderrPath = "\(dir)/\(name).err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var environment = ProcessInfo.processInfo.environment
        for (k, v) in env { environment[k] = v }
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for e in envp { free(e) } }
        // Children start with no blocked signals and default handlers, whatever
        // the test runner's thread had (a blocked SIGTERM would be inherited).
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var p: pid_t = 0
        let rc = posix_spawn(&p, executable, &actions, &attr, argv, envp)
        guard rc == 0 else { throw TestError("cannot start \(executable): \(String(cString: strerror(rc)))") }
        pid = p
    }

    public var isRunning: Bool { reap(block: false) == nil }

    private func reap(block: Bool) -> Int32? {
        if let status { return status }
        var st: Int32 = 0
        let r = waitpid(pid, &st, block ? 0 : WNOHANG)
        if r == pid {
            // Exit code, or 128 + signal like a shell.
            status = (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
        }
        return status
    }

    public func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }
    public func terminate() { signal(SIGTERM) }
    public func kill9() {
        signal(SIGKILL)
        _ = reap(block: true)
    }

    /// Waits for exit; returns the exit status (128+N for signal N), or nil on timeout.
    @discardableResult
    public func wait(timeout: Double) -> Int32? {
        _ = TestKit.waitUntil(timeout: timeout) { !isRunning }
        return reap(block: false)
    }

    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    deinit {
        if isRunning { kill9() }
    }
}

/// A Mosquitto broker on a free loopback port, with persistence (so that a
/// restart keeps sessions) and a large queue (the default 1000 silently drops
/// QoS1 backlog).
public final class Mosquitto: @unchecked Sendable {
    public let port: Int
    public let dir: String
    private var child: Child?
    private var starts = 0

    /// `tls`: the listener speaks TLS with the PKI's server certificate; `requireClientCert`: mTLS.
    private var confBase = ""

    /// `extra`: more mosquitto.conf lines (an acl_file, message_size_limit ...).
    public init(dir: String, name: String = "broker", tls: TestPKI? = nil, requireClientCert: Bool = false, extra: String = "") throws {
        self.port = TestKit.freePort()
        self.dir = "\(dir)/\(name)"
        try FileManager.default.createDirectory(atPath: self.dir, withIntermediateDirectories: true)
        var tlsLines = ""
        if let tls {
            tlsLines = "cafile \(tls.ca)\ncertfile \(tls.serverCert)\nkeyfile \(tls.serverKey)\n"
            if requireClientCert { tlsLines += "require_certificate true\n" }
        }
        let conf = """
        listener \(port) 127.0.0.1
        \(tlsLines)user root
        allow_anonymous true
        persistence true
        persistence_location \(self.dir)/
        autosave_interval 1
        max_queued_messages 10000000
        max_queued_bytes 0
        max_inflight_messages 0
        set_tcp_nodelay true
        """
        confBase = conf
        try Mosquitto.config(conf, extra).write(toFile: "\(self.dir)/mosquitto.conf", atomically: true, encoding: .utf8)
        try start()
    }

    /// The base lines, less those `extra` sets again (Mosquitto keeps the first of a repeated option).
    static func config(_ base: String, _ extra: String) -> String {
        let keys = Set(extra.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
        let kept = base.split(separator: "\n").filter { line in !keys.contains(line.split(separator: " ").first.map(String.init) ?? "") }
        return kept.joined(separator: "\n") + "\n" + extra + "\n"
    }

    /// Restarts the broker with other extra lines (e.g. the ACL fixed).
    public func reconfigure(extra: String) throws {
        stop()
        try Mosquitto.config(confBase, extra).write(toFile: "\(dir)/mosquitto.conf", atomically: true, encoding: .utf8)
        try start()
    }

    public var url: String { "mqtt://127.0.0.1:\(port)" }

    public func start() throws {
        starts += 1
        child = try Child("/usr/sbin/mosquitto", ["-c", "\(dir)/mosquitto.conf"], dir: dir, name: "mosquitto-\(starts)")
        guard TestKit.waitUntil(timeout: 10, { TestKit.canConnect(port: port) }) else {
            throw TestError("mosquitto did not start on port \(port): \(child?.stderr ?? "")")
        }
    }

    /// Stops cleanly (SIGTERM: the broker saves its sessions).
    public func stop() {
        child?.terminate()
        child?.wait(timeout: 10)
        child = nil
    }

    deinit { stop() }
}

public struct TestError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// The report printed by `firmware-sim cloud`.
public struct CloudReport: Decodable, Sendable {
    public var batches: Int
    public var hist_batches: Int
    public var duplicate_batches: Int
    public var mismatched_duplicate_batches: Int
    public var undecodable: Int
    public var readings: Int
    public var unique: Int
    public var duplicates: Int
    public var missing: Int
    public var out_of_order: Int
    public var non_sequence: Int
    public var bytes: Int
    public struct Latency: Decodable, Sendable { public var p50: Int; public var p90: Int; public var p99: Int; public var max: Int }
    public var latency_ms: Latency

    public static func parse(_ text: String) throws -> CloudReport {
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("{\"batches\"") }) else {
            throw TestError("no cloud report in: \(text.suffix(500))")
        }
        return try JSONDecoder().decode(CloudReport.self, from: Data(line.utf8))
    }
}
