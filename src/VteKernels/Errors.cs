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
