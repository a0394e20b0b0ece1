// LLaVA-NeXT (anyres) against HF transformers v4.45.1's own outputs (shared/fixtures/hf-llava-next-tiny: two
// tiny random models, LLaMA f32 and Mistral GQA bf16, two-image prompts, three images of odd sizes including a
// JPEG; FACTS.md holds the rules). Preprocessing: pixel values bit for bit (from PIL's decode, and from our
// decoders on the files), tile counts, grids and token counts. Model: image features after packing, every
// decoder hidden state, logits within 2e-5 of their scale, 8 greedy tokens with the KV cache, and the whole
// front end (image files in) giving the same logits.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Families.LlavaNext;
using VteKernels.Formats;
using VteKernels.Imaging;
using VteKernels.Models;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Families;

public sealed class LlavaNextFixtureTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => new() { "anyres-basic", "anyres-gqa-bf16" };

    public static TheoryData<string, string> CaseImages => new()
    {
        { "anyres-basic", "img_a_37x61.png" }, { "anyres-basic", "img_b_80x45.png" }, { "anyres-basic", "img_c_24x64.jpg" },
        { "anyres-gqa-bf16", "img_a_37x61.png" }, { "anyres-gqa-bf16", "img_b_80x45.png" }, { "anyres-gqa-bf16", "img_c_24x64.jpg" },
    };

    private static string ModelDir(string name) => Path.Combine(FixturePaths.NextCase(name), "model");

    private static string ImagePath(string file) => Path.Combine(FixturePaths.NextRoot, "images", file);

    private static string Preprocessed(string name, string file) =>
        Path.Combine(FixturePaths.NextCase(name), "preprocessed", Path.GetFileNameWithoutExtension(file));

    private static AnyResPreprocessor Preprocessor(string name)
    {
        var cfg = LlavaConfig.Load(Path.Combine(ModelDir(name), "config.json"));
        return Assert.IsType<AnyResPreprocessor>(cfg.Family.CreatePreprocessor(cfg, Path.Combine(ModelDir(name), "preprocessor_config.json"), padToSquare: false));
    }

    private static RgbImage PilDecode(string file)
    {
        var (data, shape) = NaiveNpy.ReadUInt8(Path.Combine(FixturePaths.NextRoot, "images", Path.GetFileNameWithoutExtension(file) + ".rgb.npy"));
        return new RgbImage(shape[1], shape[0], data);
    }

    private static (int H, int W) Sizes(string dir)
    {
        var p = File.ReadAllText(Path.Combine(dir, "image_sizes.txt")).Trim().Split(',');
        return (int.Parse(p[0], System.Globalization.CultureInfo.InvariantCulture), int.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>The fixture's image as HF's processor made it: pixel_values.npy and image_sizes.txt.</summary>
    private static ImageInput HfPixels(string name, string file)
    {
        var dir = Preprocessed(name, file);
        var px = Npy.ReadFloat32(Path.Combine(dir, "pixel_values.npy"));
        var (h, w) = Sizes(dir);
        return ImageInput.Tiled(px.Data, px.Shape[0], px.Shape[2], h, w);
    }

    /// <summary>The images of the fixture's prompt, in order (prompt.txt's first line).</summary>
    private static string[] PromptImages(string name) =>
        File.ReadAllLines(Path.Combine(FixturePaths.NextCase(name), "prompt.txt"))[0].Split(':')[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);

    [Theory, MemberData(nameof(CaseImages))]
    public void PixelValuesAreBitExactFromPilsDecode(string name, string file)
    {
        var got = Preprocessor(name).Preprocess(PilDecode(file));
        var want = Npy.ReadFloat32(Path.Combine(Preprocessed(name, file), "pixel_values.npy"));
        Assert.Equal(want.Shape[0], got.Tiles);
        Assert.Equal([got.Tiles, 3, got.Height, got.Width], want.Shape);
        int diff = 0;
        for (int i = 0; i < want.Data.Length; i++) if (BitConverter.SingleToInt32Bits(want.Data[i]) != BitConverter.SingleToInt32Bits(got.Pixels[i])) diff++;
        output.WriteLine($"{name} {file}: {got.Tiles} tiles, {diff} of {want.Data.Length} values differ in their bits");
        Assert.Equal(0, diff);
        Assert.Equal(Sizes(Preprocessed(name, file)), got.SourceSize!.Value);
    }

    [Theory, MemberData(nameof(CaseImages))]
    public void PixelValuesAreBitExactFromTheFile(string name, string file)
    {
        // Our decoders are PIL-exact (libjpeg-turbo for the JPEG), so the files themselves give HF's pixels too.
        var decoded = ImageDecoder.Load(ImagePath(file));
        Assert.Equal(PilDecode(file).Pixels, decoded.Pixels);
        var got = Preprocessor(name).Preprocess(decoded);
        Assert.Equal(Npy.ReadFloat32(Path.Combine(Preprocessed(name, file), "pixel_values.npy")).Data, got.Pixels);
    }

    [Theory, MemberData(nameof(CaseImages))]
    public void GeometryAndTokenCountsMatchHf(string name, string file)
    {
        var cfg = LlavaConfig.Load(Path.Combine(ModelDir(name), "config.json"));
        var family = Assert.IsType<LlavaNextFamily>(cfg.Family);
        var dir = Preprocessed(name, file);
        var (h, w) = Sizes(dir);
        using var info = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "info.json")));
        var r = info.RootElement;
        int[] Pair(string key) => [.. r.GetProperty(key).EnumerateArray().Select(e => e.GetInt32())];
        int s = cfg.Vision.ImageSize, p = cfg.Vision.PatchSize, side = s / p;
        var best = AnyRes.BestResolution(h, w, family.Pinpoints);
        Assert.Equal(Pair("best_resolution_hw"), new[] { best.Height, best.Width });
        var (rows, cols) = AnyRes.GridShape(h, w, family.Pinpoints, s);
        Assert.Equal(Pair("grid"), new[] { rows, cols });
        var window = AnyRes.Unpad(h, w, rows * side, cols * side);
        Assert.Equal(Pair("unpadded"), new[] { window.Rows, window.Cols });
        Assert.Equal(r.GetProperty("num_patches").GetInt32(), family.TileCount(cfg, h, w));
        int tokens = int.Parse(File.ReadAllText(Path.Combine(dir, "num_image_tokens.txt")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(tokens, AnyRes.FeatureCount(h, w, family.Pinpoints, s, p));
        Assert.Equal(tokens, AnyRes.ProcessorTokenCount(h, w, family.Pinpoints, s, p));
        Assert.Equal(r.GetProperty("num_image_tokens_model").GetInt32(), family.TokenCount(cfg, HfPixels(name, file)));
    }

    [Theory, MemberData(nameof(Cases))]
    public void ForwardMatchesHfTransformers(string name)
    {
        var dir = FixturePaths.NextCase(name);
        using var model = LlavaModel.Load(Path.Combine(dir, "model"), TestModels.Float32Cpu());
        var cfg = model.Config;
        var ids = FixturePaths.ReadIds(Path.Combine(dir, "input_ids.txt"));
        var images = PromptImages(name).Select(f => HfPixels(name, f)).ToList();
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true, OutputHiddenStates = true, OutputVisionStates = true });

        const double rel = 2e-5;
        var intermediates = Path.Combine(dir, "intermediates");
        for (int i = 0; i < images.Count; i++)
        {
            // The selected CLIP hidden state (class token included, every tile) and the packed features.
            var vision = Npy.ReadFloat32(Path.Combine(intermediates, $"vision_feature_{i}.npy"));
            Assert.Equal(cfg.VisionLayersNeeded + 1, r.VisionHiddenStates![i].Count);
            AssertClose($"{name} vision_feature_{i}", r.VisionHiddenStates[i][^1], vision.Data, rel);
            AssertClose($"{name} image_features_{i}", r.ImageFeatures![i], Npy.ReadFloat32(Path.Combine(intermediates, $"image_features_{i}.npy")).Data, rel);
        }
        for (int l = 0; l < r.HiddenStates!.Count; l++)
            AssertClose($"{name} text_hidden_{l:D2}", r.HiddenStates[l], Npy.ReadFloat32(Path.Combine(intermediates, $"text_hidden_{l:D2}.npy")).Data, rel);
        AssertClose($"{name} logits", r.Logits.Values, Npy.ReadFloat32(Path.Combine(dir, "logits.npy")).Data, rel);
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task GreedyDecodingWithCacheMatchesHf(string name)
    {
        var dir = FixturePaths.NextCase(name);
        using var model = LlavaModel.Load(Path.Combine(dir, "model"), TestModels.Float32Cpu());
        var ids = FixturePaths.ReadIds(Path.Combine(dir, "input_ids.txt"));
        var images = PromptImages(name).Select(f => HfPixels(name, f)).ToList();
        using var session = model.CreateSession();
        // HF's fixture generates 8 tokens with no EOS stop.
        var got = await Generator.GenerateAsync(session, new PromptInput(ids, images), new GenerationOptions { MaxNewTokens = 8, StopTokens = [] },
            cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(FixturePaths.ReadIds(Path.Combine(dir, "greedy8.txt")), got.Ids);
    }

    [Theory, MemberData(nameof(Cases))]
    public void ImageFilesThroughTheFrontEndGiveHfsLogits(string name)
    {
        // The model folder's own preprocessing, our decoders, and prompt expansion by the family's count.
        var dir = FixturePaths.NextCase(name);
        var modelDir = Path.Combine(dir, "model");
        using var model = LlavaModel.Load(modelDir, TestModels.Float32Cpu());
        var cfg = model.Config;
        var pre = MultimodalPrompt.PreprocessorFor(modelDir, cfg, pad: false);
        var images = PromptImages(name).Select(f => MultimodalPrompt.LoadImage(ImagePath(f), pre)).ToList();
        var want = FixturePaths.ReadIds(Path.Combine(dir, "input_ids.txt"));
        // Rebuild the ids from prompt.txt's text pieces: one placeholder per image, expanded by the family.
        var compact = new List<int>();
        foreach (var id in want)
            if (id != cfg.ImageTokenIndex || compact.Count == 0 || compact[^1] != cfg.ImageTokenIndex) compact.Add(id);
        var expanded = MultimodalPrompt.Expand(cfg, [.. compact], images);
        Assert.Equal(want, expanded.TokenIds);
        using var session = model.CreateSession();
        var r = session.Prefill(expanded, new PrefillOptions { AllLogits = true });
        AssertClose($"{name} logits from image files", r.Logits.Values, Npy.ReadFloat32(Path.Combine(dir, "logits.npy")).Data, 2e-5);
    }

    private void AssertClose(string what, ReadOnlySpan<float> got, float[] want, double rel) =>
        Tolerance.AssertCloseToScale(got, want.Select(x => (double)x).ToArray(), rel, what, output);
}
