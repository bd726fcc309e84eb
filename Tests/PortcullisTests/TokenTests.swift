import Crypto
import CryptoExtras
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PortcullisAccess
import PortcullisCore
import Synchronization
import Testing

/// An OIDC issuer for tests: signing keys of three kinds and a JWKS served over loopback.
final class TestIssuer: Sendable {
    let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    let p256 = P256.Signing.PrivateKey()
    let ed25519 = Curve25519.Signing.PrivateKey()
    /// Key ids published; a test can rotate them.
    let published = Mutex<[String: String]>(["RS256": "rsa-1", "ES256": "ec-1", "EdDSA": "ed-1"])

    var jwks: JSONValue {
        let kids = published.withLock { $0 }
        let primitives = try! rsa.publicKey.getKeyPrimitives()
        let raw = p256.publicKey.rawRepresentation
        return ["keys": [
            ["kty": "RSA", "kid": .string(kids["RS256"]!), "alg": "RS256", "use": "sig",
             "n": .string(Base64URL.encode(primitives.modulus)), "e": .string(Base64URL.encode(primitives.publicExponent))],
            ["kty": "EC", "kid": .string(kids["ES256"]!), "crv": "P-256",
             "x": .string(Base64URL.encode(raw.prefix(32))), "y": .string(Base64URL.encode(raw.suffix(32)))],
            ["kty": "OKP", "kid": .string(kids["EdDSA"]!), "crv": "Ed25519", "x": .string(Base64URL.encode(ed25519.publicKey.rawRepresentation))],
        ]]
    }

    /// A compact JWS of `claims`, signed with `algorithm` (or not at all for `none`, or HMAC with `hmacSecret`).
    func token(_ claims: JSONObject, algorithm: String = "RS256", kid: String? = nil, hmacSecret: [UInt8]? = nil, signer: String? = nil) -> String {
        var header: JSONObject = ["alg": .string(algorithm), "typ": "JWT"]
        header["kid"] = .string(kid ?? published.withLock { $0[signer ?? algorithm] } ?? "none")
        let input = Base64URL.encode(Array(JSONWriter.string(.object(header)).utf8)) + "." + Base64URL.encode(Array(JSONWriter.string(.object(claims)).utf8))
        let data = Array(input.utf8)
        let signature: [UInt8]
        if let hmacSecret {
            signature = Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: hmacSecret)))
        } else {
            switch signer ?? algorithm {
            case "RS256": signature = Array(try! rsa.signature(for: SHA256.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
            case "ES256": signature = Array(try! p256.signature(for: data).rawRepresentation)
            case "EdDSA": signature = Array(try! ed25519.signature(for: data))
            default: signature = []
            }
        }
        return input + "." + Base64URL.encode(signature)
    }

    /// Serves discovery and JWKS on a loopback port while `body` runs.
    func serve<T: Sendable>(_ body: @Sendable (Int) async throws -> T) async throws -> T {
        let router = Router()
        let issuer = self
        router.get("/.well-known/openid-configuration") { request, _ -> Response in
            let authority = request.head.authority ?? request.headers[HTTPField.Name("host")!] ?? "127.0.0.1"
            return Self.json(["issuer": .string("http://\(authority)"), "jwks_uri": .string("http://\(authority)/jwks")])
        }
        router.get("/jwks") { _, _ in Self.json(issuer.jwks) }
        return try await Application(router: router).test(.live) { client in try await body(client.port!) }
    }

    static func json(_ value: JSONValue) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: JSONWriter.buffer(value)))
    }
}

@Suite("OIDC bearer tokens", .serialized)
struct TokenTests {
    static func yaml(issuer: String) -> String {
        """
        auth:
          master_key: test-master-key
          oidc:
            - issuer: \(issuer)
              audience: portcullis
              role_claims: [realm_access.roles, groups]
              role_map: { llm-admins: admin, llm-devs: developer, llm-audit: auditor }
              team_claim: team
              max_token_lifetime_seconds: 3600
        routing: { health_check: { interval_seconds: 0 } }
        models:
          - name: demo
            deployments: [{ provider: demo }]
        """
    }

    static func claims(_ issuer: String, now: Double = Date().timeIntervalSince1970, roles: [String] = [], amr: [String]? = nil,
                       audience: String = "portcullis", lifetime: Double = 600, notBefore: Double? = nil) -> JSONObject {
        var claims: JSONObject = ["iss": .string(issuer), "sub": "alice", "aud": .string(audience), "team": "research",
                                  "iat": .integer(Int64(now)), "exp": .integer(Int64(now + lifetime)),
                                  "realm_access": ["roles": .array(roles.map(JSONValue.string))]]
        if let amr { claims["amr"] = .array(amr.map(JSONValue.string)) }
        if let notBefore { claims["nbf"] = .integer(Int64(notBefore)) }
        return claims
    }

