// Runs `vte` in-process for the CLI tests and checks the error policy: a user mistake is exit code 2 and
// exactly one stderr line starting "error:".
using VteKernels.Cli;
using Xunit;

namespace VteKernels.Tests.Cli;

internal static class CliRunner
{
    /// <summary>Runs the CLI with <paramref name="args"/>; stdin is empty.</summary>
    public static (int Code, string Out, string Err) Vte(params string[] args) => VteWithInput(null, args);

    /// <summary>Runs the CLI with <paramref name="stdin"/> as standard input.</summary>
    public static (int Code, string Out, string Err) VteWithInput(string? stdin, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e, new StringReader(stdin ?? ""));
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>Exit 2 and one "error:" line containing <paramref name="expected"/>.</summary>
    public static void AssertUserError((int Code, string Out, string Err) r, string expected)
    {
        Assert.True(r.Code == 2, $"exit {r.Code}: {r.Err}");
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
    }
}
