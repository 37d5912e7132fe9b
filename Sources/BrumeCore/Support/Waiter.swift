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

/// MQTT topic filter matching (`+` one level, `#` the rest, also the parent level: `a/#`
/// matches `a`). Byte by byte, without allocating: it runs for every message a source receives.
public func topicMatches(filter: String, topic: String) -> Bool {
    var filter = filter, topic = topic
    return filter.withUTF8 { f in topic.withUTF8 { t in topicMatches(filter: f, topic: t) } }
}

public func topicMatches(filter f: UnsafeBufferPointer<UInt8>, topic t: UnsafeBufferPointer<UInt8>) -> Bool {
    let slash = UInt8(ascii: "/"), plus = UInt8(ascii: "+"), hash = UInt8(ascii: "#")
    var fi = 0, ti = 0
    /// The filter level at `i` is exactly `c` ("#", "+"; "#x" is a literal level).
    func level(_ i: Int, is c: UInt8) -> Bool { i < f.count && f[i] == c && (i + 1 == f.count || f[i + 1] == slash) }
    while fi < f.count {
        // At the start of a filter level.
        if level(fi, is: hash) { return true }
        if level(fi, is: plus) {
            while ti < t.count && t[ti] != slash { ti += 1 }
            fi += 1
        } else {
            while fi < f.count && f[fi] != slash {
                guard ti < t.count, t[ti] == f[fi] else { return false }
                fi += 1; ti += 1
            }
            if ti < t.count && t[ti] != slash { return false }
        }
        // Both at the end of a level.
        if fi == f.count { return ti == t.count }
        // f[fi] is "/": the topic needs a next level too, except before a final "#".
        fi += 1
        if ti == t.count { return level(fi, is: hash) }
        ti += 1
    }
    // The filter is empty, or ends with an empty level ("a/"): so must the topic.
    return ti == t.count
}
