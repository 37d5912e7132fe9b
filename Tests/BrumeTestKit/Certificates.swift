import Foundation

/// A throwaway certificate authority for TLS tests (openssl CLI): a CA, a server
/// certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA.
public struct TestPKI: Sendable {
    public let dir: String
    public var ca: String { "\(dir)/ca.pem" }
    public var serverCert: String { "\(dir)/server.pem" }
    public var serverKey: String { "\(dir)/server.key" }
    public var clientCert: String { "\(dir)/client.pem" }
    public var clientKey: String { "\(dir)/client.key" }
    /// A second CA nobody trusts (for "an unknown certificate is refused").
    public var rogueCert: String { "\(dir)/rogue.pem" }
    public var rogueKey: String { "\(dir)/rogue.key" }

    public init(dir: String) throws {
        self.dir = dir
        let ext = "\(dir)/server.ext"
        try "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n".write(toFile: ext, atomically: true, encoding: .utf8)
        let cext = "\(dir)/client.ext"
        try "extendedKeyUsage = clientAuth\n".write(toFile: cext, atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/ca.key", "-out", "\(dir)/ca.pem", "-days", "2", "-subj", "/CN=Brume Test CA"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/server.key", "-out", "\(dir)/server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", "\(dir)/server.csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca.key", "-CAcreateserial", "-out", "\(dir)/server.pem", "-days", "2", "-extfile", ext],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/client.key", "-out", "\(dir)/client.csr", "-subj", "/CN=gw-e2e"],
            ["x509", "-req", "-in", "\(dir)/client.csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca.key", "-CAcreateserial", "-out", "\(dir)/client.pem", "-days", "2", "-extfile", cext],
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/rogue.key", "-out", "\(dir)/rogue.pem", "-days", "2", "-subj", "/CN=rogue"],
        ]
        for (i, args) in steps.enumerated() {
            let c = try Child("/usr/bin/openssl", args, dir: dir, name: "openssl-\(i)")
            guard c.wait(timeout: 30) == 0 else { throw TestError("openssl \(args.prefix(2)) failed: \(c.stderr)") }
        }
        for f in ["ca.key", "server.key", "client.key", "rogue.key"] { chmod("\(dir)/\(f)", 0o600) }
    }
}

/// Tests/Fixtures (scripts and data the tests use).
public func fixturesDirectory(filePath: String = #filePath) -> String {
    var parts = filePath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
    parts.removeLast(2)
    return parts.joined(separator: "/") + "/Fixtures"
}
