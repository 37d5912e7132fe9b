import Testing
import BrumeCore
import BrumeSerial

private let kvDefault = SerialFormat.kv(pairSeparator: UInt8(ascii: ","), assign: UInt8(ascii: "="), timeKey: nil)

private func r(_ metric: String, _ value: Value, time: Int64 = 1_000, device: String = "dev") -> Reading {
    Reading(device: device, metric: metric, time: time, value: value)
}

@Suite struct KVTests {
    @Test func basicPairs() {
        var d = FrameDecoder(format: kvDefault, device: "dev")
        #expect(decodeOne(&d, "temp=21.5,hum=40").readings == [r("temp", .number(21.5)), r("hum", .number(40))])
        #expect(decodeOne(&d, "door=open,ok=true,alarm=false").readings ==
                [r("door", .string("open")), r("ok", .bool(true)), r("alarm", .bool(false))])
    }

    @Test func separatorsAndAssign() {
        var semi = FrameDecoder(format: .kv(pairSeparator: UInt8(ascii: ";"), assign: UInt8(ascii: ":"), timeKey: nil), device: "dev")
        #expect(decodeOne(&semi, "temp:21.5; hum:40;").readings == [r("temp", .number(21.5)), r("hum", .number(40))])
        var space = FrameDecoder(format: .kv(pairSeparator: UInt8(ascii: " "), assign: UInt8(ascii: "="), timeKey: nil), device: "dev")
        #expect(decodeOne(&space, "  temp=21.5 \t hum=40   state=on ").readings ==
                [r("temp", .number(21.5)), r("hum", .number(40)), r("state", .string("on"))])
    }

    @Test func whitespaceAroundKeysAndValuesIsTrimmed() {
        var d = FrameDecoder(format: kvDefault, device: "dev")
        #expect(decodeOne(&d, " temp = 21.5 ,\thum= 40\r").readings == [r("temp", .number(21.5)), r("hum", .number(40))])
        #expect(decodeOne(&d, "msg=hello world").readings == [r("msg", .string("hello world"))])
    }

    @Test func emptyPairsAndValuesAreSkipped() {
        var d = FrameDecoder(format: kvDefault, device: "dev")
        #expect(decodeOne(&d, "a=1,,b=2,").readings == [r("a", .number(1)), r("b", .number(2))])
        #expect(decodeOne(&d, "a=,b=2").readings == [r("b", .number(2))])
        #expect(decodeOne(&d, "a=").reason == .empty)
        #expect(decodeOne(&d, ",, ,").reason == .empty)
        #expect(decodeOne(&d, "  \t ").reason == .empty)
    }

    @Test func malformedPairsMakeTheFrameUnparsableWithoutHalfReadings() {
        var d = FrameDecoder(format: kvDefault, device: "dev")
        for line in ["temp21.5", "a=1,b", "a=1,=2", " =2", "a=1,b=nan", "a=1,b=-Infinity", "a=INF", "a=1e999",
                     "a=1,b=" + String(repeating: "x", count: 65), "a=x\u{00}y", "a\u{01}=1"] {
            var out = [r("keep", .number(0))]
            #expect(throws: FrameError.self, "\(line.debugDescription)") {
                try d.decode(bytes(line), receivedAt: 1_000, into: &out)
            }
            #expect(out == [r("keep", .number(0))], "nothing appended for \(line.debugDescription)")
            #expect(decodeOne(&d, line).reason == .unparsable, "\(line.debugDescription)")
        }
        // Invalid UTF-8 in a value, and in a key.
        var out: [Reading] = []
        #expect(throws: FrameError.self) { try d.decode([0x61, 0x3D, 0xC3, 0x28], receivedAt: 0, into: &out) }
        #expect(throws: FrameError.self) { try d.decode([0xFF, 0x3D, 0x31], receivedAt: 0, into: &out) }
        #expect(out.isEmpty)
    }

    @Test func errorMessagesQuoteAtMost60EscapedBytes() throws {
        var d = FrameDecoder(format: kvDefault, device: "dev")
        let line = "a=1,b\u{00}" + String(repeating: "z", count: 200)
        let error = try #require(decodeOne(&d, line).failureValue)
        #expect(error.reason == .unparsable)
        #expect(error.message.contains("\\x00"))
        #expect(error.message.contains("..."))
        #expect(!error.message.contains(String(repeating: "z", count: 61)))
        #expect(error.description.hasPrefix("unparsable: "))
    }

    @Test func valueTyping() {
        var d = FrameDecoder(format: kvDefault, device: "dev")
        let cases: [(String, Value)] = [
            ("+4", .number(4)), ("007", .number(7)), (".5", .number(0.5)), ("5.", .number(5)), ("1e3", .number(1000)),
            ("-0.25", .number(-0.25)), ("1E-2", .number(0.01)), ("0.1", .number(0.1)),
            ("123456789012345678901234", .number(123456789012345678901234.0)),
            ("1.7976931348623157e308", .number(1.7976931348623157e308)), ("5e-324", .number(Double.leastNonzeroMagnitude)), ("2.2250738585072014e-308", .number(Double.leastNormalMagnitude)),
            ("0.30000000000000004", .number(0.30000000000000004)),
            ("1.2.3", .string("1.2.3")), ("0x1F", .string("0x1F")), ("12abc", .string("12abc")), ("1 2", .string("1 2")),
            ("True", .string("True")), ("-", .string("-")), ("e5", .string("e5")), ("1e", .string("1e")),
            ("état", .string("état")), (String(repeating: "s", count: 64), .string(String(repeating: "s", count: 64))),
        ]
        for (text, value) in cases {
            #expect(decodeOne(&d, "v=" + text).readings == [r("v", value)], "\(text)")
        }
    }

    @Test func timeKey() {
        var d = FrameDecoder(format: .kv(pairSeparator: UInt8(ascii: ","), assign: UInt8(ascii: "="), timeKey: "ts"), device: "dev")
        #expect(decodeOne(&d, "ts=1764169999,temp=1").readings == [r("temp", .number(1), time: 1_764_169_999_000)])
        #expect(decodeOne(&d, "temp=1,ts=1764169999123").readings == [r("temp", .number(1), time: 1_764_169_999_123)])
        #expect(decodeOne(&d, "temp=1,ts=1764169999123456").readings == [r("temp", .number(1), time: 1_764_169_999_123)])
        #expect(decodeOne(&d, "temp=1,ts=1764169999123456789").readings == [r("temp", .number(1), time: 1_764_169_999_123)])
        #expect(decodeOne(&d, "temp=1,ts=1764169999.5").readings == [r("temp", .number(1), time: 1_764_169_999_500)])
        #expect(decodeOne(&d, "ts=2025-11-26T15:13:19.25Z,temp=1").readings ==
                [r("temp", .number(1), time: epochMillis("2025-11-26T15:13:19.250Z"))])
        #expect(decodeOne(&d, "ts=,temp=1").readings == [r("temp", .number(1))])
        #expect(decodeOne(&d, "temp=1").readings == [r("temp", .number(1))])
        #expect(decodeOne(&d, "ts=yesterday,temp=1").reason == .unparsable)
        #expect(decodeOne(&d, "ts=1764169999").reason == .empty)
    }
}

