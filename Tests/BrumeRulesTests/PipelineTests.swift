import BrumeTestKit
import BrumeCore
@testable import BrumeRules
import Testing

@Suite("Rule pipeline")
struct PipelineTests {
    @Test func unmatchedReadingsPassUnchanged() throws {
        let e = try engine(rules: [RuleSpec(match: ["boiler/*"], scale: 2)], clock: ManualClock())
        let input = [r("gh", "t", 1, 5), Reading(device: "gh", metric: "door", time: 2, value: .string("open"))]
        #expect(e.process(input).readings == input)
        #expect(e.stats()["rule#1"] == RuleStats())
    }

    @Test func validateFlagScaleConvertTransformInOrder() throws {
        let e = try engine(rules: [
            RuleSpec(name: "t", match: ["*/temperature"], dropIf: x("value < -40 || value > 150"), flagIf: x("value > 100"),
                     scale: 0.5, offset: 1, convert: "c_to_f", value: x("round(value, 1)")),
        ], clock: ManualClock())
        let out = e.process([r("b", "temperature", 1, 200), r("b", "temperature", 2, 20), r("b", "temperature", 3, 120)]).readings
        // 20 → 20*0.5+1 = 11 °C → 51.8 °F; 120 → 61 °C → 141.8 °F, flagged.
        #expect(out == [r("b", "temperature", 2, 51.8), Reading(device: "b", metric: "temperature.flag", time: 3, value: .bool(true)), r("b", "temperature", 3, 141.8)])
        let st = try #require(e.stats()["t"])
        #expect(st.in == 3 && st.out == 3 && st.dropped == 1 && st.errors == 0)
    }

    @Test func divisionByZeroOnOneReadingDoesNotStopTheStream() throws {
        let e = try engine(rules: [
            RuleSpec(name: "ratio", match: ["m/x"], value: x("100 / value", 7, 10)),
            RuleSpec(name: "keep", match: ["m/y"], value: x("100 / value"), onError: .pass),
        ], clock: ManualClock())
        let out = e.process([r("m", "x", 1, 4), r("m", "x", 2, 0), r("m", "x", 3, 5), r("m", "y", 4, 0), r("m", "y", 5, 2)]).readings
        #expect(out == [r("m", "x", 1, 25), r("m", "x", 3, 20), r("m", "y", 4, 0), r("m", "y", 5, 50)])
        let st = try #require(e.stats()["ratio"])
        #expect(st.errors == 1 && st.dropped == 1 && st.out == 2)
        #expect(st.lastError == "7:14: division by zero")
        #expect(e.stats()["keep"]?.errors == 1 && e.stats()["keep"]?.dropped == 0)
    }

    @Test func typedRuntimeErrors() throws {
        func eval(_ text: String, _ v: Value = .number(1), latest: [String: Value] = [:]) throws -> Result<Value, EvalError> {
            var d: [RuleDiagnostic] = []
            let p = try #require(ExprCompiler.compile(x(text), env: .rule, diags: &d), "\(d)")
            do { return .success(try p.run(EvalScope(reading: Reading(device: "d", metric: "m", time: 1000, value: v), now: 0, latest: latest))) }
            catch { return .failure(error) }
        }
        func kind(_ res: Result<Value, EvalError>) -> EvalError.Kind? { if case .failure(let e) = res { return e.kind }; return nil }
        #expect(kind(try eval("value / 0")) == .divisionByZero)
        #expect(kind(try eval("value % 0")) == .divisionByZero)
        #expect(kind(try eval("sqrt(0 - value)")) == .domain)
        #expect(kind(try eval("ln(0)")) == .domain)
        #expect(kind(try eval("pow(10, 400)")) == .nonFinite)
        #expect(kind(try eval("a/b + 1")) == .missingStream)
        #expect(kind(try eval("value + 1", .string("open"))) == .typeMismatch)
        #expect(kind(try eval("value == 1", .bool(true))) == .typeMismatch)
        #expect(try eval("abs(-2) + min(3, 1, 2) + max(1, 5) + clamp(value, 0, 0.5) + floor(1.7) + ceil(1.2) + round(2.5) + round(1.234, 2)").get() == .number(2 + 1 + 5 + 0.5 + 1 + 2 + 3 + 1.23))
        #expect(try eval("if(value > 0 and not false, \"up\", 'down')").get() == .string("up"))
        #expect(try eval("device == \"d\" && metric != 'x' && time == 1000").get() == .bool(true))
        #expect(try eval("-value * 2 + 10 % 4 - 2 * (3 - 1)").get() == .number(-2 + 2 - 4))
        #expect(try eval("gh-2/temperature.avg > 3", latest: ["gh-2/temperature.avg": .number(4)]).get() == .bool(true))
        #expect(try eval("value/2").get() == .number(0.5))
        // Short-circuit: the right side is not evaluated.
        #expect(try eval("false && 1 / 0 > 1").get() == .bool(false))
        #expect(try eval("true || a/b > 1").get() == .bool(true))
        #expect(try eval("exp(0) + log10(100) + ln(1) + pow(2, 10) + avg(1, 2, 3)").get() == .number(1 + 2 + 0 + 1024 + 2))
    }

