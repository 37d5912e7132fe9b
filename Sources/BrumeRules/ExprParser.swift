// The expression language: lexer and parser (text → AST).
//
//   expr    := or
//   or      := and (("||" | "or") and)*
//   and     := cmp (("&&" | "and") cmp)*
//   cmp     := add (("<" | "<=" | ">" | ">=" | "==" | "!=") add)?
//   add     := mul (("+" | "-") mul)*
//   mul     := unary (("*" | "/" | "%") unary)*
//   unary   := ("-" | "!" | "not") unary | primary
//   primary := number | string | "true" | "false" | ident | path | ident "(" args ")" | "(" expr ")"
//
// A path is `device/metric` written without spaces: an identifier start (letter or `_`), then
// letters, digits, `_`, `-`, `.`, a `/`, and a segment starting with a letter or `_`
// (`boiler/temperature`, `gh-2/temperature.avg`). Write division with spaces (`value / 2`) or a
// number on the right (`value/2`) so that it is not read as a path. Strings use double or single
// quotes (single quotes avoid escaping inside a TOML basic string).
//
// Limits: 64 levels of nesting and 512 nodes, checked while parsing.

enum Tok: Equatable {
    case number(Double)
    case string(String)
    case ident(String)
    case path(String)
    case op(String)      // + - * / % < <= > >= == != && || ! ( ) ,
    case end
}

struct Token {
    var tok: Tok
    var pos: Int   // offset in Unicode scalars from the start of the expression
}

struct ExprError: Error {
    var pos: Int
    var message: String
}

enum Lexer {
    static func isIdentStart(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_"
    }
    static func isIdentChar(_ c: Unicode.Scalar) -> Bool { isIdentStart(c) || (c >= "0" && c <= "9") }
    static func isPathChar(_ c: Unicode.Scalar) -> Bool { isIdentChar(c) || c == "-" || c == "." }
    static func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }

    static func tokenize(_ s: [Unicode.Scalar]) -> Result<[Token], ExprError> {
        var out: [Token] = []
        var i = 0
        let n = s.count
        while i < n {
            let c = s[i]
            if c == " " || c == "\t" || c == "\n" || c == "\r" { i += 1; continue }
            let start = i
            if isDigit(c) || (c == "." && i + 1 < n && isDigit(s[i + 1])) {
                while i < n, isDigit(s[i]) { i += 1 }
                if i < n, s[i] == "." { i += 1; while i < n, isDigit(s[i]) { i += 1 } }
                if i < n, s[i] == "e" || s[i] == "E" {
                    var j = i + 1
                    if j < n, s[j] == "+" || s[j] == "-" { j += 1 }
                    if j < n, isDigit(s[j]) {
                        i = j
                        while i < n, isDigit(s[i]) { i += 1 }
                    }
                }
                if i < n, isIdentChar(s[i]) || s[i] == "." {
                    return .failure(ExprError(pos: start, message: "malformed number"))
                }
                var text = ""
                text.unicodeScalars.append(contentsOf: s[start..<i])
                guard let d = Double(text), d.isFinite else {
                    return .failure(ExprError(pos: start, message: "malformed number \"\(text)\""))
                }
                out.append(Token(tok: .number(d), pos: start))
                continue
            }
            if isIdentStart(c) {
                // Path? Scan the widest path-like run and look for "/<ident start>".
                var j = i
                while j < n, isPathChar(s[j]) { j += 1 }
                if j + 1 < n, s[j] == "/", isIdentStart(s[j + 1]) {
                    var k = j + 1
                    while k < n, isPathChar(s[k]) { k += 1 }
                    if k < n, s[k] == "/" {
                        return .failure(ExprError(pos: k, message: "a stream is written device/metric, with one \"/\""))
                    }
                    var text = ""
                    text.unicodeScalars.append(contentsOf: s[i..<k])
                    out.append(Token(tok: .path(text), pos: start))
                    i = k
                    continue
                }
                while i < n, isIdentChar(s[i]) { i += 1 }
                var text = ""
                text.unicodeScalars.append(contentsOf: s[start..<i])
                out.append(Token(tok: .ident(text), pos: start))
                continue
            }
            if c == "\"" || c == "'" {
                i += 1
                var text = ""
                var closed = false
                while i < n {
                    let d = s[i]
                    if d == c { closed = true; i += 1; break }
                    if d == "\\", i + 1 < n {
                        let e = s[i + 1]
                        switch e {
                        case "n": text.unicodeScalars.append("\n")
                        case "t": text.unicodeScalars.append("\t")
                        default: text.unicodeScalars.append(e)
                        }
                        i += 2
                        continue
                    }
                    text.unicodeScalars.append(d)
                    i += 1
                }
                if !closed { return .failure(ExprError(pos: start, message: "unterminated string")) }
                out.append(Token(tok: .string(text), pos: start))
                continue
            }
            let next: Unicode.Scalar? = i + 1 < n ? s[i + 1] : nil
            switch c {
            case "+", "-", "*", "/", "%", "(", ")", ",":
                out.append(Token(tok: .op(String(c)), pos: start)); i += 1
            case "<", ">", "!", "=":
                if next == "=" {
                    out.append(Token(tok: .op(String(c) + "="), pos: start)); i += 2
                } else if c == "=" {
                    return .failure(ExprError(pos: start, message: "unexpected \"=\" (use \"==\" to compare)"))
                } else {
                    out.append(Token(tok: .op(String(c)), pos: start)); i += 1
                }
            case "&", "|":
                if next == c {
                    out.append(Token(tok: .op(String(c) + String(c)), pos: start)); i += 2
                } else {
                    return .failure(ExprError(pos: start, message: "unexpected \"\(c)\" (use \"\(c)\(c)\")"))
                }
            default:
                return .failure(ExprError(pos: start, message: "unexpected character \"\(c)\""))
            }
        }
        out.append(Token(tok: .end, pos: n))
        return .success(out)
    }
}

