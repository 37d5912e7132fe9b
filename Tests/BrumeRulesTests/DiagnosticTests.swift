import BrumeCore
@testable import BrumeRules
import Testing

/// One bad spec and the exact diagnostic it must give.
struct BadCase: CustomTestStringConvertible, Sendable {
    var label: String
    var rules: [RuleSpec] = []
    var derived: [DerivedSpec] = []
    var triggers: [TriggerSpec] = []
    var line: Int
    var column: Int
    var message: String
    var testDescription: String { label }
}

func rule(_ dropIf: String) -> RuleSpec { RuleSpec(match: ["*/temperature"], span: SourceSpan(line: 10, column: 1), dropIf: x(dropIf, 12, 12)) }
func valueRule(_ value: String) -> RuleSpec { RuleSpec(match: ["*/temperature"], span: SourceSpan(line: 10, column: 1), value: x(value, 13, 10)) }
let span20 = SourceSpan(line: 20, column: 1)

let badCases: [BadCase] = [
    BadCase(label: "unexpected character", rules: [rule("value # 3")], line: 12, column: 18, message: "unexpected character \"#\""),
    BadCase(label: "unterminated string", rules: [rule("device == \"boiler")], line: 12, column: 22, message: "unterminated string"),
    BadCase(label: "missing paren", rules: [rule("(value < -40 || value > 150")], line: 12, column: 39, message: "missing \")\" to close \"(\" (found end of expression)"),
    BadCase(label: "unknown function", rules: [valueRule("avrg(value, 1)")], line: 13, column: 10, message: "unknown function \"avrg\" (did you mean \"avg\"?)"),
    BadCase(label: "wrong arity", rules: [valueRule("clamp(value, 0)")], line: 13, column: 10, message: "clamp expects 3 arguments, got 2: clamp(x, low, high)"),
    BadCase(label: "number plus bool", rules: [valueRule("value + true")], line: 13, column: 16, message: "\"+\" needs numbers, but the right side is a bool"),
    BadCase(label: "unknown variable", rules: [rule("vlaue > 3")], line: 12, column: 12, message: "unknown variable \"vlaue\" (did you mean \"value\"?)"),
    BadCase(label: "drop_if not a condition", rules: [rule("value * 2")], line: 12, column: 12, message: "drop_if must be a condition (true or false), but this expression gives a number"),
    BadCase(label: "single equals", rules: [rule("value = 3")], line: 12, column: 18, message: "unexpected \"=\" (use \"==\" to compare)"),
    BadCase(label: "compare string with number", rules: [rule("device == 3")], line: 12, column: 19, message: "cannot compare a string with a number using \"==\""),
    BadCase(label: "not of a number", rules: [rule("!value + 1 > 2")], line: 12, column: 19, message: "\"+\" needs numbers, but the left side is a bool"),
    BadCase(label: "and of numbers", rules: [rule("value && 1")], line: 12, column: 18, message: "\"&&\" needs conditions on both sides, but the right side is a number"),
    BadCase(label: "empty expression", rules: [rule("  ")], line: 12, column: 12, message: "empty expression"),
    BadCase(label: "trailing token", rules: [rule("value > 1 2")], line: 12, column: 22, message: "unexpected number 2.0 after the end of the expression"),
    BadCase(label: "chained comparison", rules: [rule("0 < value < 10")], line: 12, column: 22, message: "comparisons cannot be chained; combine them with \"&&\""),
    BadCase(label: "too deep", rules: [rule(String(repeating: "(", count: 70) + "value" + String(repeating: ")", count: 70) + " > 1")], line: 12, column: 76,
            message: "expression nested too deeply (more than 64 levels)"),
    BadCase(label: "too large", rules: [valueRule(Array(repeating: "value", count: 300).joined(separator: "+"))], line: 13, column: 10 + 6 * 256,
            message: "expression too large (more than 512 parts)"),
    BadCase(label: "if branch types", rules: [valueRule("if(value > 1, 1, \"x\")")], line: 13, column: 27,
            message: "both branches of if() must have the same type, but one is a number and the other a string"),
    BadCase(label: "multi-line expression", rules: [rule("value > 1 ||\n  value < @")], line: 13, column: 11, message: "unexpected character \"@\""),
    BadCase(label: "invalid glob", rules: [RuleSpec(match: ["boiler/[ab]"], span: span20)], line: 20, column: 1,
            message: "rule #1: match pattern \"boiler/[ab]\" uses \"[\": character classes and alternatives are not supported; list several patterns instead"),
    BadCase(label: "glob without slash", rules: [RuleSpec(match: ["temperature"], span: span20)], line: 20, column: 1,
            message: "rule #1: match pattern \"temperature\" has no \"/\": patterns are \"device/metric\", e.g. \"*/temperature\" or \"boiler/*\""),
    BadCase(label: "window size zero", rules: [RuleSpec(name: "avg", match: ["*/t"], span: span20, window: WindowSpec(.tumbling(sizeMillis: 0)), emit: [.avg])], line: 20, column: 1,
            message: "rule \"avg\": window size must be longer than 0"),
    BadCase(label: "hop above size", rules: [RuleSpec(match: ["*/t"], span: span20, window: WindowSpec(.hopping(sizeMillis: 1000, hopMillis: 2000)), emit: [.avg])], line: 20, column: 1,
            message: "rule #1: window hop (2000 ms) is longer than its size (1000 ms): readings between windows would be lost; use hop <= size"),
    BadCase(label: "percentile over count 1", rules: [RuleSpec(match: ["*/t"], span: span20, window: WindowSpec(.count(n: 1)), emit: [.avg, .p90])], line: 20, column: 1,
            message: "rule #1: p90 over a count window of 1 is meaningless; use a larger window"),
    BadCase(label: "emit without window", rules: [RuleSpec(match: ["*/t"], span: span20, emit: [.avg])], line: 20, column: 1,
            message: "rule #1: emit needs a window, e.g. window = { kind = \"tumbling\", size = \"1m\" }"),
    BadCase(label: "unknown conversion", rules: [RuleSpec(match: ["*/t"], span: span20, convert: "c_to_ff")], line: 20, column: 1,
            message: "rule #1: unknown conversion \"c_to_ff\" (did you mean \"c_to_f\"?)"),
    BadCase(label: "trigger reads value", triggers: [TriggerSpec(name: "t", when: x("value > 3", 30, 8), event: "e", span: SourceSpan(line: 29, column: 1))], line: 30, column: 8,
            message: "\"value\" is not available here: a trigger has no current reading: name the stream instead, e.g. boiler/temperature"),
    BadCase(label: "trigger without action", triggers: [TriggerSpec(name: "t", when: x("a/b > 3", 30, 8), span: SourceSpan(line: 29, column: 1))], line: 29, column: 1,
            message: "trigger \"t\": does nothing: set an actuator command and/or an event"),
    BadCase(label: "trigger clear not a condition", triggers: [TriggerSpec(name: "t", when: x("a/b > 3", 30, 8), clear: x("a/b - 1", 31, 9), event: "e")], line: 31, column: 9,
            message: "clear must be a condition (true or false), but this expression gives a number"),
    BadCase(label: "derived unknown input", derived: [DerivedSpec(device: "gh", metric: "dew", inputs: ["t": "gh/temperature"], expr: x("dewpoint(t, h)", 40, 9))], line: 40, column: 21,
            message: "unknown variable \"h\"; known: t, time"),
    BadCase(label: "derived bad input path", derived: [DerivedSpec(device: "gh", metric: "dew", inputs: ["t": "temperature"], expr: x("t", 40, 9), span: SourceSpan(line: 39, column: 1))], line: 39, column: 1,
            message: "derived \"gh/dew\": input \"t\" = \"temperature\" must name one stream as \"device/metric\""),
    BadCase(label: "bad number", rules: [rule("value > 1.2.3")], line: 12, column: 20, message: "malformed number"),
    BadCase(label: "argument type", rules: [valueRule("sqrt(device)")], line: 13, column: 15, message: "argument 1 of sqrt() must be a number, but it is a string"),
]

