import BrumeCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Type checking, code generation and evaluation of expressions.
//
// An expression is compiled once, at config load, into a flat list of stack-machine
// instructions. Jumps only go forward, so evaluation takes at most one step per instruction
// (≤ ~2 × 512): it is bounded by the size of the expression, has no loops and no I/O.

/// Static type of an expression. `dynamic` is the type of `value` and of stream values, whose
/// type is only known at run time (a reading may hold a number, a bool or a string); operations
/// on dynamic operands are checked when they run and fail with a typed `EvalError`.
enum ExprType: String {
    case number, bool, string, dynamic

    var article: String {
        switch self {
        case .number: return "a number"
        case .bool: return "a bool"
        case .string: return "a string"
        case .dynamic: return "a value"
        }
    }
}

/// An error while evaluating an expression on one reading. The reading is then dropped or
/// passed as the rule's `onError` says, and the error is counted; the stream goes on.
public struct EvalError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// `x / 0`, `x % 0`.
        case divisionByZero
        /// A function outside its domain: `sqrt(-1)`, `ln(0)`, `dewpoint(t, 0)`.
        case domain
        /// A result that is not a finite number (overflow, NaN input).
        case nonFinite
        /// A referenced stream has no value yet.
        case missingStream
        /// A value of the wrong type at run time (`value + 1` on a string reading).
        case typeMismatch
    }
    public var kind: Kind
    /// Where in the TOML file the failing operation is.
    public var span: SourceSpan
    public var message: String
    public var description: String { "\(span): \(message)" }
}

enum Fn: String, CaseIterable {
    case abs, min, max, avg, round, floor, ceil, clamp, sqrt, pow, exp, ln, log10, dewpoint

    /// Allowed number of arguments.
    var arity: ClosedRange<Int> {
        switch self {
        case .abs, .floor, .ceil, .sqrt, .exp, .ln, .log10: return 1...1
        case .min, .max: return 2...32
        case .avg: return 1...32
        case .round: return 1...2
        case .pow, .dewpoint: return 2...2
        case .clamp: return 3...3
        }
    }

    var usage: String {
        switch self {
        case .round: return "round(x) or round(x, digits)"
        case .min, .max: return "\(rawValue)(a, b, ...)"
        case .avg: return "avg(a, ...)"
        case .clamp: return "clamp(x, low, high)"
        case .pow: return "pow(x, y)"
        case .dewpoint: return "dewpoint(temperature_c, humidity_percent)"
        default: return "\(rawValue)(x)"
        }
    }
}

/// What an identifier stands for.
enum Binding: Hashable {
    case value, device, metric, time
    case stream(String)
}

enum Op: Hashable {
    case const(Value)
    case loadValue, loadDevice, loadMetric, loadTime
    case loadStream(String)
    case neg, not
    case add, sub, mul, div, mod
    case lt, le, gt, ge, eq, ne
    /// `&&`: top must be a bool; false → keep it and jump; true → pop.
    case andJump(Int)
    /// `||`: top must be a bool; true → keep it and jump; false → pop.
    case orJump(Int)
    case assertBool
    /// `if`: pop a bool; false → jump.
    case jumpIfFalse(Int)
    case jump(Int)
    case call(Fn, Int)
}

/// A compiled expression (immutable; shared by reference).
final class Program: Sendable {
    let ops: [Op]
    let spans: [SourceSpan]
    let type: ExprType
    let streams: Set<String>
    let maxStack: Int
    let source: String

    init(ops: [Op], spans: [SourceSpan], type: ExprType, streams: Set<String>, maxStack: Int, source: String) {
        self.ops = ops
        self.spans = spans
        self.type = type
        self.streams = streams
        self.maxStack = maxStack
        self.source = source
    }
}

/// Names visible to an expression.
struct ExprEnv {
    var bindings: [String: Binding]
    /// Why a well-known name is not available here ("value" in a trigger).
    var unavailable: [String: String] = [:]
    var allowPaths: Bool = true

    static let rule = ExprEnv(bindings: ["value": .value, "device": .device, "metric": .metric, "time": .time])
    static let trigger = ExprEnv(
        bindings: ["time": .time],
        unavailable: [
            "value": "a trigger has no current reading: name the stream instead, e.g. boiler/temperature",
            "device": "a trigger has no current reading: name the stream instead, e.g. boiler/temperature",
            "metric": "a trigger has no current reading: name the stream instead, e.g. boiler/temperature",
        ])
}

/// Maps an offset in the expression text to a position in the TOML file.
struct SpanMap {
    var base: SourceSpan
    var lineStarts: [Int]   // scalar offsets where each line of the text starts