    @Test("valid tokens of every algorithm are accepted; forged, expired, misaddressed and confused ones are refused")
    func matrix() async throws {
        let issuer = TestIssuer()
        try await issuer.serve { port in
            let name = "http://127.0.0.1:\(port)"
            try await withGateway(yaml: Self.yaml(issuer: name)) { gateway in
                for algorithm in ["RS256", "ES256", "EdDSA"] {
                    let token = issuer.token(Self.claims(name), algorithm: algorithm)
                    let result = try await gateway.chat(key: token)
                    #expect(result.status == 200, "\(algorithm): \(result.body)")
                }
                let now = Date().timeIntervalSince1970
                let rsaPublicPEM = Array(issuer.rsa.publicKey.pemRepresentation.utf8)
                let refused: [(String, String)] = [
                    ("alg none", issuer.token(Self.claims(name), algorithm: "none")),
                    ("HMAC keyed with the public key", issuer.token(Self.claims(name), algorithm: "HS256", kid: "rsa-1", hmacSecret: rsaPublicPEM)),
                    ("RS256 header over an ES256 key", issuer.token(Self.claims(name), algorithm: "RS256", kid: "ec-1")),
                    ("signed by another key", TestIssuer().token(Self.claims(name))),
                    ("expired", issuer.token(Self.claims(name, now: now - 7200))),
                    ("not yet valid", issuer.token(Self.claims(name, notBefore: now + 600))),
                    ("wrong audience", issuer.token(Self.claims(name, audience: "someone-else"))),
                    ("unknown issuer", issuer.token(Self.claims("https://evil.example"))),
                    ("lifetime too long", issuer.token(Self.claims(name, lifetime: 86_400))),
                    ("tampered claims", {
                        let parts = issuer.token(Self.claims(name)).split(separator: ".")
                        let forged = Base64URL.encode(Array(JSONWriter.string(.object(Self.claims(name, roles: ["llm-admins"], amr: ["otp"]))).utf8))
                        return "\(parts[0]).\(forged).\(parts[2])"
                    }()),
                ]
                for (label, token) in refused {
                    let result = try await gateway.chat(key: token)
                    #expect(result.status == 401 && result.errorCode == "invalid_token", "\(label): \(result.status) \(result.body)")
                }
            }
        }
    }

    @Test("claims map to roles and team; admin needs MFA in amr")
    func rolesAndMFA() async throws {
        let issuer = TestIssuer()
        try await issuer.serve { port in
            let name = "http://127.0.0.1:\(port)"
            try await withGateway(yaml: Self.yaml(issuer: name)) { gateway in
                let developer = try await gateway.call(.GET, "/admin/whoami", key: issuer.token(Self.claims(name, roles: ["llm-devs"])))
                let who = developer.json?.objectValue
                #expect(who?["role"]?.stringValue == "developer" && who?["team_id"]?.stringValue == "research" && who?["user_id"]?.stringValue == "alice")
                let noMFA = try await gateway.call(.GET, "/admin/users", key: issuer.token(Self.claims(name, roles: ["llm-admins"], amr: ["pwd"])))
                #expect(noMFA.status == 403 && noMFA.errorCode == "mfa_required", "\(noMFA.body)")
                let withMFA = try await gateway.call(.GET, "/admin/users", key: issuer.token(Self.claims(name, roles: ["llm-admins"], amr: ["pwd", "otp"])))
                #expect(withMFA.status == 200, "\(withMFA.body)")
                let auditor = try await gateway.chat(key: issuer.token(Self.claims(name, roles: ["llm-audit"])))
                #expect(auditor.status == 403 && auditor.errorCode == "permission_denied")
                let plain = try await gateway.call(.GET, "/admin/whoami", key: issuer.token(Self.claims(name)))
                #expect(plain.json?.objectValue?["role"]?.stringValue == "user", "no role claim: the default role")
            }
        }
    }

    @Test("an unknown kid makes the gateway fetch the JWKS again (key rotation at the issuer)")
    func keyRotation() async throws {
        let issuer = TestIssuer()
        try await issuer.serve { port in
            let name = "http://127.0.0.1:\(port)"
            try await withGateway(yaml: Self.yaml(issuer: name)) { gateway in
                #expect(try await gateway.chat(key: issuer.token(Self.claims(name))).status == 200)
                issuer.published.withLock { $0["RS256"] = "rsa-2" }
                try await Task.sleep(nanoseconds: 1_100_000_000)   // past the minimum gap between refreshes
                let rotated = try await gateway.chat(key: issuer.token(Self.claims(name, now: Date().timeIntervalSince1970 - 1)))
                #expect(rotated.status == 200, "\(rotated.body)")
            }
        }
    }
}
