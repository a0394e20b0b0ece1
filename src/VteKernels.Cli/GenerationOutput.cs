// Where a generation's output goes: the answer on stdout (streamed, or one JSON object with --json), everything
// else (model line, notes, timings, summaries, progress) on stderr, nothing but errors there with --quiet.
// Progress is a Spectre.Console display on stderr while a person watches a terminal (model load, the prefill's
// layers) and off otherwise.
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using VteKernels.Engine;
using VteKernels.Text;

namespace VteKernels.Cli;

internal sealed class GenerationOutput(TextWriter stdout, TextWriter stderr, bool json, bool quiet)
{
    public bool Json => json;

    /// <summary>A line for the person at the terminal (stderr; not with --quiet).</summary>
    public void Info(string line)
    {
        if (!quiet) stderr.WriteLine(line);
    }

    /// <summary>A note (stderr, "note: ..."; not with --quiet).</summary>
    public void Note(string text) => Info($"note: {text}");

    /// <summary>Streams one token's text to stdout (not with --json).</summary>
    public void Token(GeneratedToken t)
    {
        if (json || t.Text.Length == 0) return;
        stdout.Write(t.Text);
        stdout.Flush();
    }

    /// <summary>Ends an answer: a newline after the text, the summary lines on stderr, or the JSON object.</summary>
    public void End(GenerationResult r, TimeSpan load, Tokenizer? tokenizer, string? exitSummary)
    {
        if (json)
        {
            WriteJson(r, load, tokenizer);
            return;
        }
        stdout.WriteLine();
        stdout.Flush();
        if (r.FinishReason == FinishReason.Cancelled) stderr.WriteLine($"interrupted: {r.StopReason} after {r.Ids.Count} token(s)");
        Info($"ids {string.Join(",", r.Ids)}");
        Info(string.Create(CultureInfo.InvariantCulture,
            $"{r.Ids.Count} tokens; finish {Name(r.FinishReason)} ({r.StopReason}); prefill {r.Usage.PromptTokens} tokens in {r.Timings.Prefill.TotalMilliseconds:F0} ms; time to first token {r.Timings.FirstToken.TotalMilliseconds:F0} ms; decode {r.Timings.DecodeTokensPerSecond:F1} tok/s"));
        if (exitSummary is not null) Info($"exit {exitSummary}");
    }

    public static string Name(FinishReason f) => f switch
    {
        FinishReason.Stop => "stop",
        FinishReason.Length => "length",
        _ => "cancelled",
    };

