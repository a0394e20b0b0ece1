// The training data of DyVTE's exit gates: JSONL, one sample a line,
//   {"image": "pics/0001.jpg", "question": "What is the man holding?", "answer": "A red umbrella."}
// "image" is relative to the JSONL file's folder unless absolute; it may be absent or null (a text-only
// sample). Other fields are ignored, so records from a larger annotation file can be fed as they are.
// Blank lines are skipped. Every problem is reported with the file name and the line number, and every
// image is checked for existence before anything else runs, so a bad line fails in milliseconds rather
// than after an hour of feature extraction.
using System.Text.Json;

namespace VteKernels.Engine.Exit;

/// <summary>One training sample: the question about an image (or none) and the reference answer.</summary>
/// <param name="Line">1-based line number in the data file.</param>
/// <param name="ImagePath">Absolute path of the image, or null for a text-only sample.</param>
/// <param name="Question">The question, as the user would type it.</param>
/// <param name="Answer">The reference answer (the text the model should produce).</param>
public sealed record GateSample(int Line, string? ImagePath, string Question, string Answer);

/// <summary>Reads gate-training data files.</summary>
public static class GateSamples
{
    /// <summary>Reads a JSONL file of samples; image paths are resolved against the file's folder and must exist.</summary>
    /// <exception cref="InvalidInputException">The file is missing or empty, a line is not a JSON object with string "question" and "answer" (and optionally "image"), or an image does not exist. The message starts "FILE:LINE:".</exception>
    public static IReadOnlyList<GateSample> Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var name = Path.GetFileName(path);
        if (!File.Exists(path)) throw new InvalidInputException($"data file '{path}' does not exist");
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var samples = new List<GateSample>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            samples.Add(Parse(line, lineNo, name, folder));
        }
        if (samples.Count == 0) throw new InvalidInputException($"{name}: no samples (the file is empty; expected one JSON object a line)");
        return samples;
    }

    private static GateSample Parse(string line, int lineNo, string name, string folder)
    {
        string Where() => $"{name}:{lineNo}";
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw new InvalidInputException($"{Where()}: not valid JSON ({e.Message.Split(" Path:")[0].Split(" LineNumber:")[0].Trim()})");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidInputException($"{Where()}: expected a JSON object with \"question\" and \"answer\", got a {root.ValueKind.ToString().ToLowerInvariant()}");
            string Text(string field, bool nonEmpty)
            {
                if (!root.TryGetProperty(field, out var v) || v.ValueKind != JsonValueKind.String)
                    throw new InvalidInputException($"{Where()}: \"{field}\" is missing or not a string");
                var s = v.GetString()!;
                if (nonEmpty && s.Trim().Length == 0) throw new InvalidInputException($"{Where()}: \"{field}\" is empty");
                return s;
            }
            var question = Text("question", nonEmpty: false);
            var answer = Text("answer", nonEmpty: true);
            string? image = null;
            if (root.TryGetProperty("image", out var img) && img.ValueKind != JsonValueKind.Null)
            {
                if (img.ValueKind != JsonValueKind.String || img.GetString()!.Length == 0)
                    throw new InvalidInputException($"{Where()}: \"image\" must be a file path (a non-empty string) or null");
                var rel = img.GetString()!;
                image = Path.IsPathRooted(rel) ? rel : Path.GetFullPath(Path.Combine(folder, rel));
                if (!File.Exists(image)) throw new InvalidInputException($"{Where()}: image '{rel}' does not exist ({image})");
            }
            return new GateSample(lineNo, image, question, answer);
        }
    }
}
