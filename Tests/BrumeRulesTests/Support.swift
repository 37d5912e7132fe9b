import BrumeTestKit
import BrumeCore
@testable import BrumeRules
import Synchronization
import Testing

/// A clock the test moves by hand (ms since the epoch).
final class ManualClock: Sendable {
    private let value: Atomic<Int64>
    init(_ start: Int64 = 0) { value = Atomic(start) }
    var now: Int64 { value.load(ordering: .relaxed) }
    func set(_ t: Int64) { value.store(t, ordering: .relaxed) }
    func advance(_ ms: Int64) { value.wrappingAdd(ms, ordering: .relaxed) }
    var read: @Sendable () -> Int64 { { [self] in self.now } }
}


func x(_ text: String, _ line: Int = 1, _ column: Int = 1) -> ExprText { ExprText(text, at: SourceSpan(line: line, column: column)) }

func r(_ device: String, _ metric: String, _ time: Int64, _ v: Double) -> Reading {
    Reading(device: device, metric: metric, time: time, value: .number(v))
}

func compiled(rules: [RuleSpec] = [], derived: [DerivedSpec] = [], triggers: [TriggerSpec] = [],
              sourceLocation: SourceLocation = #_sourceLocation) -> CompiledRules? {
    switch RulesCompiler.compile(rules: rules, derived: derived, triggers: triggers) {
    case .success(let c): return c
    case .failure(let d):
        Issue.record("unexpected diagnostics:\n\(d)", sourceLocation: sourceLocation)
        return nil
    }
}

func engine(rules: [RuleSpec] = [], derived: [DerivedSpec] = [], triggers: [TriggerSpec] = [], clock: ManualClock,
            sourceLocation: SourceLocation = #_sourceLocation) throws -> RulesEngine {
    let c = try #require(compiled(rules: rules, derived: derived, triggers: triggers, sourceLocation: sourceLocation), sourceLocation: sourceLocation)
    return RulesEngine(rules: c, clock: clock.read)
}

extension Value {
    var number: Double? { if case .number(let d) = self { return d }; return nil }
}

func approx(_ a: Double, _ b: Double, _ eps: Double = 1e-9) -> Bool {
    abs(a - b) <= eps * max(1, abs(a), abs(b))
}
