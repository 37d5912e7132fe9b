// TOMLParser.parse and ConfigLoader.parse(text:file:) on valid UTF-8 inputs.
// Invariants: error and diagnostic positions are 1-based and inside the text (line <= lines + 1);
// the loader's syntax errors agree with the parser's.
import BrumeConfig
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let text = String(validating: UnsafeBufferPointer(start: data, count: size), as: UTF8.self) else { return 0 }
    // Lines as an editor counts them (LF; CRLF is one break).
    let lines = text.utf8.reduce(1) { $0 + ($1 == 0x0A ? 1 : 0) }
    func inside(_ p: SourcePosition) -> Bool { p.line >= 1 && p.column >= 1 && p.line <= lines + 1 }

    var syntaxError: TOMLSyntaxError? = nil
    do { _ = try TOMLParser.parse(text) } catch {
        syntaxError = error
        invariant(inside(error.position), "syntax error at \(error.position), text has \(lines) lines")
    }
    switch ConfigLoader.parse(text: text, file: "gateway.toml") {
    case .success(let (_, warnings)):
        invariant(syntaxError == nil, "loader accepted text the parser rejects")
        for d in warnings {
            invariant(d.severity == .warning, "error diagnostic on success: \(d)")
            invariant(inside(d.position), "diagnostic at \(d.position), text has \(lines) lines: \(d)")
        }
    case .failure(.invalid(let diagnostics)):
        invariant(!diagnostics.isEmpty, "failure without diagnostics")
        invariant(diagnostics.contains { $0.severity == .error }, "failure without an error diagnostic")
        for d in diagnostics { invariant(inside(d.position), "diagnostic at \(d.position), text has \(lines) lines: \(d)") }
        if let e = syntaxError { invariant(diagnostics.count == 1 && diagnostics[0].position == e.position, "loader and parser disagree on the syntax error") }
    case .failure(.unreadable):
        invariant(false, "parse(text:) reported an unreadable file")
    }
    return 0
}

@_cdecl("fuzz_toml_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
