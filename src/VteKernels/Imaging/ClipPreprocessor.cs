// CLIP image preprocessing exactly as HF transformers' CLIPImageProcessor (the PIL-based "slow" processor)
// computes it, optionally preceded by LLaVA-1.5's expand2square padding:
//   0. (PadToSquare) paste the image centred on a square canvas of the longer side filled with PadColor;
//      LLaVA-1.5 uses tuple(int(x * 255) for x in image_mean) = (122, 116, 104) for the CLIP mean.
//   1. resize: shortest edge to S, the other to int(S * long / short) (get_resize_output_image_size with
//      default_to_square=False), or to an exact height x width; through PIL (PilResize), back to uint8;
//   2. center crop: top = (H - h) // 2, left = (W - w) // 2 (floor division); a side shorter than the crop
//      is zero-padded with ceil((h - H) / 2) before, as transformers.image_transforms.center_crop does;
//   3. rescale: float32(float64(v) * rescale_factor);
//   4. normalize: (x - float32(mean)) / float32(std) in float32;
//   then channels first: 3 x H x W, ready for ImageInput.
// do_convert_rgb is implied: decoders always produce RGB.
// Bounds: ClipOptions.Validate (run when a preprocessor_config.json is read, and before every use) names
// each check it makes: sizes 1..MaxSide, finite rescale factor, mean and std of 3 finite values, std not
// zero, known filter, pad colour of 3 values. At preprocessing time the resized image may hold at most
// MaxResizedPixels and the resampling tables MaxResampleTaps entries (an image 10^8 pixels wide shrunk to
// one pixel would otherwise ask for 2.4 GB of filter weights): InvalidInputException beyond.
using System.Text.Json;
using VteKernels.Engine;

namespace VteKernels.Imaging;

/// <summary>Options of <see cref="ClipPreprocessor"/>: the fields of an HF CLIPImageProcessor config plus LLaVA's pad-to-square.</summary>
public sealed record ClipOptions
{
    /// <summary>OpenAI CLIP's per-channel mean (OPENAI_CLIP_MEAN).</summary>
    public static IReadOnlyList<double> ClipMean { get; } = [0.48145466, 0.4578275, 0.40821073];

    /// <summary>OpenAI CLIP's per-channel standard deviation (OPENAI_CLIP_STD).</summary>
    public static IReadOnlyList<double> ClipStd { get; } = [0.26862954, 0.26130258, 0.27577711];

    /// <summary>Resize at all.</summary>
    public bool DoResize { get; init; } = true;

    /// <summary>Target of the shorter side (aspect kept); null to resize to <see cref="ResizeHeight"/> x <see cref="ResizeWidth"/>.</summary>
    public int? ShortestEdge { get; init; } = 336;

    /// <summary>Exact resize height, used when <see cref="ShortestEdge"/> is null.</summary>
    public int? ResizeHeight { get; init; }

    /// <summary>Exact resize width, used when <see cref="ShortestEdge"/> is null.</summary>
    public int? ResizeWidth { get; init; }

    /// <summary>Resampling filter (HF "resample"; CLIP uses 3, bicubic).</summary>
    public ResampleFilter Resample { get; init; } = ResampleFilter.Bicubic;

    /// <summary>Center crop at all.</summary>
    public bool DoCenterCrop { get; init; } = true;

    /// <summary>Crop height.</summary>
    public int CropHeight { get; init; } = 336;

    /// <summary>Crop width.</summary>
    public int CropWidth { get; init; } = 336;

    /// <summary>Multiply by <see cref="RescaleFactor"/>.</summary>
    public bool DoRescale { get; init; } = true;

    /// <summary>Rescale factor, applied in float64 as HF does (1/255 by default).</summary>
    public double RescaleFactor { get; init; } = 1.0 / 255;

    /// <summary>Subtract the mean and divide by the standard deviation.</summary>
    public bool DoNormalize { get; init; } = true;

    /// <summary>Per-channel mean (3 values, as written in the config; used as float32).</summary>
    public IReadOnlyList<double> ImageMean { get; init; } = ClipMean;

    /// <summary>Per-channel standard deviation (3 values; used as float32).</summary>
    public IReadOnlyList<double> ImageStd { get; init; } = ClipStd;

    /// <summary>LLaVA-1.5's expand2square before everything else.</summary>
    public bool PadToSquare { get; init; }

    /// <summary>Canvas colour for <see cref="PadToSquare"/> (R, G, B); null for int(mean * 255) per channel.</summary>
    public IReadOnlyList<byte>? PadColor { get; init; }

    /// <summary>CLIP ViT-L/14-336 as llava-hf ships it: shortest edge 336, bicubic, crop 336, CLIP mean/std.</summary>
    public static ClipOptions Clip336 { get; } = new();

