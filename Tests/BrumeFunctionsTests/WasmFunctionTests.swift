import BrumeCore
import BrumeFunctions
import BrumeRules
import BrumeTestKit
import Foundation
import Testing

/// Modules built here from source with the real tools (clang --target=wasm32 through
/// sdk/build.sh, wabt's wat2wasm), run by WasmKit as the gateway runs them.
enum Modules {
    static let dir = TestKit.tempDir("brume-fn")
    static func c(_ name: String) throws -> [UInt8] { try WasmBuild.bytes(WasmBuild.c(name, out: "\(dir)/\(name).wasm")) }
    static func wat(_ name: String, _ text: String? = nil) throws -> [UInt8] {
        try WasmBuild.bytes(WasmBuild.wat(text ?? name, out: "\(dir)/\(name).wasm"))
    }
    static func function(_ bytes: [UInt8], _ kind: FunctionSpec.Kind = .reading, name: String = "f", fuel: UInt64 = 100_000,
                         memory: Int = 1 << 20, onError: FunctionSpec.OnError = .drop, disableAfter: Int = 100,
                         deadLetters: String? = nil) throws -> WasmFunction {
        try WasmFunction(FunctionSpec(name: name, path: "\(name).wasm", bytes: bytes, kind: kind, fuel: fuel, memoryBytes: memory,
                                      onError: onError, disableAfter: disableAfter), deadLetterDirectory: deadLetters)
    }

    /// Tests/Fixtures/functions/hostile.wat: loops, traps, grows, emits NaN by value.
    static let hostile = fixturesDirectory() + "/functions/hostile.wat"
}

func reading(_ device: String, _ metric: String, _ value: Double, time: Int64 = 1_764_000_000_000) -> Reading {
    Reading(device: device, metric: metric, time: time, value: .number(value))
}

func numbers(_ o: FunctionOutcome) -> [String: Double] {
    var d: [String: Double] = [:]
    switch o {
    case .keep(let rs), .replace(let rs):
        for r in rs { if case .number(let v) = r.value { d["\(r.device)/\(r.metric)"] = v } }
    case .failed: break
    }
    return d
}

