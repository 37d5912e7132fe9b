import BrumeCore
import BrumeStore
import Logging
import Synchronization

/// How an uplink forms and paces its batches (the Runtime maps `[uplink.*]` to it).
public struct SyncOptions: Sendable, Hashable {
    /// The uplink's name: its cursor in the outbox and its label in status and metrics.
    public var name: String
    public var batchMaxReadings: Int
    public var batchMaxDelayMillis: Int64
    /// A batch never goes out larger than this (encoded, before compression); nil: no cap
    /// beyond what the endpoint says (MQTT 5 Maximum Packet Size).
    public var batchMaxBytes: Int?
    /// "device/metric" globs; empty: everything.
    public var match: [String]
    /// Bandwidth cap (metered links); nil: none.
    public var maxBytesPerSecond: Int64?
    /// Daily budget (metered links): bytes sent in any 24 hours; nil: none.
    public var maxBytesPerDay: Int64?
    /// First wait after a transient failure (doubling, jittered, to 30 s).
    public var retryInitial: Duration = .milliseconds(200)
    /// First wait while the endpoint is misconfigured (doubling, jittered, to 60 s).
    public var heldRetryInitial: Duration = .seconds(5)
    /// Live first: when a (re)connection finds more than this many readings waiting, fresh
    /// readings go in a live lane ahead of the backlog, which drains behind them (historical).
    public var liveFirstAfter: Int64 = 2000

    public init(name: String, batchMaxReadings: Int = 500, batchMaxDelayMillis: Int64 = 1000, batchMaxBytes: Int? = nil,
                match: [String] = [], maxBytesPerSecond: Int64? = nil) {
        self.name = name
        self.batchMaxReadings = batchMaxReadings
        self.batchMaxDelayMillis = batchMaxDelayMillis
        self.batchMaxBytes = batchMaxBytes
        self.match = match
        self.maxBytesPerSecond = maxBytesPerSecond
    }
}

/// The one sync loop every uplink runs: outbox → batch → encode → deliver (through a
/// `BatchSink`) → outcome → outbox ack, with a bounded in-flight window.
///
/// Every batch is recorded in the outbox before it is first sent; after a reconnect, a
/// retry or a restart the unacknowledged ones are sent again in order, byte for byte (same
/// id), before new batches. What a delivery came to is decided here, once, for every kind:
/// - accepted: acknowledged in the outbox (the only way readings leave it);
/// - retry: held for the endpoint's `Retry-After` or a jittered backoff, then resent;
/// - misconfigured: the backlog is held (nothing is acknowledged, nothing dead-lettered),
///   the fault is shown in status/metrics/logs, and it is tried again every minute or so;
/// - rejected: this batch goes to the dead-letter table, the queue moves on;
/// - too large: split in two (new ids; the old one was never accepted) and resent.
/// All state changes happen on the loop's task; sinks only post outcomes and poke.
public final class SyncLoop: Sendable {
    public let options: SyncOptions
    public let sink: any BatchSink
    public let stats = UplinkStats()
    public let gatewayID: String
    private let outbox: Outbox
    private let key: String
    private let match: [Glob]
    private let bandwidth: ByteRateLimiter?
    public let budget: DailyBudget?
    private let budgetLimiter = LogRateLimiter(burst: 1, interval: .seconds(3600))
    private let logger: Logger
    private let now: @Sendable () -> Int64
    private let faultLimiter = LogRateLimiter(burst: 3, interval: .seconds(60))

    private struct Posted { var generation: UInt64; var token: UInt64; var outcome: DeliveryOutcome }
    private let posted = Locked<[Posted]>([])
    private let poke: AsyncStream<Void>.Continuation
    private let pokes: AsyncStream<Void>

