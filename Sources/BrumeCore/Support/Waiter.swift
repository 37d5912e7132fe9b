import Synchronization

/// A one-shot rendezvous between an async caller and another thread (a device
/// reply read by a source's thread, an MQTT acknowledgement), with a timeout.
/// Whoever comes first wins; later resumptions are ignored.
public final class Waiter<T: Sendable>: Sendable {
    private let state = Mutex<(done: Bool, continuation: CheckedContinuation<T?, Never>?, early: T?)>((false, nil, nil))

    public init() {}

    /// Delivers the value (from any thread). Returns false if it was too late.
    @discardableResult
    public func resume(_ value: T) -> Bool {
        let c: CheckedContinuation<T?, Never>? = state.withLock { s in
            if s.done { return nil }
            s.done = true
            if let c = s.continuation { s.continuation = nil; return c }
            s.early = value
            return nil
        }
        c?.resume(returning: value)
        return c != nil || state.withLock { $0.early != nil }
    }

    public var isDone: Bool { state.withLock { $0.done } }

    /// Waits for the value, or nil after `timeout`.
    public func wait(timeout: Duration) async -> T? {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: timeout)
                self.expire()
            }
            let v: T? = await withCheckedContinuation { (c: CheckedContinuation<T?, Never>) in
                let immediate: (Bool, T?) = state.withLock { s in
                    if s.done { return (true, s.early) }
                    s.continuation = c
                    return (false, nil)
                }
                if immediate.0 { c.resume(returning: immediate.1) }
            }
            group.cancelAll()
            return v
        }
    }

    private func expire() {
        let c: CheckedContinuation<T?, Never>? = state.withLock { s in
            if s.done { return nil }
            s.done = true
            let c = s.continuation
            s.continuation = nil
            return c
        }
        c?.resume(returning: nil)
    }
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
public func topicMatches(filter: String, topic: String) -> Bool {
    let f = filter.split(separator: "/", omittingEmptySubsequences: false)
    let t = topic.split(separator: "/", omittingEmptySubsequences: false)
    var i = 0
    while i < f.count {
        if f[i] == "#" { return true }
        if i >= t.count { return false }
        if f[i] != "+" && f[i] != t[i] { return false }
        i += 1
    }
    return i == t.count
}
