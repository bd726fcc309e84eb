import Foundation
import PortcullisCore

/// An image part of a request, as the image guard and the image moderation adapters read it.
public struct GuardImage: Sendable, Equatable {
    /// The message it is in.
    public var messageIndex: Int
    /// Its place among the request's images (0-based), for findings.
    public var position: Int
    /// A `data:` URL (inline bytes) or a remote URL.
    public var url: String

    public init(messageIndex: Int, position: Int, url: String) {
        self.messageIndex = messageIndex
        self.position = position
        self.url = url
    }

    /// The bytes and declared media type of an inline image (`data:<type>;base64,<bytes>`); nil
    /// for a remote URL or a data URL that is not base64.
    public var inline: (mediaType: String, base64: Substring)? {
        guard url.hasPrefix("data:"), let comma = url.firstIndex(of: ",") else { return nil }
        let header = url[url.index(url.startIndex, offsetBy: 5)..<comma]
        let parameters = header.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard parameters.last == "base64" else { return nil }
        return (parameters.first ?? "", url[url.index(after: comma)...])
    }
}

/// The image formats the image guard recognises by their first bytes.
public enum ImageFormat: String, Sendable, CaseIterable {
    case png, jpeg, gif, webp

    /// Its media type (`image/png`, …).
    public var mediaType: String { "image/" + rawValue }

    /// The format a declared media type names (`image/jpg` is JPEG); nil for any other type.
    public init?(mediaType: String) {
        switch mediaType.lowercased() {
        case "image/png": self = .png
        case "image/jpeg", "image/jpg": self = .jpeg
        case "image/gif": self = .gif
        case "image/webp": self = .webp
        default: return nil
        }
    }

    /// The format `bytes` are in, by their signature; nil when they are none of these.
    public static func sniff(_ bytes: [UInt8]) -> ImageFormat? {
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if bytes.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        if bytes.starts(with: Array("GIF87a".utf8)) || bytes.starts(with: Array("GIF89a".utf8)) { return .gif }
        if bytes.count >= 12, bytes.starts(with: Array("RIFF".utf8)), Array(bytes[8..<12]) == Array("WEBP".utf8) { return .webp }
        return nil
    }

    /// Width and height as the header declares them (what a decoder would allocate for), or nil
    /// when the header cannot be read.
    public func dimensions(of bytes: [UInt8]) -> (width: Int, height: Int)? {
        func big16(_ at: Int) -> Int? { at + 1 < bytes.count ? Int(bytes[at]) << 8 | Int(bytes[at + 1]) : nil }
        func little16(_ at: Int) -> Int? { at + 1 < bytes.count ? Int(bytes[at]) | Int(bytes[at + 1]) << 8 : nil }
        func big32(_ at: Int) -> Int? { at + 3 < bytes.count ? (big16(at)! << 16) | big16(at + 2)! : nil }
        func little24(_ at: Int) -> Int? { at + 2 < bytes.count ? Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 : nil }
        switch self {
        case .png:
            // The first chunk is IHDR: width and height, 4 bytes each, big-endian.
            guard bytes.count >= 24, Array(bytes[12..<16]) == Array("IHDR".utf8), let width = big32(16), let height = big32(20) else { return nil }
            return (width, height)
        case .gif:
            guard let width = little16(6), let height = little16(8) else { return nil }
            return (width, height)
        case .webp:
            guard bytes.count >= 30 else { return nil }
            switch String(decoding: bytes[12..<16], as: UTF8.self) {
            case "VP8 ": return little16(26).flatMap { width in little16(28).map { (width & 0x3FFF, $0 & 0x3FFF) } }
            case "VP8L":
                let bits = Int(bytes[21]) | Int(bytes[22]) << 8 | Int(bytes[23]) << 16 | Int(bytes[24]) << 24
                return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            case "VP8X": return little24(24).flatMap { width in little24(27).map { (width + 1, $0 + 1) } }
            default: return nil
            }
        case .jpeg:
            // Markers from the start: the first start-of-frame gives the size; entropy-coded data before it is unreadable.
            var index = 2
            while index + 3 < bytes.count {
                guard bytes[index] == 0xFF else { return nil }
                let marker = bytes[index + 1]
                if marker == 0xFF { index += 1; continue }   // fill byte
                if marker == 0x01 || (0xD0...0xD8).contains(marker) { index += 2; continue }   // markers without a length
                guard let length = big16(index + 2), length >= 2 else { return nil }
                if (0xC0...0xCF).contains(marker) && ![0xC4, 0xC8, 0xCC].contains(marker) {
                    guard let height = big16(index + 5), let width = big16(index + 7) else { return nil }
                    return (width, height)
                }
                if marker == 0xDA || marker == 0xD9 { return nil }   // scan data or the end before any frame
                index += 2 + length
            }
            return nil
        }
    }
}

