import BrumeConfig
import BrumeCore
import Crypto
import Foundation
import Testing
@testable import BrumeRuntime

/// The files of pushed configurations: every step durable, a power cut anywhere repaired at the
/// next start, versions that never go back.
@Suite struct RemoteConfigStoreTests {
    func store() throws -> (RemoteConfigStore, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("brume-remote-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return (RemoteConfigStore(dataDir: dir), dir)
    }

    @Test func stageKeepsThePreviousGoodFileAndRollBackRestoresIt() throws {
        let (st, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = try #require(st.loadState())
        try st.stage("v1", version: 1, state: &s, now: 1)
        s.phase = .good
        try st.save(s)
        try st.stage("v2", version: 2, state: &s, now: 2)
        #expect(st.current() == "v2" && (try? String(contentsOfFile: st.previousPath, encoding: .utf8)) == "v1")
        #expect(s.phase == .pending && s.version == 2 && s.previousVersion == 1 && s.highestVersion == 2)
        try st.rollBack(state: &s)
        #expect(st.current() == "v1" && s.version == 1 && s.phase == .good && s.highestVersion == 2, "a rollback lowers the version, never the highest")
        #expect(st.loadState() == s)
        // The first push rolled back: the local file again (no config.toml).
        var f = RemoteConfigStore.State()
        let (st2, dir2) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir2) }
        try st2.stage("first", version: 5, state: &f, now: 1)
        try st2.rollBack(state: &f)
        #expect(st2.current() == nil && f.version == 0 && f.sha256 == "")
    }