@Suite struct CSVTests {
    static let comma = UInt8(ascii: ",")

    @Test func configuredColumns() {
        var d = FrameDecoder(format: .csv(columns: ["t", "temp", "hum"], delimiter: Self.comma, timeColumn: "t", deviceColumn: nil), device: "dev")
        #expect(decodeOne(&d, "1764169999000,21.5,40").readings ==
                [r("temp", .number(21.5), time: 1_764_169_999_000), r("hum", .number(40), time: 1_764_169_999_000)])
        #expect(decodeOne(&d, ",21.5,").readings == [r("temp", .number(21.5))])
        #expect(decodeOne(&d, "1764169999000,,").reason == .empty)
        #expect(decodeOne(&d, "1,2").reason == .unparsable)
        #expect(decodeOne(&d, "1,2,3,4").reason == .unparsable)
        #expect(decodeOne(&d, "t,temp,hum").reason == .unparsable)     // bad timestamp: columns are configured
        #expect(decodeOne(&d, "soon,1,2").reason == .unparsable)
    }

    @Test func headerDetection() {
        var d = FrameDecoder(format: .csv(columns: nil, delimiter: Self.comma, timeColumn: "time", deviceColumn: nil), device: "dev")
        #expect(decodeOne(&d, "1764169999000,21.5,40").reason == .unparsable)   // no header yet
        #expect(decodeOne(&d, "time,temp,hum").readings == [])
        #expect(decodeOne(&d, "1764169999000,21.5,40").readings ==
                [r("temp", .number(21.5), time: 1_764_169_999_000), r("hum", .number(40), time: 1_764_169_999_000)])
        #expect(decodeOne(&d, " 1764169999,  21.5 , open ").readings ==
                [r("temp", .number(21.5), time: 1_764_169_999_000), r("hum", .string("open"), time: 1_764_169_999_000)])
        #expect(decodeOne(&d, "time,temp,hum").readings == [])                   // repeated header
        #expect(decodeOne(&d, "1,2").reason == .unparsable)
        #expect(decodeOne(&d, "1,2,3,").reason == .unparsable)
        d.reset()
        #expect(decodeOne(&d, "1764169999000,21.5,40").reason == .unparsable)   // header forgotten
        #expect(decodeOne(&d, "a,b").readings == [])
        #expect(decodeOne(&d, "1,2").readings == [r("a", .number(1)), r("b", .number(2))])
    }

    @Test func headerWithDuplicateNamesIsRejected() {
        var d = FrameDecoder(format: .csv(columns: nil, delimiter: Self.comma, timeColumn: nil, deviceColumn: nil), device: "dev")
        #expect(decodeOne(&d, "a,b,a").reason == .unparsable)
        #expect(decodeOne(&d, "a,b,c").readings == [])
        #expect(decodeOne(&d, "1,2,3").readings?.count == 3)
    }

    @Test func headerWithEmptyNameIgnoresThatColumn() {
        var d = FrameDecoder(format: .csv(columns: nil, delimiter: Self.comma, timeColumn: nil, deviceColumn: nil), device: "dev")
        #expect(decodeOne(&d, "a,,c").readings == [])
        #expect(decodeOne(&d, "1,2,3").readings == [r("a", .number(1)), r("c", .number(3))])
    }

    @Test func quotedFields() {
        var d = FrameDecoder(format: .csv(columns: ["name", "v"], delimiter: Self.comma, timeColumn: nil, deviceColumn: nil), device: "dev")
        #expect(decodeOne(&d, "\"a,b\",1").readings == [r("name", .string("a,b")), r("v", .number(1))])
        #expect(decodeOne(&d, "\"say \"\"hi\"\"\", \"21.5\" ").readings == [r("name", .string("say \"hi\"")), r("v", .number(21.5))])
        #expect(decodeOne(&d, "\"\",2").readings == [r("v", .number(2))])
        #expect(decodeOne(&d, "a\"b,3").readings == [r("name", .string("a\"b")), r("v", .number(3))])
        #expect(decodeOne(&d, "\"unterminated,1").reason == .unparsable)
        #expect(decodeOne(&d, "\"x\"y,1").reason == .unparsable)
        #expect(decodeOne(&d, "nan,1").reason == .unparsable)
        #expect(decodeOne(&d, "x,\(String(repeating: "y", count: 65))").reason == .unparsable)
    }

    @Test func deviceColumn() {
        var d = FrameDecoder(format: .csv(columns: nil, delimiter: Self.comma, timeColumn: nil, deviceColumn: "dev"), device: "port0")
        #expect(decodeOne(&d, "dev,temp").readings == [])
        #expect(decodeOne(&d, "boiler,71.5").readings == [r("temp", .number(71.5), device: "boiler")])
        #expect(decodeOne(&d, ",70").readings == [r("temp", .number(70), device: "port0")])
        #expect(decodeOne(&d, "12,70").readings == [r("temp", .number(70), device: "12")])
        #expect(decodeOne(&d, "boiler,").reason == .empty)
    }

    @Test func otherDelimiters() {
        var semi = FrameDecoder(format: .csv(columns: ["a", "b", "c"], delimiter: UInt8(ascii: ";"), timeColumn: nil, deviceColumn: nil), device: "dev")
        #expect(decodeOne(&semi, "1;2,5;x").readings == [r("a", .number(1)), r("b", .string("2,5")), r("c", .string("x"))])
        var tab = FrameDecoder(format: .csv(columns: ["a", "b", "c"], delimiter: 0x09, timeColumn: nil, deviceColumn: nil), device: "dev")
        #expect(decodeOne(&tab, "\t2\t").readings == [r("b", .number(2))])
        #expect(decodeOne(&tab, "1\t 2 \t3").readings == [r("a", .number(1)), r("b", .number(2)), r("c", .number(3))])
    }
}