/// What the image guard allows (`guardrails.images`).
public struct ImageLimits: Sendable, Equatable {
    /// Bytes of one inline image, decoded. Default 20 MiB.
    public var maximumBytes = 20 * 1024 * 1024
    /// Pixels (width × height) an image may declare: past it the image is a decompression bomb. Default 40 million.
    public var maximumPixels = 40_000_000
    /// Pixels on either side. Default 16,384.
    public var maximumSide = 16_384
    /// Formats accepted. Default PNG, JPEG, GIF and WebP.
    public var formats: Set<ImageFormat> = Set(ImageFormat.allCases)
    /// Hosts a remote image may come from: `*` any, `example.com` that host, `*.example.com` its
    /// subdomains. Default `*`. Only `https` URLs are accepted.
    public var allowedHosts: [String] = ["*"]

    public init() {}

    /// Whether a remote image may come from `host`.
    public func allows(host: String) -> Bool {
        let host = host.lowercased()
        return allowedHosts.contains { pattern in
            let pattern = pattern.lowercased()
            if pattern == "*" { return true }
            if pattern.hasPrefix("*.") { return host.hasSuffix(pattern.dropFirst(1)) && host.count > pattern.count - 1 }
            return host == pattern
        }
    }
}

/// The local image checks (input guard `images`, in the validation tier): an inline image's
/// declared type against its bytes, its size, its declared dimensions (a small file declaring a
/// huge canvas is a decompression bomb: critical), and a remote image's scheme and host. An
/// image larger than the limit is an `invalid_input` finding, which always blocks; the others
/// are `image` findings at high risk (critical for a bomb), which the default policy blocks.
public struct ImageGuard: InputGuard {
    public let name = "images"
    public let tier = GuardTier.validation
    public let limits: ImageLimits

    public init(limits: ImageLimits = ImageLimits()) {
        self.limits = limits
    }

    public func inspect(_ input: GuardInput) async -> [GuardFinding] {
        input.images.flatMap(findings)
    }

    /// What is wrong with one image (empty: nothing).
    public func findings(_ image: GuardImage) -> [GuardFinding] {
        let which = "image \(image.position + 1) (message \(image.messageIndex))"
        func finding(_ reason: String, risk: RiskLevel = .high, category: GuardCategory = .image) -> [GuardFinding] {
            [GuardFinding(guardName: name, category: category, risk: risk, score: 1, reason: "\(which): \(reason)")]
        }
        guard image.url.hasPrefix("data:") else { return remote(image.url, finding: { finding($0) }) }
        guard let inline = image.inline else { return finding("a data URL must be base64-encoded") }
        // The decoded size from the encoded length, before anything is decoded.
        let encodedLength = inline.base64.utf8.count
        if encodedLength / 4 * 3 > limits.maximumBytes {
            return finding("larger than \(limits.maximumBytes) bytes", risk: .high, category: .invalidInput)
        }
        guard let data = Data(base64Encoded: String(inline.base64), options: .ignoreUnknownCharacters), !data.isEmpty else {
            return finding("the data URL's base64 does not decode")
        }
        let bytes = Array(data.prefix(64 * 1024))
        guard let format = ImageFormat.sniff(bytes) else {
            return finding("the bytes are not PNG, JPEG, GIF or WebP (declared \(inline.mediaType.isEmpty ? "nothing" : inline.mediaType))")
        }
        guard let declared = ImageFormat(mediaType: inline.mediaType) else {
            return finding("declared type \(inline.mediaType.isEmpty ? "missing" : inline.mediaType) is not an image type the gateway accepts")
        }
        if declared != format { return finding("declared \(declared.mediaType), but the bytes are \(format.mediaType)") }
        guard limits.formats.contains(format) else { return finding("\(format.mediaType) is not allowed") }
        guard let size = format.dimensions(of: bytes), size.width > 0, size.height > 0 else {
            return finding("its \(format.rawValue) header does not give its dimensions")
        }
        if size.width * size.height > limits.maximumPixels {
            return finding("declares \(size.width)×\(size.height) pixels in \(data.count) bytes, more than \(limits.maximumPixels) (a decompression bomb)",
                           risk: .critical)
        }
        if max(size.width, size.height) > limits.maximumSide {
            return finding("\(size.width)×\(size.height) exceeds \(limits.maximumSide) pixels on a side")
        }
        return []
    }

    private func remote(_ url: String, finding: (String) -> [GuardFinding]) -> [GuardFinding] {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), let host = components.host, !host.isEmpty else {
            return finding("not a data URL nor a URL with a host")
        }
        guard scheme == "https" else { return finding("a remote image must be https (got \(scheme))") }
        guard limits.allows(host: host) else { return finding("its host is not among guardrails.images.allowed_hosts") }
        return []
    }
}
