// Question files (both of LLaVA's shapes), LLaVA's chunking, and the answers file's repair and resume rules.
using System.Text;
using System.Text.Json.Nodes;
using VteKernels.Evaluation;
using Xunit;

namespace VteKernels.Tests.Evaluation;

public sealed class EvalFilesTests
{
    [Fact]
    public void JsonlQuestionsKeepTheirIdsAndGoldAnswers()
    {
        using var dir = new TempDir();
        var path = dir.File("q.jsonl");
        File.WriteAllText(path,
            "{\"question_id\": 7, \"image\": \"a.png\", \"text\": \"How many?\", \"answers\": [\"2\", {\"answer\": \"3\", \"answer_id\": 2}]}\n" +
            "\n" +
            "{\"question_id\": \"7\", \"text\": \"Text only\", \"answer\": \"yes\", \"category\": \"x\"}\r\n");
        var q = VqaQuestions.Read(path);
        Assert.Equal(2, q.Count);
        Assert.Equal("7", q[0].Key);
        Assert.Equal("\"7\"", q[1].Key);   // a number and a string are different ids
        Assert.Equal(["2", "3"], q[0].Answers);
        Assert.Equal("a.png", q[0].Image);
        Assert.Null(q[1].Image);
        Assert.Equal("yes", q[1].Answer);
        Assert.Equal(3, q[1].Line);
        Assert.Equal("Text only", q[1].Prompt);
    }

    [Fact]
    public void ScienceQaArrayReadsAsModelVqaScienceDoes()
    {
        using var dir = new TempDir();
        var path = dir.File("sqa.json");
        File.WriteAllText(path, """
            [{"id": "4", "image": "4/image.png", "conversations": [{"from": "human", "value": "<image>\nWhich is north?\nA. x\nB. y"}, {"from": "gpt", "value": "The answer is B."}]},
             {"id": "9", "conversations": [{"from": "human", "value": "  Which?\nA. p\nB. q "}, {"from": "gpt", "value": "A"}]}]
            """);
        var q = VqaQuestions.Read(path, singlePredictionPrompt: true);
        Assert.Equal("\"4\"", q[0].Key);
        Assert.Equal("Which is north?\nA. x\nB. y\n" + VqaQuestions.SinglePredictionPrompt, q[0].Text);
        Assert.Equal("<image>\n" + q[0].Text, q[0].Prompt);
        Assert.Equal("The answer is B.", q[0].Answer);
        Assert.Equal(ScoreMetric.Choice, VqaScoring.AutoMetric(q[0].Text, q[0].Answer, q[0].Answers));
        Assert.Null(q[1].Image);
        Assert.Equal(q[1].Text, q[1].Prompt);
    }

    [Theory]
    [InlineData("{\"text\": \"x\"}", "\"question_id\" is missing")]
    [InlineData("{\"question_id\": 1}", "\"text\" is missing")]
    [InlineData("{\"question_id\": [1], \"text\": \"x\"}", "not a number or string")]
    [InlineData("{\"question_id\": 1, \"text\": \"x\", \"answers\": [1]}", "\"answers\" must be an array of strings")]
    [InlineData("{\"question_id\": 1, \"text\": \"x\"}\n{\"question_id\": 1, \"text\": \"y\"}", "question id 1 repeats")]
    [InlineData("{\"question_id\": 1, \"text\": ", "not valid JSON")]
    [InlineData("\n\n", "no questions")]
    public void BadQuestionFilesAreOneLineErrorsWithTheLine(string content, string expected)
    {
        using var dir = new TempDir();
        var path = dir.File("bad.jsonl");
        File.WriteAllText(path, content);
        var e = Assert.Throws<InvalidInputException>(() => VqaQuestions.Read(path));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith("bad.jsonl", e.Message);
    }

    [Fact]
    public void ChunksCoverEveryQuestionExactlyOnceInOrder()
    {
        for (int n = 0; n <= 23; n++)
            for (int count = 1; count <= 7; count++)
            {
                var items = Enumerable.Range(0, n).ToList();
                var joined = Enumerable.Range(0, count).SelectMany(k => VqaQuestions.Chunk(items, count, k)).ToList();
                Assert.Equal(items, joined);
                // LLaVA's split_list: chunks of ceil(n / count), the last one shorter.
                int size = (n + count - 1) / count;
                for (int k = 0; k < count; k++)
                    Assert.Equal(items.Skip(k * size).Take(size), VqaQuestions.Chunk(items, count, k));
            }
        Assert.Equal([3, 3, 3, 1], Enumerable.Range(0, 4).Select(k => VqaQuestions.Chunk(Enumerable.Range(0, 10).ToList(), 4, k).Count));
        Assert.Empty(VqaQuestions.Chunk(Enumerable.Range(0, 9).ToList(), 4, 3));   // LLaVA raises IndexError here
        Assert.Throws<ArgumentOutOfRangeException>(() => VqaQuestions.Chunk(new int[3], 2, 2));
    }

