// `vte generate` and `vte chat` through the text and image front end: the model's tokenizer, the prompt
// formats, image decoding and CLIP preprocessing, on the synthetic tiny model and the bundled sample image.
using VteKernels.Cli;
using VteKernels.Engine;
using VteKernels.Imaging;
using VteKernels.Models;
using VteKernels.Text;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class FrontEndCliTests
{
    private static string SamplePath => Path.Combine(AppContext.BaseDirectory, "assets", "sample.png");

    [Fact]
    public void PromptBuildingExpandsTheImageTokenAfterTokenizing()
    {
        var dir = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var tok = Tokenizer.Load(dir);
        var image = ImageInput.Square(TestModels.Pixels(cfg, 1), cfg.Vision.ImageSize);
        var (text, special) = MultimodalPrompt.Render(PromptStyle.Llava15, tok, [("What is this?", null)], 1);
        Assert.Equal("USER: <image>\nWhat is this? ASSISTANT:", text);
        var prompt = MultimodalPrompt.Build(cfg, tok, text, [image], special);
        var plain = tok.Encode(text, special);
        Assert.Equal(plain.Length - 1 + cfg.TokensPerImage, prompt.TokenIds.Length);
        Assert.Equal(tok.BosId, prompt.TokenIds[0]);
        Assert.Single(prompt.FindImageSpans(cfg));
        int at = Array.IndexOf(plain, cfg.ImageTokenIndex);
        Assert.Equal(plain[..at], prompt.TokenIds[..at]);
        Assert.Equal(plain[(at + 1)..], prompt.TokenIds[(at + cfg.TokensPerImage)..]);
        Assert.Throws<InvalidInputException>(() => MultimodalPrompt.Build(cfg, tok, text, [], special));
        Assert.Throws<InvalidInputException>(() => MultimodalPrompt.Build(cfg, tok, "no image here", [image]));
    }

    [Fact]
    public void TheProcessorsChatTemplateWinsOverTheTokenizersAndRendersLikeLlava15()
    {
        var dir = TestModels.CopyOf(TestModels.Tiny());
        var tok = Tokenizer.Load(dir);
        var llava = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Data", "chat-templates", "templates", "llava-1.5-hf.jinja"));
        Assert.Equal(tok.ChatTemplate, MultimodalPrompt.FindChatTemplate(dir, tok));
        File.WriteAllText(Path.Combine(dir, "chat_template.json"), System.Text.Json.JsonSerializer.Serialize(new { chat_template = llava }));
        Assert.Equal(llava, MultimodalPrompt.FindChatTemplate(dir, tok));
        var (text, special) = MultimodalPrompt.Render(PromptStyle.Template, tok, [("What is this?", null)], 1, dir);
        Assert.True(special);   // the template writes no BOS: the tokenizer adds it, as LlavaProcessor does
        Assert.Equal(PromptFormat.Llava15("What is this?"), text);
        File.WriteAllText(Path.Combine(dir, "chat_template.json"), "[1, 2]");
        Assert.Throws<ModelFormatException>(() => MultimodalPrompt.FindChatTemplate(dir, tok));
        var r = Vte("generate", "-m", dir, "--prompt-style", "template", "-n", "1");
        AssertUserError(r, "chat_template.json");
    }

    [Fact]
    public void SampleImagePreprocessesToTheTowerSizeAndMatchesTheLibraryPipeline()
    {
        var dir = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var options = MultimodalPrompt.PreprocessingFor(dir, cfg, pad: false);
        var input = MultimodalPrompt.LoadImage(SamplePath, options, cfg);
        Assert.Equal((3, cfg.Vision.ImageSize, cfg.Vision.ImageSize), (input.Channels, input.Height, input.Width));
        Assert.Equal(ClipPreprocessor.Preprocess(ImageDecoder.Load(SamplePath), options), input.Pixels);
        var padded = MultimodalPrompt.LoadImage(SamplePath, MultimodalPrompt.PreprocessingFor(dir, cfg, pad: true), cfg);
        Assert.NotEqual(input.Pixels, padded.Pixels);
    }

    [Fact]
    public void GenerateRunsTheWholeFrontEnd()
    {
        var dir = TestModels.Tiny();
        var r = VteWithInput(null, "generate", "-m", dir, "-n", "4", "-p", "What colour is the sky?", "--image", SamplePath, "--exit", "layer:1");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("(1 image(s))", r.Err);
        Assert.Contains("exit layer:1: exit after 1 of 4 layers", r.Err);
        var vicuna = VteWithInput(null, "generate", "-m", dir, "-n", "2", "--prompt-style", "vicuna", "--image-mode", "pad");
        Assert.True(vicuna.Code == 0, vicuna.Err);
        var template = VteWithInput(null, "generate", "-m", dir, "-n", "2", "--prompt-style", "template", "--no-image", "-p", "hi");
        Assert.True(template.Code == 0, template.Err);
        Assert.Contains("(0 image(s))", template.Err);
    }

    [Fact]
    public void GenerateRejectsBadImagesAndMixedInputsWithOneLine()
    {
        var dir = TestModels.Tiny();
        AssertUserError(VteWithInput(null, "generate", "-m", dir, "--image", "/no/such.png"), "such.png");
        var bad = Path.Combine(TestModels.NewTempDir("bad-image"), "bad.png");
        File.WriteAllBytes(bad, [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, (byte)'I', (byte)'H']);
        AssertUserError(VteWithInput(null, "generate", "-m", dir, "--image", bad), "PNG");
        AssertUserError(VteWithInput(null, "generate", "-m", dir, "--pixels", bad), "--pixels goes with --input-ids");
        AssertUserError(VteWithInput(null, "generate", "-m", dir, "--input-ids", "1,2", "-p", "x"), "bypasses");
        AssertUserError(VteWithInput(null, "generate", "-m", dir, "--no-image", "--image", SamplePath), "exclude");
        AssertUserError(VteWithInput(null, "generate", "-m", dir, "--prompt-style", "fancy"), "fancy");
    }

    [Fact]
    public void ChatFollowsItsCommands()
    {
        var dir = TestModels.Tiny();
        var script = $"hello\nand then?\n/image {SamplePath}\ndescribe it\n/image /no/such.png\n/clear\n/what\nbye\n/quit\nnever read\n";
        var r = VteWithInput(script, "chat", "-m", dir, "-n", "3");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("(new conversation about sample.png)", r.Err);
        Assert.Contains("(conversation cleared)", r.Err);
        Assert.Contains("error: ", r.Err);
        Assert.Contains("commands: /image PATH, /clear, /quit", r.Err);
        Assert.Equal(9, r.Err.Split("> ").Length - 1);   // one prompt per line read, up to /quit
        Assert.DoesNotContain("> ", r.Out);   // stdout holds the answers only
        Assert.DoesNotContain("(conversation", r.Out);
    }
}