    private void WriteJson(GenerationResult r, TimeSpan load, Tokenizer? tokenizer)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("text", r.Text);
            w.WriteStartArray("ids");
            foreach (var id in r.Ids) w.WriteNumberValue(id);
            w.WriteEndArray();
            w.WriteString("finish_reason", Name(r.FinishReason));
            w.WriteString("stop_reason", r.StopReason);
            w.WriteStartObject("usage");
            w.WriteNumber("prompt_tokens", r.Usage.PromptTokens);
            w.WriteNumber("cached_tokens", r.Usage.CachedTokens);
            w.WriteNumber("completion_tokens", r.Usage.CompletionTokens);
            w.WriteNumber("total_tokens", r.Usage.TotalTokens);
            w.WriteEndObject();
            w.WriteStartObject("timings");
            w.WriteNumber("load_ms", Math.Round(load.TotalMilliseconds, 3));
            w.WriteNumber("prefill_ms", Math.Round(r.Timings.Prefill.TotalMilliseconds, 3));
            w.WriteNumber("first_token_ms", Math.Round(r.Timings.FirstToken.TotalMilliseconds, 3));
            w.WriteNumber("total_ms", Math.Round(r.Timings.Total.TotalMilliseconds, 3));
            w.WriteNumber("decode_tokens_per_s", Math.Round(r.Timings.DecodeTokensPerSecond, 3));
            w.WriteEndObject();
            var s = r.Sampling;
            w.WriteStartObject("sampling");
            w.WriteNumber("temperature", s.Temperature);
            w.WriteNumber("top_k", s.TopK);
            w.WriteNumber("top_p", s.TopP);
            w.WriteNumber("min_p", s.MinP);
            w.WriteNumber("repetition_penalty", s.RepetitionPenalty);
            w.WriteNumber("frequency_penalty", s.FrequencyPenalty);
            w.WriteNumber("presence_penalty", s.PresencePenalty);
            if (s.Seed is int seed) w.WriteNumber("seed", seed); else w.WriteNull("seed");
            w.WriteEndObject();
            w.WriteNumber("max_new_tokens", r.MaxNewTokens);
            w.WriteNumber("context_length", r.ContextLength);
            if (r.Tokens.Any(t => t.Logprob is not null))
            {
                w.WriteStartArray("logprobs");
                foreach (var t in r.Tokens)
                {
                    w.WriteStartObject();
                    w.WriteNumber("id", t.Id);
                    if (tokenizer?.IdToToken(t.Id) is string piece) w.WriteString("token", piece);
                    w.WriteNumber("logprob", t.Logprob ?? double.NaN);
                    w.WriteStartArray("top");
                    foreach (var a in t.TopLogprobs ?? [])
                    {
                        w.WriteStartObject();
                        w.WriteNumber("id", a.Id);
                        if (tokenizer?.IdToToken(a.Id) is string alt) w.WriteString("token", alt);
                        w.WriteNumber("logprob", a.Logprob);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            if (r.Report is { } report)
            {
                using var reportJson = new MemoryStream();
                report.WriteJson(reportJson);
                w.WritePropertyName("report");
                using var doc = JsonDocument.Parse(reportJson.ToArray());
                doc.RootElement.WriteTo(w);
                w.WriteString("report_summary", report.Summary());
            }
            else w.WriteNull("report");
            w.WriteEndObject();
        }
        stdout.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
        stdout.Flush();
    }
}

/// <summary>Progress on stderr while a person watches a terminal; nothing otherwise.</summary>
internal sealed class CliProgress(TextWriter stderr, bool quiet)
{
    /// <summary>True when stderr is the process's terminal (not redirected, not a test's writer) and output is wanted.</summary>
    public bool Enabled { get; } = !quiet && ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;

    private IAnsiConsole Console2() => AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    /// <summary>Runs <paramref name="work"/> under a spinner labelled <paramref name="label"/>.</summary>
    public T Spin<T>(string label, Func<T> work) =>
        Enabled ? Console2().Status().Start(Markup.Escape(label), _ => work()) : work();

    /// <summary>
    /// Runs <paramref name="work"/> with a bar of <paramref name="total"/> steps; work receives the reporter to update
    /// (null when progress is off).
    /// </summary>
    public async Task<T> Bar<T>(string label, int total, Func<IProgress<(int Done, int Total)>?, Task<T>> work)
    {
        if (!Enabled) return await work(null);
        return await Console2().Progress().AutoClear(true).HideCompleted(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(label), maxValue: Math.Max(1, total));
                var r = await work(new Reporter(task));
                task.Value = task.MaxValue;
                return r;
            });
    }

    /// <summary>Byte progress (synth): a bar on a terminal, nothing otherwise.</summary>
    public void Bytes(string label, Action<Action<long, long>> work)
    {
        if (!Enabled)
        {
            work((_, _) => { });
            return;
        }
        Console2().Progress().AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(label), maxValue: 1);
                work((done, all) =>
                {
                    task.MaxValue = Math.Max(1, all);
                    task.Value = done;
                });
                task.Value = task.MaxValue;
            });
    }

    private sealed class Reporter(ProgressTask task) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value)
        {
            task.MaxValue = Math.Max(1, value.Total);
            task.Value = value.Done;
        }
    }
}
