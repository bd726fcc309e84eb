import Crypto
import CryptoExtras
import Foundation
import PortcullisCore

/// Why a bearer token was refused; the message is safe to show the caller.
public struct TokenRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable {
        case malformed, unsupportedAlgorithm, unknownIssuer, unknownKey, badSignature, expired, notYetValid,
             wrongAudience, lifetimeTooLong, missingClaim
    }

    public var reason: Reason
    public var message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { message }
}

/// Base64url without padding, as JOSE uses it.
public enum Base64URL {
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let allowed = text.utf8.allSatisfy { byte in
            (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }
        guard allowed else { return nil }
        var standard = String(text).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.count % 4 != 0 { standard += "=" }
        return Data(base64Encoded: standard).map { Array($0) }
    }

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// A JSON Web Token split into its parts; nothing about it is trusted yet.
public struct UnverifiedToken: Sendable {
    public let header: JSONObject
    public let claims: JSONObject
    /// `header.payload` as sent: the bytes the signature covers.
    public let signingInput: [UInt8]
    public let signature: [UInt8]

    public init(_ token: String) throws {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, token.utf8.count <= 16_384 else { throw TokenRejection(.malformed, "The bearer token is not a JWS compact token.") }
        guard let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]),
              let signature = Base64URL.decode(parts[2]),
              let header = (try? JSONParser.parse(headerBytes))?.objectValue,
              let claims = (try? JSONParser.parse(payloadBytes))?.objectValue else {
            throw TokenRejection(.malformed, "The bearer token's header, claims or signature cannot be decoded.")
        }
        self.header = header
        self.claims = claims
        self.signingInput = Array(parts[0].utf8) + [UInt8(ascii: ".")] + Array(parts[1].utf8)
        self.signature = signature
    }
}

/// One public key from a JWKS, bound to the only algorithm family it can verify, so that a
/// token cannot choose how its signature is checked (no `none`, no HMAC with a public key).
public enum VerificationKey: Sendable {
    case rsa(_RSA.Signing.PublicKey)
    case p256(P256.Signing.PublicKey)
    case p384(P384.Signing.PublicKey)
    case ed25519(Curve25519.Signing.PublicKey)

    /// Parses one JWK; nil for keys of other types, private keys' extra fields are ignored.
    public init?(jwk: JSONObject) {
        if let use = jwk["use"]?.stringValue, use != "sig" { return nil }
        switch jwk["kty"]?.stringValue {
        case "RSA":
            guard let n = jwk["n"]?.stringValue.flatMap(Base64URL.decode), let e = jwk["e"]?.stringValue.flatMap(Base64URL.decode),
                  let key = try? _RSA.Signing.PublicKey(n: n, e: e), key.keySizeInBits >= 2048 else { return nil }
            self = .rsa(key)
        case "EC":
            guard let x = jwk["x"]?.stringValue.flatMap(Base64URL.decode), let y = jwk["y"]?.stringValue.flatMap(Base64URL.decode) else { return nil }
            switch jwk["crv"]?.stringValue {
            case "P-256":
                guard let key = try? P256.Signing.PublicKey(rawRepresentation: x + y) else { return nil }
                self = .p256(key)
            case "P-384":
                guard let key = try? P384.Signing.PublicKey(rawRepresentation: x + y) else { return nil }
                self = .p384(key)
            default:
                return nil
            }
        case "OKP":
            guard jwk["crv"]?.stringValue == "Ed25519", let x = jwk["x"]?.stringValue.flatMap(Base64URL.decode),
                  let key = try? Curve25519.Signing.PublicKey(rawRepresentation: x) else { return nil }
            self = .ed25519(key)
        default:
            return nil
        }
    }

    /// Whether `signature` over `input` is valid under `algorithm` with this key; false when
    /// the algorithm does not belong to this key's type.
    public func verifies(_ signature: [UInt8], over input: [UInt8], algorithm: String) -> Bool {
        switch (self, algorithm) {
        case (.rsa(let key), "RS256"):
            return key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA256.hash(data: input), padding: .insecurePKCS1v1_5)
        case (.rsa(let key), "RS384"):
            return key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA384.hash(data: input), padding: .insecurePKCS1v1_5)
        case (.rsa(let key), "RS512"):
            return key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA512.hash(data: input), padding: .insecurePKCS1v1_5)
        case (.p256(let key), "ES256"):
            guard let parsed = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(parsed, for: SHA256.hash(data: input))
        case (.p384(let key), "ES384"):
            guard let parsed = try? P384.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(parsed, for: SHA384.hash(data: input))
        case (.ed25519(let key), "EdDSA"):
            return key.isValidSignature(signature, for: input)
        default:
            return false
        }
    }
}

/// A key set: keys by `kid`, each with the algorithm its JWK declares (if any).
public struct KeySet: Sendable {
    public struct Entry: Sendable {
        public var key: VerificationKey
        public var algorithm: String?
    }

