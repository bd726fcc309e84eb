import Foundation

/// A byte-pair-encoding token counter over a vocabulary in tiktoken's file format (one token
/// per line: its bytes in base64, a space, its rank), e.g. `cl100k_base.tiktoken`. Text is cut
/// into pieces by the cl100k pre-tokenisation pattern; a piece in the vocabulary is one token,
/// any other is merged pair by pair, lowest rank first, from its single bytes.
///
/// When a policy's tokenizer is configured, the validation guard counts with it instead of
/// the estimate (`TokenEstimate`).
public struct BPETokenizer: Sendable {
    private let ranks: [[UInt8]: Int]
    private let pattern: NSRegularExpression

    /// cl100k's pre-tokenisation: contractions, letter runs with one leading non-letter,
    /// digit runs of up to three, punctuation runs, newlines, and whitespace.
    public static let cl100kPattern =
        #"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"#

    public init(tiktoken contents: String, pattern: String = BPETokenizer.cl100kPattern) throws(BPEVocabularyError) {
        var ranks: [[UInt8]: Int] = [:]
        var lineNumber = 0
        for line in contents.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.isEmpty { continue }
            let parts = line.split(separator: " ")
            guard parts.count == 2, let bytes = Data(base64Encoded: String(parts[0])), !bytes.isEmpty, let rank = Int(parts[1]), rank >= 0 else {
                throw BPEVocabularyError(line: lineNumber, "expected a base64 token, a space and a rank")
            }
            ranks[Array(bytes)] = rank
        }
        guard !ranks.isEmpty else { throw BPEVocabularyError(line: 0, "the vocabulary is empty") }
        for byte in 0...255 where ranks[[UInt8(byte)]] == nil {
            throw BPEVocabularyError(line: 0, "the vocabulary lacks the single byte \(byte): not every text could be encoded")
        }
        self.ranks = ranks
        do {
            self.pattern = try NSRegularExpression(pattern: pattern)
        } catch {
            throw BPEVocabularyError(line: 0, "the pre-tokenisation pattern does not compile")
        }
    }

    /// Reads a vocabulary file.
    public init(path: String) throws(BPEVocabularyError) {
        guard let data = FileManager.default.contents(atPath: path) else { throw BPEVocabularyError(line: 0, "cannot read \(path)") }
        try self.init(tiktoken: String(decoding: data, as: UTF8.self))
    }

    /// The number of tokens `text` encodes to.
    public func count(_ text: String) -> Int {
        var total = 0
        let range = NSRange(text.startIndex..., in: text)
        pattern.enumerateMatches(in: text, range: range) { match, _, _ in
            guard let match, let pieceRange = Range(match.range, in: text) else { return }
            total += count(piece: Array(text[pieceRange].utf8))
        }
        return total
    }

    /// Pieces longer than this (a run of letters without a space) are counted in slices of it:
    /// merging is quadratic in the piece's length, and a hostile 100,000-letter word must not
    /// stall the guard. Tokens do not span slices, so the count can only come out higher.
    static let longestPiece = 256

    /// The tokens of one piece: whole when the vocabulary has it, else merged from its bytes.
    func count(piece: [UInt8]) -> Int {
        if piece.isEmpty { return 0 }
        if ranks[piece] != nil { return 1 }
        if piece.count > Self.longestPiece {
            return stride(from: 0, to: piece.count, by: Self.longestPiece).reduce(0) { total, start in
                total + count(piece: Array(piece[start..<min(start + Self.longestPiece, piece.count)]))
            }
        }
        // Boundaries of the current parts; merge the adjacent pair whose join has the lowest rank.
        var bounds = Array(0...piece.count)
        while bounds.count > 2 {
            var best: (rank: Int, index: Int)?
            for index in 0..<(bounds.count - 2) {
                if let rank = ranks[Array(piece[bounds[index]..<bounds[index + 2]])], rank < best?.rank ?? Int.max {
                    best = (rank, index)
                }
            }
            guard let best else { break }
            bounds.remove(at: best.index + 1)
        }
        return bounds.count - 1
    }
}

public struct BPEVocabularyError: Error, CustomStringConvertible {
    public var line: Int
    public var message: String

    init(line: Int, _ message: String) {
        self.line = line
        self.message = message
    }

    public var description: String { line > 0 ? "line \(line): \(message)" : message }
}
