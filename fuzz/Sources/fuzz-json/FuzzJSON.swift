// JSONParser.parse + JSONPointer.resolve.
// Invariants: parsed numbers are finite; compact re-serialisation parses back to the same
// document and is a fixed point; a top-level number equals the C library's correctly rounded
// conversion; the String overload agrees with the bytes overload; pointers built from keys
// round-trip through their text and resolve like the subscript.
import BrumeCore
import FuzzSupport

let fixedPointers: [JSONPointer] = ["", "/", "/a", "/0", "/a/b", "/readings/0/v", "/~0/~1", "/v", "/ts", "/1/0/-"].map { try! JSONPointer($0) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let doc: JSONValue
    do { doc = try JSONParser.parse(input) } catch {
        invariant(error.offset >= 0 && error.offset <= size, "error offset \(error.offset) outside input of \(size) bytes")
        return 0
    }
    invariant(jsonAllFinite(doc), "non-finite number in \(doc)")
    // Every document as a token endpoint's answer: the lifetime never traps and stays sane.
    let use = TokenLifetime.useFor(doc)
    invariant(use >= 1 && use <= 365 * 86_400, "token lifetime \(use) s")
    _ = TokenLifetime.deadline(doc, now: UInt64.max - 1)

    // Round trip through the compact serialisation.
    var text: [UInt8] = []
    doc.appendJSON(to: &text)
    let again: JSONValue
    do { again = try JSONParser.parse(text) } catch {
        invariant(false, "re-serialised document does not parse: \(error): \(show(text))")
        return 0
    }
    invariant(again == doc, "round trip changed the document: \(show(text))")
    var text2: [UInt8] = []
    again.appendJSON(to: &text2)
    invariant(text2 == text, "serialisation is not a fixed point: \(show(text)) vs \(show(text2))")

    // String overload agrees with the bytes overload.
    if let s = String(validating: input.bindMemory(to: UInt8.self), as: UTF8.self) {
        let viaString = try? JSONParser.parse(s)
        invariant(viaString == doc, "String overload disagrees on \(show(input))")
    }

    // A lone top-level number is correctly rounded (compare with strtod via Double(String)).
    if case .number(let d) = doc {
        var lo = 0, hi = size
        while lo < hi, [0x20, 0x09, 0x0A, 0x0D].contains(input[lo]) { lo += 1 }
        while hi > lo, [0x20, 0x09, 0x0A, 0x0D].contains(input[hi - 1]) { hi -= 1 }
        let literal = String(decoding: input[lo..<hi], as: UTF8.self)
        if let expected = Double(literal) {
            invariant(expected.bitPattern == d.bitPattern, "number \(literal) parsed as \(d) (bits \(String(d.bitPattern, radix: 16))), correctly rounded is \(expected) (bits \(String(expected.bitPattern, radix: 16)))")
        }
    }

    // Pointers.
    for p in fixedPointers { _ = p.resolve(in: doc) }
    invariant(JSONPointer(tokens: []).resolve(in: doc) == doc, "empty pointer does not designate the document")
    var current = doc
    for _ in 0..<4 {
        let next: (String, JSONValue)?
        switch current {
        case .object(let members):
            // Duplicate keys: the pointer, like the subscript, picks the last member of that name.
            if let m = members.first { next = (m.key, current[m.key]!) } else { next = nil }
        case .array(let elements):
            next = elements.isEmpty ? nil : (String(elements.count - 1), elements[elements.count - 1])
        default: next = nil
        }
        guard let (token, value) = next else { break }
        let p = JSONPointer(tokens: [token])
        let reparsed: JSONPointer
        do { reparsed = try JSONPointer(p.description) } catch {
            invariant(false, "pointer text \(p.description) does not parse: \(error)")
            return 0
        }
        invariant(reparsed.tokens == [token], "pointer tokens \([token]) -> \"\(p.description)\" -> \(reparsed.tokens)")
        invariant(p.resolve(in: current) == value, "pointer /\(token) does not resolve like the subscript")
        current = value
    }
    return 0
}

@_cdecl("fuzz_json_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
