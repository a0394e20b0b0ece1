// PromptFormat: Llava15 equals what llava-hf's own chat template renders for the same turns; VicunaV1 equals
// the strings LLaVA's conv_vicuna_v1.get_prompt() builds (sep " ", sep2 "</s>"), whose text before the image
// the reference script tokenized with LLaMA's tokenizer (35 tokens, image tokens at 35..610).
using System.Text.Json.Nodes;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Text;

public sealed class PromptFormatTests
{
    [Theory]
    [InlineData("What is shown in this image?", 1, "USER: <image>\nWhat is shown in this image? ASSISTANT:")]
    [InlineData("Compare them.", 2, "USER: <image>\n<image>\nCompare them. ASSISTANT:")]
    [InlineData("No picture.", 0, "USER: No picture. ASSISTANT:")]
    public void Llava15SingleTurn(string question, int images, string expected) =>
        Assert.Equal(expected, PromptFormat.Llava15(question, images));

    [Theory]
    [InlineData("What is shown in this image?", 1,
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat is shown in this image? ASSISTANT:")]
    [InlineData("Two?", 2,
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: <image>\n<image>\nTwo? ASSISTANT:")]
    public void VicunaV1SingleTurn(string question, int images, string expected) =>
        Assert.Equal(expected, PromptFormat.VicunaV1(question, images));

    [Fact]
    public void VicunaV1MultiTurnUsesSep2AfterAnswers()
    {
        // get_prompt() with messages [(USER, "<image>\nq1"), (ASSISTANT, "a1"), (USER, "q2"), (ASSISTANT, None)]:
        // system + " " + "USER: <image>\nq1" + " " + "ASSISTANT: a1" + "</s>" + "USER: q2" + " " + "ASSISTANT:".
        Assert.Equal(
            PromptFormat.VicunaV1System + " USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:",
            PromptFormat.VicunaV1([("q1", "a1"), ("q2", null)]));
        Assert.Equal(
            PromptFormat.VicunaV1System + " USER: <image>\nq1 ASSISTANT: a1</s>",
            PromptFormat.VicunaV1([("q1", "a1")]));
    }

    [Fact]
    public void VicunaV1PrefixIsTheTextTheReferenceTokenized()
    {
        var reference = JsonNode.Parse(File.ReadAllText(Path.Combine(ChatTemplateVectors.Root, "vicuna-v1.json")))!;
        Assert.Equal(PromptFormat.VicunaV1System, (string)reference["system"]!);
        var prompt = PromptFormat.VicunaV1("q");
        Assert.Equal((string)reference["prefix_before_image"]!, prompt[..prompt.IndexOf(PromptFormat.ImageToken, StringComparison.Ordinal)]);
        Assert.Equal(35, (int)reference["first_image_token_position"]!);
        Assert.Equal(610, (int)reference["last_image_token_position_576"]!);
    }

    public static TheoryData<string, int, string[]> Conversations() => new()
    {
        { "one-turn-1-image", 1, ["What is the dog holding?"] },
        { "one-turn-0-images", 0, ["Hello"] },
        { "two-turns-1-image", 1, ["What is the dog holding?", "A red ball.", "And its colour?"] },
        { "two-turns-answered-2-images", 2, ["Compare.", "They match.", "Sure?", "Yes."] },
    };

    [Theory, MemberData(nameof(Conversations))]
    public void Llava15MatchesLlavaHfChatTemplate(string name, int images, string[] texts)
    {
        var turns = new List<(string, string?)>();
        var messages = new List<ChatMessage>();
        for (int i = 0; i < texts.Length; i += 2)
        {
            string? answer = i + 1 < texts.Length ? texts[i + 1] : null;
            turns.Add((texts[i], answer));
            messages.Add(new ChatMessage("user", texts[i], i == 0 ? images : 0));
            if (answer is not null) messages.Add(new ChatMessage("assistant", answer));
        }
        bool open = texts.Length % 2 == 1;
        var template = ChatTemplate.Parse(File.ReadAllText(ChatTemplateVectors.TemplatePath("llava-1.5-hf")));
        Assert.Equal(template.Render(messages, addGenerationPrompt: open), PromptFormat.Llava15(turns, images));
        Assert.False(string.IsNullOrEmpty(name));
    }

    [Theory]
    [InlineData("llava", PromptStyle.Llava15)]
    [InlineData("LLaVA-1.5", PromptStyle.Llava15)]
    [InlineData("vicuna", PromptStyle.VicunaV1)]
    [InlineData(" vicuna_v1 ", PromptStyle.VicunaV1)]
    [InlineData("template", PromptStyle.Template)]
    public void ParsesStyleNames(string text, PromptStyle expected) => Assert.Equal(expected, PromptFormat.ParseStyle(text));

    [Fact]
    public void RejectsBadInput()
    {
        var e = Assert.Throws<InvalidInputException>(() => PromptFormat.ParseStyle("chatml"));
        Assert.Contains("llava, vicuna or template", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => PromptFormat.Llava15("q", -1));
        Assert.Throws<ArgumentException>(() => PromptFormat.VicunaV1(Array.Empty<(string, string?)>()));
        Assert.Throws<ArgumentException>(() => PromptFormat.Llava15([("q1", null), ("q2", null)]));
        Assert.Throws<ArgumentException>(() => PromptFormat.Format(PromptStyle.Template, "q"));
        Assert.Equal(PromptFormat.Llava15("q"), PromptFormat.Format(PromptStyle.Llava15, "q"));
        Assert.Equal(PromptFormat.VicunaV1("q", 0), PromptFormat.Format(PromptStyle.VicunaV1, "q", 0));
    }
}