    init(_ e: ExprText) {
        base = e.span
        lineStarts = [0]
        for (i, c) in e.text.unicodeScalars.enumerated() where c == "\n" { lineStarts.append(i + 1) }
    }

    func span(_ pos: Int) -> SourceSpan {
        var line = 0
        while line + 1 < lineStarts.count && lineStarts[line + 1] <= pos { line += 1 }
        if line == 0 { return SourceSpan(line: base.line, column: base.column + pos, file: base.file) }
        return SourceSpan(line: base.line + line, column: pos - lineStarts[line] + 1, file: base.file)
    }
}

enum ExprCompiler {
    static let functionNames = Fn.allCases.map(\.rawValue) + ["if"]

    /// Compiles `e`; appends every problem to `diags`; returns nil if there was any.
    static func compile(_ e: ExprText, env: ExprEnv, diags: inout [RuleDiagnostic]) -> Program? {
        let map = SpanMap(e)
        switch Parser.parse(e.text) {
        case .failure(let err):
            diags.append(RuleDiagnostic(span: map.span(err.pos), message: err.message))
            return nil
        case .success(let node):
            var g = Gen(env: env, map: map)
            let t = g.gen(node)
            if !g.diags.isEmpty {
                diags.append(contentsOf: g.diags)
                return nil
            }
            return Program(ops: g.ops, spans: g.spans, type: t, streams: g.streams, maxStack: g.maxDepth + 1, source: e.text)
        }
    }

    struct Gen {
        let env: ExprEnv
        let map: SpanMap
        var ops: [Op] = []
        var spans: [SourceSpan] = []
        var diags: [RuleDiagnostic] = []
        var streams: Set<String> = []
        var depth = 0
        var maxDepth = 0

        init(env: ExprEnv, map: SpanMap) {
            self.env = env
            self.map = map
        }

        mutating func emit(_ op: Op, _ pos: Int, stack delta: Int) {
            ops.append(op)
            spans.append(map.span(pos))
            depth += delta
            maxDepth = Swift.max(maxDepth, depth)
        }

        mutating func error(_ pos: Int, _ message: String) {
            diags.append(RuleDiagnostic(span: map.span(pos), message: message))
        }

        mutating func patch(_ at: Int) {
            let target = ops.count - at - 1
            switch ops[at] {
            case .andJump: ops[at] = .andJump(target)
            case .orJump: ops[at] = .orJump(target)
            case .jumpIfFalse: ops[at] = .jumpIfFalse(target)
            case .jump: ops[at] = .jump(target)
            default: break
            }
        }

        static func compatible(_ t: ExprType, _ want: ExprType) -> Bool { t == want || t == .dynamic }

        mutating func gen(_ n: Node) -> ExprType {
            switch n {
            case .number(let d, let p):
                emit(.const(.number(d)), p, stack: 1)
                return .number
            case .string(let s, let p):
                emit(.const(.string(s)), p, stack: 1)
                return .string
            case .bool(let b, let p):
                emit(.const(.bool(b)), p, stack: 1)
                return .bool
            case .path(let path, let p):
                guard env.allowPaths else {
                    error(p, "streams cannot be referenced here")
                    emit(.const(.number(0)), p, stack: 1)
                    return .dynamic
                }
                streams.insert(path)
                emit(.loadStream(path), p, stack: 1)
                return .dynamic
            case .ident(let name, let p):
                if let b = env.bindings[name] {
                    switch b {
                    case .value: emit(.loadValue, p, stack: 1); return .dynamic
                    case .device: emit(.loadDevice, p, stack: 1); return .string
                    case .metric: emit(.loadMetric, p, stack: 1); return .string
                    case .time: emit(.loadTime, p, stack: 1); return .number
                    case .stream(let s):
                        streams.insert(s)
                        emit(.loadStream(s), p, stack: 1)
                        return .dynamic
                    }
                }
                if let why = env.unavailable[name] {
                    error(p, "\"\(name)\" is not available here: \(why)")
                } else if ExprCompiler.functionNames.contains(name) {
                    error(p, "\"\(name)\" is a function: call it as \(Fn(rawValue: name)?.usage ?? "if(condition, then, else)")")
                } else {
                    let known = env.bindings.keys.sorted()
                    var msg = "unknown variable \"\(name)\""
                    if let s = suggest(name, among: known) { msg += " (did you mean \"\(s)\"?)" }
                    else if !known.isEmpty { msg += "; known: \(known.joined(separator: ", "))" }
                    error(p, msg)
                }
                emit(.const(.number(0)), p, stack: 1)
                return .dynamic
            case .unary(let op, let x, let p):
                let t = gen(x)
                if op == "-" {
                    if !Gen.compatible(t, .number) { error(p, "\"-\" needs a number, but its operand is \(t.article)") }
                    emit(.neg, p, stack: 0)
                    return .number
                } else {
                    if !Gen.compatible(t, .bool) { error(p, "\"!\" (not) needs a condition, but its operand is \(t.article)") }
                    emit(.not, p, stack: 0)
                    return .bool
                }
            case .binary(let op, let l, let r, let p):
                return genBinary(op, l, r, p)
            case .call(let name, let args, let p):
                return genCall(name, args, p)
            }
        }