    public init(options: SyncOptions, sink: any BatchSink, gatewayID: String, outbox: Outbox, logger: Logger,
                now: @escaping @Sendable () -> Int64 = wallClockMillis) {
        self.options = options
        self.sink = sink
        self.gatewayID = gatewayID
        self.outbox = outbox
        self.key = outbox.uplinkKey(options.name)
        self.match = options.match.compactMap { try? Glob.parse($0).get() }
        self.bandwidth = options.maxBytesPerSecond.map { ByteRateLimiter(bytesPerSecond: $0) }
        self.budget = options.maxBytesPerDay.map { DailyBudget(bytesPerDay: $0) }
        var logger = logger
        logger[metadataKey: "uplink.name"] = "\(options.name)"
        logger[metadataKey: "uplink.kind"] = "\(sink.kind)"
        self.logger = logger
        self.now = now
        (pokes, poke) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public var state: UplinkState { sink.state }

    /// Runs until the task is cancelled or `shutdown` is called.
    public func run() async {
        let poke = self.poke
        sink.start(poke: { poke.yield() })
        await withTaskGroup(of: Void.self) { group in
            // A ticker: batch delays, holds and the bandwidth budget need the loop to look again.
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(50))
                    poke.yield()
                }
            }
            group.addTask {
                for await _ in self.outbox.commits { poke.yield() }
            }
            var loop = LoopState()
            loop.backoff = Backoff(initial: options.retryInitial, maximum: .seconds(30))
            loop.slowBackoff = Backoff(initial: options.heldRetryInitial, maximum: .seconds(60))
            for await _ in pokes {
                if Task.isCancelled { break }
                pump(&loop)
            }
            group.cancelAll()
        }
    }

    /// Lets in-flight batches be acknowledged (bounded), then stops the sink. Unacknowledged
    /// batches stay in the outbox.
    public func shutdown(drainTimeout: Duration = .seconds(2)) async {
        let deadline = ContinuousClock.now + drainTimeout
        while ContinuousClock.now < deadline, sink.connection != nil, stats.batchesSent.current - stats.batchesAcked.current > 0 {
            try? await Task.sleep(for: .milliseconds(20))
        }
        await sink.stop(drain: .milliseconds(200))
        poke.finish()
    }

    struct Inflight {
        var batch: EncodedBatch
        var sentAt: UInt64
        /// Taken from memory (the live lane), not from the database.
        var live = false
    }

    struct LoopState {
        var generation: UInt64?
        var reload = true
        var inflight: [UInt64: Inflight] = [:]
        var nextToken: UInt64 = 0
        var resend: [BatchRecord] = []
        var resendIndex = 0
        var buffer: [UInt8] = []
        /// Nothing goes before this (monotonic ns): a retry's wait or a held backlog.
        var holdUntil: UInt64 = 0
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(30))
        var slowBackoff = Backoff(initial: .seconds(5), maximum: .seconds(60))
        /// The endpoint said "too large" for a body of this size: stay below it.
        var learnedMaxBytes: Int?
        /// Live first: the first sequence number of the live lane while a backlog drains
        /// behind it (nil: one lane).
        var liveFrom: Int64?
        /// Taking live batches from memory (connected, nothing to resend, no backlog lane).
        var memoryLive = false
        /// Readings per live batch after one was too large.
        var liveMaxReadings: Int?
        /// Nothing committed waits for this uplink: live batches from memory may go (in order).
        var databaseLaneEmpty = false
    }

    private func pump(_ loop: inout LoopState) {
        let outcomes = posted.withLock { p -> [Posted] in
            let r = p
            p.removeAll(keepingCapacity: true)
            return r
        }
        for p in outcomes where p.generation == loop.generation {
            guard let f = loop.inflight.removeValue(forKey: p.token) else { continue }
            handle(p.outcome, of: f, &loop)
        }
        let gen = sink.connection
        if gen != loop.generation || loop.reload {
            // A new connection, or a retry: what was in flight is sent again, in order.
            if gen != loop.generation { outbox.setConnected(uplink: options.name, gen != nil) }
            loop.generation = gen
            loop.reload = false
            loop.inflight.removeAll()
            if loop.memoryLive {
                // Live batches in flight go again, from memory or, once committed, from the database.
                outbox.setLive(uplink: options.name, active: false)
                loop.memoryLive = false
            }
            loop.resend = gen == nil ? [] : outbox.unackedBatches(uplink: key)
            loop.resendIndex = 0
            if !loop.resend.isEmpty {
                logger.info("resending unacknowledged batches", metadata: ["batches": "\(loop.resend.count)"])
            }
            // Live first: what is read from now on overtakes what waited during the outage.
            if gen != nil, loop.liveFrom == nil, (outbox.backlog()[key] ?? 0) > options.liveFirstAfter {
                // Readings of the last 2 s are live too: they were read while the link came back.
                loop.liveFrom = outbox.firstSeq(committedWithin: 2000)
                logger.info("backlog drains behind live readings", metadata: ["backlog": "\(outbox.backlog()[key] ?? 0)", "live_from_seq": "\(loop.liveFrom!)"])
            }
        }
        guard loop.generation != nil, monotonicNanos() >= loop.holdUntil else { return }
        while loop.inflight.count < max(1, sink.window) {
            // A metered link: wait (the 50 ms tick pokes again) until the budget allows more.
            if let bandwidth, !bandwidth.mayTake() { return }
            let rec: BatchRecord
            var isResend = false
            var fromMemory: [Reading]?
            if loop.resendIndex < loop.resend.count {
                rec = loop.resend[loop.resendIndex]
                loop.resendIndex += 1
                isResend = true
            } else if let r = nextBatch(&loop) {
                rec = r
            } else if loop.databaseLaneEmpty, let (r, rs) = nextLiveBatch(&loop) {
                rec = r
                fromMemory = rs
            } else {
                return
            }
            guard var readings = fromMemory ?? outbox.readings(of: rec) else {
                // Evicted or quarantined meanwhile: nothing left to send for it.
                outbox.ack(rec)
                continue
            }
            var seqs: [Int64]?
            if !match.isEmpty {
                // Routing: this uplink carries only what its patterns match.
                var kept: [Reading] = []
                var keptSeqs: [Int64] = []
                for (i, r) in readings.enumerated() where match.contains(where: { $0.matches("\(r.device)/\(r.metric)") }) {
                    kept.append(r)
                    keptSeqs.append(rec.first + Int64(i))
                }
                if kept.isEmpty {
                    if fromMemory != nil { outbox.ackLive(rec) } else { outbox.ack(rec) }
                    continue
                }
                if kept.count < readings.count { seqs = keptSeqs }
                readings = kept
            }
            let id = rec.id(gateway: gatewayID)
            loop.buffer.removeAll(keepingCapacity: true)
            let plain = sink.encode(rec, id: id, readings: readings, seqs: seqs, into: &loop.buffer)
            if fromMemory != nil, let cap = byteCap(loop), loop.buffer.count > cap, rec.count > 1 {
                // Too large from memory: smaller live batches, the same readings again.
                loop.liveMaxReadings = max(1, rec.count * cap / max(1, loop.buffer.count) * 9 / 10)
                outbox.restartLive(uplink: options.name)
                continue
            }
            if let cap = byteCap(loop), loop.buffer.count > cap, rec.count > 1 {
                // Never send what the endpoint cannot take: split before the first send.
                split(rec, bodyBytes: loop.buffer.count, cap: cap, &loop)
                continue
            }
            if let budget, !budget.allows(loop.buffer.count) {
                // Today's budget is spent: the batch stays recorded and goes when it allows.
                stats.budgetHeld.set(true)
                if budgetLimiter.admit() != nil {
                    logger.warning("uplink: the daily byte budget is spent; readings wait in the outbox",
                                   metadata: ["budget_bytes_per_day": "\(budget.bytesPerDay)", "used_bytes": "\(budget.used)"])
                }
                // Kept first in line: sent when the budget allows.
                if fromMemory != nil {
                    outbox.setLive(uplink: options.name, active: false)
                    loop.memoryLive = false
                } else if isResend { loop.resendIndex -= 1 } else { loop.resend.insert(rec, at: loop.resendIndex) }
                return
            }
            stats.budgetHeld.set(false)
            let token = loop.nextToken
            loop.nextToken += 1
            let batch = EncodedBatch(record: rec, id: id, readings: readings.count, body: loop.buffer, plainBytes: plain)
            loop.inflight[token] = Inflight(batch: batch, sentAt: monotonicNanos(), live: fromMemory != nil)
            stats.batchesSent.add()
            stats.bytesSent.add(Int64(batch.body.count))
            stats.bytesUncompressed.add(Int64(plain))
            bandwidth?.take(batch.body.count)
            budget?.take(batch.body.count)
            if isResend { stats.resends.add() }
            let generation = loop.generation!
            let poke = self.poke
            sink.deliver(batch) { [posted] outcome in
                posted.withLock { $0.append(Posted(generation: generation, token: token, outcome: outcome)) }
                poke.yield()
            }
            // An outcome posted synchronously (e.g. not connected) is handled on the next poke.
            if posted.withLock({ !$0.isEmpty }) { return }
        }
    }

    /// A live batch from memory, once nothing older waits for this uplink: connected, nothing to
    /// resend, no backlog lane. Short delay: the hold window is for the cloud's answer.
    private func nextLiveBatch(_ loop: inout LoopState) -> (BatchRecord, [Reading])? {
        guard loop.generation != nil, loop.liveFrom == nil, loop.resendIndex >= loop.resend.count else { return nil }
        if !loop.memoryLive {
            outbox.setLive(uplink: options.name, active: true)
            loop.memoryLive = true
        }
        return outbox.nextLiveBatch(uplink: options.name, maxReadings: loop.liveMaxReadings ?? options.batchMaxReadings,
                                    maxDelayMillis: min(options.batchMaxDelayMillis, 100))
    }

    /// The live lane first (or the only lane); the backlog lane with what is left of the
    /// window (one slot is kept for live readings).
    private func nextBatch(_ loop: inout LoopState) -> BatchRecord? {
        guard let from = loop.liveFrom else {
            switch outbox.nextBatch(uplink: key, maxReadings: options.batchMaxReadings, maxDelayMillis: options.batchMaxDelayMillis) {
            case .batch(let r):
                loop.databaseLaneEmpty = false
                return r
            case .waitUntil:
                loop.databaseLaneEmpty = false // committed readings wait for their batch: they go first
                return nil
            case .empty:
                loop.databaseLaneEmpty = true
                return nil
            }
        }
        loop.databaseLaneEmpty = false
        if case .batch(let r) = outbox.nextBatch(uplink: key, maxReadings: options.batchMaxReadings, maxDelayMillis: options.batchMaxDelayMillis,
                                                 lane: from...Int64.max) {
            return r
        }
        guard loop.inflight.count < max(1, sink.window - 1) else { return nil }
        switch outbox.nextBatch(uplink: key, maxReadings: options.batchMaxReadings, maxDelayMillis: 0, lane: 0...(from - 1), backlog: true) {
        case .batch(let r): return r
        case .waitUntil: return nil
        case .empty:
            // The backlog is all batched: one lane again.
            loop.liveFrom = nil
            logger.info("backlog sent: one lane again")
            return nil
        }
    }

    private func byteCap(_ loop: LoopState) -> Int? {
        [options.batchMaxBytes, sink.maxBodyBytes, loop.learnedMaxBytes].compactMap { $0 }.min()
    }

    private func handle(_ outcome: DeliveryOutcome, of f: Inflight, _ loop: inout LoopState) {
        let rec = f.batch.record
        switch outcome {
        case .accepted:
            if f.live { outbox.ackLive(rec) } else { outbox.ack(rec) }
            stats.batchesAcked.add()
            stats.readingsAcked.add(Int64(f.batch.readings))
            let nanos = monotonicNanos() &- f.sentAt
            stats.lastAckLatencyMicros.set(Int64(nanos / 1000))
            stats.lastAckMillis.set(now())
            stats.latencyObserver(.nanoseconds(Int64(nanos)))
            loop.backoff.reset()
            loop.slowBackoff.reset()
            if let fault = stats.fault.current {
                stats.fault.set(nil)
                stats.lastConnectMillis.set(now())
                logger.notice("uplink delivering again", metadata: ["uplink.endpoint": "\(sink.endpoint)", "fault.was": "\(fault.reason)"])
            }
        case .retry(let reason, let detail, let after):
            stats.publishErrors.add(reason)
            setFault(UplinkFault(reason: reason, detail: detail, misconfigured: false, sinceMillis: now()), level: .warning)
            hold(min(after ?? loop.backoff.next(), .seconds(300)), &loop)
        case .misconfigured(let reason, let detail):
            stats.publishErrors.add(reason)
            setFault(UplinkFault(reason: reason, detail: detail, misconfigured: true, sinceMillis: now()), level: .error)
            hold(loop.slowBackoff.next(), &loop)
        case .rejected(let reason, let status, let detail):
            stats.publishErrors.add(reason)
            stats.deadLettered.add(Int64(f.batch.readings))
            logger.error("uplink: the endpoint rejected a batch; it is kept as a dead letter (brume buffer dead-letters)",
                         metadata: ["batch": "\(f.batch.id)", "reason": "\(reason)", "status": "\(status)", "readings": "\(f.batch.readings)",
                                    "response": "\(detail.prefix(300))"])
            outbox.deadLetter(rec, status: status, response: detail, body: f.batch.body)
            if f.live { outbox.ackLive(rec) } // kept aside: not this uplink's to send again
        case .tooLarge(let detail):
            stats.publishErrors.add("too_large")
            if f.live && rec.count > 1 {
                loop.learnedMaxBytes = min(loop.learnedMaxBytes ?? Int.max, max(256, f.batch.plainBytes * 3 / 4))
                loop.liveMaxReadings = max(1, rec.count / 2)
                outbox.restartLive(uplink: options.name)
                loop.reload = true // the live lane starts again from what was not acknowledged
            } else if rec.count > 1 {
                loop.learnedMaxBytes = min(loop.learnedMaxBytes ?? Int.max, max(256, f.batch.plainBytes * 3 / 4))
                split(rec, bodyBytes: f.batch.plainBytes, cap: loop.learnedMaxBytes!, &loop)
                // Everything after it is resent in order, after the halves.
                loop.reload = true
            } else {
                // One reading too large for the endpoint: it can never be delivered there.
                stats.deadLettered.add(1)
                logger.error("uplink: a single reading is too large for the endpoint; it is kept as a dead letter",
                             metadata: ["batch": "\(f.batch.id)", "bytes": "\(f.batch.body.count)", "detail": "\(detail)"])
                outbox.deadLetter(rec, status: 413, response: "too large: \(detail)", body: f.batch.body)
                if f.live { outbox.ackLive(rec) }
            }
        }
    }

    /// Nothing more goes until `d` has passed; then everything not acknowledged is resent in order.
    private func hold(_ d: Duration, _ loop: inout LoopState) {
        let nanos = UInt64(max(0, d.components.seconds)) &* 1_000_000_000 &+ UInt64(max(0, d.components.attoseconds / 1_000_000_000))
        loop.holdUntil = max(loop.holdUntil, monotonicNanos() &+ nanos)
        loop.reload = true
    }

    private func split(_ rec: BatchRecord, bodyBytes: Int, cap: Int, _ loop: inout LoopState) {
        // Aim below the cap in proportion, at least one reading per half.
        let share = Double(cap) / Double(max(1, bodyBytes)) * 0.9
        let firstCount = max(1, min(rec.count - 1, Int(Double(rec.count) * min(0.5, share))))
        guard let (a, b) = outbox.split(rec, firstCount: firstCount) else { return }
        stats.splits.add()
        if loop.resendIndex <= loop.resend.count {
            loop.resend.insert(contentsOf: [a, b], at: loop.resendIndex)
        }
    }

    private func setFault(_ fault: UplinkFault, level: Logger.Level) {
        let previous = stats.fault.current
        var f = fault
        if let previous, previous.reason == fault.reason { f.sinceMillis = previous.sinceMillis }
        stats.fault.set(f)
        if previous?.reason != fault.reason || faultLimiter.admit() != nil {
            logger.log(level: level, "uplink: not delivering: \(fault.detail)",
                       metadata: ["uplink.endpoint": "\(sink.endpoint)", "reason": "\(fault.reason)",
                                  "backlog": "held, nothing acknowledged or dropped"])
        }
    }
}