/// Syntax tree. `pos` is the offset of the node's operator or first token.
indirect enum Node {
    case number(Double, pos: Int)
    case string(String, pos: Int)
    case bool(Bool, pos: Int)
    case ident(String, pos: Int)
    case path(String, pos: Int)
    case unary(String, Node, pos: Int)
    case binary(String, Node, Node, pos: Int)
    case call(String, [Node], pos: Int)

    var pos: Int {
        switch self {
        case .number(_, let p), .string(_, let p), .bool(_, let p), .ident(_, let p), .path(_, let p),
             .unary(_, _, let p), .binary(_, _, _, let p), .call(_, _, let p):
            return p
        }
    }
}

struct Parser {
    static let maxDepth = 64
    static let maxNodes = 512

    private var toks: [Token]
    private var i = 0
    private var depth = 0
    private var nodes = 0

    init(_ toks: [Token]) { self.toks = toks }

    static func parse(_ text: String) -> Result<Node, ExprError> {
        let scalars = Array(text.unicodeScalars)
        switch Lexer.tokenize(scalars) {
        case .failure(let e): return .failure(e)
        case .success(let toks):
            var p = Parser(toks)
            do {
                if case .end = toks[0].tok { throw ExprError(pos: 0, message: "empty expression") }
                let n = try p.expr()
                if case .end = p.peek.tok { return .success(n) }
                throw ExprError(pos: p.peek.pos, message: "unexpected \(describe(p.peek.tok)) after the end of the expression")
            } catch let e as ExprError {
                return .failure(e)
            } catch {
                return .failure(ExprError(pos: 0, message: "\(error)"))
            }
        }
    }

    static func describe(_ t: Tok) -> String {
        switch t {
        case .number(let d): return "number \(d)"
        case .string: return "string"
        case .ident(let s): return "\"\(s)\""
        case .path(let s): return "\"\(s)\""
        case .op(let s): return "\"\(s)\""
        case .end: return "end of expression"
        }
    }

    private var peek: Token { toks[i] }
    private mutating func advance() -> Token { let t = toks[i]; if i < toks.count - 1 { i += 1 }; return t }

    private mutating func node(_ pos: Int) throws {
        nodes += 1
        if nodes > Parser.maxNodes {
            throw ExprError(pos: pos, message: "expression too large (more than \(Parser.maxNodes) parts)")
        }
    }

