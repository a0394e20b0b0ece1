// `vte plot TRACE.json --out chart.svg|chart.png`: the picture behind DyVTE's three-stage finding. For each
// decoder layer, how much of the text rows' attention falls on the image (mean over heads, and each head
// faintly), the gate's exit probability where gates ran, and the layer after which the visual tokens left.
// The SVG is written as text; the PNG is drawn by a small rasterizer with a built-in 5x7 font, so neither
// needs a graphics library.
using System.CommandLine;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.Json;

namespace VteKernels.Cli;

internal static class PlotCommand
{
    public static Command Create(TextWriter stdout)
    {
        var trace = new Argument<string>("trace") { Description = "A trace written by --trace (JSON)" };
        var output = new Option<string>("--out", "-o") { Description = "Chart file: .svg or .png", Required = true };
        var cmd = new Command("plot", "Draw text-to-image attention mass per layer from a trace, with the exit marked") { trace, output };
        cmd.SetAction(p =>
        {
            var path = p.GetValue(trace)!;
            var outPath = p.GetValue(output)!;
            var ext = Path.GetExtension(outPath).ToLowerInvariant();
            if (ext is not (".svg" or ".png")) throw new UsageException($"--out '{outPath}': the chart is written as .svg or .png");
            var data = TraceData.Read(path);
            var chart = TraceChart.Build(data);
            var full = Path.GetFullPath(outPath);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            if (ext == ".svg") File.WriteAllText(full, chart.ToSvg());
            else File.WriteAllBytes(full, chart.ToPng());
            stdout.WriteLine($"wrote {outPath}: {data.Mass.Length} layers, {(data.ExitLayer is int k ? $"exit after {k} layers" : "no exit")}, policy {data.Policy}");
            return 0;
        });
        return cmd;
    }
}

/// <summary>What the chart needs from a trace file.</summary>
internal sealed record TraceData(string Policy, int? ExitLayer, double?[] Mass, double?[][] PerHead, double?[] GateProbability)
{
    public static TraceData Read(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"trace file '{path}' does not exist");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            if (!root.TryGetProperty("format", out var f) || f.GetString() != "vte-prefill-trace/1")
                throw new UsageException($"{path}: not a trace written by --trace (format vte-prefill-trace/1)");
            var layers = root.GetProperty("layers").EnumerateArray().ToList();
            if (layers.Count == 0) throw new UsageException($"{path}: the trace has no layers");
            static double? Num(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
            var mass = layers.Select(l => Num(l, "visual_mass")).ToArray();
            var heads = layers.Select(l => l.TryGetProperty("visual_mass_per_head", out var h) && h.ValueKind == JsonValueKind.Array
                ? h.EnumerateArray().Select(x => (double?)x.GetDouble()).ToArray() : []).ToArray();
            var gate = layers.Select(l => Num(l, "gate_exit_probability")).ToArray();
            int? exit = root.TryGetProperty("exit_layer", out var x) && x.ValueKind == JsonValueKind.Number ? x.GetInt32() : null;
            if (mass.All(m => m is null) && gate.All(g => g is null))
                throw new UsageException($"{path}: the trace holds no attention mass and no gate values (was the prompt without an image?)");
            return new TraceData(root.GetProperty("policy").GetString() ?? "?", exit, mass, heads, gate);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new UsageException($"{path}: malformed trace: {e.Message}");
        }
    }
}

/// <summary>The trace plot: attention mass per layer, each head faintly, the gate, the exit.</summary>
internal static class TraceChart
{
    private const int Width = Chart.DefaultWidth, Height = Chart.DefaultHeight;
    private const int Left = 70, Right = 30, Top = 62, Bottom = 60;

    // Colours as 0xRRGGBB.
    private const uint Ink = 0x202020, Grid = 0xE0E0E0, HeadColor = 0xB8C8E8, MeanColor = 0x1F5FBF, GateColor = 0xE07B00, ExitColor = 0xC62828, Shade = 0xF6E3E3;

