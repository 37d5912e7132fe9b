// Microbenchmarks of Brume's per-reading hot paths (see docs/PERFORMANCE.md, "Microbenchmarks").
//
//   cd bench/micro && swift package benchmark
//
// Every benchmark states in its name how much work one iteration does ("1 reading/payload",
// "5,000 readings"). The payload and rules benchmarks use `scalingFactor: .kilo` (1,000
// payloads / readings per iteration), so the tool prints their figures per payload / per
// reading (rows marked `*`). Inputs are built outside the measured region.

import Benchmark
import BrumeCore
import BrumeFunctions
import BrumeRules
import BrumeSerial
import BrumeStore
import Foundation
import Logging
import Synchronization

// MARK: - realistic inputs

/// 20 devices × 5 metrics: the fleet every benchmark uses.
let deviceNames = (0..<20).map { "dev\($0 < 10 ? "0" : "")\($0)" }
let metricNames = ["temperature", "humidity", "pressure", "co2", "voltage"]
let epochMillis: Int64 = 1_764_169_999_000

/// SplitMix64: deterministic inputs from run to run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A plausible value of `metric` (index into `metricNames`), with sensor-like decimals.
func sampleValue(_ metric: Int, _ rng: inout SplitMix64) -> Double {
    func round(_ v: Double, _ places: Double) -> Double { (v * places).rounded() / places }
    switch metric {
    case 0: return round(Double.random(in: 18...26, using: &rng), 100)        // °C
    case 1: return round(Double.random(in: 35...65, using: &rng), 10)         // %RH
    case 2: return round(Double.random(in: 100_800...101_900, using: &rng), 1) // Pa
    case 3: return Double(Int.random(in: 400...1400, using: &rng))            // ppm
    default: return round(Double.random(in: 3.55...4.15, using: &rng), 1000) // V
    }
}

/// `count` readings cycling over the 100 streams, one round of all streams per second.
func fleetReadings(_ count: Int, seed: UInt64 = 1) -> [Reading] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { i in
        let stream = i % 100
        let m = stream % 5
        return Reading(device: deviceNames[stream / 5], metric: metricNames[m],
                       time: epochMillis + Int64(i / 100) * 1000 + Int64(stream), value: .number(sampleValue(m, &rng)))
    }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Splits a byte stream into `size`-byte chunks, as a serial port read would deliver it.
func chunks(_ stream: [UInt8], _ size: Int) -> [[UInt8]] {
    stride(from: 0, to: stream.count, by: size).map { Array(stream[$0..<min(stream.count, $0 + size)]) }
}

// MARK: - rules: 100 rules over 20 devices × 5 metrics

/// Per device, 5 rules (20 × 5 = 100), in file order:
/// 1. `devNN/*` validation: `drop_if = "value < -1000 || value > 200000"` (all 5 streams).
/// 2. `devNN/temperature` calibration: `scale = 1.02, offset = -0.3`, `drop_if = "value > 125"`.
/// 3. `devNN/humidity` report on change: `deadband = 0.5, heartbeat = 60 s`.
/// 4. `devNN/pressure` 10 s tumbling window, emit avg/max/p99 (raw consumed).
/// 5. `devNN/co2` 60 s tumbling window, emit avg/max/p99, `keep_raw = true`.
/// `voltage` only passes rule 1. So a reading crosses 1–2 rules, plus the 100-rule match
/// (cached per stream), and windows emit their aggregates when event time crosses a boundary.
func hundredRules() -> [RuleSpec] {
    var specs: [RuleSpec] = []
    var line = 1
    func x(_ text: String) -> ExprText { ExprText(text, at: SourceSpan(line: line, column: 11)) }
    for d in deviceNames {
        specs.append(RuleSpec(name: "\(d)-valid", match: ["\(d)/*"], span: SourceSpan(line: line, column: 1),
                              dropIf: x("value < -1000 || value > 200000")))
        line += 3
        specs.append(RuleSpec(name: "\(d)-temp-cal", match: ["\(d)/temperature"], span: SourceSpan(line: line, column: 1),
                              dropIf: x("value > 125"), scale: 1.02, offset: -0.3))
        line += 5
        specs.append(RuleSpec(name: "\(d)-hum-db", match: ["\(d)/humidity"], span: SourceSpan(line: line, column: 1),
                              deadband: 0.5, heartbeatMillis: 60_000))
        line += 4
        specs.append(RuleSpec(name: "\(d)-press-win", match: ["\(d)/pressure"], span: SourceSpan(line: line, column: 1),
                              window: WindowSpec(.tumbling(sizeMillis: 10_000)), emit: [.avg, .max, .p99]))
        line += 4
        specs.append(RuleSpec(name: "\(d)-co2-win", match: ["\(d)/co2"], span: SourceSpan(line: line, column: 1),
                              window: WindowSpec(.tumbling(sizeMillis: 60_000)), emit: [.avg, .max, .p99], keepRaw: true))
        line += 5
    }
    return specs
}