    @Test func aPowerCutInTheMiddleOfAChangeIsRepairedAtStart() throws {
        let (st, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = RemoteConfigStore.State()
        try st.stage("v1", version: 1, state: &s, now: 1)
        s.phase = .good
        try st.save(s)
        #expect(!st.repair(&s), "consistent: nothing to do")
        // Staging v2 stopped after the state was saved, before the file landed.
        try RemoteConfigStore.atomicWrite(st.previousPath, "v1")
        s.previousVersion = 1; s.version = 2; s.highestVersion = 2; s.phase = .pending; s.sha256 = ConfigPush.sha256Hex("v2")
        try st.save(s)
        var after = try #require(st.loadState())
        #expect(st.repair(&after))
        #expect(after.version == 1 && after.phase == .good && after.lastReason == "interrupted" && st.current() == "v1")
        #expect(after.highestVersion == 2, "v2 was accepted once: it cannot be replayed")
    }

    @Test func anUnreadableStateRefusesRatherThanForgettingTheVersions() throws {
        let (st, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(st.loadState() == RemoteConfigStore.State(), "no state yet: version 0")
        try FileManager.default.createDirectory(atPath: st.dir, withIntermediateDirectories: true)
        try "{\"version\": 3, \"pha".write(toFile: st.statePath, atomically: true, encoding: .utf8)
        #expect(st.loadState() == nil)
    }

    @Test func aPushedFileDoesNotPullTheBoardsEnvironmentOrCredentials() throws {
        let text = "[gateway]\nid = \"gw-1\"\n[uplink.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://h:1883\"\nusername = \"${credential:mqtt-password}\"\n"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("brume-push-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = ConfigLoader.load(path: dir + "/gateway.toml", mainText: text, mainName: "push-v1.toml", environment: ["CREDENTIALS_DIRECTORY": "/nonexistent"], interpolateMain: false)
        guard case .success(let (c, _)) = r else { Issue.record("\(r)"); return }
        #expect(c.uplinks.first?.connection.username == "${credential:mqtt-password}", "left as written")
    }

    @Test func pushesAreBoundToTheGatewayTheVersionAndTheText() throws {
        let key = Curve25519SigningKey()
        let body = try ConfigPush.sign(text: "a", version: 3, expires: 10_000, gateway: "gw-1", keyID: "k", privateKey: key.key)
        let push = try #require(try? Array(body.utf8).withUnsafeBytes { try ConfigPush.parse($0).get() })
        let keys = ["k": key.key.publicKey]
        #expect(push.refusal(keys: keys, gateway: "gw-1", currentVersion: 2, now: 5_000, clockTrusted: true, maxLifetimeMillis: 86_400_000) == nil)
        #expect(push.refusal(keys: keys, gateway: "gw-2", currentVersion: 2, now: 5_000, clockTrusted: true, maxLifetimeMillis: 86_400_000)?.reason == "bad_signature")
        #expect(push.refusal(keys: keys, gateway: "gw-1", currentVersion: 3, now: 5_000, clockTrusted: true, maxLifetimeMillis: 86_400_000)?.reason == "replayed")
        #expect(push.refusal(keys: keys, gateway: "gw-1", currentVersion: 2, now: 20_000, clockTrusted: true, maxLifetimeMillis: 86_400_000)?.reason == "expired")
        #expect(push.refusal(keys: keys, gateway: "gw-1", currentVersion: 2, now: 5_000, clockTrusted: false, maxLifetimeMillis: 86_400_000)?.reason == "clock_unsynchronised")
        var altered = push
        altered.text = "b"
        #expect(altered.refusal(keys: keys, gateway: "gw-1", currentVersion: 2, now: 5_000, clockTrusted: true, maxLifetimeMillis: 86_400_000)?.reason == "bad_signature")
        #expect(push.refusal(keys: [:], gateway: "gw-1", currentVersion: 2, now: 5_000, clockTrusted: true, maxLifetimeMillis: 86_400_000)?.reason == "unknown_key")
        for junk in ["", "[]", "{\"version\": 1e300}", "{\"version\": -1}", "{\"version\": 2, \"expires\": 3, \"config\": 4}"] {
            #expect(throws: (any Error).self) { try Array(junk.utf8).withUnsafeBytes { try ConfigPush.parse($0).get() } }
        }
    }
}

struct Curve25519SigningKey { let key = Curve25519.Signing.PrivateKey() }

/// Package offers: bound to the gateway, the version, the URL and the package's hash.
@Suite struct UpdateOfferTests {
    @Test func offersAreSignedOverEverythingTheyName() throws {
        let key = Curve25519SigningKey()
        let sha = String(repeating: "ab", count: 32)
        let body = try UpdateOffer.sign(version: "1.0.2", url: "https://u.example/brume_1.0.2_arm64.deb", sha256: sha, expires: 10_000,
                                        gateway: "gw-1", keyID: "k", privateKey: key.key)
        let offer = try UpdateOffer.parse(Array(body.utf8)).get()
        let keys = ["k": key.key.publicKey]
        #expect(offer.refusal(keys: keys, gateway: "gw-1", now: 5_000, clockTrusted: true, maxLifetimeMillis: 86_400_000) == nil)
        #expect(offer.refusal(keys: keys, gateway: "gw-2", now: 5_000, clockTrusted: true, maxLifetimeMillis: 86_400_000)?.reason == "bad_signature")
        for change in [{ (o: inout UpdateOffer) in o.url = "https://evil.example/x.deb" }, { $0.version = "1.0.3" }, { $0.sha256 = String(repeating: "cd", count: 32) }] {
            var o = offer
            change(&o)
            #expect(o.refusal(keys: keys, gateway: "gw-1", now: 5_000, clockTrusted: true, maxLifetimeMillis: 86_400_000)?.reason == "bad_signature")
        }
        #expect(offer.refusal(keys: keys, gateway: "gw-1", now: 20_000, clockTrusted: true, maxLifetimeMillis: 86_400_000)?.reason == "expired")
        #expect(offer.json == body, "what the helper re-verifies is what was signed")
    }

    @Test func badOffersAreRefusedWithAReason() {
        func reason(_ s: String) -> String? { if case .failure(let r) = UpdateOffer.parse(Array(s.utf8)) { return r.reason }; return nil }
        let sha = String(repeating: "0", count: 64)
        #expect(reason("nope") == "bad_json")
        #expect(reason("{\"version\":\"1.0\",\"url\":\"http://plain.example/x.deb\",\"sha256\":\"\(sha)\",\"expires\":1}") == "bad_offer", "https only")
        #expect(reason("{\"version\":\"1.0; rm -rf /\",\"url\":\"https://a/x.deb\",\"sha256\":\"\(sha)\",\"expires\":1}") == "bad_offer")
        #expect(reason("{\"version\":\"1.0\",\"url\":\"https://a/x.deb\",\"sha256\":\"XYZ\",\"expires\":1}") == "bad_offer")
        #expect(reason("{\"version\":\"1.0\",\"url\":\"https://a/x.deb\",\"sha256\":\"\(sha)\",\"expires\":1}") == "unsigned")
        #expect(UpdateOffer.isDebianVersion("1:2.0~rc1+deb12u1-3") && !UpdateOffer.isDebianVersion("../../x") && !UpdateOffer.isDebianVersion(""))
    }
}
