import BrumeCore
import BrumeStore
import BrumeTestKit
import Logging
import Synchronization
import Testing
@testable import BrumeUplink

/// A sink whose answers the test scripts: `answer(batch, attempt)` decides each delivery.
final class ScriptedSink: BatchSink, @unchecked Sendable {
    let lock = Mutex<Void>(())
    var delivered: [(id: String, values: [Int], bytes: Int)] = []
    var attempts: [String: Int] = [:]
    let answer: @Sendable (EncodedBatch, Int) -> DeliveryOutcome
    let windowSize: Int
    init(window: Int = 4, answer: @escaping @Sendable (EncodedBatch, Int) -> DeliveryOutcome) {
        self.answer = answer
        self.windowSize = window
    }
    var kind: String { "scripted" }
    var endpoint: String { "test" }
    var window: Int { windowSize }
    var connection: UInt64? { 1 }
    var state: UplinkState { .online }
    var maxBodyBytes: Int? { nil }
    func start(poke: @escaping @Sendable () -> Void) {}
    func stop(drain: Duration) async {}
    func encode(_ batch: BatchRecord, id: String, readings: [Reading], seqs: [Int64]?, into body: inout [UInt8]) -> Int {
        WireFormat.encodeTelemetry(gateway: "gw", batchID: id, historical: batch.historical, readings: readings, into: &body)
        return body.count
    }
    func deliver(_ batch: EncodedBatch, done: @escaping @Sendable (DeliveryOutcome) -> Void) {
        let n: Int = lock.withLock { _ in
            attempts[batch.id, default: 0] += 1
            return attempts[batch.id]!
        }
        let outcome = answer(batch, n)
        if outcome == .accepted {
            let decoded = try! TelemetryBatch.decode(batch.body)
            let vals = decoded.readings.map { r -> Int in if case .number(let d) = r.value { Int(d) } else { -1 } }
            lock.withLock { _ in delivered.append((batch.id, vals, batch.body.count)) }
        }
        // Answered at once (allowed: "possibly before deliver returns"); the tests run the loop
        // on a dedicated thread, where an unstructured Task would not follow.
        done(outcome)
    }
    var snapshot: [(id: String, values: [Int], bytes: Int)] { lock.withLock { _ in delivered } }
    var totalAttempts: Int { lock.withLock { _ in attempts.values.reduce(0, +) } }
    var distinctAttempted: Int { lock.withLock { _ in attempts.count } }
}

func makeBox(_ n: Int) throws -> Outbox {
    let dir = TestKit.tempDir()
    let box = try Outbox(options: OutboxOptions(path: "\(dir)/outbox.db"), logger: Logger(label: "test"))
    box.append((1...n).map { Reading(device: "d\($0 % 3)", metric: "seq", time: 1_764_169_999_000 + Int64($0), value: .number(Double($0))) })
    box.flush()
    return box
}

func run(_ loop: SyncLoop, until: @escaping @Sendable () -> Bool, timeout: Duration = .seconds(20)) async -> Bool {
    await withTaskGroup(of: Void.self) { g in
        g.addTask { await loop.run() }
        let deadline = ContinuousClock.now + timeout
        while !until() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        let ok = until()
        await loop.shutdown(drainTimeout: .milliseconds(10))
        g.cancelAll()
        return ok
    }
}

func options(_ tweak: (inout SyncOptions) -> Void = { _ in }) -> SyncOptions {
    var o = SyncOptions(name: "cloud", batchMaxReadings: 100, batchMaxDelayMillis: 0)
    o.retryInitial = .milliseconds(5)
    o.heldRetryInitial = .milliseconds(20)
    tweak(&o)
    return o
}

/// Every reading delivered exactly once, in order, and no id naming two batches.
func checkExactlyOnce(_ sink: ScriptedSink, _ n: Int, skipping: Set<Int> = []) {
    let all = sink.snapshot.flatMap(\.values)
    #expect(all == (1...n).filter { !skipping.contains($0) })
    let ids = sink.snapshot.map(\.id)
    #expect(Set(ids).count == ids.count)
}

@Suite struct SyncLoopTests {
    @Test func acceptedBatchesLeaveTheOutboxInOrder() async throws {
        try await onDedicatedThread {
            let box = try makeBox(1000)
            let sink = ScriptedSink { _, _ in .accepted }
            let loop = SyncLoop(options: options(), sink: sink, gatewayID: "gw", outbox: box, logger: Logger(label: "t"))
            #expect(await run(loop) { box.stats.doneSeq == 1000 })
            checkExactlyOnce(sink, 1000)
            #expect(loop.stats.readingsAcked.current == 1000)
            #expect(loop.stats.fault.current == nil)
        }
    }

