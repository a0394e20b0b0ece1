// The two fixed prompt formats of LLaVA-1.5, for when a model ships no chat template or the original
// evaluation format is wanted:
//   Llava15   "USER: <image>\n{q} ASSISTANT:" — what llava-hf's chat_template.json renders for one user turn
//             (the llava-hf model cards' prompt); later turns follow that template: "... ASSISTANT: {a} USER: {q2} ASSISTANT:".
//   VicunaV1  LLaVA's own conv_vicuna_v1 (llava/conversation.py, --conv-mode vicuna_v1 in its eval scripts):
//             system + " " + "USER: <image>\n{q}" + " " + "ASSISTANT:", with sep " " after user turns and
//             sep2 "</s>" after assistant turns. The system text says "curious user" / "user's questions"; the
//             "curious human" wording belongs to the older conv_llava_v1 template. With LLaMA-2's tokenizer the
//             text before "<image>" is 35 tokens with BOS, so the 576 image tokens sit at positions 35..610
//             (checked with llama-tokenizer-js; Data/chat-templates/vicuna-v1.json).
// Images always go to the first user turn, one "<image>\n" each, before the text, as both codebases do.
namespace VteKernels.Text;

/// <summary>How a prompt is built from a question.</summary>
public enum PromptStyle
{
    /// <summary>llava-hf's "USER: &lt;image&gt;\n{q} ASSISTANT:".</summary>
    Llava15,

    /// <summary>LLaVA's conv_vicuna_v1: the Vicuna system prompt, then the Llava15 form with "&lt;/s&gt;" after answers.</summary>
    VicunaV1,

    /// <summary>The model's own chat template (tokenizer_config.json or chat_template.json).</summary>
    Template,
}

/// <summary>LLaVA-1.5 prompt strings. The image placeholder is <see cref="ImageToken"/>; the caller's tokenizer
/// expands it to the model's image_seq_length image tokens.</summary>
public static class PromptFormat
{
    /// <summary>The image placeholder as LLaVA writes it in prompts.</summary>
    public const string ImageToken = "<image>";

    /// <summary>conv_vicuna_v1's system prompt, verbatim from llava/conversation.py.</summary>
    public const string VicunaV1System =
        "A chat between a curious user and an artificial intelligence assistant. " +
        "The assistant gives helpful, detailed, and polite answers to the user's questions.";

    /// <summary>"USER: &lt;image&gt;\n{question} ASSISTANT:", one "&lt;image&gt;\n" per image.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="imageCount"/> is negative.</exception>
    public static string Llava15(string question, int imageCount = 1) => Llava15([(question, null)], imageCount);

    /// <summary>Several turns in llava-hf's chat-template form: "USER: {images}{q1} ASSISTANT: {a1} USER: {q2} ASSISTANT:".
    /// A turn with a null answer must be the last; it ends the prompt with "ASSISTANT:".</summary>
    /// <exception cref="ArgumentException">No turns, or a null answer before the last turn.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="imageCount"/> is negative.</exception>
    public static string Llava15(IReadOnlyList<(string User, string? Assistant)> turns, int imageCount = 1)
    {
        Validate(turns, imageCount);
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < turns.Count; i++)
        {
            var (user, assistant) = turns[i];
            sb.Append("USER: ");
            if (i == 0) sb.Append(Images(imageCount));
            sb.Append(user).Append(' ').Append("ASSISTANT:");
            if (assistant is not null) sb.Append(' ').Append(assistant).Append(' ');
        }
        return sb.ToString();
    }

    /// <summary>conv_vicuna_v1 with one question: "{system} USER: &lt;image&gt;\n{question} ASSISTANT:".</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="imageCount"/> is negative.</exception>
    public static string VicunaV1(string question, int imageCount = 1) => VicunaV1([(question, null)], imageCount);

    /// <summary>conv_vicuna_v1.get_prompt() for several turns: "{system} USER: {images}{q1} ASSISTANT: {a1}&lt;/s&gt;USER: {q2} ASSISTANT:".
    /// A turn with a null answer must be the last.</summary>
    /// <exception cref="ArgumentException">No turns, or a null answer before the last turn.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="imageCount"/> is negative.</exception>
    public static string VicunaV1(IReadOnlyList<(string User, string? Assistant)> turns, int imageCount = 1)
    {
        Validate(turns, imageCount);
        // SeparatorStyle.TWO: system + sep, then "ROLE: message" + (sep after user, sep2 after assistant),
        // and a bare "ASSISTANT:" for the open turn.
        var sb = new System.Text.StringBuilder(VicunaV1System).Append(' ');
        for (int i = 0; i < turns.Count; i++)
        {
            var (user, assistant) = turns[i];
            sb.Append("USER: ");
            if (i == 0) sb.Append(Images(imageCount));
            sb.Append(user).Append(' ');
            if (assistant is null) sb.Append("ASSISTANT:");
            else sb.Append("ASSISTANT: ").Append(assistant).Append("</s>");
        }
        return sb.ToString();
    }

    /// <summary>Builds the prompt of one question in a fixed style.</summary>
    /// <exception cref="ArgumentException"><paramref name="style"/> is <see cref="PromptStyle.Template"/>, which needs
    /// the model's <see cref="ChatTemplate"/>.</exception>
    public static string Format(PromptStyle style, string question, int imageCount = 1) => style switch
    {
        PromptStyle.Llava15 => Llava15(question, imageCount),
        PromptStyle.VicunaV1 => VicunaV1(question, imageCount),
        _ => throw new ArgumentException($"prompt style {style} is rendered by the model's ChatTemplate, not by PromptFormat", nameof(style)),
    };

    /// <summary>Parses "llava", "vicuna" or "template" (case-insensitive; "llava15", "llava-1.5", "vicuna_v1",
    /// "vicuna-v1" are accepted too).</summary>
    /// <exception cref="InvalidInputException">Any other text; the message lists the accepted names.</exception>
    public static PromptStyle ParseStyle(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Trim().ToLowerInvariant() switch
        {
            "llava" or "llava15" or "llava-1.5" or "llava1.5" => PromptStyle.Llava15,
            "vicuna" or "vicuna_v1" or "vicuna-v1" or "vicunav1" => PromptStyle.VicunaV1,
            "template" => PromptStyle.Template,
            _ => throw new InvalidInputException($"unknown prompt style '{text}' (expected llava, vicuna or template)"),
        };
    }

    private static string Images(int count) => string.Concat(Enumerable.Repeat(ImageToken + "\n", count));

    private static void Validate(IReadOnlyList<(string User, string? Assistant)> turns, int imageCount)
    {
        ArgumentNullException.ThrowIfNull(turns);
        ArgumentOutOfRangeException.ThrowIfNegative(imageCount);
        if (turns.Count == 0) throw new ArgumentException("a prompt needs at least one turn", nameof(turns));
        for (int i = 0; i < turns.Count; i++)
        {
            ArgumentNullException.ThrowIfNull(turns[i].User, $"{nameof(turns)}[{i}].User");
            if (turns[i].Assistant is null && i != turns.Count - 1)
                throw new ArgumentException($"turn {i} has no answer but is not the last turn", nameof(turns));
        }
    }
}
