import BrumeConfig
import BrumeCore
import BrumeRules
import BrumeStore
import BrumeUplink
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The pipeline between sources and the outbox: the local rules (filters,
/// transforms, windows, derived metrics, triggers), then the outbox. Trigger
/// commands go to the command path; trigger events go upward with the command
/// results, ahead of the telemetry backlog.
final class Pipeline: ReadingSink {
    let outbox: Outbox
    private let engine: Locked<RulesEngine?>
    var rules: RulesEngine? { engine.withLock { $0 } }
    let commands = Locked<CommandService?>(nil)
    let logger: Logger
    /// Latest value per stream (status page) and live subscribers (`brume tail`).
    let live = LatestValues()
    let broadcaster = ReadingBroadcaster()
    init(outbox: Outbox, rules: RulesEngine?, logger: Logger) {
        self.outbox = outbox
        self.engine = Locked(rules)
        self.logger = logger
        var set = RecentSet(capacity: 20_000)
        for r in outbox.tailReadings(limit: 20_000) { set.insert(r) }
        recent = Locked(set)
    }

    /// Swaps the rules atomically; state of unchanged rules carries over.
    func replaceRules(_ new: RulesEngine?) {
        engine.withLock { old in
            if let new, let o = old { new.carryState(from: o) }
            old = new
        }
    }
    /// Readings seen lately: a broker redelivering a message that was already
    /// committed (the gateway died before its PUBACK left) is recognised and
    /// dropped, counted as `duplicate_redelivery`. Seeded from the outbox tail.
    let recent: Locked<RecentSet>
    let duplicatesDropped = Counter()

    @discardableResult
    func accept(_ readings: [Reading], from source: String, redelivery: Redelivery) -> UInt64 {
        // Only a broker redelivers, and only right after a reconnect: other
        // identical readings (a pulse counter, lines read in one chunk) are real.
        let fresh: [Reading]
        switch redelivery {
        case .never:
            fresh = readings
        case .possible:
            recent.withLock { set in for r in readings { set.insert(r) } }
            fresh = readings
        case .likely:
            fresh = recent.withLock { set in
                var out: [Reading] = []
                out.reserveCapacity(readings.count)
                for r in readings where !set.contains(r) {
                    set.insert(r)
                    out.append(r)
                }
                return out
            }
        }
        if fresh.count < readings.count { duplicatesDropped.add(Int64(readings.count - fresh.count)) }
        live.record(fresh, source: source)
        // A broker that delivers them again if they are lost: they may wait in memory for the
        // cloud's acknowledgement (the outbox's hold).
        let holdable = redelivery != .never
        guard let rules else {
            broadcaster.publish(fresh)
            return outbox.append(fresh, holdable: holdable)
        }
        return deliver(rules.process(fresh), holdable: holdable)
    }
    @discardableResult
    func deliver(_ out: RulesOutput, holdable: Bool = false) -> UInt64 {
        broadcaster.publish(out.readings)
        let ticket = outbox.append(out.readings, holdable: holdable)
        if !out.commands.isEmpty || !out.events.isEmpty {
            let service = commands.withLock { $0 }
            for c in out.commands {
                if let service {
                    service.submit(Command(id: "trigger-\(c.trigger)-\(c.at)", actuator: c.actuator, value: c.value, expires: nil, origin: "trigger:\(c.trigger)"))
                } else {
                    logger.error("trigger fired but no actuator path is configured", metadata: ["trigger": "\(c.trigger)"])
                }
            }
            for e in out.events {
                logger.notice("trigger \(e.kind)", metadata: ["trigger": "\(e.trigger)", "detail": "\(e.detail)"])
                service?.recordEvent(e)
            }
        }
        return ticket
    }
    func flushNow() { outbox.flush() }
    func commitSoon() { outbox.commitSoon() }
    func waitDurable(_ ticket: UInt64, timeout: Duration) -> Bool {
        outbox.waitProcessed(ticket, timeout: timeout)
    }
}
