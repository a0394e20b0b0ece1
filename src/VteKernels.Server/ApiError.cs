// An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with an HTTP status.
using System.Text.Json.Nodes;

namespace VteKernels.Server;

/// <summary>A request that is answered with an error status and OpenAI-style error JSON.</summary>
public sealed class ApiError : Exception
{
    /// <summary>Creates the error.</summary>
    public ApiError(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error") : base(message)
    {
        Status = status;
        Param = param;
        Code = code;
        Type = type;
    }

    /// <summary>HTTP status.</summary>
    public int Status { get; }

    /// <summary>The request field at fault, or null.</summary>
    public string? Param { get; }

    /// <summary>A short machine-readable code, or null.</summary>
    public string? Code { get; }

    /// <summary>OpenAI's error type ("invalid_request_error", "server_error", ...).</summary>
    public string Type { get; }

    /// <summary>A 400 about one field.</summary>
    public static ApiError BadField(string param, string message) => new(400, message, param, "invalid_value");

    /// <summary>The JSON body.</summary>
    public JsonObject ToJson() => new()
    {
        ["error"] = new JsonObject { ["message"] = Message, ["type"] = Type, ["param"] = Param, ["code"] = Code },
    };
}