@Suite struct JSONLTests {
    @Test func jsonObjectLines() throws {
        let format = PayloadFormat.jsonObject(time: try JSONPointer("/ts"))
        var d = FrameDecoder(format: .jsonl(format), device: "dev")
        #expect(decodeOne(&d, #"{"temp":21.5,"env":{"hum":40},"ok":true,"ts":1764169999000}"#).readings ==
                [r("temp", .number(21.5), time: 1_764_169_999_000), r("env.hum", .number(40), time: 1_764_169_999_000),
                 r("ok", .bool(true), time: 1_764_169_999_000)])
        #expect(decodeOne(&d, #"{"temp":1,"list":[1,2]}"#).readings == [r("temp", .number(1))])
        #expect(d.skippedFields == 1)
        #expect(decodeOne(&d, #"{"temp":1"#).reason == .unparsable)
        #expect(decodeOne(&d, "\u{00}{}").reason == .unparsable)
        #expect(decodeOne(&d, #"{"ts":5}"#).reason == .unparsable)      // no metrics
        #expect(decodeOne(&d, "   ").reason == .empty)
    }

    @Test func jsonValueAndNumberLines() throws {
        var v = FrameDecoder(format: .jsonl(.jsonValue(value: try JSONPointer("/data/v"), time: nil)), device: "dev")
        #expect(decodeOne(&v, #"{"data":{"v":"open"}}"#).readings == [r("v", .string("open"))])
        #expect(decodeOne(&v, #"{"data":{}}"#).reason == .unparsable)
        var n = FrameDecoder(format: .jsonl(.number), device: "dev")
        #expect(decodeOne(&n, " 21.5").readings == [r("value", .number(21.5))])
        #expect(decodeOne(&n, "nan").reason == .unparsable)
    }
}

extension Result {
    var failureValue: Failure? { if case .failure(let e) = self { return e }; return nil }
}
