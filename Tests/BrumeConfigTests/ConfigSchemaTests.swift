import Foundation
import Testing
@testable import BrumeConfig

// docs/gateway.schema.json: generated from the loader (Sources/BrumeConfig/Schema/ConfigSchema.swift)
// with the repository's gateway.toml and the valid golden cases as probes, and the key tables of
// docs/configuration.md for descriptions. Checked here: the committed file is what the generator
// makes now (BRUME_UPDATE_SCHEMA=1 swift test --filter ConfigSchema rewrites it), and an
// independent validator (Python's jsonschema, Debian's python3-jsonschema) accepts every valid
// configuration and refuses a misspelt key and a wrong word.

private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
private let schemaPath = root.appendingPathComponent("docs/gateway.schema.json").path

/// gateway.toml, the packaged default and every valid case.
private func validConfigs() throws -> [(String, String)] {
    let cases = root.appendingPathComponent("Tests/BrumeConfigTests/cases")
    var out: [(String, String)] = []
    for rel in ["gateway.toml", "deploy/gateway.default.toml"] {
        out.append((rel, try String(contentsOfFile: root.appendingPathComponent(rel).path, encoding: .utf8)))
    }
    for name in try FileManager.default.contentsOfDirectory(atPath: cases.path).sorted() where name.hasPrefix("valid") {
        let f = cases.appendingPathComponent(name).appendingPathComponent("gateway.toml").path
        out.append(("cases/\(name)/gateway.toml", try String(contentsOfFile: f, encoding: .utf8)))
    }
    return out
}

/// Runs python3 jsonschema on one TOML text; nil when valid, else the validator's message.
private func validate(_ toml: String, schema: String) throws -> String? {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("brume-schema-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    try toml.write(to: dir.appendingPathComponent("c.toml"), atomically: true, encoding: .utf8)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", """
        import json, sys, tomllib, jsonschema
        schema = json.load(open(sys.argv[1]))
        jsonschema.Draft7Validator.check_schema(schema)
        doc = tomllib.load(open(sys.argv[2], "rb"))
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        for e in errors: print("/".join(str(x) for x in e.path) + ": " + e.message)
        sys.exit(1 if errors else 0)
        """, schema, dir.appendingPathComponent("c.toml").path]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return p.terminationStatus == 0 ? nil : text
}

@Suite("JSON Schema of gateway.toml") struct ConfigSchemaTests {
    @Test("docs/gateway.schema.json is what the loader generates now")
    func committedSchemaIsCurrent() throws {
        let docs = try String(contentsOfFile: root.appendingPathComponent("docs/configuration.md").path, encoding: .utf8)
        let generated = try ConfigSchema.generate(probes: validConfigs(), docs: docs, directory: { name in
            name.hasPrefix("cases/") ? root.appendingPathComponent("Tests/BrumeConfigTests").appendingPathComponent(name).deletingLastPathComponent().path : root.path
        }) + "\n"
        if ProcessInfo.processInfo.environment["BRUME_UPDATE_SCHEMA"] == "1" {
            try generated.write(toFile: schemaPath, atomically: true, encoding: .utf8)
        }
        let committed = (try? String(contentsOfFile: schemaPath, encoding: .utf8)) ?? ""
        #expect(committed == generated, "docs/gateway.schema.json is stale: run BRUME_UPDATE_SCHEMA=1 swift test --filter ConfigSchema and commit it")
        // It knows the keys a technician types most, with their shapes.
        #expect(generated.contains("\"when_full\"") && generated.contains("\"drop_oldest\""))
        #expect(generated.contains("\"usb_vid_pid\"") && generated.contains("\"sparkplug_commands\""))
    }

    @Test("an independent validator accepts every valid configuration", arguments: try validConfigs().map(\.0))
    func validConfigurationsValidate(_ name: String) throws {
        let text = try #require(try validConfigs().first { $0.0 == name }?.1)
        let problem = try validate(text, schema: schemaPath)
        #expect(problem == nil, "\(name) does not validate against docs/gateway.schema.json:\n\(problem ?? "")")
    }

    @Test("it refuses a misspelt key, a wrong word and a wrong type, as brume check does")
    func mistakesAreRefused() throws {
        let base = "[gateway]\nid = \"gw-1\"\n[uplink.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://h:1883\"\n"
        let typo = try validate(base + "[buffer]\nmax_byte = \"64MiB\"\n", schema: schemaPath)
        #expect(typo?.contains("buffer: Additional properties are not allowed ('max_byte' was unexpected)") == true, "\(typo ?? "accepted")")
        let word = try validate(base + "[buffer]\nwhen_full = \"drop_some\"\n", schema: schemaPath)
        #expect(word?.contains("buffer/when_full: 'drop_some' is not one of") == true, "\(word ?? "accepted")")
        let type = try validate(base + "[[source]]\nname = \"s\"\nkind = \"serial\"\nport = \"/dev/ttyUSB0\"\nformat = \"kv\"\nbaud = \"fast\"\n", schema: schemaPath)
        #expect(type?.contains("source/0/baud: 'fast' is not of type 'integer'") == true, "\(type ?? "accepted")")
    }
}
