import BrumeTestKit
import Testing
@testable import BrumeCore

struct JSONValidCase: Sendable, CustomStringConvertible {
    var text: String
    var expected: JSONValue
    var description: String { text }
}

struct JSONInvalidCase: Sendable, CustomStringConvertible {
    var bytes: [UInt8]
    var kind: JSONError.Kind
    var offset: Int
    var description: String { String(decoding: bytes, as: UTF8.self) }
    init(_ text: String, _ kind: JSONError.Kind, at offset: Int) {
        self.bytes = Array(text.utf8)
        self.kind = kind
        self.offset = offset
    }
    init(bytes: [UInt8], _ kind: JSONError.Kind, at offset: Int) {
        self.bytes = bytes
        self.kind = kind
        self.offset = offset
    }
}

private func obj(_ members: (String, JSONValue)...) -> JSONValue {
    .object(members.map { JSONMember(key: $0.0, value: $0.1) })
}

let validJSON: [JSONValidCase] = [
    .init(text: "null", expected: .null),
    .init(text: "true", expected: .bool(true)),
    .init(text: "false", expected: .bool(false)),
    .init(text: "0", expected: .number(0)),
    .init(text: "-0", expected: .number(-0.0)),
    .init(text: "71.5", expected: .number(71.5)),
    .init(text: "-3", expected: .number(-3)),
    .init(text: "1e3", expected: .number(1000)),
    .init(text: "1E+3", expected: .number(1000)),
    .init(text: "2.5e-3", expected: .number(0.0025)),
    .init(text: "0.1", expected: .number(0.1)),
    .init(text: "1e-400", expected: .number(0)),
    .init(text: "123456789012345678901234567890", expected: .number(1.2345678901234568e29)),
    .init(text: "9007199254740993", expected: .number(9007199254740992)),
    .init(text: "1.7976931348623157e308", expected: .number(.greatestFiniteMagnitude)),
    .init(text: "4.9406564584124654e-324", expected: .number(.leastNonzeroMagnitude)),
    .init(text: "0.30000000000000004", expected: .number(0.1 + 0.2)),
    .init(text: "1764169999000", expected: .number(1764169999000)),
    .init(text: " \t\r\n 42 \n", expected: .number(42)),
    .init(text: #""""#, expected: .string("")),
    .init(text: #""hello""#, expected: .string("hello")),
    .init(text: #""a\"b\\c\/d\b\f\n\r\t""#, expected: .string("a\"b\\c/d\u{08}\u{0C}\n\r\t")),
    .init(text: #""\u0041\u00e9\u20AC""#, expected: .string("Aé€")),
    .init(text: #""\ud83d\ude00""#, expected: .string("😀")),
    .init(text: #""\u0000""#, expected: .string("\u{0}")),
    .init(text: "\"héllo wörld €😀\"", expected: .string("héllo wörld €😀")),
    .init(text: "\"\u{7F}\"", expected: .string("\u{7F}")),
    .init(text: "[]", expected: .array([])),
    .init(text: "[1,2,3]", expected: .array([.number(1), .number(2), .number(3)])),
    .init(text: "[ 1 , [ ] , { } ]", expected: .array([.number(1), .array([]), .object([])])),
    .init(text: "{}", expected: .object([])),
    .init(text: #"{"v":21.5,"ts":1764169999000}"#, expected: obj(("v", .number(21.5)), ("ts", .number(1764169999000)))),
    .init(text: #"{"b":1,"a":2}"#, expected: obj(("b", .number(1)), ("a", .number(2)))),
    .init(text: #"{"a":1,"a":2}"#, expected: obj(("a", .number(1)), ("a", .number(2)))),
    .init(text: #"{"env":{"t":[true,null,"x"]}}"#, expected: obj(("env", obj(("t", .array([.bool(true), .null, .string("x")])))))),
    .init(text: #"{"k\u00e9y" : "v" }"#, expected: obj(("kéy", .string("v")))),
]

let invalidJSON: [JSONInvalidCase] = [
    .init("", .empty, at: 0),
    .init("   ", .empty, at: 3),
    .init("x", .unexpectedCharacter(UInt8(ascii: "x")), at: 0),
    .init("tru", .unexpectedEnd, at: 3),
    .init("trux", .unexpectedCharacter(UInt8(ascii: "x")), at: 3),
    .init("nul", .unexpectedEnd, at: 3),
    .init("True", .unexpectedCharacter(UInt8(ascii: "T")), at: 0),
    .init("NaN", .unexpectedCharacter(UInt8(ascii: "N")), at: 0),
    .init("Infinity", .unexpectedCharacter(UInt8(ascii: "I")), at: 0),
    .init("-Infinity", .invalidNumber, at: 1),
    .init("01", .invalidNumber, at: 1),
    .init("-01", .invalidNumber, at: 2),
    .init("+1", .unexpectedCharacter(UInt8(ascii: "+")), at: 0),
    .init(".5", .unexpectedCharacter(UInt8(ascii: ".")), at: 0),
    .init("1.", .unexpectedEnd, at: 2),
    .init("1.e3", .invalidNumber, at: 2),
    .init("1e", .unexpectedEnd, at: 2),
    .init("1e+", .unexpectedEnd, at: 3),
    .init("-", .unexpectedEnd, at: 1),
    .init("1e400", .numberOutOfRange, at: 0),
    .init("-1e400", .numberOutOfRange, at: 0),
    .init("0x10", .trailingData(UInt8(ascii: "x")), at: 1),
    .init("1 2", .trailingData(UInt8(ascii: "2")), at: 2),
    .init("{} x", .trailingData(UInt8(ascii: "x")), at: 3),
    .init("[1,]", .unexpectedCharacter(UInt8(ascii: "]")), at: 3),
    .init("[1 2]", .unexpectedCharacter(UInt8(ascii: "2")), at: 3),
    .init("[1", .unexpectedEnd, at: 2),
    .init("[", .unexpectedEnd, at: 1),
    .init(#"{"a":1,}"#, .unexpectedCharacter(UInt8(ascii: "}")), at: 7),
    .init(#"{"a" 1}"#, .unexpectedCharacter(UInt8(ascii: "1")), at: 5),
    .init(#"{a:1}"#, .unexpectedCharacter(UInt8(ascii: "a")), at: 1),
    .init(#"{'a':1}"#, .unexpectedCharacter(UInt8(ascii: "'")), at: 1),
    .init(#"{"a":1"#, .unexpectedEnd, at: 6),
    .init(#"{"a":}"#, .unexpectedCharacter(UInt8(ascii: "}")), at: 5),
    .init(#""abc"#, .unterminatedString, at: 0),
    .init(#"["abc]"#, .unterminatedString, at: 1),
    .init("\"a\u{1}b\"", .controlCharacterInString, at: 2),
    .init("\"a\nb\"", .controlCharacterInString, at: 2),
    .init(#""\x""#, .invalidEscape, at: 1),
    .init(#""\u12G4""#, .invalidEscape, at: 5),
    .init(#""\ud83d""#, .loneSurrogate, at: 1),
    .init(#""\ud83dx""#, .loneSurrogate, at: 1),
    .init(#""\ud83d\u0041""#, .loneSurrogate, at: 1),
    .init(#""\ude00""#, .loneSurrogate, at: 1),
    .init(#"// c"#, .unexpectedCharacter(UInt8(ascii: "/")), at: 0),
    .init(bytes: [0x22, 0xFF, 0x22], .invalidUTF8, at: 1),
    .init(bytes: [0x22, 0xC3, 0x22], .invalidUTF8, at: 1),          // truncated 2-byte sequence
    .init(bytes: [0x22, 0xC0, 0xAF, 0x22], .invalidUTF8, at: 1),    // overlong "/"
    .init(bytes: [0x22, 0xE0, 0x80, 0xAF, 0x22], .invalidUTF8, at: 1), // overlong 3-byte
    .init(bytes: [0x22, 0xED, 0xA0, 0x80, 0x22], .invalidUTF8, at: 1), // UTF-8 encoded surrogate
    .init(bytes: [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], .invalidUTF8, at: 1), // > U+10FFFF
    .init(bytes: [0x22, 0x80, 0x22], .invalidUTF8, at: 1),          // lone continuation byte
    .init(bytes: [0x22, 0xE2, 0x82], .invalidUTF8, at: 1),          // truncated at end of input
    .init(bytes: [0xEF, 0xBB, 0xBF, 0x31], .unexpectedCharacter(0xEF), at: 0), // BOM
    .init(bytes: [0x31, 0x00], .trailingData(0), at: 1),
]

@Suite struct JSONParserTests {
    @Test(arguments: validJSON)
    func parsesValid(_ c: JSONValidCase) throws {
        let value = try JSONParser.parse(c.text)
        #expect(value == c.expected)
        if case .number(let d) = c.expected, case .number(let got) = value {
            #expect(got.bitPattern == d.bitPattern)
        }
    }

    @Test(arguments: invalidJSON)
    func rejectsInvalid(_ c: JSONInvalidCase) {
        #expect(throws: JSONError(c.kind, offset: c.offset)) { try JSONParser.parse(c.bytes) }
    }

    @Test func corpusSizes() {
        #expect(validJSON.count + invalidJSON.count >= 40)
    }

    @Test func errorMessages() {
        #expect(JSONError(.unexpectedCharacter(UInt8(ascii: "x")), offset: 12).description == "unexpected character 'x' at byte 12")
        #expect(JSONError(.unterminatedString, offset: 3).description == "unterminated string starting at byte 3")
        #expect(JSONError(.tooDeep, offset: 64).description == "nesting deeper than 64 at byte 64")
        #expect(JSONError(.unexpectedCharacter(0xFF), offset: 1).description == "unexpected byte 0xFF at byte 1")
    }

    @Test func depthLimit() throws {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        _ = try JSONParser.parse(ok)
        let okObj = String(repeating: #"{"a":"#, count: 64) + "1" + String(repeating: "}", count: 64)
        _ = try JSONParser.parse(okObj)
        let tooDeep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: JSONError(.tooDeep, offset: 64)) { try JSONParser.parse(tooDeep) }
    }

    @Test func depthBombOfOneMegabyte() {
        let bomb = [UInt8](repeating: UInt8(ascii: "["), count: 1 << 20)
        #expect(throws: JSONError(.tooDeep, offset: 64)) { try JSONParser.parse(bomb) }
        let objBomb = Array(String(repeating: #"{"a":["#, count: 200_000).utf8)
        #expect(throws: JSONError(.tooDeep, offset: 192)) { try JSONParser.parse(objBomb) }
    }

    @Test func bigInputsAndUnsafeBufferEntryPoint() throws {
        let many = "[" + (0..<10_000).map { "\($0).5" }.joined(separator: ",") + "]"
        let bytes = Array(many.utf8)
        let value = try bytes.withUnsafeBytes { raw throws(JSONError) in try JSONParser.parse(raw) }
        guard case .array(let a) = value else { Issue.record("not an array"); return }
        #expect(a.count == 10_000)
        #expect(a[9_999] == .number(9_999.5))
        #expect(throws: JSONError(.empty, offset: 0)) { try JSONParser.parse(UnsafeRawBufferPointer(start: nil, count: 0)) }
    }

    @Test func numbersAreCorrectlyRounded() throws {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<2000 {
            let d = Double(bitPattern: rng.next() & 0x7FEF_FFFF_FFFF_FFFF) * (rng.next() & 1 == 0 ? 1 : -1)
            let text = d.description
            #expect(try JSONParser.parse(text) == .number(d), "\(text)")
            let value = (rng.next() % 10_000_000)
            let scaled = Double(value) / 1000
            #expect(try JSONParser.parse(scaled.description) == .number(scaled))
        }
    }

    @Test func descriptionRoundTrips() throws {
        let text = #"{"a":[1,-0,0.5,true,false,null,"x\"y\u0001"],"b":{}}"#
        let value = try JSONParser.parse(text)
        #expect(value.description == text)
        #expect(try JSONParser.parse(value.description) == value)
    }

    @Test func subscripts() throws {
        let v = try JSONParser.parse(#"{"a":1,"a":2,"l":[10,20]}"#)
        #expect(v["a"] == .number(2))
        #expect(v["l"]?[1] == .number(20))
        #expect(v["l"]?[2] == nil)
        #expect(v["zz"] == nil)
        #expect(v[0] == nil)
    }
}

@Suite struct JSONPointerTests {
    static let doc: JSONValue = {
        let text = #"{"foo":["bar","baz"],"":0,"a/b":1,"c%d":2,"e^f":3,"g|h":4,"i\\j":5,"k\"l":6," ":7,"m~n":8,"env":{"t":21.5,"list":[{"x":true}]}}"#
        return try! JSONParser.parse(text)
    }()

    @Test(arguments: [
        ("", nil as JSONValue?),
        ("/foo", .array([.string("bar"), .string("baz")])),
        ("/foo/0", .string("bar")),
        ("/foo/1", .string("baz")),
        ("/", .number(0)),
        ("/a~1b", .number(1)),
        ("/c%d", .number(2)),
        ("/e^f", .number(3)),
        ("/g|h", .number(4)),
        ("/i\\j", .number(5)),
        ("/k\"l", .number(6)),
        ("/ ", .number(7)),
        ("/m~0n", .number(8)),
        ("/env/t", .number(21.5)),
        ("/env/list/0/x", .bool(true)),
    ])
    func resolvesRFC6901Examples(_ text: String, _ expected: JSONValue?) throws {
        let pointer = try JSONPointer(text)
        #expect(pointer.resolve(in: Self.doc) == (expected ?? Self.doc))
        #expect(pointer.description == text)
    }

    @Test(arguments: ["/foo/2", "/foo/01", "/foo/-", "/foo/-1", "/foo/+1", "/foo/x", "/nope", "/env/t/x",
                      "/foo/99999999999999999999999", "/foo/", "/a~1b/c"])
    func unresolved(_ text: String) throws {
        #expect(try JSONPointer(text).resolve(in: Self.doc) == nil)
    }

    @Test(arguments: ["foo", "~0", "/~2", "/a~", "/~", "/x~a"])
    func invalid(_ text: String) {
        #expect(throws: JSONPointerError.self) { try JSONPointer(text) }
    }

    @Test func tokensAndEscapes() throws {
        #expect(try JSONPointer("/a~1b/~0~1/").tokens == ["a/b", "~/", ""])
        #expect(try JSONPointer("").tokens == [])
        #expect(JSONPointer(tokens: ["a/b", "~"]).description == "/a~1b/~0")
        #expect(try JSONPointer("/~01").tokens == ["~1"])
        #expect(try JSONPointer("/ü/€").tokens == ["ü", "€"])
    }
}
