import Testing
@testable import BrumeCore

private let now: Int64 = 1_764_169_999_000

private func decode(_ format: PayloadFormat, _ text: String, device: String = "boiler", metric: String = "temperature",
                    maxBytes: Int = 65536) throws(PayloadError) -> [Reading] {
    var out: [Reading] = []
    try PayloadDecoder(format: format, maxBytes: maxBytes).decode(Array(text.utf8), device: device, metric: metric, receivedAt: now, into: &out)
    return out
}

private func reason(_ format: PayloadFormat, _ text: String, maxBytes: Int = 65536) -> PayloadError.Reason? {
    do {
        _ = try decode(format, text, maxBytes: maxBytes)
        return nil
    } catch {
        return error.reason
    }
}

private func ptr(_ s: String) -> JSONPointer { try! JSONPointer(s) }

@Suite struct PayloadNumberFormatTests {
    @Test(arguments: [
        ("21.5", Value.number(21.5)), (" 21.5\n", .number(21.5)), ("\t-3\r\n", .number(-3)), ("+4", .number(4)),
        ("1e3", .number(1000)), ("007", .number(7)), (".5", .number(0.5)), ("5.", .number(5)), ("0", .number(0)),
        ("-0.0", .number(-0.0)), ("true", .bool(true)), ("false", .bool(false)), (" true ", .bool(true)),
        ("123456789012345678901234567890", .number(1.2345678901234568e29)),
    ])
    func accepts(_ text: String, _ expected: Value) throws {
        let r = try decode(.number, text)
        #expect(r == [Reading(device: "boiler", metric: "temperature", time: now, value: expected)])
    }

    @Test(arguments: [
        ("", PayloadError.Reason.empty), ("  \n", .empty),
        ("abc", .notANumber), ("21.5C", .notANumber), ("21,5", .notANumber), ("0x10", .notANumber), ("1e", .notANumber),
        ("-", .notANumber), ("TRUE", .notANumber), ("1 2", .notANumber), ("\"21.5\"", .notANumber), ("{\"v\":1}", .notANumber),
        ("nan", .nonFinite), ("NaN", .nonFinite), ("inf", .nonFinite), ("-inf", .nonFinite), ("+Infinity", .nonFinite),
        ("1e400", .nonFinite), ("-1e999", .nonFinite),
    ])
    func rejects(_ text: String, _ expected: PayloadError.Reason) {
        #expect(reason(.number, text) == expected)
    }

    @Test func tooLarge() {
        #expect(reason(.number, "12345", maxBytes: 4) == .tooLarge)
        #expect(reason(.number, "1234", maxBytes: 4) == nil)
    }

    @Test func errorMessageQuotesAtMost60EscapedBytes() {
        let payload = "\"oops\\" + String(repeating: "x", count: 100)
        do {
            _ = try decode(.number, payload)
            Issue.record("accepted")
        } catch {
            #expect(error.reason == .notANumber)
            #expect(error.message == #"payload is not a number: "\"oops\\"# + String(repeating: "x", count: 54) + #""..."#)
        }
        do {
            _ = try decode(.number, "a\u{1}é")
            Issue.record("accepted")
        } catch {
            #expect(error.message == #"payload is not a number: "a\x01\xC3\xA9""#)
        }
    }

    @Test func appendsAndKeepsExisting() throws {
        var out = [Reading(device: "x", metric: "y", time: 1, value: .bool(true))]
        let decoder = PayloadDecoder(format: .number)
        try decoder.decode(Array("1".utf8), device: "d", metric: "m", receivedAt: 5, into: &out)
        #expect(out.count == 2)
        #expect(throws: PayloadError.self) { try decoder.decode(Array("x".utf8), device: "d", metric: "m", receivedAt: 5, into: &out) }
        #expect(out.count == 2)
    }
}

@Suite struct PayloadJSONValueTests {
    let format = PayloadFormat.jsonValue(value: ptr("/v"), time: ptr("/ts"))

