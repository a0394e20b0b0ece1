// `vte`: the command-line front end. Every command is a small class; this file wires them into one root
// command and owns the error policy: a user mistake or a bad file prints one line starting "error:" and
// exits 2 (a stack trace only with --verbose). The parser's own messages are rewritten into that form (no .NET
// type names; an unknown option gets "did you mean" from the command's options, or the command that has it).
// Ctrl+C (SIGINT) cancels the running command through its CancellationToken: a generation ends with the text
// and stats so far and exit 130; a second Ctrl+C ends the process at once.
using System.CommandLine;
using System.Text.RegularExpressions;

namespace VteKernels.Cli;

internal static partial class Program
{
    public static int Main(string[] args)
    {
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (cts.IsCancellationRequested) return;   // the second Ctrl+C terminates
            e.Cancel = true;
            cts.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            return Run(args, Console.Out, Console.Error, null, cts.Token);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>Runs the CLI with the given writers and, for commands that read it, stdin (tests call this in-process).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, TextReader? stdin = null, CancellationToken cancellationToken = default)
    {
        var verbose = new Option<bool>("--verbose") { Description = "Print stack traces on errors", Recursive = true };
        var root = new RootCommand("VteKernels: LLaVA inference with dynamic visual-token exit")
        {
            verbose,
            SynthCommand.Create(stdout, stderr),
            QuantizeCommand.Create(stdout, stderr),
            InspectCommand.Create(stdout),
            ForwardCommand.Create(stdout),
            GenerateCommand.Create(stdout, stderr),
            PlotCommand.Create(stdout),
            PreprocessCommand.Create(stdout),
            TokenizeCommand.Create(stdout, stdin ?? Console.In),
            ChatCommand.Create(stdout, stderr, () => stdin ?? Console.In),
            TrainGateCommand.Create(stdout, stderr),
            EvalCommand.Create(stdout, stderr),
            ServeCommand.Create(stdout),
        };
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            stderr.WriteLine($"error: {ParseErrors.Describe(parse, root)}");
            return 2;
        }
        try
        {
            // Ctrl+C is ours (Main), not the parser's: a cancelled generation must get to print what it has.
            return parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = stdout, Error = stderr, ProcessTerminationTimeout = null },
                cancellationToken).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is OperationCanceledException)
        {
            stderr.WriteLine("interrupted");
            return GenerateCommand.Interrupted;
        }
        catch (InvalidOptionException e)
        {
            stderr.WriteLine($"error: {GenerationCliOptions.FlagFor(e.Option)} {e.Problem}");
            if (parse.GetValue(verbose)) stderr.WriteLine(e);
            return 2;
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

    internal static string OneLine(string s) => Whitespace().Replace(s.ReplaceLineEndings(" "), " ").Trim();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();
}

/// <summary>The parser's errors in the CLI's words.</summary>
internal static partial class ParseErrors
{
    /// <summary>One line for the first parse error.</summary>
    public static string Describe(ParseResult parse, RootCommand root)
    {
        var command = parse.CommandResult.Command;
        var name = command == root ? "vte" : command.Name;
        // An unknown word explains the rest ("Required command was not provided" follows a misspelt command).
        var error = parse.Errors.FirstOrDefault(e => Unrecognized().IsMatch(e.Message)) ?? parse.Errors[0];
        var first = error.Message;
        if (Unrecognized().Match(first) is { Success: true } u)
        {
            var token = u.Groups[1].Value;
            if (token.StartsWith('-')) return UnknownOption(token, command, name, root);
            var sub = command.Subcommands.Select(c => c.Name).ToList();
            if (sub.Count > 0)
                return Closest(token, sub) is string c ? $"unknown command '{token}'; did you mean {c}?" : $"unknown command '{token}' (commands: {string.Join(", ", sub)})";
            return $"{name} takes no argument '{token}' (options start with -; see vte {name} --help)";
        }
        if (CannotParse().Match(first) is { Success: true } p)
            return $"{p.Groups[2].Value}: '{p.Groups[1].Value}' is not {TypeWords(p.Groups[3].Value)}";
        if (NotAllowed().Match(first) is { Success: true } a)
        {
            var option = error.SymbolResult is System.CommandLine.Parsing.OptionResult o ? o.Option.Name : "the value";
            return $"{option}: '{a.Groups[1].Value}' is not one of {string.Join(", ", AllowedValues().Matches(first).Skip(1).Select(m => m.Groups[1].Value))}";
        }
        if (RequiredArgument().Match(first) is { Success: true } r) return $"{r.Groups[1].Value} needs a value";
        if (RequiredOption().Match(first) is { Success: true } q) return $"{name} needs {q.Groups[1].Value}";
        return Program.OneLine(first);
    }

    private static string UnknownOption(string token, Command command, string name, RootCommand root)
    {
        var flag = token.Split('=')[0];
        var mine = command.Options.SelectMany(o => o.Aliases.Prepend(o.Name)).Where(a => a.StartsWith("--", StringComparison.Ordinal)).Distinct().ToList();
        if (flag.StartsWith("--", StringComparison.Ordinal) && Closest(flag, mine) is string guess)
            return $"unknown option '{flag}' for {name}; did you mean {guess}?";
        var elsewhere = root.Subcommands.Where(c => c != command && c.Options.Any(o => o.Name == flag || o.Aliases.Contains(flag))).Select(c => c.Name).ToList();
        if (elsewhere.Count > 0)
            return $"{name} does not take {flag} ({string.Join(" and ", elsewhere)} {(elsewhere.Count == 1 ? "does" : "do")})";
        return $"unknown option '{flag}' for {name} (see vte {name} --help)";
    }

    /// <summary>The candidate within edit distance 2 (or a third of the word), nearest first; null when none is near.</summary>
    internal static string? Closest(string word, IEnumerable<string> candidates)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var c in candidates)
        {
            int d = Distance(word, c);
            if (d < bestDistance) (best, bestDistance) = (c, d);
        }
        return bestDistance <= Math.Max(2, word.Length / 3) ? best : null;
    }

    private static int Distance(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) prev[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }

    private static string TypeWords(string type) => type switch
    {
        _ when type.Contains("Int32", StringComparison.Ordinal) || type.Contains("Int64", StringComparison.Ordinal) => "an integer",
        _ when type.Contains("UInt", StringComparison.Ordinal) => "a non-negative integer",
        _ when type.Contains("Single", StringComparison.Ordinal) || type.Contains("Double", StringComparison.Ordinal) => "a number",
        _ when type.Contains("Boolean", StringComparison.Ordinal) => "true or false",
        _ => "a valid value",
    };

    [GeneratedRegex(@"^Unrecognized command or argument '(.*)'\.?$")]
    private static partial Regex Unrecognized();

    [GeneratedRegex(@"Cannot parse argument '(.*)' for option '(.*)' as expected type '(.*?)'")]
    private static partial Regex CannotParse();

    [GeneratedRegex(@"Argument '(.*?)' not recognized")]
    private static partial Regex NotAllowed();

    [GeneratedRegex(@"'([^']*)'")]
    private static partial Regex AllowedValues();

    [GeneratedRegex(@"Required argument missing for option: '(.*)'")]
    private static partial Regex RequiredArgument();

    [GeneratedRegex(@"Option '(.*)' is required")]
    private static partial Regex RequiredOption();
}