    private static JsonObject Line(int id, string text) => new() { ["question_id"] = id, ["text"] = text };

    [Fact]
    public void AnswersFileDropsAnUnfinishedLastLineAndResumes()
    {
        using var dir = new TempDir();
        var path = dir.File("sub/answers.jsonl");
        using (var f = AnswersFile.Open(path))
        {
            Assert.Equal(0, f.DroppedBytes);
            f.Append(Line(1, "a"));
            f.Append(Line(2, "b\u00e9<image>"));
            Assert.Throws<ArgumentException>(() => f.Append(Line(2, "again")));
        }
        var whole = File.ReadAllBytes(path);
        File.AppendAllText(path, "{\"question_id\": 3, \"te");   // what a cut write would leave
        using (var f = AnswersFile.Open(path))
        {
            Assert.Equal(22, f.DroppedBytes);
            Assert.True(f.Contains("1") && f.Contains("2") && !f.Contains("3"));
            Assert.Equal("b\u00e9<image>", (string?)f.Lines["2"]["text"]);
            Assert.Equal(whole, File.ReadAllBytes(path));   // truncated back to the whole lines
            f.Append(Line(3, "c"));
        }
        var lines = File.ReadAllText(path, Encoding.UTF8).Split('\n');
        Assert.Equal(4, lines.Length);
        Assert.Equal("", lines[^1]);
        Assert.Equal([1, 2, 3], lines[..3].Select(l => (int)JsonNode.Parse(l)!["question_id"]!));
    }

    [Fact]
    public void OneWriterAtATimeWhileOthersMayRead()
    {
        using var dir = new TempDir();
        var path = dir.File("answers.jsonl");
        using (var f = AnswersFile.Open(path))
        {
            f.Append(Line(1, "a"));
            var e = Assert.Throws<InvalidInputException>(() => AnswersFile.Open(path).Dispose());
            Assert.Contains("being written by another process", e.Message);
            Assert.StartsWith("{\"question_id\":1", File.ReadAllText(path));   // readers are not locked out
        }
        Assert.False(File.Exists(path + ".lock"));
        using (var again = AnswersFile.Open(path)) Assert.True(again.Contains("1"));
    }

    [Theory]
    [InlineData("{\"question_id\": 1}\nnot json\n", "answers.jsonl:2: not a JSON line")]
    [InlineData("{\"text\": 1}\n", "answers.jsonl:1: not an answer")]
    [InlineData("{\"question_id\": 1}\n{\"question_id\": 1}\n", "question id 1 is answered twice")]
    public void AnswersFileRefusesWhatItDidNotWrite(string content, string expected)
    {
        using var dir = new TempDir();
        var path = dir.File("answers.jsonl");
        File.WriteAllText(path, content);
        var e = Assert.Throws<InvalidInputException>(() => AnswersFile.Open(path).Dispose());
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void SettingsListKeepsLayerListsAndCombines()
    {
        var s = EvalSetting.ParseList("none, layer:8,skip-attn:3,5,7-9,layer:2+naavit,attn:0.1:2", _ => throw new InvalidOperationException(),
            (_, _) => throw new InvalidOperationException());
        Assert.Equal(["none", "layer:8", "skip-attn:3,5,7-9", "layer:2+naavit", "attn:0.1:2"], s.Select(x => x.Name));
        Assert.Equal([3, 5, 7, 8, 9], s[2].Session.Eas!.SkippedLayers);
        Assert.True(s[3].Naavit);
        Assert.Equal("layer:2", s[3].Exit.ToString());
        Assert.Equal(["none", "layer-8", "skip-attn-3_5_7-9", "layer-2+naavit", "attn-0.1_2"], s.Select(x => x.Slug));
        Assert.Throws<FormatException>(() => EvalSetting.ParseList("none,none", _ => null!, (_, _) => null!));
        Assert.Throws<FormatException>(() => EvalSetting.ParseList("layer:2+layer:3", _ => null!, (_, _) => null!));
        Assert.Throws<FormatException>(() => EvalSetting.ParseList("fast", _ => null!, (_, _) => null!));
        Assert.Throws<FormatException>(() => EvalSetting.ParseList("layer:x", _ => null!, (_, _) => null!));
    }
}