    @Test func valueAndTime() throws {
        let r = try decode(format, #"{"v":21.5,"ts":1764169999123}"#)
        #expect(r == [Reading(device: "boiler", metric: "temperature", time: 1_764_169_999_123, value: .number(21.5))])
    }

    @Test func absentOrNullTimeUsesReceivedAt() throws {
        #expect(try decode(format, #"{"v":true}"#)[0].time == now)
        #expect(try decode(format, #"{"v":true,"ts":null}"#)[0].time == now)
        #expect(try decode(.jsonValue(value: ptr("/v"), time: nil), #"{"v":"open","ts":1}"#)
            == [Reading(device: "boiler", metric: "temperature", time: now, value: .string("open"))])
    }

    @Test func nestedPointers() throws {
        let f = PayloadFormat.jsonValue(value: ptr("/data/0/value"), time: ptr("/meta/time"))
        let r = try decode(f, #"{"meta":{"time":"2026-11-26T18:09:45Z"},"data":[{"value":-4}]}"#)
        #expect(r == [Reading(device: "boiler", metric: "temperature", time: 1_795_716_585_000, value: .number(-4))])
        #expect(try decode(.jsonValue(value: ptr(""), time: nil), "42") == [Reading(device: "boiler", metric: "temperature", time: now, value: .number(42))])
    }

    @Test func errors() {
        #expect(reason(format, "") == .empty)
        #expect(reason(format, "{\"v\":1,}") == .invalidJSON)
        #expect(reason(format, "{\"v\":nan}") == .invalidJSON)
        #expect(reason(format, "{\"v\":1e999}") == .invalidJSON)
        #expect(reason(format, "{\"x\":1}") == .valueNotFound)
        #expect(reason(format, "[1]") == .valueNotFound)
        #expect(reason(format, "{\"v\":null}") == .unsupportedValue)
        #expect(reason(format, "{\"v\":[1]}") == .unsupportedValue)
        #expect(reason(format, "{\"v\":{}}") == .unsupportedValue)
        #expect(reason(format, "{\"v\":\"" + String(repeating: "a", count: 257) + "\"}") == .unsupportedValue)
        #expect(reason(format, "{\"v\":\"" + String(repeating: "a", count: 256) + "\"}") == nil)
        #expect(reason(format, "{\"v\":1,\"ts\":\"yesterday\"}") == .badTimestamp)
        #expect(reason(format, "{\"v\":1,\"ts\":true}") == .badTimestamp)
        // Far beyond any clock (found by the field-proof review: ±9e24 overflowed a rule's
        // min_interval arithmetic): rejected, never a reading.
        #expect(reason(format, "{\"v\":1,\"ts\":9e24}") == .badTimestamp)
        #expect(reason(format, "{\"v\":1,\"ts\":-9e24}") == .badTimestamp)
        #expect(reason(format, "{\"v\":1,\"ts\":1e300}") == .badTimestamp)
        #expect(reason(format, "{\"v\":1,\"ts\":\"2026-02-30T00:00:00Z\"}") == .badTimestamp)
        #expect(reason(format, "{\"v\":1}", maxBytes: 6) == .tooLarge)
    }

    @Test func errorMessages() {
        do { _ = try decode(format, #"{"x":1}"#); Issue.record("accepted") } catch {
            #expect(error.message == #"JSON pointer /v not found in payload "{\"x\":1}""#)
            #expect(error.description == #"value_not_found: JSON pointer /v not found in payload "{\"x\":1}""#)
        }
        do { _ = try decode(format, #"{"v":1x}"#); Issue.record("accepted") } catch {
            #expect(error.message == #"invalid JSON: unexpected character 'x' at byte 6: "{\"v\":1x}""#)
        }
        do { _ = try decode(format, #"{"v":1,"ts":"soon"}"#); Issue.record("accepted") } catch {
            #expect(error.message == #"timestamp at /ts is not a valid time: "\"soon\"""#)
        }
        do { _ = try decode(format, #"{"v":[1]}"#); Issue.record("accepted") } catch {
            #expect(error.message.hasPrefix("value at /v is an array"))
        }
    }

    @Test func reasonsAreStableLabels() {
        #expect(PayloadError.Reason.allCases.map(\.rawValue) == [
            "empty", "not_a_number", "invalid_json", "value_not_found", "unsupported_value",
            "bad_timestamp", "too_large", "non_finite", "no_metrics", "function_failed",
        ])
    }
}

@Suite struct PayloadJSONObjectTests {
    @Test func oneReadingPerFieldWithTimeExcluded() throws {
        let r = try decode(.jsonObject(time: ptr("/ts")), #"{"temp":21.5,"hum":40,"ts":1764169999,"ok":true,"state":"open"}"#, metric: "")
        #expect(r == [
            Reading(device: "boiler", metric: "temp", time: 1_764_169_999_000, value: .number(21.5)),
            Reading(device: "boiler", metric: "hum", time: 1_764_169_999_000, value: .number(40)),
            Reading(device: "boiler", metric: "ok", time: 1_764_169_999_000, value: .bool(true)),
            Reading(device: "boiler", metric: "state", time: 1_764_169_999_000, value: .string("open")),
        ])
    }

    @Test func flattensNestedObjectsWithPrefix() throws {
        let r = try decode(.jsonObject(time: ptr("/meta/ts")),
                           #"{"env":{"t":1,"deep":{"x":2}},"meta":{"ts":1764169999000,"seq":7},"nothing":null,"list":[1,2]}"#,
                           metric: "room")
        #expect(r.map(\.metric) == ["room.env.t", "room.env.deep.x", "room.meta.seq"])
        #expect(r.allSatisfy { $0.time == 1_764_169_999_000 })
        #expect(r.map(\.value) == [.number(1), .number(2), .number(7)])
    }

    @Test func timeFieldOnlyExcludedAtItsExactPath() throws {
        let r = try decode(.jsonObject(time: ptr("/ts")), #"{"a":{"ts":5},"ts":10}"#, metric: "")
        #expect(r == [Reading(device: "boiler", metric: "a.ts", time: 10_000, value: .number(5))])
    }

    @Test func skippedFieldsAreCounted() throws {
        var out: [Reading] = []
        let long = String(repeating: "z", count: 300)
        let skipped = try PayloadDecoder(format: .jsonObject(time: nil))
            .decode(Array(#"{"a":[1],"b":1,"c":"\#(long)","d":null}"#.utf8), device: "d", metric: "", receivedAt: 3, into: &out)
        #expect(skipped == 2)
        #expect(out == [Reading(device: "d", metric: "b", time: 3, value: .number(1))])
    }

    @Test func errors() {
        let f = PayloadFormat.jsonObject(time: ptr("/ts"))
        #expect(reason(f, "{}") == .noMetrics)
        #expect(reason(f, #"{"ts":1764169999000}"#) == .noMetrics)
        #expect(reason(f, #"{"a":[1,2],"b":null}"#) == .noMetrics)
        #expect(reason(f, #"{"a":{}}"#) == .noMetrics)
        #expect(reason(f, "[1,2]") == .unsupportedValue)
        #expect(reason(f, "42") == .unsupportedValue)
        #expect(reason(f, #"{"a":1,"ts":"x"}"#) == .badTimestamp)
        #expect(reason(f, #"{"a":1"#) == .invalidJSON)
        #expect(reason(f, "\n") == .empty)
        #expect(reason(f, #"{"a":1}"#, maxBytes: 3) == .tooLarge)
    }
}

@Suite struct TimestampTests {
    @Test(arguments: [
        // seconds, ms, µs, ns (numbers)
        (JSONValue.number(1_764_169_999), Int64(1_764_169_999_000)),
        (.number(1_764_169_999.123), 1_764_169_999_123),
        (.number(1_764_169_999.5), 1_764_169_999_500),
        (.number(0), 0),
        (.number(-1.5), -1_500),
        (.number(99_999_999_999), 99_999_999_999_000),
        (.number(100_000_000_000), 100_000_000_000),
        (.number(1_764_169_999_123), 1_764_169_999_123),
        (.number(1_764_169_999_123.6), 1_764_169_999_124),
        (.number(1_764_169_999_123_456), 1_764_169_999_123),
        (.number(1_764_169_999_123_656), 1_764_169_999_124),
        (.number(1_764_169_999_123_456_768), 1_764_169_999_123),
        // numeric strings
        (.string("1764169999"), 1_764_169_999_000),
        (.string("1764169999.25"), 1_764_169_999_250),
        (.string("1764169999123"), 1_764_169_999_123),
        (.string("1764169999123456"), 1_764_169_999_123),
        (.string("1764169999123499999"), 1_764_169_999_123),
        (.string("1764169999123500000"), 1_764_169_999_124),
        (.string("-1764169999"), -1_764_169_999_000),
        // RFC 3339
        (.string("2026-11-26T18:09:45Z"), 1_795_716_585_000),
        (.string("2026-11-26t18:09:45z"), 1_795_716_585_000),
        (.string("2026-11-26 18:09:45Z"), 1_795_716_585_000),
        (.string("2026-11-26T18:09:45.123+01:00"), 1_795_712_985_123),
        (.string("2026-11-26T18:09:45.1-00:30"), 1_795_718_385_100),
        (.string("2026-11-26T18:09:45.123456789Z"), 1_795_716_585_123),
        (.string("2024-02-29T00:00:00Z"), 1_709_164_800_000),
        (.string("2000-02-29T12:34:56Z"), 951_827_696_000),
        (.string("2100-03-01T00:00:00Z"), 4_107_542_400_000),
        (.string("1600-02-29T00:00:00Z"), -11_670_998_400_000),
        (.string("1969-12-31T23:59:59Z"), -1_000),
        (.string("1969-12-31T23:59:59.5Z"), -500),
        (.string("1970-01-01T00:00:00Z"), 0),
        (.string("0001-01-01T00:00:00Z"), -62_135_596_800_000),
        (.string("5138-11-16T09:46:39Z"), 99_999_999_999_000), // the last second within ±1e14 ms
        (.string("2016-12-31T23:59:60Z"), 1_483_228_800_000),
    ])
    func parses(_ v: JSONValue, _ expected: Int64) {
        #expect(parseTimestamp(v) == expected)
    }

    @Test(arguments: [
        JSONValue.null, .bool(true), .array([]), .object([]), .number(1e300), .number(-1e300), .string(""), .string("abc"),
        .string("2023-02-29T00:00:00Z"), .string("1900-02-29T00:00:00Z"), .string("2100-02-29T00:00:00Z"),
        .string("2026-13-01T00:00:00Z"), .string("2026-00-01T00:00:00Z"), .string("2026-04-31T00:00:00Z"),
        .string("2026-11-26T24:00:00Z"), .string("2026-11-26T18:60:00Z"), .string("2026-11-26T18:09:61Z"),
        .string("2026-11-26T18:09:45"), .string("2026-11-26T18:09:45.Z"), .string("2026-11-26T18:09:45+0100"),
        .string("2026-11-26T18:09:45+24:00"), .string("2026-11-26X18:09:45Z"), .string("2026-11-26T18:09:45Zx"),
        .string("26-11-26T18:09:45Z"), .string("2026-1-26T18:09:45Z"), .string(" 2026-11-26T18:09:45Z"),
        .string("2026-11-26"), .string("1e400"), .string("nan"), .string("0x10"),
        .string("9999-12-31T23:59:59Z"), .string("9693-11-26T15:13:19.123Z"), // beyond ±1e14 ms (found by fuzz-payload)
    ])
    func rejects(_ v: JSONValue) {
        #expect(parseTimestamp(v) == nil)
    }

    @Test func rfc3339OnSubstringsAndBytes() {
        let line = "ts=2024-02-29T00:00:00.250Z;"
        let sub = line.dropFirst(3).dropLast()
        #expect(parseRFC3339(sub) == 1_709_164_800_250)
        #expect(parseRFC3339("2024-02-29T00:00:00Z") == 1_709_164_800_000)
        let bytes = Array("2024-02-29T00:00:00Z".utf8)
        #expect(bytes.withUnsafeBytes { parseRFC3339(bytes: $0) } == 1_709_164_800_000)
    }

    @Test func civilDaysAgainstBruteForce() {
        var days = 0
        for year in 1970..<2400 {
            #expect(daysFromCivil(year: year, month: 1, day: 1) == days)
            days += isLeapYear(year) ? 366 : 365
        }
        #expect(daysFromCivil(year: 1969, month: 12, day: 31) == -1)
    }
}