        mutating func genBinary(_ op: String, _ l: Node, _ r: Node, _ p: Int) -> ExprType {
            if op == "&&" || op == "||" {
                let lt = gen(l)
                if !Gen.compatible(lt, .bool) { error(p, "\"\(op)\" needs conditions on both sides, but the left side is \(lt.article)") }
                let j = ops.count
                emit(op == "&&" ? .andJump(0) : .orJump(0), p, stack: -1)
                let rt = gen(r)
                if !Gen.compatible(rt, .bool) { error(p, "\"\(op)\" needs conditions on both sides, but the right side is \(rt.article)") }
                emit(.assertBool, p, stack: 0)
                patch(j)
                return .bool
            }
            let lt = gen(l)
            let rt = gen(r)
            switch op {
            case "+", "-", "*", "/", "%":
                if !Gen.compatible(lt, .number) || !Gen.compatible(rt, .number) {
                    let side = !Gen.compatible(lt, .number) ? "the left side is \(lt.article)" : "the right side is \(rt.article)"
                    error(p, "\"\(op)\" needs numbers, but \(side)")
                }
                let code: Op = op == "+" ? .add : op == "-" ? .sub : op == "*" ? .mul : op == "/" ? .div : .mod
                emit(code, p, stack: -1)
                return .number
            case "<", "<=", ">", ">=":
                if !Gen.compatible(lt, .number) || !Gen.compatible(rt, .number) {
                    let side = !Gen.compatible(lt, .number) ? "the left side is \(lt.article)" : "the right side is \(rt.article)"
                    error(p, "\"\(op)\" compares numbers, but \(side)")
                }
                let code: Op = op == "<" ? .lt : op == "<=" ? .le : op == ">" ? .gt : .ge
                emit(code, p, stack: -1)
                return .bool
            default: // == !=
                if lt != rt && lt != .dynamic && rt != .dynamic {
                    error(p, "cannot compare \(lt.article) with \(rt.article) using \"\(op)\"")
                }
                emit(op == "==" ? .eq : .ne, p, stack: -1)
                return .bool
            }
        }

        mutating func genCall(_ name: String, _ args: [Node], _ p: Int) -> ExprType {
            if name == "if" {
                guard args.count == 3 else {
                    error(p, "if expects 3 arguments (condition, then, else), got \(args.count)")
                    emit(.const(.number(0)), p, stack: 1)
                    return .dynamic
                }
                let ct = gen(args[0])
                if !Gen.compatible(ct, .bool) { error(args[0].pos, "the first argument of if() must be a condition, but it is \(ct.article)") }
                let j1 = ops.count
                emit(.jumpIfFalse(0), p, stack: -1)
                let at = gen(args[1])
                let j2 = ops.count
                emit(.jump(0), p, stack: -1)
                patch(j1)
                let bt = gen(args[2])
                patch(j2)
                if at == bt { return at }
                if at == .dynamic || bt == .dynamic { return .dynamic }
                error(args[2].pos, "both branches of if() must have the same type, but one is \(at.article) and the other \(bt.article)")
                return .dynamic
            }
            guard let fn = Fn(rawValue: name) else {
                var msg = "unknown function \"\(name)\""
                if let s = suggest(name, among: ExprCompiler.functionNames) { msg += " (did you mean \"\(s)\"?)" }
                else { msg += "; functions: \(ExprCompiler.functionNames.joined(separator: ", "))" }
                error(p, msg)
                for a in args { _ = gen(a) }
                emit(.const(.number(0)), p, stack: 1 - args.count)
                return .dynamic
            }
            if !fn.arity.contains(args.count) {
                let want: String
                if fn.arity.count == 1 { want = "\(fn.arity.lowerBound) argument\(fn.arity.lowerBound == 1 ? "" : "s")" }
                else if fn.arity.upperBound >= 32 { want = "at least \(fn.arity.lowerBound) arguments" }
                else { want = "\(fn.arity.lowerBound) or \(fn.arity.upperBound) arguments" }
                error(p, "\(name) expects \(want), got \(args.count): \(fn.usage)")
            }
            for (k, a) in args.enumerated() {
                let t = gen(a)
                if !Gen.compatible(t, .number) {
                    error(a.pos, "argument \(k + 1) of \(name)() must be a number, but it is \(t.article)")
                }
            }
            emit(.call(fn, args.count), p, stack: 1 - args.count)
            return .number
        }
    }
}

