import BrumeTestKit
import Testing
@testable import BrumeCore

@Suite struct WireFormatTests {
    @Test(arguments: [
        (0.0, "0"), (-0.0, "-0"), (71.0, "71"), (-3.0, "-3"), (71.5, "71.5"), (0.1, "0.1"), (-0.25, "-0.25"),
        (1e21, "1e+21"), (1e300, "1e+300"), (Double.leastNonzeroMagnitude, "5e-324"), (1e-5, "1e-05"),
        (1764169999000.0, "1764169999000"), (9007199254740992.0, "9007199254740992"), (-9007199254740992.0, "-9007199254740992"),
        (9007199254740994.0, "9.007199254740994e+15"), (1e16, "1e+16"), (Double.greatestFiniteMagnitude, "1.7976931348623157e+308"),
        (123456.789, "123456.789"), (Double.infinity, "null"), (-Double.infinity, "null"), (Double.nan, "null"),
    ])
    func formatNumber(_ d: Double, _ expected: String) throws {
        #expect(WireFormat.formatNumber(d) == expected)
        #expect(Value.number(d).description == expected)
        if d.isFinite {
            guard case .number(let back) = try JSONParser.parse(expected) else { Issue.record("not a number"); return }
            #expect(back.bitPattern == d.bitPattern)
        }
    }