/// The engine clock follows the event time of the stream being fed (as a live gateway's would).
final class StreamClock: Sendable {
    let ms = Atomic<Int64>(epochMillis)
    var read: @Sendable () -> Int64 { { self.ms.load(ordering: .relaxed) } }
}

/// A rules engine with `hundredRules()` and an endless fleet stream: `next()` returns the next
/// reading, each stream getting one reading per second of event time.
final class RulesBench {
    let engine: RulesEngine
    let clock = StreamClock()
    private let template: [Reading]
    private var cursor = 0
    private var second: Int64 = 0

    /// `functions`: that many WebAssembly functions ahead of the rules, one per metric
    /// (`*/temperature`, ...): every reading crosses exactly one. `map`: calibrate.wat (emits the
    /// reading with a new value); otherwise the trivial one (keeps the reading).
    init(functions: Int = 0, map: Bool = false) {
        let steps = metricNames.prefix(functions).map { m in
            RuleSpec(match: ["*/\(m)"], function: FunctionRef(name: "cal-\(m)", mode: .reading))
        }
        var impls: [String: any RuleFunction] = [:]
        for m in metricNames.prefix(functions) { impls["cal-\(m)"] = map ? calibrateFunction("cal-\(m)") : keepFunction("cal-\(m)") }
        switch RulesCompiler.compile(rules: steps + hundredRules(), derived: [], triggers: []) {
        case .success(let c): engine = RulesEngine(rules: c, functions: impls, clock: clock.read)
        case .failure(let d): fatalError("rules do not compile:\n\(d)")
        }
        precondition(engine.stats().count == 100 + functions)
        // 60 s of values per stream (6,000 readings), replayed with advancing time.
        template = fleetReadings(6000, seed: 7)
    }

    @inline(__always) func next() -> Reading {
        var r = template[cursor]
        r.time = epochMillis + second * 1000 + Int64(cursor % 100)
        cursor += 1
        if cursor % 100 == 0 {
            second += 1
            clock.ms.store(epochMillis + second * 1000, ordering: .relaxed)
            if cursor == template.count { cursor = 0 }
        }
        return r
    }
}

/// sdk/examples/calibrate.wat, assembled by wat2wasm (`v * 1.0125 - 0.42`): the trivial function.
let calibrateWasm: [UInt8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x02, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x01, 0x7f, 0x02, 0x12, 0x01, 0x03, 0x65, 0x6e, 0x76, 0x0a, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x65, 0x6d, 0x69, 0x74, 0x00, 0x00, 0x03, 0x04, 0x03, 0x01, 0x01, 0x00, 0x05, 0x04, 0x01, 0x01, 0x01, 0x01, 0x07, 0x3d, 0x04, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x0c, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x62, 0x75, 0x66, 0x66, 0x65, 0x72, 0x00, 0x01, 0x11, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x62, 0x75, 0x66, 0x66, 0x65, 0x72, 0x5f, 0x73, 0x69, 0x7a, 0x65, 0x00, 0x02, 0x0d, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x72, 0x65, 0x61, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x03, 0x0a, 0x47, 0x03, 0x05, 0x00, 0x41, 0x80, 0x08, 0x0b, 0x05, 0x00, 0x41, 0x80, 0x20, 0x0b, 0x39, 0x00, 0x41, 0x90, 0x08, 0x28, 0x02, 0x00, 0x41, 0x00, 0x47, 0x04, 0x40, 0x41, 0x01, 0x0f, 0x0b, 0x41, 0x88, 0x08, 0x41, 0x88, 0x08, 0x2b, 0x03, 0x00, 0x44, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0xf0, 0x3f, 0xa2, 0x44, 0xe1, 0x7a, 0x14, 0xae, 0x47, 0xe1, 0xda, 0x3f, 0xa1, 0x39, 0x03, 0x00, 0x41, 0x80, 0x08, 0x10, 0x00, 0x1a, 0x41, 0x00, 0x0b
]