    @Test func deadbandAndHeartbeatExactOutputs() throws {
        let clock = ManualClock(0)
        let e = try engine(rules: [RuleSpec(name: "db", match: ["s/t"], deadband: 0.5, heartbeatMillis: 10_000)], clock: clock)
        var sent: [String] = []
        func feed(_ at: Int64, _ v: Double) { clock.set(at); sent += e.process([r("s", "t", at, v)]).readings.map { "\($0.value)@\($0.time)" } }
        func tick(_ at: Int64) { clock.set(at); sent += e.tick().readings.map { "\($0.value)@\($0.time)" } }
        feed(0, 20.0)        // first: sent
        feed(1_000, 20.3)    // within deadband: held
        feed(2_000, 20.4)    // replaces the held one
        tick(5_000)
        tick(9_999)
        tick(10_000)         // heartbeat: the latest held reading goes out
        feed(11_000, 20.6)   // 0.2 from 20.4: held
        feed(12_000, 21.0)   // 0.6 from 20.4: sent
        feed(13_000, 20.5)   // exactly 0.5: not beyond the deadband, held
        tick(22_999)
        tick(23_000)         // heartbeat
        tick(40_000)         // nothing held: a silent stream gets no invented reading
        feed(40_001, 20.5)   // heartbeat due (last send 23 s): sent even if unchanged
        #expect(sent == ["20@0", "20.4@2000", "21@12000", "20.5@13000", "20.5@40001"])
        let st = try #require(e.stats()["db"])
        #expect(st.in == 7 && st.out == 5 && st.suppressed == 2)
    }

    @Test func reportOnChangeForStatesAndRateLimit() throws {
        let clock = ManualClock(0)
        let e = try engine(rules: [
            RuleSpec(match: ["door/*"], heartbeatMillis: 60_000),
            RuleSpec(name: "rl", match: ["fast/*"], minIntervalMillis: 1_000),
        ], clock: clock)
        let s = { (t: Int64, v: String) in Reading(device: "door", metric: "state", time: t, value: .string(v)) }
        #expect(e.process([s(1, "open"), s(2, "open"), s(3, "closed"), s(4, "closed")]).readings == [s(1, "open"), s(3, "closed")])
        let fast = (0..<25).map { r("fast", "x", Int64($0) * 100, Double($0)) }
        #expect(e.process(fast).readings.map(\.time) == [0, 1000, 2000])
        #expect(e.stats()["rl"]?.suppressed == 22)
    }

    /// Reading times at the ends of Int64 (a source's own timestamps) never trap a rule.
    @Test func minIntervalSurvivesExtremeTimes() throws {
        let e = try engine(rules: [RuleSpec(name: "rl", match: ["x/*"], minIntervalMillis: 1_000)], clock: ManualClock(0))
        let times: [Int64] = [Int64.min, Int64.max, Int64.min + 1, 0, Int64.max - 1, -1]
        let out = e.process(times.map { r("x", "y", $0, 1) }).readings.map(\.time)
        #expect(out == [Int64.min, Int64.max]) // the rest is earlier than the last one passed: too soon, as any out-of-order reading
    }