    private mutating func enter(_ pos: Int) throws {
        depth += 1
        if depth > Parser.maxDepth {
            throw ExprError(pos: pos, message: "expression nested too deeply (more than \(Parser.maxDepth) levels)")
        }
    }

    private func isOp(_ s: String) -> Bool { if case .op(s) = peek.tok { return true }; return false }
    private func isWord(_ s: String) -> Bool { if case .ident(s) = peek.tok { return true }; return false }

    mutating func expr() throws -> Node {
        try enter(peek.pos)
        defer { depth -= 1 }
        return try or()
    }

    private mutating func or() throws -> Node {
        var l = try and()
        while isOp("||") || isWord("or") {
            let t = advance()
            try node(t.pos)
            let r = try and()
            l = .binary("||", l, r, pos: t.pos)
        }
        return l
    }

    private mutating func and() throws -> Node {
        var l = try cmp()
        while isOp("&&") || isWord("and") {
            let t = advance()
            try node(t.pos)
            let r = try cmp()
            l = .binary("&&", l, r, pos: t.pos)
        }
        return l
    }

    private mutating func cmp() throws -> Node {
        let l = try add()
        for op in ["<", "<=", ">", ">=", "==", "!="] where isOp(op) {
            let t = advance()
            try node(t.pos)
            let r = try add()
            for op2 in ["<", "<=", ">", ">=", "==", "!="] where isOp(op2) {
                throw ExprError(pos: peek.pos, message: "comparisons cannot be chained; combine them with \"&&\"")
            }
            return .binary(op, l, r, pos: t.pos)
        }
        return l
    }

    private mutating func add() throws -> Node {
        var l = try mul()
        while isOp("+") || isOp("-") {
            let t = advance()
            guard case .op(let op) = t.tok else { break }
            try node(t.pos)
            let r = try mul()
            l = .binary(op, l, r, pos: t.pos)
        }
        return l
    }

    private mutating func mul() throws -> Node {
        var l = try unary()
        while isOp("*") || isOp("/") || isOp("%") {
            let t = advance()
            guard case .op(let op) = t.tok else { break }
            try node(t.pos)
            let r = try unary()
            l = .binary(op, l, r, pos: t.pos)
        }
        return l
    }

    private mutating func unary() throws -> Node {
        if isOp("-") || isOp("!") || isWord("not") {
            let t = advance()
            try node(t.pos)
            try enter(t.pos)
            defer { depth -= 1 }
            let operand = try unary()
            return .unary(t.tok == .op("-") ? "-" : "!", operand, pos: t.pos)
        }
        return try primary()
    }

    private mutating func primary() throws -> Node {
        let t = advance()
        try node(t.pos)
        switch t.tok {
        case .number(let d): return .number(d, pos: t.pos)
        case .string(let s): return .string(s, pos: t.pos)
        case .path(let p): return .path(p, pos: t.pos)
        case .ident(let name):
            switch name {
            case "true": return .bool(true, pos: t.pos)
            case "false": return .bool(false, pos: t.pos)
            case "and", "or", "not":
                throw ExprError(pos: t.pos, message: "expected a value before \"\(name)\"")
            default: break
            }
            if isOp("(") {
                _ = advance()
                try enter(t.pos)
                defer { depth -= 1 }
                var args: [Node] = []
                if isOp(")") { _ = advance(); return .call(name, args, pos: t.pos) }
                while true {
                    args.append(try expr())
                    if isOp(",") { _ = advance(); continue }
                    if isOp(")") { _ = advance(); break }
                    throw ExprError(pos: peek.pos, message: "expected \",\" or \")\" in the arguments of \(name)(), found \(Parser.describe(peek.tok))")
                }
                return .call(name, args, pos: t.pos)
            }
            return .ident(name, pos: t.pos)
        case .op("("):
            let inner = try expr()
            guard isOp(")") else {
                throw ExprError(pos: peek.pos, message: "missing \")\" to close \"(\" (found \(Parser.describe(peek.tok)))")
            }
            _ = advance()
            return inner
        case .end:
            throw ExprError(pos: t.pos, message: "expression ends too early: a value is missing")
        case .op(let o):
            throw ExprError(pos: t.pos, message: "expected a value, found \"\(o)\"")
        }
    }
}
