// `vte forward --hidden-states H.npz --attentions A.npz --layers ... --heads ...`: the archives hold, array
// for array, what the library's decoder observer records, in numpy's .npz/.npy layout.
using System.IO.Compression;
using System.Text;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Engine.Observers;
using VteKernels.Formats;
using VteKernels.Models;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class ForwardExportCliTests
{
    /// <summary>The members of an .npz: name -> (descr, shape, raw little-endian data).</summary>
    private static Dictionary<string, (string Descr, int[] Shape, byte[] Data)> ReadNpz(string path)
    {
        var members = new Dictionary<string, (string, int[], byte[])>();
        using var zip = ZipFile.OpenRead(path);
        foreach (var e in zip.Entries)
        {
            using var s = e.Open();
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            var b = ms.ToArray();
            Assert.Equal("\u0093NUMPY", Encoding.Latin1.GetString(b, 0, 6));
            int hl = b[8] | b[9] << 8;
            var header = Encoding.Latin1.GetString(b, 10, hl);
            Assert.Equal(0, (10 + hl) % 64);
            var descr = header.Split("'descr': '")[1].Split('\'')[0];
            var shape = header.Split("'shape': (")[1].Split(')')[0].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
            Assert.EndsWith(".npy", e.Name);
            members[e.Name[..^4]] = (descr, shape, b[(10 + hl)..]);
        }
        return members;
    }

    private static float[] Floats(byte[] b) => [.. Enumerable.Range(0, b.Length / 4).Select(i => BitConverter.ToSingle(b, 4 * i))];

    private static int[] Ints(byte[] b) => [.. Enumerable.Range(0, b.Length / 4).Select(i => BitConverter.ToInt32(b, 4 * i))];

    [Fact]
    public void ExportsEqualTheObserversRecord()
    {
        var dir = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var ids = TestModels.PromptIds(cfg, 44);
        var px = TestModels.Pixels(cfg, 44);
        using var work = new TempDir();
        var pxPath = work.File("px.npy");
        Npy.Write(pxPath, px, [1, 3, cfg.Vision.ImageSize, cfg.Vision.ImageSize]);
        var r = Vte("forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", work.File("l.npy"),
            "--exit", "layer:2", "--skip-attn", "3", "--hidden-states", work.File("h.npz"), "--attentions", work.File("a.npz"), "--layers", "1-3", "--heads", "2,0");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("layer(s) 3 skip attention and have none", r.Out);

        using var model = LlavaModel.Load(dir, new CpuBackend());
        using var session = model.CreateSession(new SessionOptions { Eas = new VteKernels.Engine.Eas.EasAdapters([3]) });
        var recorder = new DecoderRecorder(new DecoderCapture { Layers = new HashSet<int> { 1, 2, 3 }, InputRows = true, AttentionProbabilities = true, Heads = [0, 2] });
        session.Prefill(new PromptInput(ids, [ImageInput.Square(px, cfg.Vision.ImageSize)]), new PrefillOptions { Exit = ExitPolicy.AtLayer(2), Observer = recorder });

        var h = ReadNpz(work.File("h.npz"));
        var a = ReadNpz(work.File("a.npz"));
        Assert.Equal(["layer_1", "layer_1_rows", "layer_2", "layer_2_rows", "layer_3", "layer_3_rows"], h.Keys.Order());
        Assert.Equal(["heads", "layer_1", "layer_1_key_rows", "layer_1_query_rows", "layer_2", "layer_2_key_rows", "layer_2_query_rows"], a.Keys.Order());
        Assert.Equal([0, 2], Ints(a["heads"].Data));   // ascending, as --heads lists are read
        foreach (var o in recorder.Layers.Where(o => o.Layer >= 1))
        {
            var (descr, shape, data) = h[$"layer_{o.Layer}"];
            Assert.Equal("<f4", descr);
            Assert.Equal([o.Rows.Length, cfg.Text.HiddenSize], shape);
            Assert.Equal(o.Input, Floats(data));
            Assert.Equal("<i4", h[$"layer_{o.Layer}_rows"].Descr);
            Assert.Equal(o.Rows, Ints(h[$"layer_{o.Layer}_rows"].Data));
            if (o.AttentionSkipped) continue;
            Assert.Equal([2, o.QueryRows.Length, o.Rows.Length], a[$"layer_{o.Layer}"].Shape);
            Assert.Equal(o.Attention, Floats(a[$"layer_{o.Layer}"].Data));
            Assert.Equal(o.QueryRows.Select(i => o.Rows[i]), Ints(a[$"layer_{o.Layer}_query_rows"].Data));
            Assert.Equal(o.Rows, Ints(a[$"layer_{o.Layer}_key_rows"].Data));
        }
        Assert.Equal(ids.Length - cfg.TokensPerImage, h["layer_2"].Shape[0]);   // after the exit: the text rows only
    }

    [Fact]
    public void ExportMistakesAreOneLineErrorsAndLeaveNoFile()
    {
        var dir = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var ids = string.Join(",", TestModels.PromptIds(cfg, 45, images: 0));
        using var work = new TempDir();
        AssertUserError(Vte("forward", "-m", dir, "--input-ids", ids, "--out", work.File("l.npy"), "--layers", "1"), "--layers and --heads choose what");
        AssertUserError(Vte("forward", "-m", dir, "--input-ids", ids, "--out", work.File("l.npy"), "--hidden-states", work.File("h.npy")), "ending in .npz");
        AssertUserError(Vte("forward", "-m", dir, "--input-ids", ids, "--out", work.File("l.npy"), "--attentions", work.File("a.npz"), "--layers", "9"), "decoder layers 0..3, not 9");
        AssertUserError(Vte("forward", "-m", dir, "--input-ids", ids, "--out", work.File("l.npy"), "--attentions", work.File("a.npz"), "--heads", "4"), "attention heads 0..3, not 4");
        AssertUserError(Vte("forward", "-m", dir, "--input-ids", ids + ",9999", "--out", work.File("l.npy"), "--attentions", work.File("a.npz")), "outside the vocabulary");
        Assert.Empty(Directory.GetFiles(work.Path, "*.npz*"));
    }
}
