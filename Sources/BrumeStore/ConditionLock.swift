#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a condition variable (pthread), for the outbox writer thread
/// that must sleep until readings arrive or its commit deadline passes.
/// Swift's `Mutex` has no condition variable.
final class ConditionLock: @unchecked Sendable {
    // @unchecked: the pthread objects are only touched through pthread calls.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    func broadcast() { pthread_cond_broadcast(cond) }

    /// Waits (lock held) until signalled or `deadlineNanos` (CLOCK_MONOTONIC) passes.
    func wait(untilMonotonicNanos deadline: UInt64?) {
        guard let deadline else {
            pthread_cond_wait(cond, mutex)
            return
        }
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        pthread_cond_timedwait(cond, mutex, &ts)
    }

    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}