    public static Chart Build(TraceData d)
    {
        var c = new Chart();
        int layers = d.Mass.Length;
        double plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        double X(double layer) => Left + (layers == 1 ? plotW / 2 : layer / (layers - 1) * plotW);
        double Y(double v) => Top + plotH * (1 - v);

        if (d.ExitLayer is int k && k < layers)
            c.Box(Math.Max(Left, X(k - 0.5)), Top, Left + plotW, Top + plotH, Shade);
        for (int i = 0; i <= 4; i++)
        {
            double v = i / 4.0;
            c.Line(Left, Y(v), Left + plotW, Y(v), 1, Grid);
            c.Label(Left - 8, Y(v) - 4, v.ToString("0.00", CultureInfo.InvariantCulture), Ink, 1, TextAnchor.End);
        }
        int step = Math.Max(1, (int)Math.Ceiling(layers / 16.0));
        for (int l = 0; l < layers; l += step)
            c.Label(X(l), Top + plotH + 8, l.ToString(CultureInfo.InvariantCulture), Ink, 1, TextAnchor.Middle);
        c.Line(Left, Top + plotH, Left + plotW, Top + plotH, 1.5, Ink);
        c.Line(Left, Top, Left, Top + plotH, 1.5, Ink);

        int heads = d.PerHead.Max(h => h.Length);
        for (int h = 0; h < heads; h++) Series(c, d.PerHead.Select(p => h < p.Length ? p[h] : null).ToArray(), X, Y, 1, HeadColor, dots: false);
        Series(c, d.Mass, X, Y, 2.5, MeanColor, dots: true);
        if (d.GateProbability.Any(g => g is not null)) Series(c, d.GateProbability, X, Y, 2, GateColor, dots: true, dashed: true);
        if (d.ExitLayer is int e && e < layers)
        {
            double xe = Math.Max(Left, X(e - 0.5));
            c.Line(xe, Top, xe, Top + plotH, 2, ExitColor, dashed: true);
            c.Label(xe + 6, Top + plotH - 16, $"EXIT AFTER {e} LAYERS", ExitColor, 1);
        }

        c.Label(Width / 2.0, 10, "TEXT-TO-IMAGE ATTENTION MASS PER LAYER", Ink, 2, TextAnchor.Middle);
        c.Label(Width / 2.0, Height - 22, $"DECODER LAYER   (POLICY {d.Policy.ToUpperInvariant()})", Ink, 1, TextAnchor.Middle);
        // Legend in one row between the title and the plot.
        double lx = Left, ly = Top - 24;
        c.Line(lx, ly + 3, lx + 24, ly + 3, 2.5, MeanColor);
        c.Label(lx + 30, ly, "MEAN OVER HEADS", Ink);
        c.Line(lx + 150, ly + 3, lx + 174, ly + 3, 1, HeadColor);
        c.Label(lx + 180, ly, "EACH HEAD", Ink);
        if (d.GateProbability.Any(g => g is not null))
        {
            c.Line(lx + 260, ly + 3, lx + 284, ly + 3, 2, GateColor, dashed: true);
            c.Label(lx + 290, ly, "GATE EXIT PROBABILITY", Ink);
        }
        return c;
    }

    private static void Series(Chart c, double?[] values, Func<double, double> x, Func<double, double> y, double thickness, uint color, bool dots, bool dashed = false)
    {
        for (int i = 0; i + 1 < values.Length; i++)
            if (values[i] is double a && values[i + 1] is double b)
                c.Line(x(i), y(Math.Clamp(a, 0, 1)), x(i + 1), y(Math.Clamp(b, 0, 1)), thickness, color, dashed);
        if (dots)
            for (int i = 0; i < values.Length; i++)
                if (values[i] is double v) c.Dot(x(i), y(Math.Clamp(v, 0, 1)), thickness + 1.5, color);
    }
}

/// <summary>Where a label's x coordinate sits on its text.</summary>
internal enum TextAnchor
{
    /// <summary>The text starts at x.</summary>
    Start,

    /// <summary>The text is centred on x.</summary>
    Middle,

    /// <summary>The text ends at x.</summary>
    End,
}

/// <summary>
/// A chart as a list of shapes in pixel coordinates (lines, boxes, dots, labels in a 5x7 font), rendered to
/// SVG or, by the small rasterizer below, to PNG. The trace plot and `vte eval`'s Pareto chart draw on it.
/// </summary>
internal sealed class Chart(int width = Chart.DefaultWidth, int height = Chart.DefaultHeight)
{
    public const int DefaultWidth = 800, DefaultHeight = 460;

    private abstract record Shape(uint Color);
    private sealed record LineShape(double X0, double Y0, double X1, double Y1, double Thickness, uint Color, bool Dashed) : Shape(Color);
    private sealed record BoxShape(double X0, double Y0, double X1, double Y1, uint Color) : Shape(Color);
    private sealed record DotShape(double X, double Y, double Radius, uint Color) : Shape(Color);
    private sealed record LabelShape(double X, double Y, string Text, uint Color, int Scale, TextAnchor Anchor) : Shape(Color);

    private readonly List<Shape> _shapes = [];

    public int Width { get; } = width;