    /// <summary>Largest resize or crop side accepted (real vision processors use at most a few thousand).</summary>
    public const int MaxSide = 4096;

    /// <summary>Largest image a resize may produce, in pixels (64 Mi: 192 MiB of RGB).</summary>
    public const long MaxResizedPixels = 64L << 20;

    /// <summary>
    /// Checks every field: each size (shortest edge, resize height and width, crop height and width) is 1..<see cref="MaxSide"/>,
    /// the rescale factor is finite, mean and std hold 3 finite values, std has no zero (as float32) when normalizing,
    /// the filter is one of PIL's six, and a pad colour holds 3 values.
    /// </summary>
    /// <exception cref="ArgumentException">A check fails; the message names the field and the value.</exception>
    public void Validate()
    {
        static void Side(string name, int? v)
        {
            if (v is { } n && (n < 1 || n > MaxSide)) throw new ArgumentException($"{name} {n} is outside 1..{MaxSide}");
        }
        if (DoResize)
        {
            if (ShortestEdge is int se) Side("ShortestEdge", se);
            else if (ResizeHeight is null || ResizeWidth is null)
                throw new ArgumentException("ResizeHeight and ResizeWidth must both be set when ShortestEdge is null");
            else
            {
                Side("ResizeHeight", ResizeHeight);
                Side("ResizeWidth", ResizeWidth);
            }
            if (Resample is < ResampleFilter.Nearest or > ResampleFilter.Hamming) throw new ArgumentException($"unknown resampling filter {(int)Resample}");
        }
        if (DoCenterCrop)
        {
            Side("CropHeight", CropHeight);
            Side("CropWidth", CropWidth);
        }
        if (DoRescale && !double.IsFinite(RescaleFactor)) throw new ArgumentException($"RescaleFactor {RescaleFactor} is not finite");
        if (ImageMean.Count != 3 || ImageStd.Count != 3) throw new ArgumentException("ImageMean and ImageStd must hold 3 values each");
        if (DoNormalize)
        {
            if (ImageMean.Any(v => !float.IsFinite((float)v))) throw new ArgumentException("ImageMean has a value that is not finite in float32");
            if (ImageStd.Any(v => !float.IsFinite((float)v))) throw new ArgumentException("ImageStd has a value that is not finite in float32");
            if (ImageStd.Any(v => (float)v == 0f)) throw new ArgumentException("ImageStd has a zero");
        }
        if (PadColor is { Count: not 3 }) throw new ArgumentException("PadColor must hold 3 values");
        if (PadToSquare && PadColor is null && ImageMean.Any(v => !(v * 255 is >= 0 and < 256)))
            throw new ArgumentException("PadToSquare without a PadColor needs ImageMean values in [0, 1) (the canvas is int(mean * 255))");
    }

    /// <summary>The colour <see cref="PadToSquare"/> fills with.</summary>
    public (byte R, byte G, byte B) EffectivePadColor =>
        PadColor is { } c ? (c[0], c[1], c[2]) : ((byte)(int)(ImageMean[0] * 255), (byte)(int)(ImageMean[1] * 255), (byte)(int)(ImageMean[2] * 255));

