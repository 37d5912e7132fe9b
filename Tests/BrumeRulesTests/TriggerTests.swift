import BrumeCore
@testable import BrumeRules
import Testing

@Suite("Triggers: hysteresis, debounce, cooldown")
struct TriggerTests {
    func temp(_ v: Double, _ clock: ManualClock) -> Reading { r("boiler", "temperature", clock.now, v) }

    @Test func hysteresisFiresOnceAndClearsBelowClear() throws {
        let clock = ManualClock(1_000)
        let e = try engine(triggers: [TriggerSpec(name: "hot", when: x("boiler/temperature > 90"), clear: x("boiler/temperature < 85"),
                                                  actuator: "boiler/valve", commandValue: .string("close"), event: "boiler overheating")],
                           clock: clock)
        var commands: [TriggeredCommand] = []
        var events: [RuleEvent] = []
        for (v, dt) in [(80.0, 0), (91, 1000), (95, 1000), (88, 1000), (89.9, 1000), (84.9, 1000), (86, 1000), (90.5, 1000)] as [(Double, Int64)] {
            clock.advance(dt)
            let out = e.process([temp(v, clock)])
            #expect(out.readings == [temp(v, clock)])   // triggers never hold telemetry back
            commands += out.commands
            events += out.events
        }
        #expect(commands == [
            TriggeredCommand(trigger: "hot", actuator: "boiler/valve", value: .string("close"), at: 2_000),
            TriggeredCommand(trigger: "hot", actuator: "boiler/valve", value: .string("close"), at: 8_000),
        ])
        #expect(events.map { "\($0.kind)@\($0.at)" } == ["fired@2000", "cleared@6000", "fired@8000"])
        #expect(events[0].detail == "boiler overheating")
        #expect(events[0].values == ["boiler/temperature": .number(91)])
        #expect(events[1].values == ["boiler/temperature": .number(84.9)])
    }

    @Test func debounceNeedsTheConditionToHoldContinuously() throws {
        let clock = ManualClock(0)
        let e = try engine(triggers: [TriggerSpec(name: "hot", when: x("boiler/temperature > 90"), forMillis: 30_000,
                                                  actuator: "boiler/valve", commandValue: .string("close"))], clock: clock)
        var fired: [Int64] = []
        func run(_ out: RulesOutput) { fired += out.commands.map(\.at) }
        run(e.process([temp(95, clock)]))             // pending since 0
        clock.set(10_000); run(e.tick())
        clock.set(20_000); run(e.process([temp(80, clock)]))   // broken: back to idle
        clock.set(25_000); run(e.process([temp(96, clock)]))   // pending since 25 s
        clock.set(54_999); run(e.tick())
        #expect(fired.isEmpty)
        clock.set(55_000); run(e.tick())
        #expect(fired == [55_000])
        clock.set(60_000); run(e.tick()); run(e.process([temp(97, clock)]))
        #expect(fired == [55_000])                    // active: fires once
        // No clear expression: clears when `when` stops holding, then debounces again.
        clock.set(61_000); run(e.process([temp(70, clock)]))
        clock.set(62_000); run(e.process([temp(99, clock)]))
        clock.set(91_999); run(e.tick())
        #expect(fired == [55_000])
        clock.set(92_000); run(e.tick())
        #expect(fired == [55_000, 92_000])
    }

    @Test func cooldownDelaysRefiring() throws {
        let clock = ManualClock(0)
        let e = try engine(triggers: [TriggerSpec(name: "hot", when: x("boiler/temperature > 90"), cooldownMillis: 60_000, event: "hot")], clock: clock)
        var log: [String] = []
        func run(_ out: RulesOutput) { log += out.events.map { "\($0.kind)@\($0.at)" } }
        run(e.process([temp(95, clock)]))
        clock.set(1_000); run(e.process([temp(80, clock)]))
        clock.set(2_000); run(e.process([temp(95, clock)]))   // holds, but cooling down
        clock.set(59_999); run(e.tick())
        clock.set(60_000); run(e.tick())
        clock.set(61_000); run(e.process([temp(80, clock)]))
        clock.set(70_000); run(e.process([temp(91, clock)]))  // cooling down until 120 s
        clock.set(80_000); run(e.process([temp(85, clock)]))  // stops holding: nothing fires
        clock.set(200_000); run(e.tick())
        #expect(log == ["fired@0", "cleared@1000", "fired@60000", "cleared@61000"])
    }

    @Test func triggersOnSeveralStreamsAndMissingValues() throws {
        let clock = ManualClock(0)
        let e = try engine(triggers: [TriggerSpec(name: "dry", when: x("gh/humidity < 30 && gh/temperature > 25"), clear: x("gh/humidity > 35"),
                                                  actuator: "gh/mister", commandValue: .bool(true))], clock: clock)
        // Humidity alone: temperature missing → no decision, not an error.
        #expect(e.process([r("gh", "humidity", 0, 20)]).commands.isEmpty)
        #expect(e.stats()["trigger:dry"]?.errors == 0)
        #expect(e.process([r("gh", "temperature", 0, 26)]).commands == [TriggeredCommand(trigger: "dry", actuator: "gh/mister", value: .bool(true), at: 0)])
        #expect(e.process([r("gh", "humidity", 0, 33)]).events.isEmpty)   // no event configured
        #expect(e.process([r("gh", "humidity", 0, 25)]).commands.isEmpty)  // still active
    }

    @Test func triggersSeeRuleOutputNotRawInput() throws {
        let clock = ManualClock(0)
        let e = try engine(rules: [RuleSpec(match: ["boiler/temperature"], dropIf: x("value > 500"))],
                           triggers: [TriggerSpec(name: "hot", when: x("boiler/temperature > 90"), event: "hot")], clock: clock)
        #expect(e.process([r("boiler", "temperature", 0, 999)]).events.isEmpty)   // invalid reading dropped first
        #expect(e.process([r("boiler", "temperature", 0, 95)]).events.count == 1)
    }

    @Test func machineTableExact() {
        var m = TriggerMachine()
        #expect(m.step(true, hasClear: false, now: 0, forMillis: 10, cooldown: 0) == nil)
        #expect(m.step(nil, hasClear: false, now: 5, forMillis: 10, cooldown: 0) == nil)   // unknown: no change
        #expect(m.phase == .pending(since: 0))
        #expect(m.step(true, hasClear: false, now: 10, forMillis: 10, cooldown: 0) == .fire)
        #expect(m.step(true, hasClear: false, now: 11, forMillis: 10, cooldown: 0) == nil)
        #expect(m.step(false, hasClear: false, now: 12, forMillis: 10, cooldown: 0) == .clear)
        #expect(m.phase == .idle)
    }
}
