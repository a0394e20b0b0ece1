// Typed errors of the library. Every failure a user can cause (a bad file, a bad argument, a prompt
// that does not fit) is one of these, with a message that names the file, the tensor and the problem.
namespace VteKernels;

/// <summary>Base of every error this library raises for bad input.</summary>
public class VteException : Exception
{
    /// <summary>Creates the exception.</summary>
    public VteException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A model file (config.json, safetensors, index, npy) is malformed or disagrees with itself or the config.</summary>
public class ModelFormatException : VteException
{
    /// <summary>The file at fault.</summary>
    public string? FilePath { get; }

    /// <summary>The tensor at fault, where there is one.</summary>
    public string? TensorName { get; }

    /// <summary>Creates the exception; the message is prefixed with the file and tensor names.</summary>
    public ModelFormatException(string? filePath, string? tensorName, string problem, Exception? inner = null)
        : base(Format(filePath, tensorName, problem), inner)
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    private static string Format(string? file, string? tensor, string problem)
    {
        var where = file is null ? "" : Path.GetFileName(file);
        if (tensor is not null) where = where.Length == 0 ? $"tensor '{tensor}'" : $"{where}: tensor '{tensor}'";
        return where.Length == 0 ? problem : $"{where}: {problem}";
    }
}

/// <summary>A safetensors file is malformed or lies about its contents.</summary>
public sealed class SafetensorsException : ModelFormatException
{
    /// <summary>Creates the exception.</summary>
    public SafetensorsException(string filePath, string? tensorName, string problem, Exception? inner = null)
        : base(filePath, tensorName, problem, inner) { }
}

/// <summary>An .npy array file is malformed or holds a layout this runtime does not read.</summary>
public sealed class NpyException : ModelFormatException
{
    /// <summary>Creates the exception.</summary>
    public NpyException(string filePath, string problem, Exception? inner = null)
        : base(filePath, null, problem, inner) { }
}

/// <summary>A weight file changed (size, modification time or, on Linux, inode) after it was memory-mapped: reading it
/// further could kill the process (SIGBUS) or compute with other weights. Reload the model, or load it with
/// <c>LoadOptions.MemoryMap = false</c> (<c>--no-mmap</c>) to be immune to later changes.</summary>
public sealed class WeightFileChangedException : ModelFormatException
{
    /// <summary>Creates the exception.</summary>
    public WeightFileChangedException(string filePath, string problem) : base(filePath, null, problem) { }
}

/// <summary>config.json is malformed or describes a model this runtime cannot run.</summary>
public sealed class ModelConfigException : ModelFormatException
{
    /// <summary>Creates the exception.</summary>
    public ModelConfigException(string? filePath, string problem, Exception? inner = null)
        : base(filePath, null, problem, inner) { }
}

/// <summary>An input to the engine (token ids, pixels, options) is invalid for this model.</summary>
public sealed class InvalidInputException : VteException
{
    /// <summary>Creates the exception.</summary>
    public InvalidInputException(string message) : base(message) { }
}

/// <summary>
/// An option of a request (sampling, generation) is out of its range. <see cref="Option"/> is the option's
/// property name (e.g. "TopP") so that front ends can name their own spelling of it; the message reads
/// "TopP must be in (0, 1], got 0".
/// </summary>
public sealed class InvalidOptionException : VteException
{
    /// <summary>The option's property name, e.g. "TopP".</summary>
    public string Option { get; }

    /// <summary>What is wrong, without the option's name, e.g. "must be in (0, 1], got 0".</summary>
    public string Problem { get; }

    /// <summary>Creates the exception; the message is "{option} {problem}".</summary>
    public InvalidOptionException(string option, string problem) : base($"{option} {problem}")
    {
        Option = option;
        Problem = problem;
    }
}

/// <summary>A chat template uses a construct this runtime does not implement, is malformed, or failed while
/// rendering; for raise_exception(msg) in the template the message is msg itself.</summary>
public sealed class ChatTemplateException : VteException
{
    /// <summary>Creates the exception.</summary>
    public ChatTemplateException(string message) : base(message) { }
}

/// <summary>An image file (PNG, JPEG, BMP, PNM) is malformed, truncated, too large or uses a feature the decoders do not read.</summary>
public sealed class ImageFormatException : VteException
{
    /// <summary>The container format at fault ("PNG", "JPEG", "BMP", "PNM"), or "image" when it is not known.</summary>
    public string Format { get; }

    /// <summary>Byte offset in the file where the problem was found, or -1.</summary>
    public long Offset { get; }

    /// <summary>The file, when the image was loaded from one.</summary>
    public string? FilePath { get; }

    /// <summary>Creates the exception; the message reads "FORMAT: problem at byte N", prefixed with the file name where known.</summary>
    public ImageFormatException(string format, string problem, long offset = -1, string? filePath = null, Exception? inner = null)
        : base(Compose(format, problem, offset, filePath), inner)
    {
        Format = format;
        Problem = problem;
        Offset = offset;
        FilePath = filePath;
    }

    /// <summary>The problem alone, without the format, offset and file.</summary>
    public string Problem { get; }

    /// <summary>The same error, naming the file it came from.</summary>
    public ImageFormatException WithFile(string filePath) => new(Format, Problem, Offset, filePath, InnerException);

    private static string Compose(string format, string problem, long offset, string? file)
    {
        var s = offset >= 0 ? $"{format}: {problem} at byte {offset}" : $"{format}: {problem}";
        return file is null ? s : $"{Path.GetFileName(file)}: {s}";
    }
}

/// <summary>A tokenizer file (tokenizer.json, tokenizer_config.json) is malformed or uses a component this runtime does not implement.</summary>
public sealed class TokenizerException : VteException
{
    /// <summary>The file at fault, where there is one.</summary>
    public string? FilePath { get; }

    /// <summary>Creates the exception; the message is prefixed with the file's path.</summary>
    public TokenizerException(string? filePath, string problem, Exception? inner = null)
        : base(filePath is null ? problem : $"{filePath}: {problem}", inner)
    {
        FilePath = filePath;
    }
}
