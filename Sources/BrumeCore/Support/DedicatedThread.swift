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
