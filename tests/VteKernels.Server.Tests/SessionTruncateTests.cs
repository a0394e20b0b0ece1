// InferenceSession.Truncate, which the chat client uses to reuse the longest shared prefix of a conversation:
// cutting a sequence back and continuing it gives the logits of a fresh prefill of the same tokens.
using VteKernels.Engine;
using VteKernels.Engine.Exit;

namespace VteKernels.Server.Tests;

[Collection("model")]
public sealed class SessionTruncateTests
{
    [Theory]
    [InlineData("none")]
    [InlineData("layer:2")]
    public void Truncate_then_continue_equals_a_fresh_prefill(string exit)
    {
        var m = TinyModel.Model;
        var cfg = m.Config;
        var rng = new Random(5);
        int[] Text(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(3, 500)).ToArray();
        var image = new ImageInput(Enumerable.Range(0, 3 * 112 * 112).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), 3, 112, 112);
        int[] head = [1, .. Text(5), .. Enumerable.Repeat(cfg.ImageTokenIndex, cfg.TokensPerImage), .. Text(7)];
        int[] oldTail = Text(9), newTail = Text(6);
        var options = new PrefillOptions { Exit = ExitPolicy.Parse(exit, _ => throw new InvalidOperationException()) };

        using var reused = m.CreateSession();
        reused.Prefill(new PromptInput([.. head, .. oldTail], [image]), options);
        reused.Decode(17);
        reused.Truncate(head.Length);
        Assert.Equal(head, reused.Tokens);
        var a = reused.Prefill(PromptInput.TextOnly(newTail), options);

        using var fresh = m.CreateSession();
        fresh.Prefill(new PromptInput(head, [image]), options);
        var b = fresh.Prefill(PromptInput.TextOnly(newTail), options);
        for (int l = 0; l < cfg.Text.NumLayers; l++) Assert.Equal(fresh.Cache.Length(l), reused.Cache.Length(l));
        float scale = b.Logits.Last.ToArray().Max(Math.Abs);
        Assert.True(a.Logits.Last.ToArray().Zip(b.Logits.Last.ToArray()).Max(p => Math.Abs(p.First - p.Second)) <= 1e-5f * scale);

        Assert.Throws<InvalidInputException>(() => reused.Truncate(3));   // the image would be cut
        Assert.Throws<ArgumentOutOfRangeException>(() => reused.Truncate(reused.Position + 1));
    }
}
