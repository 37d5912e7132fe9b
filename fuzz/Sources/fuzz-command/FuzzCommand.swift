// CommandParser.parse. Invariants: an accepted command has a non-empty id of at most 128 bytes,
// a non-empty actuator, a finite number / bool / string of at most 256 bytes, expires >= 0;
// re-encoding it as a JSON object parses back to the same command.
import BrumeCore
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let command: Command
    do { command = try CommandParser.parse(input) } catch {
        if let id = error.id { invariant(!id.isEmpty && id.utf8.count <= 128, "error carries a bad id") }
        return 0
    }
    invariant(!command.id.isEmpty && command.id.utf8.count <= 128, "bad id \(command.id)")
    invariant(!command.actuator.isEmpty, "empty actuator")
    invariant(command.origin == "cloud", "origin \(command.origin)")
    switch command.value {
    case .number(let d): invariant(d.isFinite, "non-finite value")
    case .string(let s): invariant(s.utf8.count <= 256, "value string of \(s.utf8.count) bytes")
    case .bool: break
    }
    if let e = command.expires { invariant(e >= 0 && e < 1_000_000_000_000_000, "expires \(e)") }

    let value: JSONValue
    switch command.value {
    case .number(let d): value = .number(d)
    case .bool(let b): value = .bool(b)
    case .string(let s): value = .string(s)
    }
    var members = [JSONMember(key: "id", value: .string(command.id)),
                   JSONMember(key: "actuator", value: .string(command.actuator)),
                   JSONMember(key: "value", value: value)]
    if let e = command.expires { members.append(JSONMember(key: "expires", value: .number(Double(e)))) }
    var text: [UInt8] = []
    JSONValue.object(members).appendJSON(to: &text)
    let again = text.withUnsafeBytes { try? CommandParser.parse($0) }
    invariant(again == command, "re-encoded command \(show(text)) parses as \(String(describing: again))")
    return 0
}

@_cdecl("fuzz_command_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
