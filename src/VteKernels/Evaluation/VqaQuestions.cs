// Question files for evaluation, in the two shapes LLaVA's evaluation scripts read:
//   JSONL (llava/eval/model_vqa_loader.py: TextVQA, GQA, VQAv2, POPE, ...): one object a line,
//     {"question_id": 123 or "abc", "image": "x.jpg", "text": "What is ...?"}
//     plus, for scoring here, "answer": "gold" or "answers": ["ten", "human", "answers"] (strings, or
//     {"answer": ...} objects as VQAv2's annotation files hold them). "image" may be absent (text only).
//   JSON array (llava/eval/model_vqa_science.py: ScienceQA's llava_test_CQM-A.json):
//     [{"id": "4", "image": "4/image.png", "conversations": [{"from": "human", "value": "<image>\n..."},
//       {"from": "gpt", "value": "The answer is B."}]}, ...]
//     The question is the first turn without "<image>", stripped; the second turn, when present, is the gold
//     answer. As there, the answers file's "prompt" is "<image>\n" + question for questions with an image.
// Question ids are kept as the JSON values they are (a number stays a number) and must be unique: resuming
// and agreement between settings go by id. Chunks are LLaVA's get_chunk: ceil(n / chunks) questions per
// chunk, in file order; a chunk index past the last chunk is empty (LLaVA raises IndexError there).
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VteKernels.Evaluation;

/// <summary>One question of an evaluation set.</summary>
public sealed record VqaQuestion
{
    /// <summary>The question id as it appears in the file (a JSON number or string).</summary>
    public required JsonNode Id { get; init; }

    /// <summary>The id's canonical JSON text (5 and "5" differ); the key for resuming and matching settings.</summary>
    public string Key => Id.ToJsonString();

    /// <summary>The image file relative to the images folder (or absolute); null for a text-only question.</summary>
    public string? Image { get; init; }

    /// <summary>The question text given to the model (after "&lt;image&gt;\n").</summary>
    public required string Text { get; init; }

    /// <summary>What the answers file records as "prompt" (LLaVA's cur_prompt).</summary>
    public required string Prompt { get; init; }

    /// <summary>The gold answer, when the file gives one.</summary>
    public string? Answer { get; init; }

    /// <summary>The human answers (VQAv2 / TextVQA style), when the file gives them.</summary>
    public IReadOnlyList<string>? Answers { get; init; }

    /// <summary>1-based line (JSONL) or element (JSON array) number, for messages.</summary>
    public int Line { get; init; }
}

/// <summary>Reads question files and splits them into chunks.</summary>
public static class VqaQuestions
{
    /// <summary>The instruction LLaVA's --single-pred-prompt appends to ScienceQA questions.</summary>
    public const string SinglePredictionPrompt = "Answer with the option's letter from the given choices directly.";