// MARK: - Evaluation

/// What an expression reads while it runs.
struct EvalScope {
    var reading: Reading?
    var now: Int64
    var latest: [String: Value]
}

extension Program {
    func run(_ scope: borrowing EvalScope) throws(EvalError) -> Value {
        var stack: [Value] = []
        return try run(scope, stack: &stack)
    }

    /// Evaluates with a caller-owned scratch stack (no allocation once it has grown).
    func run(_ scope: borrowing EvalScope, stack: inout [Value]) throws(EvalError) -> Value {
        if !stack.isEmpty { stack.removeAll(keepingCapacity: true) }   // left over by an error
        if stack.capacity < maxStack { stack.reserveCapacity(maxStack) }
        var pc = 0
        let n = ops.count
        while pc < n {
            switch ops[pc] {
            case .const(let v): stack.append(v)
            case .loadValue: stack.append(scope.reading?.value ?? .number(0))
            case .loadDevice: stack.append(.string(scope.reading?.device ?? ""))
            case .loadMetric: stack.append(.string(scope.reading?.metric ?? ""))
            case .loadTime: stack.append(.number(Double(scope.reading?.time ?? scope.now)))
            case .loadStream(let key):
                guard let v = scope.latest[key] else {
                    throw EvalError(kind: .missingStream, span: spans[pc], message: "no value yet for \(key)")
                }
                stack.append(v)
            case .neg:
                let x = try num(stack.removeLast(), pc, "-")
                stack.append(.number(-x))
            case .not:
                let b = try bool(stack.removeLast(), pc, "!")
                stack.append(.bool(!b))
            case .add, .sub, .mul, .div, .mod:
                let r = try num(stack.removeLast(), pc, "arithmetic")
                let l = try num(stack.removeLast(), pc, "arithmetic")
                let out: Double
                switch ops[pc] {
                case .add: out = l + r
                case .sub: out = l - r
                case .mul: out = l * r
                case .div:
                    if r == 0 { throw EvalError(kind: .divisionByZero, span: spans[pc], message: "division by zero") }
                    out = l / r
                default:
                    if r == 0 { throw EvalError(kind: .divisionByZero, span: spans[pc], message: "remainder of a division by zero") }
                    out = l.truncatingRemainder(dividingBy: r)
                }
                stack.append(.number(try finite(out, pc)))
            case .lt, .le, .gt, .ge:
                let r = try num(stack.removeLast(), pc, "comparison")
                let l = try num(stack.removeLast(), pc, "comparison")
                let b: Bool
                switch ops[pc] {
                case .lt: b = l < r
                case .le: b = l <= r
                case .gt: b = l > r
                default: b = l >= r
                }
                stack.append(.bool(b))
            case .eq, .ne:
                let r = stack.removeLast()
                let l = stack.removeLast()
                let same: Bool
                switch (l, r) {
                case (.number(let a), .number(let b)): same = a == b
                case (.bool(let a), .bool(let b)): same = a == b
                case (.string(let a), .string(let b)): same = a == b
                default:
                    throw EvalError(kind: .typeMismatch, span: spans[pc], message: "cannot compare \(Program.typeName(l)) with \(Program.typeName(r))")
                }
                if case .eq = ops[pc] { stack.append(.bool(same)) } else { stack.append(.bool(!same)) }
            case .andJump(let off):
                let b = try bool(stack[stack.count - 1], pc, "&&")
                if b { stack.removeLast() } else { pc += off }
            case .orJump(let off):
                let b = try bool(stack[stack.count - 1], pc, "||")
                if b { pc += off } else { stack.removeLast() }
            case .assertBool:
                _ = try bool(stack[stack.count - 1], pc, "condition")
            case .jumpIfFalse(let off):
                if !(try bool(stack.removeLast(), pc, "if")) { pc += off }
            case .jump(let off):
                pc += off
            case .call(let fn, let argc):
                let base = stack.count - argc
                let v = try call(fn, stack, base, argc, pc)
                stack.removeLast(argc)
                stack.append(.number(v))
            }
            pc += 1
        }
        return stack.removeLast()
    }

    static func typeName(_ v: Value) -> String {
        switch v {
        case .number: return "a number"
        case .bool: return "a bool"
        case .string: return "a string"
        }
    }