    public int Height { get; } = height;

    /// <summary>A straight line; colours are 0xRRGGBB.</summary>
    public void Line(double x0, double y0, double x1, double y1, double thickness, uint color, bool dashed = false) =>
        _shapes.Add(new LineShape(x0, y0, x1, y1, thickness, color, dashed));

    /// <summary>A filled rectangle.</summary>
    public void Box(double x0, double y0, double x1, double y1, uint color) => _shapes.Add(new BoxShape(x0, y0, x1, y1, color));

    /// <summary>A filled disc.</summary>
    public void Dot(double x, double y, double radius, uint color) => _shapes.Add(new DotShape(x, y, radius, color));

    /// <summary>Text with its top at <paramref name="y"/>; the PNG draws it upper-case in the 5x7 font at <paramref name="scale"/>.</summary>
    public void Label(double x, double y, string text, uint color, int scale = 1, TextAnchor anchor = TextAnchor.Start) =>
        _shapes.Add(new LabelShape(x, y, text, color, scale, anchor));

    /// <summary>Pixel width of <paramref name="text"/> in the PNG font.</summary>
    public static double TextWidth(string text, int scale = 1) => text.Length * 6 * scale;

    // ------------------------------------------------------------------ SVG

    public string ToSvg()
    {
        var sb = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        sb.Append(ci, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" font-family=\"sans-serif\">\n");
        sb.Append(ci, $"<rect width=\"{Width}\" height=\"{Height}\" fill=\"#ffffff\"/>\n");
        foreach (var s in _shapes)
        {
            string col = $"#{s.Color:x6}";
            switch (s)
            {
                case BoxShape b:
                    sb.Append(ci, $"<rect x=\"{b.X0:F1}\" y=\"{b.Y0:F1}\" width=\"{b.X1 - b.X0:F1}\" height=\"{b.Y1 - b.Y0:F1}\" fill=\"{col}\"/>\n");
                    break;
                case LineShape l:
                    sb.Append(ci, $"<line x1=\"{l.X0:F1}\" y1=\"{l.Y0:F1}\" x2=\"{l.X1:F1}\" y2=\"{l.Y1:F1}\" stroke=\"{col}\" stroke-width=\"{l.Thickness:F1}\"{(l.Dashed ? " stroke-dasharray=\"6 4\"" : "")}/>\n");
                    break;
                case DotShape d:
                    sb.Append(ci, $"<circle cx=\"{d.X:F1}\" cy=\"{d.Y:F1}\" r=\"{d.Radius:F1}\" fill=\"{col}\"/>\n");
                    break;
                case LabelShape t:
                    string anchor = t.Anchor switch { TextAnchor.Middle => "middle", TextAnchor.End => "end", _ => "start" };
                    double size = 11 * t.Scale;
                    sb.Append(ci, $"<text x=\"{t.X:F1}\" y=\"{t.Y + size * 0.8:F1}\" font-size=\"{size:F0}\" text-anchor=\"{anchor}\" fill=\"{col}\">{System.Security.SecurityElement.Escape(t.Text.ToLowerInvariant())}</text>\n");
                    break;
            }
        }
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    // ------------------------------------------------------------------ PNG

    public byte[] ToPng()
    {
        var px = new uint[Width * Height];
        Array.Fill(px, 0xFFFFFFu);
        foreach (var s in _shapes)
        {
            switch (s)
            {
                case BoxShape b:
                    for (int y = (int)b.Y0; y < (int)b.Y1; y++)
                        for (int x = (int)b.X0; x < (int)b.X1; x++) Plot(px, x, y, b.Color);
                    break;
                case LineShape l:
                    DrawLine(px, l);
                    break;
                case DotShape d:
                    Disc(px, d.X, d.Y, d.Radius, d.Color);
                    break;
                case LabelShape t:
                    DrawText(px, t);
                    break;
            }
        }
        return Png.Encode(px, Width, Height);
    }

    private void Plot(uint[] px, int x, int y, uint color)
    {
        if ((uint)x < Width && (uint)y < Height) px[y * Width + x] = color;
    }

