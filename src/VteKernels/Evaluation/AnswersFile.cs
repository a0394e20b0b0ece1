// An answers file that survives being killed: JSONL in LLaVA's answers shape
//   {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
// appended one whole line per write(2). Each line is serialized in memory and handed to the kernel in one
// unbuffered write on a file opened for appending; a regular-file write is not split by a signal, so a
// kill (SIGKILL, Ctrl+C) leaves whole lines only. A crash of the machine itself can still cut the last
// line: opening the file drops any bytes after its last newline (reported in DroppedBytes) before
// anything is appended. The lines already there are the resume state: their question ids are skipped.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VteKernels.Evaluation;

/// <summary>A JSONL answers file opened for resuming and appending.</summary>
public sealed class AnswersFile : IDisposable
{
    private readonly FileStream _stream, _lock;
    private readonly Dictionary<string, JsonObject> _lines = new(StringComparer.Ordinal);

    private AnswersFile(string path, FileStream stream, FileStream writerLock, long dropped)
    {
        Path = path;
        _stream = stream;
        _lock = writerLock;
        DroppedBytes = dropped;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Bytes of an unfinished last line that opening removed (0 when the file ended with a newline).</summary>
    public long DroppedBytes { get; }

    /// <summary>The lines in the file, by question id key (<see cref="VqaQuestion.Key"/>).</summary>
    public IReadOnlyDictionary<string, JsonObject> Lines => _lines;

    /// <summary>Whether the file holds an answer for <paramref name="key"/>.</summary>
    public bool Contains(string key) => _lines.ContainsKey(key);

    /// <summary>
    /// Opens (creating it and its folder when missing) the answers file at <paramref name="path"/>: reads the
    /// complete lines, removes an unfinished last line, and positions for appending.
    /// </summary>
    /// <exception cref="InvalidInputException">A complete line is not a JSON object with a "question_id", two lines answer the same
    /// question, or another process has the file open for writing.</exception>
    /// <exception cref="IOException">The file cannot be read or written.</exception>
    public static AnswersFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        // One writer at a time: an exclusive lock on FILE.lock (released by the kernel if the process dies), so two
        // runs given the same --out fail at once instead of overwriting each other's lines. The answers file itself
        // stays readable by others while it is written.
        FileStream writerLock;
        try
        {
            writerLock = new FileStream(full + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
        }
        catch (IOException)
        {
            throw new InvalidInputException($"{System.IO.Path.GetFileName(full)} is being written by another process ({full}.lock is held)");
        }
        FileStream? stream = null;
        try
        {
            stream = new FileStream(full, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read, bufferSize: 0);
            var bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
            int end = Array.LastIndexOf(bytes, (byte)'\n') + 1;   // bytes past the last newline: an unfinished line
            long dropped = bytes.Length - end;
            if (dropped > 0) stream.SetLength(end);
            stream.Seek(end, SeekOrigin.Begin);
            var file = new AnswersFile(full, stream, writerLock, dropped);
            file.Load(bytes.AsSpan(0, end));
            return file;
        }
        catch
        {
            stream?.Dispose();
            writerLock.Dispose();
            throw;
        }
    }

    private void Load(ReadOnlySpan<byte> content)
    {
        var name = System.IO.Path.GetFileName(Path);
        int lineNo = 0;
        foreach (var range in content.Split((byte)'\n'))
        {
            lineNo++;
            var line = content[range];
            if (line.Trim(" \t\r"u8).IsEmpty) continue;
            JsonNode? node;
            try
            {
                node = JsonNode.Parse(line);
            }
            catch (JsonException)
            {
                throw new InvalidInputException($"{name}:{lineNo}: not a JSON line of an answers file; give a new --out or fix the file");
            }
            if (node is not JsonObject obj || obj["question_id"] is not JsonValue id)
                throw new InvalidInputException($"{name}:{lineNo}: not an answer (a JSON object with \"question_id\"); give a new --out or fix the file");
            var key = id.ToJsonString();
            if (!_lines.TryAdd(key, obj))
                throw new InvalidInputException($"{name}:{lineNo}: question id {key} is answered twice in the file");
        }
    }

    /// <summary>
    /// Appends <paramref name="line"/> (which must have a "question_id" not yet in the file) as one write.
    /// </summary>
    /// <exception cref="ArgumentException">The line has no question id, or the file already answers it.</exception>
    /// <exception cref="IOException">The write failed.</exception>
    public void Append(JsonObject line)
    {
        ArgumentNullException.ThrowIfNull(line);
        if (line["question_id"] is not JsonValue id) throw new ArgumentException("an answer needs a question_id", nameof(line));
        var key = id.ToJsonString();
        if (_lines.ContainsKey(key)) throw new ArgumentException($"question id {key} is already answered in {Path}", nameof(line));
        var bytes = Encoding.UTF8.GetBytes(line.ToJsonString(LineOptions) + "\n");
        _stream.Write(bytes);   // bufferSize 0: one write(2) for the whole line
        _lines[key] = (JsonObject)JsonNode.Parse(bytes)!;   // held as it reads back from the file
    }

    private static readonly JsonSerializerOptions LineOptions = new()
    {
        // UTF-8 text as it is ("<image>" stays readable); only what JSON itself requires is escaped.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Closes the file and releases (and removes) its writer lock.</summary>
    public void Dispose()
    {
        _stream.Dispose();
        _lock.Dispose();
    }
}