@Suite("Compile diagnostics")
struct DiagnosticTests {
    @Test(arguments: badCases)
    func exactDiagnostic(_ c: BadCase) {
        switch RulesCompiler.compile(rules: c.rules, derived: c.derived, triggers: c.triggers) {
        case .success: Issue.record("\(c.label): compiled")
        case .failure(let d):
            #expect(d.count == 1, "\(d)")
            #expect(d.first == RuleDiagnostic(span: SourceSpan(line: c.line, column: c.column), message: c.message))
        }
    }

    @Test func everyErrorAtOnceInFileOrder() throws {
        let rules = [
            RuleSpec(match: ["*/t"], span: SourceSpan(line: 1, column: 1), dropIf: x("valu > 1", 2, 11), value: x("sqrt(value, 2)", 3, 10)),
            RuleSpec(match: ["*/t"], span: SourceSpan(line: 5, column: 1), window: WindowSpec(.sliding(sizeMillis: -5))),
        ]
        let triggers = [TriggerSpec(name: "t", when: x("a/b >", 9, 8), event: "x")]
        guard case .failure(let d) = RulesCompiler.compile(rules: rules, derived: [], triggers: triggers) else {
            Issue.record("compiled"); return
        }
        #expect(d.formatted(file: "gateway.toml") == """
            gateway.toml:2:11: unknown variable "valu" (did you mean "value"?)
            gateway.toml:3:10: sqrt expects 1 argument, got 2: sqrt(x)
            gateway.toml:5:1: rule #2: window size must be longer than 0
            gateway.toml:5:1: rule #2: window has nothing to emit: add emit = ["avg", ...] (one of avg, min, max, sum, count, first, last, stddev, p50, p90, p99)
            gateway.toml:9:13: expression ends too early: a value is missing
            """)
    }

    @Test func globs() throws {
        func m(_ p: String, _ k: String) throws -> Bool { try Glob.parse(p).get().matches(k) }
        #expect(try m("*/temperature", "boiler/temperature"))
        #expect(try !m("*/temperature", "boiler/temperature.avg"))
        #expect(try m("*/temperature*", "boiler/temperature.avg"))
        #expect(try m("boiler/*", "boiler/pressure"))
        #expect(try !m("boiler/*", "boiler2/pressure"))
        #expect(try m("gh-?/t", "gh-2/t"))
        #expect(try !m("gh-?/t", "gh-22/t"))
        #expect(try m("**", "a/b"))
        #expect(try m("site/**", "site/a/b"))
        #expect((try? Glob.parse("*").get()) == nil)
        #expect((try? Glob.parse("a/***").get()) == nil)
        #expect((try? Glob.parse("a//b").get()) == nil)
    }
}