    /// <summary>
    /// Reads a question file: JSONL in model_vqa's shape, or a JSON array in model_vqa_science's shape.
    /// <paramref name="singlePredictionPrompt"/> appends <see cref="SinglePredictionPrompt"/> on a new line to every question, as LLaVA's flag does.
    /// </summary>
    /// <exception cref="InvalidInputException">The file is missing or empty, a record lacks its id or text, a field has the wrong type, or an id repeats. The message starts "FILE:LINE:".</exception>
    public static IReadOnlyList<VqaQuestion> Read(string path, bool singlePredictionPrompt = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new InvalidInputException($"question file '{path}' does not exist");
        var name = Path.GetFileName(path);
        var text = File.ReadAllText(path);
        int first = 0;
        while (first < text.Length && char.IsWhiteSpace(text[first])) first++;
        var questions = first < text.Length && text[first] == '['
            ? ReadArray(text, name, singlePredictionPrompt)
            : ReadLines(text, name, singlePredictionPrompt);
        if (questions.Count == 0) throw new InvalidInputException($"{name}: no questions (expected one JSON object a line, or a JSON array)");
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var q in questions)
            if (!seen.TryAdd(q.Key, q.Line))
                throw new InvalidInputException($"{name}:{q.Line}: question id {q.Key} repeats (first at {seen[q.Key]}); ids must be unique");
        return questions;
    }

    /// <summary>LLaVA's get_chunk: chunk <paramref name="index"/> of <paramref name="count"/> chunks of ceil(n / count) items, in order.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is below 1 or <paramref name="index"/> is outside [0, count).</exception>
    public static IReadOnlyList<T> Chunk<T>(IReadOnlyList<T> items, int count, int index)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        if (index < 0 || index >= count) throw new ArgumentOutOfRangeException(nameof(index), index, $"the chunk index must lie in [0, {count})");
        int size = (items.Count + count - 1) / count;
        long start = (long)index * size;
        if (start >= items.Count) return [];
        return items.Skip((int)start).Take(size).ToList();
    }

    private static List<VqaQuestion> ReadLines(string text, string name, bool single)
    {
        var list = new List<VqaQuestion>();
        int lineNo = 0;
        foreach (var line in text.Split('\n'))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            var obj = ParseObject(line, $"{name}:{lineNo}");
            string where = $"{name}:{lineNo}";
            var id = Required(obj, "question_id", where);
            var q = RequiredString(obj, "text", where);
            if (single) q = q + "\n" + SinglePredictionPrompt;
            list.Add(new VqaQuestion
            {
                Id = id, Image = OptionalString(obj, "image", where), Text = q, Prompt = q,
                Answer = OptionalString(obj, "answer", where), Answers = AnswerList(obj, where), Line = lineNo,
            });
        }
        return list;
    }

    private static List<VqaQuestion> ReadArray(string text, string name, bool single)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(text);
        }
        catch (JsonException e)
        {
            throw new InvalidInputException($"{name}: not valid JSON ({Short(e)})");
        }
        if (root is not JsonArray array) throw new InvalidInputException($"{name}: expected a JSON array of questions");
        var list = new List<VqaQuestion>();
        for (int i = 0; i < array.Count; i++)
        {
            string where = $"{name}:{i + 1}";
            if (array[i] is not JsonObject obj) throw new InvalidInputException($"{where}: expected a JSON object");
            if (obj.ContainsKey("question_id"))
            {
                // model_vqa records in an array: read them as JSONL lines.
                list.AddRange(ReadLines(obj.ToJsonString(), name, single).Select(q => q with { Line = i + 1 }));
                continue;
            }
            var id = Required(obj, "id", where);
            if (obj["conversations"] is not JsonArray turns || turns.Count == 0 || turns[0] is not JsonObject firstTurn)
                throw new InvalidInputException($"{where}: \"conversations\" is missing or empty");
            var question = RequiredString(firstTurn, "value", where + ": conversations[0]").Replace("<image>", "", StringComparison.Ordinal).Trim();
            string? gold = turns.Count > 1 && turns[1] is JsonObject second ? OptionalString(second, "value", where + ": conversations[1]") : null;
            var image = OptionalString(obj, "image", where);
            if (single) question = question + "\n" + SinglePredictionPrompt;
            list.Add(new VqaQuestion
            {
                Id = id, Image = image, Text = question, Prompt = image is null ? question : "<image>\n" + question,
                Answer = gold, Line = i + 1,
            });
        }
        return list;
    }

    private static JsonObject ParseObject(string line, string where)
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(line);
        }
        catch (JsonException e)
        {
            throw new InvalidInputException($"{where}: not valid JSON ({Short(e)})");
        }
        return node as JsonObject ?? throw new InvalidInputException($"{where}: expected a JSON object with \"question_id\" and \"text\"");
    }

    private static string Short(JsonException e) => e.Message.Split(" Path:")[0].Split(" LineNumber:")[0].Trim();

    private static JsonNode Required(JsonObject obj, string field, string where)
    {
        var v = obj[field];
        if (v is not JsonValue value || (value.GetValueKind() is not (JsonValueKind.Number or JsonValueKind.String)))
            throw new InvalidInputException($"{where}: \"{field}\" is missing or not a number or string");
        return value.DeepClone();
    }

    private static string RequiredString(JsonObject obj, string field, string where) =>
        OptionalString(obj, field, where) ?? throw new InvalidInputException($"{where}: \"{field}\" is missing");

    private static string? OptionalString(JsonObject obj, string field, string where)
    {
        if (!obj.TryGetPropertyValue(field, out var v) || v is null) return null;
        if (v is JsonValue s && s.GetValueKind() == JsonValueKind.String) return s.GetValue<string>();
        throw new InvalidInputException($"{where}: \"{field}\" must be a string");
    }

    private static List<string>? AnswerList(JsonObject obj, string where)
    {
        if (!obj.TryGetPropertyValue("answers", out var v) || v is null) return null;
        if (v is not JsonArray arr) throw new InvalidInputException($"{where}: \"answers\" must be an array of strings (or of {{\"answer\": ...}} objects)");
        var list = new List<string>(arr.Count);
        foreach (var a in arr)
        {
            if (a is JsonValue s && s.GetValueKind() == JsonValueKind.String) list.Add(s.GetValue<string>());
            else if (a is JsonObject o && o["answer"] is JsonValue inner && inner.GetValueKind() == JsonValueKind.String) list.Add(inner.GetValue<string>());
            else throw new InvalidInputException($"{where}: \"answers\" must be an array of strings (or of {{\"answer\": ...}} objects)");
        }
        return list;
    }
}