    /// A misconfigured endpoint (a redirect, 401/403/404, an MQTT ACL) holds the whole backlog:
    /// nothing acknowledged, nothing dead-lettered, the fault shown; fixed, everything goes.
    @Test func aMisconfiguredEndpointHoldsTheBacklogThenDeliversAll() async throws {
        try await onDedicatedThread {
            let box = try makeBox(1000)
            let fixed = Atomic<Bool>(false)
            let sink = ScriptedSink { _, _ in
                fixed.load(ordering: .relaxed) ? .accepted : .misconfigured(reason: "http_301", detail: "redirects")
            }
            let loop = SyncLoop(options: options(), sink: sink, gatewayID: "gw", outbox: box, logger: Logger(label: "t"))
            await withTaskGroup(of: Void.self) { g in
                g.addTask { await loop.run() }
                let held = ContinuousClock.now + .seconds(20)
                while sink.totalAttempts < 3 && ContinuousClock.now < held { try? await Task.sleep(for: .milliseconds(10)) }
                #expect(box.stats.doneSeq == 0)
                #expect(loop.stats.deadLettered.current == 0)
                #expect(loop.stats.fault.current?.reason == "http_301")
                #expect(loop.stats.fault.current?.misconfigured == true)
                #expect(sink.totalAttempts >= 3) // tried again, slowly
                fixed.store(true, ordering: .relaxed)
                let deadline = ContinuousClock.now + .seconds(20)
                while box.stats.doneSeq < 1000 && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
                await loop.shutdown(drainTimeout: .milliseconds(10))
                g.cancelAll()
            }
            #expect(box.stats.doneSeq == 1000)
            checkExactlyOnce(sink, 1000)
            #expect(loop.stats.fault.current == nil)
        }
    }

    /// A bad batch is dead-lettered alone; the rest is delivered.
    @Test func aRejectedBatchIsDeadLetteredAndTheQueueMovesOn() async throws {
        try await onDedicatedThread {
            let box = try makeBox(1000)
            let sink = ScriptedSink { b, _ in
                b.record.first == 301 ? .rejected(reason: "http_422", status: 422, detail: "bad") : .accepted
            }
            let loop = SyncLoop(options: options(), sink: sink, gatewayID: "gw", outbox: box, logger: Logger(label: "t"))
            #expect(await run(loop) { box.stats.doneSeq == 1000 })
            checkExactlyOnce(sink, 1000, skipping: Set(301...400))
            #expect(loop.stats.deadLettered.current == 100)
            let dead = box.deadLetters()
            #expect(dead.count == 1 && dead[0].first == 301 && dead[0].last == 400 && dead[0].status == 422)
        }
    }

    /// Transient failures: resent in order with the same id until accepted.
    @Test func retriesResendTheSameBatchesInOrder() async throws {
        try await onDedicatedThread {
            let box = try makeBox(500)
            let sink = ScriptedSink { _, attempt in
                attempt < 3 ? .retry(reason: "http_503", detail: "busy", after: .milliseconds(5)) : .accepted
            }
            let loop = SyncLoop(options: options(), sink: sink, gatewayID: "gw", outbox: box, logger: Logger(label: "t"))
            #expect(await run(loop) { box.stats.doneSeq == 500 })
            checkExactlyOnce(sink, 500)
            #expect(loop.stats.resends.current >= 5)
        }
    }

    /// An endpoint that finds batches too large gets them split until they fit; nothing lost.
    @Test func tooLargeBatchesAreSplitUntilTheyFit() async throws {
        try await onDedicatedThread {
            let box = try makeBox(1000)
            let sink = ScriptedSink { b, _ in b.body.count > 1500 ? .tooLarge(detail: "max 1500") : .accepted }
            let loop = SyncLoop(options: options(), sink: sink, gatewayID: "gw", outbox: box, logger: Logger(label: "t"))
            #expect(await run(loop) { box.stats.doneSeq == 1000 })
            checkExactlyOnce(sink, 1000)
            #expect(sink.snapshot.allSatisfy { $0.bytes <= 1500 })
            #expect(loop.stats.splits.current > 0)
            #expect(loop.stats.deadLettered.current == 0)
        }
    }

