@testable import BrumeRuntime
@testable import BrumeConfig
import BrumeCore
import BrumeTestKit
import Crypto
import Foundation
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Signed commands and the values sent to devices, without a broker (the end-to-end tests run
/// the same through real Mosquitto and `brume sign`).
@Suite struct CommandSecurityTests {
    static let key = Curve25519.Signing.PrivateKey()
    static let other = Curve25519.Signing.PrivateKey()

    func auth(required: Bool = true) -> CommandAuth {
        var c = CommandsSection()
        c.publicKeys = ["k1": Array(Self.key.publicKey.rawRepresentation)]
        c.requireSignatures = required
        c.maxLifetimeMillis = 3_600_000
        return CommandAuth(c, gatewayID: "gw-1")
    }

    func signed(_ cmd: Command, gateway: String = "gw-1", kid: String = "k1", key: Curve25519.Signing.PrivateKey = key) throws -> Command {
        let json = try CommandAuth.sign(cmd, gateway: gateway, keyID: kid, privateKey: key)
        return try Array(json.utf8).withUnsafeBytes { try CommandParser.parse($0) }
    }

    let now: Int64 = 1_800_000_000_000

    @Test func onlyAValidSignatureForThisGatewayPasses() throws {
        let a = auth()
        let cmd = Command(id: "c1", actuator: "pump", value: .string("on"), expires: now + 60_000)
        #expect(a.refusal(try signed(cmd), now: now, clockTrusted: true) == nil)
        #expect(a.refusal(cmd, now: now, clockTrusted: true)?.reason == "unsigned")
        #expect(auth(required: false).refusal(cmd, now: now, clockTrusted: true) == nil, "optional: unsigned accepted")
        var altered = try signed(cmd)
        altered.value = .string("off")
        #expect(a.refusal(altered, now: now, clockTrusted: true)?.reason == "bad_signature")
        var later = try signed(cmd)
        later.expires = now + 120_000
        #expect(a.refusal(later, now: now, clockTrusted: true)?.reason == "bad_signature", "the expiry is signed too")
        #expect(a.refusal(try signed(cmd, gateway: "gw-2"), now: now, clockTrusted: true)?.reason == "bad_signature")
        #expect(a.refusal(try signed(cmd, kid: "k0", key: Self.other), now: now, clockTrusted: true)?.reason == "unknown_key")
        #expect(a.refusal(try signed(cmd, key: Self.other), now: now, clockTrusted: true)?.reason == "bad_signature", "k1's id, another key")
        var garbage = try signed(cmd)
        garbage.signature = ("k1", "not base64!")
        #expect(a.refusal(garbage, now: now, clockTrusted: true)?.reason == "bad_signature")
        #expect(a.refusal(try signed(Command(id: "c2", actuator: "pump", value: .string("on"), expires: now + 7_200_000)), now: now, clockTrusted: true)?.reason == "expiry_too_far")
        #expect(a.refusal(try signed(cmd), now: now, clockTrusted: false)?.reason == "clock_unsynchronised")
    }

    @Test func theSignedTextIsFixed() {
        let cmd = Command(id: "c-42", actuator: "boiler/valve", value: .string("cl\"ose"), expires: 1_764_170_060_000)
        #expect(String(decoding: cmd.signedBytes(gateway: "gw-01"), as: UTF8.self)
                == "brume-command-v1\ngw-01\nc-42\nboiler/valve\n\"cl\\\"ose\"\n1764170060000")
        let n = Command(id: "c", actuator: "a", value: .number(71.5), expires: nil)
        #expect(String(decoding: n.signedBytes(gateway: "g"), as: UTF8.self) == "brume-command-v1\ng\nc\na\n71.5\n-")
    }

    @Test func valuesInJSONTemplatesCannotAddFields() throws {
        let t = #"{"text":"{value}","by":"brume"}"#
        for v in [#"a","by":"evil"#, #"\"#, "{value}", "x\"}"] {
            let out = render(t, .string(v))
            let doc = try JSONParser.parse(Array(out.utf8))
            #expect(doc["text"] == .string(v) && doc["by"] == .string("brume"), "\(out)")
        }
        #expect(render(#"{"v":{value}}"#, .string(#"1,"x":2"#)) == #"{"v":"1,\"x\":2"}"#, "outside quotes: a JSON string literal")
        #expect(render(#"{"v":{value}}"#, .number(71.5)) == #"{"v":71.5}"#)
        #expect(render("SET {value}\r", .number(-0.5)) == "SET -0.5\r", "a line protocol: text")
        #expect(render("{value}", .string("{value}")) == "{value}", "one pass")
    }

    @Test func controlCharactersNeverGoToADevice() {
        let text = ActuatorConfig(name: "panel", via: .mqtt(source: "s", topic: "t", payload: "{value}", ackTopic: nil, ackPayload: nil),
                                  accepts: .string, timeoutMillis: 1000, safeValue: nil, safeAfterMillis: nil, safeOnShutdown: false)
        #expect(text.problem(with: .string("fine ✓")) == nil)
        for bad in ["a\r\nREBOOT", "\u{1B}[2J", "tab\there", "\u{7F}", "\u{85}", "\u{2028}"] {
            #expect(text.problem(with: .string(bad))?.hasPrefix("contains a control character") == true, "\(bad.debugDescription)")
        }
    }

    @Test func base64IsStrict() {
        for bytes in [[UInt8](), [0], [0, 1], [0, 1, 2], Array(0...255)] {
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        }
        #expect(Base64.encode(Array("hello".utf8)) == "aGVsbG8=")
        for bad in ["aGVsbG8", "aGVsbG8==", "aGVs bG8=", "aGVsbG9=", "====", "a=bc"] { #expect(Base64.decode(bad) == nil, "\(bad)") }
    }
}

/// Secrets from systemd credentials (`LoadCredential=`): a relative `*_file` is looked up in
/// `$CREDENTIALS_DIRECTORY`; an absolute one as it is.
@Suite(.serialized) struct CredentialsTests {
    @Test func aRelativeSecretFileComesFromTheCredentialsDirectory() throws {
        let dir = TestKit.tempDir()
        try "s3cret\nignored\n".write(toFile: "\(dir)/cloud-password", atomically: true, encoding: .utf8)
        chmod("\(dir)/cloud-password", 0o600)
        setenv("CREDENTIALS_DIRECTORY", dir, 1)
        defer { unsetenv("CREDENTIALS_DIRECTORY") }
        let logger = Logger(label: "test")
        #expect(try Gateway.secret("cloud-password", logger: logger) == "s3cret")
        #expect(try Gateway.secret("\(dir)/cloud-password", logger: logger) == "s3cret")
        #expect(throws: (any Error).self) { try Gateway.secret("missing", logger: logger) }
    }
}