    public var keys: [String: Entry]
    /// Keys without a `kid`, tried when a token names none.
    public var anonymous: [Entry]

    public init(jwks: JSONValue) {
        keys = [:]
        anonymous = []
        for jwk in jwks.objectValue?["keys"]?.arrayValue ?? [] {
            guard let object = jwk.objectValue, let key = VerificationKey(jwk: object) else { continue }
            let entry = Entry(key: key, algorithm: object["alg"]?.stringValue)
            if let kid = object["kid"]?.stringValue { keys[kid] = entry } else { anonymous.append(entry) }
        }
    }
}

/// The settings of one issuer as the verifier needs them.
public struct IssuerPolicy: Sendable {
    public var issuer: String
    public var audiences: [String]
    public var algorithms: [String]
    public var roleClaims: [String]
    public var roleMap: [String: Role]
    public var defaultRole: Role
    public var teamClaim: String
    public var userClaim: String
    public var maximumLifetime: Double
    public var leeway: Double
    public var mfaMethods: [String]
    public var mfaContexts: [String]

    public init(issuer: String, audiences: [String], algorithms: [String] = ["RS256", "ES256", "EdDSA"],
                roleClaims: [String] = ["realm_access.roles", "roles", "groups"], roleMap: [String: Role] = [:], defaultRole: Role = .user,
                teamClaim: String = "team", userClaim: String = "sub", maximumLifetime: Double = 3600, leeway: Double = 30,
                mfaMethods: [String] = ["mfa", "otp", "hwk", "swk"], mfaContexts: [String] = []) {
        self.issuer = issuer
        self.audiences = audiences
        self.algorithms = algorithms
        self.roleClaims = roleClaims
        self.roleMap = roleMap
        self.defaultRole = defaultRole
        self.teamClaim = teamClaim
        self.userClaim = userClaim
        self.maximumLifetime = maximumLifetime
        self.leeway = leeway
        self.mfaMethods = mfaMethods
        self.mfaContexts = mfaContexts
    }

    /// Checks claims (signature already verified) and maps them to a principal.
    public func principal(from claims: JSONObject, now: Double) throws -> Principal {
        guard let expiry = claims["exp"]?.doubleValue else { throw TokenRejection(.missingClaim, "The token has no 'exp' claim.") }
        if now > expiry + leeway { throw TokenRejection(.expired, "The token has expired.") }
        if let notBefore = claims["nbf"]?.doubleValue, now + leeway < notBefore {
            throw TokenRejection(.notYetValid, "The token is not valid yet.")
        }
        let issuedAt = claims["iat"]?.doubleValue
        if let issuedAt, issuedAt > now + leeway { throw TokenRejection(.notYetValid, "The token was issued in the future.") }
        let lifetime = expiry - (issuedAt ?? now)
        if lifetime > maximumLifetime {
            throw TokenRejection(.lifetimeTooLong, "The token's lifetime exceeds the \(Int(maximumLifetime)) seconds allowed.")
        }
        let audience: [String]
        switch claims["aud"] {
        case .string(let value): audience = [value]
        case .array(let values): audience = values.compactMap(\.stringValue)
        default: audience = []
        }
        guard audience.contains(where: audiences.contains) else {
            throw TokenRejection(.wrongAudience, "The token was not issued for this gateway (audience).")
        }
        guard let subject = Self.lookup(userClaim, in: claims).first else {
            throw TokenRejection(.missingClaim, "The token has no '\(userClaim)' claim.")
        }
        let team = Self.lookup(teamClaim, in: claims).first
        var names: [String] = []
        for path in roleClaims { names += Self.lookup(path, in: claims) }
        let mapped = Set(names.compactMap { name in
            roleMap[name] ?? Role(rawValue: name.hasPrefix("portcullis-") ? String(name.dropFirst("portcullis-".count)) : name)
        })
        let role = [Role.admin, .developer, .auditor, .user].first(where: mapped.contains) ?? defaultRole
        var methods: [String] = []
        if case .array(let values) = claims["amr"] { methods = values.compactMap(\.stringValue) }
        if case .string(let value) = claims["amr"] { methods = [value] }
        let contextClass = claims["acr"]?.stringValue
        let multiFactor = methods.contains(where: mfaMethods.contains) || (contextClass.map(mfaContexts.contains) ?? false)
        return Principal(credential: .token(issuer: issuer), userID: subject, teamID: team, role: role, multiFactor: multiFactor)
    }

    /// The string values at a dotted claim path (`realm_access.roles`), flattened.
    static func lookup(_ path: String, in claims: JSONObject) -> [String] {
        var value: JSONValue = .object(claims)
        for component in path.split(separator: ".") {
            guard let next = value.objectValue?[String(component)] else { return [] }
            value = next
        }
        switch value {
        case .string(let text): return [text]
        case .array(let values): return values.compactMap(\.stringValue)
        case .integer(let number): return [String(number)]
        default: return []
        }
    }
}
