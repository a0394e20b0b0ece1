// The generation options `vte generate` and `vte chat` share, with the spellings users of llama.cpp and HF
// bring along: -n/--max-new-tokens (--n-predict), --temp/--temperature, --top-k, --top-p, --min-p,
// --repeat-penalty/--repetition-penalty (HF's), --frequency-penalty/--presence-penalty (OpenAI's), -s/--seed,
// --stop (repeatable; \n, \t and \\ are unescaped), --top-logprobs, -c/--ctx-size, and the output modes --json
// and --quiet. An option not given is left to the model (generation_config.json, as HF applies it), so the
// values are nullable here; they are range-checked before the model loads.
using System.CommandLine;
using System.Text;
using VteKernels.Engine;
using VteKernels.Models;

namespace VteKernels.Cli;

internal sealed class GenerationCliOptions
{
    public Option<int?> MaxNewTokens { get; } = new("--max-new-tokens", "-n", "--n-predict")
    {
        Description = "Most tokens to generate (default: the model's generation_config.json, else 256; 0 runs the prefill only)",
    };

    public Option<float?> Temperature { get; } = new("--temp", "--temperature") { Description = "Sampling temperature; 0 is greedy (default: the model's generation config, greedy unless it says do_sample)" };
    public Option<int?> TopK { get; } = new("--top-k") { Description = "Keep the k most likely tokens, ties included (0: all; default: the model's, HF's 50)" };
    public Option<float?> TopP { get; } = new("--top-p") { Description = "Nucleus sampling: keep the most likely tokens up to this mass, in (0, 1]" };
    public Option<float?> MinP { get; } = new("--min-p") { Description = "Drop tokens less likely than this times the top token's probability, in [0, 1]" };
    public Option<float?> RepeatPenalty { get; } = new("--repeat-penalty", "--repetition-penalty") { Description = "HF's repetition penalty over the prompt and the answer (> 0; 1 is off)" };
    public Option<float?> FrequencyPenalty { get; } = new("--frequency-penalty") { Description = "OpenAI's frequency penalty over the answer, in [-2, 2]" };
    public Option<float?> PresencePenalty { get; } = new("--presence-penalty") { Description = "OpenAI's presence penalty over the answer, in [-2, 2]" };
    public Option<int?> Seed { get; } = new("--seed", "-s") { Description = "Random seed for sampling" };
    public Option<string[]> Stop { get; } = new("--stop") { Description = "End the answer at this text (not printed); repeatable; \\n and \\t are unescaped" };
    public Option<int> TopLogprobs { get; } = new("--top-logprobs") { Description = "With --json: the log-probability of each token and of the N most likely alternatives (0..20)" };
    public Option<int?> ContextSize { get; } = new("--ctx-size", "-c") { Description = "Context to stay within, at most the model's max_position_embeddings" };
    public Option<bool> Json { get; } = new("--json") { Description = "Write one JSON object (text, ids, finish reason, usage, timings, report) to stdout instead of the streamed text" };
    public Option<bool> Quiet { get; } = new("--quiet", "-q") { Description = "Only the answer on stdout: no model line, notes or timings on stderr" };

    private IEnumerable<Option> All => [MaxNewTokens, Temperature, TopK, TopP, MinP, RepeatPenalty, FrequencyPenalty, PresencePenalty, Seed, Stop, TopLogprobs, ContextSize, Json, Quiet];

    public void AddTo(Command command)
    {
        foreach (var o in All) command.Options.Add(o);
    }

    /// <summary>The command-line spelling of a library option name (InvalidOptionException.Option).</summary>
    public static string FlagFor(string option) => option switch
    {
        nameof(SamplingOptions.Temperature) => "--temp",
        nameof(SamplingOptions.TopK) => "--top-k",
        nameof(SamplingOptions.TopP) => "--top-p",
        nameof(SamplingOptions.MinP) => "--min-p",
        nameof(SamplingOptions.RepetitionPenalty) => "--repeat-penalty",
        nameof(SamplingOptions.FrequencyPenalty) => "--frequency-penalty",
        nameof(SamplingOptions.PresencePenalty) => "--presence-penalty",
        nameof(GenerationOptions.MaxNewTokens) => "--max-new-tokens",
        nameof(GenerationOptions.TopLogprobs) => "--top-logprobs",
        nameof(GenerationOptions.ContextLength) => "--ctx-size",
        nameof(GenerationOptions.StopSequences) => "--stop",
        _ => option,
    };

    /// <summary>What was given, range-checked (before any model loads).</summary>
    public Request Read(ParseResult p)
    {
        var sampling = new SamplingRequest
        {
            Temperature = p.GetValue(Temperature), TopK = p.GetValue(TopK), TopP = p.GetValue(TopP), MinP = p.GetValue(MinP),
            RepetitionPenalty = p.GetValue(RepeatPenalty), FrequencyPenalty = p.GetValue(FrequencyPenalty),
            PresencePenalty = p.GetValue(PresencePenalty), Seed = p.GetValue(Seed),
        };
        var stops = (p.GetValue(Stop) ?? []).Select(Unescape).ToArray();
        var options = new GenerationOptions
        {
            MaxNewTokens = p.GetValue(MaxNewTokens), StopSequences = stops, TopLogprobs = p.GetValue(TopLogprobs),
            Logprobs = p.GetValue(TopLogprobs) > 0, ContextLength = p.GetValue(ContextSize),
        };
        // Every given value checked against a neutral base, so a mistake is reported before the model loads.
        options.Validate();
        new GenerationConfig { DoSample = true, TopK = 0 }.ResolveSampling(sampling).Validate();
        return new Request(options, sampling, p.GetValue(Json), p.GetValue(Quiet));
    }

    /// <summary>\n, \t, \r and \\ in a --stop value.</summary>
    internal static string Unescape(string s)
    {
        var b = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] != '\\' || i + 1 == s.Length) { b.Append(s[i]); continue; }
            char c = s[++i];
            b.Append(c switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '\\' => '\\', _ => '\0' });
            if (c is not ('n' or 't' or 'r' or '\\')) { b.Length--; b.Append('\\').Append(c); }
        }
        return b.ToString();
    }

    /// <summary>The options a command line gives; <see cref="For"/> completes them with the model's defaults.</summary>
    internal sealed record Request(GenerationOptions Options, SamplingRequest Sampling, bool Json, bool Quiet)
    {
        /// <summary>The options for <paramref name="model"/>: sampling from the request over the model's generation config.</summary>
        public GenerationOptions For(LlavaModel model, PrefillOptions prefill) =>
            Options with { Sampling = model.GenerationConfig.ResolveSampling(Sampling), Prefill = prefill };
    }
}
