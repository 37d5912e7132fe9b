import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A thread of its own, for work that blocks in C libraries (libmosquitto's network loop, a
/// serial port's reads, libmodbus transactions, the outbox's SQLite writer): such work must not
/// occupy Swift's cooperative pool, which has one thread per core.
public enum DedicatedThread {
    /// Starts `body` on a new thread; returns its id, to be joined with `pthread_join`, or
    /// detached with `detached: true`. `name` says what it is for (crash reports, logs).
    @discardableResult
    public static func start(_ name: String, detached: Bool = false, _ body: @escaping @Sendable () -> Void) -> pthread_t {
        final class Box: @unchecked Sendable {
            let name: String
            let body: @Sendable () -> Void
            init(_ name: String, _ body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
        }
        var tid = pthread_t()
        let box = Unmanaged.passRetained(Box(name, body))
        let rc = pthread_create(&tid, nil, { arg in
            let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            b.body()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        if detached { pthread_detach(tid) }
        return tid
    }
}

/// The worker thread of a polling source (1-Wire, GPIO, LoRaWAN): started once, asked to end
/// with `stop()` (its body loops while `isRunning`) and joined.
public final class WorkerThread: Sendable {
    private let running = Atomic<Bool>(false)
    private let thread = Mutex<pthread_t?>(nil)

    public init() {}

    public var isRunning: Bool { running.load(ordering: .acquiring) }

    /// Starts `body` on a thread named `name`; false (nothing started) if it already runs.
    @discardableResult
    public func start(_ name: String, _ body: @escaping @Sendable () -> Void) -> Bool {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        let t = DedicatedThread.start(name, body)
        thread.withLock { $0 = t }
        return true
    }

    /// Ends the loop and waits for the thread; false if it was not running.
    @discardableResult
    public func stop() -> Bool {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return false }
        if let t = thread.withLock({ let x = $0; $0 = nil; return x }) { pthread_join(t, nil) }
        return true
    }
}
