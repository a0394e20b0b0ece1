// A mistake in the command line that the parser cannot see (a value out of range, a file of the wrong kind).
namespace VteKernels.Cli;

/// <summary>A usage error: reported as one "error:" line, exit code 2.</summary>
internal sealed class UsageException(string message) : VteException(message);