    /// <summary>
    /// Reads an HF preprocessor_config.json. Missing keys take CLIPImageProcessor's defaults (size 224, crop 224,
    /// bicubic, rescale 1/255, CLIP mean/std). <c>size</c> is {"shortest_edge": N}, {"height": H, "width": W} or
    /// an int (shortest edge); <c>crop_size</c> is an int or {"height", "width"}.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="ModelFormatException">The file is not valid JSON, a value has the wrong type, or the options fail <see cref="Validate"/>.</exception>
    public static ClipOptions FromPreprocessorConfig(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"preprocessor config '{path}' does not exist", path);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new ModelFormatException(path, null, $"not valid JSON: {e.Message}", e); }
        catch (IOException e) when (e is not FileNotFoundException) { throw new ModelFormatException(path, null, $"cannot read: {e.Message}", e); }
        using (doc)
        {
            var r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, null, "the top level is not a JSON object");
            ModelFormatException Bad(string key, string want) => new(path, null, $"'{key}' must be {want}");

            bool Bool(string key, bool dflt)
            {
                if (!r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return dflt;
                return v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Bad(key, "true or false") };
            }
            int Positive(JsonElement v, string key)
            {
                if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n < 1) throw Bad(key, "a positive integer");
                return n;
            }
            IReadOnlyList<double> Triple(string key, IReadOnlyList<double> dflt)
            {
                if (!r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return dflt;
                static bool Number(JsonElement e) => e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out double d) && double.IsFinite(d);
                if (Number(v)) return [v.GetDouble(), v.GetDouble(), v.GetDouble()];
                if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() != 3 || v.EnumerateArray().Any(e => !Number(e)))
                    throw Bad(key, "a number or a list of 3 numbers");
                return v.EnumerateArray().Select(e => e.GetDouble()).ToArray();
            }

            var o = new ClipOptions
            {
                DoResize = Bool("do_resize", true),
                DoCenterCrop = Bool("do_center_crop", true),
                DoRescale = Bool("do_rescale", true),
                DoNormalize = Bool("do_normalize", true),
                ImageMean = Triple("image_mean", ClipMean),
                ImageStd = Triple("image_std", ClipStd),
                ShortestEdge = 224,
                CropHeight = 224,
                CropWidth = 224,
            };
            Bool("do_convert_rgb", true); // type-checked only: decoded images are always RGB
            if (r.TryGetProperty("size", out var size) && size.ValueKind != JsonValueKind.Null)
            {
                if (size.ValueKind == JsonValueKind.Number) o = o with { ShortestEdge = Positive(size, "size") };
                else if (size.ValueKind == JsonValueKind.Object && size.TryGetProperty("shortest_edge", out var se))
                {
                    if (size.TryGetProperty("longest_edge", out _)) throw Bad("size", "{\"shortest_edge\": N} without \"longest_edge\" (not supported)");
                    o = o with { ShortestEdge = Positive(se, "size.shortest_edge") };
                }
                else if (size.ValueKind == JsonValueKind.Object && size.TryGetProperty("height", out var sh) && size.TryGetProperty("width", out var sw))
                    o = o with { ShortestEdge = null, ResizeHeight = Positive(sh, "size.height"), ResizeWidth = Positive(sw, "size.width") };
                else throw Bad("size", "an integer, {\"shortest_edge\": N} or {\"height\": H, \"width\": W}");
            }
            if (r.TryGetProperty("crop_size", out var crop) && crop.ValueKind != JsonValueKind.Null)
            {
                if (crop.ValueKind == JsonValueKind.Number)
                {
                    int n = Positive(crop, "crop_size");
                    o = o with { CropHeight = n, CropWidth = n };
                }
                else if (crop.ValueKind == JsonValueKind.Object && crop.TryGetProperty("height", out var ch) && crop.TryGetProperty("width", out var cw))
                    o = o with { CropHeight = Positive(ch, "crop_size.height"), CropWidth = Positive(cw, "crop_size.width") };
                else throw Bad("crop_size", "an integer or {\"height\": H, \"width\": W}");
            }
            if (r.TryGetProperty("resample", out var rs) && rs.ValueKind != JsonValueKind.Null)
            {
                if (rs.ValueKind != JsonValueKind.Number || !rs.TryGetInt32(out int code) || code is < 0 or > 5)
                    throw Bad("resample", "a PIL filter code 0..5");
                o = o with { Resample = (ResampleFilter)code };
            }
            if (r.TryGetProperty("rescale_factor", out var rf) && rf.ValueKind != JsonValueKind.Null)
            {
                if (rf.ValueKind != JsonValueKind.Number || !rf.TryGetDouble(out double factor) || !double.IsFinite(factor)) throw Bad("rescale_factor", "a finite number");
                o = o with { RescaleFactor = factor };
            }
            try
            {
                o.Validate();
            }
            catch (ArgumentException e)
            {
                throw new ModelFormatException(path, null, e.Message, e);
            }
            return o;
        }
    }
}

/// <summary>Turns a decoded image into the float32 3 x H x W tensor a CLIP vision tower takes.</summary>
public static class ClipPreprocessor
{
    /// <summary>Output height and width for an input of <paramref name="width"/> x <paramref name="height"/>.</summary>
    /// <exception cref="ArgumentException">The options fail <see cref="ClipOptions.Validate"/>.</exception>
    /// <exception cref="InvalidInputException">The resized image would exceed <see cref="ClipOptions.MaxResizedPixels"/>.</exception>
    public static (int Height, int Width) OutputSize(int width, int height, ClipOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        o.Validate();
        if (o.PadToSquare) width = height = Math.Max(width, height);
        var (h, w) = o.DoResize ? ResizeSize(width, height, o) : (height, width);
        return o.DoCenterCrop ? (o.CropHeight, o.CropWidth) : (h, w);
    }