    @Test func derivedDewPoint() throws {
        #expect(abs(dewPoint(celsius: 20, humidity: 50) - 9.26) < 0.05)
        #expect(abs(dewPoint(celsius: 25, humidity: 60) - 16.69) < 0.05)
        #expect(abs(dewPoint(celsius: 0, humidity: 100) - 0) < 0.01)
        let clock = ManualClock(0)
        let e = try engine(
            rules: [RuleSpec(match: ["gh/dewpoint"], value: x("round(value, 2)"))],
            derived: [DerivedSpec(device: "gh", metric: "dewpoint", inputs: ["t": "gh/temperature", "rh": "gh/humidity"], expr: x("dewpoint(t, rh)"))],
            clock: clock)
        #expect(e.process([r("gh", "temperature", 1, 20)]).readings == [r("gh", "temperature", 1, 20)])   // waits for humidity
        let out = e.process([r("gh", "humidity", 2, 50)]).readings
        #expect(out == [r("gh", "humidity", 2, 50), r("gh", "dewpoint", 2, 9.26)])
        // Humidity 0: domain error counted, stream continues.
        #expect(e.process([r("gh", "humidity", 3, 0), r("gh", "temperature", 4, 25), r("gh", "humidity", 5, 60)]).readings.map(\.metric)
                == ["humidity", "temperature", "humidity", "dewpoint"])
        #expect(e.stats()["derived:gh/dewpoint"]?.errors == 2)   // humidity 0 then temperature 25 with humidity 0
    }

    @Test func reloadKeepsStateOfUnchangedRules() throws {
        let clock = ManualClock(0)
        let windowRule = RuleSpec(name: "avg", match: ["s/t"], window: WindowSpec(.tumbling(sizeMillis: 1000)), emit: [.avg], keepRaw: true)
        let trig = TriggerSpec(name: "hot", when: x("s/t > 90"), forMillis: 5000, event: "hot")
        let old = try engine(rules: [windowRule, RuleSpec(name: "other", match: ["s/t"], deadband: 1)], triggers: [trig], clock: clock)
        _ = old.process([r("s", "t", 100, 95), r("s", "t", 200, 97)])
        // New config: the window rule and trigger unchanged, the other rule changed.
        let new = try engine(rules: [windowRule, RuleSpec(name: "other", match: ["s/t"], deadband: 2)], triggers: [trig], clock: clock)
        new.carryState(from: old)
        #expect(new.stats()["avg"]?.in == 2)
        #expect(new.stats()["other"]?.in == 0)
        clock.set(1100)
        #expect(new.process([r("s", "t", 1100, 99)]).readings.first == r("s", "t.avg", 1000, 96))
        clock.set(5000)
        let out = new.tick()
        #expect(out.readings == [r("s", "t.avg", 2000, 99)])
        #expect(out.events.map(\.kind) == [.fired])   // pending since 0 carried over
        // A changed window rule starts empty.
        let changed = try engine(rules: [RuleSpec(name: "avg", match: ["s/t"], window: WindowSpec(.tumbling(sizeMillis: 2000)), emit: [.avg])], clock: clock)
        changed.carryState(from: new)
        #expect(changed.flush().readings.isEmpty)
    }

    /// A rule's place in the file is not its identity: a comment or a rule added above it must
    /// not cost its open window on reload (the spans of the rule and its expressions moved).
    @Test func reloadKeepsWindowsOfRulesThatOnlyMovedInTheFile() throws {
        let clock = ManualClock(0)
        func rule(line: Int) -> RuleSpec {
            RuleSpec(name: "avg", match: ["s/t"], span: SourceSpan(line: line, column: 1), dropIf: ExprText("value > 1000", at: SourceSpan(line: line + 3, column: 11)),
                     window: WindowSpec(.count(n: 3)), emit: [.avg], keepRaw: true)
        }
        let trig = { (line: Int) in TriggerSpec(name: "hot", when: ExprText("s/t > 90", at: SourceSpan(line: line, column: 9)), forMillis: 5000, event: "hot", span: SourceSpan(line: line, column: 1)) }
        let old = try engine(rules: [rule(line: 10)], triggers: [trig(20)], clock: clock)
        _ = old.process([r("s", "t", 100, 95), r("s", "t", 200, 97)])
        let moved = try engine(rules: [RuleSpec(name: "new", match: ["x/y"]), rule(line: 14)], triggers: [trig(26)], clock: clock)
        moved.carryState(from: old)
        #expect(moved.stats()["avg"]?.in == 2)
        #expect(moved.process([r("s", "t", 300, 99)]).readings.first == r("s", "t.avg", 300, 97))
        clock.set(5000)
        #expect(moved.tick().events.map(\.kind) == [.fired], "the trigger's pending phase carried over too")
    }

    @Test func flushEmitsOpenWindowsAtShutdown() throws {
        let clock = ManualClock(0)
        let e = try engine(rules: [
            RuleSpec(name: "h", match: ["s/a"], window: WindowSpec(.hopping(sizeMillis: 1000, hopMillis: 500)), emit: [.count]),
            RuleSpec(name: "c", match: ["s/b"], window: WindowSpec(.count(n: 10)), emit: [.last]),
        ], clock: clock)
        // [9500, 10500) closes as soon as the stream reaches 10 600.
        #expect(e.process([r("s", "a", 10_100, 1), r("s", "a", 10_600, 2), r("s", "b", 3, 7), r("s", "b", 4, 8)]).readings == [r("s", "a.count", 10_500, 1)])
        let out = e.flush().readings
        #expect(out == [
            r("s", "a.count", 11_000, 2), r("s", "a.count", 11_500, 1),
            r("s", "b.last", 4, 8),
        ])
        #expect(e.flush().readings.isEmpty)
    }

    @Test func laterRulesSeeEarlierOutputAndStats() throws {
        let e = try engine(rules: [
            RuleSpec(name: "cal", match: ["*/t"], offset: -1),
            RuleSpec(name: "guard", match: ["*/t"], dropIf: x("value > 10")),
        ], clock: ManualClock())
        #expect(e.process([r("a", "t", 1, 11), r("a", "t", 2, 12)]).readings == [r("a", "t", 1, 10)])
        #expect(e.stats()["cal"]?.out == 2 && e.stats()["guard"]?.dropped == 1)
    }

    @Test func windowOnStringReadingIsAnErrorNotACrash() throws {
        let e = try engine(rules: [RuleSpec(name: "w", match: ["*/*"], window: WindowSpec(.count(n: 2)), emit: [.sum])], clock: ManualClock())
        let out = e.process([r("a", "t", 1, 1), Reading(device: "a", metric: "t", time: 2, value: .string("err")), r("a", "t", 3, 2)])
        #expect(out.readings == [r("a", "t.sum", 3, 3)])
        #expect(e.stats()["w"]?.errors == 1)
    }
}