    private void Disc(uint[] px, double cx, double cy, double r, uint color)
    {
        for (int y = (int)Math.Floor(cy - r); y <= (int)Math.Ceiling(cy + r); y++)
            for (int x = (int)Math.Floor(cx - r); x <= (int)Math.Ceiling(cx + r); x++)
                if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r) Plot(px, x, y, color);
    }

    private void DrawLine(uint[] px, LineShape l)
    {
        double len = Math.Sqrt((l.X1 - l.X0) * (l.X1 - l.X0) + (l.Y1 - l.Y0) * (l.Y1 - l.Y0));
        int steps = Math.Max(1, (int)(len * 2));
        for (int i = 0; i <= steps; i++)
        {
            double t = i / (double)steps;
            if (l.Dashed && (int)(t * len / 5) % 2 == 1) continue;
            Disc(px, l.X0 + t * (l.X1 - l.X0), l.Y0 + t * (l.Y1 - l.Y0), l.Thickness / 2, l.Color);
        }
    }

    private void DrawText(uint[] px, LabelShape t)
    {
        int scale = t.Scale, advance = 6 * scale;
        double width = t.Text.Length * advance;
        double x0 = t.Anchor switch { TextAnchor.Middle => t.X - width / 2, TextAnchor.End => t.X - width, _ => t.X };
        for (int i = 0; i < t.Text.Length; i++)
        {
            var glyph = Font5x7.Glyph(char.ToUpperInvariant(t.Text[i]));
            for (int row = 0; row < 7; row++)
                for (int col = 0; col < 5; col++)
                    if ((glyph[row] >> (4 - col) & 1) != 0)
                        for (int sy = 0; sy < scale; sy++)
                            for (int sx = 0; sx < scale; sx++)
                                Plot(px, (int)x0 + i * advance + col * scale + sx, (int)t.Y + row * scale + sy, t.Color);
        }
    }
}

/// <summary>A 5x7 bitmap font for upper-case letters, digits and a little punctuation (each row: 5 bits, MSB left).</summary>
internal static class Font5x7
{
    private static readonly Dictionary<char, byte[]> Glyphs = new()
    {
        ['0'] = [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E], ['1'] = [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        ['2'] = [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F], ['3'] = [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        ['4'] = [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02], ['5'] = [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        ['6'] = [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E], ['7'] = [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        ['8'] = [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E], ['9'] = [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ['A'] = [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11], ['B'] = [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        ['C'] = [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E], ['D'] = [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        ['E'] = [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F], ['F'] = [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        ['G'] = [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F], ['H'] = [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        ['I'] = [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E], ['J'] = [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        ['K'] = [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11], ['L'] = [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        ['M'] = [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11], ['N'] = [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        ['O'] = [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E], ['P'] = [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        ['Q'] = [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D], ['R'] = [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        ['S'] = [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E], ['T'] = [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        ['U'] = [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E], ['V'] = [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        ['W'] = [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A], ['X'] = [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        ['Y'] = [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04], ['Z'] = [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        [' '] = [0, 0, 0, 0, 0, 0, 0], ['.'] = [0, 0, 0, 0, 0, 0x0C, 0x0C], [':'] = [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        ['-'] = [0, 0, 0, 0x1F, 0, 0, 0], ['_'] = [0, 0, 0, 0, 0, 0, 0x1F], ['/'] = [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        ['('] = [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02], [')'] = [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ['%'] = [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03], [','] = [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ['+'] = [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
    };

    private static readonly byte[] Unknown = [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F];

    public static byte[] Glyph(char c) => Glyphs.TryGetValue(c, out var g) ? g : Unknown;
}

/// <summary>Minimal PNG writer: 8-bit RGB, one IDAT, no filtering.</summary>
internal static class Png
{
    public static byte[] Encode(uint[] rgb, int width, int height)
    {
        var raw = new byte[height * (1 + 3 * width)];
        for (int y = 0; y < height; y++)
        {
            int o = y * (1 + 3 * width);
            raw[o] = 0;   // filter: none
            for (int x = 0; x < width; x++)
            {
                uint c = rgb[y * width + x];
                raw[o + 1 + 3 * x] = (byte)(c >> 16);
                raw[o + 2 + 3 * x] = (byte)(c >> 8);
                raw[o + 3 + 3 * x] = (byte)c;
            }
        }
        using var idat = new MemoryStream();
        using (var z = new ZLibStream(idat, CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
        using var png = new MemoryStream();
        png.Write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8;   // bit depth
        ihdr[9] = 2;   // colour type: RGB
        Chunk(png, "IHDR", ihdr);
        Chunk(png, "IDAT", idat.ToArray());
        Chunk(png, "IEND", []);
        return png.ToArray();
    }

    private static void Chunk(Stream s, string type, byte[] data)
    {
        Span<byte> len = stackalloc byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        s.Write(len);
        var typeBytes = Encoding.ASCII.GetBytes(type);
        s.Write(typeBytes);
        s.Write(data);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(len, Imaging.Crc32.Compute([.. typeBytes, .. data]));
        s.Write(len);
    }
}
