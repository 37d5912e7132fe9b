import ServiceLifecycle

/// One stage of the gateway as a swift-service-lifecycle `Service`: `start`, then its loops run
/// until the group shuts it down gracefully, then `stop`. The group (`Gateway.services()`)
/// orders the stages: they stop in reverse order, each after the one above has finished.
struct Stage: Service {
    let name: String
    let start: @Sendable () async -> Void
    let loops: [@Sendable () async -> Void]
    let stop: @Sendable () async -> Void
    /// Cancel the loops before `stop` (loops that serve requests); by default `stop` runs first
    /// and the loops are cancelled after it (an uplink's loop drains while `stop` waits).
    let cancelLoopsFirst: Bool
    /// The stage ends (and with it, gracefully, the group) as soon as its first loop returns.
    let endsWithFirstLoop: Bool

    init(_ name: String, start: @escaping @Sendable () async -> Void = {}, loops: [@Sendable () async -> Void] = [],
         stop: @escaping @Sendable () async -> Void = {}, cancelLoopsFirst: Bool = false, endsWithFirstLoop: Bool = false) {
        self.name = name
        self.start = start
        self.loops = loops
        self.stop = stop
        self.cancelLoopsFirst = cancelLoopsFirst
        self.endsWithFirstLoop = endsWithFirstLoop
    }

    func run() async throws {
        await start()
        await withTaskGroup(of: Void.self) { group in
            for loop in loops { group.addTask { await loop() } }
            if endsWithFirstLoop {
                // Whichever comes first: the loop's end or the group's shutdown.
                group.addTask { try? await gracefulShutdown() }
                await group.next()
                group.cancelAll()
                return
            }
            try? await gracefulShutdown()
            if cancelLoopsFirst {
                group.cancelAll()
                await stop()
            } else {
                await stop()
                group.cancelAll()
            }
        }
        if endsWithFirstLoop { await stop() }
    }
}
