import BrumeCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One edge seen on an input line.
public struct GPIOEdge: Sendable, Equatable {
    public var line: Int
    public var rising: Bool
    /// CLOCK_MONOTONIC, ns (the kernel's timestamp of the edge).
    public var nanos: UInt64
    public init(line: Int, rising: Bool, nanos: UInt64) { self.line = line; self.rising = rising; self.nanos = nanos }
}

public enum GPIOBias: String, Sendable { case asIs = "as-is", disable, pullUp = "pull-up", pullDown = "pull-down" }

public struct GPIOError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A GPIO chip as the source uses it. `LibGPIODChip` is the real one (the kernel's character
/// device through libgpiod 1.6); `SimulatedChip` is the bounded test seam below it — this
/// machine's kernel has no gpio-sim and no GPIO chip at all, so everything above this protocol
/// (debounce, counting, persistence, outputs, the command path) is tested on it, and the few
/// libgpiod calls are not (docs/configuration.md says so).
public protocol GPIOChip: AnyObject, Sendable {
    var label: String { get }
    /// Edge events on both edges (the source decides what counts).
    func requestInput(line: Int, bias: GPIOBias, activeLow: Bool, consumer: String) throws(GPIOError)
    func requestOutput(line: Int, initial: Bool, activeLow: Bool, consumer: String) throws(GPIOError)
    func value(line: Int) throws(GPIOError) -> Bool
    func set(line: Int, _ value: Bool) throws(GPIOError)
    /// Edges on the requested inputs, waiting up to `timeoutMillis` for the first.
    func waitEdges(timeoutMillis: Int32) throws(GPIOError) -> [GPIOEdge]
    func close()
}

/// `chip = "simulated:DIR"` (tests and the demo only; logged as such): input levels come from
/// lines "LINE LEVEL [NANOS]" (0/1; NANOS: the writer's CLOCK_MONOTONIC, as the kernel stamps
/// edges — else the time it is read) written to the FIFO `DIR/in` (firmware-sim gpio writes
/// it); output levels are written to `DIR/out-LINE` ("0\n"/"1\n") for a test to read.
public final class SimulatedChip: GPIOChip {
    public let label: String
    let dir: String
    private struct State {
        var levels: [Int: Bool] = [:]
        var inputs: [Int: Bool] = [:] // line → active low
        var outputs: [Int: Bool] = [:]
        var pending: [GPIOEdge] = []
        var buffer: [UInt8] = []
    }
    private let state = Mutex(State())
    private let fd: Int32

    public init(dir: String) throws(GPIOError) {
        self.dir = dir
        label = "simulated:\(dir)"
        let path = "\(dir)/in"
        if access(path, F_OK) != 0, mkfifo(path, 0o660) != 0 {
            throw GPIOError("cannot create the simulated chip's FIFO \(path): \(String(cString: strerror(errno)))")
        }
        // Read-write: the FIFO never reports end of file when a writer goes.
        fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw GPIOError("cannot open \(path): \(String(cString: strerror(errno)))") }
    }

    public func requestInput(line: Int, bias: GPIOBias, activeLow: Bool, consumer: String) throws(GPIOError) {
        state.withLock {
            $0.inputs[line] = activeLow
            // Idle level: a pull-up holds the line high, a pull-down low.
            if $0.levels[line] == nil { $0.levels[line] = bias == .pullUp }
        }
    }

    public func requestOutput(line: Int, initial: Bool, activeLow: Bool, consumer: String) throws(GPIOError) {
        state.withLock { $0.outputs[line] = activeLow }
        try set(line: line, initial)
    }

    public func value(line: Int) throws(GPIOError) -> Bool {
        try state.withLock { s throws(GPIOError) -> Bool in
            guard let raw = s.levels[line] else { throw GPIOError("line \(line) is not requested") }
            let activeLow = s.inputs[line] ?? s.outputs[line] ?? false
            return raw != activeLow
        }
    }

    public func set(line: Int, _ value: Bool) throws(GPIOError) {
        let activeLow: Bool = try state.withLock { s throws(GPIOError) -> Bool in
            guard let a = s.outputs[line] else { throw GPIOError("line \(line) is not an output") }
            s.levels[line] = value != a
            return a
        }
        let text = "\(value != activeLow ? 1 : 0)\n"
        let path = "\(dir)/out-\(line)"
        let f = open(path + ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard f >= 0 else { throw GPIOError("cannot write \(path): \(String(cString: strerror(errno)))") }
        _ = text.withCString { write(f, $0, strlen($0)) }
        Glibc.close(f)
        rename(path + ".tmp", path)
    }

    public func waitEdges(timeoutMillis: Int32) throws(GPIOError) -> [GPIOEdge] {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, timeoutMillis) > 0 {
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                let now = monotonicNanos()
                state.withLock { s in
                    s.buffer += buf[0..<n]
                    while let nl = s.buffer.firstIndex(of: UInt8(ascii: "\n")) {
                        let words = String(decoding: s.buffer[..<nl], as: UTF8.self).split(separator: " ")
                        s.buffer.removeSubrange(...nl)
                        guard words.count == 2 || words.count == 3, let line = Int(words[0]), let level = Int(words[1]), s.inputs[line] != nil else { continue }
                        let stamp = words.count == 3 ? UInt64(words[2]) ?? now : now
                        let raw = level != 0
                        if s.levels[line] != raw {
                            s.levels[line] = raw
                            s.pending.append(GPIOEdge(line: line, rising: raw, nanos: stamp))
                        }
                    }
                    if s.buffer.count > 4096 { s.buffer.removeAll() }
                }
            }
        }
        return state.withLock { s in
            let e = s.pending
            s.pending.removeAll()
            return e
        }
    }

    public func close() { Glibc.close(fd) }
}