@Suite struct WasmFunctionTests {
    @Test func aCFunctionDerivesAMetricAndKeepsTheReading() throws {
        let f = try Modules.function(try Modules.c("pump_efficiency"))
        let out = f.apply(reading("pump-1", "flow", 36))
        guard case .keep(let extra) = out else { Issue.record("expected keep, got \(out)"); return }
        #expect(extra.count == 1)
        let expected = 100.0 * (1000.0 * 9.81 * (36.0 / 3600.0) * 32.0 / 1000.0) / 5.5
        #expect(extra.first?.device == "pump-1" && extra.first?.metric == "efficiency")
        #expect(extra.first?.time == 1_764_000_000_000, "the input's time")
        if case .number(let v)? = extra.first?.value { #expect(abs(v - expected) < 1e-9, "\(v) vs \(expected)") } else { Issue.record("no number") }
        // Another metric passes untouched, nothing emitted.
        guard case .keep(let none) = f.apply(reading("pump-1", "pressure", 3)) else { Issue.record("expected keep"); return }
        #expect(none.isEmpty)
        // A negative flow is the function's own error code: counted, the reading dropped (on_error = drop).
        guard case .failed(let message, let passOn) = f.apply(reading("pump-1", "flow", -1)) else { Issue.record("expected a failure"); return }
        #expect(message.contains("error code -1") && !passOn)
        let s = f.statistics()
        #expect(s.calls == 3 && s.failures[.errorCode] == 1 && s.outputs == 1)
    }

    @Test(arguments: ["wat", "swift"]) func aCalibrationReplacesTheValue(_ language: String) throws {
        // The same function in WebAssembly text (wabt) and in Embedded Swift (the toolchain's swiftc).
        let bytes = language == "wat" ? try Modules.wat("calibrate")
            : try WasmBuild.bytes(WasmBuild.swift("calibrate", out: "\(Modules.dir)/calibrate-swift.wasm"))
        let f = try Modules.function(bytes)
        #expect(numbers(f.apply(reading("lab", "ph", 10))) == ["lab/ph": 10 * 1.0125 - 0.42])
        guard case .keep(let none) = f.apply(Reading(device: "lab", metric: "ok", time: 1, value: .bool(true))) else { Issue.record("a bool passes"); return }
        #expect(none.isEmpty)
    }

    @Test func loopsTrapsAndBadOutputAreStoppedCountedAndTheFunctionGoesOn() throws {
        let f = try Modules.function(try Modules.wat("hostile", Modules.hostile), fuel: 50_000, memory: 2 << 20, onError: .pass)
        func failure(_ v: Double) -> (String, Bool)? {
            if case .failed(let m, let p) = f.apply(reading("d", "m", v)) { return (m, p) }
            return nil
        }
        let t0 = ContinuousClock.now
        let loop = failure(1)
        #expect(loop?.0.contains("fuel") == true && loop?.1 == true, "\(String(describing: loop))")
        #expect(ContinuousClock.now - t0 < .seconds(2), "an endless loop ends with its fuel")
        let oob = failure(2)
        #expect(oob?.0.contains("out of bounds") == true, "\(String(describing: oob))")
        let div = failure(3)
        #expect(div?.0.contains("divide by zero") == true || div?.0.contains("division") == true, "\(String(describing: div))")
        let nan = failure(5)
        #expect(nan?.0.contains("not finite") == true, "\(String(describing: nan))")
        // After each trap a fresh instance: the next reading is computed.
        #expect(numbers(f.apply(reading("d", "m", 21))) == ["d/m": 42])
        let s = f.statistics()
        #expect(s.failures[.outOfFuel] == 1 && s.failures[.trap] == 2 && s.failures[.badOutput] == 1, "\(s.failures)")
        #expect(s.restarts == 3 && s.consecutiveFailures == 0 && !s.disabled)
        #expect(s.fuelMax == 50_000)
    }

    @Test func memoryIsCappedAtLoadAndOnGrowth() throws {
        // 2 MiB at start, above a 1 MiB cap: refused when loaded, with the reason.
        let big = try Modules.wat("big", """
        (module (memory (export "memory") 32)
          (func (export "brume_buffer") (result i32) (i32.const 0)) (func (export "brume_buffer_size") (result i32) (i32.const 4096))
          (func (export "brume_reading") (param i32) (result i32) (i32.const 1)))
        """)
        #expect(throws: FunctionLoadError.self) { try Modules.function(big) }
        do { _ = try Modules.function(big) } catch let error as FunctionLoadError { #expect(error.message.contains("memory"), "\(error.message)") }
        _ = try Modules.function(big, memory: 4 << 20)   // within a larger cap: fine
        // Growing past the cap: memory.grow answers -1 to the guest, which here returns it.
        let f = try Modules.function(try Modules.wat("hostile", Modules.hostile), memory: 2 << 20)
        guard case .failed(let m, _) = f.apply(reading("d", "m", 4)) else { Issue.record("expected the refused growth"); return }
        #expect(m.contains("error code -1"), "\(m)")
        let roomy = try Modules.function(try Modules.wat("hostile", Modules.hostile), memory: 8 << 20)
        // With room, the growth succeeds and returns the old size, 1 page: BRUME_KEEP.
        guard case .keep = roomy.apply(reading("d", "m", 4)) else { Issue.record("the growth within the cap failed"); return }
    }

    @Test func aFunctionThatKeepsFailingIsDisabledAndDeadLettersItsInput() throws {
        let dl = TestKit.tempDir("brume-dl")
        let f = try Modules.function(try Modules.wat("hostile", Modules.hostile), name: "hostile", fuel: 10_000, onError: .deadLetter,
                                     disableAfter: 3, deadLetters: dl)
        for i in 0..<5 {
            guard case .failed(_, let passOn) = f.apply(reading("d", "m", 2, time: 1_764_000_000_000 + Int64(i))) else { Issue.record("call \(i)"); return }
            #expect(!passOn)
        }
        let s = f.statistics()
        #expect(s.disabled && s.failures[.trap] == 3 && s.failures[.disabled] == 2 && s.calls == 3, "\(s)")
        #expect(s.deadLettered == 5)
        let lines = try String(contentsOfFile: "\(dl)/hostile.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 5)
        #expect(lines.first?.hasPrefix(#"{"device":"d","metric":"m","time":1764000000000,"value":2,"function":"hostile","reason":"trap""#) == true, "\(lines.first ?? "")")
        #expect(lines.last?.contains(#""reason":"disabled""#) == true)
        // A good reading is not computed either while disabled.
        guard case .failed(let m, _) = f.apply(reading("d", "m", 21)) else { Issue.record("disabled"); return }
        #expect(m.contains("disabled"))
    }

    @Test func importsOtherThanTheABIAreRefused() throws {
        let wasi = try Modules.wat("wasi", """
        (module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "brume_buffer") (result i32) (i32.const 0)) (func (export "brume_buffer_size") (result i32) (i32.const 4096))
          (func (export "brume_reading") (param i32) (result i32) (i32.const 1)))
        """)
        do { _ = try Modules.function(wasi); Issue.record("accepted WASI") } catch let error as FunctionLoadError {
            #expect(error.message.contains("wasi_snapshot_preview1.fd_write") && error.message.contains("only env.brume_emit"), "\(error.message)")
        }
        // A decoder module declared as a reading function: the entry point is missing.
        do { _ = try Modules.function(try Modules.c("vendor_decoder"), .reading); Issue.record("accepted") } catch let error as FunctionLoadError {
            #expect(error.message.contains("brume_reading"), "\(error.message)")
        }
        do { _ = try Modules.function([0, 97, 115, 109, 9, 9]); Issue.record("accepted garbage") } catch let error as FunctionLoadError {
            #expect(error.message.contains("not a valid WebAssembly module"), "\(error.message)")
        }
    }

    static func tankFrame(level: UInt16, temp: Int16, battery: UInt8, lid: Bool, corrupt: Bool = false) -> [UInt8] {
        var p: [UInt8] = [0x01, UInt8(level >> 8), UInt8(level & 0xFF), UInt8(UInt16(bitPattern: temp) >> 8), UInt8(UInt16(bitPattern: temp) & 0xFF), battery, lid ? 1 : 0]
        var crc: UInt16 = 0xFFFF
        for b in p {
            crc ^= UInt16(b)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
        }
        if corrupt { crc ^= 1 }
        p += [UInt8(crc & 0xFF), UInt8(crc >> 8)]
        return p
    }

    @Test func aBinaryDecoderTurnsAVendorFrameIntoReadings() throws {
        let dl = TestKit.tempDir("brume-dl")
        let f = try Modules.function(try Modules.c("vendor_decoder"), .decoder, name: "tank", onError: .deadLetter, deadLetters: dl)
        let decoder = PayloadDecoder(format: .function(name: "tank"), function: f)
        var out: [Reading] = []
        // Whitespace bytes (0x20, 0x0A) at the ends are data, not trimmed.
        let frame = Self.tankFrame(level: 0x0A20, temp: -35, battery: 0x20, lid: true)
        _ = try frame.withUnsafeBytes { try decoder.decode($0, device: "tank-7", metric: "", receivedAt: 1_764_000_000_000, into: &out) }
        let byMetric = Dictionary(out.map { ($0.metric, $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(byMetric == ["level": .number(Double(0x0A20) / 100), "temperature": .number(-3.5), "battery": .number(32), "lid_open": .bool(true)])
        #expect(out.allSatisfy { $0.device == "tank-7" && $0.time == 1_764_000_000_000 })
        // A corrupt frame: a decoder error, the payload dead-lettered as base64.
        let bad = Self.tankFrame(level: 1, temp: 1, battery: 1, lid: false, corrupt: true)
        do {
            _ = try bad.withUnsafeBytes { try decoder.decode($0, device: "tank-7", metric: "", receivedAt: 1_764_000_000_001, into: &out) }
            Issue.record("accepted a bad CRC")
        } catch let error as PayloadError {
            #expect(error.reason == .functionFailed && error.message.contains("error code -4"), "\(error)")
        }
        #expect(out.count == 4)
        let line = try String(contentsOfFile: "\(dl)/tank.jsonl", encoding: .utf8)
        #expect(line.contains(#""payload_base64":"\#(Base64.encode(bad))""#), "\(line)")
    }

    @Test func aWindowFunctionSeesTheWholeWindow() throws {
        let f = try Modules.function(try Modules.c("spike_detector"), .window)
        var samples = (0..<30).map { WindowSample(time: 1_764_000_000_000 + Int64($0) * 1000, value: 20 + Double($0 % 3) * 0.1) }
        samples[17].value = 95
        let out = f.window(device: "boiler", metric: "temperature", end: 1_764_000_060_000, samples: samples)
        guard case .replace(let rs) = out else { Issue.record("\(out)"); return }
        #expect(rs.count == 1)
        #expect(rs.first?.metric == "temperature.spikes" && rs.first?.value == .number(1) && rs.first?.time == 1_764_000_060_000)
    }

    /// In the rules engine: a function ahead of a windowed rule; its output is what the rule sees.
    @Test func inTheRulesAFunctionRunsAheadOfTheRules() throws {
        let f = try Modules.function(try Modules.wat("calibrate"), name: "cal")
        let rules = [
            RuleSpec(match: ["lab/*"], function: FunctionRef(name: "cal", mode: .reading)),
            RuleSpec(name: "avg", match: ["lab/ph"], window: WindowSpec(.count(n: 2)), emit: [.avg]),
        ]
        let compiled = try RulesCompiler.compile(rules: rules, derived: [], triggers: []).get()
        let engine = RulesEngine(rules: compiled, functions: ["cal": f], clock: { 1_764_000_000_000 })
        let out = engine.process([reading("lab", "ph", 10), reading("lab", "ph", 20), reading("lab", "temp", 4)])
        let exp = ((10 * 1.0125 - 0.42) + (20 * 1.0125 - 0.42)) / 2
        #expect(out.readings.map(\.metric) == ["ph.avg", "temp"])
        if case .number(let v)? = out.readings.first?.value { #expect(abs(v - exp) < 1e-12) }
        #expect(engine.stats()["function:cal"]?.in == 3)
    }

    /// The configuration cases load a committed build of Tests/Fixtures/functions/all-kinds.wat:
    /// it must be what wat2wasm makes of that text today.
    @Test func theCommittedCaseModuleIsItsSourceBuilt() throws {
        let fresh = try Modules.wat("all-kinds", fixturesDirectory() + "/functions/all-kinds.wat")
        for c in ["valid-functions", "functions-errors"] {
            let committed = try WasmBuild.bytes(fixturesDirectory() + "/../BrumeConfigTests/cases/\(c)/all-kinds.wasm")
            #expect(committed == fresh, "rebuild: wat2wasm Tests/Fixtures/functions/all-kinds.wat -o Tests/BrumeConfigTests/cases/\(c)/all-kinds.wasm")
        }
        _ = try Modules.function(fresh, .window)
        _ = try Modules.function(fresh, .decoder)
    }

    /// Host calls pay fuel (a loop of brume_log ends), memory may grow at most 64 times, and a
    /// module that traps every other call is disabled though successes come between.
    @Test func hostCallsGrowthsAndTrapStormsAreBounded() throws {
        let logger = try Modules.wat("log-loop", """
        (module
          (import "env" "brume_log" (func $log (param i32 i32 i32)))
          (memory (export "memory") 1)
          (func (export "brume_buffer") (result i32) (i32.const 1024))
          (func (export "brume_buffer_size") (result i32) (i32.const 4096))
          (func (export "brume_reading") (param i32) (result i32)
            (loop $l (call $log (i32.const 0) (i32.const 0) (i32.const 1024)) (br $l))
            (i32.const 1)))
        """)
        let f = try Modules.function(logger, fuel: 1_000_000_000)
        let t0 = ContinuousClock.now
        guard case .failed(let m, _) = f.apply(reading("d", "m", 1)) else { Issue.record("the log loop ended?"); return }
        #expect(m.contains("fuel"), "\(m)")
        #expect(ContinuousClock.now - t0 < .seconds(20), "a billion fuel of log calls is ~1M calls: bounded")
        #expect(f.statistics().logLines <= 20 && f.statistics().logSuppressed > 1000)

        let grower = try Modules.wat("grow-loop", """
        (module
          (memory (export "memory") 1)
          (func (export "brume_buffer") (result i32) (i32.const 1024))
          (func (export "brume_buffer_size") (result i32) (i32.const 4096))
          (func (export "brume_reading") (param i32) (result i32)
            (local $ok i32)
            (loop $l
              (if (i32.ge_s (memory.grow (i32.const 1)) (i32.const 0)) (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))
                (br $l))))
            (i32.sub (i32.const 0) (local.get $ok))))
        """)
        let g = try Modules.function(grower, memory: 64 << 20)
        guard case .failed(let gm, _) = g.apply(reading("d", "m", 1)) else { Issue.record("expected the count as an error code"); return }
        #expect(gm.contains("error code -63"), "64 growths per instance, the first is the initial memory: \(gm)")

        let h = try Modules.function(try Modules.wat("hostile", Modules.hostile), onError: .pass, disableAfter: 3)
        for v in [2.0, 21, 2, 21, 2] { _ = h.apply(reading("d", "m", v)) }
        let s = h.statistics()
        #expect(s.disabled && s.failures[.trap] == 3 && s.consecutiveFailures == 1, "\(s)")
        // A reload that keeps the instance enables it again.
        let dir = FunctionDirectory(logger: .init(label: "t"), deadLetterDirectory: nil)
        let set = try dir.prepare([h.spec])
        dir.install(set)
        dir.install(try dir.prepare([h.spec]))
        let again = dir.function(named: h.spec.name)!
        _ = again.apply(reading("d", "m", 2))
        for _ in 0..<2 { _ = again.apply(reading("d", "m", 2)) }
        #expect(again.statistics().disabled)
        dir.install(try dir.prepare([h.spec]))
        #expect(dir.function(named: h.spec.name) === again && !again.statistics().disabled)
        #expect(numbers(again.apply(reading("d", "m", 21))) == ["d/m": 42])
    }

    /// sdk/examples/delta_t.c (the demo's function): state across calls in its own memory.
    @Test func aFunctionKeepsStateAcrossReadings() throws {
        let f = try Modules.function(try Modules.c("delta_t"))
        guard case .keep(let none) = f.apply(reading("heating", "flow_temperature", 60)) else { Issue.record("keep"); return }
        #expect(none.isEmpty, "only the flow is known")
        #expect(numbers(f.apply(reading("heating", "return_temperature", 45.5))) == ["heating/delta_t": 14.5])
        #expect(numbers(f.apply(reading("heating", "flow_temperature", 61))) == ["heating/delta_t": 15.5])
    }

    /// A window function with keep_raw: numbers go to its windows, strings and bools go on
    /// untouched (no error); unnamed [[rule]]s keep their numbers (rule#1 is the first [[rule]]).
    @Test func aWindowFunctionLetsOtherValuesPassAndRulesKeepTheirNumbers() throws {
        let f = try Modules.function(try Modules.c("spike_detector"), .window, name: "spikes")
        let rules = [
            RuleSpec(match: ["pump/*"], window: WindowSpec(.count(n: 3)), keepRaw: true, function: FunctionRef(name: "spikes", mode: .window)),
            RuleSpec(match: ["pump/state"]),
        ]
        let compiled = try RulesCompiler.compile(rules: rules, derived: [], triggers: []).get()
        let engine = RulesEngine(rules: compiled, functions: ["spikes": f], clock: { 1_764_000_000_000 })
        let out = engine.process([reading("pump", "flow", 1), Reading(device: "pump", metric: "state", time: 1_764_000_000_001, value: .string("running")),
                                  reading("pump", "flow", 2), reading("pump", "flow", 3)])
        #expect(out.readings.map(\.metric) == ["flow", "state", "flow", "flow.spikes", "flow"])
        #expect(engine.stats()["function:spikes"]?.errors == 0)
        #expect(engine.stats()["rule#1"]?.in == 1, "\(engine.stats().keys.sorted())")
    }
}
