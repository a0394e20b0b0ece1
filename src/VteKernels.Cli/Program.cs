// `vte`: the command-line front end. Every command is a small class; this file wires them into one root
// command and owns the error policy: a user mistake or a bad file prints one line starting "error:" and
// exits 2 (a stack trace only with --verbose); cancellation (Ctrl+C) exits 130.
using System.CommandLine;

namespace VteKernels.Cli;

internal static class Program
{
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs the CLI with the given writers and, for commands that read it, stdin (tests call this in-process).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, TextReader? stdin = null)
    {
        var verbose = new Option<bool>("--verbose") { Description = "Print stack traces on errors", Recursive = true };
        var root = new RootCommand("VteKernels: LLaVA inference with dynamic visual-token exit")
        {
            verbose,
            SynthCommand.Create(stdout),
            InspectCommand.Create(stdout),
            ForwardCommand.Create(stdout),
            GenerateCommand.Create(stdout),
            PlotCommand.Create(stdout),
            PreprocessCommand.Create(stdout),
            TokenizeCommand.Create(stdout, stdin ?? Console.In),
            ChatCommand.Create(stdout, () => stdin ?? Console.In),
            TrainGateCommand.Create(stdout, stderr),
            EvalCommand.Create(stdout, stderr),
            ServeCommand.Create(stdout),
        };
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            stderr.WriteLine($"error: {OneLine(parse.Errors[0].Message)}");
            return 2;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = stdout, Error = stderr });
        }
        catch (Exception e) when (e is OperationCanceledException)
        {
            stderr.WriteLine("error: cancelled");
            return 130;
        }
        catch (Exception e) when (IsUserError(e))
        {
            stderr.WriteLine($"error: {OneLine(e.Message)}");
            if (parse.GetValue(verbose)) stderr.WriteLine(e);
            return 2;
        }
        catch (Exception e)
        {
            stderr.WriteLine($"error: internal error: {e.GetType().Name}: {OneLine(e.Message)}");
            if (parse.GetValue(verbose)) stderr.WriteLine(e);
            else stderr.WriteLine("(run again with --verbose for the stack trace)");
            return 1;
        }
    }

    /// <summary>Errors caused by the user's input or files, as opposed to bugs.</summary>
    private static bool IsUserError(Exception e) =>
        e is VteException or IOException or UnauthorizedAccessException or ArgumentException or FormatException or OutOfMemoryException;

    private static string OneLine(string s) =>
        System.Text.RegularExpressions.Regex.Replace(s.ReplaceLineEndings(" "), @"\s+", " ").Trim();
}
