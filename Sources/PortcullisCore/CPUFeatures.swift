import Foundation

/// What the CPU offers, read where the operating system says (Linux: the `flags` line of
/// `/proc/cpuinfo`), for code compiled for vector instructions beyond the x86-64 baseline.
public enum CPUFeatures {
    /// The CPU's feature flags (`avx2`, `fma`, `avx512f`, …); empty where they cannot be read.
    public static let flags: Set<String> = {
        #if os(Linux)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init))
        #else
        return []
        #endif
    }()

    /// The instruction sets the built-in embedder is compiled for that this CPU lacks (nil: none lacking).
    public static let missingForEmbedder: String? = {
        #if arch(x86_64) && os(Linux)
        guard !flags.isEmpty else { return nil }
        let missing = ["avx2", "fma"].filter { !flags.contains($0) }
        return missing.isEmpty ? nil : missing.joined(separator: " and ")
        #else
        return nil
        #endif
    }()

    /// Whether the embedder's AVX-512 kernel may run here.
    public static let hasAVX512: Bool = {
        #if arch(x86_64)
        return flags.contains("avx512f")
        #else
        return false
        #endif
    }()

    /// Whether the embedder's bfloat16 kernel may run here (AVX512_BF16: Zen 4, Cooper Lake, Sapphire Rapids and later).
    public static let hasAVX512BF16: Bool = {
        #if arch(x86_64)
        return flags.contains("avx512f") && flags.contains("avx512_bf16")
        #else
        return false
        #endif
    }()
}