    @inline(__always)
    private func num(_ v: Value, _ pc: Int, _ what: String) throws(EvalError) -> Double {
        if case .number(let d) = v { return d }
        throw EvalError(kind: .typeMismatch, span: spans[pc], message: "\(what) needs a number, got \(Program.typeName(v)) \"\(v)\"")
    }

    @inline(__always)
    private func bool(_ v: Value, _ pc: Int, _ what: String) throws(EvalError) -> Bool {
        if case .bool(let b) = v { return b }
        throw EvalError(kind: .typeMismatch, span: spans[pc], message: "\(what) needs a condition (true/false), got \(Program.typeName(v)) \"\(v)\"")
    }

    @inline(__always)
    private func finite(_ d: Double, _ pc: Int) throws(EvalError) -> Double {
        if d.isFinite { return d }
        throw EvalError(kind: .nonFinite, span: spans[pc], message: "result is not a finite number (\(d))")
    }

    private func domain(_ pc: Int, _ msg: String) -> EvalError {
        EvalError(kind: .domain, span: spans[pc], message: msg)
    }

    private func call(_ fn: Fn, _ stack: [Value], _ base: Int, _ argc: Int, _ pc: Int) throws(EvalError) -> Double {
        let a0 = try num(stack[base], pc, fn.rawValue)
        let a1 = argc > 1 ? try num(stack[base + 1], pc, fn.rawValue) : 0
        let a2 = argc > 2 ? try num(stack[base + 2], pc, fn.rawValue) : 0
        let a = (a0, a1, a2)
        let r: Double
        switch fn {
        case .abs: r = Swift.abs(a0)
        case .min, .max, .avg:
            var acc = a0
            var sum = a0
            for k in 1..<argc {
                let v = try num(stack[base + k], pc, fn.rawValue)
                acc = fn == .min ? Swift.min(acc, v) : Swift.max(acc, v)
                sum += v
            }
            r = fn == .avg ? sum / Double(argc) : acc
        case .round:
            if argc == 2 {
                let digits = a.1
                guard digits == digits.rounded(), Swift.abs(digits) <= 15 else {
                    throw domain(pc, "round(): digits must be a whole number between -15 and 15, got \(Value.number(digits))")
                }
                let f = pow(10.0, digits)
                r = (a.0 * f).rounded(.toNearestOrAwayFromZero) / f
            } else {
                r = a.0.rounded(.toNearestOrAwayFromZero)
            }
        case .floor: r = a.0.rounded(.down)
        case .ceil: r = a.0.rounded(.up)
        case .clamp:
            guard a.1 <= a.2 else { throw domain(pc, "clamp(): low (\(Value.number(a.1))) is above high (\(Value.number(a.2)))") }
            r = Swift.min(Swift.max(a.0, a.1), a.2)
        case .sqrt:
            guard a.0 >= 0 else { throw domain(pc, "sqrt() of a negative number (\(Value.number(a.0)))") }
            r = a.0.squareRoot()
        case .pow: r = pow(a.0, a.1)
        case .exp: r = exp(a.0)
        case .ln:
            guard a.0 > 0 else { throw domain(pc, "ln() needs a positive number, got \(Value.number(a.0))") }
            r = log(a.0)
        case .log10:
            guard a.0 > 0 else { throw domain(pc, "log10() needs a positive number, got \(Value.number(a.0))") }
            r = log10(a.0)
        case .dewpoint:
            guard a.1 > 0 else { throw domain(pc, "dewpoint(): relative humidity must be above 0 %, got \(Value.number(a.1))") }
            r = dewPoint(celsius: a.0, humidity: a.1)
        }
        return try finite(r, pc)
    }
}

/// Dew point (°C) by the Magnus formula with Sonntag's (1990) constants a = 17.62,
/// b = 243.12 °C; accurate to about ±0.35 °C between -45 °C and 60 °C.
public func dewPoint(celsius t: Double, humidity rh: Double) -> Double {
    let a = 17.62, b = 243.12
    let gamma = log(rh / 100) + a * t / (b + t)
    return b * gamma / (a - gamma)
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
func suggest(_ word: String, among candidates: [String]) -> String? {
    let w = Array(word.lowercased().unicodeScalars)
    var best: (String, Int)?
    for c in candidates {
        let d = editDistance(w, Array(c.lowercased().unicodeScalars))
        if d <= (w.count <= 3 ? 1 : 2), d < w.count, best == nil || d < best!.1 { best = (c, d) }
    }
    return best?.0
}

func editDistance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = Swift.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}