/// Tests/Fixtures/functions/all-kinds.wat, assembled: `brume_reading` returns BRUME_KEEP at once
/// (the trivial function: the cost of a call itself).
let keepWasm: [UInt8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x02, 0x60, 0x00, 0x01, 0x7f, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x03, 0x06, 0x05, 0x00, 0x00, 0x01, 0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x5b, 0x06, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x0c, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x62, 0x75, 0x66, 0x66, 0x65, 0x72, 0x00, 0x00, 0x11, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x62, 0x75, 0x66, 0x66, 0x65, 0x72, 0x5f, 0x73, 0x69, 0x7a, 0x65, 0x00, 0x01, 0x0d, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x72, 0x65, 0x61, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x02, 0x0c, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x77, 0x69, 0x6e, 0x64, 0x6f, 0x77, 0x00, 0x03, 0x0c, 0x62, 0x72, 0x75, 0x6d, 0x65, 0x5f, 0x64, 0x65, 0x63, 0x6f, 0x64, 0x65, 0x00, 0x04, 0x0a, 0x1c, 0x05, 0x05, 0x00, 0x41, 0x80, 0x08, 0x0b, 0x05, 0x00, 0x41, 0x80, 0x20, 0x0b, 0x04, 0x00, 0x41, 0x01, 0x0b, 0x04, 0x00, 0x41, 0x00, 0x0b, 0x04, 0x00, 0x41, 0x00, 0x0b
]

func calibrateFunction(_ name: String) -> WasmFunction {
    try! WasmFunction(FunctionSpec(name: name, path: "calibrate.wasm", bytes: calibrateWasm, kind: .reading, fuel: 10_000, onError: .drop))
}

func keepFunction(_ name: String) -> WasmFunction {
    try! WasmFunction(FunctionSpec(name: name, path: "keep.wasm", bytes: keepWasm, kind: .reading, fuel: 10_000, onError: .drop))
}

nonisolated(unsafe) var rulesBench: RulesBench?

func openRulesBench(functions: Int = 0, map: Bool = false) {
    let bench = RulesBench(functions: functions, map: map)
    // One minute of event time first: every window has opened and closed, deadbands are set.
    for _ in 0..<6000 { blackHole(bench.engine.process([bench.next()])) }
    rulesBench = bench
}

func closeRulesBench() {
    guard let bench = rulesBench else { return }
    let stats = bench.engine.stats().values
    let emitted = stats.reduce(0) { $0 + $1.out }
    precondition(stats.allSatisfy { $0.errors == 0 } && emitted > 0, "rules failed: \(bench.engine.stats())")
    rulesBench = nil
}

// MARK: - outbox

