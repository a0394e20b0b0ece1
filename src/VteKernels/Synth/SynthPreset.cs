// Shapes of the random-weight models `vte synth` writes. "tiny" is small enough for tests and the
// built-in demo (a forward pass takes milliseconds); the LLaVA-1.5 presets match the real models' shapes
// (CLIP ViT-L/14-336 + Vicuna-7B/13B) so benchmarks see real tensor sizes without downloading anything.
// The LLaVA-NeXT presets (llava_next, anyres): "next-tiny" is tiny's shape with 112px tiles at llava-v1.6's
// five pinpoints scaled by 1/3; llava-v1.6-vicuna-7b and -mistral-7b are the real models' shapes.
using VteKernels.Families.LlavaNext;
using VteKernels.Models;

namespace VteKernels.Synth;

/// <summary>A named model shape for synthetic checkpoints.</summary>
public sealed record SynthPreset(string Name, LlavaConfig Config)
{
    /// <summary>The preset names, in the order the CLI lists them.</summary>
    public static IReadOnlyList<string> Names { get; } = ["tiny", "llava-1.5-7b", "llava-1.5-13b", "next-tiny", "llava-v1.6-vicuna-7b", "llava-v1.6-mistral-7b"];

    private static readonly VisionConfig ClipL336 = new(1024, 4096, 24, 16, 336, 14, 3, 1e-5f, "quick_gelu");

    /// <summary>Looks a preset up by name.</summary>
    /// <exception cref="ArgumentException">No preset has that name.</exception>
    public static SynthPreset Get(string name) => name switch
    {
        // 112 px / 14 = 8x8 patches = 64 image tokens; GQA (4 query heads over 2 KV heads) so the
        // grouped path runs in every test; vocabulary 512 with <image> = 510 and <pad> = 511.
        "tiny" => new(name, new LlavaConfig(
            new VisionConfig(64, 128, 3, 4, 112, 14, 3, 1e-5f, "quick_gelu"),
            new TextConfig(128, 352, 4, 4, 2, 32, 512, 1e-5f, 10000f, 1024, "silu", false, 1, 2),
            ImageTokenIndex: 510, VisionFeatureLayers: [-2], VisionFeatureSelectStrategy: "default",
            ProjectorHiddenAct: "gelu", ProjectorBias: true, ImageSeqLength: 64)),
        "llava-1.5-7b" => new(name, new LlavaConfig(
            ClipL336,
            new TextConfig(4096, 11008, 32, 32, 32, 128, 32064, 1e-5f, 10000f, 4096, "silu", false, 1, 2),
            32000, [-2], "default", "gelu", true, 576)),
        "llava-1.5-13b" => new(name, new LlavaConfig(
            ClipL336,
            new TextConfig(5120, 13824, 40, 40, 40, 128, 32064, 1e-5f, 10000f, 4096, "silu", false, 1, 2),
            32000, [-2], "default", "gelu", true, 576)),
        "next-tiny" => new(name, Get("tiny").Config with
        {
            Family = new LlavaNextFamily([new(112, 224), new(224, 112), new(224, 224), new(336, 112), new(112, 336)]),
        }),
        "llava-v1.6-vicuna-7b" => new(name, Get("llava-1.5-7b").Config with { Family = new LlavaNextFamily(LlavaNextFamily.DefaultPinpoints) }),
        "llava-v1.6-mistral-7b" => new(name, Get("llava-1.5-7b").Config with
        {
            Family = new LlavaNextFamily(LlavaNextFamily.DefaultPinpoints),
            Text = new TextConfig(4096, 14336, 32, 32, 8, 128, 32064, 1e-5f, 1e6f, 32768, "silu", false, 1, 2) { ModelType = "mistral" },
        }),
        _ => throw new ArgumentException($"unknown preset '{name}' (expected one of: {string.Join(", ", Names)})", nameof(name)),
    };
}