    /// `batch_max_bytes`: no batch goes out larger, not even once.
    @Test func batchMaxBytesIsNeverExceeded() async throws {
        try await onDedicatedThread {
            let box = try makeBox(1000)
            let sink = ScriptedSink { _, _ in .accepted }
            let loop = SyncLoop(options: options { $0.batchMaxBytes = 2000 }, sink: sink, gatewayID: "gw", outbox: box, logger: Logger(label: "t"))
            #expect(await run(loop) { box.stats.doneSeq == 1000 })
            checkExactlyOnce(sink, 1000)
            #expect(sink.distinctAttempted == sink.snapshot.count) // each id sent once: split before sending
            #expect(sink.snapshot.allSatisfy { $0.bytes <= 2000 })
        }
    }

    @Test func httpStatusesAreClassifiedByWhatToDo() {
        func c(_ code: Int) -> DeliveryOutcome { HTTPSink.classify(code, said: "HTTP \(code)", location: "http://x/", retryAfter: nil) }
        #expect(c(200) == .accepted)
        #expect(c(204) == .accepted)
        for code in [301, 302, 303, 307, 308, 401, 403, 404, 405] {
            guard case .misconfigured = c(code) else { Issue.record("\(code) must hold the backlog"); continue }
        }
        for code in [408, 429, 500, 502, 503] {
            guard case .retry = c(code) else { Issue.record("\(code) must be retried"); continue }
        }
        for code in [400, 409, 422] {
            guard case .rejected = c(code) else { Issue.record("\(code) must dead-letter the batch"); continue }
        }
        guard case .tooLarge = c(413) else { Issue.record("413 must split"); return }
    }

    @Test func mqttReasonCodesAreClassified() {
        #expect(MQTTSink.outcome(reason: 0) == .accepted)
        #expect(MQTTSink.outcome(reason: 0x10) == .accepted)
        guard case .misconfigured(let r, _) = MQTTSink.outcome(reason: 0x87), r == "not_authorized" else { Issue.record("0x87"); return }
        guard case .tooLarge = MQTTSink.outcome(reason: 0x95) else { Issue.record("0x95"); return }
        guard case .retry = MQTTSink.outcome(reason: 0x97) else { Issue.record("0x97"); return }
        guard case .misconfigured = MQTTSink.outcome(reason: 0x80) else { Issue.record("0x80"); return }
    }
}

@Suite struct DailyBudgetTests {
    final class Clock: @unchecked Sendable {
        var nanos: UInt64 = 1_000_000_000_000
        func advance(hours: Double) { nanos += UInt64(hours * 3600e9) }
    }

    @Test func keepsTwentyFourHoursUnderTheBudget() {
        let c = Clock()
        let b = DailyBudget(bytesPerDay: 10_000, clock: { c.nanos })
        #expect(b.allows(50_000)) // an empty day lets one oversized batch go (never stuck)
        b.take(4_000)
        #expect(b.allows(6_000) && !b.allows(6_001))
        b.take(6_000)
        c.advance(hours: 23.5)
        #expect(!b.allows(1))
        #expect(b.used == 10_000)
        c.advance(hours: 1) // the first hour left the window
        #expect(b.used == 0 && b.allows(10_000))
        b.take(3_000)
        c.advance(hours: 1000) // a long sleep clears everything, without trapping
        #expect(b.used == 0)
    }
}

@Suite struct SyncLoopBudgetTests {
    /// A spent daily budget holds the backlog: nothing more is sent or acknowledged, nothing lost.
    @Test func aSpentBudgetHoldsTheRest() async throws {
        try await onDedicatedThread {
            let box = try makeBox(1000)
            let sink = ScriptedSink { _, _ in .accepted }
            let loop = SyncLoop(options: options { $0.maxBytesPerDay = 6_000 }, sink: sink, gatewayID: "gw", outbox: box, logger: Logger(label: "t"))
            _ = await run(loop, until: { loop.stats.budgetHeld.current }, timeout: .seconds(20))
            try? await Task.sleep(for: .milliseconds(300))
            let sent = sink.snapshot
            #expect(sent.map(\.bytes).reduce(0, +) <= 6_000 || sent.count == 1)
            #expect(sent.count >= 1 && box.stats.doneSeq == Int64(sent.flatMap(\.values).count))
            #expect(box.stats.bufferedReadings == Int64(1000 - sent.flatMap(\.values).count))
            #expect(loop.stats.budgetHeld.current)
        }
    }
}