func tempOutboxDir() -> String {
    let dir = NSTemporaryDirectory() + "brume-bench-\(getpid())-\(UUID().uuidString.prefix(8))"
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func makeOutbox(_ dir: String) -> Outbox {
    var logger = Logger(label: "bench")
    logger.logLevel = .warning
    // Defaults of gateway.toml: synchronous = normal, segments of up to 8,192 readings.
    return try! Outbox(options: OutboxOptions(path: "\(dir)/outbox.db", maxBytes: 1 << 30), logger: logger)
}

/// Shared by the outbox benchmarks (one benchmark runs per process; setup/teardown bracket it).
nonisolated(unsafe) var outboxDir: String?
nonisolated(unsafe) var outbox: Outbox?

func openOutbox() {
    let dir = tempOutboxDir()
    outboxDir = dir
    outbox = makeOutbox(dir)
}

func closeOutbox() {
    if let box = outbox {
        // Every append was committed (flush() commits synchronously: no writer thread here).
        let st = box.stats
        precondition(st.pendingInMemory == 0 && st.committed > 0 && st.committed % 5000 == 0, "outbox stats: \(st)")
    }
    outbox?.close()
    outbox = nil
    if let dir = outboxDir { try? FileManager.default.removeItem(atPath: dir) }
    outboxDir = nil
}

// MARK: - benchmarks

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 3,
        maxDuration: .seconds(2),
        maxIterations: 100_000
    )
    let perThousand = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal], timeUnits: .nanoseconds, warmupIterations: 3,
        scalingFactor: .kilo, maxDuration: .seconds(2), maxIterations: 100_000)

    // ---- payload parsing (BrumeCore) -------------------------------------------------------
    // One MQTT message per inner iteration, decoded as MQTTSource does (fresh output array).

    var rng = SplitMix64(seed: 42)
    let numberPayloads = (0..<100).map { i in bytes(WireFormat.formatNumber(sampleValue(i % 5, &rng))) }
    let jsonValuePayloads = (0..<100).map { i in
        bytes(#"{"v":\#(WireFormat.formatNumber(sampleValue(i % 5, &rng))),"ts":\#(epochMillis + Int64(i) * 1000)}"#)
    }
    let jsonObjectPayloads = (0..<100).map { i in
        bytes(#"{"temperature":\#(WireFormat.formatNumber(sampleValue(0, &rng))),"humidity":\#(WireFormat.formatNumber(sampleValue(1, &rng))),"#
              + #""pressure":\#(WireFormat.formatNumber(sampleValue(2, &rng))),"co2":\#(WireFormat.formatNumber(sampleValue(3, &rng))),"#
              + #""voltage":\#(WireFormat.formatNumber(sampleValue(4, &rng))),"ts":\#(epochMillis + Int64(i) * 1000)}"#)
    }
    let ts = try! JSONPointer("/ts")
    let v = try! JSONPointer("/v")

    func payloadBenchmark(_ name: String, _ format: PayloadFormat, _ payloads: [[UInt8]], metric: String, expect: Int) {
        Benchmark(name, configuration: perThousand) { benchmark in
            let decoder = PayloadDecoder(format: format)
            var i = 0
            var total = 0
            for _ in benchmark.scaledIterations {
                var out: [Reading] = []
                try! decoder.decode(payloads[i], device: "dev07", metric: metric, receivedAt: epochMillis, into: &out)
                total &+= out.count
                i = i == 99 ? 0 : i + 1
            }
            precondition(total == expect * benchmark.scaledIterations.count)
            blackHole(total)
        }
    }
    payloadBenchmark("Payload .number (1 reading/payload)", .number, numberPayloads, metric: "temperature", expect: 1)
    payloadBenchmark(#"Payload .jsonValue /v /ts (1 reading/payload)"#, .jsonValue(value: v, time: ts), jsonValuePayloads,
                     metric: "temperature", expect: 1)
    payloadBenchmark("Payload .jsonObject /ts (5 readings/payload)", .jsonObject(time: ts), jsonObjectPayloads,
                     metric: "", expect: 5)

    // ---- serial framing (BrumeSerial) ------------------------------------------------------
    // The byte stream arrives in 64-byte reads; LineFramer splits lines, FrameDecoder decodes
    // them into a reused output buffer, emptied after each read (as SerialSource does).

    let kvLines = (0..<100).map { i -> String in
        var r = SplitMix64(seed: UInt64(i))
        return "temp=\(WireFormat.formatNumber(sampleValue(0, &r))),hum=\(WireFormat.formatNumber(sampleValue(1, &r)))"
            + ",pressure=\(WireFormat.formatNumber(sampleValue(2, &r) / 100)),state=\(i % 7 == 0 ? "open" : "closed")"
    }
    let kvChunks = chunks(bytes(kvLines.joined(separator: "\r\n") + "\r\n"), 64)
    let nmeaChunks = chunks(bytes(nmeaSentences.joined(separator: "\r\n") + "\r\n"), 64)

    func framingBenchmark(_ name: String, _ format: SerialFormat, device: String, _ stream: [[UInt8]], frames: Int, readings expected: Int) {
        // One inner iteration = the whole stream (`frames` lines).
        Benchmark(name, configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], timeUnits: .nanoseconds,
                                             warmupIterations: 3, maxDuration: .seconds(2), maxIterations: 100_000)) { benchmark in
            var framer = LineFramer()
            var decoder = FrameDecoder(format: format, device: device)
            var out: [Reading] = []
            out.reserveCapacity(64)
            var seen = 0
            var readings = 0
            for chunk in stream {
                chunk.withUnsafeBytes { raw in
                    framer.push(raw, onFrame: { frame in
                        seen += 1
                        try? decoder.decode(frame, receivedAt: epochMillis, into: &out)
                    }, onDrop: { _ in })
                }
                readings += out.count
                out.removeAll(keepingCapacity: true)
            }
            if seen != frames || readings != expected { fatalError("\(name): \(seen) frames, \(readings) readings") }
            blackHole(readings)
        }
    }
    framingBenchmark("Serial kv: LineFramer+FrameDecoder (100 lines, 400 readings)",
                     .kv(pairSeparator: UInt8(ascii: ","), assign: UInt8(ascii: "="), timeKey: nil), device: "boiler",
                     kvChunks, frames: 100, readings: 400)
    framingBenchmark("Serial NMEA: LineFramer+FrameDecoder (50 u-blox sentences, 70 readings)", .nmea(requireChecksum: true), device: "gps",
                     nmeaChunks, frames: 50, readings: 70)

    // ---- rules (BrumeRules) ----------------------------------------------------------------

    // The engine lives across iterations (setup/teardown): event time runs on from one
    // iteration to the next, so windows keep closing and deadband state is warm.

    Benchmark("Rules: 100 rules, process() per reading (MQTT path)", configuration: perThousand,
              closure: { benchmark in
                  let bench = rulesBench!
                  var emitted = 0
                  for _ in benchmark.scaledIterations {
                      emitted &+= bench.engine.process([bench.next()]).readings.count
                  }
                  blackHole(emitted)
              },
              setup: { openRulesBench() },
              teardown: { closeRulesBench() })

    Benchmark("Rules: 100 rules, process() of 100-reading batches", configuration: perThousand,
              closure: { benchmark in
                  let bench = rulesBench!
                  // scaledIterations = 1000 readings = 10 batches of 100 (one second of the fleet
                  // each), built outside the measured region.
                  let batches = (0..<(benchmark.scaledIterations.count / 100)).map { _ in (0..<100).map { _ in bench.next() } }
                  var emitted = 0
                  benchmark.startMeasurement()
                  for b in batches {
                      bench.clock.ms.store(b[0].time, ordering: .relaxed)
                      emitted &+= bench.engine.process(b).readings.count
                  }
                  benchmark.stopMeasurement()
                  blackHole(emitted)
              },
              setup: { openRulesBench() },
              teardown: { closeRulesBench() })

    // ---- functions (BrumeFunctions, WebAssembly) --------------------------------------------

    for (label, make, replaces) in [("trivial (keeps the reading)", keepFunction, false), ("map (calibrate.wat: emits a new value)", calibrateFunction, true)] {
        Benchmark("Functions: one call, \(label)", configuration: perThousand,
                  closure: { benchmark in
                      let f = make("f")
                      let readings = fleetReadings(1000)
                      var n = 0
                      benchmark.startMeasurement()
                      for r in readings {
                          switch f.apply(r) {
                          case .replace(let out): n &+= out.count
                          case .keep: n &+= 1
                          case .failed: break
                          }
                      }
                      benchmark.stopMeasurement()
                      precondition(n == readings.count && (f.statistics().outputs > 0) == replaces, "calls failed: \(f.statistics())")
                      blackHole(n)
                  })
    }

    for (label, map) in [("trivial", false), ("map", true)] {
        Benchmark("Rules: 100 rules + 5 \(label) functions, process() per reading (MQTT path)", configuration: perThousand,
                  closure: { benchmark in
                      let bench = rulesBench!
                      var emitted = 0
                      for _ in benchmark.scaledIterations {
                          emitted &+= bench.engine.process([bench.next()]).readings.count
                      }
                      blackHole(emitted)
                  },
                  setup: { openRulesBench(functions: 5, map: map) },
                  teardown: { closeRulesBench() })
    }

    // ---- outbox (BrumeStore) ---------------------------------------------------------------

    let fiveThousand = fleetReadings(5000)

    Benchmark("Outbox: append + flush (group commit) of 5,000 readings",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal, .syscalls], timeUnits: .microseconds,
                                   warmupIterations: 2, maxDuration: .seconds(3), maxIterations: 400),
              closure: { benchmark in
                  let box = outbox!
                  for _ in benchmark.scaledIterations {
                      box.append(fiveThousand)
                      box.flush()
                  }
              },
              setup: { openOutbox() },
              teardown: { closeOutbox() })

    // Prefilled with 1,000,000 committed readings: up to 2,000 batches to drain.
    Benchmark("Outbox: nextBatch + readings(of:) + ack of a 500-reading batch",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal, .syscalls], timeUnits: .microseconds,
                                   warmupIterations: 2, maxDuration: .seconds(3), maxIterations: 1900),
              closure: { benchmark in
                  let box = outbox!
                  for _ in benchmark.scaledIterations {
                      guard case .batch(let rec) = box.nextBatch(maxReadings: 500, maxDelayMillis: 0) else {
                          fatalError("outbox drained: raise the prefill")
                      }
                      let rs = box.readings(of: rec)!
                      precondition(rs.count == 500)
                      box.ack(rec)
                      blackHole(rs)
                  }
              },
              setup: {
                  openOutbox()
                  let chunk = fleetReadings(50_000, seed: 3)
                  for _ in 0..<20 { outbox!.append(chunk); outbox!.flush() }
              },
              teardown: { closeOutbox() })

    // ---- wire encoding (BrumeCore, BrumeStore) ---------------------------------------------

    let batch500 = Array(fiveThousand.prefix(500))
    Benchmark("WireFormat.encodeTelemetry of a 500-reading batch", configuration: .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal], timeUnits: .microseconds, warmupIterations: 3,
        maxDuration: .seconds(2), maxIterations: 100_000)) { benchmark in
        var buffer: [UInt8] = []
        buffer.reserveCapacity(64 << 10)
        for _ in benchmark.scaledIterations {
            buffer.removeAll(keepingCapacity: true)
            WireFormat.encodeTelemetry(gateway: "gw-demo-01", batchID: WireFormat.batchID(gateway: "gw-demo-01", run: 1, first: 1200, last: 1699),
                                       historical: false, readings: batch500, into: &buffer)
            blackHole(buffer.count)
        }
    }

    Benchmark("SegmentCodec.encode of 5,000 readings", configuration: .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal], timeUnits: .microseconds, warmupIterations: 3,
        maxDuration: .seconds(2), maxIterations: 100_000)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(SegmentCodec.encode(fiveThousand))
        }
    }

    let segment = SegmentCodec.encode(fiveThousand)
    Benchmark("SegmentCodec.decode of 5,000 readings", configuration: .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal], timeUnits: .microseconds, warmupIterations: 3,
        maxDuration: .seconds(2), maxIterations: 100_000)) { benchmark in
        for _ in benchmark.scaledIterations {
            let rs = try! SegmentCodec.decode(segment)
            precondition(rs.count == 5000)
            blackHole(rs)
        }
    }
}
