// PayloadDecoder in its three formats. Input: byte 0 picks the format and pointers, the rest is
// the payload. Invariants: an error appends nothing; readings are finite, of the right device and
// metric, strings at most maxStringBytes; .number/.jsonValue give exactly one reading; a plain
// number equals the C library's correctly rounded conversion of the trimmed text.
import BrumeCore
import BrumeRules
import FuzzSupport

let valuePointers: [JSONPointer] = ["/v", "", "/data/v", "/a/0", "/~1x"].map { try! JSONPointer($0) }
let timePointers: [JSONPointer?] = [nil, try! JSONPointer("/ts"), try! JSONPointer("/t"), try! JSONPointer("/data/ts")]
let sentinel = Reading(device: "sentinel", metric: "sentinel", time: -1, value: .bool(true))
let receivedAt: Int64 = 1_764_169_999_000
/// Readings go on through rules that do arithmetic on their times (a payload's timestamp at
/// ±9e24 ms once overflowed `min_interval` and crashed the gateway): rate limit, deadband with
/// heartbeat, tumbling and session windows with late tolerance.
let engine: RulesEngine = {
    let specs = [
        RuleSpec(name: "rate", match: ["dev/*"], minIntervalMillis: 1_000),
        RuleSpec(name: "band", match: ["**"], deadband: 0.5, heartbeatMillis: 60_000),
        RuleSpec(name: "win", match: ["dev/**"], window: WindowSpec(.tumbling(sizeMillis: 60_000)), emit: [.avg, .min, .max, .count],
                 keepRaw: true, lateToleranceMillis: 5_000),
        RuleSpec(name: "sess", match: ["**"], window: WindowSpec(.session(gapMillis: 30_000)), emit: [.sum, .stddev], keepRaw: true),
    ]
    guard case .success(let compiled) = RulesCompiler.compile(rules: specs, derived: [], triggers: []) else { fatalError("fuzz rules do not compile") }
    return RulesEngine(rules: compiled, clock: { receivedAt })
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let selector = Int(data[0])
    let payload = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    let timePointer = timePointers[(selector / 3) % timePointers.count]
    let format: PayloadFormat
    switch selector % 3 {
    case 0: format = .number
    case 1: format = .jsonValue(value: valuePointers[(selector / 12) % valuePointers.count], time: timePointer)
    default: format = .jsonObject(time: timePointer)
    }
    let metric = selector & 0x80 != 0 ? "" : "m"
    let decoder = PayloadDecoder(format: format, maxBytes: selector & 0x40 != 0 ? 64 : 65536)

    var out = [sentinel]
    let skipped: Int
    do {
        skipped = try decoder.decode(payload, device: "dev", metric: metric, receivedAt: receivedAt, into: &out)
    } catch {
        invariant(out == [sentinel], "\(error.reason) error appended readings: \(out)")
        return 0
    }
    invariant(out.first == sentinel, "decode modified existing readings")
    let readings = out.dropFirst()
    invariant(!readings.isEmpty, "success without a reading")
    invariant(allFinite(readings), "non-finite reading: \(readings)")
    // Times stay where arithmetic on them cannot overflow (±1e14 ms, year ±5138).
    invariant(readings.allSatisfy { $0.time.magnitude < 100_000_000_000_000 }, "time out of range: \(readings.map(\.time))")
    _ = engine.process(Array(readings))
    _ = engine.tick()
    invariant(payload.count <= decoder.maxBytes, "payload over maxBytes accepted")
    for r in readings {
        invariant(r.device == "dev", "device changed: \(r)")
        if case .string(let s) = r.value { invariant(s.utf8.count <= PayloadDecoder.maxStringBytes, "string of \(s.utf8.count) bytes") }
    }
    switch format {
    case .number, .jsonValue:
        invariant(readings.count == 1 && skipped == 0, "\(readings.count) readings, \(skipped) skipped")
        invariant(readings.first!.metric == metric, "metric \(readings.first!.metric) != \(metric)")
        if case .jsonValue(_, nil) = format { invariant(readings.first!.time == receivedAt, "time without time pointer") }
    case .jsonObject(let tp):
        invariant(skipped >= 0, "negative skipped count")
        if tp == nil { invariant(readings.allSatisfy { $0.time == receivedAt }, "time without time pointer") }
        if !metric.isEmpty { invariant(readings.allSatisfy { $0.metric.hasPrefix(metric + ".") }, "metric prefix missing: \(readings)") }
    case .function:
        break   // never built here: a user function's output is checked by BrumeFunctions (ABI.read)
    }
    if case .number = format, case .number(let d) = readings.first!.value {
        var lo = 0, hi = payload.count
        while lo < hi, [0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C].contains(payload[lo]) { lo += 1 }
        while hi > lo, [0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C].contains(payload[hi - 1]) { hi -= 1 }
        let literal = String(decoding: payload[lo..<hi], as: UTF8.self)
        let expected = Double(literal)
        invariant(expected != nil, "accepted \(literal) as a number, strtod does not")
        invariant(expected!.bitPattern == d.bitPattern, "number \(literal) decoded as \(d) (bits \(String(d.bitPattern, radix: 16))), correctly rounded is \(expected!) (bits \(String(expected!.bitPattern, radix: 16)))")
    }
    return 0
}

@_cdecl("fuzz_payload_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
