import Foundation

/// A task executor backed by one dedicated thread.
///
/// The test process shares Swift's cooperative pool (as wide as the machine: 2 threads here)
/// with end-to-end tests that block it while they wait for processes; an async test run with
/// `onDedicatedThread` keeps making progress meanwhile. Child tasks (task groups, async let)
/// inherit the preference; unstructured `Task {}` does not.
public final class ThreadExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `jobs` is guarded by `cond`.
    private let cond = NSCondition()
    private var jobs: [UnownedJob] = []
    public static let shared = ThreadExecutor()

    public init() {
        let t = Thread { [unowned self] in self.loop() }
        t.name = "test-executor"
        t.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let j = UnownedJob(job)
        cond.lock()
        jobs.append(j)
        cond.signal()
        cond.unlock()
    }

    private func loop() {
        while true {
            cond.lock()
            while jobs.isEmpty { cond.wait() }
            let j = jobs.removeFirst()
            cond.unlock()
            j.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// Runs `body` (and its child tasks) on the shared dedicated thread.
public func onDedicatedThread<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
    try await withTaskExecutorPreference(ThreadExecutor.shared) { try await body() }
}