    @Test func batchID() {
        // Run 0: batches recorded before runs existed keep their old id.
        #expect(WireFormat.batchID(gateway: "gw-demo-01", run: 0, first: 1200, last: 1699) == "gw-demo-01:000000001200-000000001699")
        #expect(WireFormat.batchID(gateway: "g", run: 0, first: 0, last: 1_234_567_890_123) == "g:000000000000-1234567890123")
        #expect(WireFormat.batchID(gateway: "g", run: 0, first: -5, last: Int64.max) == "g:-000000000005-9223372036854775807")
        #expect(WireFormat.batchID(gateway: "gw-demo-01", run: 0x5f3a9c0e12ab44d1, first: 1200, last: 1699)
                == "gw-demo-01:5f3a9c0e12ab44d1:000000001200-000000001699")
        #expect(WireFormat.batchID(gateway: "g", run: 1, first: 1, last: 2) == "g:0000000000000001:000000000001-000000000002")
        #expect(WireFormat.batchID(gateway: "g", run: UInt64.max, first: 1, last: 2) == "g:ffffffffffffffff:000000000001-000000000002")
    }

    @Test func exactTelemetryBytes() {
        var out: [UInt8] = []
        let readings = [
            Reading(device: "boiler", metric: "temperature", time: 1_764_169_999_000, value: .number(71.5)),
            Reading(device: "boiler", metric: "valve", time: 1_764_169_999_001, value: .string("open")),
            Reading(device: "pump", metric: "on", time: 1_764_169_999_002, value: .bool(true)),
            Reading(device: "pump", metric: "count", time: 1_764_169_999_003, value: .number(-3)),
        ]
        WireFormat.encodeTelemetry(gateway: "gw-demo-01", batchID: "gw-demo-01:000000001200-000000001699", historical: false, readings: readings, into: &out)
        #expect(String(decoding: out, as: UTF8.self) ==
            #"{"v":1,"gw":"gw-demo-01","batch":"gw-demo-01:000000001200-000000001699","hist":false,"readings":["#
            + #"{"d":"boiler","m":"temperature","t":1764169999000,"v":71.5},"#
            + #"{"d":"boiler","m":"valve","t":1764169999001,"v":"open"},"#
            + #"{"d":"pump","m":"on","t":1764169999002,"v":true},"#
            + #"{"d":"pump","m":"count","t":1764169999003,"v":-3}]}"#)

        var empty: [UInt8] = [0x41]
        WireFormat.encodeTelemetry(gateway: "g", batchID: "b", historical: true, readings: [Reading](), into: &empty)
        #expect(String(decoding: empty, as: UTF8.self) == #"A{"v":1,"gw":"g","batch":"b","hist":true,"readings":[]}"#)
    }

    @Test func stringEscaping() {
        var out: [UInt8] = []
        WireFormat.appendString("a\"b\\c\n\r\t\u{8}\u{C}\u{0}\u{1F}\u{7F}é€😀/", to: &out)
        #expect(String(decoding: out, as: UTF8.self) == "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0000\\u001f\u{7F}é€😀/\"")
        // Bridged/non-contiguous strings take the slow path with the same result.
        let sub = Substring("x\"y")
        var out2: [UInt8] = []
        WireFormat.appendString(String(sub), to: &out2)
        #expect(String(decoding: out2, as: UTF8.self) == #""x\"y""#)
    }

    @Test func status() {
        #expect(String(decoding: WireFormat.encodeStatus(state: "online", gateway: "gw-demo-01", at: 1_764_169_999_000), as: UTF8.self)
            == #"{"state":"online","gw":"gw-demo-01","at":1764169999000}"#)
        #expect(String(decoding: WireFormat.encodeStatus(state: "online", gateway: "g", at: 1, extra: [("version", "0.1.0"), ("note", "a\"b")]), as: UTF8.self)
            == #"{"state":"online","gw":"g","at":1,"version":"0.1.0","note":"a\"b"}"#)
    }

    static func randomString(_ rng: inout SplitMix64) -> String {
        let alphabet: [String] = ["a", "Z", "0", "-", "/", ".", " ", "\"", "\\", "\n", "\t", "\u{0}", "\u{1}", "\u{1F}", "\u{7F}",
                                  "é", "€", "😀", "\u{2028}", "ü", "温度"]
        let n = Int(rng.next() % 12)
        var s = ""
        for _ in 0..<n { s += alphabet[Int(rng.next() % UInt64(alphabet.count))] }
        return s
    }

    static func randomValue(_ rng: inout SplitMix64) -> Value {
        switch rng.next() % 6 {
        case 0: return .bool(rng.next() & 1 == 1)
        case 1: return .string(randomString(&rng))
        case 2: return .number(Double(Int64(bitPattern: rng.next()) % 100_000) / 10)
        case 3: return .number(Double(Int64(bitPattern: rng.next()) >> 11))
        default:
            var d: Double
            repeat { d = Double(bitPattern: rng.next()) } while !d.isFinite
            return .number(d)
        }
    }

    @Test func randomRoundTrip() throws {
        var rng = SplitMix64(seed: 42)
        for round in 0..<200 {
            let readings = (0..<Int(rng.next() % 40)).map { _ in
                Reading(device: Self.randomString(&rng), metric: Self.randomString(&rng),
                        time: Int64(rng.next() % (1 << 53)) - (1 << 52), value: Self.randomValue(&rng))
            }
            let gw = Self.randomString(&rng)
            let id = WireFormat.batchID(gateway: gw, run: rng.next(), first: Int64(round) * 100, last: Int64(round) * 100 + 99)
            let batch = TelemetryBatch(gateway: gw, batchID: id, historical: round % 2 == 0, readings: readings)
            let bytes = batch.encoded()
            let decoded = try TelemetryBatch.decode(bytes)
            #expect(decoded == batch)
            for (a, b) in zip(decoded.readings, readings) {
                if case .number(let x) = a.value, case .number(let y) = b.value { #expect(x.bitPattern == y.bitPattern) }
            }
            #expect(decoded.encoded() == bytes, "deterministic")
            _ = try JSONParser.parse(bytes)
        }
    }

    @Test(arguments: [
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[]}"#, nil as String?),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[],"extra":{"future":1}}"#, nil),
        (#"[]"#, "telemetry must be a JSON object, got array"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false"#, "telemetry is not valid JSON: unexpected end of input at byte 40"),
        (#"{"gw":"g","batch":"b","hist":false,"readings":[]}"#, "v: missing"),
        (#"{"v":2,"gw":"g","batch":"b","hist":false,"readings":[]}"#, "v: unsupported version 2, expected 1"),
        (#"{"v":"1","gw":"g","batch":"b","hist":false,"readings":[]}"#, "v: expected an integer version, got string"),
        (#"{"v":1,"batch":"b","hist":false,"readings":[]}"#, "gw: missing"),
        (#"{"v":1,"gw":1,"batch":"b","hist":false,"readings":[]}"#, "gw: expected a string, got number"),
        (#"{"v":1,"gw":"g","hist":false,"readings":[]}"#, "batch: missing"),
        (#"{"v":1,"gw":"g","batch":"b","hist":0,"readings":[]}"#, "hist: expected a bool, got number"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false}"#, "readings: missing"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":{}}"#, "readings: expected an array, got object"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[1]}"#, "readings[0]: expected an object, got number"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[{"m":"x","t":1,"v":1}]}"#, "readings[0].d: missing"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[{"d":"a","t":1,"v":1}]}"#, "readings[0].m: missing"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[{"d":"a","m":"x","v":1}]}"#, "readings[0].t: missing"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[{"d":"a","m":"x","t":1.5,"v":1}]}"#, "readings[0].t: expected an integer, got 1.5"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[{"d":"a","m":"x","t":1,"v":1},{"d":"a","m":"x","t":1}]}"#, "readings[1].v: missing"),
        (#"{"v":1,"gw":"g","batch":"b","hist":false,"readings":[{"d":"a","m":"x","t":1,"v":null}]}"#, "readings[0].v: expected a number, bool or string, got null"),
    ])
    func decodeStrictness(_ text: String, _ expectedError: String?) {
        do {
            _ = try TelemetryBatch.decode(Array(text.utf8))
            #expect(expectedError == nil)
        } catch {
            #expect(error.message == expectedError)
        }
    }
}