    /// <summary>
    /// Effectively computes HF CLIPImageProcessor.preprocess(image) (after expand2square when
    /// <see cref="ClipOptions.PadToSquare"/>): 3 x H x W float32, channels first.
    /// </summary>
    /// <exception cref="ArgumentException">The options fail <see cref="ClipOptions.Validate"/>.</exception>
    /// <exception cref="InvalidInputException">The image resized as the options say would exceed <see cref="ClipOptions.MaxResizedPixels"/>,
    /// or its resampling tables <see cref="PilResize.MaxTaps"/> entries (an absurd aspect ratio or size).</exception>
    public static float[] Preprocess(RgbImage image, ClipOptions o)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(o);
        o.Validate();
        var img = o.PadToSquare ? ExpandToSquare(image, o.EffectivePadColor) : image;
        if (o.DoResize)
        {
            var (h, w) = ResizeSize(img.Width, img.Height, o);
            img = PilResize.Resize(img, w, h, o.Resample);
        }
        int oh = img.Height, ow = img.Width, top = 0, left = 0;
        if (o.DoCenterCrop) (oh, ow, top, left) = (o.CropHeight, o.CropWidth, FloorDiv(img.Height - o.CropHeight, 2), FloorDiv(img.Width - o.CropWidth, 2));

        Span<float> mean = stackalloc float[3], std = stackalloc float[3];
        for (int c = 0; c < 3; c++)
        {
            mean[c] = (float)o.ImageMean[c];
            std[c] = (float)o.ImageStd[c];
        }
        // The value of a zero-padded pixel (center crop larger than the image) and of every byte value.
        Span<float> lut = stackalloc float[3 * 256];
        for (int c = 0; c < 3; c++)
            for (int v = 0; v < 256; v++)
            {
                float x = o.DoRescale ? (float)(v * o.RescaleFactor) : v;
                if (o.DoNormalize) x = (x - mean[c]) / std[c];
                lut[c * 256 + v] = x;
            }

        var output = new float[3L * oh * ow];
        var px = img.Pixels;
        for (int y = 0; y < oh; y++)
        {
            int sy = y + top;
            for (int x = 0; x < ow; x++)
            {
                int sx = x + left;
                int i = y * ow + x;
                if ((uint)sy < (uint)img.Height && (uint)sx < (uint)img.Width)
                {
                    int p = (sy * img.Width + sx) * 3;
                    output[i] = lut[px[p]];
                    output[oh * ow + i] = lut[256 + px[p + 1]];
                    output[2 * oh * ow + i] = lut[512 + px[p + 2]];
                }
                else
                {
                    output[i] = lut[0];
                    output[oh * ow + i] = lut[256];
                    output[2 * oh * ow + i] = lut[512];
                }
            }
        }
        return output;
    }

    /// <summary><see cref="Preprocess"/> wrapped as the engine's image input.</summary>
    public static ImageInput ToImageInput(RgbImage image, ClipOptions o)
    {
        var (h, w) = OutputSize(image.Width, image.Height, o);
        return new ImageInput(Preprocess(image, o), 3, h, w);
    }

    /// <summary>LLaVA's expand2square: the image pasted centred ((long - short) // 2) on a square canvas of <paramref name="color"/>.</summary>
    public static RgbImage ExpandToSquare(RgbImage image, (byte R, byte G, byte B) color)
    {
        ArgumentNullException.ThrowIfNull(image);
        int w = image.Width, h = image.Height;
        if (w == h) return image;
        int n = Math.Max(w, h);
        var dst = new RgbImage(n, n);
        var d = dst.Pixels;
        for (int i = 0; i < d.Length; i += 3)
        {
            d[i] = color.R;
            d[i + 1] = color.G;
            d[i + 2] = color.B;
        }
        int x0 = w > h ? 0 : (h - w) / 2, y0 = w > h ? (w - h) / 2 : 0;
        for (int y = 0; y < h; y++) image.Row(y).CopyTo(d.AsSpan(((y0 + y) * n + x0) * 3, w * 3));
        return dst;
    }

    // get_resize_output_image_size(default_to_square=False): short side -> S, long -> int(S * long / short).
    private static (int Height, int Width) ResizeSize(int width, int height, ClipOptions o)
    {
        if (o.ShortestEdge is not int s) return (o.ResizeHeight!.Value, o.ResizeWidth!.Value);
        bool wide = width > height;
        int shortSide = wide ? height : width, longSide = wide ? width : height;
        double l = (double)((long)s * longSide) / shortSide;
        if (l * s > ClipOptions.MaxResizedPixels)
            throw new InvalidInputException($"resizing a {width}x{height} image to shortest edge {s} gives {s}x{l:F0} pixels, more than the {ClipOptions.MaxResizedPixels} allowed");
        int newLong = (int)l;
        return wide ? (s, newLong) : (newLong, s);
    }

    private static int FloorDiv(int a, int b) => (int)Math.Floor((double)a / b);

}
